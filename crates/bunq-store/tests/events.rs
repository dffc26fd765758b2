//! The outbox: callbacks stored once per body, per-user order for delivery, retries and
//! dead events, redelivery, the pull cursor, callback ids, payloads sealed at rest and
//! re-sealed by a key rotation.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use bunq_store::{DeliveryState, MasterKey, NewEvent, Recorded, callback_dedupe_key};
use common::{open, raw, temp_db};

fn bunq_event(user_ref: &str, body: &str) -> NewEvent {
    NewEvent {
        user_ref: user_ref.to_owned(),
        event_type: "bunq.PAYMENT".to_owned(),
        payload: body.as_bytes().to_vec(),
        dedupe_key: Some(callback_dedupe_key(body.as_bytes())),
    }
}

fn new_id(r: Recorded) -> String {
    match r {
        Recorded::New(id) => id,
        other => panic!("expected a new event, got {other:?}"),
    }
}

#[tokio::test]
async fn the_same_callback_three_times_is_stored_once() {
    let db = temp_db();
    let store = open(&db.path, &MasterKey::generate().unwrap()).await;
    let id = new_id(
        store
            .record_event(bunq_event("alice", "{\"a\":1}"))
            .await
            .unwrap(),
    );
    for _ in 0..2 {
        assert_eq!(
            store
                .record_event(bunq_event("alice", "{\"a\":1}"))
                .await
                .unwrap(),
            Recorded::Duplicate(id.clone())
        );
    }
    // The same body for another user is that user's own event.
    new_id(
        store
            .record_event(bunq_event("bob", "{\"a\":1}"))
            .await
            .unwrap(),
    );
    let all = store.events_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].payload, b"{\"a\":1}");
    assert_eq!(all[0].state, DeliveryState::Pending);
}

#[tokio::test]
async fn only_the_oldest_pending_event_of_a_user_is_due() {
    let db = temp_db();
    let store = open(&db.path, &MasterKey::generate().unwrap()).await;
    let a1 = new_id(store.record_event(bunq_event("alice", "1")).await.unwrap());
    let a2 = new_id(store.record_event(bunq_event("alice", "2")).await.unwrap());
    let b1 = new_id(store.record_event(bunq_event("bob", "1")).await.unwrap());
    let now = SystemTime::now() + Duration::from_millis(1);
    let due: Vec<String> = store
        .due_events(now, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, [a1.clone(), b1.clone()]);

    // A failed attempt holds alice's queue (order), not bob's.
    let later = SystemTime::now() + Duration::from_secs(60);
    store
        .event_failed(&a1, "HTTP 500", later, false)
        .await
        .unwrap();
    let due: Vec<String> = store
        .due_events(now, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, std::slice::from_ref(&b1));
    // Due again once its time comes.
    let due = store.due_events(later, 10).await.unwrap();
    assert_eq!(due[0].id, a1);
    assert_eq!(
        (due[0].attempts, due[0].last_error.as_deref()),
        (1, Some("HTTP 500"))
    );

    store.event_delivered(&a1).await.unwrap();
    let due: Vec<String> = store
        .due_events(later, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, [a2.clone(), b1.clone()]);

    // A dead event lets the next one through and can be revived.
    store
        .event_failed(&a2, "timeout", later, true)
        .await
        .unwrap();
    let dead = store.event(&a2).await.unwrap().unwrap();
    assert_eq!(dead.state, DeliveryState::Dead);
    assert!(
        store
            .due_events(later, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.id != a2)
    );
    assert!(store.redeliver_event(&a2).await.unwrap());
    let revived = store.event(&a2).await.unwrap().unwrap();
    assert_eq!(
        (revived.state, revived.attempts),
        (DeliveryState::Pending, 0)
    );
    assert!(!store.redeliver_event("evt_nope").await.unwrap());
}

#[tokio::test]
async fn the_cursor_pages_in_order_and_survives_a_reopen() {
    let db = temp_db();
    let key = MasterKey::generate().unwrap();
    let store = open(&db.path, &key).await;
    for i in 0..5 {
        store
            .record_event(bunq_event("alice", &i.to_string()))
            .await
            .unwrap();
    }
    let first = store.events_after(0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    store.close().await.unwrap();
    let store = open(&db.path, &key).await;
    let rest = store.events_after(first[1].seq, 10).await.unwrap();
    let bodies: Vec<&[u8]> = rest.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(bodies, [b"2".as_slice(), b"3", b"4"]);
}

#[tokio::test]
async fn payloads_are_sealed_bound_to_their_row_and_rotated() {
    let db = temp_db();
    let old = MasterKey::generate().unwrap();
    let store = open(&db.path, &old).await;
    let secret = "{\"iban\":\"NL00BUNQ0123456789\"}";
    let a = new_id(
        store
            .record_event(bunq_event("alice", secret))
            .await
            .unwrap(),
    );
    let b = new_id(
        store
            .record_event(bunq_event("alice", "other"))
            .await
            .unwrap(),
    );
    let conn = raw(&db.path);
    let stored: Vec<u8> = conn
        .query_row("SELECT payload FROM events WHERE id = ?1", [&a], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()));
    // Moved to another row, it does not open.
    conn.execute(
        "UPDATE events SET payload = (SELECT payload FROM events WHERE id = ?1) WHERE id = ?2",
        [&a, &b],
    )
    .unwrap();
    assert!(store.event(&b).await.is_err());
    conn.execute("DELETE FROM events WHERE id = ?1", [&b])
        .unwrap();

    let new = MasterKey::generate().unwrap();
    let report = store.rotate_key(&old, &new).await.unwrap();
    // The event's payload and the audit log's hashing key.
    assert_eq!(report.reencrypted, 2);
    store.close().await.unwrap();
    let store = open(&db.path, &new).await;
    store.check_master_key().await.unwrap();
    assert_eq!(
        store.event(&a).await.unwrap().unwrap().payload,
        secret.as_bytes()
    );
}

#[tokio::test]
async fn callback_ids_are_random_stable_and_die_with_the_user() {
    let db = temp_db();
    let store = open(&db.path, &MasterKey::generate().unwrap()).await;
    let id = store.callback_id("alice").await.unwrap();
    assert!(id.starts_with("cb_") && id.len() == 35, "{id}");
    assert_eq!(store.callback_id("alice").await.unwrap(), id);
    assert_ne!(store.callback_id("bob").await.unwrap(), id);
    assert_eq!(
        store.user_of_callback(&id).await.unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(store.user_of_callback("cb_unknown").await.unwrap(), None);
    store
        .put_access_token("alice", &secrecy::SecretString::from("t"))
        .await
        .unwrap();
    store.delete_user("alice").await.unwrap();
    assert_eq!(store.user_of_callback(&id).await.unwrap(), None);
}
