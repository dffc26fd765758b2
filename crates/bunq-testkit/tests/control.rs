//! bunq's rate limits (429) and the `/_fake` control endpoint over HTTP.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bunq_testkit::{FakeBunq, FakeConfig};
use common::Client;
use serde_json::{Value, json};

#[tokio::test]
async fn rate_limits_answer_429_per_endpoint_and_window() {
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limits: true,
        rate_limit_window: Duration::from_millis(500),
        session_server_window: Duration::from_millis(1500),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let user = fake.create_sandbox_user();
    // The second client's key is made before the first session: key generation can take
    // long enough on a loaded machine to leave the session-server window.
    let mut second = Client::new(fake.api_base());
    second.install().await;
    assert_eq!(second.device(&user.api_key).await.status, 200);
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    // A second session-server within the window is refused.
    let r = second.session(&user.api_key).await;
    assert_eq!(r.status, 429);
    assert!(r.error().contains("Too many requests"), "{}", r.error());

    for _ in 0..3 {
        assert_eq!(client.get("/user").await.status, 200);
    }
    let r = client.get("/user").await;
    assert_eq!(r.status, 429);
    // Another endpoint has its own budget.
    assert_eq!(
        client.get(&format!("/user/{}", user.user_id)).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(client.get("/user").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(second.session(&user.api_key).await.status, 200);
    assert_eq!(
        fake.rate_limited_calls(),
        2,
        "each 429 of the limits is counted"
    );
}

#[tokio::test]
async fn rate_limits_are_off_by_default_and_switch_on_by_knob() {
    let fake = FakeBunq::start().await.unwrap();
    let client = Client::new(fake.api_base());
    for _ in 0..8 {
        assert_eq!(
            client.post("/sandbox-user-person", json!({})).await.status,
            200
        );
    }
    fake.knobs().set_rate_limits(true);
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(client.post("/sandbox-user-person", json!({})).await.status);
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429]);
    fake.knobs().fail_next_with_status(429, 1);
    assert_eq!(client.get("/user").await.status, 429);
    assert_eq!(
        fake.rate_limited_calls(),
        1,
        "a knob's 429 is not the limits'"
    );
}

#[tokio::test]
async fn control_endpoint_sets_knobs_and_reports_calls() {
    let fake = FakeBunq::start().await.unwrap();
    let http = reqwest::Client::new();
    let control = fake.control_url();

    let user: Value = http
        .post(format!("{control}/sandbox-user"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = user["api_key"].as_str().unwrap();
    let user_id = user["user_id"].as_u64().unwrap();
    assert_eq!(user["monetary_account_ids"].as_array().unwrap().len(), 2);

    let r = http
        .post(format!("{control}/knobs"))
        .json(&json!({"fail_next_with_insufficient_authorisation": 1, "session_timeout_secs": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (client, s) = Client::login(fake.api_base(), api_key).await;
    assert_eq!(s.item("UserPerson")["session_timeout"].as_u64(), Some(99));
    assert_eq!(client.get("/user").await.status, 401);
    assert_eq!(client.get("/user").await.status, 200);

    let r = http
        .post(format!("{control}/knobs"))
        .json(&json!({"no_such_knob": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let grant: Value = http
        .post(format!("{control}/oauth-grant"))
        .json(&json!({"user_id": user_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(grant["access_token"].as_str().unwrap().len(), 64);

    let balance: Value = http
        .get(format!("{control}/balance"))
        .query(&[
            ("user_id", user_id),
            (
                "account_id",
                user["monetary_account_ids"][0].as_u64().unwrap(),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance"], "0.00");

    let calls: Value = http
        .get(format!("{control}/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["calls"]["POST /session-server"], 1);
    assert_eq!(calls["calls"]["GET /user"], 2);
    assert_eq!(calls["total"].as_u64(), Some(fake.total_calls()));
}

#[tokio::test]
async fn control_endpoint_adds_accounts_of_every_kind() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let http = reqwest::Client::new();
    let url = format!("{}/monetary-account", fake.control_url());
    let created: Value = http
        .post(&url)
        .json(&json!({"user_id": user.user_id, "type": "MonetaryAccountSavings", "description": "Rainy day", "status": "BLOCKED"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let savings = created["monetary_account_id"].as_u64().unwrap();
    let joint: Value = http
        .post(&url)
        .json(&json!({"user_id": user.user_id, "type": "joint"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(joint["monetary_account_id"].as_u64().is_some());
    for bad in [
        json!({"user_id": user.user_id, "type": "piggy-bank"}),
        json!({"user_id": 1, "type": "savings"}),
        json!({"user_id": user.user_id}),
    ] {
        let r = http.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }

    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let account = client
        .get(&format!(
            "/user/{}/monetary-account/{savings}",
            user.user_id
        ))
        .await;
    let object = account.item("MonetaryAccountSavings");
    assert_eq!(object["description"], "Rainy day");
    assert_eq!(object["status"], "BLOCKED");
    let all = client
        .get(&format!("/user/{}/monetary-account", user.user_id))
        .await;
    assert_eq!(all.body["Response"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn control_endpoint_lists_payments_and_every_credential_issued() {
    let fake = FakeBunq::start().await.unwrap();
    let http = reqwest::Client::new();
    let control = fake.control_url();
    let user = fake.create_sandbox_user();
    let aid = user.monetary_account_ids[0];
    let mut client = Client::new(fake.api_base());
    client.install().await;
    let installation_token = client.token.clone().unwrap();
    assert_eq!(client.device(&user.api_key).await.status, 200);
    let session = client.session(&user.api_key).await;
    let first_session = session.item("Token")["token"].as_str().unwrap().to_owned();
    client.token = Some(first_session.clone());
    let top_up = json!({
        "amount_inquired": {"value": "10", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "top up",
        "allow_bunqme": false,
    });
    let base = format!("/user/{}/monetary-account/{aid}", user.user_id);
    assert_eq!(
        client
            .post(&format!("{base}/request-inquiry"), top_up)
            .await
            .status,
        200
    );
    for description in ["soak-1", "soak-2"] {
        let payment = json!({
            "amount": {"value": "0.01", "currency": "EUR"},
            "counterparty_alias": {"type": "IBAN", "value": "NL13TEST0123456789", "name": "X"},
            "description": description,
        });
        assert_eq!(
            client
                .post(&format!("{base}/payment"), payment)
                .await
                .status,
            200
        );
    }
    let listed: Value = http
        .get(format!("{control}/payments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payments = listed["payments"].as_array().unwrap();
    let descriptions: Vec<&str> = payments
        .iter()
        .map(|p| p["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        ["soak-1", "soak-2"],
        "top-ups are not payments"
    );
    assert_eq!(payments[0]["amount"], "0.01");
    assert_eq!(payments[0]["monetary_account_id"].as_u64(), Some(aid));

    // An ended session stays on the list: a leak of it is still a leak.
    fake.knobs().expire_all_sessions();
    let token = fake.grant_oauth_access(user.user_id);
    let secrets: Value = http
        .get(format!("{control}/secrets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let has = |list: &str, value: &str| {
        secrets[list]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some(value))
    };
    assert!(has("api_keys", &user.api_key));
    assert!(has("session_tokens", &first_session));
    assert!(has("oauth_access_tokens", &token));
    assert!(has("installation_tokens", &installation_token));
    assert!(
        secrets["oauth_client_secrets"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn calls_report_the_limits_429s_per_endpoint() {
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limits: true,
        session_server_window: Duration::from_secs(60),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let user = fake.create_sandbox_user();
    let mut second = Client::new(fake.api_base());
    second.install().await;
    assert_eq!(second.device(&user.api_key).await.status, 200);
    let _first = Client::login(fake.api_base(), &user.api_key).await;
    assert_eq!(second.session(&user.api_key).await.status, 429);
    assert_eq!(fake.rate_limited_calls_to("POST /session-server"), 1);
    assert_eq!(fake.rate_limited_calls_to("GET /user"), 0);
    let calls: Value = reqwest::get(format!("{}/calls", fake.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["rate_limited"]["POST /session-server"], 1);
}
