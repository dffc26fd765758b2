//! The code exchange against mockito: exact request shapes, error mapping, timeouts, and
//! no retries.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bunq_oauth::{
    AuthorizationCode, MemoryStateStore, OAuthConfig, OAuthEndpoints, OAuthError, OAuthFlow,
    TokenRequestStyle, exchange_code,
};
use mockito::Matcher;
use secrecy::ExposeSecret as _;

const SECRET: &str = "client-secret-Zk9!";
const CODE: &str = "code/with+odd chars";

fn config(token_url: &str) -> OAuthConfig {
    OAuthConfig::new(
        "client-id-1",
        SECRET,
        "https://app.example/oauth/callback",
        OAuthEndpoints::custom("https://oauth.example/auth", token_url),
    )
}

/// The client `OAuthFlow` builds: no redirects, the config's timeout.
fn http(config: &OAuthConfig) -> reqwest::Client {
    OAuthFlow::new(config.clone(), MemoryStateStore::new())
        .unwrap()
        .http()
        .clone()
}

async fn exchange(config: &OAuthConfig) -> Result<bunq_oauth::AccessToken, OAuthError> {
    exchange_code(&http(config), config, &AuthorizationCode::new(CODE)).await
}

const EXACT_QUERY: &str = "grant_type=authorization_code&code=code%2Fwith%2Bodd%20chars\
    &redirect_uri=https%3A%2F%2Fapp.example%2Foauth%2Fcallback&client_id=client-id-1\
    &client_secret=client-secret-Zk9%21";

#[tokio::test]
async fn query_style_sends_exact_query_string_and_empty_body() {
    let mut server = mockito::Server::new_async().await;
    let mock = server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Exact(EXACT_QUERY.to_owned()))
        .match_body(Matcher::Exact(String::new()))
        .match_header("accept", "application/json")
        .with_status(200)
        .with_header("content-type", "application/json")
        .with_body(r#"{"access_token":"tok-123","token_type":"bearer","state":"st"}"#)
        .expect(1)
        .create_async()
        .await;

    let token = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(token.access_token.expose_secret(), "tok-123");
    assert_eq!(token.token_type, "bearer");
    assert_eq!(token.state.as_deref(), Some("st"));
}

#[tokio::test]
async fn form_style_sends_form_body_and_no_query() {
    let mut server = mockito::Server::new_async().await;
    let mock = server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Exact(String::new()))
        .match_header("content-type", "application/x-www-form-urlencoded")
        .match_body(Matcher::Exact(EXACT_QUERY.to_owned()))
        .with_status(200)
        .with_body(r#"{"access_token":"tok-form","token_type":"bearer"}"#)
        .expect(1)
        .create_async()
        .await;

    let config = config(&format!("{}/v1/token", server.url()))
        .with_token_request_style(TokenRequestStyle::Form);
    let token = exchange(&config).await.unwrap();
    mock.assert_async().await;
    assert_eq!(token.access_token.expose_secret(), "tok-form");
    assert_eq!(token.state, None);
}

#[tokio::test]
async fn rfc6749_error_becomes_typed_error_and_is_not_retried() {
    let mut server = mockito::Server::new_async().await;
    let mock = server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Any)
        .with_status(400)
        .with_body(r#"{"error":"invalid_grant","error_description":"The code has expired."}"#)
        .expect(1)
        .create_async()
        .await;

    let err = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap_err();
    mock.assert_async().await;
    match &err {
        OAuthError::TokenEndpoint {
            status,
            error,
            description,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(error.as_deref(), Some("invalid_grant"));
            assert_eq!(description.as_deref(), Some("The code has expired."));
        }
        other => panic!("expected TokenEndpoint, got {other:?}"),
    }
    assert!(err.to_string().contains("invalid_grant"));
}

#[tokio::test]
async fn server_error_is_not_retried() {
    let mut server = mockito::Server::new_async().await;
    let mock = server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Any)
        .with_status(503)
        .with_body("<html>busy</html>")
        .expect(1)
        .create_async()
        .await;

    let err = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap_err();
    mock.assert_async().await;
    assert!(matches!(
        err,
        OAuthError::TokenEndpoint {
            status: 503,
            error: None,
            description: None
        }
    ));
}

#[tokio::test]
async fn token_type_other_than_bearer_is_an_error() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Any)
        .with_body(r#"{"access_token":"tok","token_type":"mac"}"#)
        .create_async()
        .await;
    let err = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OAuthError::InvalidTokenResponse(m) if m.contains("mac")),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_access_token_is_an_error() {
    let mut server = mockito::Server::new_async().await;
    server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Any)
        .with_body(r#"{"token_type":"bearer"}"#)
        .create_async()
        .await;
    let err = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, OAuthError::InvalidTokenResponse(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let mut server = mockito::Server::new_async().await;
    let elsewhere = server
        .mock("POST", "/elsewhere")
        .match_query(Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    server
        .mock("POST", "/v1/token")
        .match_query(Matcher::Any)
        .with_status(307)
        .with_header("location", &format!("{}/elsewhere", server.url()))
        .create_async()
        .await;
    let err = exchange(&config(&format!("{}/v1/token", server.url())))
        .await
        .unwrap_err();
    elsewhere.assert_async().await;
    assert!(
        matches!(err, OAuthError::TokenEndpoint { status: 307, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_token_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config =
        config(&format!("http://{addr}/v1/token")).with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = exchange(&config).await.unwrap_err();
    assert!(matches!(err, OAuthError::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn transport_error_does_not_reveal_url_secrets() {
    // A port that was just free: the connection is refused.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let err = exchange(&config(&format!("http://{addr}/v1/token")))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::Transport(_)), "{err:?}");
    let mut text = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains("client-secret"), "{text}");
    assert!(!text.contains("code%2F"), "{text}");
}

/// bunq compares `redirect_uri` as a string: `https://app.example` must not become
/// `https://app.example/` on the way to the token endpoint, in either style.
#[tokio::test]
async fn a_redirect_uri_without_a_path_is_sent_byte_for_byte() {
    let exact = "grant_type=authorization_code&code=code%2Fwith%2Bodd%20chars\
        &redirect_uri=https%3A%2F%2Fapp.example&client_id=client-id-1\
        &client_secret=client-secret-Zk9%21";
    for style in [TokenRequestStyle::Query, TokenRequestStyle::Form] {
        let mut server = mockito::Server::new_async().await;
        let (query, body) = match style {
            TokenRequestStyle::Query => (exact.to_owned(), String::new()),
            _ => (String::new(), exact.to_owned()),
        };
        let mock = server
            .mock("POST", "/v1/token")
            .match_query(Matcher::Exact(query))
            .match_body(Matcher::Exact(body))
            .with_status(200)
            .with_body(r#"{"access_token":"tok","token_type":"bearer"}"#)
            .expect(1)
            .create_async()
            .await;
        let mut config =
            config(&format!("{}/v1/token", server.url())).with_token_request_style(style);
        config.redirect_uri = "https://app.example".to_owned();
        exchange(&config).await.unwrap();
        mock.assert_async().await;
    }
}
