//! Set-up shared by the tests: a `UserApi` against the fake bunq, and one against a
//! mockito server that answers as bunq does (signed with the fixture server key).
#![allow(clippy::unwrap_used, dead_code)]

use std::time::{Duration, SystemTime};

use bunq_api::UserApi;
use bunq_session::{
    ApiContext, BunqClient, ClientConfig, ContextStore as _, CredentialId, Device, Environment,
    Installation, MemoryContextStore, RateLimitPolicy, Session, SessionManager,
    SessionManagerConfig, UserKind,
};
use bunq_signing::{PrivateKey, PublicKey};
use bunq_testkit::{FakeBunq, SandboxUser};
use mockito::{Matcher, Mock, Request, ServerGuard};
use secrecy::SecretString;

/// The session token of the mockito set-up.
pub const SESSION_TOKEN: &str = "session-token-api";
/// The user id the mockito session acts as (paths start `user/7731/`).
pub const USER_ID: u64 = 7731;

pub fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn manager(api_base: String) -> SessionManager<MemoryContextStore> {
    let config = ClientConfig::new(Environment::Custom { api_base })
        .rate_limits(RateLimitPolicy::disabled())
        .request_timeout(Duration::from_secs(20));
    SessionManager::new(
        BunqClient::new(config).unwrap(),
        MemoryContextStore::new(),
        SessionManagerConfig::default(),
    )
}

/// A fake bunq, one of its sandbox users, and that user's `UserApi` through an OAuth
/// grant (what an application holds: a `UserApiKey` session acting on the user's
/// accounts).
pub async fn fake_user() -> (FakeBunq, SandboxUser, UserApi<MemoryContextStore>) {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let token = fake.grant_oauth_access(user.user_id);
    let manager = manager(fake.api_base());
    let credential = CredentialId::new("end-user");
    manager
        .connect(&credential, SecretString::from(token))
        .await
        .unwrap();
    (fake, user, UserApi::new(manager, credential))
}

/// A mockito server and a `UserApi` whose stored context holds a live session for it:
/// the first call goes straight to the mock.
pub async fn mock_api() -> (ServerGuard, UserApi<MemoryContextStore>) {
    let server = mockito::Server::new_async().await;
    let api_base = format!("{}/v1", server.url());
    let manager = manager(api_base.clone());
    let credential = CredentialId::new("mocked");
    let context = ApiContext {
        api_base,
        secret: SecretString::from("access-token"),
        installation: Installation {
            id: 1,
            token: SecretString::from("installation-token"),
            private_key: client_key(),
            server_public_key: PublicKey::from_pem(&fixture("signing/other_public_key.pem"))
                .unwrap(),
        },
        device: Some(Device { id: 2 }),
        session: Some(Session {
            id: 3,
            token: SecretString::from(SESSION_TOKEN),
            user_id: USER_ID,
            kind: UserKind::UserApiKey,
            granted_by_user_id: Some(42),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        }),
        psd2: None,
    };
    manager.store().save(&credential, &context).await.unwrap();
    (server, UserApi::new(manager, credential))
}

fn client_key() -> PrivateKey {
    PrivateKey::from_pem(&fixture("signing/private_key.pem")).unwrap()
}

/// Whether the request's `X-Bunq-Client-Signature` is the installation key's over its
/// body.
fn signed_by_client_key(req: &Request) -> bool {
    let public = PublicKey::from_pem(&fixture("signing/public_key.pem")).unwrap();
    let Some(sig) = req.header("x-bunq-client-signature").first().copied() else {
        return false;
    };
    public
        .verify_body(req.body().unwrap(), sig.to_str().unwrap())
        .is_ok()
}

/// A mock of a session call: `method` on `path` (the query matched separately), with
/// the session token, bunq's headers and a valid signature of the body.
pub fn session_call(server: &mut ServerGuard, method: &str, path: &str) -> Mock {
    server
        .mock(method, path)
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_header("content-type", "application/json")
        .match_header("cache-control", "no-cache")
        .match_header("x-bunq-language", "en_US")
        .match_header("x-bunq-region", "nl_NL")
        .match_header("x-bunq-geolocation", "0 0 0 0 000")
        .match_header("x-bunq-client-request-id", Matcher::Any)
        .match_request(signed_by_client_key)
}

/// `mock` answering `body`, signed as bunq signs it.
pub fn answers(mock: Mock, body: &str) -> Mock {
    let signature = PrivateKey::from_pem(&fixture("signing/other_private_key.pem"))
        .unwrap()
        .sign_body(body.as_bytes())
        .as_str()
        .to_owned();
    mock.with_status(200)
        .with_header("content-type", "application/json")
        .with_header("x-bunq-server-signature", &signature)
        .with_body(body)
}

/// bunq's answer to a create: `{"Response":[{"Id":{"id":N}}]}`.
pub fn created(id: u64) -> String {
    format!(r#"{{"Response":[{{"Id":{{"id":{id}}}}}]}}"#)
}
