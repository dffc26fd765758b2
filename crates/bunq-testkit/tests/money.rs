//! Sandbox top-ups and payments: money moves, once per request id and device, never
//! below zero.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_testkit::{FakeBunq, REUSED_REQUEST_ID_DESCRIPTION};
use common::Client;
use serde_json::{Value, json};

fn top_up(amount: &str) -> Value {
    json!({
        "amount_inquired": {"value": amount, "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "top up",
        "allow_bunqme": false,
    })
}

fn payment(amount: &str, iban: &str) -> Value {
    json!({
        "amount": {"value": amount, "currency": "EUR"},
        "counterparty_alias": {"type": "IBAN", "value": iban, "name": "Someone"},
        "description": "rent",
    })
}

#[tokio::test]
async fn sugardaddy_request_inquiry_credits_the_account() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let aid = user.monetary_account_ids[0];
    let r = client
        .post(
            &format!(
                "/user/{}/monetary-account/{aid}/request-inquiry",
                user.user_id
            ),
            top_up("500"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.id() > 0);
    assert_eq!(fake.balance(user.user_id, aid), Some("500.00".to_owned()));
    // The sandbox gives at most 500 per request.
    let r = client
        .post(
            &format!(
                "/user/{}/monetary-account/{aid}/request-inquiry",
                user.user_id
            ),
            top_up("500.01"),
        )
        .await;
    assert_eq!(r.status, 400);
    let account = client
        .get(&format!(
            "/user/{}/monetary-account-bank/{aid}",
            user.user_id
        ))
        .await;
    assert_eq!(
        account.item("MonetaryAccountBank")["balance"]["value"],
        "500.00"
    );
}

#[tokio::test]
async fn payment_moves_money_between_accounts_once_per_request_id() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let (from, to) = (user.monetary_account_ids[0], user.monetary_account_ids[1]);
    client
        .post(
            &format!(
                "/user/{}/monetary-account/{from}/request-inquiry",
                user.user_id
            ),
            top_up("100"),
        )
        .await;
    let target = client
        .get(&format!(
            "/user/{}/monetary-account-bank/{to}",
            user.user_id
        ))
        .await;
    let iban = target.item("MonetaryAccountBank")["alias"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/user/{}/monetary-account/{from}/payment", user.user_id);
    let body = payment("30.50", &iban).to_string().into_bytes();
    let first = client
        .send(reqwest::Method::POST, &path, body.clone(), Some("req-1"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = client
        .send(reqwest::Method::POST, &path, body.clone(), Some("req-1"))
        .await;
    assert_eq!(again.status, 400, "a repeated request id is refused");
    assert_eq!(again.error(), REUSED_REQUEST_ID_DESCRIPTION);
    assert_eq!(fake.balance(user.user_id, from), Some("69.50".to_owned()));
    assert_eq!(fake.balance(user.user_id, to), Some("30.50".to_owned()));
    assert_eq!(fake.payment_count(), 1, "the refused retry did not execute");

    // The memory is per device: another installation may use the same id.
    let (other_device, _) = Client::login(fake.api_base(), &user.api_key).await;
    let r = other_device
        .send(reqwest::Method::POST, &path, body, Some("req-1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.id(), first.id());
    assert_eq!(fake.payment_count(), 2);
    assert_eq!(fake.balance(user.user_id, from), Some("39.00".to_owned()));

    let list = client.get(&path).await;
    assert_eq!(list.status, 200);
    let payments = list.body["Response"].as_array().unwrap();
    assert_eq!(payments.len(), 2);
    assert_eq!(payments[1]["Payment"]["amount"]["value"], "-30.50");
    assert_eq!(payments[1]["Payment"]["id"].as_u64(), Some(first.id()));
}

#[tokio::test]
async fn refuses_payment_over_the_balance_and_bad_amounts() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let aid = user.monetary_account_ids[0];
    let path = format!("/user/{}/monetary-account/{aid}/payment", user.user_id);
    let r = client
        .post(&path, payment("0.01", "NL00BUNQ0000000000"))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("Insufficient balance"), "{}", r.error());
    for bad in ["-5", "abc", "1.234", "0"] {
        let r = client.post(&path, payment(bad, "NL00BUNQ0000000000")).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    let r = client
        .post(&path, json!({"amount": {"value": "1", "currency": "USD"}, "counterparty_alias": {"type": "IBAN", "value": "x"}}))
        .await;
    assert_eq!(r.status, 400);
    let r = client.post(&path, json!({"amount": "1"})).await;
    assert_eq!(r.status, 400);
    assert_eq!(fake.balance(user.user_id, aid), Some("0.00".to_owned()));
}
