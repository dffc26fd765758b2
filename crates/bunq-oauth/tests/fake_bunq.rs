//! Flows against `bunq-testkit`'s fake bunq: registering the OAuth client through a
//! bunq-session manager, then authorize → callback → code exchange → a session with the
//! token.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bunq_oauth::client::find_oauth_client;
use bunq_oauth::{
    Callback, MemoryStateStore, OAuthClientInfo, OAuthEndpoints, OAuthError, OAuthFlow,
    StateContext, TokenRequestStyle, ensure_oauth_client, exchange_code, set_oauth_client_status,
};
use bunq_session::{
    BunqClient, ClientConfig, CredentialId, Environment, MemoryContextStore, RateLimitPolicy,
    SessionManager, SessionManagerConfig, UserKind,
};
use bunq_testkit::FakeBunq;
use secrecy::{ExposeSecret as _, SecretString};

const CALLBACK: &str = "https://app.example/oauth/callback";

struct World {
    fake: FakeBunq,
    manager: SessionManager<MemoryContextStore>,
    owner: CredentialId,
    user_id: u64,
}

/// A fake bunq and a session manager connected with a sandbox user's API key: the
/// developer who owns the OAuth client.
async fn world() -> World {
    let fake = FakeBunq::start().await.unwrap();
    let mut config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    });
    config.rate_limits = RateLimitPolicy::disabled();
    config.request_timeout = Duration::from_secs(10);
    let manager = SessionManager::new(
        BunqClient::new(config).unwrap(),
        MemoryContextStore::new(),
        SessionManagerConfig::default(),
    );
    let user = fake.create_sandbox_user();
    let owner = CredentialId::new("developer");
    manager
        .connect(&owner, SecretString::from(user.api_key))
        .await
        .unwrap();
    let user_id = manager.session(&owner).await.unwrap().user_id;
    World {
        fake,
        manager,
        owner,
        user_id,
    }
}

impl World {
    async fn ensure(&self, callback: &str) -> OAuthClientInfo {
        ensure_oauth_client(&self.manager, &self.owner, self.user_id, callback)
            .await
            .unwrap()
    }

    fn flow(
        &self,
        client: &OAuthClientInfo,
        style: TokenRequestStyle,
    ) -> OAuthFlow<MemoryStateStore> {
        let config = client
            .config(
                CALLBACK,
                OAuthEndpoints::custom(
                    self.fake.oauth_authorize_url(),
                    self.fake.oauth_token_url(),
                ),
            )
            .with_token_request_style(style);
        OAuthFlow::new(config, MemoryStateStore::new()).unwrap()
    }
}

fn context() -> StateContext {
    StateContext {
        user_ref: "end-user-42".to_owned(),
        return_to: Some("/accounts".to_owned()),
        replace: false,
    }
}

/// Plays the end user's browser: opens the authorize URL and returns the `Location`
/// bunq redirects to.
async fn consent(url: &str) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = browser.get(url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap();
    assert!(location.starts_with(CALLBACK), "{location}");
    location.to_owned()
}

#[tokio::test]
async fn ensure_oauth_client_registers_once_and_is_idempotent() {
    let w = world().await;
    let first = w.ensure(CALLBACK).await;
    assert!(first.is_active());
    assert_eq!(first.callback_urls, [CALLBACK]);
    assert!(!first.client_secret.expose_secret().is_empty());

    let again = w.ensure(CALLBACK).await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.client_id, first.client_id);
    assert_eq!(
        again.client_secret.expose_secret(),
        first.client_secret.expose_secret()
    );
    assert_eq!(again.callback_urls, [CALLBACK]);
    assert_eq!(w.fake.calls("POST /user/{id}/oauth-client"), 1);
    assert_eq!(
        w.fake
            .calls("POST /user/{id}/oauth-client/{cid}/callback-url"),
        1
    );

    // A second callback URL is added to the same client.
    let second = w.ensure("https://other.example/cb").await;
    assert_eq!(second.id, first.id);
    assert_eq!(second.callback_urls, [CALLBACK, "https://other.example/cb"]);
    assert_eq!(w.fake.calls("POST /user/{id}/oauth-client"), 1);
}

#[tokio::test]
async fn concurrent_ensures_converge_on_one_client() {
    let w = world().await;
    let (a, b) = tokio::join!(w.ensure(CALLBACK), w.ensure(CALLBACK));
    assert_eq!(a.id, b.id);
    let found = find_oauth_client(&w.manager, &w.owner, w.user_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, a.id);
}

#[tokio::test]
async fn set_oauth_client_status_changes_status_and_ensure_does_not_undo_it() {
    let w = world().await;
    let client = w.ensure(CALLBACK).await;
    set_oauth_client_status(&w.manager, &w.owner, w.user_id, client.id, "CANCELLED")
        .await
        .unwrap();
    let cancelled = w.ensure(CALLBACK).await;
    assert_eq!(
        (cancelled.id, cancelled.status.as_str()),
        (client.id, "CANCELLED")
    );
    // bunq refuses authorizations for a cancelled client.
    let flow = w.flow(&cancelled, TokenRequestStyle::Query);
    let auth = flow.begin(context()).await.unwrap();
    let status = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&auth.url)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);

    set_oauth_client_status(&w.manager, &w.owner, w.user_id, client.id, "ACTIVE")
        .await
        .unwrap();
    assert!(w.ensure(CALLBACK).await.is_active());

    let err = set_oauth_client_status(&w.manager, &w.owner, w.user_id, client.id, "BOGUS")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OAuthError::Bunq(bunq_session::Error::Api { status: 400, .. })
        ),
        "{err:?}"
    );
}

async fn full_flow(style: TokenRequestStyle) {
    let w = world().await;
    let client = w.ensure(CALLBACK).await;
    let flow = w.flow(&client, style);

    let auth = flow.begin(context()).await.unwrap();
    let location = consent(&auth.url).await;
    let callback = Callback::from_url(&location).unwrap();
    let done = flow.complete(&callback).await.unwrap();
    assert_eq!(done.context, context());
    assert_eq!(done.token.token_type, "bearer");
    assert_eq!(w.fake.calls("POST /token"), 1);

    // The token is worth a session acting for the end user.
    let end_user = CredentialId::new("end-user-42");
    w.manager
        .connect(&end_user, done.token.access_token.clone())
        .await
        .unwrap();
    let session = w.manager.session(&end_user).await.unwrap();
    assert_eq!(session.kind, UserKind::UserApiKey);

    // The same callback again is a replay, refused before bunq is asked.
    let err = flow.complete(&callback).await.unwrap_err();
    assert!(matches!(err, OAuthError::ReplayedState), "{err:?}");
    assert_eq!(w.fake.calls("POST /token"), 1);
}

#[tokio::test]
async fn full_flow_with_query_parameters() {
    full_flow(TokenRequestStyle::Query).await;
}

#[tokio::test]
async fn full_flow_with_form_body() {
    full_flow(TokenRequestStyle::Form).await;
}

#[tokio::test]
async fn used_code_is_refused_by_bunq_as_invalid_grant() {
    let w = world().await;
    let client = w.ensure(CALLBACK).await;
    let flow = w.flow(&client, TokenRequestStyle::Query);
    let auth = flow.begin(context()).await.unwrap();
    let Callback::Code { code, .. } = Callback::from_url(&consent(&auth.url).await).unwrap() else {
        panic!("expected a code")
    };
    exchange_code(flow.http(), flow.config(), &code)
        .await
        .unwrap();
    let err = exchange_code(flow.http(), flow.config(), &code)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OAuthError::TokenEndpoint { status: 400, error: Some(e), .. } if e == "invalid_grant"),
        "{err:?}"
    );
}

#[tokio::test]
async fn wrong_client_secret_is_refused_by_bunq() {
    let w = world().await;
    let mut client = w.ensure(CALLBACK).await;
    client.client_secret = SecretString::from("not-the-secret");
    let flow = w.flow(&client, TokenRequestStyle::Query);
    let auth = flow.begin(context()).await.unwrap();
    let callback = Callback::from_url(&consent(&auth.url).await).unwrap();
    let err = flow.complete(&callback).await.unwrap_err();
    assert!(
        matches!(err, OAuthError::TokenEndpoint { status: 400, .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn denied_consent_returns_context_and_consumes_state() {
    let w = world().await;
    let client = w.ensure(CALLBACK).await;
    let flow = w.flow(&client, TokenRequestStyle::Query);
    w.fake.knobs().deny_consent(true);
    let auth = flow.begin(context()).await.unwrap();
    let callback = Callback::from_url(&consent(&auth.url).await).unwrap();
    match flow.complete(&callback).await.unwrap_err() {
        OAuthError::Denied {
            context: ctx,
            error,
            ..
        } => {
            assert_eq!(ctx, context());
            assert_eq!(error, "access_denied");
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    assert!(matches!(
        flow.complete(&callback).await,
        Err(OAuthError::ReplayedState)
    ));
    assert_eq!(w.fake.calls("POST /token"), 0);
}
