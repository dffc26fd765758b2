//! Users, access tokens, contexts, deletion and the audit log.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use bunq_session::{ContextStore as _, CredentialId};
use bunq_store::{AuditEvent, MasterKey, StoreError, UserStatus};
use common::{TestDb, context};
use secrecy::{ExposeSecret as _, SecretString};

async fn new_user_is_connecting_until_marked_connected(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    assert!(store.user("alice").await.unwrap().is_none());
    assert!(store.access_token("alice").await.unwrap().is_none());
    assert!(!store.has_users().await.unwrap());

    store
        .put_access_token("alice", &SecretString::from("tok-alice-1"))
        .await
        .unwrap();
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(user.status, UserStatus::Connecting);
    // A user still connecting counts: a session may have been opened for it.
    assert!(store.has_users().await.unwrap());
    assert_eq!(user.bunq_user_id, None);
    assert_eq!(user.connected_at, None);
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-alice-1"
    );

    let connected = store.mark_connected("alice", 4242).await.unwrap();
    assert_eq!(connected.status, UserStatus::Connected);
    assert_eq!(connected.bunq_user_id, Some(4242));
    assert!(connected.connected_at.is_some());
    assert_eq!(store.user("alice").await.unwrap().unwrap(), connected);
    assert_eq!(store.count_users().await.unwrap(), 1);
    assert_eq!(store.count_connected_users().await.unwrap(), 1);

    // A new token is not yet a working connection.
    store
        .put_access_token("alice", &SecretString::from("tok-alice-2"))
        .await
        .unwrap();
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(user.status, UserStatus::Connecting);
    assert_eq!(user.bunq_user_id, Some(4242));
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-alice-2"
    );
    assert_eq!(store.count_users().await.unwrap(), 1);

    let log = store.audit_log(Some("alice")).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].event, AuditEvent::Connect);
    assert_eq!(log[0].detail, "bunq_user_id=4242");
}

async fn mark_connected_needs_a_user_row(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    assert!(matches!(
        store.mark_connected("ghost", 1).await,
        Err(StoreError::UnknownUser { user_ref }) if user_ref == "ghost"
    ));
    assert!(store.audit_log(None).await.unwrap().is_empty());
}

async fn delete_user_removes_token_context_and_session_but_keeps_audit(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    for user in ["alice", "bob"] {
        store
            .put_access_token(user, &SecretString::from(format!("tok-{user}")))
            .await
            .unwrap();
        store
            .save(
                &CredentialId::new(user),
                &context(&format!("tok-{user}"), "inst", "sess", 7),
            )
            .await
            .unwrap();
        store.mark_connected(user, 1).await.unwrap();
    }

    assert!(store.delete_user("alice").await.unwrap());
    assert!(store.user("alice").await.unwrap().is_none());
    assert!(store.access_token("alice").await.unwrap().is_none());
    assert!(
        store
            .load(&CredentialId::new("alice"))
            .await
            .unwrap()
            .is_none()
    );
    for table in [
        "users WHERE user_ref",
        "contexts WHERE credential",
        "sessions WHERE credential",
    ] {
        let n = db
            .count(&format!("SELECT COUNT(*) FROM {table} = 'alice'"))
            .await;
        assert_eq!(n, 0, "{table}");
    }
    // Bob is untouched.
    assert!(
        store
            .load(&CredentialId::new("bob"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.count_users().await.unwrap(), 1);

    let events: Vec<_> = store
        .audit_log(Some("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            AuditEvent::SessionCreated,
            AuditEvent::Connect,
            AuditEvent::Disconnect
        ]
    );
    // Deleting again finds nothing and logs nothing.
    assert!(!store.delete_user("alice").await.unwrap());
    assert_eq!(store.audit_log(Some("alice")).await.unwrap().len(), 3);
    assert!(store.has_users().await.unwrap());
    assert!(store.delete_user("bob").await.unwrap());
    assert!(!store.has_users().await.unwrap());
}

async fn audit_log_is_append_only_even_for_raw_sql(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    store
        .put_access_token("alice", &SecretString::from("t"))
        .await
        .unwrap();
    store.mark_connected("alice", 1).await.unwrap();
    assert!(db.exec("DELETE FROM audit_log").await.is_err());
    assert!(db.exec("UPDATE audit_log SET detail = 'x'").await.is_err());
    if db.is_postgres() {
        // TRUNCATE skips row triggers; a statement trigger refuses it too.
        assert!(db.exec("TRUNCATE audit_log").await.is_err());
    }
    assert_eq!(store.audit_log(None).await.unwrap().len(), 1);
}

async fn debug_output_never_shows_secrets(db: TestDb) {
    let key = MasterKey::from_bytes([0x41; 32]);
    let store = db.open(&key).await;
    store
        .put_access_token("alice", &SecretString::from("tok-SECRET-alice"))
        .await
        .unwrap();
    let user = store.mark_connected("alice", 9).await.unwrap();
    store
        .save(
            &CredentialId::new("alice"),
            &context("tok-SECRET-alice", "inst-SECRET", "sess-SECRET", 5),
        )
        .await
        .unwrap();
    let loaded = store
        .load(&CredentialId::new("alice"))
        .await
        .unwrap()
        .unwrap();
    let token = store.access_token("alice").await.unwrap().unwrap();
    let log = store.audit_log(None).await.unwrap();
    let text = format!("{store:?} {key:?} {user:?} {loaded:?} {token:?} {log:?}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(
        !text.contains("AAAA"),
        "master key bytes (base64) leaked: {text}"
    );
    assert!(!text.contains("65, 65"), "master key bytes leaked: {text}");
    assert!(text.contains(&key.key_id()));
}

async fn delete_user_by_names_the_actor_in_the_audit_detail(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    store
        .put_access_token("carol", &SecretString::from("tok-carol"))
        .await
        .unwrap();
    assert!(
        store
            .delete_user_by("carol", Some("ops-key"))
            .await
            .unwrap()
    );
    let log = store.audit_log(Some("carol")).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.event, AuditEvent::Disconnect);
    assert!(last.detail.ends_with(" actor=ops-key"), "{}", last.detail);
}

on_both_backends!(
    new_user_is_connecting_until_marked_connected,
    mark_connected_needs_a_user_row,
    delete_user_removes_token_context_and_session_but_keeps_audit,
    audit_log_is_append_only_even_for_raw_sql,
    debug_output_never_shows_secrets,
    delete_user_by_names_the_actor_in_the_audit_detail,
);
