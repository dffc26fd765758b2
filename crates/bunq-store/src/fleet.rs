//! Several gateways on one PostgreSQL database (fleet mode): what they share besides
//! the data. A [`Fleet`] exists only on PostgreSQL ([`Store::fleet`]); a SQLite file is
//! one process's, whose own single-flight and pacer need no help.
//!
//! - **Who is alive:** each gateway (a replica, with a random id per start) joins with
//!   its egress (the IP bunq sees) and the URL its peers reach it at, and beats every
//!   second or so; a replica silent for longer than `stale_after` is forgotten, and its
//!   in-flight `Idempotency-Key`s settle as `unknown` ([`Fleet::settle_orphaned_idempotency`]).
//! - **The session-server turn per egress** ([`Fleet::try_take_session_window`]): one
//!   row per egress, taken by an atomic upsert, so that no two gateways behind one IP
//!   call `session-server` within bunq's window.
//! - **One session creation per credential across gateways** ([`Fleet::lock_creation`]).
//! - **User changes** ([`Fleet::listen_users`]): a deletion, a revocation or a new
//!   connection commits with a `NOTIFY`, so that every gateway drops what it cached
//!   about the user within moments, without polling.

#[cfg(feature = "postgres")]
use std::time::Duration;

#[cfg(feature = "postgres")]
use tokio::sync::mpsc;

use crate::Store;
#[cfg(feature = "postgres")]
use crate::StoreError;

/// A gateway of the fleet, as it joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Its id (random per start).
    pub id: String,
    /// The egress it reaches bunq through.
    pub egress: String,
    /// Where its peers reach it, if it said.
    pub url: Option<String>,
}

/// What [`Fleet::listen_users`] announces.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UserChange {
    /// This user was deleted, revoked, or connected anew: drop what is cached about them.
    User(String),
    /// Announcements may have been missed (the listening connection was (re)made):
    /// drop everything cached about users.
    Resync,
}

/// Coordination of the gateways sharing this store's PostgreSQL database.
#[derive(Clone)]
pub struct Fleet {
    #[cfg(feature = "postgres")]
    pg: std::sync::Arc<crate::pg::PgStore>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").finish_non_exhaustive()
    }
}

/// Held while this gateway creates a session for one credential; dropping it lets the
/// next gateway in (which then finds the new session in the store).
pub struct CreationLock {
    #[cfg(feature = "postgres")]
    _held: crate::pg::fleet::CreationClaim,
}

/// A gateway's membership of the fleet: while it is held, the gateway counts as alive
/// whatever its heartbeats say (a lock on a connection of its own, which the database
/// releases the moment the process dies, so that its peers settle its work at once).
pub struct Membership {
    #[cfg(feature = "postgres")]
    _liveness: crate::pg::fleet::Liveness,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Membership")
    }
}

impl std::fmt::Debug for CreationLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreationLock")
    }
}

impl Store {
    /// The fleet this store's database coordinates: `Some` on PostgreSQL only.
    pub fn fleet(&self) -> Option<Fleet> {
        #[cfg(feature = "postgres")]
        if let crate::db::Backend::Postgres(pg) = &self.0 {
            return Some(Fleet {
                pg: std::sync::Arc::clone(pg),
            });
        }
        None
    }
}

#[cfg(feature = "postgres")]
impl Fleet {
    /// Announces this gateway: `replica` its id, `egress` the IP (or name) bunq sees
    /// it from, `url` where its peers reach it. Keep the [`Membership`] for as long as
    /// the gateway runs. A replica id already held by a live gateway is refused.
    pub async fn join(
        &self,
        replica: &str,
        egress: &str,
        url: Option<&str>,
    ) -> Result<Membership, StoreError> {
        Ok(Membership {
            _liveness: self.pg.join_fleet(replica, egress, url).await?,
        })
    }

    /// Records that `replica` is alive, forgets replicas silent for `stale_after`, and
    /// returns the live ones (this one included).
    pub async fn heartbeat(
        &self,
        replica: &str,
        stale_after: Duration,
    ) -> Result<Vec<Replica>, StoreError> {
        self.pg.heartbeat(replica, stale_after).await
    }

    /// Leaves the fleet (a graceful shutdown): peers take over at once.
    pub async fn leave(&self, replica: &str) -> Result<(), StoreError> {
        self.pg.leave_fleet(replica).await
    }

    /// Settles as `unknown` every in-flight `Idempotency-Key` whose gateway is dead
    /// (its membership lock is free, or its heartbeats stopped: whether bunq executed
    /// the call is unknown), leaving the live gateways' calls alone. What
    /// [`Store::recover_idempotency`] does on PostgreSQL.
    pub async fn settle_orphaned_idempotency(&self) -> Result<u64, StoreError> {
        self.pg.recover_idempotency().await
    }

    /// Takes `egress`'s session-server turn for `holder`, for a call that ends within
    /// `hold`; the turn then stays taken for `window` after the release (or for `hold`
    /// plus `window` without one). `Ok(None)`: taken; `Ok(Some(wait))`: ask again after
    /// `wait`.
    pub async fn try_take_session_window(
        &self,
        egress: &str,
        holder: &str,
        hold: Duration,
        window: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        self.pg
            .try_take_session_window(egress, holder, hold, window)
            .await
    }

    /// Releases `holder`'s turn of `egress`: the next one comes `window` from now.
    pub async fn release_session_window(
        &self,
        egress: &str,
        holder: &str,
        window: Duration,
    ) -> Result<(), StoreError> {
        self.pg.release_session_window(egress, holder, window).await
    }

    /// Waits until no other gateway creates a session for `credential`, and keeps
    /// them out until the lock is dropped (a claim row; one left by a gateway that died
    /// is taken over at once). Holds no connection while it waits or is held.
    pub async fn lock_creation(&self, credential: &str) -> Result<CreationLock, StoreError> {
        Ok(CreationLock {
            _held: self.pg.claim_creation(credential).await?,
        })
    }

    /// The users whose grant or credential changed, as the commits happen (see
    /// [`UserChange`]). Listens on a connection of its own until the receiver is dropped.
    pub fn listen_users(&self) -> mpsc::Receiver<UserChange> {
        self.pg.listen_users()
    }
}
