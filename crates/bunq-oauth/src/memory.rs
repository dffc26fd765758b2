//! [`MemoryStateStore`]: the [`StateStore`] for tests, one-process tools and single
//! instances that can afford to lose pending states on restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::state::{PendingState, StateKey, StateStore, StateStoreError, TakeOutcome};

/// A state's slot: pending, or consumed and remembered until it expires so that a
/// replay is reported as such rather than as an unknown state.
#[derive(Debug)]
enum Slot {
    Pending(PendingState),
    Consumed { expires_at: SystemTime },
}

impl Slot {
    fn expires_at(&self) -> SystemTime {
        match self {
            Slot::Pending(p) => p.expires_at,
            Slot::Consumed { expires_at } => *expires_at,
        }
    }
}

/// Pending states in a `Mutex<HashMap>`: `take` swaps a slot from pending to consumed
/// under the lock, so exactly one of any number of concurrent callers gets
/// [`TakeOutcome::Taken`].
///
/// Expired entries are dropped by [`StateStore::sweep_expired`], and also every
/// [`MemoryStateStore::SWEEP_EVERY`] inserts, so that a store nobody sweeps stays bounded
/// by the insert rate times the TTL.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<StateKey, Slot>,
    inserts: u64,
}

impl Inner {
    fn sweep(&mut self, now: SystemTime) -> u64 {
        let before = self.slots.len();
        self.slots.retain(|_, slot| slot.expires_at() >= now);
        (before - self.slots.len()) as u64
    }
}

impl MemoryStateStore {
    /// How many inserts between two automatic sweeps.
    pub const SWEEP_EVERY: u64 = 256;

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many states (pending or remembered as consumed) the store holds.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.slots.len()).unwrap_or(0)
    }

    /// Whether the store holds no state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StateStoreError> {
        self.inner
            .lock()
            .map_err(|_| StateStoreError("memory state store lock poisoned".into()))
    }
}

impl StateStore for MemoryStateStore {
    async fn insert(&self, state: &PendingState) -> Result<(), StateStoreError> {
        let mut inner = self.lock()?;
        inner.inserts += 1;
        if inner.inserts % Self::SWEEP_EVERY == 0 {
            inner.sweep(state.created_at);
        }
        // 256 random bits do not collide; a duplicate means a caller reused a state,
        // and overwriting would revive a consumed one.
        if inner.slots.contains_key(&state.key) {
            return Err(StateStoreError("state already issued".into()));
        }
        inner
            .slots
            .insert(state.key.clone(), Slot::Pending(state.clone()));
        Ok(())
    }

    async fn take(&self, key: &StateKey) -> Result<TakeOutcome, StateStoreError> {
        let mut inner = self.lock()?;
        let Some(slot) = inner.slots.get_mut(key) else {
            return Ok(TakeOutcome::Unknown);
        };
        let consumed = Slot::Consumed {
            expires_at: slot.expires_at(),
        };
        match std::mem::replace(slot, consumed) {
            Slot::Pending(pending) => Ok(TakeOutcome::Taken(pending)),
            Slot::Consumed { .. } => Ok(TakeOutcome::AlreadyTaken),
        }
    }

    async fn sweep_expired(&self, now: SystemTime) -> Result<u64, StateStoreError> {
        Ok(self.lock()?.sweep(now))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::{State, StateContext};

    fn pending(state: &str, created_at: SystemTime, ttl: Duration) -> PendingState {
        PendingState {
            key: State::new(state).key(),
            context: StateContext {
                user_ref: "u1".to_owned(),
                return_to: None,
                replace: false,
            },
            created_at,
            expires_at: created_at + ttl,
        }
    }

    #[tokio::test]
    async fn take_returns_state_once_then_reports_replay() {
        let store = MemoryStateStore::new();
        let p = pending("s", SystemTime::now(), Duration::from_secs(60));
        store.insert(&p).await.unwrap();
        assert_eq!(
            store.take(&p.key).await.unwrap(),
            TakeOutcome::Taken(p.clone())
        );
        assert_eq!(store.take(&p.key).await.unwrap(), TakeOutcome::AlreadyTaken);
        assert_eq!(
            store.take(&State::new("other").key()).await.unwrap(),
            TakeOutcome::Unknown
        );
    }

    #[tokio::test]
    async fn sweep_forgets_expired_pending_and_consumed_states() {
        let store = MemoryStateStore::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let short = pending("short", t0, Duration::from_secs(10));
        let consumed = pending("consumed", t0, Duration::from_secs(10));
        let long = pending("long", t0, Duration::from_secs(100));
        for p in [&short, &consumed, &long] {
            store.insert(p).await.unwrap();
        }
        store.take(&consumed.key).await.unwrap();
        assert_eq!(
            store
                .sweep_expired(t0 + Duration::from_secs(50))
                .await
                .unwrap(),
            2
        );
        assert_eq!(store.len(), 1);
        assert_eq!(store.take(&short.key).await.unwrap(), TakeOutcome::Unknown);
        assert_eq!(
            store.take(&consumed.key).await.unwrap(),
            TakeOutcome::Unknown
        );
        assert!(matches!(
            store.take(&long.key).await.unwrap(),
            TakeOutcome::Taken(_)
        ));
    }

    #[tokio::test]
    async fn refuses_to_overwrite_an_issued_state() {
        let store = MemoryStateStore::new();
        let p = pending("dup", SystemTime::now(), Duration::from_secs(60));
        store.insert(&p).await.unwrap();
        store.take(&p.key).await.unwrap();
        assert!(store.insert(&p).await.is_err());
        assert_eq!(store.take(&p.key).await.unwrap(), TakeOutcome::AlreadyTaken);
    }

    #[tokio::test]
    async fn inserts_sweep_expired_states_periodically() {
        let store = MemoryStateStore::new();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        for i in 0..MemoryStateStore::SWEEP_EVERY - 1 {
            store
                .insert(&pending(&format!("old{i}"), t0, Duration::from_secs(1)))
                .await
                .unwrap();
        }
        let later = t0 + Duration::from_secs(60);
        store
            .insert(&pending("new", later, Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(store.len(), 1);
    }
}
