//! The audit log on PostgreSQL; see `audit.rs` for what it keeps and why.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

use super::{PgStore, execute, query, query_opt};
use crate::StoreError;
use crate::audit::{AUDIT_KEY_NAME, AuditEntry, AuditEvent, SEALED_KEY, STORE_KEYS, hash_ref};
use crate::key::MasterKey;
use crate::schema::{from_db_id, from_db_time, now_db};
use crate::vault::Vault;

/// The audit key, loaded through `client` on first use.
pub(crate) async fn audit_key<C: GenericClient>(
    client: &C,
    vault: &Vault,
) -> Result<Arc<hmac::Key>, StoreError> {
    if let Some(key) = vault.loaded_audit_key() {
        return Ok(key);
    }
    let row = query_opt(
        client,
        "SELECT sealed_key FROM store_keys WHERE name = $1",
        &[&AUDIT_KEY_NAME],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("the audit key is missing".to_owned()))?;
    let blob: Vec<u8> = row.try_get(0)?;
    let bytes = vault
        .keyring()
        .open(&blob, STORE_KEYS, SEALED_KEY, AUDIT_KEY_NAME)?;
    Ok(vault.set_audit_key(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
}

/// Appends one row, inside the caller's transaction.
pub(crate) async fn append<C: GenericClient>(
    client: &C,
    vault: &Vault,
    user_ref: Option<&str>,
    event: AuditEvent,
    detail: &str,
) -> Result<(), StoreError> {
    let hashed = match user_ref {
        Some(u) => Some(hash_ref(audit_key(client, vault).await?.as_ref(), u)),
        None => None,
    };
    execute(
        client,
        "INSERT INTO audit_log (at, user_ref, event, detail) VALUES ($1, $2, $3, $4)",
        &[&now_db()?, &hashed, &event.as_str(), &detail],
    )
    .await?;
    Ok(())
}

/// As `audit::prepare`: creates the audit key at the first open of a schema without one
/// and re-hashes the `user_ref` of older rows in the same transaction, the update
/// trigger disabled inside it only (DDL is transactional here). Run under the migration
/// lock, so two gateways starting together create one key.
pub(crate) async fn prepare(
    client: &mut tokio_postgres::Client,
    key: &MasterKey,
) -> Result<Option<Arc<hmac::Key>>, StoreError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM store_keys WHERE name = $1",
            &[&AUDIT_KEY_NAME],
        )
        .await?
        .is_some();
    if exists {
        return Ok(None);
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| StoreError::Crypto("system random source failed"))?;
    let sealed = key.seal(bytes.as_ref(), STORE_KEYS, SEALED_KEY, AUDIT_KEY_NAME)?;
    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, bytes.as_ref());
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO store_keys (name, sealed_key) VALUES ($1, $2)",
        &[&AUDIT_KEY_NAME, &sealed],
    )
    .await?;
    let legacy = tx
        .query(
            "SELECT id, user_ref FROM audit_log WHERE user_ref IS NOT NULL",
            &[],
        )
        .await?;
    if !legacy.is_empty() {
        tx.batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
            .await?;
        let update = tx
            .prepare("UPDATE audit_log SET user_ref = $2 WHERE id = $1")
            .await?;
        for row in &legacy {
            let (id, user_ref): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
            tx.execute(&update, &[&id, &hash_ref(&hmac_key, &user_ref)])
                .await?;
        }
        tx.batch_execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update")
            .await?;
    }
    tx.commit().await?;
    Ok(Some(Arc::new(hmac_key)))
}

impl PgStore {
    pub(crate) async fn audit_log(
        &self,
        user_ref: Option<&str>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let hashed = match user_ref {
            Some(u) => Some(hash_ref(audit_key(&client, self).await?.as_ref(), u)),
            None => None,
        };
        let rows = query(
            &client,
            "SELECT id, at, user_ref, event, detail FROM audit_log
             WHERE $1::TEXT IS NULL OR user_ref = $1 ORDER BY id",
            &[&hashed],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: from_db_id(r.try_get(0)?, "audit id")?,
                    at: from_db_time(r.try_get(1)?)?,
                    user_ref: r.try_get(2)?,
                    event: AuditEvent::parse(r.try_get(3)?)?,
                    detail: r.try_get(4)?,
                })
            })
            .collect()
    }
}
