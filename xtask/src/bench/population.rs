//! Items 5 and 6's data: a gateway database filled directly through bunq-store with many
//! connected users, some with real sessions at the fake, and the store's own lookup rate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bunq_session::{ApiContext, BunqClient, ClientConfig, Environment, RateLimitPolicy};
use bunq_signing::PrivateKey;
use bunq_store::{Durability, MasterKey, Store, StoreOptions};
use bunq_testkit::FakeBunq;
use secrecy::SecretString;

/// One user with a live session at the fake.
#[derive(Debug, Clone)]
pub struct LiveUser {
    /// The gateway's name for the user.
    pub user_ref: String,
    /// The session's user id (the path's `/user/{id}`).
    pub bunq_user_id: u64,
}

/// What was written.
pub struct Population {
    /// Users with a stored live session.
    pub live: Vec<LiveUser>,
    /// The user with an installation and device but no session (for coalescing).
    pub sessionless: LiveUser,
    /// Connected users in total.
    pub users: usize,
}

/// Writes `users` connected users into a fresh database at `db`: `live` of them with an
/// installation, device and session opened at the fake (all sharing one RSA key: keys
/// cost 50-300 ms each to generate and the footprint does not depend on which key),
/// one more with installation and device but no session, the rest with a token only.
/// Opened with [`Durability::ProcessCrash`] to spare 10,000 fsyncs; the gateway reopens
/// it with its own settings.
pub async fn populate(
    db: &Path,
    key: MasterKey,
    fake: &FakeBunq,
    users: usize,
    live: usize,
) -> Result<Population, String> {
    let store = Store::open_with(
        db,
        key,
        StoreOptions::default().durability(Durability::ProcessCrash),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = BunqClient::new(
        ClientConfig::new(Environment::Custom {
            api_base: fake.api_base(),
        })
        .user_agent("bunq-bench/1.0")
        .rate_limits(RateLimitPolicy::disabled()),
    )
    .map_err(|e| e.to_string())?;
    let owner = fake.create_sandbox_user();
    let rsa = tokio::task::spawn_blocking(PrivateKey::generate)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;

    // Eight openings at a time: the fake answers each lifecycle call with a freshly
    // signed body, so this is CPU-bound on two cores anyway.
    let mut live_users = Vec::with_capacity(live);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while live_users.len() < live {
        while tasks.len() < 8 && next < live {
            let user_ref = format!("bench-live-{next}");
            next += 1;
            let token = fake.grant_oauth_access(owner.user_id);
            let (client, store, rsa) = (client.clone(), store.clone(), rsa.clone());
            tasks.spawn(
                async move { open_context(&client, &store, rsa, user_ref, token, true).await },
            );
        }
        match tasks.join_next().await {
            Some(joined) => live_users.push(joined.map_err(|e| e.to_string())??),
            None => break,
        }
    }
    let sessionless = open_context(
        &client,
        &store,
        rsa.clone(),
        "bench-sessionless".to_owned(),
        fake.grant_oauth_access(owner.user_id),
        false,
    )
    .await?;

    // Token-only users never call bunq in the bench; their token is a placeholder.
    for i in live + 1..users {
        let user_ref = format!("bench-idle-{i}");
        store
            .put_access_token(
                &user_ref,
                &SecretString::from(format!("bench-placeholder-token-{i}")),
            )
            .await
            .map_err(|e| e.to_string())?;
        store
            .mark_connected(&user_ref, 10_000_000 + i as u64)
            .await
            .map_err(|e| e.to_string())?;
    }
    store.close().await.map_err(|e| e.to_string())?;
    Ok(Population {
        live: live_users,
        sessionless,
        users,
    })
}

async fn open_context(
    client: &BunqClient,
    store: &Store,
    rsa: PrivateKey,
    user_ref: String,
    token: String,
    with_session: bool,
) -> Result<LiveUser, String> {
    let secret = SecretString::from(token);
    let installation = client
        .installation_with_key(rsa)
        .await
        .map_err(|e| e.to_string())?;
    let device = client
        .device_server(&installation, &secret, "bunq-bench", &[])
        .await
        .map_err(|e| e.to_string())?;
    let session = if with_session {
        Some(
            client
                .session_server(&installation, &secret)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let bunq_user_id = session.as_ref().map_or(0, |s| s.user_id);
    store
        .put_access_token(&user_ref, &secret)
        .await
        .map_err(|e| e.to_string())?;
    store
        .mark_connected(&user_ref, bunq_user_id)
        .await
        .map_err(|e| e.to_string())?;
    let context = ApiContext {
        api_base: client.api_base().to_owned(),
        secret,
        installation,
        device: Some(device),
        session,
        psd2: None,
    };
    store
        .save_context(&user_ref, &context)
        .await
        .map_err(|e| e.to_string())?;
    Ok(LiveUser {
        user_ref,
        bunq_user_id,
    })
}

/// Warm `token_and_context` lookups per second over `refs`, from `concurrency` tasks
/// for `duration` (after one warming pass over every ref).
pub async fn lookups_per_second(
    db: &Path,
    key: MasterKey,
    refs: &[String],
    concurrency: usize,
    duration: Duration,
) -> Result<f64, String> {
    if refs.is_empty() {
        return Err("no users to look up".into());
    }
    let store = Store::open(db, key).await.map_err(|e| e.to_string())?;
    for r in refs {
        let (token, context) = store
            .token_and_context(r)
            .await
            .map_err(|e| e.to_string())?;
        if token.is_none() || context.is_none() {
            return Err(format!("{r}: token or context missing"));
        }
    }
    let refs: Arc<Vec<String>> = Arc::new(refs.to_vec());
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency.max(1) {
        let (store, refs, done) = (store.clone(), refs.clone(), done.clone());
        tasks.spawn(async move {
            let mut i = t;
            while started.elapsed() < duration {
                let r = &refs[i % refs.len()];
                store
                    .token_and_context(r)
                    .await
                    .map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 7;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| e.to_string())??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = store.close().await;
    Ok(rate)
}
