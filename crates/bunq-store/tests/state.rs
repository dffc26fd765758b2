//! The `bunq_oauth::StateStore` implementation.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime};

use bunq_oauth::{PendingState, StateContext, StateKey, StateStore as _, TakeOutcome};
use bunq_store::MasterKey;
use common::TestDb;
use secrecy::SecretString;

fn state(key: &str, expires_in: Duration) -> PendingState {
    let now = SystemTime::now();
    PendingState {
        key: StateKey(key.to_owned()),
        context: StateContext {
            user_ref: "alice".to_owned(),
            return_to: Some("https://app.example/done".to_owned()),
            replace: false,
        },
        created_at: now,
        expires_at: now + expires_in,
    }
}

async fn state_is_taken_once_then_reported_as_replay(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let pending = state("digest-1", Duration::from_secs(600));
    store.insert(&pending).await.unwrap();
    assert_eq!(
        store.take(&pending.key).await.unwrap(),
        TakeOutcome::Taken(pending.clone())
    );
    assert_eq!(
        store.take(&pending.key).await.unwrap(),
        TakeOutcome::AlreadyTaken
    );
    assert_eq!(
        store.take(&StateKey("forged".into())).await.unwrap(),
        TakeOutcome::Unknown
    );
    // A state is issued once.
    assert!(store.insert(&pending).await.is_err());
}

async fn taken_state_survives_a_restart(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let pending = state("digest-r", Duration::from_secs(600));
    {
        let store = db.open(&key).await;
        store.insert(&pending).await.unwrap();
        assert!(matches!(
            store.take(&pending.key).await.unwrap(),
            TakeOutcome::Taken(_)
        ));
        store.close().await.unwrap();
    }
    let store = db.open(&key).await;
    assert_eq!(
        store.take(&pending.key).await.unwrap(),
        TakeOutcome::AlreadyTaken
    );
}

async fn rejects_replayed_state_from_100_concurrent_takers(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let pending = state("digest-race", Duration::from_secs(600));
    store.insert(&pending).await.unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let key = pending.key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.take(&key).await.unwrap()
            })
        })
        .collect();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .unwrap();
    let mut taken = 0;
    let mut replayed = 0;
    for outcome in outcomes {
        match outcome.unwrap() {
            TakeOutcome::Taken(s) => {
                assert_eq!(s, pending);
                taken += 1;
            }
            TakeOutcome::AlreadyTaken => replayed += 1,
            TakeOutcome::Unknown => panic!("the state exists"),
        }
    }
    assert_eq!((taken, replayed), (1, 99));
}

async fn sweep_forgets_expired_states_pending_or_taken(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let live = state("live", Duration::from_secs(600));
    let expired_pending = state("expired-pending", Duration::from_secs(1));
    let expired_taken = state("expired-taken", Duration::from_secs(1));
    for s in [&live, &expired_pending, &expired_taken] {
        store.insert(s).await.unwrap();
    }
    store.take(&expired_taken.key).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(store.sweep_expired(later).await.unwrap(), 2);
    assert_eq!(
        store.take(&expired_taken.key).await.unwrap(),
        TakeOutcome::Unknown
    );
    assert_eq!(
        store.take(&expired_pending.key).await.unwrap(),
        TakeOutcome::Unknown
    );
    assert!(matches!(
        store.take(&live.key).await.unwrap(),
        TakeOutcome::Taken(_)
    ));
    // Nothing has expired as of now.
    assert_eq!(store.sweep_expired_states().await.unwrap(), 0);
}

async fn deleting_a_user_drops_their_pending_states(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let pending = state("pending-alice", Duration::from_secs(600));
    store.insert(&pending).await.unwrap();
    store
        .put_access_token("alice", &SecretString::from("t"))
        .await
        .unwrap();
    assert!(store.delete_user("alice").await.unwrap());
    assert_eq!(
        store.take(&pending.key).await.unwrap(),
        TakeOutcome::Unknown
    );
}

on_both_backends!(
    state_is_taken_once_then_reported_as_replay,
    taken_state_survives_a_restart,
    rejects_replayed_state_from_100_concurrent_takers,
    sweep_forgets_expired_states_pending_or_taken,
    deleting_a_user_drops_their_pending_states,
);
