//! Faults as bunq shows them: unsigned 429/491/5xx with `Retry-After`, refused request
//! ids, connections cut or answers delayed after execution, and counting payments.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use bunq_testkit::{FakeBunq, REUSED_REQUEST_ID_DESCRIPTION, SandboxUser};
use common::Client;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A logged-in user with 100.00 on the first account and the IBAN of the second.
async fn funded(fake: &FakeBunq) -> (SandboxUser, Client, String) {
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    let (from, to) = (user.monetary_account_ids[0], user.monetary_account_ids[1]);
    let r = client
        .post(
            &format!(
                "/user/{}/monetary-account/{from}/request-inquiry",
                user.user_id
            ),
            json!({
                "amount_inquired": {"value": "100", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                "description": "top up",
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
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
    (user, client, iban)
}

fn payment_path(user: &SandboxUser) -> String {
    format!(
        "/user/{}/monetary-account/{}/payment",
        user.user_id, user.monetary_account_ids[0]
    )
}

fn payment(amount: &str, iban: &str) -> Vec<u8> {
    json!({
        "amount": {"value": amount, "currency": "EUR"},
        "counterparty_alias": {"type": "IBAN", "value": iban, "name": "Someone"},
        "description": "rent",
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn failures_with_429_491_and_5xx_are_unsigned_others_signed() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    for status in [429, 491, 500, 503] {
        fake.knobs().fail_next_with_status(status, 1);
        let r = client.get("/user").await;
        assert_eq!(r.status, status);
        assert!(
            !r.headers.contains_key("x-bunq-server-signature"),
            "{status} is unsigned"
        );
        assert!(r.headers.contains_key("x-bunq-client-response-id"));
        assert!(r.body["Error"][0]["error_description"].is_string());
        assert!(!r.headers.contains_key("retry-after"));
    }
    // Other statuses stay signed (the client verifies them).
    fake.knobs().fail_next_with_status(409, 1);
    let r = client.get("/user").await;
    assert_eq!(r.status, 409);
    assert!(r.headers.contains_key("x-bunq-server-signature"));
    // An unsigned answer does not use up a tampered signature.
    fake.knobs().tamper_next_signatures(1);
    fake.knobs().fail_next_with_status(503, 1);
    assert_eq!(client.get("/user").await.status, 503);
    let mut unverified = client;
    unverified.verify = false;
    let r = unverified.get("/user").await;
    let sig = r.headers["x-bunq-server-signature"].to_str().unwrap();
    let key = unverified.server_key.as_ref().unwrap();
    assert!(
        key.verify_body(&r.raw, sig).is_err(),
        "the tamper knob waited for a signed answer"
    );
}

#[tokio::test]
async fn rate_limit_429s_are_unsigned() {
    let fake = FakeBunq::start().await.unwrap();
    let client = Client::new(fake.api_base());
    fake.knobs().set_rate_limits(true);
    let mut last = None;
    for _ in 0..6 {
        last = Some(client.post("/sandbox-user-person", json!({})).await);
    }
    let r = last.unwrap();
    assert_eq!(r.status, 429);
    assert!(!r.headers.contains_key("x-bunq-server-signature"));
}

#[tokio::test]
async fn retry_after_knob_adds_the_header_from_rust_and_over_control() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &user.api_key).await;
    fake.knobs()
        .fail_next_with_status_and_retry_after(491, 2, 30);
    for _ in 0..2 {
        let r = client.get("/user").await;
        assert_eq!(r.status, 491);
        assert_eq!(r.headers["retry-after"], "30");
    }
    assert_eq!(client.get("/user").await.status, 200);

    let r = reqwest::Client::new()
        .post(format!("{}/knobs", fake.control_url()))
        .json(&json!({"fail_next_with_status": {"status": 429, "n": 1, "retry_after_secs": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client.get("/user").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "5");
    // Without retry_after_secs over control: no header.
    reqwest::Client::new()
        .post(format!("{}/knobs", fake.control_url()))
        .json(&json!({"fail_next_with_status": {"status": 503, "n": 1}}))
        .send()
        .await
        .unwrap();
    let r = client.get("/user").await;
    assert_eq!(r.status, 503);
    assert!(!r.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn reused_request_ids_are_refused_per_device_for_non_gets_only() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);

    // GETs are not remembered: the same id twice is fine, and a POST may use it later.
    for _ in 0..2 {
        let r = client
            .send(reqwest::Method::GET, "/user", Vec::new(), Some("id-a"))
            .await;
        assert_eq!(r.status, 200);
    }
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("id-a"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The id belongs to the device, not to the endpoint.
    let inquiry = format!(
        "/user/{}/monetary-account/{}/request-inquiry",
        user.user_id, user.monetary_account_ids[0]
    );
    let top_up = json!({
        "amount_inquired": {"value": "1", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
    });
    let r = client
        .send(
            reqwest::Method::POST,
            &inquiry,
            top_up.to_string().into_bytes(),
            Some("id-a"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), REUSED_REQUEST_ID_DESCRIPTION);

    // PUT too.
    let clients = format!("/user/{}/oauth-client", user.user_id);
    let cid = client.post(&clients, json!({})).await.id();
    let cancel = json!({"status": "CANCELLED"}).to_string().into_bytes();
    let one = format!("{clients}/{cid}");
    let put = |id| client.send(reqwest::Method::PUT, &one, cancel.clone(), Some(id));
    assert_eq!(put("id-put").await.status, 200);
    let r = put("id-put").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), REUSED_REQUEST_ID_DESCRIPTION);

    // A call refused by its handler was still received: its id is used.
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1000", &iban),
            Some("id-b"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("Insufficient balance"), "{}", r.error());
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("id-b"),
        )
        .await;
    assert_eq!(r.error(), REUSED_REQUEST_ID_DESCRIPTION);
    assert_eq!(fake.payment_count(), 1);
    assert_eq!(
        fake.balance(user.user_id, user.monetary_account_ids[0]),
        Some("99.00".to_owned())
    );
}

#[tokio::test]
async fn calls_answered_by_fault_knobs_do_not_use_up_their_request_id() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);
    fake.knobs().fail_next_with_status(503, 1);
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("id-c"),
        )
        .await;
    assert_eq!(r.status, 503);
    fake.knobs().fail_next_with_insufficient_authorisation(1);
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("id-c"),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(fake.payment_count(), 0);
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("id-c"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fake.payment_count(), 1);
}

/// The source chain of `e` holds hyper's "connection closed before message completed".
fn is_incomplete_message(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[tokio::test]
async fn cut_after_execute_executes_then_closes_without_a_byte() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);
    fake.knobs().cut_after_execute(2);

    // 1. A raw connection reads EOF before any byte of a status line.
    let body = payment("10", &iban);
    let head = format!(
        "POST /v1{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         X-Bunq-Client-Authentication: {}\r\nX-Bunq-Client-Signature: {}\r\n\
         X-Bunq-Client-Request-Id: raw-1\r\nContent-Length: {}\r\n\r\n",
        fake.local_addr(),
        client.token.as_deref().unwrap(),
        client.key.sign_body(&body).as_str(),
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(fake.local_addr())
        .await
        .unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the fake closes the connection");
    assert!(
        read.is_ok() && answer.is_empty(),
        "{read:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(fake.payment_count(), 1, "the payment was made");
    assert_eq!(
        fake.balance(user.user_id, user.monetary_account_ids[0]),
        Some("90.00".to_owned())
    );

    // 2. hyper (under reqwest) reports an incomplete message.
    let body = payment("5", &iban);
    let err = reqwest::Client::new()
        .post(format!("{}{path}", fake.api_base()))
        .header(
            "X-Bunq-Client-Authentication",
            client.token.clone().unwrap(),
        )
        .header(
            "X-Bunq-Client-Signature",
            client.key.sign_body(&body).as_str().to_owned(),
        )
        .header("X-Bunq-Client-Request-Id", "cut-2")
        .body(body.clone())
        .send()
        .await
        .expect_err("no response");
    assert!(is_incomplete_message(&err), "{err:?}");
    assert_eq!(fake.payment_count(), 2);

    // The retry with the same id learns that the first attempt arrived; the knob is spent.
    let r = client
        .send(reqwest::Method::POST, &path, body.clone(), Some("cut-2"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), REUSED_REQUEST_ID_DESCRIPTION);
    let r = client
        .send(reqwest::Method::POST, &path, body, Some("cut-3"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.payment_count(), 3);
}

#[tokio::test]
async fn cut_after_execute_skips_gets_and_calls_refused_before_executing() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("used"),
        )
        .await;
    assert_eq!(r.status, 200);
    fake.knobs().cut_after_execute(1);
    assert_eq!(client.get("/user").await.status, 200);
    let r = client
        .send(
            reqwest::Method::POST,
            &path,
            payment("1", &iban),
            Some("used"),
        )
        .await;
    assert_eq!(r.error(), REUSED_REQUEST_ID_DESCRIPTION);
    // The next executed call is the one cut.
    let body = payment("1", &iban);
    let cut = client
        .http
        .post(format!("{}{path}", fake.api_base()))
        .header(
            "X-Bunq-Client-Authentication",
            client.token.clone().unwrap(),
        )
        .header(
            "X-Bunq-Client-Signature",
            client.key.sign_body(&body).as_str().to_owned(),
        )
        .body(body)
        .send()
        .await;
    assert!(cut.is_err());
    assert_eq!(fake.payment_count(), 2);
}

#[tokio::test]
async fn delay_after_execute_answers_late_after_executing() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);
    fake.knobs()
        .delay_after_execute(Duration::from_millis(400), 1);
    // GETs are not delayed.
    let started = Instant::now();
    assert_eq!(client.get("/user").await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(400));

    let paid = {
        let fake_ref = &fake;
        async move {
            // While the answer is held back, the payment already shows.
            tokio::time::sleep(Duration::from_millis(200)).await;
            fake_ref.payment_count()
        }
    };
    let started = Instant::now();
    let (r, during) = tokio::join!(
        client.send(reqwest::Method::POST, &path, payment("1", &iban), None),
        paid
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(during, 1, "executed before the delay");
    let started = Instant::now();
    let r = client
        .send(reqwest::Method::POST, &path, payment("1", &iban), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "one call only"
    );
}

#[tokio::test]
async fn after_execute_knobs_and_payment_count_over_control() {
    let fake = FakeBunq::start().await.unwrap();
    let (user, client, iban) = funded(&fake).await;
    let path = payment_path(&user);
    let http = reqwest::Client::new();
    let control = fake.control_url();
    let count = || async {
        let v: Value = http
            .get(format!("{control}/payment-count"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["payment_count"].as_u64().unwrap()
    };
    assert_eq!(count().await, 0);
    let r = http
        .post(format!("{control}/knobs"))
        .json(&json!({"delay_after_execute": {"delay_ms": 300, "n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let started = Instant::now();
    let r = client
        .send(reqwest::Method::POST, &path, payment("1", &iban), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(count().await, 1);

    let r = http
        .post(format!("{control}/knobs"))
        .json(&json!({"cut_after_execute": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = payment("1", &iban);
    let cut = reqwest::Client::new()
        .post(format!("{}{path}", fake.api_base()))
        .header(
            "X-Bunq-Client-Authentication",
            client.token.clone().unwrap(),
        )
        .header(
            "X-Bunq-Client-Signature",
            client.key.sign_body(&body).as_str().to_owned(),
        )
        .body(body)
        .send()
        .await;
    assert!(is_incomplete_message(&cut.unwrap_err()));
    assert_eq!(count().await, 2);
    assert_eq!(fake.payment_count(), 2);
}
