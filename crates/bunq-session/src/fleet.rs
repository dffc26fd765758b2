//! What several processes behind one egress IP share: bunq counts its limits per IP,
//! so gateways that reach bunq from the same address must split them between them.
//!
//! This crate knows no database: the sharing is a trait ([`SharedSessionWindow`]) that
//! an application backs with whatever its processes share (bunq-store backs it with a
//! row per egress in PostgreSQL), plus a share of the per-endpoint limits
//! ([`BunqClient::set_limit_share`](crate::BunqClient::set_limit_share)) and a lock per
//! credential ([`ContextStore::lock_creation`](crate::ContextStore::lock_creation)).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Error;

/// A boxed future of the shared-window calls (rare: one per session-server call).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The `session-server` turn of one egress IP, shared by every process behind it: bunq
/// allows one call per 30 s per IP, whichever process sends it.
///
/// A process takes the turn before its call and releases it when the call ended; the
/// window then counts from the release. A process that dies holding the turn must not
/// free it early: [`try_take`](Self::try_take) is told how long the call may last, and
/// an implementation keeps the turn taken for that long plus a window unless released.
pub trait SharedSessionWindow: Send + Sync + 'static {
    /// Takes the turn for a call that ends within `hold`: `Ok(None)` when taken,
    /// `Ok(Some(wait))` when another process holds it or its window runs (ask again
    /// after `wait`).
    fn try_take(&self, hold: Duration) -> BoxFuture<'_, Result<Option<Duration>, Error>>;

    /// The call this process took the turn for ended (or was never sent): the window
    /// counts from now.
    fn release(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// Held by a process while it creates a session for one credential, so that processes
/// sharing a [`ContextStore`](crate::ContextStore) create one session between them: the
/// others wait, then find the new session in the store. Dropping it releases the lock.
pub struct CreationLock(#[allow(dead_code)] Box<dyn Send + Sync>);

impl CreationLock {
    /// Wraps whatever releases the lock when dropped.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self(Box::new(held))
    }
}

impl std::fmt::Debug for CreationLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreationLock")
    }
}
