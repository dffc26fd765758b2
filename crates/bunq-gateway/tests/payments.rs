//! Payments an application can retry safely: `Idempotency-Key` through the real
//! gateway binary against the fake, for each fault that loses an answer (a connection
//! cut after bunq executed, an answer slower than the timeout, a gateway SIGKILLed with
//! the call in flight): exactly one payment, and a final answer that says what happened.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{API_KEY, Env, Gateway};

fn payment(cents: u32) -> Value {
    json!({
        "amount": {"value": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com", "name": "Bob"},
        "description": "coffee"
    })
}

/// One attempt of the application's payment with `key` (if any): (status, error code or
/// "", whether replayed, the request id header).
async fn pay(
    env: &Env,
    gw: &Gateway,
    (bunq_user_id, account): (u64, u64),
    key: Option<&str>,
    cents: u32,
) -> (u16, String, bool, Option<String>) {
    let mut request = env
        .http
        .post(format!(
            "{}/v1/users/alice/bunq/user/{bunq_user_id}/monetary-account/{account}/payment",
            gw.base
        ))
        .bearer_auth(API_KEY)
        .json(&payment(cents));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let request_id = response
        .headers()
        .get("x-bunq-client-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"].as_str().unwrap_or_default().to_owned();
    (status, code, replayed, request_id)
}

/// The application's loop: the same payment with the same key, ten times.
async fn retry_ten_times(
    env: &Env,
    gw: &Gateway,
    payer: (u64, u64),
    key: &str,
) -> Vec<(u16, String, bool, Option<String>)> {
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(pay(env, gw, payer, Some(key), 150).await);
    }
    answers
}

fn with_short_upstream_timeout(config: String) -> String {
    config.replace(
        "workers = 2",
        "workers = 2\nupstream_timeout_seconds = 1\nrequest_timeout_seconds = 10",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_with_one_key_execute_a_payment_once_whatever_loses_the_answer() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(with_short_upstream_timeout);
    let payer = env.connected_payer(&gw, "alice").await;

    // The connection is cut after bunq executed the payment.
    let before = env.fake.payment_count();
    env.fake.knobs().cut_after_execute(1);
    let answers = retry_ten_times(&env, &gw, payer, "pay-cut").await;
    assert_eq!(env.fake.payment_count(), before + 1, "{answers:?}");
    let (status, code, _, request_id) = &answers[0];
    assert_eq!(
        (*status, code.as_str()),
        (502, "outcome_unknown"),
        "{answers:?}"
    );
    assert!(request_id.is_some(), "the request id to reconcile with");
    assert_eq!(
        (answers[1].0, answers[1].1.as_str()),
        (409, "already_submitted")
    );
    for later in &answers[2..] {
        assert_eq!(
            (later.0, later.1.as_str(), later.2),
            (409, "already_submitted", true)
        );
    }

    // The answer comes after the gateway's upstream timeout.
    let before = env.fake.payment_count();
    env.fake
        .knobs()
        .delay_after_execute(Duration::from_millis(2500), 1);
    let answers = retry_ten_times(&env, &gw, payer, "pay-slow").await;
    assert_eq!(env.fake.payment_count(), before + 1, "{answers:?}");
    assert_eq!(
        (answers[0].0, answers[0].1.as_str()),
        (502, "outcome_unknown")
    );
    assert!(
        answers[1..]
            .iter()
            .all(|a| a.0 == 409 && a.1 == "already_submitted"),
        "{answers:?}"
    );

    // Without a fault: one payment, then its answer replayed nine times.
    let before = env.fake.payment_count();
    let answers = retry_ten_times(&env, &gw, payer, "pay-clean").await;
    assert_eq!(env.fake.payment_count(), before + 1);
    assert_eq!((answers[0].0, answers[0].2), (200, false));
    assert!(
        answers[1..].iter().all(|a| a.0 == 200 && a.2),
        "{answers:?}"
    );

    // Without a key, a cut after execution is never "not sent".
    let before = env.fake.payment_count();
    env.fake.knobs().cut_after_execute(1);
    let (status, code, _, request_id) = pay(&env, &gw, payer, None, 150).await;
    assert_eq!((status, code.as_str()), (502, "outcome_unknown"));
    assert!(request_id.is_some());
    assert_eq!(env.fake.payment_count(), before + 1);
    // Nor is an answer slower than the timeout.
    env.fake
        .knobs()
        .delay_after_execute(Duration::from_millis(2500), 1);
    let (status, code, _, _) = pay(&env, &gw, payer, None, 150).await;
    assert_eq!((status, code.as_str()), (502, "outcome_unknown"));
    assert_eq!(env.fake.payment_count(), before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_table_and_a_double_click() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let payer = env.connected_payer(&gw, "alice").await;

    // Five identical payments at once, as a double-clicked button sends them.
    let before = env.fake.payment_count();
    let clicks: Vec<_> = (0..5)
        .map(|_| pay(&env, &gw, payer, Some("click"), 150))
        .collect();
    let answers = futures::future::join_all(clicks).await;
    assert_eq!(env.fake.payment_count(), before + 1, "{answers:?}");
    for (status, code, replayed, _) in &answers {
        assert!(
            *status == 200 || (*status == 409 && code == "request_in_progress"),
            "{answers:?}"
        );
        let _ = replayed;
    }
    assert_eq!(
        answers.iter().filter(|a| a.0 == 200 && !a.2).count(),
        1,
        "{answers:?}"
    );

    // Same key, another request.
    let (status, code, _, _) = pay(&env, &gw, payer, Some("click"), 999).await;
    assert_eq!((status, code.as_str()), (422, "idempotency_key_reused"));
    // Same key, same request: the answer, replayed, bunq not called.
    let calls = env.fake.total_calls();
    let (status, _, replayed, _) = pay(&env, &gw, payer, Some("click"), 150).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(env.fake.total_calls(), calls);
    // A key is not a format for anything: 256 characters is one too many.
    let (status, code, _, _) = pay(&env, &gw, payer, Some(&"k".repeat(256)), 150).await;
    assert_eq!((status, code.as_str()), (400, "invalid_idempotency_key"));
    // A failure that sent nothing is forgotten: the retry with the key executes.
    let before = env.fake.payment_count();
    env.fake.knobs().fail_next_with_status(429, 1);
    let (status, _, _, _) = pay(&env, &gw, payer, Some("after-429"), 150).await;
    assert_eq!(status, 429);
    let (status, _, replayed, _) = pay(&env, &gw, payer, Some("after-429"), 150).await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(env.fake.payment_count(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_killed_with_the_payment_in_flight_resends_with_the_same_id() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let payer = env.connected_payer(&gw, "alice").await;
    let before = env.fake.payment_count();
    env.fake
        .knobs()
        .delay_after_execute(Duration::from_secs(3), 1);
    let in_flight = {
        let (http, base) = (env.http.clone(), gw.base.clone());
        let (bunq_user_id, account) = payer;
        tokio::spawn(async move {
            http.post(format!(
                "{base}/v1/users/alice/bunq/user/{bunq_user_id}/monetary-account/{account}/payment"
            ))
            .bearer_auth(API_KEY)
            .header("Idempotency-Key", "pay-killed")
            .json(&payment(150))
            .send()
            .await
        })
    };
    // Executed at the fake; the answer is on its way back when the gateway dies.
    for _ in 0..100 {
        if env.fake.payment_count() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.fake.payment_count(), before + 1);
    gw.sigkill();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the caller lost its answer"
    );

    let gw = env.start_gateway();
    let answers = retry_ten_times(&env, &gw, payer, "pay-killed").await;
    assert_eq!(env.fake.payment_count(), before + 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.0 == 409 && a.1 == "already_submitted"),
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_expire_after_the_retention() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|c| {
        c.replace(
            "workers = 2",
            "workers = 2\nidempotency_retention_seconds = 1",
        )
    });
    let payer = env.connected_payer(&gw, "alice").await;
    let (status, _, _, _) = pay(&env, &gw, payer, Some("short-lived"), 150).await;
    assert_eq!(status, 200);
    let (status, code, _, _) = pay(&env, &gw, payer, Some("short-lived"), 250).await;
    assert_eq!((status, code.as_str()), (422, "idempotency_key_reused"));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = env.fake.payment_count();
    let (status, _, replayed, _) = pay(&env, &gw, payer, Some("short-lived"), 250).await;
    assert_eq!(
        (status, replayed),
        (200, false),
        "an expired key is a new key"
    );
    assert_eq!(env.fake.payment_count(), before + 1);
}
