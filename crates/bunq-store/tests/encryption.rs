//! Encryption at rest: no plaintext on disk, moved ciphertexts rejected, wrong keys
//! named, key rotation.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::Path;

use bunq_session::{ContextStore as _, CredentialId};
use bunq_store::{AuditEvent, MasterKey, StoreError};
use common::{TestDb, context, installation_key};
use secrecy::{ExposeSecret as _, SecretString};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    p.into()
}

/// No secret in clear in anything the database holds: on SQLite the file and its WAL
/// (old pages included), on PostgreSQL every column of every row.
async fn database_and_wal_hold_no_plaintext_secret(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    let mut secrets: Vec<String> = Vec::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        let token = format!("oauth-access-token-PLAINTEXT-{i:04}-9f8e7d6c5b4a");
        store
            .put_access_token(&user, &SecretString::from(token.clone()))
            .await
            .unwrap();
        let inst = format!("installation-token-PLAINTEXT-{i:04}");
        let sess = format!("session-token-PLAINTEXT-{i:04}");
        store
            .save(&CredentialId::new(&user), &context(&token, &inst, &sess, i))
            .await
            .unwrap();
        store.mark_connected(&user, 1000 + i).await.unwrap();
        secrets.extend([token, inst, sess]);
    }
    // Rewrites leave old pages in the WAL: those must be sealed too.
    store
        .save(
            &CredentialId::new("user-0"),
            &context("x", "y", "z-PLAINTEXT-renewed", 99),
        )
        .await
        .unwrap();
    secrets.push("z-PLAINTEXT-renewed".to_owned());

    let pem = installation_key().to_pkcs8_pem();
    let mut needles: Vec<Vec<u8>> = secrets.iter().map(|s| s.clone().into_bytes()).collect();
    // Every base64 line of the PEM body, and a slice of the raw DER.
    needles.extend(
        pem.expose_secret()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            .map(|l| l.as_bytes().to_vec()),
    );
    let der = installation_key().pkcs8_der().expose_secret().to_vec();
    needles.push(der[200..264].to_vec());
    needles.push(key.to_base64().expose_secret().as_bytes().to_vec());

    let check = |what: &str, bytes: &[u8]| {
        for needle in &needles {
            assert!(
                !contains(bytes, needle),
                "{what} contains a plaintext secret ({} bytes)",
                needle.len()
            );
        }
    };
    let everything = db.dump().await;
    // Sanity: the scan can find things (user refs are not secret, so they are in clear).
    assert!(contains(&everything, b"user-19"));
    check("database", &everything);
    if db.is_postgres() {
        return;
    }
    let wal = file_bytes(&wal_path(&db.path));
    assert!(!wal.is_empty(), "the workload should still be in the WAL");
    check("WAL", &wal);
    check("database file", &file_bytes(&db.path));

    store.close().await.unwrap();
    check("database after checkpoint", &file_bytes(&db.path));
    check("WAL after close", &file_bytes(&wal_path(&db.path)));
}

async fn ciphertext_moved_to_another_row_or_column_fails_to_decrypt(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    for user in ["alice", "mallory"] {
        store
            .put_access_token(user, &SecretString::from(format!("tok-{user}")))
            .await
            .unwrap();
        store
            .save(
                &CredentialId::new(user),
                &context(&format!("tok-{user}"), "i", "s", 1),
            )
            .await
            .unwrap();
    }
    // Warm the parsed-key cache, so the attack is not hidden by it.
    store
        .load(&CredentialId::new("mallory"))
        .await
        .unwrap()
        .unwrap();

    db.exec(
        "UPDATE users SET access_token = (SELECT access_token FROM users WHERE user_ref = 'alice')
         WHERE user_ref = 'mallory'",
    )
    .await
    .unwrap();
    match store.access_token("mallory").await {
        Err(StoreError::Decrypt { table, column, row }) => {
            assert_eq!(
                (table, column, row.as_str()),
                ("users", "access_token", "mallory")
            );
        }
        other => panic!("expected Decrypt, got {other:?}"),
    }
    // Alice's own row still decrypts.
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-alice"
    );

    // Another column of the same row.
    db.exec("UPDATE contexts SET secret = installation_token WHERE credential = 'alice'")
        .await
        .unwrap();
    let err = store.load_context("alice").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Decrypt {
                column: "secret",
                ..
            }
        ),
        "{err:?}"
    );
    // The private key of another row.
    db.exec(
        "UPDATE contexts SET private_key = (SELECT private_key FROM contexts WHERE credential = 'alice')
         WHERE credential = 'mallory'",
    )
    .await
    .unwrap();
    let err = store.load_context("mallory").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Decrypt {
                column: "private_key",
                ..
            }
        ),
        "{err:?}"
    );
    // And through the trait, as a ContextStoreError carrying the typed error.
    let err = store.load(&CredentialId::new("mallory")).await.unwrap_err();
    assert!(matches!(
        err.0.downcast_ref::<StoreError>(),
        Some(StoreError::Decrypt { .. })
    ));
}

async fn wrong_master_key_is_a_clear_error(db: TestDb) {
    let right = MasterKey::generate().unwrap();
    let wrong = MasterKey::generate().unwrap();
    let store = db.open(&right).await;
    store
        .put_access_token("alice", &SecretString::from("tok"))
        .await
        .unwrap();
    store
        .save(&CredentialId::new("alice"), &context("tok", "i", "s", 1))
        .await
        .unwrap();
    store.close().await.unwrap();

    let store = db.open(&wrong).await;
    let err = store.access_token("alice").await.unwrap_err();
    match &err {
        StoreError::UnknownKeyId { key_id, held, .. } => {
            assert_eq!(key_id, &right.key_id());
            assert_eq!(held, &wrong.key_id());
        }
        other => panic!("expected UnknownKeyId, got {other:?}"),
    }
    assert!(err.to_string().contains("wrong master key"), "{err}");
    assert!(matches!(
        store.load_context("alice").await,
        Err(StoreError::UnknownKeyId { .. })
    ));
    // Non-secret data stays readable: the store is usable for diagnosis.
    assert!(store.user("alice").await.unwrap().is_some());
}

async fn populate(store: &bunq_store::Store, users: &[&str]) {
    for user in users {
        store
            .put_access_token(user, &SecretString::from(format!("tok-{user}")))
            .await
            .unwrap();
        store
            .save(
                &CredentialId::new(*user),
                &context(
                    &format!("tok-{user}"),
                    &format!("inst-{user}"),
                    &format!("sess-{user}"),
                    1,
                ),
            )
            .await
            .unwrap();
    }
}

async fn assert_readable(store: &bunq_store::Store, users: &[&str]) {
    for user in users {
        assert_eq!(
            store
                .access_token(user)
                .await
                .unwrap()
                .unwrap()
                .expose_secret(),
            &format!("tok-{user}")
        );
        let ctx = store.load_context(user).await.unwrap().unwrap();
        assert_eq!(
            ctx.installation.token.expose_secret(),
            &format!("inst-{user}")
        );
        assert_eq!(
            ctx.session.unwrap().token.expose_secret(),
            &format!("sess-{user}")
        );
    }
}

async fn rotate_key_reseals_everything_under_the_new_key(db: TestDb) {
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    let users = ["alice", "bob", "carol"];
    let store = db.open(&old).await;
    populate(&store, &users).await;

    let report = store.rotate_key(&old, &new).await.unwrap();
    // Per user: token + context secret, installation token, private key + session token;
    // and the audit log's hashing key.
    assert_eq!(report.reencrypted, 16);
    assert_eq!(report.already_new, 0);
    assert_eq!(report.new_key_id, new.key_id());
    assert_eq!(store.key_id(), new.key_id());
    assert_readable(&store, &users).await;
    // New writes are sealed under the new key.
    store
        .put_access_token("dave", &SecretString::from("tok-dave"))
        .await
        .unwrap();
    let log = store.audit_log(None).await.unwrap();
    let rotated = log
        .iter()
        .find(|e| e.event == AuditEvent::KeyRotated)
        .unwrap();
    assert!(rotated.detail.contains(&old.key_id()) && rotated.detail.contains(&new.key_id()));
    store.close().await.unwrap();

    let store = db.open(&new).await;
    assert_readable(&store, &users).await;
    store.close().await.unwrap();
    let store = db.open(&old).await;
    assert!(matches!(
        store.access_token("dave").await,
        Err(StoreError::UnknownKeyId { .. })
    ));
    assert!(matches!(
        store.load_context("alice").await,
        Err(StoreError::UnknownKeyId { .. })
    ));
}

async fn rotate_key_resumes_a_partly_rotated_database(db: TestDb) {
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    let store = db.open(&old).await;
    populate(&store, &["alice", "bob"]).await;
    store.close().await.unwrap();
    // The operator switched the service to the new key before rotating: carol's token
    // is under the new key, the rest under the old.
    let store = db.open(&new).await;
    store
        .put_access_token("carol", &SecretString::from("tok-carol"))
        .await
        .unwrap();
    // A write that logs a user needs the audit key, still under the old key: refused
    // (nothing written) rather than logged without its user.
    assert!(matches!(
        store.mark_connected("carol", 1).await,
        Err(StoreError::UnknownKeyId {
            table: "store_keys",
            ..
        })
    ));

    let report = store.rotate_key(&old, &new).await.unwrap();
    // alice and bob (5 each) and the audit key; carol's token was already new.
    assert_eq!((report.reencrypted, report.already_new), (11, 1));
    assert_readable(&store, &["alice", "bob"]).await;
    store.mark_connected("carol", 1).await.unwrap();
    // Running it again is a no-op.
    let again = store.rotate_key(&old, &new).await.unwrap();
    assert_eq!((again.reencrypted, again.already_new), (0, 12));
}

async fn rotate_key_with_the_wrong_old_key_changes_nothing(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    populate(&store, &["alice", "bob"]).await;
    let not_old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    assert!(matches!(
        store.rotate_key(&not_old, &new).await,
        Err(StoreError::UnknownKeyId { .. })
    ));
    assert_eq!(store.key_id(), key.key_id());
    assert_readable(&store, &["alice", "bob"]).await;
    assert!(matches!(
        store.rotate_key(&key, &key).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(
        store
            .audit_log(None)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event != AuditEvent::KeyRotated)
    );
}

async fn check_master_key_refuses_a_wrong_key_at_start(db: TestDb) {
    let right = MasterKey::generate().unwrap();
    let wrong = MasterKey::generate().unwrap();
    let store = db.open(&right).await;
    // An empty database fits any key.
    store.check_master_key().await.unwrap();
    populate(&store, &["alice", "bob"]).await;
    store.check_master_key().await.unwrap();
    store.close().await.unwrap();

    let store = db.open(&wrong).await;
    match store.check_master_key().await {
        Err(StoreError::UnknownKeyId { key_id, held, .. }) => {
            assert_eq!(key_id, right.key_id());
            assert_eq!(held, wrong.key_id());
        }
        other => panic!("expected UnknownKeyId, got {other:?}"),
    }
    store.close().await.unwrap();

    // After a rotation the old key is refused and the new one accepted.
    let new = MasterKey::generate().unwrap();
    let store = db.open(&right).await;
    store.rotate_key(&right, &new).await.unwrap();
    store.close().await.unwrap();
    assert!(db.open(&right).await.check_master_key().await.is_err());
    db.open(&new).await.check_master_key().await.unwrap();
}

async fn check_master_key_reports_a_value_that_is_not_sealed(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let store = db.open(&key).await;
    populate(&store, &["alice"]).await;
    db.exec(&format!(
        "UPDATE users SET access_token = {} WHERE user_ref = 'alice'",
        db.bytes_literal(&[0, 1, 2, 3])
    ))
    .await
    .unwrap();
    assert!(matches!(
        store.check_master_key().await,
        Err(StoreError::Corrupt(_))
    ));
}

on_both_backends!(
    database_and_wal_hold_no_plaintext_secret,
    ciphertext_moved_to_another_row_or_column_fails_to_decrypt,
    wrong_master_key_is_a_clear_error,
    rotate_key_reseals_everything_under_the_new_key,
    rotate_key_resumes_a_partly_rotated_database,
    rotate_key_with_the_wrong_old_key_changes_nothing,
    check_master_key_refuses_a_wrong_key_at_start,
    check_master_key_reports_a_value_that_is_not_sealed,
);
