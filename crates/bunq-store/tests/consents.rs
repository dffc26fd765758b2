//! Consents and grant states: a new consent replaces a connection only once it works,
//! identities are compared, deletions win, revocations are durable.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::{Duration, SystemTime};

use bunq_oauth::{PendingState, StateContext, StateKey, StateStore as _};
use bunq_session::{ContextStore as _, CredentialId};
use bunq_store::{AuditEvent, ConsentCompletion, ConsentRefusal, MasterKey, Store, UserStatus};
use common::{TestDb, context};
use secrecy::{ExposeSecret as _, SecretString};

/// Issues and takes a state for `user_ref`, as a callback does before its code exchange.
async fn taken_state(store: &Store, user_ref: &str, key: &str) -> StateKey {
    let now = SystemTime::now();
    let pending = PendingState {
        key: StateKey(key.to_owned()),
        context: StateContext {
            user_ref: user_ref.to_owned(),
            return_to: None,
            replace: false,
        },
        created_at: now,
        expires_at: now + Duration::from_secs(600),
    };
    store.insert(&pending).await.unwrap();
    store.take(&pending.key).await.unwrap();
    pending.key
}

async fn a_first_consent_connects_under_its_own_credential(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let state = taken_state(&store, "alice", "s1").await;
    let consent = store
        .add_consent(&state, "alice", &SecretString::from("tok-1"), false)
        .await
        .unwrap()
        .unwrap();
    assert!(consent.credential.starts_with("alice/"));
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(user.status, UserStatus::Connecting);
    assert_eq!(user.pending_consents, 1);
    assert_eq!(user.credential, None);
    assert_eq!(
        store.pending_consents().await.unwrap(),
        vec![consent.clone()]
    );
    assert_eq!(
        store
            .consent_token(&consent.credential)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-1"
    );

    let done = store
        .complete_consent(&consent.credential, 77, Some(7))
        .await
        .unwrap();
    let ConsentCompletion::Connected { user, replaced } = done else {
        panic!("expected Connected, got {done:?}");
    };
    assert_eq!(replaced, None);
    assert_eq!(user.status, UserStatus::Connected);
    assert_eq!(user.bunq_user_id, Some(77));
    assert_eq!(user.granted_by_user_id, Some(7));
    assert_eq!(
        user.credential.as_deref(),
        Some(consent.credential.as_str())
    );
    assert_eq!(user.pending_consents, 0);
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-1"
    );
    assert!(store.pending_consents().await.unwrap().is_empty());
    assert_eq!(
        store.connected_credentials().await.unwrap(),
        vec![("alice".to_owned(), consent.credential.clone())]
    );
}

async fn a_new_consent_keeps_the_old_connection_until_it_completes_then_replaces_it(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let s1 = taken_state(&store, "alice", "s1").await;
    let first = store
        .add_consent(&s1, "alice", &SecretString::from("tok-1"), false)
        .await
        .unwrap()
        .unwrap();
    let first_cred = CredentialId::new(first.credential.as_str());
    store
        .save(&first_cred, &context("tok-1", "inst-1", "sess-1", 1))
        .await
        .unwrap();
    store
        .complete_consent(&first.credential, 77, Some(7))
        .await
        .unwrap();

    let s2 = taken_state(&store, "alice", "s2").await;
    let second = store
        .add_consent(&s2, "alice", &SecretString::from("tok-2"), false)
        .await
        .unwrap()
        .unwrap();
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(
        user.status,
        UserStatus::Connected,
        "the old connection serves on"
    );
    assert_eq!(user.credential.as_deref(), Some(first.credential.as_str()));
    assert_eq!(user.pending_consents, 1);
    assert_eq!(user.live_credential(), first.credential);
    assert_eq!(
        store.consent_credentials("alice").await.unwrap(),
        vec![second.credential.clone()]
    );
    assert!(store.consent_credentials("bob").await.unwrap().is_empty());

    let done = store
        .complete_consent(&second.credential, 78, Some(7))
        .await
        .unwrap();
    let ConsentCompletion::Connected { user, replaced } = done else {
        panic!("expected Connected, got {done:?}");
    };
    assert_eq!(replaced.as_deref(), Some(first.credential.as_str()));
    assert_eq!(user.credential.as_deref(), Some(second.credential.as_str()));
    assert!(
        store.load(&first_cred).await.unwrap().is_none(),
        "the replaced context is deleted"
    );
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-2"
    );
}

async fn a_consent_from_another_bunq_account_is_refused_unless_it_may_replace(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let s1 = taken_state(&store, "alice", "s1").await;
    let first = store
        .add_consent(&s1, "alice", &SecretString::from("tok-1"), false)
        .await
        .unwrap()
        .unwrap();
    store
        .complete_consent(&first.credential, 77, Some(7))
        .await
        .unwrap();

    let s2 = taken_state(&store, "alice", "s2").await;
    let other = store
        .add_consent(&s2, "alice", &SecretString::from("tok-mallory"), false)
        .await
        .unwrap()
        .unwrap();
    let cred = CredentialId::new(other.credential.as_str());
    store
        .save(&cred, &context("tok-mallory", "inst", "sess", 2))
        .await
        .unwrap();
    assert_eq!(
        store
            .complete_consent(&other.credential, 90, Some(9))
            .await
            .unwrap(),
        ConsentCompletion::IdentityMismatch {
            expected: 7,
            got: 9
        }
    );
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(user.granted_by_user_id, Some(7));
    assert_eq!(user.credential.as_deref(), Some(first.credential.as_str()));
    assert_eq!(
        user.last_consent.as_ref().map(|(w, _)| w.as_str()),
        Some("identity_mismatch")
    );
    assert!(
        store.load(&cred).await.unwrap().is_none(),
        "nothing of it is kept"
    );
    assert!(
        store
            .consent_token(&other.credential)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .access_token("alice")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "tok-1"
    );
    let log = store.audit_log(Some("alice")).await.unwrap();
    assert!(log.iter().any(|e| e.event == AuditEvent::IdentityMismatch));

    let s3 = taken_state(&store, "alice", "s3").await;
    let replacing = store
        .add_consent(&s3, "alice", &SecretString::from("tok-new-owner"), true)
        .await
        .unwrap()
        .unwrap();
    let done = store
        .complete_consent(&replacing.credential, 91, Some(9))
        .await
        .unwrap();
    assert!(
        matches!(done, ConsentCompletion::Connected { .. }),
        "{done:?}"
    );
    assert_eq!(
        store
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .granted_by_user_id,
        Some(9)
    );
}

async fn a_deletion_after_the_state_was_taken_wins_over_the_callback(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let s1 = taken_state(&store, "alice", "s1").await;
    store.delete_user("alice").await.unwrap();
    assert_eq!(
        store
            .add_consent(&s1, "alice", &SecretString::from("tok"), false)
            .await
            .unwrap(),
        None
    );
    assert!(store.user("alice").await.unwrap().is_none());

    // And a deletion while the consent is connecting: its completion finds nothing.
    let s2 = taken_state(&store, "bob", "s2").await;
    let consent = store
        .add_consent(&s2, "bob", &SecretString::from("tok"), false)
        .await
        .unwrap()
        .unwrap();
    let cred = CredentialId::new(consent.credential.as_str());
    store
        .save(&cred, &context("tok", "inst", "sess", 3))
        .await
        .unwrap();
    assert!(store.delete_user("bob").await.unwrap());
    assert!(
        store.load(&cred).await.unwrap().is_none(),
        "its context is deleted too"
    );
    assert_eq!(
        store
            .complete_consent(&consent.credential, 1, Some(1))
            .await
            .unwrap(),
        ConsentCompletion::Gone
    );
    assert!(store.user("bob").await.unwrap().is_none());
}

async fn revocation_is_durable_and_only_for_the_live_credential(db: TestDb) {
    let key = MasterKey::generate().unwrap();
    let credential = {
        let store = db.open(&key).await;
        let s1 = taken_state(&store, "alice", "s1").await;
        let consent = store
            .add_consent(&s1, "alice", &SecretString::from("tok"), false)
            .await
            .unwrap()
            .unwrap();
        store
            .complete_consent(&consent.credential, 5, Some(5))
            .await
            .unwrap();
        assert!(
            !store
                .mark_revoked("alice", "alice/stale", "old")
                .await
                .unwrap()
        );
        assert!(
            store
                .mark_revoked(
                    "alice",
                    &consent.credential,
                    "bunq refused the access token"
                )
                .await
                .unwrap()
        );
        consent.credential
    };
    let store = db.open(&key).await;
    let user = store.user("alice").await.unwrap().unwrap();
    assert_eq!(user.status, UserStatus::Revoked);
    assert_eq!(
        user.status_reason.as_deref(),
        Some("bunq refused the access token")
    );
    assert!(store.connected_credentials().await.unwrap().is_empty());
    assert!(
        !store
            .mark_revoked("alice", &credential, "again")
            .await
            .unwrap()
    );
    let log = store.audit_log(Some("alice")).await.unwrap();
    assert_eq!(
        log.iter()
            .filter(|e| e.event == AuditEvent::Revoked)
            .count(),
        1
    );

    // Consenting again makes the user connecting, then connected.
    let s2 = taken_state(&store, "alice", "s2").await;
    let consent = store
        .add_consent(&s2, "alice", &SecretString::from("tok-2"), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().status,
        UserStatus::Connecting
    );
    store
        .complete_consent(&consent.credential, 6, Some(5))
        .await
        .unwrap();
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().status,
        UserStatus::Connected
    );
}

async fn a_refused_consent_sets_the_status_only_without_a_live_connection(db: TestDb) {
    let store = db.open(&MasterKey::generate().unwrap()).await;
    let s1 = taken_state(&store, "alice", "s1").await;
    let consent = store
        .add_consent(&s1, "alice", &SecretString::from("tok"), false)
        .await
        .unwrap()
        .unwrap();
    store
        .record_consent_attempt(&consent.credential, "bunq unavailable")
        .await
        .unwrap();
    assert_eq!(store.pending_consents().await.unwrap()[0].attempts, 1);
    let user = store
        .refuse_consent(
            &consent.credential,
            ConsentRefusal::Failed,
            "bunq answered 400",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.status, UserStatus::Failed);
    assert_eq!(user.status_reason.as_deref(), Some("bunq answered 400"));
    assert!(store.pending_consents().await.unwrap().is_empty());

    // A connected user stays connected when a later consent is refused.
    let s2 = taken_state(&store, "bob", "s2").await;
    let c = store
        .add_consent(&s2, "bob", &SecretString::from("tok"), false)
        .await
        .unwrap()
        .unwrap();
    store
        .complete_consent(&c.credential, 1, Some(1))
        .await
        .unwrap();
    let s3 = taken_state(&store, "bob", "s3").await;
    let c2 = store
        .add_consent(&s3, "bob", &SecretString::from("tok-2"), false)
        .await
        .unwrap()
        .unwrap();
    let user = store
        .refuse_consent(&c2.credential, ConsentRefusal::Revoked, "refused")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.status, UserStatus::Connected);
    assert_eq!(
        user.last_consent.as_ref().map(|(w, _)| w.as_str()),
        Some("revoked")
    );
}

on_both_backends!(
    a_first_consent_connects_under_its_own_credential,
    a_new_consent_keeps_the_old_connection_until_it_completes_then_replaces_it,
    a_consent_from_another_bunq_account_is_refused_unless_it_may_replace,
    a_deletion_after_the_state_was_taken_wins_over_the_callback,
    revocation_is_durable_and_only_for_the_live_credential,
    a_refused_consent_sets_the_status_only_without_a_live_connection,
);
