//! Installation, device-server, session-server, users, accounts, and every refusal of the
//! authentication layer, driven over HTTP with a signing client.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bunq_testkit::{BAD_CREDENTIALS_DESCRIPTION, FakeBunq, FakeConfig};
use common::Client;
use serde_json::{Value, json};

#[tokio::test]
async fn api_key_flow_returns_user_person_and_lists_accounts() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, session) = Client::login(fake.api_base(), &user.api_key).await;
    let person = session.item("UserPerson");
    assert_eq!(person["id"].as_u64(), Some(user.user_id));
    assert_eq!(person["session_timeout"].as_u64(), Some(3600));

    let me = client.get(&format!("/user/{}", user.user_id)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.item("UserPerson")["id"].as_u64(), Some(user.user_id));

    let list = client
        .get(&format!("/user/{}/monetary-account-bank", user.user_id))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let accounts = list.body["Response"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    let mut ids: Vec<u64> = accounts
        .iter()
        .map(|a| a["MonetaryAccountBank"]["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, user.monetary_account_ids);
    let first = &accounts[0]["MonetaryAccountBank"];
    assert_eq!(
        first["balance"],
        json!({"value": "0.00", "currency": "EUR"})
    );
    assert_eq!(first["status"], "ACTIVE");
    assert_eq!(first["alias"][0]["type"], "IBAN");
    assert!(list.body["Pagination"].get("older_url").is_some());

    assert_eq!(fake.calls("POST /installation"), 1);
    assert_eq!(fake.calls("POST /device-server"), 1);
    assert_eq!(fake.calls("POST /session-server"), 1);
    assert_eq!(fake.calls("GET /user/{id}/monetary-account-bank"), 1);
    assert_eq!(fake.total_calls(), 5);
}

#[tokio::test]
async fn sandbox_user_person_endpoint_issues_a_working_api_key() {
    let fake = FakeBunq::start().await.unwrap();
    let client = Client::new(fake.api_base());
    let r = client.post("/sandbox-user-person", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let api_key = r.item("ApiKey")["api_key"].as_str().unwrap().to_owned();
    let (_, session) = Client::login(fake.api_base(), &api_key).await;
    assert!(session.item("UserPerson")["id"].as_u64().is_some());
}

#[tokio::test]
async fn refuses_session_server_before_device_server() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    let r = client.session(&user.api_key).await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("device"), "{}", r.error());
}

#[tokio::test]
async fn refuses_unknown_api_key_at_device_and_session_server() {
    let fake = FakeBunq::start().await.unwrap();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    let r = client.device("not-a-key").await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("API key"), "{}", r.error());
}

#[tokio::test]
async fn refuses_missing_or_unknown_authentication_token() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    client.token = Some("f".repeat(64));
    let r = client.device(&user.api_key).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "Insufficient authorisation.");

    client.token = None;
    let r = client.get(&format!("/user/{}", user.user_id)).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn refuses_missing_and_wrong_request_signatures_with_466() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (mut client, _) = Client::login(fake.api_base(), &user.api_key).await;
    client.sign = false;
    let r = client.get("/user").await;
    assert_eq!(r.status, 466);
    assert_eq!(r.error(), "Request signature is required.");

    // Signed by a key that is not the installation's.
    client.sign = true;
    client.key = bunq_signing::PrivateKey::generate().unwrap();
    let r = client.get("/user").await;
    assert_eq!(r.status, 466);
    assert_eq!(r.error(), "Request signature verification failed.");
}

#[tokio::test]
async fn refuses_signature_over_a_different_body() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    client.sign = false;
    let body = json!({"description": "x", "secret": user.api_key, "permitted_ips": []});
    let other = client.key.sign_body(b"{}");
    let r = client
        .http
        .post(format!("{}/device-server", fake.api_base()))
        .header(
            "X-Bunq-Client-Authentication",
            client.token.clone().unwrap(),
        )
        .header("X-Bunq-Client-Signature", other.as_str())
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 466);
}

#[tokio::test]
async fn bad_input_gets_bunq_errors_not_panics() {
    let fake = FakeBunq::start().await.unwrap();
    let client = Client::new(fake.api_base());
    // Malformed JSON at installation.
    let r = client
        .send(
            reqwest::Method::POST,
            "/installation",
            b"{not json".to_vec(),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("parse"), "{}", r.error());
    // A public key that is not one.
    let r = client
        .post("/installation", json!({"client_public_key": "nope"}))
        .await;
    assert_eq!(r.status, 400);
    // Unknown routes, inside and outside /v1.
    let r = client.get("/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "Route not found.");
    let r = client.get("/user/not-a-number").await;
    assert_eq!(r.status, 404);
    let outside = reqwest::get(format!("{}/elsewhere", fake.base_url()))
        .await
        .unwrap();
    assert_eq!(outside.status().as_u16(), 404);
    // Wrong method.
    let r = client.get("/installation").await;
    assert_eq!(r.status, 405);
    // Too large a body.
    let r = client
        .send(
            reqwest::Method::POST,
            "/installation",
            vec![b'x'; 2 * 1024 * 1024],
            None,
        )
        .await;
    assert_eq!(r.status, 413);
    // Every error has bunq's shape.
    assert!(r.body["Error"][0]["error_description_translated"].is_string());
}

#[tokio::test]
async fn refuses_other_users_paths() {
    let fake = FakeBunq::start().await.unwrap();
    let alice = fake.create_sandbox_user();
    let bob = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &alice.api_key).await;
    let r = client
        .get(&format!("/user/{}/monetary-account-bank", bob.user_id))
        .await;
    assert_eq!(r.status, 404);
    let r = client
        .get(&format!(
            "/user/{}/monetary-account-bank/{}",
            alice.user_id, bob.monetary_account_ids[0]
        ))
        .await;
    assert_eq!(r.status, 404);
    let r = client
        .get(&format!(
            "/user/{}/monetary-account-bank/{}",
            alice.user_id, alice.monetary_account_ids[0]
        ))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn sessions_expire_after_session_timeout() {
    let fake = FakeBunq::start_with(FakeConfig {
        session_timeout: Duration::from_millis(300),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    assert_eq!(client.get("/user").await.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = client.get("/user").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "Insufficient authorisation.");
}

#[tokio::test]
async fn set_session_timeout_is_reported_in_new_sessions() {
    let fake = FakeBunq::start().await.unwrap();
    fake.knobs().set_session_timeout(Duration::from_secs(120));
    let user = fake.create_sandbox_user();
    let (_, s) = Client::login(fake.api_base(), &user.api_key).await;
    assert_eq!(s.item("UserPerson")["session_timeout"].as_u64(), Some(120));
}

#[tokio::test]
async fn expire_all_sessions_and_delete_session_end_sessions() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (a, _) = Client::login(fake.api_base(), &user.api_key).await;
    let (b, s) = Client::login(fake.api_base(), &user.api_key).await;
    fake.knobs().expire_all_sessions();
    assert_eq!(a.get("/user").await.status, 401);
    assert_eq!(b.get("/user").await.status, 401);

    let (c, s2) = Client::login(fake.api_base(), &user.api_key).await;
    assert_ne!(s.id(), s2.id());
    let r = c
        .send(
            reqwest::Method::DELETE,
            &format!("/session/{}", s2.id()),
            Vec::new(),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/user").await.status, 401);
}

#[tokio::test]
async fn insufficient_authorisation_knob_fails_only_session_calls() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    fake.knobs().fail_next_with_insufficient_authorisation(2);
    // Installation, device and session-server are not affected.
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    for _ in 0..2 {
        let r = client.get("/user").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.error(), "Insufficient authorisation.");
    }
    assert_eq!(client.get("/user").await.status, 200);
}

#[tokio::test]
async fn tamper_knob_breaks_exactly_the_next_signatures() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (mut client, _) = Client::login(fake.api_base(), &user.api_key).await;
    client.verify = false;
    fake.knobs().tamper_next_signatures(1);
    let server_key = client.server_key.clone().unwrap();
    let check = |r: &common::Response| {
        let sig = r.headers["x-bunq-server-signature"].to_str().unwrap();
        server_key.verify_body(&r.raw, sig).is_ok()
    };
    let r = client.get("/user").await;
    assert_eq!(r.status, 200);
    assert!(!check(&r), "the tampered signature must not verify");
    let r = client.get("/user").await;
    assert!(check(&r), "the knob covers only the next response");
}

#[tokio::test]
async fn fail_with_status_knob_answers_without_executing() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    fake.knobs().fail_next_with_status(503, 1);
    let path = format!(
        "/user/{}/monetary-account/{}/request-inquiry",
        user.user_id, user.monetary_account_ids[0]
    );
    let body = json!({
        "amount_inquired": {"value": "100.00", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "x",
    });
    let r = client.post(&path, body.clone()).await;
    assert_eq!(r.status, 503);
    assert!(r.body["Error"][0]["error_description"].is_string());
    assert_eq!(
        fake.balance(user.user_id, user.monetary_account_ids[0]),
        Some("0.00".to_owned())
    );
    let r = client.post(&path, body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        fake.balance(user.user_id, user.monetary_account_ids[0]),
        Some("100.00".to_owned())
    );
}

#[tokio::test]
async fn latency_knob_delays_responses() {
    let fake = FakeBunq::start().await.unwrap();
    let client = Client::new(fake.api_base());
    fake.knobs().set_latency(Duration::from_millis(150));
    let started = Instant::now();
    client.get("/nothing-here").await; // unrouted: not delayed
    let r = client.post("/sandbox-user-person", json!({})).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn lists_paginate_with_count_and_cursors() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let base = format!("/user/{}/monetary-account-bank", user.user_id);
    let r = client.get(&format!("{base}?count=1")).await;
    assert_eq!(r.body["Response"].as_array().unwrap().len(), 1);
    let older = r.body["Pagination"]["older_url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(r.body["Pagination"]["newer_url"].is_null());
    let next = client.get(older.strip_prefix("/v1").unwrap()).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.body["Response"].as_array().unwrap().len(), 1);
    assert!(next.body["Pagination"]["older_url"].is_null());
    assert_eq!(client.get(&format!("{base}?count=201")).await.status, 400);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let fake = FakeBunq::start().await.unwrap();
    let base = fake.base_url();
    fake.shutdown().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(client.get(format!("{base}/v1/user")).send().await.is_err());
}

fn ip(last: u8) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, last])
}

#[tokio::test]
async fn empty_permitted_ips_bind_the_device_to_the_calling_ip() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    assert_eq!(client.device(&user.api_key).await.status, 200);
    // session-server from another IP: refused, signed, counted.
    client.http = common::http_from(ip(2));
    let r = client.session(&user.api_key).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), BAD_CREDENTIALS_DESCRIPTION);
    assert!(r.headers.contains_key("x-bunq-server-signature"));
    assert_eq!(fake.calls("POST /session-server"), 1);
    // From the device's IP: fine; then session calls from elsewhere are refused too.
    client.http = common::http_from(ip(1));
    let s = client.session(&user.api_key).await;
    assert_eq!(s.status, 200, "{}", s.body);
    client.token = Some(s.item("Token")["token"].as_str().unwrap().to_owned());
    assert_eq!(client.get("/user").await.status, 200);
    client.http = common::http_from(ip(2));
    let r = client.get("/user").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), BAD_CREDENTIALS_DESCRIPTION);
}

#[tokio::test]
async fn absent_permitted_ips_bind_like_an_empty_list() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let mut client = Client::new(fake.api_base());
    client.install().await;
    client.http = common::http_from(ip(3));
    let r = client
        .post(
            "/device-server",
            json!({"description": "x", "secret": user.api_key}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(client.session(&user.api_key).await.status, 200);
    client.http = common::http_from(ip(1));
    assert_eq!(client.session(&user.api_key).await.status, 400);
}

#[tokio::test]
async fn listed_permitted_ips_bind_to_those_and_a_star_allows_any() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let device =
        |ips: Value| json!({"description": "x", "secret": user.api_key, "permitted_ips": ips});

    let mut listed = Client::new(fake.api_base());
    listed.install().await;
    let r = listed
        .post("/device-server", device(json!(["127.0.0.4"])))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Not even the IP that registered the device, if it is not listed.
    assert_eq!(listed.session(&user.api_key).await.status, 400);
    listed.http = common::http_from(ip(4));
    assert_eq!(listed.session(&user.api_key).await.status, 200);

    let mut any = Client::new(fake.api_base());
    any.install().await;
    let r = any
        .post("/device-server", device(json!(["127.0.0.4", "*"])))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    any.http = common::http_from(ip(5));
    let s = any.session(&user.api_key).await;
    assert_eq!(s.status, 200);
    any.token = Some(s.item("Token")["token"].as_str().unwrap().to_owned());
    any.http = common::http_from(ip(6));
    assert_eq!(any.get("/user").await.status, 200);

    let mut bad = Client::new(fake.api_base());
    bad.install().await;
    let r = bad
        .post("/device-server", device(json!(["not-an-ip"])))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("not-an-ip"), "{}", r.error());
}
