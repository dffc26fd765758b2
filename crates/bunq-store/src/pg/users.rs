//! Users and their access tokens on PostgreSQL; see `users.rs`.

use deadpool_postgres::GenericClient;
use secrecy::{ExposeSecret as _, SecretString};

use super::audit;
use super::{PgStore, count, execute, lock_owner, query, query_one, query_opt};
use crate::StoreError;
use crate::audit::AuditEvent;
use crate::schema::{now_db, to_db_id};
use crate::users::{ACCESS_TOKEN, RawUser, USER_COLUMNS, USERS, UserRecord};
use crate::vault::Vault;

pub(crate) async fn user_row<C: GenericClient>(
    client: &C,
    user_ref: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = query_opt(
        client,
        &format!("SELECT {USER_COLUMNS} FROM users WHERE user_ref = $1"),
        &[&user_ref],
    )
    .await?;
    let Some(r) = row else { return Ok(None) };
    RawUser {
        bunq_user_id: r.try_get(0)?,
        granted_by: r.try_get(1)?,
        status: r.try_get(2)?,
        status_reason: r.try_get(3)?,
        status_since: r.try_get(4)?,
        connected_at: r.try_get(5)?,
        updated_at: r.try_get(6)?,
        credential: r.try_get(7)?,
        last_consent: r.try_get(8)?,
        last_consent_at: r.try_get(9)?,
        pending: r.try_get(10)?,
        egress: r.try_get(11)?,
    }
    .into_record(user_ref)
    .map(Some)
}

pub(crate) async fn read_access_token<C: GenericClient>(
    client: &C,
    vault: &Vault,
    user_ref: &str,
) -> Result<Option<SecretString>, StoreError> {
    // NULL while a first consent is connecting: the token is the consent's until then.
    let row = query_opt(
        client,
        "SELECT access_token FROM users WHERE user_ref = $1",
        &[&user_ref],
    )
    .await?;
    let sealed: Option<Vec<u8>> = match row {
        Some(r) => r.try_get(0)?,
        None => None,
    };
    sealed
        .map(|blob| {
            vault
                .keyring()
                .open_string(&blob, USERS, ACCESS_TOKEN, user_ref)
        })
        .transpose()
}

/// Every credential stored for `user_ref`; see `users::credentials_of`.
pub(crate) async fn credentials_of<C: GenericClient>(
    client: &C,
    user_ref: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = query(
        client,
        "SELECT credential FROM contexts
         WHERE credential = $1 OR substr(credential, 1, length($1) + 1) = $1 || '/'",
        &[&user_ref],
    )
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

impl PgStore {
    pub(crate) async fn put_access_token(
        &self,
        user_ref: &str,
        token: &SecretString,
    ) -> Result<(), StoreError> {
        let sealed = self.keyring().sealer().seal(
            token.expose_secret().as_bytes(),
            USERS,
            ACCESS_TOKEN,
            user_ref,
        )?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_owner(&tx, user_ref).await?;
        execute(
            &tx,
            "INSERT INTO users (user_ref, status, status_since, updated_at, credential,
                                access_token)
             VALUES ($1, 'connecting', $2, $2, $1, $3)
             ON CONFLICT (user_ref) DO UPDATE SET
               status = 'connecting', status_reason = NULL,
               status_since = excluded.status_since, updated_at = excluded.updated_at,
               credential = excluded.credential, access_token = excluded.access_token",
            &[&user_ref, &now_db()?, &sealed],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn access_token(
        &self,
        user_ref: &str,
    ) -> Result<Option<SecretString>, StoreError> {
        let client = self.client().await?;
        read_access_token(&client, self, user_ref).await
    }

    pub(crate) async fn mark_connected(
        &self,
        user_ref: &str,
        bunq_user_id: u64,
    ) -> Result<UserRecord, StoreError> {
        let db_id = to_db_id(bunq_user_id, "bunq user id")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_owner(&tx, user_ref).await?;
        let now = now_db()?;
        let changed = execute(
            &tx,
            "UPDATE users SET status = 'connected', status_reason = NULL,
               status_since = $3, bunq_user_id = $2, connected_at = $3,
               updated_at = $3, egress = $4 WHERE user_ref = $1",
            &[&user_ref, &db_id, &now, &self.egress],
        )
        .await?;
        if changed == 0 {
            return Err(StoreError::UnknownUser {
                user_ref: user_ref.to_owned(),
            });
        }
        audit::append(
            &tx,
            self,
            Some(user_ref),
            AuditEvent::Connect,
            &format!("bunq_user_id={bunq_user_id}"),
        )
        .await?;
        super::fleet::notify_user(&tx, self.replica.as_deref(), user_ref).await?;
        let record = user_row(&tx, user_ref)
            .await?
            .ok_or_else(|| StoreError::UnknownUser {
                user_ref: user_ref.to_owned(),
            })?;
        tx.commit().await?;
        Ok(record)
    }

    pub(crate) async fn user(&self, user_ref: &str) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        user_row(&client, user_ref).await
    }

    pub(crate) async fn delete_user_by(
        &self,
        user_ref: &str,
        actor: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_owner(&tx, user_ref).await?;
        let bunq_user_id: Option<i64> = match query_opt(
            &tx,
            "SELECT bunq_user_id FROM users WHERE user_ref = $1",
            &[&user_ref],
        )
        .await?
        {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        let credentials = credentials_of(&tx, user_ref).await?;
        let mut sessions = 0;
        let mut contexts = 0;
        for credential in &credentials {
            sessions += execute(
                &tx,
                "DELETE FROM sessions WHERE credential = $1",
                &[credential],
            )
            .await?;
            contexts += execute(
                &tx,
                "DELETE FROM contexts WHERE credential = $1",
                &[credential],
            )
            .await?;
        }
        let users = execute(&tx, "DELETE FROM users WHERE user_ref = $1", &[&user_ref]).await?;
        let consents = execute(
            &tx,
            "DELETE FROM consents WHERE user_ref = $1",
            &[&user_ref],
        )
        .await?;
        // As on SQLite: states, idempotency records, the callback URL and every event
        // go with the user (GDPR erasure).
        for sql in [
            "DELETE FROM oauth_states WHERE user_ref = $1",
            "DELETE FROM idempotency_keys WHERE user_ref = $1",
            "DELETE FROM callback_ids WHERE user_ref = $1",
            "DELETE FROM events WHERE user_ref = $1",
        ] {
            execute(&tx, sql, &[&user_ref]).await?;
        }
        let existed = users + contexts + sessions + consents > 0;
        if existed {
            let detail = match bunq_user_id {
                Some(id) => format!(
                    "bunq_user_id={id} contexts={contexts} sessions={sessions} consents={consents}"
                ),
                None => format!("contexts={contexts} sessions={sessions} consents={consents}"),
            };
            let detail = match actor {
                Some(actor) => format!("{detail} actor={actor}"),
                None => detail,
            };
            audit::append(&tx, self, Some(user_ref), AuditEvent::Disconnect, &detail).await?;
            super::fleet::notify_user(&tx, self.replica.as_deref(), user_ref).await?;
        }
        tx.commit().await?;
        for credential in &credentials {
            self.evict_keys(credential);
        }
        Ok(existed)
    }

    pub(crate) async fn count_users(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        count(&query_one(&client, "SELECT COUNT(*) FROM users", &[]).await?)
    }

    pub(crate) async fn count_connected_users(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        count(
            &query_one(
                &client,
                "SELECT COUNT(*) FROM users WHERE status = 'connected'",
                &[],
            )
            .await?,
        )
    }
}
