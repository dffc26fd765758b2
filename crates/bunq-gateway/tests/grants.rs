//! Grants that survive real bunq, through the real gateway binary against the fake
//! with bunq's rate limits on (windows shortened alike on both sides, so tests stay
//! short): revoked access, consent under load, a SIGKILL mid-connect, re-consent by
//! another account, a DELETE racing a callback, unsigned outages.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bunq_testkit::FakeConfig;
use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY, Env, Gateway};

/// The fake with bunq's limits on: one session-server call per `session_window` per IP.
async fn limited_env(session_window: Duration) -> Env {
    let env = Env::with_fake(FakeConfig {
        rate_limits: true,
        session_server_window: session_window,
        rate_limit_window: Duration::from_millis(200),
        ..FakeConfig::default()
    })
    .await;
    // The operator's own session (registering the OAuth client) took this window's slot.
    tokio::time::sleep(session_window).await;
    env
}

/// The gateway's limits matching the fake's, and how long a callback waits. No bunq
/// callbacks: these tests see revocations through refused sessions (callbacks revoke in
/// tests/callbacks.rs).
fn limited(session_window: Duration, callback_wait_ms: u64) -> impl Fn(String) -> String {
    move |config: String| {
        format!("{config}\n[callbacks]\ncategories = []\n")
            .replace(
                "rate_limits = false",
                &format!(
                    "rate_limits = true\nsession_window_ms = {}\nrate_limit_window_ms = 200\n\
                     session_wait_seconds = 40",
                    session_window.as_millis()
                ),
            )
            .replace(
                "state_ttl_seconds",
                &format!("callback_wait_ms = {callback_wait_ms}\nstate_ttl_seconds"),
            )
    }
}

async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_owned()
}

/// Authorization (with `replace`), consent as `end_user`, callback: the callback's
/// response.
async fn consent(
    env: &Env,
    gw: &Gateway,
    user_ref: &str,
    end_user: u64,
    replace: bool,
) -> reqwest::Response {
    let auth: Value = env
        .http
        .post(format!("{}/v1/authorizations", gw.base))
        .bearer_auth(API_KEY)
        .json(&json!({ "user_ref": user_ref, "replace": replace }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let callback = env
        .consent(auth["authorization_url"].as_str().unwrap(), end_user)
        .await;
    env.http.get(callback).send().await.unwrap()
}

/// Polls `GET /v1/users/{user_ref}` until its status is `want` (bounded).
async fn wait_for_status(env: &Env, gw: &Gateway, user_ref: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, user) = env.user(gw, user_ref).await;
        if user["status"] == want {
            return user;
        }
        assert!(
            Instant::now() < deadline,
            "{user_ref} never became {want}: {user}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_users_cost_nothing_while_healthy_users_renew() {
    let window = Duration::from_millis(700);
    let env = limited_env(window).await;
    let gw = env.start_gateway_edited(limited(window, 5_000));
    let mut users = Vec::new();
    for i in 0..12 {
        let end_user = env.end_user();
        let user_ref = format!("user-{i}");
        let callback = consent(&env, &gw, &user_ref, end_user.user_id, false).await;
        assert_eq!(callback.status(), 200, "{}", callback.text().await.unwrap());
        let user = wait_for_status(&env, &gw, &user_ref, "connected").await;
        users.push((user_ref, end_user, user["bunq_user_id"].as_u64().unwrap()));
    }
    let (healthy, revoked) = users.split_at(10);
    for (_, end_user, _) in revoked {
        assert_eq!(env.fake.revoke_oauth_grants(end_user.user_id), 1);
    }
    // Every session ends: each user's next call needs a new one.
    env.fake.knobs().expire_all_sessions();

    // The application keeps polling the revoked users while the healthy ones call.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pollers: Vec<_> = revoked
        .iter()
        .map(|(user_ref, _, bunq_user_id)| {
            let (http, base, stop) = (env.http.clone(), gw.base.clone(), stop.clone());
            let url = format!(
                "{base}/v1/users/{user_ref}/bunq/user/{bunq_user_id}/monetary-account-bank"
            );
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http.get(&url).bearer_auth(API_KEY).send().await.unwrap();
                    answers.push(r.status().as_u16());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answers
            })
        })
        .collect();
    let calls: Vec<_> = healthy
        .iter()
        .map(|(user_ref, _, bunq_user_id)| env.accounts(&gw, user_ref, *bunq_user_id))
        .collect();
    for (response, (user_ref, ..)) in futures::future::join_all(calls)
        .await
        .into_iter()
        .zip(healthy)
    {
        assert_eq!(
            response.status(),
            200,
            "{user_ref}: {}",
            response.text().await.unwrap()
        );
    }
    // Both revocations are known by now (they queued with everyone).
    for (user_ref, ..) in revoked {
        let user = wait_for_status(&env, &gw, user_ref, "revoked").await;
        assert!(
            user["status_reason"].as_str().unwrap().contains("refused"),
            "{user}"
        );
        assert!(user["status_since"].as_str().unwrap().ends_with('Z'));
    }
    let sessions = env.fake.calls("POST /session-server");
    let all_calls = env.fake.total_calls();
    tokio::time::sleep(window * 3).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for poller in pollers {
        let answers = poller.await.unwrap();
        assert!(answers.iter().all(|s| *s == 409), "{answers:?}");
        assert_eq!(answers.last(), Some(&409));
    }
    assert_eq!(
        env.fake.calls("POST /session-server"),
        sessions,
        "revoked users spend nothing"
    );
    assert_eq!(
        env.fake.total_calls(),
        all_calls,
        "no call for a revoked user reaches bunq"
    );
    let response = env.accounts(&gw, &revoked[0].0, revoked[0].2).await;
    assert_eq!(error_code(response).await, "grant_revoked");
    let metrics = env
        .http
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("bunq_gateway_grants_revoked_total 2")
    );

    // Durable: after a restart, still revoked, still nothing sent.
    drop(gw);
    let gw = env.start_gateway_edited(limited(window, 5_000));
    let all_calls = env.fake.total_calls();
    let response = env.accounts(&gw, &revoked[1].0, revoked[1].2).await;
    assert_eq!(response.status(), 409);
    assert_eq!(env.fake.total_calls(), all_calls);
    // Consenting again brings the user back.
    let again = consent(&env, &gw, &revoked[1].0, revoked[1].1.user_id, false).await;
    assert!(again.status().is_success());
    wait_for_status(&env, &gw, &revoked[1].0, "connected").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_consents_in_one_window_all_connect_without_consenting_twice() {
    let window = Duration::from_secs(2);
    let env = limited_env(window).await;
    let gw = env.start_gateway_edited(limited(window, 300));
    let installations = env.fake.calls("POST /installation");
    let devices = env.fake.calls("POST /device-server");
    // Five people consent at bunq (each from their own browser; the fake counts one
    // IP, so one after another), then their callbacks all arrive at once.
    let mut callback_urls = Vec::new();
    for i in 0..5 {
        let end_user = env.end_user();
        let auth = env.authorize(&gw, &format!("crowd-{i}"), None).await;
        let url = env
            .consent(
                auth["authorization_url"].as_str().unwrap(),
                end_user.user_id,
            )
            .await;
        callback_urls.push(url);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let callbacks: Vec<_> = callback_urls
        .iter()
        .map(|url| env.http.get(url).send())
        .collect();
    let callbacks = futures::future::join_all(callbacks)
        .await
        .into_iter()
        .map(Result::unwrap);
    let mut connecting = 0;
    for response in callbacks {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        match body["status"].as_str().unwrap() {
            "connecting" => connecting += 1,
            "connected" => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        connecting >= 3,
        "one window fits one session: {connecting} were connecting"
    );
    for i in 0..5 {
        wait_for_status(&env, &gw, &format!("crowd-{i}"), "connected").await;
    }
    assert_eq!(env.fake.calls("POST /token"), 5, "each user consented once");
    // Waiting for a turn reuses what was made: one installation and device each.
    assert_eq!(env.fake.calls("POST /installation") - installations, 5);
    assert_eq!(env.fake.calls("POST /device-server") - devices, 5);
    assert_eq!(env.fake.rate_limited_calls(), 0, "no 429 from bunq");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_while_users_connect_finishes_them_after_restart() {
    let window = Duration::from_secs(2);
    let env = limited_env(window).await;
    let gw = env.start_gateway_edited(limited(window, 100));
    for i in 0..3 {
        let end_user = env.end_user();
        let response = consent(&env, &gw, &format!("k-{i}"), end_user.user_id, false).await;
        assert_eq!(response.status(), 200);
    }
    let (_, first) = env.user(&gw, "k-2").await;
    assert_eq!(first["status"], "connecting", "{first}");
    gw.sigkill();
    let gw = env.start_gateway_edited(limited(window, 100));
    for i in 0..3 {
        let user = wait_for_status(&env, &gw, &format!("k-{i}"), "connected").await;
        assert_eq!(user["pending_consents"], 0);
    }
    assert_eq!(env.fake.calls("POST /token"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consent_by_another_bunq_account_is_refused_unless_it_replaces() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let alice = env.end_user();
    let mallory = env.end_user();
    assert_eq!(
        consent(&env, &gw, "alice", alice.user_id, false)
            .await
            .status(),
        200
    );
    let (_, before) = env.user(&gw, "alice").await;
    assert_eq!(before["granted_by_user_id"], alice.user_id);

    // The same person again: a new connection, the old one closed.
    let closed = env.fake.calls("DELETE /session/{id}");
    assert_eq!(
        consent(&env, &gw, "alice", alice.user_id, false)
            .await
            .status(),
        200
    );
    assert_eq!(env.fake.calls("DELETE /session/{id}"), closed + 1);
    let (_, user) = env.user(&gw, "alice").await;
    assert_ne!(
        user["bunq_user_id"], before["bunq_user_id"],
        "a new grant, a new UserApiKey"
    );
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();
    assert_eq!(env.accounts(&gw, "alice", bunq_user_id).await.status(), 200);

    // Someone else: refused, nothing changes, alice is still served.
    let refused = consent(&env, &gw, "alice", mallory.user_id, false).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(error_code(refused).await, "identity_mismatch");
    let (_, after) = env.user(&gw, "alice").await;
    assert_eq!(after["granted_by_user_id"], alice.user_id);
    assert_eq!(after["bunq_user_id"], bunq_user_id);
    assert_eq!(after["last_consent"]["outcome"], "identity_mismatch");
    assert_eq!(env.accounts(&gw, "alice", bunq_user_id).await.status(), 200);

    // With "replace": accepted, the old session closed at bunq.
    let closed = env.fake.calls("DELETE /session/{id}");
    let replaced = consent(&env, &gw, "alice", mallory.user_id, true).await;
    assert_eq!(replaced.status(), 200);
    let (_, user) = env.user(&gw, "alice").await;
    assert_eq!(user["granted_by_user_id"], mallory.user_id);
    assert_eq!(env.fake.calls("DELETE /session/{id}"), closed + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_during_the_callback_wins() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|c| {
        c.replace(
            "state_ttl_seconds",
            "callback_wait_ms = 100\nstate_ttl_seconds",
        )
    });
    let bob = env.end_user();
    env.fake.knobs().set_latency(Duration::from_millis(400));
    let callback = consent(&env, &gw, "bob", bob.user_id, false).await;
    let body: Value = callback.json().await.unwrap();
    assert_eq!(body["status"], "connecting");
    let deleted = env
        .http
        .delete(format!("{}/v1/users/bob", gw.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    env.fake.knobs().set_latency(Duration::ZERO);
    // Whatever the connector was doing, it cannot bring bob back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.user(&gw, "bob").await.0, 404);
    let response = env.proxy(&gw, Method::GET, "bob", "user", None).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_outages_reach_the_caller_as_bunq_unavailable() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let alice = env.end_user();
    assert_eq!(
        consent(&env, &gw, "alice", alice.user_id, false)
            .await
            .status(),
        200
    );
    let (_, user) = env.user(&gw, "alice").await;
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();

    env.fake.knobs().fail_next_with_status(491, 1);
    let maintenance = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(maintenance.status(), 503);
    assert_eq!(error_code(maintenance).await, "bunq_unavailable");

    env.fake
        .knobs()
        .fail_next_with_status_and_retry_after(503, 10, 7);
    let down = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["retry-after"], "7");
    assert_eq!(error_code(down).await, "bunq_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restarted_at_once_stays_out_of_its_predecessors_session_window() {
    // Found by the soak (docs/RELIABILITY.md): the pacer knew only its own process's
    // calls, and a gateway killed while renewing a session and started again at once
    // called session-server within the same window.
    let window = Duration::from_millis(3_000);
    let env = limited_env(window).await;
    let edit = limited(window, 5_000);
    let config = env.write_config("gateway.toml", &edit(env.config_text(600)));
    let gw = Gateway::start(&config, env.dir.path());
    let end_user = env.end_user();
    let callback = consent(&env, &gw, "alice", end_user.user_id, false).await;
    assert_eq!(callback.status(), 200, "{}", callback.text().await.unwrap());
    let user = wait_for_status(&env, &gw, "alice", "connected").await;
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();
    // Let the connect's window pass, then make the gateway renew: a session-server call.
    tokio::time::sleep(window).await;
    env.fake.knobs().expire_all_sessions();
    let sessions = env.fake.calls("POST /session-server");
    assert_eq!(env.accounts(&gw, "alice", bunq_user_id).await.status(), 200);
    assert_eq!(env.fake.calls("POST /session-server"), sessions + 1);
    // Killed and started again within that window, with the session dead again.
    gw.sigkill();
    env.fake.knobs().expire_all_sessions();
    let gw = Gateway::start(&config, env.dir.path());
    let r = env.accounts(&gw, "alice", bunq_user_id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        env.fake.rate_limited_calls_to("POST /session-server"),
        0,
        "a session-server call within the predecessor's window"
    );
}
