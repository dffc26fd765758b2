//! Store throughput: warm token+context lookups (what the gateway does to act for a user
//! after a restart) and connected-user writes, on the machine at hand.
//!
//! `cargo bench -p bunq-store --bench store`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bunq_session::{
    ApiContext, ContextStore as _, CredentialId, Device, Installation, Session, UserKind,
};
use bunq_signing::PrivateKey;
use bunq_store::{Durability, MasterKey, Store, StoreOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secrecy::SecretString;

const USERS: u64 = 200;
const BATCH: u64 = 64;

fn context(installation: &PrivateKey, server: &PrivateKey, i: u64) -> ApiContext {
    ApiContext {
        api_base: "https://api.bunq.com/v1".to_owned(),
        secret: SecretString::from(format!("access-token-{i}")),
        installation: Installation {
            id: i,
            token: SecretString::from(format!("installation-token-{i}")),
            private_key: installation.clone(),
            server_public_key: server.public_key(),
        },
        device: Some(Device { id: i }),
        session: Some(Session {
            id: i,
            token: SecretString::from(format!("session-token-{i}")),
            user_id: i,
            kind: UserKind::UserApiKey,
            granted_by_user_id: None,
            expires_at: std::time::SystemTime::now() + Duration::from_secs(3600),
        }),
        psd2: None,
    }
}

fn lookups(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<PrivateKey> = (0..4).map(|_| PrivateKey::generate().unwrap()).collect();
    let server = PrivateKey::generate().unwrap();
    let key = MasterKey::generate().unwrap();
    let path = dir.path().join("bench.db");
    let store = rt.block_on(async {
        let store = Store::open(&path, key.clone()).await.unwrap();
        for i in 0..USERS {
            let user = format!("user-{i}");
            store
                .put_access_token(&user, &SecretString::from(format!("access-token-{i}")))
                .await
                .unwrap();
            store
                .save(
                    &CredentialId::new(&user),
                    &context(&keys[(i % 4) as usize], &server, i),
                )
                .await
                .unwrap();
            store.mark_connected(&user, i).await.unwrap();
        }
        store.close().await.unwrap();
        // Reopen: nothing parsed is left over from the writes; the warm-up fills it.
        Store::open(&path, key.clone()).await.unwrap()
    });

    let mut group = c.benchmark_group("lookup");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("token_and_context_sequential", |b| {
        b.iter(|| {
            i = (i + 1) % USERS;
            let user = format!("user-{i}");
            rt.block_on(store.token_and_context(&user)).unwrap()
        })
    });

    // Throughput with concurrent callers, as a gateway serving many users has.
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("token_and_context_concurrent_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..BATCH)
                    .map(|j| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            store
                                .token_and_context(&format!("user-{}", j % USERS))
                                .await
                                .unwrap()
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    group.bench_function("access_token_then_contextstore_load_concurrent_64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..BATCH)
                    .map(|j| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            let user = format!("user-{}", j % USERS);
                            store.access_token(&user).await.unwrap();
                            store.load(&CredentialId::new(user)).await.unwrap()
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    group.finish();
}

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("write");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    for (name, durability) in [
        ("connected_user_full_sync", Durability::Full),
        ("connected_user_normal_sync", Durability::ProcessCrash),
    ] {
        let store = rt.block_on(async {
            Store::open_with(
                dir.path().join(format!("{name}.db")),
                MasterKey::generate().unwrap(),
                StoreOptions::default().durability(durability),
            )
            .await
            .unwrap()
        });
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let user = format!("user-{i}");
                rt.block_on(async {
                    store
                        .put_access_token(&user, &SecretString::from("access-token"))
                        .await
                        .unwrap();
                    store.mark_connected(&user, i).await.unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups, writes);
criterion_main!(benches);
