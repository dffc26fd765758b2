//! No public type that holds a secret lets it out through `Debug`, `Display` or an error.
#![allow(clippy::unwrap_used)]

use bunq_oauth::{
    AccessToken, Authorization, AuthorizationCode, Callback, ClientId, Completed, MemoryStateStore,
    OAuthClientInfo, OAuthConfig, OAuthEndpoints, OAuthError, OAuthFlow, State, StateContext,
};
use secrecy::SecretString;

const CLIENT_SECRET: &str = "CLIENT-SECRET-0001";
const STATE: &str = "STATE-SECRET-0002";
const CODE: &str = "CODE-SECRET-0003";
const TOKEN: &str = "TOKEN-SECRET-0004";
const ALL: [&str; 4] = [CLIENT_SECRET, STATE, CODE, TOKEN];

fn assert_clean(what: &str, text: &str) {
    for secret in ALL {
        assert!(!text.contains(secret), "{what} leaks {secret}: {text}");
    }
}

fn config() -> OAuthConfig {
    OAuthConfig::new(
        "client-id",
        CLIENT_SECRET,
        "https://app.example/cb",
        OAuthEndpoints::sandbox(),
    )
}

fn token() -> AccessToken {
    AccessToken {
        access_token: SecretString::from(TOKEN),
        token_type: "bearer".to_owned(),
        state: Some(STATE.to_owned()),
    }
}

#[test]
fn debug_of_secret_holding_types_redacts_secrets() {
    assert_clean("OAuthConfig", &format!("{:?}", config()));
    assert_clean("State", &format!("{:?}", State::new(STATE)));
    assert_clean(
        "AuthorizationCode",
        &format!("{:?}", AuthorizationCode::new(CODE)),
    );
    assert_clean("AccessToken", &format!("{:?}", token()));
    let code = Callback::from_query(&format!("code={CODE}&state={STATE}")).unwrap();
    assert_clean("Callback::Code", &format!("{code:?}"));
    let denied = Callback::from_query(&format!("error=access_denied&state={STATE}")).unwrap();
    assert_clean("Callback::Denied", &format!("{denied:?}"));
    let completed = Completed {
        context: StateContext {
            user_ref: "u".to_owned(),
            return_to: None,
            replace: false,
        },
        token: token(),
        state: bunq_oauth::StateKey("digest-of-the-state".to_owned()),
    };
    assert_clean("Completed", &format!("{completed:?}"));
    let client = OAuthClientInfo {
        id: 1,
        client_id: ClientId::new("client-id"),
        client_secret: SecretString::from(CLIENT_SECRET),
        status: "ACTIVE".to_owned(),
        callback_urls: vec!["https://app.example/cb".to_owned()],
    };
    assert_clean("OAuthClientInfo", &format!("{client:?}"));
    assert_clean(
        "OAuthClientInfo::config",
        &format!(
            "{:?}",
            client.config("https://app.example/cb", OAuthEndpoints::sandbox())
        ),
    );
    let flow = OAuthFlow::new(config(), MemoryStateStore::new()).unwrap();
    assert_clean("OAuthFlow", &format!("{flow:?}"));
}

#[tokio::test]
async fn authorization_debug_redacts_state_but_url_carries_it() {
    let flow = OAuthFlow::new(config(), MemoryStateStore::new()).unwrap();
    let auth: Authorization = flow
        .begin(StateContext {
            user_ref: "u".to_owned(),
            return_to: None,
            replace: false,
        })
        .await
        .unwrap();
    // The URL is meant for the browser and holds the state; Debug must not print it.
    let debug = format!("{auth:?}");
    assert!(!debug.contains(auth.state.secret()), "{debug}");
    assert!(
        debug.contains("https://oauth.sandbox.bunq.com/auth"),
        "{debug}"
    );
    assert!(auth.url.contains(auth.state.secret()));
    assert!(!auth.url.contains(CLIENT_SECRET));
}

#[test]
fn errors_carry_no_secrets() {
    let errors = [
        OAuthError::UnknownState,
        OAuthError::MalformedState,
        OAuthError::ReplayedState,
        OAuthError::ExpiredState,
        OAuthError::Timeout,
        OAuthError::InvalidTokenResponse("no access_token".to_owned()),
        OAuthError::TokenEndpoint {
            status: 400,
            error: Some("invalid_grant".to_owned()),
            description: None,
        },
    ];
    for err in errors {
        assert_clean("OAuthError", &format!("{err} {err:?}"));
    }
}
