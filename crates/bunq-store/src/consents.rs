//! Consents: access tokens from OAuth callbacks, kept until their installation, device
//! and session exist, and the grant states that follow (connected, revoked, failed).
//!
//! A consent connects under a credential of its own, `{user_ref}/{random}`, and
//! replaces the user's live credential only in [`Store::complete_consent`], once its
//! session exists: until then a connected user keeps being served by the old one, and
//! nothing done with the old credential can be written over the new one.

use std::time::SystemTime;

use bunq_oauth::StateKey;
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{self, AuditEvent};
use crate::schema::{from_db_id, from_db_time, now_db, to_db_id};
use crate::users::{ACCESS_TOKEN, USERS, UserRecord, read_access_token, user_row};
use crate::{Store, StoreError};

pub(crate) const CONSENTS: &str = "consents";

/// A consent waiting for its session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingConsent {
    /// The credential its installation, device and session are stored under.
    pub credential: String,
    /// The user it is for.
    pub user_ref: String,
    /// Whether the authorization allowed another bunq account than the connected one.
    pub replace: bool,
    /// When the callback delivered it.
    pub created_at: SystemTime,
    /// Failed attempts so far.
    pub attempts: u64,
}

/// What [`Store::complete_consent`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsentCompletion {
    /// The user is connected with the consent's credential. `replaced` is the
    /// credential it replaced (its context is deleted; close its session at bunq).
    Connected {
        /// The user row after the change.
        user: Box<UserRecord>,
        /// The previous live credential, if another one.
        replaced: Option<String>,
    },
    /// The consent came from another bunq account than the user's and did not allow
    /// replacing it: nothing of it was kept (its context is deleted too).
    IdentityMismatch {
        /// The bunq person of the user's connection.
        expected: u64,
        /// The bunq person who consented.
        got: u64,
    },
    /// The consent is gone: the user was deleted meanwhile. Nothing was written.
    Gone,
}

/// Why a consent could not be connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsentRefusal {
    /// bunq refused the consent's access token.
    Revoked,
    /// Connecting failed for a reason retrying cannot fix.
    Failed,
}

impl ConsentRefusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConsentRefusal::Revoked => "revoked",
            ConsentRefusal::Failed => "failed",
        }
    }
}

/// `{user_ref}/{16 hex digits}`; `/` cannot occur in a `user_ref`, so the prefix tells
/// whose credential it is.
pub(crate) fn new_credential(user_ref: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("no randomness for a credential name"))?;
    let mut name = String::with_capacity(user_ref.len() + 17);
    name.push_str(user_ref);
    name.push('/');
    for b in bytes {
        name.push_str(&format!("{b:02x}"));
    }
    Ok(name)
}

fn delete_context(tx: &Transaction<'_>, credential: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM sessions WHERE credential = ?1")?
        .execute([credential])?;
    tx.prepare_cached("DELETE FROM contexts WHERE credential = ?1")?
        .execute([credential])?;
    Ok(())
}

fn set_last_consent(tx: &Transaction<'_>, user_ref: &str, what: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE users SET last_consent = ?2, last_consent_at = ?3, updated_at = ?3
         WHERE user_ref = ?1",
    )?
    .execute(params![user_ref, what, now_db()?])?;
    Ok(())
}

fn read_consent_token(
    conn: &Connection,
    shared: &crate::db::Shared,
    credential: &str,
) -> Result<Option<SecretString>, StoreError> {
    let row: Option<(String, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT user_ref, access_token FROM consents WHERE credential = ?1")?
        .query_row([credential], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => Ok(None),
        Some((_, Some(sealed))) => shared
            .keyring()
            .open_string(&sealed, CONSENTS, ACCESS_TOKEN, credential)
            .map(Some),
        // A V1 `connecting` user: its token is the user row's.
        Some((user_ref, None)) => read_access_token(conn, shared, &user_ref),
    }
}

impl Store {
    /// Records the access token of a completed OAuth callback as a consent of
    /// `user_ref`, if the state it came with (`state`, taken by the callback) still
    /// exists: [`Store::delete_user`] deletes the user's states, so a deletion that
    /// happened after the state was taken wins, and `Ok(None)` is returned with nothing
    /// written. A user who is not connected becomes [`UserStatus::Connecting`]; a
    /// connected one stays connected (the old connection serves until
    /// [`Store::complete_consent`]).
    ///
    /// [`UserStatus::Connecting`]: crate::UserStatus::Connecting
    pub async fn add_consent(
        &self,
        state: &StateKey,
        user_ref: &str,
        token: &SecretString,
        replace: bool,
    ) -> Result<Option<PendingConsent>, StoreError> {
        crate::on_postgres!(self, pg => pg.add_consent(state, user_ref, token, replace));
        let state = state.0.clone();
        let user_ref = user_ref.to_owned();
        let token = token.clone();
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let state_is_there = tx
                .prepare_cached(
                    "SELECT 1 FROM oauth_states WHERE state_key = ?1 AND user_ref = ?2",
                )?
                .query_row([&state, &user_ref], |_| Ok(()))
                .optional()?
                .is_some();
            if !state_is_there {
                return Ok(None);
            }
            let credential = new_credential(&user_ref)?;
            let sealed = shared.keyring().sealer().seal(
                token.expose_secret().as_bytes(),
                CONSENTS,
                ACCESS_TOKEN,
                &credential,
            )?;
            let now = now_db()?;
            tx.prepare_cached(
                "INSERT INTO consents (credential, user_ref, access_token, replace_identity,
                                       created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![credential, user_ref, sealed, replace, now])?;
            tx.prepare_cached(
                "INSERT INTO users (user_ref, status, status_since, updated_at)
                 VALUES (?1, 'connecting', ?2, ?2)
                 ON CONFLICT (user_ref) DO UPDATE SET
                   status = CASE WHEN status = 'connected' THEN status ELSE 'connecting' END,
                   status_reason = CASE WHEN status = 'connected' THEN status_reason END,
                   status_since = CASE WHEN status = 'connected' THEN status_since
                                       ELSE excluded.status_since END,
                   updated_at = excluded.updated_at",
            )?
            .execute(params![user_ref, now])?;
            audit::append(
                &tx,
                shared,
                Some(&user_ref),
                AuditEvent::Consent,
                &format!("replace={replace}"),
            )?;
            tx.commit()?;
            Ok(Some(PendingConsent {
                credential,
                user_ref,
                replace,
                created_at: from_db_time(now)?,
                attempts: 0,
            }))
        })
        .await
    }

    /// Every consent waiting for its session, oldest first (what a gateway resumes at
    /// start).
    pub async fn pending_consents(&self) -> Result<Vec<PendingConsent>, StoreError> {
        crate::on_postgres!(self, pg => pg.pending_consents());
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT credential, user_ref, replace_identity, created_at, attempts
                 FROM consents ORDER BY created_at, credential",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (credential, user_ref, replace, created_at, attempts) = row?;
                out.push(PendingConsent {
                    credential,
                    user_ref,
                    replace,
                    created_at: from_db_time(created_at)?,
                    attempts: from_db_id(attempts, "attempts")?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The credentials of `user_ref`'s consents still waiting for their session.
    pub async fn consent_credentials(&self, user_ref: &str) -> Result<Vec<String>, StoreError> {
        crate::on_postgres!(self, pg => pg.consent_credentials(user_ref));
        let user_ref = user_ref.to_owned();
        self.read(move |conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT credential FROM consents WHERE user_ref = ?1 ORDER BY created_at",
            )?;
            let rows = stmt.query_map([&user_ref], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?);
            }
            Ok(out)
        })
        .await
    }

    /// The access token of a pending consent; `None` once it is completed, refused or
    /// deleted.
    pub async fn consent_token(
        &self,
        credential: &str,
    ) -> Result<Option<SecretString>, StoreError> {
        crate::on_postgres!(self, pg => pg.consent_token(credential));
        let credential = credential.to_owned();
        self.read(move |conn, shared| read_consent_token(conn, shared, &credential))
            .await
    }

    /// Counts a failed attempt of a consent (kept, to be tried again). `error` is a
    /// description without secrets.
    pub async fn record_consent_attempt(
        &self,
        credential: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.record_consent_attempt(credential, error));
        let credential = credential.to_owned();
        let error = error.to_owned();
        self.write(move |conn, _| {
            conn.prepare_cached(
                "UPDATE consents SET attempts = attempts + 1, last_error = ?2
                 WHERE credential = ?1",
            )?
            .execute(params![credential, error])?;
            Ok(())
        })
        .await
    }

    /// Connects the user with the consent's credential, whose session now exists as bunq
    /// user `bunq_user_id`, granted by bunq person `granted_by`. In one transaction: the
    /// identity check, the user row (status, ids, sealed token, credential), the consent
    /// deleted, the replaced credential's context deleted, an audit row.
    pub async fn complete_consent(
        &self,
        credential: &str,
        bunq_user_id: u64,
        granted_by: Option<u64>,
    ) -> Result<ConsentCompletion, StoreError> {
        crate::on_postgres!(self, pg => pg.complete_consent(credential, bunq_user_id, granted_by));
        let credential = credential.to_owned();
        let db_user_id = to_db_id(bunq_user_id, "bunq user id")?;
        let db_granted_by = granted_by
            .map(|id| to_db_id(id, "granted-by user id"))
            .transpose()?;
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let consent: Option<(String, bool)> = tx
                .prepare_cached(
                    "SELECT user_ref, replace_identity FROM consents WHERE credential = ?1",
                )?
                .query_row([&credential], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((user_ref, replace)) = consent else {
                return Ok(ConsentCompletion::Gone);
            };
            let Some(before) = user_row(&tx, &user_ref)? else {
                return Ok(ConsentCompletion::Gone);
            };
            let token = read_consent_token(&tx, shared, &credential)?.ok_or_else(|| {
                StoreError::Corrupt(format!("consent {credential} lost its token"))
            })?;
            let now = now_db()?;
            if let (Some(expected), Some(got)) = (before.granted_by_user_id, granted_by) {
                if expected != got && !replace {
                    tx.prepare_cached("DELETE FROM consents WHERE credential = ?1")?
                        .execute([&credential])?;
                    delete_context(&tx, &credential)?;
                    set_last_consent(&tx, &user_ref, "identity_mismatch")?;
                    audit::append(
                        &tx,
                        shared,
                        Some(&user_ref),
                        AuditEvent::IdentityMismatch,
                        &format!("expected_granted_by={expected} got_granted_by={got}"),
                    )?;
                    tx.commit()?;
                    shared.evict_keys(&credential);
                    return Ok(ConsentCompletion::IdentityMismatch { expected, got });
                }
            }
            let sealed = shared.keyring().sealer().seal(
                token.expose_secret().as_bytes(),
                USERS,
                ACCESS_TOKEN,
                &user_ref,
            )?;
            tx.prepare_cached(
                "UPDATE users SET status = 'connected', status_reason = NULL, status_since = ?2,
                   bunq_user_id = ?3, granted_by_user_id = COALESCE(?4, granted_by_user_id),
                   connected_at = ?2, updated_at = ?2, credential = ?5, access_token = ?6
                 WHERE user_ref = ?1",
            )?
            .execute(params![
                user_ref,
                now,
                db_user_id,
                db_granted_by,
                credential,
                sealed
            ])?;
            tx.prepare_cached("DELETE FROM consents WHERE credential = ?1")?
                .execute([&credential])?;
            let replaced = before.credential.filter(|old| *old != credential);
            if let Some(old) = &replaced {
                delete_context(&tx, old)?;
            }
            let mut detail = format!("bunq_user_id={bunq_user_id}");
            if let Some(g) = granted_by {
                detail.push_str(&format!(" granted_by={g}"));
            }
            if replaced.is_some() {
                detail.push_str(" replaced_previous_connection=true");
            }
            audit::append(&tx, shared, Some(&user_ref), AuditEvent::Connect, &detail)?;
            let user = user_row(&tx, &user_ref)?.ok_or_else(|| StoreError::UnknownUser {
                user_ref: user_ref.clone(),
            })?;
            tx.commit()?;
            if let Some(old) = &replaced {
                shared.evict_keys(old);
            }
            Ok(ConsentCompletion::Connected {
                user: Box::new(user),
                replaced,
            })
        })
        .await
    }

    /// Gives up on a consent: deletes it and its context, and, if the user has no live
    /// connection and no other consent in progress, sets the user's status to `why`
    /// with `reason` (no secrets). Returns the user row after the change, if the user
    /// still exists.
    pub async fn refuse_consent(
        &self,
        credential: &str,
        why: ConsentRefusal,
        reason: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.refuse_consent(credential, why, reason));
        let credential = credential.to_owned();
        let reason = reason.to_owned();
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let user_ref: Option<String> = tx
                .prepare_cached("SELECT user_ref FROM consents WHERE credential = ?1")?
                .query_row([&credential], |r| r.get(0))
                .optional()?;
            let Some(user_ref) = user_ref else {
                return Ok(None);
            };
            tx.prepare_cached("DELETE FROM consents WHERE credential = ?1")?
                .execute([&credential])?;
            delete_context(&tx, &credential)?;
            tx.prepare_cached(
                "UPDATE users SET status = ?2, status_reason = ?3, status_since = ?4,
                   updated_at = ?4
                 WHERE user_ref = ?1 AND status = 'connecting'
                   AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.user_ref = ?1)",
            )?
            .execute(params![user_ref, why.as_str(), reason, now_db()?])?;
            set_last_consent(&tx, &user_ref, why.as_str())?;
            audit::append(
                &tx,
                shared,
                Some(&user_ref),
                AuditEvent::ConsentRefused,
                &format!("outcome={} reason={reason}", why.as_str()),
            )?;
            let user = user_row(&tx, &user_ref)?;
            tx.commit()?;
            shared.evict_keys(&credential);
            Ok(user)
        })
        .await
    }

    /// Marks `user_ref` revoked (bunq refused its credential) with `reason`, if
    /// `credential` is still the user's live one and the user is connected: a refusal of
    /// a credential already replaced by a new consent changes nothing. Returns whether
    /// the status changed.
    pub async fn mark_revoked(
        &self,
        user_ref: &str,
        credential: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        crate::on_postgres!(self, pg => pg.mark_revoked(user_ref, credential, reason));
        let user_ref = user_ref.to_owned();
        let credential = credential.to_owned();
        let reason = reason.to_owned();
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let changed = tx
                .prepare_cached(
                    "UPDATE users SET status = 'revoked', status_reason = ?3, status_since = ?4,
                       updated_at = ?4
                     WHERE user_ref = ?1 AND credential = ?2 AND status = 'connected'",
                )?
                .execute(params![user_ref, credential, reason, now_db()?])?;
            if changed > 0 {
                audit::append(&tx, shared, Some(&user_ref), AuditEvent::Revoked, &reason)?;
            }
            tx.commit()?;
            Ok(changed > 0)
        })
        .await
    }

    /// Deletes the context (and session) stored under `credential`: for a consent that
    /// connected after its user was deleted, whose rows nothing else owns.
    pub async fn delete_context(&self, credential: &str) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.delete_context(credential));
        let credential = credential.to_owned();
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            delete_context(&tx, &credential)?;
            tx.commit()?;
            shared.evict_keys(&credential);
            Ok(())
        })
        .await
    }

    /// Every connected user and the credential of its connection (what a gateway warms
    /// its routing table with).
    pub async fn connected_credentials(&self) -> Result<Vec<(String, String)>, StoreError> {
        crate::on_postgres!(self, pg => pg.connected_credentials());
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached(
                "SELECT user_ref, COALESCE(credential, user_ref) FROM users
                 WHERE status = 'connected'",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row?);
            }
            Ok(out)
        })
        .await
    }
}
