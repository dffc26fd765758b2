//! Schema migrations: from an empty database and from every earlier version, on SQLite
//! (`user_version`) and on PostgreSQL (refinery's history table), from the one table of
//! versions in `schema.rs`.
#![allow(clippy::unwrap_used)]

#[allow(unused_macros)]
mod common;

use bunq_store::{MasterKey, SCHEMA_VERSION, Store, StoreError, create_at_version};
use common::{TestDb, raw, temp_db};
use secrecy::{ExposeSecret as _, SecretString};

fn user_version(path: &std::path::Path) -> usize {
    let v: i64 = raw(path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    usize::try_from(v).unwrap()
}

/// Opens a store on a file at `version` and checks it ends at the latest schema, works,
/// and keeps what was there.
async fn migrates_from(version: usize) {
    let db = temp_db();
    create_at_version(&db.path, version).unwrap();
    assert_eq!(user_version(&db.path), version);
    let store = Store::open(&db.path, MasterKey::generate().unwrap())
        .await
        .unwrap();
    assert_eq!(user_version(&db.path), SCHEMA_VERSION, "from v{version}");
    store.integrity_check().await.unwrap();
    store
        .put_access_token("alice", &SecretString::from("tok"))
        .await
        .unwrap();
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok"
    );
}

#[tokio::test]
async fn opens_a_missing_file_at_the_latest_version() {
    let db = temp_db();
    let store = Store::open(&db.path, MasterKey::generate().unwrap())
        .await
        .unwrap();
    store.integrity_check().await.unwrap();
    assert_eq!(user_version(&db.path), SCHEMA_VERSION);
    let mode: String = raw(&db.path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&db.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the database file is private to its owner");
    }
}

#[tokio::test]
async fn migrates_from_every_earlier_version() {
    // v0 is an empty (zero-byte or fresh) SQLite file.
    for version in 0..SCHEMA_VERSION {
        migrates_from(version).await;
    }
}

#[tokio::test]
async fn reopening_at_the_latest_version_keeps_data() {
    let db = temp_db();
    let key = MasterKey::generate().unwrap();
    let store = Store::open(&db.path, key.clone()).await.unwrap();
    store
        .put_access_token("alice", &SecretString::from("tok"))
        .await
        .unwrap();
    store.close().await.unwrap();
    let store = Store::open(&db.path, key).await.unwrap();
    assert!(store.user("alice").await.unwrap().is_some());
    assert_eq!(user_version(&db.path), SCHEMA_VERSION);
}

#[tokio::test]
async fn refuses_a_file_from_a_newer_version() {
    let db = temp_db();
    create_at_version(&db.path, SCHEMA_VERSION).unwrap();
    raw(&db.path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = Store::open(&db.path, MasterKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
}

#[tokio::test]
async fn refuses_a_file_that_is_not_a_database() {
    let db = temp_db();
    std::fs::write(
        &db.path,
        b"this is not a database, just some bytes of junk......",
    )
    .unwrap();
    let result = Store::open(&db.path, MasterKey::generate().unwrap()).await;
    assert!(result.is_err(), "a non-database file must not open");
}

/// The version refinery recorded last on PostgreSQL.
async fn postgres_version(db: &TestDb) -> usize {
    let v = db
        .count("SELECT COALESCE(MAX(version), 0)::BIGINT FROM refinery_schema_history")
        .await;
    usize::try_from(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_opens_an_empty_database_at_the_latest_version() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.open(&MasterKey::generate().unwrap()).await;
    store.integrity_check().await.unwrap();
    assert_eq!(postgres_version(&db).await, SCHEMA_VERSION);
    // Every version's name and checksum are recorded, one row each.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM refinery_schema_history")
            .await,
        i64::try_from(SCHEMA_VERSION).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrates_from_every_earlier_version() {
    for version in 0..SCHEMA_VERSION {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        db.create_at_version(version).await;
        if version > 0 {
            assert_eq!(postgres_version(&db).await, version);
        }
        let store = db.open(&MasterKey::generate().unwrap()).await;
        assert_eq!(
            postgres_version(&db).await,
            SCHEMA_VERSION,
            "from v{version}"
        );
        store.integrity_check().await.unwrap();
        store
            .put_access_token("alice", &SecretString::from("tok"))
            .await
            .unwrap();
        assert_eq!(
            store
                .access_token("alice")
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            "tok"
        );
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reopening_keeps_data_and_two_stores_share_a_database() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let key = MasterKey::generate().unwrap();
    let first = db.open(&key).await;
    // A second gateway on the same database opens at the same time (the migrations and
    // the audit key are made once, under a lock) and sees the first one's writes.
    let second = db.open(&key).await;
    first
        .put_access_token("alice", &SecretString::from("tok"))
        .await
        .unwrap();
    first.mark_connected("alice", 7).await.unwrap();
    assert!(second.user("alice").await.unwrap().is_some());
    assert_eq!(second.audit_log(Some("alice")).await.unwrap().len(), 1);
    first.close().await.unwrap();
    second.close().await.unwrap();
    let store = db.open(&key).await;
    assert!(store.user("alice").await.unwrap().is_some());
    assert_eq!(postgres_version(&db).await, SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_database_from_a_newer_version() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    db.create_at_version(SCHEMA_VERSION).await;
    db.exec(&format!(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES ({}, 'from_the_future', '2030-01-01T00:00:00Z', '0')",
        SCHEMA_VERSION + 1
    ))
    .await
    .unwrap();
    let err = db
        .try_open(&MasterKey::generate().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema migration"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_an_unreachable_server_without_naming_its_password() {
    // A port nothing listens on, with a password in the URL.
    let url = "postgres://gw:pw-SECRET@127.0.0.1:1/none?connect_timeout=2";
    let location = bunq_store::StoreLocation::parse(url).unwrap();
    assert!(!format!("{location} {location:?}").contains("pw-SECRET"));
    let err = Store::open_location(
        &location,
        MasterKey::generate().unwrap(),
        bunq_store::StoreOptions::default(),
    )
    .await
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("pw-SECRET"), "{text}");
}
