//! Fleet mode through the real binaries: three gateways on one PostgreSQL database,
//! two egress addresses (127.0.0.2 for two of them, 127.0.0.3 for the third; the fake
//! keys its limits by the caller's address), the fake with bunq's limits on (windows
//! shortened alike on both sides). Connects and calls through every replica: no 429
//! from the fake, one session creation across replicas, a deletion obeyed by the
//! others within a second, a replica SIGKILLed mid-load with a payment in flight.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bunq_testkit::FakeConfig;
use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY, Env, Gateway, free_port, postgres_url};

const SESSION_WINDOW: Duration = Duration::from_millis(1000);

/// A replica's config: its own port, its egress and the local address it reaches the
/// fake from, the limits of the fake, quick heartbeats.
fn replica_config(env: &Env, port: u16, egress: &str, bind: &str) -> String {
    env.config_text(600)
        .replace(
            &format!("listen = \"127.0.0.1:{}\"", env.port),
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "rate_limits = false",
            &format!(
                "rate_limits = true\nsession_window_ms = {}\nrate_limit_window_ms = 200\n\
                 session_wait_seconds = 40\negress = \"{egress}\"\nbind_address = \"{bind}\"",
                SESSION_WINDOW.as_millis()
            ),
        )
        .replace(
            "state_ttl_seconds",
            "callback_wait_ms = 5000\nstate_ttl_seconds",
        )
        + &format!(
            "\n[callbacks]\ncategories = []\n\n[fleet]\nheartbeat_ms = 200\nstale_after_ms = 1500\n\
             event_lease_ms = 2000\nadvertise_url = \"http://127.0.0.1:{port}\"\n"
        )
}

fn start_replica(env: &Env, name: &str, port: u16, egress: &str, bind: &str) -> Gateway {
    let config = env.write_config(
        &format!("{name}.toml"),
        &replica_config(env, port, egress, bind),
    );
    Gateway::start(&config, env.dir.path())
}

/// Consent for `user_ref` started on `first`: the callback URL bunq sends the browser
/// to, routed (as a load balancer would) to `callback_to`, whose egress the user will
/// be pinned to.
async fn consent_for(env: &Env, first: &Gateway, callback_to: &Gateway, user_ref: &str) -> String {
    let end_user = env.end_user();
    let auth = env.authorize(first, user_ref, None).await;
    let callback = env
        .consent(
            auth["authorization_url"].as_str().unwrap(),
            end_user.user_id,
        )
        .await;
    // The end users' browsers are one address here: kept under the fake's limits of
    // its consent page.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let public = format!("http://127.0.0.1:{}", env.port);
    callback.replacen(&public, &callback_to.base, 1)
}

/// The callback, then the user's status until connected: its bunq user id.
async fn finish(env: &Env, gateway: &Gateway, user_ref: &str, callback: String) -> u64 {
    let answer = env.http.get(callback).send().await.unwrap();
    assert!(
        answer.status().is_success() || answer.status().is_redirection(),
        "{}",
        answer.status()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, user) = env.user(gateway, user_ref).await;
        assert_eq!(status, 200);
        if user["status"] == "connected" {
            return user["bunq_user_id"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{user_ref} did not connect: {user}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_two_egress_addresses_one_database() {
    let Some(base) = postgres_url() else { return };
    let mut env = Env::with_fake(FakeConfig {
        rate_limits: true,
        session_server_window: SESSION_WINDOW,
        rate_limit_window: Duration::from_millis(200),
        ..FakeConfig::default()
    })
    .await;
    env.use_postgres(base).await;
    let a = start_replica(&env, "a", env.port, "egress-2", "127.0.0.2");
    let b = start_replica(&env, "b", free_port(), "egress-2", "127.0.0.2");
    let c = start_replica(&env, "c", free_port(), "egress-3", "127.0.0.3");

    // Consents finishing at once on every replica: each egress connects at its own
    // pace, one session-server call per window per address.
    let callbacks = [
        consent_for(&env, &a, &a, "u1").await,
        consent_for(&env, &c, &b, "u2").await,
        consent_for(&env, &b, &c, "u3").await,
        consent_for(&env, &a, &c, "u4").await,
    ];
    let [k1, k2, k3, k4] = callbacks;
    let (u1, u2, u3, u4) = tokio::join!(
        finish(&env, &a, "u1", k1),
        finish(&env, &b, "u2", k2),
        finish(&env, &c, "u3", k3),
        finish(&env, &c, "u4", k4),
    );
    let store = env.open_store().await;
    for (user, egress) in [("u1", "egress-2"), ("u2", "egress-2"), ("u3", "egress-3")] {
        let record = store.user(user).await.unwrap().unwrap();
        assert_eq!(record.egress.as_deref(), Some(egress), "{user}");
    }
    assert_eq!(env.fake.rate_limited_calls(), 0, "429s while connecting");

    // A user is served by its egress's replicas only: a request for u3 (egress-3) on
    // a is handed to c, which calls bunq from 127.0.0.3.
    let path = format!("user/{u3}/monetary-account-bank");
    let handed = env.proxy(&a, Method::GET, "u3", &path, None).await;
    let status = handed.status();
    let handed: Value = handed.json().await.unwrap();
    assert_eq!(status, 200, "{handed} A: {} C: {}", a.logs(), c.logs());
    assert!(
        handed["Response"][0]["MonetaryAccountBank"]["id"].is_u64(),
        "{handed}"
    );
    // Handed on once at most: a request that was already handed on and still lands on
    // the wrong egress is refused without a call to bunq.
    let calls_before = env.fake.total_calls();
    let refused = env
        .http
        .get(format!("{}/v1/users/u3/bunq/{path}", a.base))
        .bearer_auth(API_KEY)
        .header("x-gateway-forwarded-by", "another-replica")
        .send()
        .await
        .unwrap();
    let (status, code) = status_of(refused).await;
    assert_eq!((status, code.as_str()), (421, "wrong_egress"));
    assert_eq!(env.fake.total_calls(), calls_before);

    // bunq drops every session; 1,000 concurrent GETs for u1 spread over both replicas
    // of its egress: one session-server call between them.
    let sessions_before = env.fake.calls("POST /session-server");
    env.fake.knobs().expire_all_sessions();
    let path = format!("user/{u1}/monetary-account-bank");
    let gets = (0..1000).map(|i| {
        let (http, base, path) = (
            env.http.clone(),
            if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            },
            path.clone(),
        );
        async move {
            let response = http
                .get(format!("{base}/v1/users/u1/bunq/{path}"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(gets).await;
    // bunq's GET limit (3 per window per IP, split between the two replicas) lets a
    // part through; the rest each gateway refuses itself (429 `rate_limited`, never
    // sent), so the fake refuses nothing.
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429) && served > 0,
        "{served} served; others: {:?}",
        statuses
            .iter()
            .filter(|s| **s != 200 && **s != 429)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(env.fake.rate_limited_calls(), 0, "429s from the fake");
    assert_eq!(
        env.fake.calls("POST /session-server") - sessions_before,
        1,
        "one session creation across the replicas"
    );

    // A deletion on one replica is obeyed by the other (which had the user cached)
    // within a second.
    let path2 = format!("user/{u2}/monetary-account-bank");
    assert_eq!(
        env.proxy(&a, Method::GET, "u2", &path2, None)
            .await
            .status(),
        200
    );
    let deleted = env
        .http
        .delete(format!("{}/v1/users/u2", b.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = status_of(env.proxy(&a, Method::GET, "u2", &path2, None).await).await;
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other replica still serves a deleted user"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A payment in flight on b when b is SIGKILLed: a and c carry on; a retry on a with
    // the same key waits while b is alive (409), and once b is dead resends with the
    // same request id: the payment executes once.
    let end_user_account = {
        let (_, user) = env.user(&a, "u1").await;
        assert_eq!(user["status"], "connected");
        let accounts: Value = env
            .proxy(&a, Method::GET, "u1", &path, None)
            .await
            .json()
            .await
            .unwrap();
        accounts["Response"][0]["MonetaryAccountBank"]["id"]
            .as_u64()
            .unwrap()
    };
    let pay_path =
        format!("{{base}}/v1/users/u1/bunq/user/{u1}/monetary-account/{end_user_account}/payment");
    let top_up = json!({
        "amount_inquired": {"value": "100.00", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "top up",
        "allow_bunqme": false
    });
    let topped = env
        .proxy(
            &a,
            Method::POST,
            "u1",
            &format!("user/{u1}/monetary-account/{end_user_account}/request-inquiry"),
            Some(top_up),
        )
        .await;
    assert_eq!(topped.status(), 200);
    let payment = json!({
        "amount": {"value": "1.50", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com", "name": "Bob"},
        "description": "fleet"
    });
    let payments_before = env.fake.payment_count();
    env.fake
        .knobs()
        .delay_after_execute(Duration::from_secs(3), 1);
    let in_flight = {
        let (http, url, body) = (
            env.http.clone(),
            pay_path.replace("{base}", &b.base),
            payment.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(API_KEY)
                .header("Idempotency-Key", "fleet-pay")
                .json(&body)
                .send()
                .await
        })
    };
    for _ in 0..200 {
        if env.fake.payment_count() > payments_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry = || async {
        let response = env
            .http
            .post(pay_path.replace("{base}", &a.base))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", "fleet-pay")
            .json(&payment)
            .send()
            .await
            .unwrap();
        status_of(response).await
    };
    // b is alive with the payment in flight: a retry on a waits for it.
    let first = retry().await;
    assert_eq!(first, (409, "request_in_progress".to_owned()));
    let load = {
        let (http, a_base, c_base) = (env.http.clone(), a.base.clone(), c.base.clone());
        let (p1, p4) = (path.clone(), format!("user/{u4}/monetary-account-bank"));
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..40 {
                for (base, user, path) in [(&a_base, "u1", &p1), (&c_base, "u4", &p4)] {
                    let response = http
                        .get(format!("{base}/v1/users/{user}/bunq/{path}"))
                        .bearer_auth(API_KEY)
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status().as_u16());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            statuses
        })
    };
    b.sigkill();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the caller lost its answer"
    );

    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the other replicas did not carry on: {statuses:?}"
    );

    // b's membership died with it: its key settles at a's next heartbeat (within a
    // second at most, `stale_after_ms` whatever happens), and a retry resends with the
    // same request id, which bunq refuses as already used.
    let deadline = Instant::now() + Duration::from_secs(5);
    while retry().await.1 == "request_in_progress" {
        assert!(Instant::now() < deadline, "b's key stayed in flight");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(retry().await);
    }
    assert_eq!(
        env.fake.payment_count(),
        payments_before + 1,
        "executed once: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 409 && a.1 == "already_submitted"),
        "{answers:?}"
    );
    assert_eq!(env.fake.rate_limited_calls(), 0, "429s from the fake");
    drop((a, c, u3));
}
