//! End-to-end: the real `bunq-gateway` binary against `bunq-testkit`'s fake bunq, walking
//! the contract of docs/gateway-api.md line by line.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime};

use bunq_oauth::{PendingState, StateContext, StateKey, TakeOutcome};
use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY, Env, Gateway, MASTER_KEY, run_to_exit};

fn top_up() -> Value {
    json!({
        "amount_inquired": {"value": "100.00", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "top up",
        "allow_bunqme": false
    })
}

fn payment() -> Value {
    json!({
        "amount": {"value": "1.50", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com", "name": "Bob"},
        "description": "coffee"
    })
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().is_some(), "no message in {body}");
    body["error"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn connects_a_user_and_proxies_calls_for_them() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let alice = env.end_user();
    let account = alice.monetary_account_ids[0];

    // Authorization → consent → callback → 302 to return_to.
    let callback = env.connect(&gw, "alice", alice.user_id).await;
    assert_eq!(callback.status(), 302);
    assert_eq!(
        callback.headers()["location"],
        "https://app.example/after?status=connected"
    );

    let (status, user) = env.user(&gw, "alice").await;
    assert_eq!(status, 200);
    assert_eq!(user["user_ref"], "alice");
    assert_eq!(user["status"], "connected");
    assert!(user["connected_at"].as_str().unwrap().ends_with('Z'));
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();

    // GET through the proxy, bunq's body and response id back.
    let accounts = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(accounts.status(), 200);
    assert!(accounts.headers().contains_key("x-bunq-client-response-id"));
    let body: Value = accounts.json().await.unwrap();
    assert_eq!(body["Response"].as_array().unwrap().len(), 2);

    // POST: money in, then a payment.
    let inquiry = env
        .proxy(
            &gw,
            Method::POST,
            "alice",
            &format!("user/{bunq_user_id}/monetary-account/{account}/request-inquiry"),
            Some(top_up()),
        )
        .await;
    assert_eq!(inquiry.status(), 200, "{}", inquiry.text().await.unwrap());
    let paid = env
        .proxy(
            &gw,
            Method::POST,
            "alice",
            &format!("user/{bunq_user_id}/monetary-account/{account}/payment"),
            Some(payment()),
        )
        .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(env.fake.balance(alice.user_id, account).unwrap(), "98.50");

    // A tampered signature: 502, and bunq's body is not passed on.
    env.fake.knobs().tamper_next_signatures(1);
    let tampered = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(tampered.status(), 502);
    let text = tampered.text().await.unwrap();
    assert!(!text.contains("MonetaryAccountBank"), "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"],
        "bad_signature"
    );

    // A rejected session: renewed once, the GET retried once, the caller sees 200.
    let sessions_before = env.fake.calls("POST /session-server");
    env.fake
        .knobs()
        .fail_next_with_insufficient_authorisation(1);
    let renewed = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(renewed.status(), 200);
    assert_eq!(env.fake.calls("POST /session-server"), sessions_before + 1);

    // A POST that bunq fails is never sent twice.
    let payment_endpoint = "POST /user/{id}/monetary-account/{aid}/payment";
    let payments_before = env.fake.calls(payment_endpoint);
    env.fake.knobs().fail_next_with_status(503, 1);
    let failed = env
        .proxy(
            &gw,
            Method::POST,
            "alice",
            &format!("user/{bunq_user_id}/monetary-account/{account}/payment"),
            Some(payment()),
        )
        .await;
    assert_eq!(failed.status(), 503);
    // bunq does not sign its 5xx: an outage, not a forgery.
    assert_eq!(error_code(failed).await, "bunq_unavailable");
    assert_eq!(env.fake.calls(payment_endpoint), payments_before + 1);

    // Metrics saw the routes, the bunq calls and the sessions.
    let metrics = env
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"route="/v1/users/{user_ref}/bunq/{*path}",method="GET",status="200""#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"endpoint="POST /user/{id}/monetary-account/{id}/payment",status="unavailable""#
        ),
        "{text}"
    );
    assert!(text.contains(r#"status="signature_invalid""#));
    assert!(
        text.contains("bunq_gateway_session_creations_total 2"),
        "{text}"
    );

    // DELETE forgets the user: 204, then 404 everywhere.
    let deleted = env
        .http
        .delete(format!("{}/v1/users/alice", gw.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(env.user(&gw, "alice").await.0, 404);
    let gone = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(gone.status(), 404);
    assert_eq!(error_code(gone).await, "unknown_user");

    assert!(!gw.logs().contains(API_KEY), "a secret reached the logs");
    assert!(gw.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_states_and_denied_consent_store_nothing() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let bob = env.end_user();
    let installations = env.fake.calls("POST /installation");

    // Unknown state.
    let forged = env
        .http
        .get(format!("{}/oauth/callback?code=abc&state=forged", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert_eq!(error_code(forged).await, "invalid_state");

    // Missing state.
    let missing = env
        .http
        .get(format!("{}/oauth/callback?code=abc", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);

    // Reused state: the first callback connects, the replay is refused.
    let auth = env.authorize(&gw, "bob", None).await;
    let callback = env
        .consent(auth["authorization_url"].as_str().unwrap(), bob.user_id)
        .await;
    let first = env.http.get(&callback).send().await.unwrap();
    assert_eq!(first.status(), 200, "no return_to: a small page");
    let installations_after_bob = env.fake.calls("POST /installation");
    let replay = env.http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert_eq!(error_code(replay).await, "invalid_state");
    assert_eq!(
        env.fake.calls("POST /installation"),
        installations_after_bob
    );
    assert_eq!(installations_after_bob, installations + 1);

    // Denied consent: a 4xx page, nothing stored.
    env.fake.knobs().deny_consent(true);
    let tokens = env.fake.calls("POST /token");
    let auth = env.authorize(&gw, "carol", None).await;
    let callback = env
        .consent(auth["authorization_url"].as_str().unwrap(), bob.user_id)
        .await;
    assert!(callback.contains("error=access_denied"));
    let denied = env
        .http
        .get(&callback)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied.text().await.unwrap().contains("<h1>"));
    assert_eq!(env.user(&gw, "carol").await.0, 404);
    assert_eq!(env.fake.calls("POST /token"), tokens);
    assert_eq!(
        env.fake.calls("POST /installation"),
        installations_after_bob
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_state_is_refused_and_stores_nothing() {
    let env = Env::new().await;
    let gw = env.start_gateway_with_ttl(1);
    let dave = env.end_user();
    let auth = env.authorize(&gw, "dave", None).await;
    let callback = env
        .consent(auth["authorization_url"].as_str().unwrap(), dave.user_id)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = env.fake.calls("POST /token");
    let late = env.http.get(&callback).send().await.unwrap();
    assert_eq!(late.status(), 400);
    assert_eq!(error_code(late).await, "invalid_state");
    assert_eq!(env.fake.calls("POST /token"), tokens);
    assert_eq!(env.user(&gw, "dave").await.0, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn guards_the_api_with_bearer_keys_and_limits() {
    let env = Env::new().await;
    let gw = env.start_gateway();

    assert_eq!(
        env.http
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        env.http
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // No bearer, a wrong bearer: 401 with the JSON error shape.
    let url = format!("{}/v1/users/nobody/bunq/user", gw.base);
    let none = env.http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(error_code(none).await, "unauthorized");
    let wrong = env
        .http
        .get(&url)
        .bearer_auth("test-api-key-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let post = env
        .http
        .post(format!("{}/v1/authorizations", gw.base))
        .json(&json!({"user_ref": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 401);

    // Unknown user.
    assert_eq!(env.user(&gw, "nobody").await.0, 404);
    let unknown = env.proxy(&gw, Method::GET, "nobody", "user", None).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(error_code(unknown).await, "unknown_user");

    // Oversized body (the tests' limit is 4096 bytes).
    let big = env
        .http
        .post(format!(
            "{}/v1/users/nobody/bunq/user/1/monetary-account/2/payment",
            gw.base
        ))
        .bearer_auth(API_KEY)
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(error_code(big).await, "payload_too_large");

    // Bad input.
    let bad = env
        .http
        .post(format!("{}/v1/authorizations", gw.base))
        .bearer_auth(API_KEY)
        .json(&json!({"user_ref": "a/b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let lifecycle = env
        .proxy(
            &gw,
            Method::POST,
            "nobody",
            "session-server",
            Some(json!({})),
        )
        .await;
    assert_eq!(lifecycle.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_on_the_same_database_keeps_users_and_sessions() {
    let env = Env::new().await;
    let erin = env.end_user();
    let gw = env.start_gateway();
    assert_eq!(env.connect(&gw, "erin", erin.user_id).await.status(), 302);
    let bunq_user_id = env.user(&gw, "erin").await.1["bunq_user_id"]
        .as_u64()
        .unwrap();
    assert!(gw.stop().success());

    // The same database with another encryption key: refused at start, not per request.
    let config = env.write_config("gateway.toml", &env.config_text(600));
    let wrong_key = run_to_exit(
        &["--config".as_ref(), config.as_os_str()],
        &[(
            "BUNQ_GATEWAY_SECURITY_ENCRYPTION_KEY",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )],
    );
    assert!(!wrong_key.status.success());
    assert!(wrong_key.stdout.is_empty(), "nothing is served");
    let stderr = String::from_utf8_lossy(&wrong_key.stderr);
    assert!(stderr.contains("wrong master key"), "{stderr}");

    // An OAuth state that expired while the gateway was down is forgotten at start; a
    // live one is kept.
    let (expired, live) = (StateKey("expired".into()), StateKey("live".into()));
    let store = env.open_store().await;
    for (key, ttl) in [(&expired, -60i64), (&live, 600)] {
        let now = SystemTime::now();
        let expires_at = if ttl < 0 {
            now - Duration::from_secs(ttl.unsigned_abs())
        } else {
            now + Duration::from_secs(ttl.unsigned_abs())
        };
        store
            .insert_state(&PendingState {
                key: key.clone(),
                context: StateContext {
                    user_ref: "erin".into(),
                    return_to: None,
                    replace: false,
                },
                created_at: now - Duration::from_secs(120),
                expires_at,
            })
            .await
            .unwrap();
    }
    store.close().await.unwrap();

    let installations = env.fake.calls("POST /installation");
    let sessions = env.fake.calls("POST /session-server");
    let devices = env.fake.calls("POST /device-server");
    let gw = env.start_gateway();
    let store = env.open_store().await;
    assert_eq!(
        store.take_state(&expired).await.unwrap(),
        TakeOutcome::Unknown
    );
    assert!(matches!(
        store.take_state(&live).await.unwrap(),
        TakeOutcome::Taken(_)
    ));
    store.close().await.unwrap();
    let (status, user) = env.user(&gw, "erin").await;
    assert_eq!(status, 200);
    assert_eq!(user["status"], "connected");
    let accounts = env.accounts(&gw, "erin", bunq_user_id).await;
    assert_eq!(accounts.status(), 200);
    assert_eq!(env.fake.calls("POST /installation"), installations);
    assert_eq!(env.fake.calls("POST /device-server"), devices);
    assert_eq!(env.fake.calls("POST /session-server"), sessions);
    assert!(gw.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_for_a_user_without_a_session_open_one() {
    let env = Env::new().await;
    let frank = env.end_user();
    // The session opened at connect lives 20 s: inside the gateway's 30 s renewal
    // margin, so for the gateway frank has no usable session.
    env.fake
        .knobs()
        .set_session_timeout(Duration::from_secs(20));
    let gw = env.start_gateway();
    assert_eq!(env.connect(&gw, "frank", frank.user_id).await.status(), 302);
    let bunq_user_id = env.user(&gw, "frank").await.1["bunq_user_id"]
        .as_u64()
        .unwrap();
    env.fake
        .knobs()
        .set_session_timeout(Duration::from_secs(3600));

    let sessions = env.fake.calls("POST /session-server");
    let calls = (0..40).map(|_| env.accounts(&gw, "frank", bunq_user_id));
    let responses = futures::future::join_all(calls).await;
    for r in &responses {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(env.fake.calls("POST /session-server"), sessions + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_config_exits_at_once_naming_the_key() {
    let env = Env::new().await;
    let text = env
        .config_text(600)
        .lines()
        .filter(|l| !l.starts_with("client_id"))
        .collect::<Vec<_>>()
        .join("\n");
    let config = env.write_config("broken.toml", &text);
    let output = run_to_exit(&["--config".as_ref(), config.as_os_str()], &[]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing is served");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("oauth.client_id"), "{stderr}");

    // An environment override with a bad value is named too.
    let good = env.write_config("good.toml", &env.config_text(600));
    let output = run_to_exit(
        &["serve".as_ref(), "--config".as_ref(), good.as_os_str()],
        &[("BUNQ_GATEWAY_HTTP_MAX_BODY_BYTES", "lots")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("BUNQ_GATEWAY_HTTP_MAX_BODY_BYTES"),
        "{stderr}"
    );

    // check-config accepts the good one.
    let output = run_to_exit(
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            good.as_os_str(),
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let env = Env::new().await;
    let gina = env.end_user();
    let gw = env.start_gateway();
    assert_eq!(env.connect(&gw, "gina", gina.user_id).await.status(), 302);
    let bunq_user_id = env.user(&gw, "gina").await.1["bunq_user_id"]
        .as_u64()
        .unwrap();

    env.fake.knobs().set_latency(Duration::from_millis(700));
    // Six at once: six connections, spread over the gateway's two workers, each of
    // which must finish its own before the process exits.
    let in_flight =
        futures::future::join_all((0..6).map(|_| env.accounts(&gw, "gina", bunq_user_id)));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        gw.sigterm();
    };
    let (responses, ()) = tokio::join!(in_flight, stop);
    for response in responses {
        assert_eq!(response.status(), 200);
    }
    let mut gw: Gateway = gw;
    let status = gw.wait();
    assert!(status.success(), "{status:?}: {}", gw.logs());
    assert!(gw.logs().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_key_reseals_the_database_for_the_new_key() {
    let env = Env::new().await;
    let greta = env.end_user();
    let gw = env.start_gateway();
    assert_eq!(env.connect(&gw, "greta", greta.user_id).await.status(), 302);
    assert!(gw.stop().success());

    let new_key = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let new_key_file = env.dir.path().join("new.key");
    bunq_signing::write_private_file(&new_key_file, new_key.as_bytes()).unwrap();
    let config = env.write_config("gateway.toml", &env.config_text(600));
    let rotated = run_to_exit(
        &[
            "rotate-key".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--new-key-file".as_ref(),
            new_key_file.as_os_str(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(stdout.contains("re-encrypted"), "{stdout}");
    assert!(!stdout.contains(new_key) && !stdout.contains(MASTER_KEY));

    // The old key no longer opens the database ...
    let old = run_to_exit(&["--config".as_ref(), config.as_os_str()], &[]);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("wrong master key"));

    // ... the new one does, with the user still connected and no new installation.
    let installations = env.fake.calls("POST /installation");
    let with_new_key = env.write_config(
        "rotated.toml",
        &env.config_text(600).replace(MASTER_KEY, new_key),
    );
    let gw = Gateway::start(&with_new_key, env.dir.path());
    let (status, user) = env.user(&gw, "greta").await;
    assert_eq!(status, 200);
    assert_eq!(user["status"], "connected");
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();
    let accounts = env.accounts(&gw, "greta", bunq_user_id).await;
    assert_eq!(accounts.status(), 200);
    assert_eq!(env.fake.calls("POST /installation"), installations);
    assert!(gw.stop().success());
}
