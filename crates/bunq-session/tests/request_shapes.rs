//! Pins the exact requests the client sends (headers, bodies, signatures) and how it
//! treats responses (verification, errors, retries), against mockito.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bunq_session::{
    ApiRequest, BunqClient, ClientConfig, Environment, Error, Installation, RateLimitPolicy,
    SendFailure, Session, TimeoutKind, UserKind,
};
use bunq_signing::{PrivateKey, PublicKey, VerificationError};
use mockito::{Matcher, Request, Server};
use secrecy::{ExposeSecret as _, SecretString};

const INSTALLATION_TOKEN: &str = "installation-token-1";
const SESSION_TOKEN: &str = "session-token-1";
const UUID_V4: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Our key (the fixture `private_key.pem`) and its public half, for checking requests.
fn client_key() -> (PrivateKey, PublicKey) {
    (
        PrivateKey::from_pem(&fixture("signing/private_key.pem")).unwrap(),
        PublicKey::from_pem(&fixture("signing/public_key.pem")).unwrap(),
    )
}

/// The "server" key: `installation_response.json` carries its public half.
fn server_key() -> PrivateKey {
    PrivateKey::from_pem(&fixture("signing/other_private_key.pem")).unwrap()
}

fn client(server: &Server) -> BunqClient {
    client_of(format!("{}/v1", server.url()), |c| {
        c.user_agent = "shape-test/1.0".into();
        c.retry_backoff = Duration::from_millis(5);
        c.max_retries = 2;
    })
}

/// A client of `api_base` without rate limits, `tune`d.
fn client_of(api_base: String, tune: impl FnOnce(&mut ClientConfig)) -> BunqClient {
    let mut config = ClientConfig::new(Environment::Custom { api_base })
        .rate_limits(RateLimitPolicy::disabled());
    tune(&mut config);
    BunqClient::new(config).unwrap()
}

/// The error of a session-signed GET of `path` that must fail.
async fn failed_get(client: &BunqClient, path: &str) -> Error {
    client
        .request(&installation(), &session(), ApiRequest::get(path))
        .await
        .unwrap_err()
}

fn installation() -> Installation {
    Installation {
        id: 1,
        token: SecretString::from(INSTALLATION_TOKEN),
        private_key: client_key().0,
        server_public_key: PublicKey::from_pem(&fixture("signing/other_public_key.pem")).unwrap(),
    }
}

fn session() -> Session {
    Session {
        id: 9,
        token: SecretString::from(SESSION_TOKEN),
        user_id: 1,
        kind: UserKind::UserPerson,
        granted_by_user_id: None,
        expires_at: SystemTime::now() + Duration::from_secs(3600),
    }
}

/// The headers every request carries whatever its kind.
fn with_standard_headers(mock: mockito::Mock) -> mockito::Mock {
    mock.match_header("user-agent", "shape-test/1.0")
        .match_header("x-bunq-language", "en_US")
        .match_header("x-bunq-region", "nl_NL")
        .match_header("x-bunq-geolocation", "0 0 0 0 000")
        .match_header("cache-control", "no-cache")
        .match_header("content-type", "application/json")
        .match_header("x-bunq-client-request-id", Matcher::Regex(UUID_V4.into()))
}

/// Matches only requests whose `X-Bunq-Client-Signature` is valid for their body.
fn signed_by_client_key(req: &Request) -> bool {
    let (_, public) = client_key();
    let Some(sig) = req.header("x-bunq-client-signature").first().copied() else {
        return false;
    };
    public
        .verify_body(req.body().unwrap(), sig.to_str().unwrap())
        .is_ok()
}

fn signature_of(body: &str) -> String {
    server_key().sign_body(body.as_bytes()).as_str().to_owned()
}

#[tokio::test]
async fn installation_posts_the_public_key_unsigned_and_reads_token_and_server_key() {
    let mut server = Server::new_async().await;
    let (key, _) = client_key();
    let expected_pem = key.public_key_pem().to_owned();
    let mock = with_standard_headers(server.mock("POST", "/v1/installation"))
        .match_header("x-bunq-client-authentication", Matcher::Missing)
        .match_header("x-bunq-client-signature", Matcher::Missing)
        .match_body(Matcher::Json(
            serde_json::json!({ "client_public_key": expected_pem }),
        ))
        .with_body(fixture("installation_response.json"))
        .create_async()
        .await;
    let inst = client(&server).installation_with_key(key).await.unwrap();
    mock.assert_async().await;
    assert_eq!(inst.id, 2140227);
    assert!(inst.token.expose_secret().starts_with("a4f9ba3c"));
    assert_eq!(
        inst.server_public_key.to_pem().unwrap().trim(),
        fixture("signing/other_public_key.pem").trim()
    );
}

#[tokio::test]
async fn installation_generates_a_fresh_key_each_time() {
    let mut server = Server::new_async().await;
    let _mock = server
        .mock("POST", "/v1/installation")
        .with_body(fixture("installation_response.json"))
        .expect(2)
        .create_async()
        .await;
    let client = client(&server);
    let a = client.installation().await.unwrap();
    let b = client.installation().await.unwrap();
    assert_ne!(
        a.private_key.public_key_pem(),
        b.private_key.public_key_pem()
    );
}

#[tokio::test]
async fn device_server_sends_secret_and_ips_signed_with_the_installation_token() {
    let mut server = Server::new_async().await;
    let body = r#"{"Response":[{"Id":{"id":77}}]}"#;
    let mock = with_standard_headers(server.mock("POST", "/v1/device-server"))
        .match_header("x-bunq-client-authentication", INSTALLATION_TOKEN)
        .match_body(Matcher::Json(serde_json::json!({
            "description": "my server",
            "secret": "api-key-1",
            "permitted_ips": ["10.0.0.1"],
        })))
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    let device = client(&server)
        .device_server(
            &installation(),
            &SecretString::from("api-key-1"),
            "my server",
            &["10.0.0.1".to_owned()],
        )
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(device.id, 77);
}

#[tokio::test]
async fn session_server_sends_the_secret_and_returns_a_typed_session() {
    let mut server = Server::new_async().await;
    let body = fixture("session_server_user_api_key.json");
    let mock = with_standard_headers(server.mock("POST", "/v1/session-server"))
        .match_header("x-bunq-client-authentication", INSTALLATION_TOKEN)
        .match_body(Matcher::Json(
            serde_json::json!({ "secret": "oauth-token" }),
        ))
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(&body))
        .with_body(&body)
        .create_async()
        .await;
    let client = client(&server);
    let before = SystemTime::now();
    let session = client
        .session_server(&installation(), &SecretString::from("oauth-token"))
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(session.kind, UserKind::UserApiKey);
    assert_eq!(session.user_id, 1964683);
    assert_eq!(session.id, 26271775);
    let lifetime = session.expires_at.duration_since(before).unwrap();
    assert!(lifetime <= Duration::from_secs(324000) + Duration::from_secs(5));
    assert!(lifetime >= Duration::from_secs(324000) - Duration::from_secs(5));
    assert_eq!(client.session_server_calls(), 1);
}

#[tokio::test]
async fn get_carries_the_session_token_and_a_valid_empty_body_signature() {
    let mut server = Server::new_async().await;
    let body = r#"{"Response":[]}"#;
    let mock = with_standard_headers(server.mock("GET", "/v1/user/1/monetary-account-bank"))
        .match_query(Matcher::UrlEncoded("count".into(), "10".into()))
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_header("x-bunq-client-response-id", "resp-123")
        .with_body(body)
        .create_async()
        .await;
    let resp = client(&server)
        .request(
            &installation(),
            &session(),
            ApiRequest::get("user/1/monetary-account-bank?count=10"),
        )
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.as_ref(), body.as_bytes());
    assert_eq!(resp.response_id.as_deref(), Some("resp-123"));
}

#[tokio::test]
async fn every_request_gets_a_fresh_request_id() {
    let mut server = Server::new_async().await;
    let body = "{}";
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_mock = Arc::clone(&seen);
    let _mock = server
        .mock("GET", "/v1/user")
        .match_request(move |req| {
            let id = req.header("x-bunq-client-request-id")[0]
                .to_str()
                .unwrap()
                .to_owned();
            seen_in_mock.lock().unwrap().push(id);
            true
        })
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    let client = client(&server);
    for _ in 0..3 {
        client
            .request(&installation(), &session(), ApiRequest::get("user"))
            .await
            .unwrap();
    }
    let mut ids = seen.lock().unwrap().clone();
    assert_eq!(ids.len(), 3);
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids repeat: {ids:?}");
}

#[tokio::test]
async fn post_body_is_signed_byte_for_byte() {
    let mut server = Server::new_async().await;
    let sent = r#"{"amount":{"value":"1.00","currency":"EUR"}}"#;
    let body = r#"{"Response":[{"Id":{"id":5}}]}"#;
    let mock = server
        .mock("POST", "/v1/user/1/monetary-account/2/payment")
        .match_body(sent)
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    let req = ApiRequest::new(
        http::Method::POST,
        "user/1/monetary-account/2/payment",
        sent,
    );
    let resp = client(&server)
        .request(&installation(), &session(), req)
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(bunq_session::envelope::id(&resp.body).unwrap(), 5);
}

#[tokio::test]
async fn response_signed_by_another_key_is_rejected_and_its_body_dropped() {
    let mut server = Server::new_async().await;
    let body = r#"{"Response":[{"Id":{"id":1}}]}"#;
    let wrong = client_key().0.sign_body(body.as_bytes());
    let _mock = server
        .mock("GET", "/v1/user")
        .with_header("x-bunq-server-signature", wrong.as_str())
        .with_header("x-bunq-client-response-id", "resp-bad")
        .with_body(body)
        .create_async()
        .await;
    let err = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user"))
        .await
        .unwrap_err();
    match err {
        Error::SignatureInvalid {
            reason,
            status,
            response_id,
            ..
        } => {
            assert_eq!(reason, VerificationError::Mismatch);
            assert_eq!(status, 200);
            assert_eq!(response_id.as_deref(), Some("resp-bad"));
        }
        other => panic!("expected SignatureInvalid, got {other:?}"),
    }
}

#[tokio::test]
async fn unsigned_response_is_rejected_even_for_errors() {
    let mut server = Server::new_async().await;
    let _mock = server
        .mock("GET", "/v1/user")
        .with_status(401)
        .with_body(fixture("error_response.json"))
        .create_async()
        .await;
    let err = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SignatureInvalid {
                reason: VerificationError::Missing,
                status: 401,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn error_status_comes_back_verified_and_maps_to_api_error() {
    let mut server = Server::new_async().await;
    let body = r#"{"Error":[{"error_description":"First.","error_description_translated":"Eerste."},{"error_description":"Second."}]}"#;
    let _mock = server
        .mock("GET", "/v1/user")
        .with_status(490)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_header("x-bunq-client-response-id", "resp-490")
        .with_body(body)
        .create_async()
        .await;
    let resp = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user"))
        .await
        .unwrap();
    assert_eq!(resp.status, 490);
    match resp.into_result().unwrap_err() {
        Error::Api {
            status,
            descriptions,
            response_id,
        } => {
            assert_eq!(status, 490);
            assert_eq!(descriptions, ["First.", "Second."]);
            assert_eq!(response_id.as_deref(), Some("resp-490"));
        }
        other => panic!("expected Api, got {other:?}"),
    }
}

/// A mock that answers `status` to the first `failures` requests and 200 after.
async fn failing_then_ok(
    server: &mut Server,
    method: &str,
    failures: usize,
    status: usize,
) -> (mockito::Mock, Arc<AtomicUsize>) {
    let body = r#"{"Response":[]}"#;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let mock = server
        .mock(method, "/v1/user/1/thing")
        .with_status_code_from_request(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) < failures {
                status
            } else {
                200
            }
        })
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    (mock, hits)
}

#[tokio::test]
async fn get_backs_off_on_429_and_then_succeeds() {
    let mut server = Server::new_async().await;
    let (_mock, hits) = failing_then_ok(&mut server, "GET", 2, 429).await;
    let resp = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user/1/thing"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn get_gives_up_after_bounded_429_retries() {
    let mut server = Server::new_async().await;
    let (_mock, hits) = failing_then_ok(&mut server, "GET", 100, 429).await;
    let err = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user/1/thing"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "1 try + max_retries 2");
}

#[tokio::test]
async fn post_is_never_resent_on_429_or_503() {
    for status in [429, 503] {
        let mut server = Server::new_async().await;
        let (_mock, hits) = failing_then_ok(&mut server, "POST", 1, status).await;
        let req = ApiRequest::post_json("user/1/thing", &serde_json::json!({"x": 1}));
        let outcome = client(&server)
            .request(&installation(), &session(), req)
            .await;
        assert_eq!(hits.load(Ordering::SeqCst), 1, "status {status}: sent once");
        match status {
            429 => assert!(matches!(outcome, Err(Error::RateLimited { .. }))),
            _ => assert_eq!(outcome.unwrap().status, 503),
        }
    }
}

#[tokio::test]
async fn put_is_retried_only_when_marked_idempotent() {
    let mut server = Server::new_async().await;
    let (_mock, hits) = failing_then_ok(&mut server, "PUT", 1, 503).await;
    let client = client(&server);
    let plain = ApiRequest::put_json("user/1/thing", &serde_json::json!({}));
    assert_eq!(
        client
            .request(&installation(), &session(), plain.clone())
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    hits.store(0, Ordering::SeqCst);
    let resp = client
        .request(&installation(), &session(), plain.idempotent())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idempotent_put_and_delete_are_resent_at_most_once() {
    for method in ["PUT", "DELETE"] {
        let mut server = Server::new_async().await;
        let (_mock, hits) = failing_then_ok(&mut server, method, 100, 503).await;
        // Three retries allowed for GETs; the caller's word on a write buys one.
        let client = client_of(format!("{}/v1", server.url()), |c| {
            c.retry_backoff = Duration::from_millis(5);
            c.max_retries = 3;
        });
        let req = ApiRequest::new(
            method.parse().unwrap(),
            "user/1/thing",
            bytes::Bytes::from_static(b"{}"),
        )
        .idempotent();
        assert_eq!(req.retry_limit(3), 1);
        let resp = client
            .request(&installation(), &session(), req)
            .await
            .unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "{method}: one try, one resend"
        );
    }
}

#[tokio::test]
async fn close_session_deletes_the_session_by_id() {
    let mut server = Server::new_async().await;
    let body = r#"{"Response":[]}"#;
    let mock = server
        .mock("DELETE", "/v1/session/9")
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    client(&server)
        .close_session(&installation(), &session())
        .await
        .unwrap();
    mock.assert_async().await;
}

/// A GET with a 300 ms timeout against a server that reads the request, writes `answer`
/// (perhaps nothing, perhaps a beginning) and then holds the connection open.
async fn get_from_a_server_that_stops_after(answer: &'static [u8]) -> Error {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _serve = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(answer).await;
            held.push(socket);
        }
    });
    let client = client_of(format!("http://{addr}/v1"), |c| {
        c.request_timeout = Duration::from_millis(300);
        c.max_retries = 0;
    });
    failed_get(&client, "user").await
}

#[tokio::test]
async fn slow_response_is_a_timeout_with_an_unknown_outcome() {
    // The server read the request before it stalled: bunq may have executed it.
    let err = get_from_a_server_that_stops_after(b"").await;
    assert!(
        matches!(
            err,
            Error::OutcomeUnknown {
                reason: SendFailure::Timeout { kind: TimeoutKind::Total, after },
                ..
            } if after == Duration::from_millis(300)
        ),
        "{err:?}"
    );
    assert!(err.may_have_reached_bunq());
}

/// A bunq list of a little over 4 KiB.
fn over_the_limit() -> String {
    format!(r#"{{"Response":[{{"Blob":"{}"}}]}}"#, "x".repeat(4096))
}

/// A client of `server` that reads response bodies of at most 1024 bytes.
fn reading_at_most_1024(server: &Server) -> BunqClient {
    client_of(format!("{}/v1", server.url()), |c| {
        c.max_response_bytes = 1024
    })
}

#[tokio::test]
async fn response_larger_than_the_limit_is_an_error_not_a_memory_hazard() {
    let mut server = Server::new_async().await;
    let body = over_the_limit();
    let _mock = server
        .mock("GET", "/v1/user/1")
        .with_header("x-bunq-server-signature", &signature_of(&body))
        .with_body(&body)
        .expect(2)
        .create_async()
        .await;
    let err = failed_get(&reading_at_most_1024(&server), "user/1").await;
    assert!(err.to_string().contains("larger than 1024 bytes"), "{err}");
    // The default limit reads the same body.
    let resp = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user/1"))
        .await
        .unwrap();
    assert_eq!(resp.body.len(), body.len());
}

#[tokio::test]
async fn extra_headers_replace_the_defaults_but_never_the_bunq_headers() {
    let mut server = Server::new_async().await;
    let body = "{}";
    let mock = server
        .mock("GET", "/v1/user")
        .match_header("user-agent", "caller-agent/2.0")
        .match_header("x-bunq-language", "en_US")
        .match_header("x-caller-trace", "t-1")
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_request(signed_by_client_key)
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    let mut req = ApiRequest::get("user");
    for (name, value) in [
        ("user-agent", "caller-agent/2.0"),
        ("x-caller-trace", "t-1"),
        ("x-bunq-client-authentication", "someone-elses-token"),
        ("x-bunq-client-signature", "forged"),
    ] {
        req.extra_headers.insert(name, value.parse().unwrap());
    }
    client(&server)
        .request(&installation(), &session(), req)
        .await
        .unwrap();
    mock.assert_async().await;
}

#[tokio::test]
async fn a_redirect_is_returned_not_followed() {
    // Following it would carry the session token to wherever `Location` points.
    let mut server = Server::new_async().await;
    let body = "{}";
    let elsewhere = server
        .mock("GET", "/elsewhere")
        .expect(0)
        .create_async()
        .await;
    let _redirect = server
        .mock("GET", "/v1/user")
        .with_status(302)
        .with_header("location", &format!("{}/elsewhere", server.url()))
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    let resp = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user"))
        .await
        .unwrap();
    assert_eq!(resp.status, 302);
    elsewhere.assert_async().await;
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_an_error_without_a_length_to_check_first() {
    let mut server = Server::new_async().await;
    let body = over_the_limit();
    let chunks = body.clone();
    let _mock = server
        .mock("GET", "/v1/user/1")
        .with_header("x-bunq-server-signature", &signature_of(&body))
        .with_chunked_body(move |w| w.write_all(chunks.as_bytes()))
        .create_async()
        .await;
    let err = failed_get(&reading_at_most_1024(&server), "user/1").await;
    assert!(err.to_string().contains("larger than 1024 bytes"), "{err}");
}

#[tokio::test]
async fn a_body_that_stalls_after_the_headers_is_a_timeout() {
    // The timeout covers the whole exchange, not only the wait for the headers.
    let err = get_from_a_server_that_stops_after(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"Resp",
    )
    .await;
    assert!(
        matches!(
            err,
            Error::OutcomeUnknown {
                reason: SendFailure::Timeout { kind: TimeoutKind::Total, after },
                ..
            } if after == Duration::from_millis(300)
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_connection_was_not_sent_and_names_the_endpoint_only() {
    // A port that was just free: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = client_of(format!("http://{addr}/v1"), |c| {
        c.retry_backoff = Duration::from_millis(5);
        c.max_retries = 1;
    });
    let err = failed_get(&client, "user/1").await;
    assert!(
        matches!(
            err,
            Error::NotSent {
                reason: SendFailure::Transport(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_bunq());
    let text = format!("{err} {err:?}");
    assert!(text.contains("GET user/1"), "{text}");
    assert!(
        text.contains("Connection refused"),
        "the cause is shown: {text}"
    );
    assert!(!text.contains(SESSION_TOKEN), "{text}");
}

#[tokio::test]
async fn a_path_that_is_not_a_valid_uri_is_refused_before_sending() {
    let mut server = Server::new_async().await;
    let never = server
        .mock("GET", Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    let err = failed_get(&client(&server), "user/1/a b").await;
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    never.assert_async().await;
}

#[tokio::test]
async fn a_typed_body_is_sent_as_its_json_and_signed() {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        description: &'a str,
        amount: u32,
    }
    let mut server = Server::new_async().await;
    let answer = r#"{"Response":[{"Id":{"id":7}}]}"#;
    let mock = with_standard_headers(server.mock("POST", "/v1/user/1/thing"))
        .match_header("x-bunq-client-authentication", SESSION_TOKEN)
        .match_request(signed_by_client_key)
        .match_body(r#"{"description":"rent","amount":3}"#)
        .with_header("x-bunq-server-signature", &signature_of(answer))
        .with_body(answer)
        .create_async()
        .await;
    let body = Body {
        description: "rent",
        amount: 3,
    };
    let resp = client(&server)
        .request(
            &installation(),
            &session(),
            ApiRequest::post_json("user/1/thing", &body),
        )
        .await
        .unwrap();
    mock.assert_async().await;
    assert_eq!(bunq_session::envelope::id(&resp.body).unwrap(), 7);
}

#[tokio::test]
async fn a_body_that_cannot_be_serialized_is_refused_before_sending() {
    let mut server = Server::new_async().await;
    let never = server
        .mock("PUT", Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    // JSON object keys must be strings.
    let body = std::collections::HashMap::from([((1, 2), "x")]);
    let err = client(&server)
        .request(
            &installation(),
            &session(),
            ApiRequest::put_json("user/1/thing", &body).idempotent(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRequest { detail, .. } if detail.contains("JSON")),
        "{err:?}"
    );
    assert!(!err.may_have_reached_bunq());
    never.assert_async().await;
}

/// The `X-Bunq-Client-Request-Id` of every request the mock sees, and the mock, which
/// answers `statuses` in turn (the last one from then on), signed.
async fn recording_ids(
    server: &mut Server,
    method: &str,
    statuses: &'static [usize],
) -> (mockito::Mock, Arc<Mutex<Vec<String>>>) {
    let body = r#"{"Response":[]}"#;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_in_mock = Arc::clone(&seen);
    let mock = server
        .mock(method, "/v1/user/1/thing")
        .with_status_code_from_request(move |req| {
            let id = req.header("x-bunq-client-request-id")[0]
                .to_str()
                .unwrap()
                .to_owned();
            let mut seen = seen_in_mock.lock().unwrap();
            seen.push(id);
            statuses[(seen.len() - 1).min(statuses.len() - 1)]
        })
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .create_async()
        .await;
    (mock, seen)
}

#[tokio::test]
async fn a_callers_request_id_is_sent_on_every_attempt_and_reported_back() {
    let mut server = Server::new_async().await;
    let (_mock, seen) = recording_ids(&mut server, "GET", &[503, 200]).await;
    let resp = client(&server)
        .request(
            &installation(),
            &session(),
            ApiRequest::get("user/1/thing").with_request_id("reconcile-me-1"),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.request_id, "reconcile-me-1");
    assert_eq!(*seen.lock().unwrap(), ["reconcile-me-1", "reconcile-me-1"]);
}

#[tokio::test]
async fn without_a_callers_id_each_attempt_has_its_own_and_the_answered_one_is_reported() {
    let mut server = Server::new_async().await;
    let (_mock, seen) = recording_ids(&mut server, "GET", &[503, 200]).await;
    let resp = client(&server)
        .request(&installation(), &session(), ApiRequest::get("user/1/thing"))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1]);
    assert_eq!(resp.request_id, seen[1]);
}

#[tokio::test]
async fn an_invalid_request_id_is_refused_before_anything_is_sent() {
    let mut server = Server::new_async().await;
    let never = server
        .mock("GET", Matcher::Any)
        .expect(0)
        .create_async()
        .await;
    for id in ["", "two\nlines", "caf\u{e9}"] {
        let err = client(&server)
            .request(
                &installation(),
                &session(),
                ApiRequest::get("user/1").with_request_id(id),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{id:?}: {err:?}"
        );
    }
    never.assert_async().await;
}

/// A server that accepts one connection, reads the request and closes the connection
/// without a word, then stops listening (later connections are refused).
async fn cuts_the_first_connection_then_goes_away() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
        }
        // Socket and listener dropped together: the retry finds nobody.
    });
    addr
}

#[tokio::test]
async fn a_post_whose_connection_is_cut_has_an_unknown_outcome_with_its_request_id() {
    let addr = cuts_the_first_connection_then_goes_away().await;
    let client = client_of(format!("http://{addr}/v1"), |_| {});
    let req = ApiRequest::post_json("user/1/monetary-account/2/payment", &serde_json::json!({}))
        .with_request_id("pay-42");
    let err = client
        .request(&installation(), &session(), req)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::OutcomeUnknown { request_id, .. } if request_id == "pay-42"),
        "{err:?}"
    );
    assert_eq!(err.request_id(), Some("pay-42"));
    assert!(err.may_have_reached_bunq());
    assert!(!format!("{err} {err:?}").contains(SESSION_TOKEN));
}

#[tokio::test]
async fn a_retry_that_is_not_sent_does_not_hide_an_attempt_that_may_have_arrived() {
    let addr = cuts_the_first_connection_then_goes_away().await;
    let client = client_of(format!("http://{addr}/v1"), |c| {
        c.retry_backoff = Duration::from_millis(5);
        c.max_retries = 2;
    });
    let req = ApiRequest::put_json("user/1/thing", &serde_json::json!({}))
        .idempotent()
        .with_request_id("put-7");
    let err = client
        .request(&installation(), &session(), req)
        .await
        .unwrap_err();
    // The retries were refused (not sent), but the first attempt reached the server.
    assert!(
        matches!(&err, Error::OutcomeUnknown { request_id, .. } if request_id == "put-7"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_deadline_ends_the_wait_for_the_rate_limiter_as_not_sent() {
    let mut server = Server::new_async().await;
    let body = "{}";
    let mock = server
        .mock("GET", "/v1/user")
        .with_header("x-bunq-server-signature", &signature_of(body))
        .with_body(body)
        .expect(1)
        .create_async()
        .await;
    let client = client_of(format!("{}/v1", server.url()), |c| {
        c.rate_limits = RateLimitPolicy::bunq()
            .get(1)
            .window(Duration::from_secs(10));
    });
    client
        .request(&installation(), &session(), ApiRequest::get("user"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let req = ApiRequest::get("user")
        .with_deadline(std::time::Instant::now() + Duration::from_millis(50))
        .with_request_id("late-1");
    let err = client
        .request(&installation(), &session(), req)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NotSent { reason: SendFailure::DeadlinePassed, request_id, .. }
                if request_id == "late-1"
        ),
        "{err:?}"
    );
    assert!(!err.may_have_reached_bunq());
    assert!(started.elapsed() < Duration::from_secs(2));
    mock.assert_async().await;
}

/// A server that reads a request, waits `delay`, then answers 200 `{}` signed.
async fn answering_after(delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nx-bunq-server-signature: {}\r\ncontent-length: 2\r\n\r\n{{}}",
                    signature_of("{}")
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_sent_request_is_not_abandoned_when_the_deadline_passes() {
    let addr = answering_after(Duration::from_millis(300)).await;
    let client = client_of(format!("http://{addr}/v1"), |c| {
        c.request_timeout = Duration::from_secs(5);
    });
    let req = ApiRequest::post_json("user/1/thing", &serde_json::json!({}))
        .with_deadline(std::time::Instant::now() + Duration::from_millis(50));
    let resp = client
        .request(&installation(), &session(), req)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn a_deadline_too_near_for_the_back_off_returns_the_last_answer() {
    let mut server = Server::new_async().await;
    let (_mock, seen) = recording_ids(&mut server, "GET", &[503, 200]).await;
    let client = client_of(format!("{}/v1", server.url()), |c| {
        c.retry_backoff = Duration::from_secs(1);
        c.max_retries = 3;
    });
    let req = ApiRequest::get("user/1/thing")
        .with_deadline(std::time::Instant::now() + Duration::from_millis(200));
    let resp = client
        .request(&installation(), &session(), req)
        .await
        .unwrap();
    assert_eq!(resp.status, 503, "bunq's signed 503, verified");
    assert_eq!(seen.lock().unwrap().len(), 1, "no retry past the deadline");
}

/// The error of a POST (never retried) that a mock answers with `status`, unsigned,
/// with `headers`.
async fn unsigned_answer(status: usize, headers: &[(&str, &str)]) -> Error {
    let mut server = Server::new_async().await;
    let mut mock = server
        .mock("POST", "/v1/user/1/thing")
        .with_status(status)
        .with_header("x-bunq-client-response-id", "resp-unsigned")
        .with_body(r#"{"Error":[{"error_description":"Down."}]}"#);
    for (name, value) in headers {
        mock = mock.with_header(*name, value);
    }
    let _mock = mock.create_async().await;
    client(&server)
        .request(
            &installation(),
            &session(),
            ApiRequest::post_json("user/1/thing", &serde_json::json!({})),
        )
        .await
        .unwrap_err()
}

#[tokio::test]
async fn an_unsigned_503_is_an_unavailability_with_its_retry_after() {
    let err = unsigned_answer(503, &[("retry-after", "7")]).await;
    match &err {
        Error::Unavailable {
            status,
            retry_after,
            response_id,
        } => {
            assert_eq!(*status, 503);
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert_eq!(response_id.as_deref(), Some("resp-unsigned"));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        err.to_string().contains("bunq is unavailable (status 503"),
        "{err}"
    );
    assert!(err.may_have_reached_bunq());
}

#[tokio::test]
async fn unsigned_maintenance_and_server_errors_are_unavailable_and_429_rate_limited() {
    for status in [491, 500, 502] {
        let err = unsigned_answer(status, &[]).await;
        assert!(
            matches!(err, Error::Unavailable { status: s, retry_after: None, .. } if usize::from(s) == status),
            "{status}: {err:?}"
        );
    }
    let err = unsigned_answer(429, &[]).await;
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert!(!err.may_have_reached_bunq());
}

#[tokio::test]
async fn a_wrongly_signed_503_and_an_unsigned_success_or_404_are_still_forgeries() {
    let wrong = client_key().0.sign_body(b"{}");
    let err = unsigned_answer(503, &[("x-bunq-server-signature", wrong.as_str())]).await;
    assert!(
        matches!(err, Error::SignatureInvalid { status: 503, .. }),
        "{err:?}"
    );
    for status in [200, 404] {
        let err = unsigned_answer(status, &[]).await;
        assert!(
            matches!(
                err,
                Error::SignatureInvalid {
                    reason: VerificationError::Missing,
                    ..
                }
            ),
            "{status}: {err:?}"
        );
    }
}

#[tokio::test]
async fn the_session_server_wait_is_bounded_by_the_callers_deadline() {
    let mut server = Server::new_async().await;
    let body = fixture("session_server_user_api_key.json");
    let mock = server
        .mock("POST", "/v1/session-server")
        .with_header("x-bunq-server-signature", &signature_of(&body))
        .with_body(&body)
        .expect(1)
        .create_async()
        .await;
    let client = client_of(format!("{}/v1", server.url()), |c| {
        c.rate_limits = RateLimitPolicy::bunq();
    });
    let secret = SecretString::from("oauth-token");
    client
        .session_server(&installation(), &secret)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .session_server_until(
            &installation(),
            &secret,
            std::time::Instant::now() + Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SessionCapacity { retry_after } if retry_after > Duration::from_secs(25)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    mock.assert_async().await;
}

#[tokio::test]
async fn an_installation_during_maintenance_is_unavailable_not_an_api_error() {
    // The installation answer is never signed (no key yet), so its status alone says
    // it: a 491 is bunq's maintenance.
    let mut server = Server::new_async().await;
    let _mock = server
        .mock("POST", "/v1/installation")
        .with_status(491)
        .with_body(r#"{"Error":[{"error_description":"Maintenance."}]}"#)
        .create_async()
        .await;
    let err = client(&server)
        .installation_with_key(client_key().0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { status: 491, .. }),
        "{err:?}"
    );
}
