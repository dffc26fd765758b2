//! Consents and grant states on PostgreSQL; see `consents.rs`. Every write here takes
//! the user's advisory lock first, so a consent, its completion and the user's deletion
//! are ordered as on SQLite's single writer.

use bunq_oauth::StateKey;
use deadpool_postgres::GenericClient;
use secrecy::{ExposeSecret as _, SecretString};

use super::audit;
use super::users::{read_access_token, user_row};
use super::{PgStore, execute, lock_owner, query, query_opt};
use crate::StoreError;
use crate::audit::AuditEvent;
use crate::consents::{
    CONSENTS, ConsentCompletion, ConsentRefusal, PendingConsent, new_credential,
};
use crate::schema::{from_db_id, from_db_time, now_db, to_db_id};
use crate::users::{ACCESS_TOKEN, USERS, UserRecord};
use crate::vault::Vault;

async fn delete_context<C: GenericClient>(client: &C, credential: &str) -> Result<(), StoreError> {
    execute(
        client,
        "DELETE FROM sessions WHERE credential = $1",
        &[&credential],
    )
    .await?;
    execute(
        client,
        "DELETE FROM contexts WHERE credential = $1",
        &[&credential],
    )
    .await?;
    Ok(())
}

async fn set_last_consent<C: GenericClient>(
    client: &C,
    user_ref: &str,
    what: &str,
) -> Result<(), StoreError> {
    execute(
        client,
        "UPDATE users SET last_consent = $2, last_consent_at = $3, updated_at = $3
         WHERE user_ref = $1",
        &[&user_ref, &what, &now_db()?],
    )
    .await?;
    Ok(())
}

async fn read_consent_token<C: GenericClient>(
    client: &C,
    vault: &Vault,
    credential: &str,
) -> Result<Option<SecretString>, StoreError> {
    let row = query_opt(
        client,
        "SELECT user_ref, access_token FROM consents WHERE credential = $1",
        &[&credential],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (user_ref, sealed): (String, Option<Vec<u8>>) = (row.try_get(0)?, row.try_get(1)?);
    match sealed {
        Some(sealed) => vault
            .keyring()
            .open_string(&sealed, CONSENTS, ACCESS_TOKEN, credential)
            .map(Some),
        // A V1 `connecting` user: its token is the user row's.
        None => read_access_token(client, vault, &user_ref).await,
    }
}

/// The user a consent belongs to, if it exists.
async fn consent_owner<C: GenericClient>(
    client: &C,
    credential: &str,
) -> Result<Option<String>, StoreError> {
    match query_opt(
        client,
        "SELECT user_ref FROM consents WHERE credential = $1",
        &[&credential],
    )
    .await?
    {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

impl PgStore {
    pub(crate) async fn add_consent(
        &self,
        state: &StateKey,
        user_ref: &str,
        token: &SecretString,
        replace: bool,
    ) -> Result<Option<PendingConsent>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Under the user's lock, a deletion either happened before (the state is gone)
        // or waits for this commit and deletes the consent with the user.
        lock_owner(&tx, user_ref).await?;
        let state_is_there = query_opt(
            &tx,
            "SELECT 1 FROM oauth_states WHERE state_key = $1 AND user_ref = $2",
            &[&state.0, &user_ref],
        )
        .await?
        .is_some();
        if !state_is_there {
            return Ok(None);
        }
        let credential = new_credential(user_ref)?;
        let sealed = self.keyring().sealer().seal(
            token.expose_secret().as_bytes(),
            CONSENTS,
            ACCESS_TOKEN,
            &credential,
        )?;
        let now = now_db()?;
        execute(
            &tx,
            "INSERT INTO consents (credential, user_ref, access_token, replace_identity,
                                   created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&credential, &user_ref, &sealed, &replace, &now],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO users (user_ref, status, status_since, updated_at)
             VALUES ($1, 'connecting', $2, $2)
             ON CONFLICT (user_ref) DO UPDATE SET
               status = CASE WHEN users.status = 'connected' THEN users.status
                             ELSE 'connecting' END,
               status_reason = CASE WHEN users.status = 'connected'
                                    THEN users.status_reason END,
               status_since = CASE WHEN users.status = 'connected' THEN users.status_since
                                   ELSE excluded.status_since END,
               updated_at = excluded.updated_at",
            &[&user_ref, &now],
        )
        .await?;
        audit::append(
            &tx,
            self,
            Some(user_ref),
            AuditEvent::Consent,
            &format!("replace={replace}"),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(PendingConsent {
            credential,
            user_ref: user_ref.to_owned(),
            replace,
            created_at: from_db_time(now)?,
            attempts: 0,
        }))
    }

    pub(crate) async fn pending_consents(&self) -> Result<Vec<PendingConsent>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT credential, user_ref, replace_identity, created_at, attempts
             FROM consents ORDER BY created_at, credential",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingConsent {
                    credential: r.try_get(0)?,
                    user_ref: r.try_get(1)?,
                    replace: r.try_get(2)?,
                    created_at: from_db_time(r.try_get(3)?)?,
                    attempts: from_db_id(r.try_get(4)?, "attempts")?,
                })
            })
            .collect()
    }

    pub(crate) async fn consent_credentials(
        &self,
        user_ref: &str,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT credential FROM consents WHERE user_ref = $1 ORDER BY created_at",
            &[&user_ref],
        )
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(crate) async fn consent_token(
        &self,
        credential: &str,
    ) -> Result<Option<SecretString>, StoreError> {
        let client = self.client().await?;
        read_consent_token(&client, self, credential).await
    }

    pub(crate) async fn record_consent_attempt(
        &self,
        credential: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE consents SET attempts = attempts + 1, last_error = $2
             WHERE credential = $1",
            &[&credential, &error],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn complete_consent(
        &self,
        credential: &str,
        bunq_user_id: u64,
        granted_by: Option<u64>,
    ) -> Result<ConsentCompletion, StoreError> {
        let db_user_id = to_db_id(bunq_user_id, "bunq user id")?;
        let db_granted_by = granted_by
            .map(|id| to_db_id(id, "granted-by user id"))
            .transpose()?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(owner) = consent_owner(&tx, credential).await? else {
            return Ok(ConsentCompletion::Gone);
        };
        lock_owner(&tx, &owner).await?;
        // Read again under the lock: a deletion may have committed meanwhile.
        let consent = query_opt(
            &tx,
            "SELECT user_ref, replace_identity FROM consents WHERE credential = $1",
            &[&credential],
        )
        .await?;
        let Some(consent) = consent else {
            return Ok(ConsentCompletion::Gone);
        };
        let (user_ref, replace): (String, bool) = (consent.try_get(0)?, consent.try_get(1)?);
        let Some(before) = user_row(&tx, &user_ref).await? else {
            return Ok(ConsentCompletion::Gone);
        };
        let token = read_consent_token(&tx, self, credential)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("consent {credential} lost its token")))?;
        let now = now_db()?;
        if let (Some(expected), Some(got)) = (before.granted_by_user_id, granted_by) {
            if expected != got && !replace {
                execute(
                    &tx,
                    "DELETE FROM consents WHERE credential = $1",
                    &[&credential],
                )
                .await?;
                delete_context(&tx, credential).await?;
                set_last_consent(&tx, &user_ref, "identity_mismatch").await?;
                audit::append(
                    &tx,
                    self,
                    Some(&user_ref),
                    AuditEvent::IdentityMismatch,
                    &format!("expected_granted_by={expected} got_granted_by={got}"),
                )
                .await?;
                tx.commit().await?;
                self.evict_keys(credential);
                return Ok(ConsentCompletion::IdentityMismatch { expected, got });
            }
        }
        let sealed = self.keyring().sealer().seal(
            token.expose_secret().as_bytes(),
            USERS,
            ACCESS_TOKEN,
            &user_ref,
        )?;
        execute(
            &tx,
            "UPDATE users SET status = 'connected', status_reason = NULL, status_since = $2,
               bunq_user_id = $3, granted_by_user_id = COALESCE($4, granted_by_user_id),
               connected_at = $2, updated_at = $2, credential = $5, access_token = $6,
               egress = $7
             WHERE user_ref = $1",
            &[
                &user_ref,
                &now,
                &db_user_id,
                &db_granted_by,
                &credential,
                &sealed,
                &self.egress,
            ],
        )
        .await?;
        execute(
            &tx,
            "DELETE FROM consents WHERE credential = $1",
            &[&credential],
        )
        .await?;
        let replaced = before.credential.filter(|old| old != credential);
        if let Some(old) = &replaced {
            delete_context(&tx, old).await?;
        }
        let mut detail = format!("bunq_user_id={bunq_user_id}");
        if let Some(g) = granted_by {
            detail.push_str(&format!(" granted_by={g}"));
        }
        if replaced.is_some() {
            detail.push_str(" replaced_previous_connection=true");
        }
        audit::append(&tx, self, Some(&user_ref), AuditEvent::Connect, &detail).await?;
        super::fleet::notify_user(&tx, self.replica.as_deref(), &user_ref).await?;
        let user = user_row(&tx, &user_ref)
            .await?
            .ok_or_else(|| StoreError::UnknownUser {
                user_ref: user_ref.clone(),
            })?;
        tx.commit().await?;
        if let Some(old) = &replaced {
            self.evict_keys(old);
        }
        Ok(ConsentCompletion::Connected {
            user: Box::new(user),
            replaced,
        })
    }

    pub(crate) async fn refuse_consent(
        &self,
        credential: &str,
        why: ConsentRefusal,
        reason: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(owner) = consent_owner(&tx, credential).await? else {
            return Ok(None);
        };
        lock_owner(&tx, &owner).await?;
        let Some(user_ref) = consent_owner(&tx, credential).await? else {
            return Ok(None);
        };
        execute(
            &tx,
            "DELETE FROM consents WHERE credential = $1",
            &[&credential],
        )
        .await?;
        delete_context(&tx, credential).await?;
        execute(
            &tx,
            "UPDATE users SET status = $2, status_reason = $3, status_since = $4,
               updated_at = $4
             WHERE user_ref = $1 AND status = 'connecting'
               AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.user_ref = $1)",
            &[&user_ref, &why.as_str(), &reason, &now_db()?],
        )
        .await?;
        set_last_consent(&tx, &user_ref, why.as_str()).await?;
        audit::append(
            &tx,
            self,
            Some(&user_ref),
            AuditEvent::ConsentRefused,
            &format!("outcome={} reason={reason}", why.as_str()),
        )
        .await?;
        super::fleet::notify_user(&tx, self.replica.as_deref(), &user_ref).await?;
        let user = user_row(&tx, &user_ref).await?;
        tx.commit().await?;
        self.evict_keys(credential);
        Ok(user)
    }

    pub(crate) async fn mark_revoked(
        &self,
        user_ref: &str,
        credential: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_owner(&tx, user_ref).await?;
        let changed = execute(
            &tx,
            "UPDATE users SET status = 'revoked', status_reason = $3, status_since = $4,
               updated_at = $4
             WHERE user_ref = $1 AND credential = $2 AND status = 'connected'",
            &[&user_ref, &credential, &reason, &now_db()?],
        )
        .await?;
        if changed > 0 {
            audit::append(&tx, self, Some(user_ref), AuditEvent::Revoked, reason).await?;
            super::fleet::notify_user(&tx, self.replica.as_deref(), user_ref).await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    pub(crate) async fn delete_context(&self, credential: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_owner(&tx, credential).await?;
        delete_context(&tx, credential).await?;
        tx.commit().await?;
        self.evict_keys(credential);
        Ok(())
    }

    pub(crate) async fn connected_credentials(&self) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT user_ref, COALESCE(credential, user_ref) FROM users
             WHERE status = 'connected'",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
