//! The outbox: callbacks stored once per body, per-user order for delivery, retries and
//! dead events, redelivery, the pull cursor, callback ids, payloads sealed at rest and
//! re-sealed by a key rotation.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime};

use bunq_store::{DeliveryState, MasterKey, NewEvent, Recorded, callback_dedupe_key};
use common::TestDb;

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

async fn the_same_callback_three_times_is_stored_once(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
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

async fn only_the_oldest_pending_event_of_a_user_is_due(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
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

async fn the_cursor_pages_in_order_and_survives_a_reopen(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    for i in 0..5 {
        store
            .record_event(bunq_event("alice", &i.to_string()))
            .await
            .unwrap();
    }
    let first = store.events_after(0, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    store.close().await.unwrap();
    let store = db.open(&key).await;
    let rest = store.events_after(first[1].seq, 10).await.unwrap();
    let bodies: Vec<&[u8]> = rest.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(bodies, [b"2".as_slice(), b"3", b"4"]);
}

async fn payloads_are_sealed_bound_to_their_row_and_rotated(db: TestDb) {
    let old = MasterKey::generate().unwrap();
    let store = db.open(&old).await;
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
    let stored = db
        .bytes(&format!("SELECT payload FROM events WHERE id = '{a}'"))
        .await
        .remove(0);
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()));
    // Moved to another row, it does not open.
    db.exec(&format!(
        "UPDATE events SET payload = (SELECT payload FROM events WHERE id = '{a}') \
         WHERE id = '{b}'"
    ))
    .await
    .unwrap();
    assert!(store.event(&b).await.is_err());
    db.exec(&format!("DELETE FROM events WHERE id = '{b}'"))
        .await
        .unwrap();

    let new = MasterKey::generate().unwrap();
    let report = store.rotate_key(&old, &new).await.unwrap();
    // The event's payload and the audit log's hashing key.
    assert_eq!(report.reencrypted, 2);
    store.close().await.unwrap();
    let store = db.open(&new).await;
    store.check_master_key().await.unwrap();
    assert_eq!(
        store.event(&a).await.unwrap().unwrap().payload,
        secret.as_bytes()
    );
}

async fn callback_ids_are_random_stable_and_die_with_the_user(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
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

async fn confirmation_replaces_the_payload_and_unconfirmed_events_are_settled(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let forged = new_id(
        store
            .record_event(bunq_event("alice", "forged"))
            .await
            .unwrap(),
    );
    let real = new_id(
        store
            .record_event(bunq_event("alice", "hint"))
            .await
            .unwrap(),
    );
    let now = SystemTime::now() + Duration::from_millis(1);
    // bunq knows no such object: the event is settled, never due, and alice's next
    // event is no longer held behind it.
    store
        .event_unconfirmed(&forged, "bunq: no such object")
        .await
        .unwrap();
    let e = store.event(&forged).await.unwrap().unwrap();
    assert_eq!(e.state, DeliveryState::Unconfirmed);
    assert!(!e.confirmed && e.settled_at.is_some());
    let due = store.due_events(now, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, real);
    assert_eq!(store.count_pending_events().await.unwrap(), 1);
    // bunq's own object replaces the callback's body.
    store
        .event_confirmed(&real, b"{\"fetched\":true}".to_vec())
        .await
        .unwrap();
    let e = store.event(&real).await.unwrap().unwrap();
    assert!(e.confirmed);
    assert_eq!(e.payload, b"{\"fetched\":true}");
    assert_eq!(e.state, DeliveryState::Pending);
    // Redelivering an unconfirmed event asks bunq again.
    assert!(store.redeliver_event(&forged).await.unwrap());
    assert_eq!(
        store.event(&forged).await.unwrap().unwrap().state,
        DeliveryState::Pending
    );
}

async fn retention_purges_settled_events_only_and_deleting_a_user_erases_theirs(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let delivered = new_id(store.record_event(bunq_event("alice", "1")).await.unwrap());
    let unconfirmed = new_id(store.record_event(bunq_event("alice", "2")).await.unwrap());
    let dead = new_id(store.record_event(bunq_event("alice", "3")).await.unwrap());
    let pending = new_id(store.record_event(bunq_event("alice", "4")).await.unwrap());
    store.event_delivered(&delivered).await.unwrap();
    store.event_unconfirmed(&unconfirmed, "x").await.unwrap();
    store
        .event_failed(&dead, "timeout", SystemTime::now(), true)
        .await
        .unwrap();
    // Settled just now: inside the retention period, nothing goes.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.purge_settled_events(hour_ago).await.unwrap(), 0);
    // Past it: the delivered and the unconfirmed go; the dead one (still owed, can be
    // redelivered) and the pending one stay.
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(store.purge_settled_events(later).await.unwrap(), 2);
    assert!(store.event(&delivered).await.unwrap().is_none());
    assert!(store.event(&unconfirmed).await.unwrap().is_none());
    assert!(store.event(&dead).await.unwrap().is_some());
    assert!(store.event(&pending).await.unwrap().is_some());
    // The cursor never goes back: a new event comes after every purged one.
    let next = new_id(store.record_event(bunq_event("alice", "5")).await.unwrap());
    let seq = store.event(&next).await.unwrap().unwrap().seq;
    assert!(seq > 4, "{seq}");

    // Deleting alice erases her events, whatever their state; bob's stay.
    let bobs = new_id(store.record_event(bunq_event("bob", "1")).await.unwrap());
    store
        .put_access_token("alice", &secrecy::SecretString::from("t"))
        .await
        .unwrap();
    store.delete_user("alice").await.unwrap();
    assert!(
        store
            .events_after(0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.user_ref == "bob")
    );
    assert!(store.event(&bobs).await.unwrap().is_some());
}

on_both_backends!(
    the_same_callback_three_times_is_stored_once,
    only_the_oldest_pending_event_of_a_user_is_due,
    the_cursor_pages_in_order_and_survives_a_reopen,
    payloads_are_sealed_bound_to_their_row_and_rotated,
    callback_ids_are_random_stable_and_die_with_the_user,
    confirmation_replaces_the_payload_and_unconfirmed_events_are_settled,
    retention_purges_settled_events_only_and_deleting_a_user_erases_theirs,
);
