//! A PSD2 provider connects by its certificate (`SessionManager::connect_psd2`) against
//! bunq-testkit: installation, payment-service-provider-credential, device-server and
//! session-server, a `UserPaymentServiceProvider` session; the context is reused on the
//! next connect, and a context stored before the `psd2` field still loads.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bunq_session::{
    ApiContext, ApiRequest, BunqClient, ClientConfig, ContextStore as _, CredentialId, Environment,
    MemoryContextStore, RateLimitPolicy, SessionManager, SessionManagerConfig, UserKind,
};
use bunq_testkit::{FakeBunq, TestCertificate};
use secrecy::ExposeSecret as _;

fn manager(
    fake: &FakeBunq,
    store: &Arc<MemoryContextStore>,
) -> SessionManager<Arc<MemoryContextStore>> {
    let config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .rate_limits(RateLimitPolicy::disabled());
    SessionManager::new(
        BunqClient::new(config).unwrap(),
        Arc::clone(store),
        SessionManagerConfig::default(),
    )
}

#[tokio::test]
async fn provider_connects_by_certificate_and_reuses_its_context() {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(&fake, &store);
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let psd2 = provider.psd2(&[&provider]).unwrap();
    let id = CredentialId::new("provider");

    let context = m.connect_psd2(&id, &psd2).await.unwrap();
    let session = context.session.clone().unwrap();
    assert_eq!(session.kind, UserKind::UserPaymentServiceProvider);
    assert_eq!(
        Some(session.user_id),
        fake.psd2_provider(provider.certificate())
    );
    let registration = context.psd2.clone().unwrap();
    assert_eq!(
        registration.certificate_sha256,
        provider.certificate().sha256_fingerprint()
    );
    for endpoint in [
        "POST /installation",
        "POST /payment-service-provider-credential",
        "POST /device-server",
        "POST /session-server",
    ] {
        assert_eq!(fake.calls(endpoint), 1, "{endpoint}");
    }
    // The secret is the credential's token value, kept out of Debug.
    assert_eq!(context.secret.expose_secret().len(), 64);
    assert!(!format!("{context:?}").contains(context.secret.expose_secret()));

    // Calls as the provider go through the session like any other.
    let user = m
        .request(&id, ApiRequest::get(format!("user/{}", session.user_id)))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&user.body).unwrap();
    assert!(body["Response"][0]["UserPaymentServiceProvider"].is_object());

    // Another manager on the same store (a restart): nothing new at bunq.
    let again = manager(&fake, &store);
    let reused = again.connect_psd2(&id, &psd2).await.unwrap();
    assert_eq!(
        reused.secret.expose_secret(),
        context.secret.expose_secret()
    );
    assert_eq!(fake.calls("POST /payment-service-provider-credential"), 1);
    assert_eq!(fake.calls("POST /installation"), 1);
    assert_eq!(fake.calls("POST /session-server"), 1);

    // Another certificate under the same name is registered, not mistaken for it.
    let successor = TestCertificate::self_signed("Test AISP B.V. (2027)").unwrap();
    let renewed = again
        .connect_psd2(&id, &successor.psd2(&[&successor]).unwrap())
        .await
        .unwrap();
    assert_eq!(fake.calls("POST /payment-service-provider-credential"), 2);
    assert_ne!(
        renewed.psd2.unwrap().certificate_sha256,
        registration.certificate_sha256
    );
    assert_eq!(
        renewed.session.unwrap().user_id,
        fake.psd2_provider(successor.certificate()).unwrap()
    );
}

#[tokio::test]
async fn the_psd2_field_is_optional_in_stored_contexts() {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(&fake, &store);
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let id = CredentialId::new("provider");
    m.connect_psd2(&id, &provider.psd2(&[&provider]).unwrap())
        .await
        .unwrap();
    let stored = store.load(&id).await.unwrap().unwrap();

    let json = serde_json::to_value(&stored).unwrap();
    assert!(json["psd2"]["credential_id"].is_u64());
    let back: ApiContext = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.psd2, stored.psd2);

    // A context written before the field existed (an API key's, say) loads with none.
    let mut old = json;
    old.as_object_mut().unwrap().remove("psd2");
    let back: ApiContext = serde_json::from_value(old).unwrap();
    assert_eq!(back.psd2, None);
    // And an API key's context is written without it.
    let user = fake.create_sandbox_user();
    let key_id = CredentialId::new("person");
    let person = m
        .connect(&key_id, secrecy::SecretString::from(user.api_key))
        .await
        .unwrap();
    assert!(serde_json::to_value(&person).unwrap().get("psd2").is_none());
}

#[tokio::test]
async fn the_credential_call_alone_keeps_its_token_out_of_debug() {
    let fake = FakeBunq::start().await.unwrap();
    let config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .rate_limits(RateLimitPolicy::disabled());
    let client = BunqClient::new(config).unwrap();
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let psd2 = provider.psd2(&[&provider]).unwrap();

    let installation = client.installation().await.unwrap();
    let credential = client
        .payment_service_provider_credential(&installation, &psd2)
        .await
        .unwrap();
    assert_eq!(credential.status.as_deref(), Some("ACTIVE"));
    let debug = format!("{credential:?}");
    assert!(
        !debug.contains(credential.token_value.expose_secret()),
        "{debug}"
    );
}

#[tokio::test]
async fn a_refused_credential_is_registered_again_from_the_certificate() {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let psd2 = provider.psd2(&[&provider]).unwrap();
    let id = CredentialId::new("provider");
    let first = manager(&fake, &store)
        .connect_psd2(&id, &psd2)
        .await
        .unwrap();

    // A stored context whose credential bunq no longer knows (withdrawn, say), before
    // its device was registered: device-server refuses it.
    let mut stale = first.clone();
    stale.secret = secrecy::SecretString::from("a-credential-bunq-withdrew".to_owned());
    stale.device = None;
    stale.session = None;
    store.save(&id, &stale).await.unwrap();

    let renewed = manager(&fake, &store)
        .connect_psd2(&id, &psd2)
        .await
        .unwrap();
    assert_eq!(fake.calls("POST /payment-service-provider-credential"), 2);
    assert_ne!(
        renewed.psd2.as_ref().unwrap().credential_id,
        first.psd2.as_ref().unwrap().credential_id
    );
    assert_ne!(renewed.secret.expose_secret(), "a-credential-bunq-withdrew");
    let session = renewed.session.clone().unwrap();
    assert_eq!(session.kind, UserKind::UserPaymentServiceProvider);
    // The same provider, and the store holds the new credential.
    assert_eq!(
        Some(session.user_id),
        first.session.as_ref().map(|s| s.user_id)
    );
    let stored = store.load(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.secret.expose_secret(),
        renewed.secret.expose_secret()
    );
}
