//! Calls per second through a warm `SessionManager` against the fake bunq, beside the
//! same GET sent by a bare reqwest client (same headers, no limiter, no verification):
//! what a hand-written client would get, to compare our whole stack with (the manager
//! runs on hyper's client directly, see `src/transport.rs`). Run with
//! `cargo bench -p bunq-session`.
#![allow(clippy::unwrap_used)]
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::sync::Arc;
use std::time::{Duration, Instant};

use bunq_session::{
    ApiRequest, BunqClient, ClientConfig, ContextStore as _, CredentialId, Environment,
    MemoryContextStore, RateLimitPolicy, SessionManager, SessionManagerConfig,
};
use bunq_testkit::FakeBunq;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::{ExposeSecret as _, SecretString};

const CONCURRENCY: u64 = 16;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (fake, manager, cred, user_id) = rt.block_on(async {
        let fake = FakeBunq::start().await.unwrap();
        let client = BunqClient::new(
            ClientConfig::new(Environment::Custom {
                api_base: fake.api_base(),
            })
            .rate_limits(RateLimitPolicy::disabled()),
        )
        .unwrap();
        let manager = SessionManager::new(
            client,
            Arc::new(MemoryContextStore::new()),
            SessionManagerConfig::default(),
        );
        let user = fake.create_sandbox_user();
        let cred = CredentialId::new("bench");
        manager
            .connect(&cred, SecretString::from(user.api_key))
            .await
            .unwrap();
        (fake, manager, cred, user.user_id)
    });
    let path = format!("user/{user_id}");
    let url = format!("{}/{path}", fake.api_base());

    // The baseline: a bare client sending what bunq needs, precomputed once.
    let (ctx_token, signature) = rt.block_on(async {
        let session = manager.session(&cred).await.unwrap();
        let ctx = manager.store().load(&cred).await.unwrap().unwrap();
        (
            session.token.expose_secret().to_owned(),
            ctx.installation
                .private_key
                .sign_body(b"")
                .as_str()
                .to_owned(),
        )
    });
    let bare = reqwest::Client::new();

    let mut group = c.benchmark_group("warm_get_user");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(CONCURRENCY));

    group.bench_function("session_manager", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let calls = (0..CONCURRENCY).map(|_| {
                        let m = manager.clone();
                        let cred = cred.clone();
                        let path = path.clone();
                        tokio::spawn(async move {
                            m.request(&cred, ApiRequest::get(path)).await.unwrap()
                        })
                    });
                    for r in futures::future::join_all(calls).await {
                        assert_eq!(r.unwrap().status, 200);
                    }
                }
                start.elapsed()
            })
        });
    });

    group.bench_function("bare_reqwest", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let calls = (0..CONCURRENCY).map(|_| {
                        let req = bare
                            .get(&url)
                            .header("user-agent", "bench")
                            .header("x-bunq-client-request-id", uuid::Uuid::new_v4().to_string())
                            .header("x-bunq-client-authentication", &ctx_token)
                            .header("x-bunq-client-signature", &signature);
                        tokio::spawn(async move {
                            let resp = req.send().await.unwrap();
                            assert_eq!(resp.status(), 200);
                            resp.bytes().await.unwrap()
                        })
                    });
                    for r in futures::future::join_all(calls).await {
                        r.unwrap();
                    }
                }
                start.elapsed()
            })
        });
    });
    group.finish();
    drop(fake);
}

criterion_group!(benches, bench);
criterion_main!(benches);
