//! The schema, its migrations, connection settings, and how values map to columns.
//!
//! Migrations are forward only and versioned by `PRAGMA user_version`
//! (rusqlite_migration). A file written by a newer version of this crate is refused
//! rather than silently downgraded.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::{M, Migrations};

use crate::StoreError;

/// Version 1. Secret columns (BLOB) hold sealed values; see `key.rs`. Times are
/// nanoseconds since the Unix epoch (exact round trips of `SystemTime`).
///
/// `contexts` has no foreign key to `users`: a context is per credential, and
/// credentials without a user row (an operator's API key) are stored too.
const V1: &str = r#"
CREATE TABLE users (
    user_ref      TEXT PRIMARY KEY NOT NULL,
    bunq_user_id  INTEGER,
    status        TEXT NOT NULL CHECK (status IN ('connecting', 'connected')),
    connected_at  INTEGER,
    updated_at    INTEGER NOT NULL,
    access_token  BLOB NOT NULL
) STRICT;

CREATE TABLE contexts (
    credential          TEXT PRIMARY KEY NOT NULL,
    api_base            TEXT NOT NULL,
    secret              BLOB NOT NULL,
    installation_id     INTEGER NOT NULL,
    installation_token  BLOB NOT NULL,
    private_key         BLOB NOT NULL,
    server_public_key   TEXT NOT NULL,
    device_id           INTEGER,
    updated_at          INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    credential  TEXT PRIMARY KEY NOT NULL REFERENCES contexts (credential) ON DELETE CASCADE,
    session_id  INTEGER NOT NULL,
    token       BLOB NOT NULL,
    user_id     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE oauth_states (
    state_key   TEXT PRIMARY KEY NOT NULL,
    user_ref    TEXT NOT NULL,
    return_to   TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    taken_at    INTEGER
) STRICT;
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);

CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    user_ref  TEXT,
    event     TEXT NOT NULL,
    detail    TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_by_user ON audit_log (user_ref, id);

-- The audit log is append-only, even for code that forgets.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#;

/// Version 2: grant states, consents waiting for their session, idempotency records.
///
/// - `users` gains `revoked` and `failed` (with a reason and a time), the bunq person who
///   granted access (`granted_by_user_id`, the identity a new consent is compared with),
///   and `credential`: the `contexts` row of the live connection. A new consent connects
///   under a credential of its own (`{user_ref}/{random}`) and replaces the user's only
///   once its session exists, so the old connection serves until then and nothing of
///   the old one can be written over the new one. A V1 user's credential is its
///   `user_ref`. (`status` has a CHECK, which SQLite cannot alter: the table is rebuilt.)
/// - `consents`: access tokens from callbacks whose installation, device and session are
///   not done yet. `access_token` NULL is a V1 `connecting` user, whose token is the
///   user row's.
/// - `idempotency_keys`: one row per (caller, user, `Idempotency-Key`), stored under a
///   digest of the three, with the request's fingerprint, the request id sent to bunq,
///   and the final answer (sealed) once known.
const V2: &str = r#"
CREATE TABLE users_v2 (
    user_ref            TEXT PRIMARY KEY NOT NULL,
    bunq_user_id        INTEGER,
    granted_by_user_id  INTEGER,
    status              TEXT NOT NULL
                        CHECK (status IN ('connecting', 'connected', 'revoked', 'failed')),
    status_reason       TEXT,
    status_since        INTEGER NOT NULL,
    connected_at        INTEGER,
    updated_at          INTEGER NOT NULL,
    credential          TEXT,
    access_token        BLOB,
    last_consent        TEXT,
    last_consent_at     INTEGER
) STRICT;
INSERT INTO users_v2 (user_ref, bunq_user_id, status, status_since, connected_at,
                      updated_at, credential, access_token)
    SELECT user_ref, bunq_user_id, status, updated_at, connected_at, updated_at,
           user_ref, access_token
    FROM users;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;

ALTER TABLE sessions ADD COLUMN granted_by_user_id INTEGER;
ALTER TABLE oauth_states ADD COLUMN replace_identity INTEGER NOT NULL DEFAULT 0;

CREATE TABLE consents (
    credential        TEXT PRIMARY KEY NOT NULL,
    user_ref          TEXT NOT NULL,
    access_token      BLOB,
    replace_identity  INTEGER NOT NULL CHECK (replace_identity IN (0, 1)),
    created_at        INTEGER NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT
) STRICT;
CREATE INDEX consents_by_user ON consents (user_ref);
INSERT INTO consents (credential, user_ref, access_token, replace_identity, created_at)
    SELECT user_ref, user_ref, NULL, 0, updated_at FROM users WHERE status = 'connecting';

CREATE TABLE idempotency_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_ref     TEXT NOT NULL,
    fingerprint  BLOB NOT NULL,
    request_id   TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'unknown', 'done')),
    status       INTEGER,
    answer       BLOB,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
CREATE INDEX idempotency_keys_by_user ON idempotency_keys (user_ref);
"#;

/// Version 3: bunq callbacks and the outbox of events relayed to the application.
///
/// - `callback_ids`: one opaque random id per user, the last segment of the callback URL
///   registered at bunq (`/bunq/callbacks/{id}`), so that the URL names no `user_ref`
///   and cannot be guessed.
/// - `events`: the outbox. `seq` orders events (per user, for delivery; overall, as the
///   pull API's cursor); `id` is the public id (`webhook-id`) and the row key the sealed
///   `payload` is bound to. `dedupe_key` (a digest of bunq's body) makes bunq's retries
///   of one callback one row. Delivery state: `attempts`, `next_attempt_at`, and
///   `delivered_at` or `dead_at` once settled; nothing marks an attempt in progress, so
///   a process killed mid-delivery delivers again after a restart.
const V3: &str = r#"
CREATE TABLE callback_ids (
    user_ref     TEXT PRIMARY KEY NOT NULL,
    callback_id  TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    user_ref         TEXT NOT NULL,
    type             TEXT NOT NULL,
    payload          BLOB NOT NULL,
    dedupe_key       TEXT,
    received_at      INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    dead_at          INTEGER,
    last_error       TEXT
) STRICT;
CREATE UNIQUE INDEX events_by_dedupe ON events (user_ref, dedupe_key);
CREATE INDEX events_pending ON events (user_ref, seq)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
"#;

/// Version 4: confirmation of bunq's callbacks and the retention of settled events.
///
/// - `confirmed_at`: the object a callback names was re-fetched from bunq and the
///   payload replaced by bunq's answer (`[callbacks] confirm`).
/// - `unconfirmed_at`: bunq did not confirm it (no such object, or another one). Such
///   an event is settled like a delivered one (never sent, later ones of the user go
///   on), so the pending index leaves it out too.
/// - `events_settled`: the retention sweep deletes by settlement time.
const V4: &str = r#"
ALTER TABLE events ADD COLUMN confirmed_at INTEGER;
ALTER TABLE events ADD COLUMN unconfirmed_at INTEGER;
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (user_ref, seq)
    WHERE delivered_at IS NULL AND dead_at IS NULL AND unconfirmed_at IS NULL;
CREATE INDEX events_settled ON events (coalesce(delivered_at, unconfirmed_at))
    WHERE delivered_at IS NOT NULL OR unconfirmed_at IS NOT NULL;
"#;

/// Version 5: the audit log's `user_ref` becomes a keyed hash (GDPR: deleting a user
/// must be able to erase their identity, and the log stays append-only).
///
/// - `store_keys`: keys the store itself generated, sealed under the master key like any
///   secret column (so a rotation re-seals them). `audit` is the 32-byte HMAC-SHA256 key
///   `audit_log.user_ref` is hashed with: random rather than derived from the master
///   key, so that the hashes (and per-user queries) survive a key rotation.
/// - `audit_log.user_ref` now holds `h1:` and the hex HMAC of the user_ref. Rows written
///   before this version are re-hashed in Rust at the first open (SQL cannot compute
///   the HMAC), in the transaction that creates the key; see `audit::prepare`.
const V5: &str = r#"
CREATE TABLE store_keys (
    name        TEXT PRIMARY KEY NOT NULL,
    sealed_key  BLOB NOT NULL
) STRICT;
"#;

/// Every migration, oldest first. Append only: never edit a released one.
const MIGRATIONS: &[M<'static>] = &[M::up(V1), M::up(V2), M::up(V3), M::up(V4), M::up(V5)];

/// The schema version this crate writes (`PRAGMA user_version` after open).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a committed write survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL`: every commit is fsynced before it returns; survives a process
    /// kill and a power loss. The default: this store holds bank credentials.
    #[default]
    Full,
    /// `synchronous=NORMAL` in WAL mode: a commit is written to the WAL (the OS page
    /// cache) but only fsynced at checkpoints. Survives a process kill (SIGKILL), may
    /// lose the last commits (never consistency) on power loss or an OS crash. Several
    /// times more writes per second.
    ProcessCrash,
}

/// Opens (creating if needed) the writer connection and brings the schema to
/// [`SCHEMA_VERSION`].
pub(crate) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    create_private_file(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers run beside the writer; it is a property of the file, so it is set
    // once here (readers inherit it).
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "cannot switch the journal to WAL (got {mode})"
        )));
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::ProcessCrash => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Deleted and overwritten content (a deleted user's sealed token, a rotated key's
    // ciphertexts) is zeroed instead of lingering in free pages of the file.
    conn.pragma_update(None, "secure_delete", true)?;
    migrations().to_latest(&mut conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens a read connection: `query_only`, so a bug cannot write through it.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates the database file with mode 0600 if it does not exist (SQLite would use the
/// umask, typically 0644, and gives its -wal and -shm files the main file's mode).
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Builds a database at an earlier schema `version` (0 = empty file), so that tests can
/// prove that [`crate::Store::open`] migrates from every version ever released. Not for
/// production use.
#[doc(hidden)]
pub fn create_at_version(path: &Path, version: usize) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)?;
    if version > 0 {
        migrations().to_version(&mut conn, version)?;
    }
    Ok(())
}

/// A time as stored: nanoseconds since the Unix epoch.
pub(crate) fn to_db_time(t: SystemTime) -> Result<i64, StoreError> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| StoreError::InvalidInput("time before 1970".into()))?;
    i64::try_from(d.as_nanos())
        .map_err(|_| StoreError::InvalidInput("time after 2262 not representable".into()))
}

/// The inverse of [`to_db_time`]; a negative value was never written by us.
pub(crate) fn from_db_time(nanos: i64) -> Result<SystemTime, StoreError> {
    let nanos =
        u64::try_from(nanos).map_err(|_| StoreError::Corrupt(format!("negative time {nanos}")))?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The current time as stored.
pub(crate) fn now_db() -> Result<i64, StoreError> {
    to_db_time(SystemTime::now())
}

/// An id as stored (SQLite integers are signed).
pub(crate) fn to_db_id(id: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| StoreError::InvalidInput(format!("{what} {id} above i64::MAX")))
}

/// The inverse of [`to_db_id`].
pub(crate) fn from_db_id(id: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("negative {what} {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn times_round_trip_exactly() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_db_time(to_db_time(t).unwrap()).unwrap(), t);
        assert!(to_db_time(UNIX_EPOCH - Duration::from_secs(1)).is_err());
        assert!(from_db_time(-1).is_err());
    }
}
