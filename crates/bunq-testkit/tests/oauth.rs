//! OAuth clients, the consent page and the token endpoint, and sessions made with the
//! resulting access token.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bunq_testkit::{BAD_CREDENTIALS_DESCRIPTION, FakeBunq, FakeConfig};
use common::Client;
use serde_json::{Value, json};

const CALLBACK: &str = "http://127.0.0.1:9/callback";

struct App {
    client_id: String,
    secret: String,
}

/// Registers an OAuth client with `CALLBACK` for a fresh sandbox user.
async fn register(fake: &FakeBunq) -> App {
    let owner = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &owner.api_key).await;
    let base = format!("/user/{}/oauth-client", owner.user_id);
    let created = client.post(&base, json!({"status": "ACTIVE"})).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let cid = created.id();
    let cb = client
        .post(
            &format!("{base}/{cid}/callback-url"),
            json!({"url": CALLBACK}),
        )
        .await;
    assert_eq!(cb.status, 200, "{}", cb.body);
    let read = client.get(&format!("{base}/{cid}")).await;
    let oc = read.item("OauthClient");
    assert_eq!(oc["callback_url"][0]["url"], CALLBACK);
    App {
        client_id: oc["client_id"].as_str().unwrap().to_owned(),
        secret: oc["secret"].as_str().unwrap().to_owned(),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Calls `/auth` and returns the status and the redirect's query parameters.
async fn authorize(fake: &FakeBunq, query: &[(&str, &str)]) -> (u16, HashMap<String, String>) {
    let r = http()
        .get(fake.oauth_authorize_url())
        .query(query)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let params = r
        .headers()
        .get("location")
        .map(|l| {
            let url = url::Url::parse(l.to_str().unwrap()).unwrap();
            assert!(url.as_str().starts_with(CALLBACK));
            url.query_pairs().into_owned().collect()
        })
        .unwrap_or_default();
    (status, params)
}

async fn code_for(fake: &FakeBunq, app: &App, extra: &[(&str, &str)]) -> String {
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", app.client_id.as_str()),
        ("redirect_uri", CALLBACK),
        ("state", "st4te"),
    ];
    q.extend_from_slice(extra);
    let (status, params) = authorize(fake, &q).await;
    assert_eq!(status, 302);
    assert_eq!(params["state"], "st4te");
    params["code"].clone()
}

async fn exchange(fake: &FakeBunq, params: &[(&str, &str)], as_form: bool) -> (u16, Value) {
    let req = http().post(fake.oauth_token_url());
    let req = if as_form {
        req.form(params)
    } else {
        req.query(params)
    };
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn token_params<'a>(app: &'a App, code: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("client_id", &app.client_id),
        ("client_secret", &app.secret),
    ]
}

#[tokio::test]
async fn one_oauth_client_per_user_and_it_can_be_listed_and_updated() {
    let fake = FakeBunq::start().await.unwrap();
    let owner = fake.create_sandbox_user();
    let (client, _) = Client::login(fake.api_base(), &owner.api_key).await;
    let base = format!("/user/{}/oauth-client", owner.user_id);
    let cid = client.post(&base, json!({"status": "ACTIVE"})).await.id();
    let second = client.post(&base, json!({"status": "ACTIVE"})).await;
    assert_eq!(second.status, 400);
    let list = client.get(&base).await;
    let items = list.body["Response"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["OauthClient"]["id"].as_u64(), Some(cid));
    assert_eq!(
        items[0]["OauthClient"]["client_id"].as_str().unwrap().len(),
        64
    );
    let put = client
        .put(&format!("{base}/{cid}"), json!({"status": "CANCELLED"}))
        .await;
    assert_eq!(put.status, 200);
    let read = client.get(&format!("{base}/{cid}")).await;
    assert_eq!(read.item("OauthClient")["status"], "CANCELLED");
    let bad = client
        .post(
            &format!("{base}/{cid}/callback-url"),
            json!({"url": "not a url"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(client.get(&format!("{base}/999")).await.status, 404);
}

#[tokio::test]
async fn code_flow_yields_an_access_token_whose_session_is_a_user_api_key() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let end_user = fake.create_sandbox_user();
    let uid = end_user.user_id.to_string();
    let code = code_for(&fake, &app, &[("user_id", &uid)]).await;
    let (status, token) = exchange(&fake, &token_params(&app, &code), false).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["state"], "st4te");
    let access_token = token["access_token"].as_str().unwrap();

    let (client, session) = Client::login(fake.api_base(), access_token).await;
    let key = session.item("UserApiKey");
    let api_key_id = key["id"].as_u64().unwrap();
    assert!(key["requested_by_user"]["UserPaymentServiceProvider"]["session_timeout"].is_u64());
    assert_eq!(
        key["granted_by_user"]["UserPerson"]["id"].as_u64(),
        Some(end_user.user_id)
    );
    // Paths use the UserApiKey id and act on the granting user's accounts.
    let list = client
        .get(&format!("/user/{api_key_id}/monetary-account-bank"))
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    let first = list.body["Response"][0]["MonetaryAccountBank"]["id"].as_u64();
    assert!(end_user.monetary_account_ids.contains(&first.unwrap()));
    assert_eq!(fake.calls("GET /auth"), 1);
    assert_eq!(fake.calls("POST /token"), 1);
}

#[tokio::test]
async fn token_endpoint_accepts_a_form_body() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let code = code_for(&fake, &app, &[]).await;
    let (status, token) = exchange(&fake, &token_params(&app, &code), true).await;
    assert_eq!(status, 200, "{token}");
}

#[tokio::test]
async fn codes_are_single_use() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let code = code_for(&fake, &app, &[]).await;
    assert_eq!(
        exchange(&fake, &token_params(&app, &code), false).await.0,
        200
    );
    let (status, err) = exchange(&fake, &token_params(&app, &code), false).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn codes_expire_after_code_ttl() {
    let fake = FakeBunq::start_with(FakeConfig {
        code_ttl: Duration::from_millis(100),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let app = register(&fake).await;
    let code = code_for(&fake, &app, &[]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, err) = exchange(&fake, &token_params(&app, &code), false).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn refuses_wrong_secret_redirect_uri_code_and_grant_type() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let code = code_for(&fake, &app, &[]).await;
    let mut wrong_secret = token_params(&app, &code);
    wrong_secret[4].1 = "nope";
    let mut wrong_redirect = token_params(&app, &code);
    wrong_redirect[2].1 = "http://127.0.0.1:9/other";
    let mut unknown_code = token_params(&app, &code);
    unknown_code[1].1 = "unknown";
    for params in [&wrong_secret, &wrong_redirect, &unknown_code] {
        let (status, err) = exchange(&fake, params, false).await;
        assert_eq!(status, 400);
        assert_eq!(err["error"], "invalid_grant", "{err}");
    }
    let mut grant = token_params(&app, &code);
    grant[0].1 = "client_credentials";
    let (status, err) = exchange(&fake, &grant, false).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"], "unsupported_grant_type");
    // The failed attempts did not burn the code.
    assert_eq!(
        exchange(&fake, &token_params(&app, &code), false).await.0,
        200
    );
}

#[tokio::test]
async fn authorize_refuses_unknown_client_and_unregistered_redirect_without_redirecting() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let (status, params) = authorize(
        &fake,
        &[
            ("response_type", "code"),
            ("client_id", "unknown"),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_eq!((status, params.len()), (400, 0));
    let r = http()
        .get(fake.oauth_authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", "http://evil.example/cb"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn deny_consent_redirects_with_access_denied() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    fake.knobs().deny_consent(true);
    let (status, params) = authorize(
        &fake,
        &[
            ("response_type", "code"),
            ("client_id", app.client_id.as_str()),
            ("redirect_uri", CALLBACK),
            ("state", "s1"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "s1");
    assert!(!params.contains_key("code"));
}

#[tokio::test]
async fn grant_oauth_access_shortcut_opens_user_api_key_sessions() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let token = fake.grant_oauth_access(user.user_id);
    let (_, session) = Client::login(fake.api_base(), &token).await;
    assert_eq!(
        session.item("UserApiKey")["granted_by_user"]["UserPerson"]["id"].as_u64(),
        Some(user.user_id)
    );
}

#[tokio::test]
async fn revoked_grant_is_refused_at_device_and_session_server_until_a_new_consent() {
    let fake = FakeBunq::start().await.unwrap();
    let app = register(&fake).await;
    let end_user = fake.create_sandbox_user();
    let uid = end_user.user_id.to_string();
    let code = code_for(&fake, &app, &[("user_id", &uid)]).await;
    let (_, token) = exchange(&fake, &token_params(&app, &code), false).await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    // One installation with a device and a session, one with only a device.
    let (session, _) = Client::login(fake.api_base(), &access_token).await;
    let mut device_only = Client::new(fake.api_base());
    device_only.install().await;
    assert_eq!(device_only.device(&access_token).await.status, 200);
    // A grant by someone else stays live.
    let bystander = fake.create_sandbox_user();
    let other_token = fake.grant_oauth_access(bystander.user_id);
    let (other_session, _) = Client::login(fake.api_base(), &other_token).await;
    let session_calls = fake.calls("POST /session-server");

    assert_eq!(fake.revoke_oauth_grants(end_user.user_id), 1);
    assert_eq!(
        fake.revoke_oauth_grants(end_user.user_id),
        0,
        "nothing left to revoke"
    );

    // The session opened with the token has ended.
    let r = session.get("/user").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "Insufficient authorisation.");
    // session-server from the installation whose device holds the token: refused, signed.
    let r = device_only.session(&access_token).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), BAD_CREDENTIALS_DESCRIPTION);
    assert!(r.headers.contains_key("x-bunq-server-signature"));
    // device-server with it on a fresh installation: refused.
    let mut fresh = Client::new(fake.api_base());
    fresh.install().await;
    let r = fresh.device(&access_token).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "User credentials are incorrect. Incorrect API key or IP address."
    );
    // Refused calls are still counted.
    assert_eq!(fake.calls("POST /session-server"), session_calls + 1);
    assert_eq!(other_session.get("/user").await.status, 200);

    // A new consent gives a new token that works.
    let code = code_for(&fake, &app, &[("user_id", &uid)]).await;
    let (status, token) = exchange(&fake, &token_params(&app, &code), false).await;
    assert_eq!(status, 200, "{token}");
    let new_token = token["access_token"].as_str().unwrap();
    assert_ne!(new_token, access_token);
    let (client, _) = Client::login(fake.api_base(), new_token).await;
    assert_eq!(client.get("/user").await.status, 200);
}

#[tokio::test]
async fn revoke_over_the_control_endpoint_and_from_knobs() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let first = fake.grant_oauth_access(user.user_id);
    let second = fake.grant_oauth_access(user.user_id);
    let (session, _) = Client::login(fake.api_base(), &first).await;
    let r: Value = http()
        .post(format!("{}/revoke-oauth-grants", fake.control_url()))
        .json(&json!({"user_id": user.user_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["revoked"], 2);
    assert_eq!(session.get("/user").await.status, 401);
    let mut client = Client::new(fake.api_base());
    client.install().await;
    assert_eq!(client.device(&second).await.status, 400);

    let third = fake.grant_oauth_access(user.user_id);
    let (session, _) = Client::login(fake.api_base(), &third).await;
    assert_eq!(fake.knobs().revoke_oauth_grants(user.user_id), 1);
    assert_eq!(session.get("/user").await.status, 401);
    // API-key sessions of the same user are not OAuth grants: they keep working.
    let (own, _) = Client::login(fake.api_base(), &user.api_key).await;
    assert_eq!(fake.revoke_oauth_grants(user.user_id), 0);
    assert_eq!(own.get("/user").await.status, 200);
}
