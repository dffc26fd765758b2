//! The `state` parameter: what is kept while the end user is at bunq, and where.

use std::future::Future;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The storage key of a state: the lowercase hex SHA-256 of the state string.
///
/// Stores never see the state itself, only this digest, so a leaked table of pending
/// states cannot be replayed, and a lookup by digest leaks nothing useful through timing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateKey(pub String);

/// What the application attached to a state when it sent the user to bunq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateContext {
    /// The application's reference of the end user (e.g. the gateway's `user_ref`).
    pub user_ref: String,
    /// Where to send the end user after the callback, if anywhere.
    pub return_to: Option<String>,
}

/// A state waiting for its callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingState {
    /// The digest the state is stored under.
    pub key: StateKey,
    /// The application's context.
    pub context: StateContext,
    /// When it was issued.
    pub created_at: SystemTime,
    /// After this instant the callback is refused.
    pub expires_at: SystemTime,
}

/// What [`StateStore::take`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The state was pending and is now consumed; this caller is the only one to see it.
    Taken(PendingState),
    /// The state was consumed before (a replay). Stores remember consumed states at least
    /// until they expire, so that a replay is told apart from a forgery.
    AlreadyTaken,
    /// No such state (never issued, or expired and swept).
    Unknown,
}

/// A failure of the storage behind a [`StateStore`]; the source says what.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Storage of pending states with atomic take-once semantics.
pub trait StateStore: Send + Sync + 'static {
    /// Records a freshly issued state.
    fn insert(
        &self,
        state: &PendingState,
    ) -> impl Future<Output = Result<(), StateStoreError>> + Send;

    /// Atomically consumes the state stored under `key`: of any number of concurrent
    /// callers, exactly one gets [`TakeOutcome::Taken`]. Expiry is the caller's to check
    /// (it returns the state's `expires_at`).
    fn take(
        &self,
        key: &StateKey,
    ) -> impl Future<Output = Result<TakeOutcome, StateStoreError>> + Send;

    /// Forgets states (pending or consumed) that expired before `now`; returns how many.
    fn sweep_expired(
        &self,
        now: SystemTime,
    ) -> impl Future<Output = Result<u64, StateStoreError>> + Send;
}
