//! The audit log keeps a keyed hash of `user_ref`, not the `user_ref` (so that a deleted
//! user's identity is gone), stays queryable per user across key rotations and
//! reopens, re-hashes rows of older schemas; deleted ciphertexts do not linger in the
//! file (`secure_delete`).
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use bunq_store::{AuditEvent, MasterKey};
use common::{TestDb, open, raw, temp_db};
use secrecy::SecretString;

async fn raw_audit_refs(db: &TestDb) -> Vec<Option<String>> {
    db.strings("SELECT user_ref FROM audit_log ORDER BY id")
        .await
}

async fn the_log_holds_keyed_hashes_and_is_queried_by_user_ref(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    for user in ["alice@example.com", "bob@example.com"] {
        store
            .put_access_token(user, &SecretString::from(format!("tok-{user}")))
            .await
            .unwrap();
        store.mark_connected(user, 1).await.unwrap();
    }
    assert!(
        store
            .delete_user_by("alice@example.com", Some("ops"))
            .await
            .unwrap()
    );

    let refs = raw_audit_refs(&db).await;
    assert!(!refs.is_empty());
    for r in refs.iter().flatten() {
        assert!(!r.contains("example.com"), "a user_ref in the log: {r}");
        assert!(r.starts_with("h1:") && r.len() == 3 + 64, "{r}");
    }
    let alice: Vec<_> = store
        .audit_log(Some("alice@example.com"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(alice, [AuditEvent::Connect, AuditEvent::Disconnect]);
    assert_eq!(
        store
            .audit_log(Some("bob@example.com"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Same hashes after a reopen and after a key rotation (the audit key is re-sealed,
    // not replaced).
    store.close().await.unwrap();
    let new = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    store.rotate_key(&key, &new).await.unwrap();
    store.close().await.unwrap();
    let store = db.open(&new).await;
    store.check_master_key().await.unwrap();
    assert_eq!(
        store
            .audit_log(Some("alice@example.com"))
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .put_access_token("carol", &SecretString::from("tok-carol"))
        .await
        .unwrap();
    store.mark_connected("carol", 1).await.unwrap();
    assert_eq!(store.audit_log(Some("carol")).await.unwrap().len(), 1);
}

async fn rows_of_an_older_schema_are_rehashed_at_open(db: TestDb) {
    db.create_at_version(3).await;
    db.exec(
        "INSERT INTO audit_log (at, user_ref, event, detail)
         VALUES (1, 'dave@example.com', 'connect', 'x'), (2, NULL, 'key_rotated', 'y')",
    )
    .await
    .unwrap();
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let refs = raw_audit_refs(&db).await;
    assert_eq!(refs.len(), 2);
    assert!(refs[0].as_deref().unwrap().starts_with("h1:"), "{refs:?}");
    assert_eq!(refs[1], None);
    let dave = store.audit_log(Some("dave@example.com")).await.unwrap();
    assert_eq!(dave.len(), 1);
    assert_eq!(dave[0].event, AuditEvent::Connect);
    // Still append-only after the re-hash.
    assert!(db.exec("UPDATE audit_log SET detail = 'z'").await.is_err());
    assert!(db.exec("DELETE FROM audit_log").await.is_err());
}

/// SQLite only: `secure_delete` zeroes freed pages of the file. (PostgreSQL leaves a
/// deleted row's tuple until VACUUM; its files are the server's, not ours to scan.)
#[tokio::test]
async fn a_deleted_token_ciphertext_is_not_left_in_the_file() {
    let db = temp_db();
    let store = open(&db.path, &MasterKey::generate().unwrap()).await;
    // A long token: its ciphertext spans a recognisable run of bytes.
    store
        .put_access_token("erin", &SecretString::from("t".repeat(400)))
        .await
        .unwrap();
    let sealed: Vec<u8> = raw(&db.path)
        .query_row(
            "SELECT access_token FROM users WHERE user_ref = 'erin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let needle = &sealed[sealed.len() - 64..];
    assert!(store.delete_user("erin").await.unwrap());
    store.close().await.unwrap();
    // Everything in the WAL goes to the main file, and the WAL is emptied.
    raw(&db.path)
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    for file in [db.path.clone(), db.path.with_extension("db-wal")] {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the deleted ciphertext is still in {}",
            file.display()
        );
    }
}

on_both_backends!(
    the_log_holds_keyed_hashes_and_is_queried_by_user_ref,
    rows_of_an_older_schema_are_rehashed_at_open,
);
