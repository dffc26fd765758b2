//! Connected end users and their OAuth access tokens.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};
use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{self, AuditEvent};
use crate::schema::{from_db_id, from_db_time, now_db, to_db_id};
use crate::{Store, StoreError};

pub(crate) const USERS: &str = "users";
pub(crate) const ACCESS_TOKEN: &str = "access_token";

/// Where a user's grant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserStatus {
    /// A consent arrived; its installation, device and session are not done yet.
    Connecting,
    /// The bunq account is connected: calls for the user are served.
    Connected,
    /// bunq refused the user's credential (the user withdrew access in the bunq app):
    /// no call for the user reaches bunq until the user consents again.
    Revoked,
    /// Connecting failed for a reason that retrying cannot fix; consent again.
    Failed,
}

impl UserStatus {
    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Connecting => "connecting",
            UserStatus::Connected => "connected",
            UserStatus::Revoked => "revoked",
            UserStatus::Failed => "failed",
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Self, StoreError> {
        match name {
            "connecting" => Ok(UserStatus::Connecting),
            "connected" => Ok(UserStatus::Connected),
            "revoked" => Ok(UserStatus::Revoked),
            "failed" => Ok(UserStatus::Failed),
            other => Err(StoreError::Corrupt(format!(
                "unknown user status {other:?}"
            ))),
        }
    }
}

/// A user row without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord {
    /// The application's reference of the end user.
    pub user_ref: String,
    /// bunq's id of the user the session acts as (for OAuth the `UserApiKey`), the one
    /// in paths such as `/user/{id}/monetary-account`, once connected.
    pub bunq_user_id: Option<u64>,
    /// The bunq person who granted access: the identity a new consent must match.
    pub granted_by_user_id: Option<u64>,
    /// Where the user's grant stands.
    pub status: UserStatus,
    /// Why, for [`UserStatus::Revoked`] and [`UserStatus::Failed`].
    pub status_reason: Option<String>,
    /// Since when the status holds.
    pub status_since: SystemTime,
    /// When the user was (last) connected.
    pub connected_at: Option<SystemTime>,
    /// When the row last changed.
    pub updated_at: SystemTime,
    /// The credential (context) the live connection uses, if any.
    pub credential: Option<String>,
    /// Consents received and not yet connected or refused.
    pub pending_consents: u64,
    /// What became of the latest consent that did not connect, and when
    /// (`identity_mismatch`, `revoked`, `failed`, `deleted`).
    pub last_consent: Option<(String, SystemTime)>,
    /// The egress the live connection's device was registered from (fleet mode): bunq
    /// accepts the device from that IP only. `None`: the default egress.
    pub egress: Option<String>,
}

impl UserRecord {
    /// The credential the user's connection is stored under: its consent's, or the
    /// user's own name for a user connected before consents had credentials of their own
    /// (or through [`Store::put_access_token`]).
    pub fn live_credential(&self) -> &str {
        self.credential.as_deref().unwrap_or(&self.user_ref)
    }
}

/// The columns of a user row as stored, before they are checked and converted.
pub(crate) struct RawUser {
    pub(crate) bunq_user_id: Option<i64>,
    pub(crate) granted_by: Option<i64>,
    pub(crate) status: String,
    pub(crate) status_reason: Option<String>,
    pub(crate) status_since: i64,
    pub(crate) connected_at: Option<i64>,
    pub(crate) updated_at: i64,
    pub(crate) credential: Option<String>,
    pub(crate) last_consent: Option<String>,
    pub(crate) last_consent_at: Option<i64>,
    pub(crate) pending: i64,
    pub(crate) egress: Option<String>,
}

/// The columns [`RawUser`] is read from, in its order (both backends).
pub(crate) const USER_COLUMNS: &str = "bunq_user_id, granted_by_user_id, status, status_reason, \
     status_since, connected_at, updated_at, credential, last_consent, last_consent_at, \
     (SELECT COUNT(*) FROM consents c WHERE c.user_ref = users.user_ref), egress";

impl RawUser {
    pub(crate) fn into_record(self, user_ref: &str) -> Result<UserRecord, StoreError> {
        let id = |v: Option<i64>, what| v.map(|id| from_db_id(id, what)).transpose();
        Ok(UserRecord {
            user_ref: user_ref.to_owned(),
            bunq_user_id: id(self.bunq_user_id, "bunq user id")?,
            granted_by_user_id: id(self.granted_by, "granted-by user id")?,
            status: UserStatus::parse(&self.status)?,
            status_reason: self.status_reason,
            status_since: from_db_time(self.status_since)?,
            connected_at: self.connected_at.map(from_db_time).transpose()?,
            updated_at: from_db_time(self.updated_at)?,
            credential: self.credential,
            pending_consents: from_db_id(self.pending, "consent count")?,
            last_consent: match (self.last_consent, self.last_consent_at) {
                (Some(what), Some(at)) => Some((what, from_db_time(at)?)),
                _ => None,
            },
            egress: self.egress,
        })
    }
}

pub(crate) fn user_row(
    conn: &Connection,
    user_ref: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_ref = ?1"
        ))?
        .query_row([user_ref], |r| {
            Ok(RawUser {
                bunq_user_id: r.get(0)?,
                granted_by: r.get(1)?,
                status: r.get(2)?,
                status_reason: r.get(3)?,
                status_since: r.get(4)?,
                connected_at: r.get(5)?,
                updated_at: r.get(6)?,
                credential: r.get(7)?,
                last_consent: r.get(8)?,
                last_consent_at: r.get(9)?,
                pending: r.get(10)?,
                egress: r.get(11)?,
            })
        })
        .optional()?;
    row.map(|raw| raw.into_record(user_ref)).transpose()
}

impl Store {
    /// Stores (sealed) the OAuth access token of `user_ref`, creating the user row if
    /// needed, with the user's own name as its credential. The status becomes
    /// [`UserStatus::Connecting`] until [`Store::mark_connected`] confirms the token
    /// works. The direct path for tools and tests; an OAuth callback goes through
    /// [`Store::add_consent`], which keeps a connected user's connection serving until
    /// the new one works.
    pub async fn put_access_token(
        &self,
        user_ref: &str,
        token: &SecretString,
    ) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.put_access_token(user_ref, token));
        let user_ref = user_ref.to_owned();
        let token = token.clone();
        self.write(move |conn, shared| {
            let sealed = shared.keyring().sealer().seal(
                token.expose_secret().as_bytes(),
                USERS,
                ACCESS_TOKEN,
                &user_ref,
            )?;
            conn.prepare_cached(
                "INSERT INTO users (user_ref, status, status_since, updated_at, credential,
                                    access_token)
                 VALUES (?1, 'connecting', ?2, ?2, ?1, ?3)
                 ON CONFLICT (user_ref) DO UPDATE SET
                   status = 'connecting', status_reason = NULL,
                   status_since = excluded.status_since, updated_at = excluded.updated_at,
                   credential = excluded.credential, access_token = excluded.access_token",
            )?
            .execute(params![user_ref, now_db()?, sealed])?;
            Ok(())
        })
        .await
    }

    /// The OAuth access token of `user_ref`, if the user exists.
    pub async fn access_token(&self, user_ref: &str) -> Result<Option<SecretString>, StoreError> {
        crate::on_postgres!(self, pg => pg.access_token(user_ref));
        let user_ref = user_ref.to_owned();
        self.read(move |conn, shared| read_access_token(conn, shared, &user_ref))
            .await
    }

    /// Marks `user_ref` connected as bunq user `bunq_user_id`, and writes "connect" to
    /// the audit log in the same transaction. The user must exist
    /// ([`Store::put_access_token`] first).
    pub async fn mark_connected(
        &self,
        user_ref: &str,
        bunq_user_id: u64,
    ) -> Result<UserRecord, StoreError> {
        crate::on_postgres!(self, pg => pg.mark_connected(user_ref, bunq_user_id));
        let user_ref = user_ref.to_owned();
        let db_id = to_db_id(bunq_user_id, "bunq user id")?;
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let now = now_db()?;
            let changed = tx
                .prepare_cached(
                    "UPDATE users SET status = 'connected', status_reason = NULL,
                       status_since = ?3, bunq_user_id = ?2, connected_at = ?3,
                       updated_at = ?3 WHERE user_ref = ?1",
                )?
                .execute(params![user_ref, db_id, now])?;
            if changed == 0 {
                return Err(StoreError::UnknownUser { user_ref });
            }
            audit::append(
                &tx,
                shared,
                Some(&user_ref),
                AuditEvent::Connect,
                &format!("bunq_user_id={bunq_user_id}"),
            )?;
            let record = user_row(&tx, &user_ref)?.ok_or_else(|| StoreError::UnknownUser {
                user_ref: user_ref.clone(),
            })?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    /// The user row of `user_ref`, without secrets.
    pub async fn user(&self, user_ref: &str) -> Result<Option<UserRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.user(user_ref));
        let user_ref = user_ref.to_owned();
        self.read(move |conn, _| user_row(conn, &user_ref)).await
    }

    /// Deletes `user_ref`: the user row with its token, every bunq context and session
    /// of the user's credentials (the live one and those of consents in progress), its
    /// consents, OAuth states (pending and taken: a callback that took its state before
    /// the deletion can then not bring the user back, see [`Store::add_consent`]) and
    /// idempotency records, in one transaction, with a "disconnect" audit row that stays.
    /// Returns whether anything was there.
    pub async fn delete_user(&self, user_ref: &str) -> Result<bool, StoreError> {
        self.delete_user_by(user_ref, None).await
    }

    /// [`Store::delete_user`], naming who asked for it (`actor`, e.g. the name of the
    /// gateway's API key, never a secret) in the audit row's detail as `actor=<name>`.
    pub async fn delete_user_by(
        &self,
        user_ref: &str,
        actor: Option<&str>,
    ) -> Result<bool, StoreError> {
        crate::on_postgres!(self, pg => pg.delete_user_by(user_ref, actor));
        let user_ref = user_ref.to_owned();
        let actor = actor.map(str::to_owned);
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let bunq_user_id: Option<Option<i64>> = tx
                .prepare_cached("SELECT bunq_user_id FROM users WHERE user_ref = ?1")?
                .query_row([&user_ref], |r| r.get(0))
                .optional()?;
            let credentials = credentials_of(&tx, &user_ref)?;
            let mut sessions = 0;
            let mut contexts = 0;
            for credential in &credentials {
                sessions += tx
                    .prepare_cached("DELETE FROM sessions WHERE credential = ?1")?
                    .execute([credential])?;
                contexts += tx
                    .prepare_cached("DELETE FROM contexts WHERE credential = ?1")?
                    .execute([credential])?;
            }
            let users = tx
                .prepare_cached("DELETE FROM users WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            let consents = tx
                .prepare_cached("DELETE FROM consents WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            tx.prepare_cached("DELETE FROM oauth_states WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            tx.prepare_cached("DELETE FROM idempotency_keys WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            // The callback URL dies with the user; a new connection gets a new one. The
            // user's events go too, delivered or not: they hold the user's payments, and
            // a deleted user's personal data must not stay behind (GDPR erasure).
            tx.prepare_cached("DELETE FROM callback_ids WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            tx.prepare_cached("DELETE FROM events WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            let existed = users + contexts + sessions + consents > 0;
            if existed {
                let detail = match bunq_user_id.flatten() {
                    Some(id) => format!(
                        "bunq_user_id={id} contexts={contexts} sessions={sessions} consents={consents}"
                    ),
                    None => {
                        format!("contexts={contexts} sessions={sessions} consents={consents}")
                    }
                };
                let detail = match &actor {
                    Some(actor) => format!("{detail} actor={actor}"),
                    None => detail,
                };
                audit::append(&tx, shared, Some(&user_ref), AuditEvent::Disconnect, &detail)?;
            }
            tx.commit()?;
            for credential in &credentials {
                shared.evict_keys(credential);
            }
            Ok(existed)
        })
        .await
    }

    /// How many user rows there are (connecting or connected).
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.count_users());
        self.read(|conn, _| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM users")?
                .query_row([], |r| r.get(0))?;
            from_db_id(n, "count")
        })
        .await
    }

    /// Whether any user row exists (connecting or connected): [`count_users`](Self::count_users)
    /// `> 0` without counting, so its cost does not grow with the users.
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        crate::on_postgres!(self, pg => async { Ok(pg.count_users().await? > 0) });
        self.read(|conn, _| {
            let any: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM users)")?
                .query_row([], |r| r.get(0))?;
            Ok(any)
        })
        .await
    }

    /// How many users are connected.
    pub async fn count_connected_users(&self) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.count_connected_users());
        self.read(|conn, _| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM users WHERE status = 'connected'")?
                .query_row([], |r| r.get(0))?;
            from_db_id(n, "count")
        })
        .await
    }
}

pub(crate) fn read_access_token(
    conn: &Connection,
    shared: &crate::db::Shared,
    user_ref: &str,
) -> Result<Option<SecretString>, StoreError> {
    // NULL while a first consent is connecting: the token is the consent's until then.
    let sealed: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT access_token FROM users WHERE user_ref = ?1")?
        .query_row([user_ref], |r| r.get(0))
        .optional()?;
    sealed
        .flatten()
        .map(|blob| {
            shared
                .keyring()
                .open_string(&blob, USERS, ACCESS_TOKEN, user_ref)
        })
        .transpose()
}

/// Every credential stored for `user_ref`: its own name (a V1 user's, or one connected
/// through [`Store::put_access_token`]) and `{user_ref}/...` (one per consent). A
/// `user_ref` cannot contain `/`, so the prefix is the user's alone; `substr` instead of
/// `LIKE`, whose `_` would be a wildcard.
pub(crate) fn credentials_of(conn: &Connection, user_ref: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT credential FROM contexts
         WHERE credential = ?1 OR substr(credential, 1, length(?1) + 1) = ?1 || '/'",
    )?;
    let rows = stmt.query_map([user_ref], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row?);
    }
    Ok(out)
}
