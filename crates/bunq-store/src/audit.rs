//! The append-only audit log: who connected, disconnected, got a session, and when the
//! master key was rotated. Details name ids, never secrets.

use std::sync::Arc;
use std::time::SystemTime;

use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::{Connection, OptionalExtension as _, params};
use zeroize::Zeroizing;

use crate::db::Shared;
use crate::key::MasterKey;
use crate::schema::{from_db_time, now_db};
use crate::{Store, StoreError};

/// The table of keys the store generated, sealed under the master key.
pub(crate) const STORE_KEYS: &str = "store_keys";
/// Its sealed column.
pub(crate) const SEALED_KEY: &str = "sealed_key";
/// The row of the audit log's hashing key.
pub(crate) const AUDIT_KEY_NAME: &str = "audit";
/// Marks a hashed `user_ref` (format 1: HMAC-SHA256, hex).
const HASH_PREFIX: &str = "h1:";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditEvent {
    /// A user's bunq account was connected ([`Store::mark_connected`]).
    Connect,
    /// A user was deleted ([`Store::delete_user`]).
    Disconnect,
    /// A context was saved with a session id not seen before for its credential.
    SessionCreated,
    /// The master key was rotated ([`Store::rotate_key`]).
    KeyRotated,
    /// An OAuth callback delivered a new access token ([`Store::add_consent`]).
    Consent,
    /// bunq refused a user's credential: access was withdrawn ([`Store::mark_revoked`]).
    Revoked,
    /// A consent could not be connected ([`Store::refuse_consent`]).
    ConsentRefused,
    /// A consent came from another bunq account than the connected one and was refused.
    IdentityMismatch,
}

impl AuditEvent {
    /// The name stored in the `event` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Connect => "connect",
            AuditEvent::Disconnect => "disconnect",
            AuditEvent::SessionCreated => "session_created",
            AuditEvent::KeyRotated => "key_rotated",
            AuditEvent::Consent => "consent",
            AuditEvent::Revoked => "revoked",
            AuditEvent::ConsentRefused => "consent_refused",
            AuditEvent::IdentityMismatch => "identity_mismatch",
        }
    }

    pub(crate) fn parse(name: &str) -> Result<Self, StoreError> {
        Ok(match name {
            "connect" => AuditEvent::Connect,
            "disconnect" => AuditEvent::Disconnect,
            "session_created" => AuditEvent::SessionCreated,
            "key_rotated" => AuditEvent::KeyRotated,
            "consent" => AuditEvent::Consent,
            "revoked" => AuditEvent::Revoked,
            "consent_refused" => AuditEvent::ConsentRefused,
            "identity_mismatch" => AuditEvent::IdentityMismatch,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown audit event {other:?}"
                )));
            }
        })
    }
}

/// One row of the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing with time of writing.
    pub id: u64,
    /// When it was written.
    pub at: SystemTime,
    /// The user (or credential) concerned, as kept: `h1:` and the hex HMAC-SHA256 of the
    /// `user_ref` under the store's audit key (never the `user_ref` itself, so that a
    /// deleted user's identity is gone from the log); `None` for store-wide events.
    pub user_ref: Option<String>,
    /// What happened.
    pub event: AuditEvent,
    /// Ids and counts; never a secret.
    pub detail: String,
}

/// Appends one row; called inside the transaction that makes the change, so the log and
/// the data never disagree.
pub(crate) fn append(
    conn: &Connection,
    shared: &Shared,
    user_ref: Option<&str>,
    event: AuditEvent,
    detail: &str,
) -> Result<(), StoreError> {
    let hashed = user_ref
        .map(|u| Ok::<_, StoreError>(hash_ref(shared.audit_key(conn)?.as_ref(), u)))
        .transpose()?;
    conn.prepare_cached(
        "INSERT INTO audit_log (at, user_ref, event, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![now_db()?, hashed, event.as_str(), detail])?;
    Ok(())
}

/// How a `user_ref` stands in the audit log.
pub(crate) fn hash_ref(key: &hmac::Key, user_ref: &str) -> String {
    let tag = hmac::sign(key, user_ref.as_bytes());
    let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
    out.push_str(HASH_PREFIX);
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Reads the audit key (sealed in `store_keys`) with any key of the keyring.
pub(crate) fn load_key(conn: &Connection, shared: &Shared) -> Result<hmac::Key, StoreError> {
    let blob: Vec<u8> = conn
        .prepare_cached("SELECT sealed_key FROM store_keys WHERE name = ?1")?
        .query_row([AUDIT_KEY_NAME], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::Corrupt("the audit key is missing".to_owned()))?;
    let bytes = shared
        .keyring()
        .open(&blob, STORE_KEYS, SEALED_KEY, AUDIT_KEY_NAME)?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// Run by [`Store::open`] on the writer before anything else: creates the audit key on
/// the first open at schema v5 (sealed under `key`) and, in the same transaction,
/// re-hashes the `user_ref` of every row written before v5 (the append-only trigger is
/// lifted for that statement only and put back before the commit). Returns the key when
/// it was created here.
pub(crate) fn prepare(
    conn: &mut Connection,
    key: &MasterKey,
) -> Result<Option<Arc<hmac::Key>>, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM store_keys WHERE name = ?1")?
        .query_row([AUDIT_KEY_NAME], |_| Ok(()))
        .optional()?
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
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO store_keys (name, sealed_key) VALUES (?1, ?2)",
        params![AUDIT_KEY_NAME, sealed],
    )?;
    let legacy: Vec<(i64, String)> = tx
        .prepare("SELECT id, user_ref FROM audit_log WHERE user_ref IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if !legacy.is_empty() {
        tx.execute_batch("DROP TRIGGER audit_log_no_update;")?;
        {
            let mut update = tx.prepare("UPDATE audit_log SET user_ref = ?2 WHERE id = ?1")?;
            for (id, user_ref) in &legacy {
                update.execute(params![id, hash_ref(&hmac_key, user_ref)])?;
            }
        }
        tx.execute_batch(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
             BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;",
        )?;
    }
    tx.commit()?;
    Ok(Some(Arc::new(hmac_key)))
}

/// Whether `credential` has a row in `users` (audit rows name users when there is one).
pub(crate) fn is_user(conn: &Connection, credential: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE user_ref = ?1")?
        .query_row([credential], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Store {
    /// The audit log, oldest first: all of it, or only the rows about `user_ref` (whose
    /// keyed hash is looked for; entries carry the hash, see [`AuditEntry::user_ref`]).
    pub async fn audit_log(&self, user_ref: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        crate::on_postgres!(self, pg => pg.audit_log(user_ref));
        let user_ref = user_ref.map(str::to_owned);
        self.read(move |conn, shared| {
            let user_ref = user_ref
                .map(|u| Ok::<_, StoreError>(hash_ref(shared.audit_key(conn)?.as_ref(), &u)))
                .transpose()?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, user_ref, event, detail FROM audit_log
                 WHERE ?1 IS NULL OR user_ref = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([&user_ref], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (id, at, user_ref, event, detail) = row?;
                entries.push(AuditEntry {
                    id: crate::schema::from_db_id(id, "audit id")?,
                    at: from_db_time(at)?,
                    user_ref,
                    event: AuditEvent::parse(&event)?,
                    detail,
                });
            }
            Ok(entries)
        })
        .await
    }
}
