//! Throughput of the fake on loopback: authenticated, signed
//! `GET /user/{id}/monetary-account-bank` calls (request signature verified, response
//! signed from the cache), 16 concurrent clients over keep-alive connections.
//! Criterion reports the rate as elements/s = requests/s.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use bunq_signing::PrivateKey;
use bunq_testkit::FakeBunq;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const BATCH: u64 = 256;
const CONCURRENCY: u64 = 16;

struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    signature: String,
}

async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    key: &PrivateKey,
    body: Value,
) -> Value {
    let body = body.to_string();
    let mut req = http.post(url);
    if let Some(t) = token {
        req = req.header("X-Bunq-Client-Authentication", t).header(
            "X-Bunq-Client-Signature",
            key.sign_body(body.as_bytes()).as_str().to_owned(),
        );
    }
    req.body(body).send().await.unwrap().json().await.unwrap()
}

fn token_of(v: &Value) -> String {
    v["Response"][1]["Token"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn login(fake: &FakeBunq) -> Session {
    let user = fake.create_sandbox_user();
    let http = reqwest::Client::new();
    let key = PrivateKey::generate().unwrap();
    let api = fake.api_base();
    let inst = post(
        &http,
        format!("{api}/installation"),
        None,
        &key,
        json!({"client_public_key": key.public_key_pem()}),
    )
    .await;
    let installation = token_of(&inst);
    post(
        &http,
        format!("{api}/device-server"),
        Some(&installation),
        &key,
        json!({"description": "bench", "secret": user.api_key, "permitted_ips": []}),
    )
    .await;
    let session = post(
        &http,
        format!("{api}/session-server"),
        Some(&installation),
        &key,
        json!({"secret": user.api_key}),
    )
    .await;
    Session {
        http,
        url: format!("{api}/user/{}/monetary-account-bank", user.user_id),
        token: token_of(&session),
        signature: key.sign_body(b"").as_str().to_owned(),
    }
}

async fn batch(session: &Session) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, url, token, sig) = (
            session.http.clone(),
            session.url.clone(),
            session.token.clone(),
            session.signature.clone(),
        );
        tasks.spawn(async move {
            for _ in 0..BATCH / CONCURRENCY {
                let r = http
                    .get(&url)
                    .header("X-Bunq-Client-Authentication", &token)
                    .header("X-Bunq-Client-Signature", &sig)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                r.bytes().await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn authenticated_get(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeBunq::start()).unwrap();
    let session = rt.block_on(login(&fake));
    let mut group = c.benchmark_group("fake");
    group
        .throughput(Throughput::Elements(BATCH))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("authenticated_get_monetary_account_bank", |b| {
        b.iter(|| rt.block_on(batch(&session)));
    });
    group.finish();
    drop(fake);
}

criterion_group!(benches, authenticated_get);
criterion_main!(benches);
