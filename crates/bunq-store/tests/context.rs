//! The `bunq_session::ContextStore` implementation.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use bunq_session::{ContextStore as _, CredentialId, UserKind};
use bunq_store::{AuditEvent, MasterKey};
use common::{TestDb, context, installation_key, server_key};
use secrecy::ExposeSecret as _;

async fn saved_context_loads_back_identically_after_reopen(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let cred = CredentialId::new("alice");
    let saved = context("access-token", "installation-token", "session-token", 77);
    {
        let store = db.open(&key).await;
        assert!(store.load(&cred).await.unwrap().is_none());
        store.save(&cred, &saved).await.unwrap();
        store.close().await.unwrap();
    }
    // A fresh store has no parsed-key cache: this load parses from the database.
    let store = db.open(&key).await;
    let loaded = store.load(&cred).await.unwrap().unwrap();
    assert_eq!(loaded.api_base, saved.api_base);
    assert_eq!(loaded.secret.expose_secret(), "access-token");
    assert_eq!(loaded.installation.id, 11);
    assert_eq!(
        loaded.installation.token.expose_secret(),
        "installation-token"
    );
    assert_eq!(
        loaded.installation.private_key.public_key_pem(),
        installation_key().public_key_pem()
    );
    // The loaded key signs like the saved one (PKCS#1 v1.5 is deterministic).
    assert_eq!(
        loaded.installation.private_key.sign_body(b"{}"),
        installation_key().sign_body(b"{}")
    );
    assert_eq!(
        loaded.installation.server_public_key.to_pem().unwrap(),
        server_key().public_key().to_pem().unwrap()
    );
    assert_eq!(loaded.device.unwrap().id, 22);
    let session = loaded.session.unwrap();
    let want = saved.session.unwrap();
    assert_eq!(session.id, 77);
    assert_eq!(session.token.expose_secret(), "session-token");
    assert_eq!(session.user_id, want.user_id);
    assert_eq!(session.kind, UserKind::UserApiKey);
    assert_eq!(session.expires_at, want.expires_at);
}

async fn context_without_user_row_is_stored_for_api_key_credentials(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let cred = CredentialId::new("xtask:sandbox-api-key");
    let mut ctx = context("sandbox_api_key", "inst", "sess", 1);
    ctx.device = None;
    ctx.session = None;
    store.save(&cred, &ctx).await.unwrap();
    let loaded = store.load(&cred).await.unwrap().unwrap();
    assert!(loaded.device.is_none());
    assert!(loaded.session.is_none());
    assert_eq!(loaded.secret.expose_secret(), "sandbox_api_key");
    assert_eq!(store.count_users().await.unwrap(), 0);
    assert!(store.audit_log(None).await.unwrap().is_empty());
}

async fn session_created_is_audited_once_per_new_session_id(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let cred = CredentialId::new("alice");
    store
        .save(&cred, &context("a", "i", "s1", 1))
        .await
        .unwrap();
    // Same session saved again (e.g. a device change): no new audit row.
    store
        .save(&cred, &context("a", "i", "s1", 1))
        .await
        .unwrap();
    store
        .save(&cred, &context("a", "i", "s2", 2))
        .await
        .unwrap();
    let mut without = context("a", "i", "s2", 2);
    without.session = None;
    store.save(&cred, &without).await.unwrap();
    assert!(store.load(&cred).await.unwrap().unwrap().session.is_none());

    let log = store.audit_log(Some("alice")).await.unwrap();
    let details: Vec<_> = log.iter().map(|e| (e.event, e.detail.as_str())).collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details
            .iter()
            .all(|(e, _)| *e == AuditEvent::SessionCreated)
    );
    assert!(details[0].1.starts_with("session_id=1 "));
    assert!(details[1].1.starts_with("session_id=2 "));
    assert!(
        !log.iter()
            .any(|e| e.detail.contains("s1") || e.detail.contains("s2"))
    );
}

async fn token_and_context_read_together(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    store
        .put_access_token("alice", &secrecy::SecretString::from("tok"))
        .await
        .unwrap();
    store
        .save(&CredentialId::new("alice"), &context("tok", "i", "s", 3))
        .await
        .unwrap();
    let (token, ctx) = store.token_and_context("alice").await.unwrap();
    assert_eq!(token.unwrap().expose_secret(), "tok");
    assert_eq!(ctx.unwrap().session.unwrap().id, 3);
    let (token, ctx) = store.token_and_context("nobody").await.unwrap();
    assert!(token.is_none() && ctx.is_none());
}

async fn concurrent_reads_and_writes_all_succeed(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let cred = CredentialId::new(format!("user-{i}"));
            store.save(&cred, &context("a", "i", "s", i)).await.unwrap();
            for _ in 0..5 {
                let ctx = store.load(&cred).await.unwrap().unwrap();
                assert_eq!(ctx.session.unwrap().id, i);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn a_psd2_providers_registration_is_kept_with_its_context(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let cred = CredentialId::new("psd2-provider");
    let mut saved = context("credential-token", "installation-token", "session-token", 5);
    saved.psd2 = Some(bunq_session::Psd2Registration {
        credential_id: 4242,
        certificate_sha256: "ab".repeat(32),
    });
    {
        let store = db.open(&key).await;
        store.save(&cred, &saved).await.unwrap();
    }
    let store = db.open(&key).await;
    let loaded = store.load(&cred).await.unwrap().unwrap();
    assert_eq!(loaded.psd2, saved.psd2);
    // And a context without one stays without.
    saved.psd2 = None;
    store.save(&cred, &saved).await.unwrap();
    assert_eq!(store.load(&cred).await.unwrap().unwrap().psd2, None);
}

on_both_backends!(
    a_psd2_providers_registration_is_kept_with_its_context,
    saved_context_loads_back_identically_after_reopen,
    context_without_user_row_is_stored_for_api_key_credentials,
    session_created_is_audited_once_per_new_session_id,
    token_and_context_read_together,
    concurrent_reads_and_writes_all_succeed,
);
