//! `migrate::copy_sqlite_to_postgres`: a SQLite store with a row in every table lands in
//! an empty PostgreSQL schema whole (sealed values byte for byte, ids and `seq` kept,
//! the sequences past every id SQLite handed out), and reads there as it did; a target
//! with rows, a wrong master key and a missing file are refused with nothing written.
//! PostgreSQL only: runs when `BUNQ_STORE_POSTGRES_URL` is set (fails without it under
//! `CI=true`).
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;

use std::time::{Duration, SystemTime};

use bunq_oauth::{PendingState, StateContext, StateKey, StateStore as _, TakeOutcome};
use bunq_store::migrate::copy_sqlite_to_postgres;
use bunq_store::{
    IdempotencyBegin, IdempotencyScope, MasterKey, NewEvent, PostgresUrl, SCHEMA_VERSION, Store,
    StoreError, StoredAnswer,
};
use common::{TestDb, context, raw, temp_db};
use secrecy::{ExposeSecret as _, SecretString};

/// Every sealed column: (table, row key, column).
const SEALED: &[(&str, &str, &str)] = &[
    ("users", "user_ref", "access_token"),
    ("contexts", "credential", "secret"),
    ("contexts", "credential", "installation_token"),
    ("contexts", "credential", "private_key"),
    ("sessions", "credential", "token"),
    ("consents", "credential", "access_token"),
    ("idempotency_keys", "id", "answer"),
    ("events", "id", "payload"),
    ("store_keys", "name", "sealed_key"),
];

fn url(db: &TestDb) -> PostgresUrl {
    PostgresUrl::parse(&db.location()).unwrap()
}

fn scope(key: &str) -> IdempotencyScope<'_> {
    IdempotencyScope {
        caller: "app",
        user_ref: "alice",
        key,
    }
}

fn pending(key: &str, user_ref: &str, replace: bool) -> PendingState {
    let now = SystemTime::now();
    PendingState {
        key: StateKey(key.to_owned()),
        context: StateContext {
            user_ref: user_ref.to_owned(),
            return_to: Some("https://app.example/back".to_owned()),
            replace,
        },
        created_at: now,
        expires_at: now + Duration::from_secs(600),
    }
}

fn event(user_ref: &str, n: u32) -> NewEvent {
    NewEvent {
        user_ref: user_ref.to_owned(),
        event_type: "bunq.payment".to_owned(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        dedupe_key: Some(format!("d{n}")),
    }
}

/// A store with a row in every table, and then some: a connected user with a context
/// and session, an operator's context without a user, a pending consent (from a state
/// that allowed a new identity), a state not taken yet, idempotency records done and in
/// flight, a callback id, and events of which the newest were purged (so SQLite's
/// AUTOINCREMENT high-water mark is above the highest `seq` stored).
async fn filled(store: &Store) {
    store
        .put_access_token("alice", &SecretString::from("alice-oauth-token"))
        .await
        .unwrap();
    store.mark_connected("alice", 4242).await.unwrap();
    store
        .save_context("alice", &context("s-alice", "i-alice", "t-alice", 7))
        .await
        .unwrap();
    store
        .save_context("operator-key", &context("s-op", "i-op", "t-op", 8))
        .await
        .unwrap();
    let bob = pending("state-bob", "bob", true);
    store.insert(&bob).await.unwrap();
    store.take(&bob.key).await.unwrap();
    store
        .add_consent(
            &bob.key,
            "bob",
            &SecretString::from("bob-oauth-token"),
            true,
        )
        .await
        .unwrap()
        .unwrap();
    store
        .insert(&pending("state-carol", "carol", false))
        .await
        .unwrap();
    let fingerprint = bunq_store::request_fingerprint("POST", "/pay", b"{}");
    for key in ["done", "flying"] {
        store
            .begin_idempotent(
                scope(key),
                fingerprint,
                &format!("req-{key}"),
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
    }
    store
        .finish_idempotent(
            scope("done"),
            &StoredAnswer {
                status: 200,
                content_type: Some("application/json".to_owned()),
                body: b"{\"Response\":[{\"Id\":{\"id\":1}}]}".to_vec(),
            },
        )
        .await
        .unwrap();
    store.callback_id("alice").await.unwrap();
    let mut ids = Vec::new();
    for n in 1..=4 {
        match store.record_event(event("alice", n)).await.unwrap() {
            bunq_store::Recorded::New(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
    }
    for id in &ids[2..] {
        store.event_delivered(id).await.unwrap();
    }
    let purged = store
        .purge_settled_events(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(purged, 2);
}

/// The sealed bytes of every sealed column, in row-key order.
async fn sealed_bytes_sqlite(path: &std::path::Path) -> Vec<Vec<Vec<u8>>> {
    let conn = raw(path);
    SEALED
        .iter()
        .map(|(table, key, column)| {
            conn.prepare(&format!(
                "SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key}"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<Vec<Vec<u8>>, _>>()
            .unwrap()
        })
        .collect()
}

async fn sealed_bytes_postgres(db: &TestDb) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (table, key, column) in SEALED {
        out.push(
            db.bytes(&format!(
                "SELECT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key} COLLATE \"C\""
            ))
            .await,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_table_lands_whole_and_reads_as_it_did() {
    let Some(target) = TestDb::postgres().await else {
        return;
    };
    let source = temp_db();
    let key = MasterKey::generate().unwrap();
    let store = Store::open(&source.path, key.clone()).await.unwrap();
    filled(&store).await;
    let users = (
        store.user("alice").await.unwrap(),
        store.user("bob").await.unwrap(),
    );
    let contexts = (
        store.load_context("alice").await.unwrap(),
        store.load_context("operator-key").await.unwrap(),
    );
    let consents = store.pending_consents().await.unwrap();
    let events = store.events_after(0, 100).await.unwrap();
    let audit = store.audit_log(None).await.unwrap();
    let alice_audit = store.audit_log(Some("alice")).await.unwrap();
    store.close().await.unwrap();
    let sealed = sealed_bytes_sqlite(&source.path).await;

    let report = copy_sqlite_to_postgres(&source.path, &url(&target), key.clone())
        .await
        .unwrap();
    assert_eq!(report.schema_version, SCHEMA_VERSION);
    assert_eq!(report.key_id, key.key_id());
    let counts: std::collections::HashMap<_, _> = report.tables.iter().copied().collect();
    assert_eq!(report.tables.len(), 10, "{report:?}");
    for (table, rows) in [
        ("store_keys", 1),
        ("users", 2),
        ("contexts", 2),
        ("sessions", 2),
        ("consents", 1),
        ("oauth_states", 2),
        ("idempotency_keys", 2),
        ("callback_ids", 1),
        ("events", 2),
    ] {
        assert_eq!(counts[table], rows, "{table}: {report:?}");
    }
    assert_eq!(counts["audit_log"], audit.len() as u64);
    assert_eq!(report.total_rows(), 15 + audit.len() as u64);

    // Byte for byte: not one sealed value was re-sealed.
    assert_eq!(sealed_bytes_postgres(&target).await, sealed);

    // And it reads on PostgreSQL as it did on SQLite.
    let store = target.open(&key).await;
    store.check_master_key().await.unwrap();
    store.integrity_check().await.unwrap();
    assert_eq!(
        (
            store.user("alice").await.unwrap(),
            store.user("bob").await.unwrap()
        ),
        users
    );
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "alice-oauth-token"
    );
    let loaded = (
        store.load_context("alice").await.unwrap(),
        store.load_context("operator-key").await.unwrap(),
    );
    assert_eq!(format!("{loaded:?}"), format!("{contexts:?}"));
    assert_eq!(
        loaded.0.unwrap().secret.expose_secret(),
        contexts.0.unwrap().secret.expose_secret()
    );
    assert_eq!(store.pending_consents().await.unwrap(), consents);
    assert_eq!(
        store
            .consent_token(&consents[0].credential)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "bob-oauth-token"
    );
    // The state not taken yet is taken once, with its `replace` flag (a boolean here,
    // 0/1 there); the one taken before stays taken.
    match store
        .take(&StateKey("state-carol".to_owned()))
        .await
        .unwrap()
    {
        TakeOutcome::Taken(state) => {
            assert_eq!(state.context.user_ref, "carol");
            assert!(!state.context.replace);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.take(&StateKey("state-bob".to_owned())).await.unwrap(),
        TakeOutcome::AlreadyTaken
    );
    let fingerprint = bunq_store::request_fingerprint("POST", "/pay", b"{}");
    match store
        .begin_idempotent(
            scope("done"),
            fingerprint,
            "req-new",
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    {
        IdempotencyBegin::Replay(answer) => assert_eq!(answer.status, 200),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .begin_idempotent(
                scope("flying"),
                fingerprint,
                "req-new",
                Duration::from_secs(3600)
            )
            .await
            .unwrap(),
        IdempotencyBegin::InFlight
    );
    assert!(store.has_callback_id("alice").await.unwrap());
    assert_eq!(store.events_after(0, 100).await.unwrap(), events);
    assert_eq!(
        format!("{:?}", store.audit_log(None).await.unwrap()),
        format!("{audit:?}")
    );
    assert_eq!(
        format!("{:?}", store.audit_log(Some("alice")).await.unwrap()),
        format!("{alice_audit:?}"),
        "the audit key came along: rows are still found by user_ref"
    );

    // New rows continue past every id SQLite handed out: events 3 and 4 were purged,
    // so the next event is 5, not 3 (a cursor at 4 must not skip it).
    let next = match store.record_event(event("alice", 9)).await.unwrap() {
        bunq_store::Recorded::New(id) => store.event(&id).await.unwrap().unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(next.seq, 5);
    assert_eq!(store.events_after(4, 10).await.unwrap(), vec![next]);
    store.mark_connected("alice", 4242).await.unwrap();
    let audit_now = store.audit_log(None).await.unwrap();
    assert!(audit_now.last().unwrap().id > audit.last().unwrap().id);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_with_rows_is_refused_and_left_as_it_was() {
    let Some(target) = TestDb::postgres().await else {
        return;
    };
    let source = temp_db();
    let key = MasterKey::generate().unwrap();
    let store = Store::open(&source.path, key.clone()).await.unwrap();
    filled(&store).await;
    store.close().await.unwrap();

    // A store opened on the target once holds its own audit key, and nothing else.
    target.open(&key).await.close().await.unwrap();
    let err = copy_sqlite_to_postgres(&source.path, &url(&target), key.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::TargetNotEmpty { tables } if tables == &["store_keys"]),
        "{err}"
    );
    assert!(err.to_string().contains("store_keys"), "{err}");
    assert_eq!(target.count("SELECT COUNT(*) FROM store_keys").await, 1);
    assert_eq!(target.count("SELECT COUNT(*) FROM users").await, 0);

    // A full one: every table with rows is named.
    let other = TestDb::postgres().await.unwrap();
    copy_sqlite_to_postgres(&source.path, &url(&other), key.clone())
        .await
        .unwrap();
    let before = other.dump().await;
    let err = copy_sqlite_to_postgres(&source.path, &url(&other), key)
        .await
        .unwrap_err();
    match &err {
        StoreError::TargetNotEmpty { tables } => {
            assert!(
                tables.contains(&"users") && tables.contains(&"audit_log"),
                "{err}"
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(other.dump().await, before, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_key_is_refused_before_the_file_or_the_database_is_touched() {
    let Some(target) = TestDb::postgres().await else {
        return;
    };
    let source = temp_db();
    let key = MasterKey::generate().unwrap();
    let store = Store::open(&source.path, key.clone()).await.unwrap();
    filled(&store).await;
    store.close().await.unwrap();
    // Back to a v4 file (no audit key yet): opening it with a key creates one, sealed
    // under that key. A wrong key must not get that far.
    raw(&source.path)
        .execute_batch(
            "DROP TABLE store_keys; ALTER TABLE users DROP COLUMN egress;
             ALTER TABLE events DROP COLUMN leased_until;
             ALTER TABLE idempotency_keys DROP COLUMN owner;
             ALTER TABLE contexts DROP COLUMN psd2_credential_id;
             ALTER TABLE contexts DROP COLUMN psd2_certificate_sha256; PRAGMA user_version = 4;",
        )
        .unwrap();
    let file = std::fs::read(&source.path).unwrap();

    let wrong = MasterKey::generate().unwrap();
    let err = copy_sqlite_to_postgres(&source.path, &url(&target), wrong.clone())
        .await
        .unwrap_err();
    match &err {
        StoreError::UnknownKeyId { key_id, held, .. } => {
            assert_eq!((key_id, held), (&key.key_id(), &wrong.key_id()));
        }
        other => panic!("{other}"),
    }
    assert!(
        std::fs::read(&source.path).unwrap() == file,
        "the file as it was"
    );
    assert_eq!(
        target
            .count("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")
            .await,
        0,
        "not even the schema was created"
    );

    // The right key: the file is migrated (its audit key made under that key) and copied.
    let report = copy_sqlite_to_postgres(&source.path, &url(&target), key.clone())
        .await
        .unwrap();
    assert_eq!(report.tables[0], ("store_keys", 1));
    let store = target.open(&key).await;
    store.check_master_key().await.unwrap();
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().bunq_user_id,
        Some(4242)
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_file_is_refused_and_not_created() {
    let Some(target) = TestDb::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.sqlite3");
    let err = copy_sqlite_to_postgres(&missing, &url(&target), MasterKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(!missing.exists());
}
