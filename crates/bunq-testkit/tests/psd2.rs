//! `POST /payment-service-provider-credential`: a PSD2 provider's certificate becomes a
//! credential, its session a `UserPaymentServiceProvider` that owns an OAuth client; a
//! wrong signature, a certificate not matching its key, and a broken chain are refused.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_signing::public_key_signature_message;
use bunq_testkit::{FakeBunq, TestCertificate};
use common::{Client, Response};
use serde_json::{Value, json};

const ENDPOINT: &str = "/payment-service-provider-credential";

/// The three fields, the signature made by `signer` (the certificate's key unless a
/// test says otherwise) over `client`'s installation.
fn body(
    client: &Client,
    certificate: &TestCertificate,
    chain: &[&TestCertificate],
    signer: &TestCertificate,
) -> Value {
    let token = client.token.as_deref().unwrap();
    let message = public_key_signature_message(&client.key.public_key_pem(), token);
    json!({
        "client_payment_service_provider_certificate": certificate.certificate_pem(),
        "client_payment_service_provider_certificate_chain":
            chain.iter().map(|c| c.certificate_pem()).collect::<String>(),
        "client_public_key_signature": signer.key().sign_body(message.as_bytes()).as_str(),
    })
}

async fn installed(fake: &FakeBunq) -> Client {
    let mut client = Client::new(fake.api_base());
    client.install().await;
    client
}

fn token_value(r: &Response) -> String {
    r.item("CredentialPasswordIp")["token_value"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn self_signed_provider_gets_a_credential_a_provider_session_and_an_oauth_client() {
    let fake = FakeBunq::start().await.unwrap();
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let mut client = installed(&fake).await;

    let r = client
        .post(ENDPOINT, body(&client, &provider, &[&provider], &provider))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let credential = r.item("CredentialPasswordIp");
    assert_eq!(credential["status"], "ACTIVE");
    assert!(credential["id"].as_u64().is_some());
    let secret = token_value(&r);
    assert_eq!(secret.len(), 64);
    let provider_id = fake.psd2_provider(provider.certificate()).unwrap();

    // The token value plays the API key on the same installation.
    let d = client.device(&secret).await;
    assert_eq!(d.status, 200, "{}", d.body);
    let s = client.session(&secret).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let user = s.item("UserPaymentServiceProvider");
    assert_eq!(user["id"].as_u64(), Some(provider_id));
    assert!(user["session_timeout"].as_u64().unwrap() > 0);
    assert!(
        user["display_name"]
            .as_str()
            .unwrap()
            .contains("Test AISP B.V.")
    );
    client.token = Some(s.item("Token")["token"].as_str().unwrap().to_owned());

    // As that provider: an OAuth client, as a person would register it.
    let created = client
        .post(
            &format!("/user/{provider_id}/oauth-client"),
            json!({"status": "ACTIVE"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let listed = client
        .get(&format!("/user/{provider_id}/oauth-client"))
        .await;
    assert_eq!(listed.body["Response"].as_array().unwrap().len(), 1);

    // The same certificate again, from another installation: a new credential of the
    // same provider.
    let again = installed(&fake).await;
    let r = again
        .post(ENDPOINT, body(&again, &provider, &[&provider], &provider))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(token_value(&r), secret);
    assert_eq!(
        fake.psd2_provider(provider.certificate()),
        Some(provider_id)
    );
}

#[tokio::test]
async fn certificate_issued_by_a_ca_is_accepted_with_its_chain() {
    let fake = FakeBunq::start().await.unwrap();
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let intermediate = TestCertificate::issued_by("Test QTSP issuing CA", &root, true).unwrap();
    let provider = TestCertificate::issued_by("Test PISP B.V.", &intermediate, false).unwrap();
    let client = installed(&fake).await;
    let r = client
        .post(
            ENDPOINT,
            body(&client, &provider, &[&intermediate, &root], &provider),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(fake.psd2_provider(provider.certificate()).is_some());
}

/// Each refusal: a signed 400 naming the reason (returned), and no provider made.
async fn refused(
    fake: &FakeBunq,
    client: &Client,
    body: Value,
    certificate: &TestCertificate,
) -> String {
    let r = client.post(ENDPOINT, body).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(fake.psd2_provider(certificate.certificate()), None);
    r.error().to_owned()
}

#[tokio::test]
async fn wrong_signature_mismatched_key_and_broken_chain_are_refused() {
    let fake = FakeBunq::start().await.unwrap();
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let stranger = TestCertificate::self_signed("Someone else").unwrap();
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let intermediate = TestCertificate::issued_by("Test QTSP issuing CA", &root, true).unwrap();
    let issued = TestCertificate::issued_by("Test PISP B.V.", &intermediate, false).unwrap();
    let client = installed(&fake).await;

    // Signed over another installation's token.
    let mut wrong = body(&client, &provider, &[&provider], &provider);
    let other = installed(&fake).await;
    wrong["client_public_key_signature"] =
        body(&other, &provider, &[&provider], &provider)["client_public_key_signature"].clone();
    let error = refused(&fake, &client, wrong, &provider).await;
    assert!(error.contains("signature"), "{error}");

    // The certificate is not the signing key's.
    let error = refused(
        &fake,
        &client,
        body(&client, &provider, &[&provider], &stranger),
        &provider,
    )
    .await;
    assert!(error.contains("signature"), "{error}");

    // Chains that do not lead to the certificate, or not to a root.
    let error = refused(
        &fake,
        &client,
        body(&client, &provider, &[&stranger], &provider),
        &provider,
    )
    .await;
    assert!(error.contains("chain"), "{error}");
    refused(
        &fake,
        &client,
        body(&client, &issued, &[&intermediate], &issued),
        &issued,
    )
    .await;
    refused(
        &fake,
        &client,
        body(&client, &issued, &[&root, &intermediate], &issued),
        &issued,
    )
    .await;
    let mut empty_chain = body(&client, &provider, &[&provider], &provider);
    empty_chain["client_payment_service_provider_certificate_chain"] = json!("");
    refused(&fake, &client, empty_chain, &provider).await;
    let mut not_a_certificate = body(&client, &provider, &[&provider], &provider);
    not_a_certificate["client_payment_service_provider_certificate"] =
        json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    refused(&fake, &client, not_a_certificate, &provider).await;

    // Unsigned: refused before any of it is read, as every installation-token call.
    let mut unsigned = installed(&fake).await;
    unsigned.sign = false;
    let r = unsigned
        .post(
            ENDPOINT,
            body(&unsigned, &provider, &[&provider], &provider),
        )
        .await;
    assert_eq!(r.status, 466, "{}", r.body);
    assert_eq!(fake.psd2_provider(provider.certificate()), None);
    assert_eq!(fake.calls("POST /payment-service-provider-credential"), 8);
}
