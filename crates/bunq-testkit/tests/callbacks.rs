//! Notification filters and the callbacks the fake sends: payments, top-ups and OAuth
//! revocations reach the registered targets signed like bunq's answers, failed
//! deliveries are retried 5 more times, at most 2 URLs per category.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bunq_testkit::{FakeBunq, FakeConfig};
use common::Client;
use serde_json::{Value, json};

/// What a receiver got: (signature header, body).
type Got = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A callback receiver on 127.0.0.1 that answers 500 to its first `fail_first` requests.
struct Receiver {
    url: String,
    got: Got,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got: Got = Arc::default();
    let seen = Arc::new(Mutex::new(0usize));
    async fn handle(
        State((got, seen, fail_first)): State<(Got, Arc<Mutex<usize>>, usize)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let n = {
            let mut seen = seen.lock().unwrap();
            *seen += 1;
            *seen
        };
        if n <= fail_first {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        let sig = headers
            .get("x-bunq-server-signature")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        got.lock().unwrap().push((sig, body.to_vec()));
        StatusCode::OK
    }
    let app = Router::new()
        .route("/cb", post(handle))
        .with_state((got.clone(), seen, fail_first));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/cb"),
        got,
    }
}

/// Polls `check` every 20 ms until it holds (at most 10 s).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast() -> FakeConfig {
    FakeConfig {
        callback_retry_interval: Duration::from_millis(50),
        ..FakeConfig::default()
    }
}

fn filters(items: &[(&str, &str)]) -> Value {
    let list: Vec<Value> = items
        .iter()
        .map(|(c, t)| json!({"category": c, "notification_target": t}))
        .collect();
    json!({ "notification_filters": list })
}

fn notification(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body).unwrap()["NotificationUrl"].clone()
}

#[tokio::test]
async fn filters_are_set_replaced_and_listed_at_user_and_account_level() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let uid = user.user_id;
    let aid = user.monetary_account_ids[0];
    let user_path = format!("/user/{uid}/notification-filter-url");
    let r = client
        .post(
            &user_path,
            filters(&[
                ("PAYMENT", "https://a.example/1"),
                ("PAYMENT", "https://a.example/2"),
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client.get(&user_path).await;
    let listed = r.body["Response"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[1]["NotificationFilterUrl"]["notification_target"],
        "https://a.example/2"
    );

    // bunq's limit: a third URL for one category is refused, and nothing changes.
    let r = client
        .post(
            &user_path,
            filters(&[
                ("PAYMENT", "https://a.example/1"),
                ("PAYMENT", "https://a.example/2"),
                ("PAYMENT", "https://a.example/3"),
            ]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        client.get(&user_path).await.body["Response"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = client
        .post(&user_path, filters(&[("PAYMENT", "not a url")]))
        .await;
    assert_eq!(r.status, 400);

    let account_path = format!("/user/{uid}/monetary-account/{aid}/notification-filter-url");
    let r = client
        .post(
            &account_path,
            filters(&[("MUTATION", "https://b.example/")]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client.get(&account_path).await;
    assert_eq!(
        r.body["Response"][0]["NotificationFilterUrl"]["monetary_account_id"],
        aid
    );
    // Someone else's account: not found.
    let other = fake.create_sandbox_user();
    let r = client
        .get(&format!(
            "/user/{uid}/monetary-account/{}/notification-filter-url",
            other.monetary_account_ids[0]
        ))
        .await;
    assert_eq!(r.status, 404);

    // An empty list removes them.
    let r = client.post(&user_path, filters(&[])).await;
    assert_eq!(r.status, 200);
    assert!(
        client.get(&user_path).await.body["Response"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(fake.calls("POST /user/{id}/notification-filter-url"), 4);
}

#[tokio::test]
async fn payments_and_top_ups_are_told_to_both_sides_signed_in_order() {
    let fake = FakeBunq::start_with(fast()).await.unwrap();
    let rx = receiver(0).await;
    let alice = fake.create_sandbox_user();
    let bob = fake.create_sandbox_user();
    let (a, _) = Client::login(fake.api_base(), &alice.api_key).await;
    let (b, _) = Client::login(fake.api_base(), &bob.api_key).await;
    let all = [
        ("PAYMENT", rx.url.as_str()),
        ("MUTATION", rx.url.as_str()),
        ("REQUEST", rx.url.as_str()),
    ];
    for (client, id) in [(&a, alice.user_id), (&b, bob.user_id)] {
        let r = client
            .post(
                &format!("/user/{id}/notification-filter-url"),
                filters(&all),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let a_acc = alice.monetary_account_ids[0];
    let b_acc = bob.monetary_account_ids[0];
    let r = a
        .post(
            &format!(
                "/user/{}/monetary-account/{a_acc}/request-inquiry",
                alice.user_id
            ),
            json!({
                "amount_inquired": {"value": "100.00", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                "description": "top up",
            }),
        )
        .await;
    assert_eq!(r.status, 200);
    let bob_iban = b
        .get(&format!(
            "/user/{}/monetary-account-bank/{b_acc}",
            bob.user_id
        ))
        .await
        .item("MonetaryAccountBank")["alias"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    for amount in ["1.00", "2.00"] {
        let r = a
            .post(
                &format!("/user/{}/monetary-account/{a_acc}/payment", alice.user_id),
                json!({
                    "amount": {"value": amount, "currency": "EUR"},
                    "counterparty_alias": {"type": "IBAN", "value": bob_iban, "name": "Bob"},
                    "description": "lunch",
                }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // 2 for the top-up, 2 per payment for each side.
    eventually("10 callbacks", || rx.got.lock().unwrap().len() == 10).await;
    let got = rx.got.lock().unwrap().clone();
    let server_key = a.server_key.as_ref().unwrap();
    for (sig, body) in &got {
        server_key.verify_body(body, sig).unwrap();
    }
    let sent = fake.sent_callbacks();
    assert_eq!(sent.len(), 10);
    // One target: received exactly as sent, in the order sent.
    let bodies: Vec<&Vec<u8>> = got.iter().map(|(_, b)| b).collect();
    let sent_bodies: Vec<&Vec<u8>> = sent.iter().map(|s| &s.body).collect();
    assert_eq!(bodies, sent_bodies);
    assert!(sent.iter().all(|s| s.delivered && s.attempts == 1));
    let kinds: Vec<String> = got
        .iter()
        .map(|(_, b)| notification(b)["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds[..6],
        [
            "REQUEST_INQUIRY_ACCEPTED",
            "MUTATION_RECEIVED",
            "PAYMENT_CREATED",
            "MUTATION_CREATED",
            "PAYMENT_RECEIVED",
            "MUTATION_RECEIVED",
        ]
    );
    let received = notification(bodies[4]);
    assert_eq!(received["category"], "PAYMENT");
    assert_eq!(received["target_url"], rx.url.as_str());
    assert_eq!(received["object"]["Payment"]["monetary_account_id"], b_acc);
    assert_eq!(received["object"]["Payment"]["amount"]["value"], "1.00");
    let created = notification(bodies[2]);
    assert_eq!(created["object"]["Payment"]["amount"]["value"], "-1.00");
    // The other side's booking is not one of the payments made through the API.
    assert_eq!(fake.payment_count(), 2);
}

#[tokio::test]
async fn account_filters_see_only_their_account_and_categories_filter() {
    let fake = FakeBunq::start_with(fast()).await.unwrap();
    let rx = receiver(0).await;
    let user = fake.create_sandbox_user();
    let (c, _) = Client::login(fake.api_base(), &user.api_key).await;
    let [first, second] = [user.monetary_account_ids[0], user.monetary_account_ids[1]];
    let path = format!(
        "/user/{}/monetary-account/{second}/notification-filter-url",
        user.user_id
    );
    assert_eq!(
        c.post(&path, filters(&[("MUTATION", &rx.url)]))
            .await
            .status,
        200
    );
    for account in [first, second] {
        let r = c
            .post(
                &format!(
                    "/user/{}/monetary-account/{account}/request-inquiry",
                    user.user_id
                ),
                json!({
                    "amount_inquired": {"value": "5.00", "currency": "EUR"},
                    "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                    "description": "top up",
                }),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    eventually("1 callback", || !rx.got.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the second account's mutation");
    assert_eq!(
        notification(&got[0].1)["object"]["Payment"]["monetary_account_id"],
        second
    );
}

#[tokio::test]
async fn a_failed_delivery_is_retried_five_more_times_then_dropped() {
    let fake = FakeBunq::start_with(fast()).await.unwrap();
    let flaky = receiver(2).await;
    let user = fake.create_sandbox_user();
    let (c, _) = Client::login(fake.api_base(), &user.api_key).await;
    // Nothing listens at this one: every attempt fails.
    let dead = format!("http://127.0.0.1:{}/cb", free_port());
    let path = format!("/user/{}/notification-filter-url", user.user_id);
    let set = filters(&[("MUTATION", &flaky.url), ("MUTATION", &dead)]);
    assert_eq!(c.post(&path, set).await.status, 200);
    let aid = user.monetary_account_ids[0];
    let r = c
        .post(
            &format!(
                "/user/{}/monetary-account/{aid}/request-inquiry",
                user.user_id
            ),
            json!({
                "amount_inquired": {"value": "5.00", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                "description": "top up",
            }),
        )
        .await;
    assert_eq!(r.status, 200);
    eventually("both deliveries to finish", || {
        let sent = fake.sent_callbacks();
        sent.len() == 2 && sent.iter().any(|s| s.delivered) && sent.iter().any(|s| s.attempts == 6)
    })
    .await;
    let sent = fake.sent_callbacks();
    let to_flaky = sent.iter().find(|s| s.target == flaky.url).unwrap();
    assert_eq!((to_flaky.attempts, to_flaky.delivered), (3, true));
    let to_dead = sent.iter().find(|s| s.target == dead).unwrap();
    assert!(!to_dead.delivered);
    // No seventh attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.sent_callbacks()
            .iter()
            .find(|s| s.target == dead)
            .unwrap()
            .attempts,
        6
    );
    assert_eq!(flaky.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_revoked_grant_is_told_to_its_oauth_filters() {
    let fake = FakeBunq::start_with(fast()).await.unwrap();
    let rx = receiver(0).await;
    let user = fake.create_sandbox_user();
    let token = fake.grant_oauth_access(user.user_id);
    let (c, session) = Client::login(fake.api_base(), &token).await;
    let api_key_id = session.item("UserApiKey")["id"].as_u64().unwrap();
    let path = format!("/user/{api_key_id}/notification-filter-url");
    let set = filters(&[("OAUTH", &rx.url), ("MUTATION", &rx.url)]);
    assert_eq!(c.post(&path, set).await.status, 200);
    assert_eq!(fake.revoke_oauth_grants(user.user_id), 1);
    eventually("the revocation callback", || {
        rx.got.lock().unwrap().len() == 1
    })
    .await;
    let (sig, body) = rx.got.lock().unwrap()[0].clone();
    c.server_key
        .as_ref()
        .unwrap()
        .verify_body(&body, &sig)
        .unwrap();
    let n = notification(&body);
    assert_eq!(
        (n["category"].as_str(), n["event_type"].as_str()),
        (Some("OAUTH"), Some("OAUTH_REVOKED"))
    );
    assert_eq!(n["object"]["OauthGrant"]["status"], "REVOKED");
    // The dead grant's filters hear nothing more.
    let (direct, _) = Client::login(fake.api_base(), &user.api_key).await;
    let aid = user.monetary_account_ids[0];
    let r = direct
        .post(
            &format!(
                "/user/{}/monetary-account/{aid}/request-inquiry",
                user.user_id
            ),
            json!({
                "amount_inquired": {"value": "5.00", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                "description": "top up",
            }),
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got.lock().unwrap().len(), 1);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
