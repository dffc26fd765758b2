//! Several gateways on one database: the outbox's leases (both backends), and on
//! PostgreSQL the fleet's coordination: heartbeats, the session-server turn per egress,
//! the lock on a credential's session creation, user-change notifications, and
//! in-flight idempotency keys of dead replicas.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime};

use bunq_store::{
    IdempotencyBegin, IdempotencyScope, MasterKey, NewEvent, Recorded, StoreOptions, UserChange,
    request_fingerprint,
};
use common::TestDb;

fn event(user_ref: &str, body: &str) -> NewEvent {
    NewEvent {
        user_ref: user_ref.to_owned(),
        event_type: "bunq.PAYMENT".to_owned(),
        payload: body.as_bytes().to_vec(),
        dedupe_key: None,
    }
}

fn id(recorded: Recorded) -> String {
    match recorded {
        Recorded::New(id) => id,
        other => panic!("{other:?}"),
    }
}

const LEASE: Duration = Duration::from_secs(60);

async fn a_claimed_event_is_nobody_elses_until_settled_or_its_lease_ends(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let one = db.open(&key).await;
    let two = db.open(&key).await;
    let a1 = id(one.record_event(event("alice", "1")).await.unwrap());
    let a2 = id(one.record_event(event("alice", "2")).await.unwrap());
    let b1 = id(one.record_event(event("bob", "1")).await.unwrap());
    let now = SystemTime::now() + Duration::from_millis(1);

    let first: Vec<String> = one
        .claim_due_events(now, 10, LEASE, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(first, [a1.clone(), b1.clone()]);
    // The other relay gets nothing: not the leased heads, and not alice's next event
    // either (her order holds across relays).
    assert!(
        two.claim_due_events(now, 10, LEASE, None)
            .await
            .unwrap()
            .is_empty()
    );

    // Settling ends the lease: alice's next event is due for whoever asks.
    one.event_delivered(&a1).await.unwrap();
    let next: Vec<String> = two
        .claim_due_events(now, 10, LEASE, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(next, std::slice::from_ref(&a2));

    // A relay that died: its lease ends and the event is taken over.
    let after_lease = now + LEASE + Duration::from_secs(1);
    let taken_over: Vec<String> = two
        .claim_due_events(after_lease, 10, LEASE, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken_over, [a2, b1]);
    // The plain read still lists what is due, leases or not.
    assert_eq!(one.due_events(after_lease, 10).await.unwrap().len(), 2);
}

async fn concurrent_claims_never_hand_out_one_event_twice(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let stores = [
        db.open(&key).await,
        db.open(&key).await,
        db.open(&key).await,
    ];
    for user in 0..40 {
        stores[0]
            .record_event(event(&format!("user-{user}"), "x"))
            .await
            .unwrap();
    }
    let now = SystemTime::now() + Duration::from_millis(1);
    let claims = stores.iter().map(|s| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..10 {
                mine.extend(
                    s.claim_due_events(now, 3, LEASE, None)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|e| e.id),
                );
            }
            mine
        })
    });
    let mut all = Vec::new();
    for claim in claims {
        all.extend(claim.await.unwrap());
    }
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), claimed, "an event was claimed twice");
    assert_eq!(claimed, 40);
}

on_both_backends!(
    a_claimed_event_is_nobody_elses_until_settled_or_its_lease_ends,
    concurrent_claims_never_hand_out_one_event_twice,
);

/// The PostgreSQL test database, or `None` (see `common`).
async fn postgres() -> Option<TestDb> {
    TestDb::postgres().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_has_no_fleet() {
    let db = TestDb::sqlite();
    let store = db.open(&MasterKey::generate().unwrap()).await;
    assert!(store.fleet().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_egress_gives_one_session_turn_per_window_whoever_asks() {
    let Some(db) = postgres().await else { return };
    let key = MasterKey::generate().unwrap();
    let a = db.open(&key).await.fleet().unwrap();
    let b = db.open(&key).await.fleet().unwrap();
    let hold = Duration::from_secs(10);
    let window = Duration::from_millis(800);

    assert_eq!(
        a.try_take_session_window("egress-1", "a", hold, window)
            .await
            .unwrap(),
        None
    );
    // Held (the call in flight): the other replica waits at least the hold.
    let wait = b
        .try_take_session_window("egress-1", "b", hold, window)
        .await
        .unwrap()
        .unwrap();
    assert!(wait > Duration::from_secs(9), "{wait:?}");
    // Another egress has a turn of its own.
    assert_eq!(
        b.try_take_session_window("egress-2", "b", hold, window)
            .await
            .unwrap(),
        None
    );
    // A release by someone else than the holder changes nothing.
    b.release_session_window("egress-1", "b", window)
        .await
        .unwrap();
    assert!(
        b.try_take_session_window("egress-1", "b", hold, window)
            .await
            .unwrap()
            .unwrap()
            > Duration::from_secs(9)
    );
    // The holder's release: the window counts from now.
    a.release_session_window("egress-1", "a", window)
        .await
        .unwrap();
    let wait = b
        .try_take_session_window("egress-1", "b", hold, window)
        .await
        .unwrap()
        .unwrap();
    assert!(wait <= window && wait > Duration::ZERO, "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(
        b.try_take_session_window("egress-1", "b", hold, window)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_creation_lock_keeps_the_other_gateways_waiting_until_dropped() {
    let Some(db) = postgres().await else { return };
    let key = MasterKey::generate().unwrap();
    let a = db.open(&key).await.fleet().unwrap();
    let b = db.open(&key).await.fleet().unwrap();
    let held = a.lock_creation("alice/1").await.unwrap();
    let b2 = b.clone();
    let waiting = tokio::spawn(async move { b2.lock_creation("alice/1").await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the second lock did not wait");
    // Another credential is not held up.
    let other = a.lock_creation("bob/1").await.unwrap();
    drop(other);
    drop(held);
    let second = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the lock was not released")
        .unwrap();
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_creation_claim_of_a_gateway_that_died_is_taken_over_at_once() {
    let Some(db) = postgres().await else { return };
    let key = MasterKey::generate().unwrap();
    let gone = db
        .try_open_with(&key, StoreOptions::default().fleet_member("gone", "e"))
        .await
        .unwrap()
        .fleet()
        .unwrap();
    let other = db.open(&key).await.fleet().unwrap();
    let membership = gone.join("gone", "e", None).await.unwrap();
    let claim = gone.lock_creation("alice/1").await.unwrap();
    // The process dies holding the claim: nothing releases it, its membership ends.
    std::mem::forget(claim);
    drop(membership);
    let taken = tokio::time::timeout(Duration::from_secs(5), other.lock_creation("alice/1"))
        .await
        .expect("a dead gateway's claim held the credential");
    drop(taken.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deletion_on_one_gateway_is_announced_to_the_others() {
    let Some(db) = postgres().await else { return };
    let key = MasterKey::generate().unwrap();
    let writer = db.open(&key).await;
    let listener = db.open(&key).await.fleet().unwrap();
    let mut changes = listener.listen_users();
    let first = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .unwrap();
    assert_eq!(first, Some(UserChange::Resync));

    // A name of its own: the channel is the database's, shared by parallel tests.
    let user = format!("fleet-user-{}", std::process::id());
    writer
        .put_access_token(&user, &secrecy::SecretString::from("tok".to_owned()))
        .await
        .unwrap();
    writer.mark_connected(&user, 7).await.unwrap();
    writer.delete_user(&user).await.unwrap();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen < 2 {
        let change = tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("no announcement within 5 s")
            .unwrap();
        if change == UserChange::User(user.clone()) {
            seen += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_dead_replicas_keys_in_flight_become_unknown() {
    let Some(db) = postgres().await else { return };
    let key = MasterKey::generate().unwrap();
    let alive = db
        .try_open_with(
            &key,
            StoreOptions::default().fleet_member("alive", "egress-1"),
        )
        .await
        .unwrap();
    let dead = db
        .try_open_with(
            &key,
            StoreOptions::default().fleet_member("dead", "egress-1"),
        )
        .await
        .unwrap();
    let fleet = alive.fleet().unwrap();
    let _alive = fleet.join("alive", "egress-1", None).await.unwrap();
    let dead_membership = dead
        .fleet()
        .unwrap()
        .join("dead", "egress-1", None)
        .await
        .unwrap();
    // A replica id held by a live gateway is not taken twice.
    assert!(fleet.join("alive", "egress-1", None).await.is_err());
    let fp = request_fingerprint("POST", "/user/1/payment", b"{}");
    let scope = |key| IdempotencyScope {
        caller: "app",
        user_ref: "alice",
        key,
    };
    let day = Duration::from_secs(86_400);
    for (store, k) in [(&alive, "k-alive"), (&dead, "k-dead")] {
        assert!(matches!(
            store.begin_idempotent(scope(k), fp, k, day).await.unwrap(),
            IdempotencyBegin::Send { .. }
        ));
    }
    // Both alive: nothing settles.
    assert_eq!(fleet.settle_orphaned_idempotency().await.unwrap(), 0);
    // "dead" dies (its membership's connection closes, as with a SIGKILL): its keys
    // settle at once, long before its last heartbeat goes stale.
    drop(dead_membership);
    let mut settled = 0;
    for _ in 0..50 {
        settled = fleet.settle_orphaned_idempotency().await.unwrap();
        if settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(settled, 1);
    let live = fleet
        .heartbeat("alive", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        live.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["alive"]
    );
    // The dead replica's key resends with its request id; the live one's is in flight.
    assert_eq!(
        alive
            .begin_idempotent(scope("k-dead"), fp, "new", day)
            .await
            .unwrap(),
        IdempotencyBegin::Resend {
            request_id: "k-dead".into()
        }
    );
    assert_eq!(
        dead.begin_idempotent(scope("k-alive"), fp, "new", day)
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
}
