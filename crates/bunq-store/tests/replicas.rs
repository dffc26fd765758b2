//! PostgreSQL only: several stores (several gateways, each with its own pool) on one
//! database keep the guarantees SQLite's single writer gives one process: a state is
//! taken once, an idempotency key begun once, bunq's retries of a callback stored once,
//! and the pull API's cursor never passes an event that commits after it.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use bunq_oauth::{PendingState, StateContext, StateKey, TakeOutcome};
use bunq_store::{
    IdempotencyBegin, IdempotencyScope, MasterKey, NewEvent, Recorded, Store, callback_dedupe_key,
    request_fingerprint,
};
use common::TestDb;

/// Three stores on one fresh schema, as three gateways would be.
async fn replicas() -> Option<(TestDb, Vec<Store>)> {
    let db = TestDb::postgres().await?;
    let key = MasterKey::generate().unwrap();
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(db.open(&key).await);
    }
    Some((db, stores))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_is_taken_once_across_stores() {
    let Some((_db, stores)) = replicas().await else {
        return;
    };
    let now = SystemTime::now();
    let pending = PendingState {
        key: StateKey("shared-state".into()),
        context: StateContext {
            user_ref: "alice".into(),
            return_to: None,
            replace: false,
        },
        created_at: now,
        expires_at: now + Duration::from_secs(600),
    };
    stores[0].insert_state(&pending).await.unwrap();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let key = pending.key.clone();
            tokio::spawn(async move { store.take_state(&key).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        match t.await.unwrap() {
            TakeOutcome::Taken(_) => taken += 1,
            TakeOutcome::AlreadyTaken => {}
            TakeOutcome::Unknown => panic!("the state exists"),
        }
    }
    assert_eq!(taken, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_is_begun_once_across_stores() {
    let Some((_db, stores)) = replicas().await else {
        return;
    };
    let scope = IdempotencyScope {
        caller: "c",
        user_ref: "alice",
        key: "pay-1",
    };
    let fp = request_fingerprint("POST", "/payment", b"{}");
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move {
                store
                    .begin_idempotent(scope, fp, &format!("rid-{i}"), Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut sends = 0;
    for t in tasks {
        match t.await.unwrap() {
            IdempotencyBegin::Send { .. } => sends += 1,
            IdempotencyBegin::InFlight => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sends, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bunqs_retries_of_a_callback_are_stored_once_across_stores() {
    let Some((_db, stores)) = replicas().await else {
        return;
    };
    let body = b"{\"NotificationUrl\":{}}";
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            tokio::spawn(async move {
                store
                    .record_event(NewEvent {
                        user_ref: "alice".into(),
                        event_type: "bunq.PAYMENT".into(),
                        payload: body.to_vec(),
                        dedupe_key: Some(callback_dedupe_key(body)),
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = BTreeSet::new();
    let mut duplicates = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Recorded::New(id) => {
                new.insert(id);
            }
            Recorded::Duplicate(id) => {
                duplicates.insert(id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(new.len(), 1);
    assert!(duplicates.is_subset(&new));
}

/// Writers on every store insert events while a reader pages through them with the
/// cursor, as the pull API does: every event must be seen, none skipped because a
/// higher `seq` became visible before a lower one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pull_cursor_never_passes_an_event_that_commits_later() {
    let Some((_db, stores)) = replicas().await else {
        return;
    };
    const PER_WRITER: usize = 40;
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let store = stores[w % stores.len()].clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..PER_WRITER {
                    let recorded = store
                        .record_event(NewEvent {
                            user_ref: format!("user-{w}"),
                            event_type: "bunq.PAYMENT".into(),
                            payload: format!("{w}-{i}").into_bytes(),
                            dedupe_key: None,
                        })
                        .await
                        .unwrap();
                    match recorded {
                        Recorded::New(id) => ids.push(id),
                        other => panic!("unexpected {other:?}"),
                    }
                }
                ids
            })
        })
        .collect();
    let reader = stores[1].clone();
    let pager = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut cursor = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < 6 * PER_WRITER && std::time::Instant::now() < deadline {
            for e in reader.events_after(cursor, 7).await.unwrap() {
                assert!(e.seq > cursor);
                cursor = e.seq;
                seen.insert(e.id);
            }
        }
        seen
    });
    let mut written = BTreeSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let seen = pager.await.unwrap();
    assert_eq!(seen, written, "the cursor skipped events");
}
