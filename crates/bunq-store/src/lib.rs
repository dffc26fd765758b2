#![doc = include_str!("../README.md")]
//!
//! # Backends
//! [`Store::open`] opens a SQLite file; `Store::open_postgres` (feature `postgres`) a
//! PostgreSQL database; [`Store::open_location`] either, from a [`StoreLocation`]
//! parsed from one string (a `postgres://` URL or a path). The public API, the sealing
//! (the same bytes, bound to the same table, column and row, so rows can be copied
//! between backends as they are), the audit log's triggers and the migrations (one
//! table of versions with both dialects side by side, `schema.rs`) are the same on
//! both. `migrate::copy_sqlite_to_postgres` (feature `postgres`) moves a store from a
//! SQLite file into an empty PostgreSQL database that way: every row as it is, sealed
//! values byte for byte.
//!
//! PostgreSQL goes through tokio-postgres and a deadpool-postgres pool: async all the
//! way, maintained, and nothing checked against a database at build time; refinery
//! runs its migrations. How each guarantee is kept with several writers (advisory
//! locks per user, `UPDATE ... RETURNING` for states, `ON CONFLICT` and `FOR UPDATE`
//! for idempotency keys, one insert lock for the events outbox) is in `pg/mod.rs`.
//!
//! # Threads
//! rusqlite blocks, so nothing here runs SQLite on an async worker thread: writes go to
//! one dedicated writer thread (serialized, in order), reads to a small pool of
//! `query_only` connections on tokio's blocking pool (concurrent).
//!
//! # Durability
//! By default every commit is fsynced (`synchronous=FULL`): a write that returned `Ok`
//! survives a process kill and a power loss. [`Durability::ProcessCrash`]
//! (`synchronous=NORMAL` in WAL) is faster and still survives a process kill, but may
//! lose the last commits on power loss. On PostgreSQL the two are
//! `synchronous_commit = on` and `off`.
//!
//! # Speed
//! `cargo bench -p bunq-store --bench store` on the 2-core build machine (shared with
//! other builds): warm [`Store::token_and_context`] ~24,500/s with 64 concurrent callers
//! (~14,000/s one at a time); connected-user writes ~145/s with `FULL` (one fsync per
//! commit) and ~4,900/s with `NORMAL`. Parsed installation keys are cached per
//! credential, so a warm lookup does no RSA parsing.

/// Hands a public method of [`Store`] over to the PostgreSQL backend when the store is
/// on it: `on_postgres!(self, pg => pg.method(args));` returns `pg.method(args).await`.
/// The SQLite code follows it in the method; without the `postgres` feature the line
/// is nothing.
macro_rules! on_postgres {
    ($store:expr, $pg:ident => $call:expr) => {
        #[cfg(feature = "postgres")]
        {
            if let $crate::db::Backend::Postgres($pg) = &$store.0 {
                return $call.await;
            }
        }
    };
}
pub(crate) use on_postgres;

mod audit;
mod consents;
mod context;
mod db;
mod error;
mod events;
mod fleet;
mod idempotency;
mod key;
mod location;
#[cfg(feature = "postgres")]
pub mod migrate;
#[cfg(feature = "postgres")]
mod pg;
mod rotate;
mod schema;
mod state;
mod users;
mod vault;

pub use audit::{AuditEntry, AuditEvent};
pub use consents::{ConsentCompletion, ConsentRefusal, PendingConsent};
pub use db::{Store, StoreOptions};
pub use error::StoreError;
pub use events::{DeliveryState, EventRecord, NewEvent, Recorded, callback_dedupe_key};
pub use fleet::{CreationLock, Fleet, Membership, Replica, UserChange};
pub use idempotency::{IdempotencyBegin, IdempotencyScope, StoredAnswer, request_fingerprint};
pub use key::MasterKey;
pub use location::{PostgresUrl, StoreLocation};
#[cfg(feature = "postgres")]
#[doc(hidden)]
pub use pg::create_postgres_at_version;
pub use rotate::RotationReport;
#[doc(hidden)]
pub use schema::create_at_version;
pub use schema::{Durability, SCHEMA_VERSION};
pub use users::{UserRecord, UserStatus};
