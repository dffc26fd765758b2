//! Sandbox top-ups and payments: money moves, once per request id and device, never
//! below zero.
#![allow(clippy::unwrap_used)]

mod common;

use bunq_testkit::{AccountKind, FakeBunq, REUSED_REQUEST_ID_DESCRIPTION};
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
    // Newest first: the two payments made, then the top-up received.
    assert_eq!(payments.len(), 3);
    assert_eq!(payments[1]["Payment"]["amount"]["value"], "-30.50");
    assert_eq!(payments[1]["Payment"]["id"].as_u64(), Some(first.id()));
    assert_eq!(payments[2]["Payment"]["amount"]["value"], "100.00");
    // Both sides as bunq shows them: `LabelMonetaryAccount`s, the payee found by IBAN.
    let made = &payments[1]["Payment"];
    assert_eq!(made["counterparty_alias"]["iban"], iban.as_str());
    assert_eq!(
        made["counterparty_alias"]["display_name"],
        format!("Sandbox User {}", user.user_id)
    );
    assert_eq!(made["alias"]["label_user"]["country"], "NL");
    let received = client
        .get(&format!(
            "/user/{}/monetary-account/{to}/payment",
            user.user_id
        ))
        .await;
    assert_eq!(
        received.body["Response"][0]["Payment"]["amount"]["value"],
        "30.50"
    );
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

#[tokio::test]
async fn generic_account_list_shows_every_kind_and_the_bank_list_only_bank_accounts() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let savings = fake
        .create_monetary_account(user.user_id, AccountKind::Savings, "Holiday")
        .unwrap();
    let joint = fake
        .create_monetary_account(user.user_id, AccountKind::Joint, "Household")
        .unwrap();
    let external = fake
        .create_monetary_account(user.user_id, AccountKind::External, "Other bank")
        .unwrap();
    assert!(fake.set_monetary_account_status(joint, "CANCELLED"));
    assert_eq!(
        fake.create_monetary_account(1, AccountKind::Savings, "nobody's"),
        None
    );
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;

    let all = client
        .get(&format!("/user/{}/monetary-account", user.user_id))
        .await;
    assert_eq!(all.status, 200, "{}", all.body);
    let kinds: Vec<(String, u64)> = all.body["Response"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (kind, object) = item.as_object().unwrap().iter().next().unwrap();
            (kind.clone(), object["id"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("MonetaryAccountExternal".to_owned(), external),
            ("MonetaryAccountJoint".to_owned(), joint),
            ("MonetaryAccountSavings".to_owned(), savings),
            (
                "MonetaryAccountBank".to_owned(),
                user.monetary_account_ids[1]
            ),
            (
                "MonetaryAccountBank".to_owned(),
                user.monetary_account_ids[0]
            ),
        ]
    );
    let one = client
        .get(&format!("/user/{}/monetary-account/{joint}", user.user_id))
        .await;
    let joint_object = one.item("MonetaryAccountJoint");
    assert_eq!(joint_object["status"], "CANCELLED");
    assert_eq!(joint_object["all_co_owner"][0]["status"], "ACCEPTED");
    let savings_object = client
        .get(&format!(
            "/user/{}/monetary-account/{savings}",
            user.user_id
        ))
        .await;
    assert_eq!(
        savings_object.item("MonetaryAccountSavings")["savings_goal"]["currency"],
        "EUR"
    );

    let bank = client
        .get(&format!("/user/{}/monetary-account-bank", user.user_id))
        .await;
    assert_eq!(bank.body["Response"].as_array().unwrap().len(), 2);
    let not_bank = client
        .get(&format!(
            "/user/{}/monetary-account-bank/{savings}",
            user.user_id
        ))
        .await;
    assert_eq!(not_bank.status, 404);
}

#[tokio::test]
async fn request_inquiries_are_listed_and_read_with_their_status() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let aid = user.monetary_account_ids[0];
    let path = format!(
        "/user/{}/monetary-account/{aid}/request-inquiry",
        user.user_id
    );
    let topped = client.post(&path, top_up("20")).await.id();
    let pending = client
        .post(
            &path,
            json!({
                "amount_inquired": {"value": "7.50", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com", "name": "Bob"},
                "description": "lunch",
                "allow_bunqme": false,
            }),
        )
        .await
        .id();
    let list = client.get(&format!("{path}?count=1")).await;
    let items = list.body["Response"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["RequestInquiry"]["id"].as_u64(), Some(pending));
    let older = list.body["Pagination"]["older_url"].as_str().unwrap();
    let next = client.get(older.strip_prefix("/v1").unwrap()).await;
    assert_eq!(
        next.body["Response"][0]["RequestInquiry"]["id"].as_u64(),
        Some(topped)
    );

    let one = client.get(&format!("{path}/{pending}")).await;
    let inquiry = one.item("RequestInquiry");
    assert_eq!(inquiry["status"], "PENDING");
    assert_eq!(inquiry["amount_inquired"]["value"], "7.50");
    assert_eq!(inquiry["amount_responded"], Value::Null);
    assert_eq!(inquiry["counterparty_alias"]["display_name"], "Bob");
    assert_eq!(inquiry["description"], "lunch");
    let accepted = client.get(&format!("{path}/{topped}")).await;
    assert_eq!(accepted.item("RequestInquiry")["status"], "ACCEPTED");
    assert_eq!(
        accepted.item("RequestInquiry")["amount_responded"]["value"],
        "20.00"
    );
    assert_eq!(client.get(&format!("{path}/1")).await.status, 404);
    // Another user's account is not found.
    let other = fake.create_sandbox_user();
    let other_path = format!(
        "/user/{}/monetary-account/{}/request-inquiry",
        user.user_id, other.monetary_account_ids[0]
    );
    assert_eq!(client.get(&other_path).await.status, 404);
}

#[tokio::test]
async fn draft_payments_are_stored_pending_without_moving_money() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let aid = user.monetary_account_ids[0];
    let path = format!(
        "/user/{}/monetary-account/{aid}/draft-payment",
        user.user_id
    );
    let entry = |value: &str, description: &str| {
        json!({
            "amount": {"value": value, "currency": "EUR"},
            "counterparty_alias": {"type": "IBAN", "value": "NL13TEST0123456789", "name": "Landlord"},
            "description": description,
        })
    };
    let created = client
        .post(
            &path,
            json!({"entries": [entry("950", "rent"), entry("45.10", "water")], "number_of_required_accepts": 1}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let id = created.id();
    assert_eq!(fake.balance(user.user_id, aid), Some("0.00".to_owned()));
    assert_eq!(fake.payment_count(), 0);

    let one = client.get(&format!("{path}/{id}")).await;
    let draft = one.item("DraftPayment");
    assert_eq!(draft["status"], "PENDING");
    assert_eq!(draft["monetary_account_id"].as_u64(), Some(aid));
    assert_eq!(draft["entries"][0]["amount"]["value"], "950.00");
    assert_eq!(draft["entries"][1]["description"], "water");
    assert_eq!(
        draft["entries"][0]["counterparty_alias"]["iban"],
        "NL13TEST0123456789"
    );
    let list = client.get(&path).await;
    assert_eq!(list.body["Response"].as_array().unwrap().len(), 1);

    for bad in [
        json!({"entries": [entry("1", "x")], "number_of_required_accepts": 2}),
        json!({"entries": [], "number_of_required_accepts": 1}),
        json!({"entries": [entry("-1", "x")], "number_of_required_accepts": 1}),
        json!({"entries": [entry("1", "x")]}),
    ] {
        let r = client.post(&path, bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    assert_eq!(
        client.get(&format!("{path}/{}", id + 1000)).await.status,
        404
    );
}
