//! The crate's one error type.

use std::path::PathBuf;

/// Why a store operation failed. Never carries a secret: rows are named by their key
/// (a `user_ref` or credential id), never by their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused or failed (I/O, locking, constraint, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The schema could not be brought to this version (e.g. the file was written by a
    /// newer version of this crate: migrations only go forward).
    #[error("schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// PostgreSQL refused or failed (connection, locking, constraint, ...). Never names
    /// the connection URL.
    #[cfg(feature = "postgres")]
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool in time (the server is down
    /// or every connection is busy).
    #[cfg(feature = "postgres")]
    #[error("postgres connection pool: {0}")]
    Pool(String),
    /// The PostgreSQL schema could not be brought to this version (e.g. the database
    /// was migrated by a newer version of this crate: migrations only go forward).
    #[cfg(feature = "postgres")]
    #[error("postgres schema migration: {0}")]
    PostgresMigration(#[from] refinery::Error),
    /// [`copy_sqlite_to_postgres`](crate::migrate::copy_sqlite_to_postgres) found rows
    /// in the PostgreSQL database: it copies into an empty one only (merging two stores
    /// could pair one's rows with the other's audit key or ids), and wrote nothing.
    #[cfg(feature = "postgres")]
    #[error(
        "the PostgreSQL database is not empty ({} hold rows): the copy goes into an empty database only; nothing was written",
        .tables.join(", ")
    )]
    TargetNotEmpty {
        /// The tables found holding rows.
        tables: Vec<&'static str>,
    },
    /// A sealed value failed authentication: it was sealed for another table, column or
    /// row (a moved ciphertext), or tampered with. Never answered with garbage.
    #[error(
        "cannot decrypt {table}.{column} of row {row:?}: moved, tampered with, or sealed under another key with the same id"
    )]
    Decrypt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The row's key (a `user_ref`, credential id or state key).
        row: String,
    },
    /// A sealed value names a key this store does not hold: most likely the store was
    /// opened with the wrong master key, or a key rotation was not finished.
    #[error(
        "{table}.{column} of row {row:?} is sealed under key id {key_id}, but the store holds key id {held}: wrong master key?"
    )]
    UnknownKeyId {
        /// The key id found in the sealed value.
        key_id: String,
        /// The key id of the store's master key.
        held: String,
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The row's key.
        row: String,
    },
    /// The database holds something this crate never writes (a truncated blob, an
    /// unknown status, a private key that does not parse).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// `PRAGMA integrity_check` found problems (on PostgreSQL: the schema is not at
    /// this crate's version).
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The database file could not be created.
    #[error("database file {path}: {source}")]
    Io {
        /// The database file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The master key file could not be read, or may be read by group or others (so the
    /// key may have leaked).
    #[error("master {0}")]
    KeyFile(#[from] bunq_signing::KeyFileError),
    /// The master key text is not 32 bytes (raw, or base64 of 32 bytes).
    #[error("invalid master key: {0}")]
    InvalidKey(&'static str),
    /// The caller passed a value the store cannot represent (a time before 1970, an id
    /// above `i64::MAX`).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An operation needs a user row that does not exist.
    #[error("no user {user_ref:?}")]
    UnknownUser {
        /// The user asked for.
        user_ref: String,
    },
    /// The operating system's random source or the cipher failed.
    #[error("cryptography failed: {0}")]
    Crypto(&'static str),
    /// The store's worker (writer thread or blocking task) is gone: the store is
    /// shutting down, or a worker panicked.
    #[error("store closed")]
    Closed,
}
