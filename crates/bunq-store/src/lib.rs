#![doc = include_str!("../README.md")]
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
//! lose the last commits on power loss.
//!
//! # Speed
//! `cargo bench -p bunq-store --bench store` on the 2-core build machine (shared with
//! other builds): warm [`Store::token_and_context`] ~24,500/s with 64 concurrent callers
//! (~14,000/s one at a time); connected-user writes ~145/s with `FULL` (one fsync per
//! commit) and ~4,900/s with `NORMAL`. Parsed installation keys are cached per
//! credential, so a warm lookup does no RSA parsing.

mod audit;
mod consents;
mod context;
mod db;
mod error;
mod events;
mod idempotency;
mod key;
mod rotate;
mod schema;
mod state;
mod users;

pub use audit::{AuditEntry, AuditEvent};
pub use consents::{ConsentCompletion, ConsentRefusal, PendingConsent};
pub use db::{Store, StoreOptions};
pub use error::StoreError;
pub use events::{DeliveryState, EventRecord, NewEvent, Recorded, callback_dedupe_key};
pub use idempotency::{IdempotencyBegin, IdempotencyScope, StoredAnswer, request_fingerprint};
pub use key::MasterKey;
pub use rotate::RotationReport;
#[doc(hidden)]
pub use schema::create_at_version;
pub use schema::{Durability, SCHEMA_VERSION};
pub use users::{UserRecord, UserStatus};
