//! The append-only audit log: who connected, disconnected, got a session, and when the
//! master key was rotated. Details name ids, never secrets.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::schema::{from_db_time, now_db};
use crate::{Store, StoreError};

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

    fn parse(name: &str) -> Result<Self, StoreError> {
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
    /// The user (or credential) concerned; `None` for store-wide events.
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
    user_ref: Option<&str>,
    event: AuditEvent,
    detail: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, user_ref, event, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![now_db()?, user_ref, event.as_str(), detail])?;
    Ok(())
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
    /// The audit log, oldest first: all of it, or only the rows about `user_ref`.
    pub async fn audit_log(&self, user_ref: Option<&str>) -> Result<Vec<AuditEntry>, StoreError> {
        let user_ref = user_ref.map(str::to_owned);
        self.read(move |conn, _| {
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
