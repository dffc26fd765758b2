//! Schema migrations: from an empty file and from every earlier version.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_store::{MasterKey, SCHEMA_VERSION, Store, StoreError, create_at_version};
use common::{raw, temp_db};
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
