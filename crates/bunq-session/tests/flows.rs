//! The lifecycle and the session manager against the fake bunq (`bunq-testkit`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bunq_session::{
    ApiRequest, BunqClient, ClientConfig, ContextStore as _, CredentialId, Environment, Error,
    FilterScope, MemoryContextStore, NotificationFilter, RateLimitPolicy, SessionManager,
    SessionManagerConfig, UserKind,
};
use bunq_testkit::{FakeBunq, FakeConfig};
use secrecy::{ExposeSecret as _, SecretString};

type Manager = SessionManager<Arc<MemoryContextStore>>;

fn client(fake: &FakeBunq, policy: RateLimitPolicy, max_retries: u32) -> BunqClient {
    let mut config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .rate_limits(policy)
    .request_timeout(Duration::from_secs(20));
    config.max_retries = max_retries;
    config.retry_backoff = Duration::from_millis(50);
    BunqClient::new(config).unwrap()
}

fn manager(
    client: BunqClient,
    store: &Arc<MemoryContextStore>,
    config: SessionManagerConfig,
) -> Manager {
    SessionManager::new(client, Arc::clone(store), config)
}

/// A fake without limits and a manager with none.
async fn plain() -> (FakeBunq, Manager, Arc<MemoryContextStore>) {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig::default(),
    );
    (fake, m, store)
}

async fn connect_sandbox_user(fake: &FakeBunq, m: &Manager, name: &str) -> (CredentialId, u64) {
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new(name);
    m.connect(&cred, SecretString::from(user.api_key))
        .await
        .unwrap();
    (cred, user.user_id)
}

fn get_user(user_id: u64) -> ApiRequest {
    ApiRequest::get(format!("user/{user_id}"))
}

/// The ids of the credential's bank accounts (first page), with a plain GET.
async fn bank_account_ids(m: &Manager, cred: &CredentialId) -> Result<Vec<u64>, Error> {
    let user = m.session(cred).await?.user_id;
    let answer = m
        .request(
            cred,
            ApiRequest::get(format!("user/{user}/monetary-account-bank")),
        )
        .await?
        .into_result()?;
    Ok(answer
        .list::<serde_json::Value>("MonetaryAccountBank")?
        .items
        .iter()
        .filter_map(|a| a["id"].as_u64())
        .collect())
}

/// The object type of the credential's `GET /user/{id}`.
async fn user_type(m: &Manager, cred: &CredentialId) -> Result<String, Error> {
    let user = m.session(cred).await?.user_id;
    let answer = m.request(cred, get_user(user)).await?.into_result()?;
    Ok(answer
        .items()?
        .into_iter()
        .next()
        .map(|(kind, _)| kind)
        .unwrap_or_default())
}

#[tokio::test]
async fn api_key_flow_connects_persists_and_lists_accounts() {
    let (fake, m, store) = plain().await;
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("alice");
    let ctx = m
        .connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();
    let session = ctx.session.as_ref().unwrap();
    assert_eq!(session.kind, UserKind::UserPerson);
    assert_eq!(session.user_id, user.user_id);
    assert!(ctx.device.is_some());

    let stored = store.load(&cred).await.unwrap().unwrap();
    assert_eq!(
        stored.session.unwrap().token.expose_secret(),
        session.token.expose_secret()
    );

    let mut ids = bank_account_ids(&m, &cred).await.unwrap();
    ids.sort_unstable();
    let mut expected = user.monetary_account_ids.clone();
    expected.sort_unstable();
    assert_eq!(ids, expected);

    assert_eq!(user_type(&m, &cred).await.unwrap(), "UserPerson");
    assert_eq!(fake.calls("POST /installation"), 1);
    assert_eq!(fake.calls("POST /device-server"), 1);
    assert_eq!(fake.calls("POST /session-server"), 1);
    assert_eq!(m.session_creations(), 1);
}

#[tokio::test]
async fn oauth_token_flow_gets_a_user_api_key_session() {
    let (fake, m, _store) = plain().await;
    let user = fake.create_sandbox_user();
    let token = fake.grant_oauth_access(user.user_id);
    let cred = CredentialId::new("oauth-user");
    let ctx = m.connect(&cred, SecretString::from(token)).await.unwrap();
    let session = ctx.session.unwrap();
    assert_eq!(session.kind, UserKind::UserApiKey);
    let accounts = bank_account_ids(&m, &cred).await.unwrap();
    assert_eq!(accounts.len(), user.monetary_account_ids.len());
    assert_eq!(user_type(&m, &cred).await.unwrap(), "UserApiKey");
}

#[tokio::test]
async fn connecting_again_and_restarting_open_no_new_session() {
    let (fake, m, store) = plain().await;
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("bob");
    m.connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();
    m.connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();

    // A "restart": a new client and manager over the same store.
    let restarted = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig::default(),
    );
    let resp = restarted
        .request(&cred, get_user(user.user_id))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(fake.calls("POST /installation"), 1);
    assert_eq!(fake.calls("POST /session-server"), 1);
    assert_eq!(restarted.session_creations(), 0);
}

#[tokio::test]
async fn unknown_credential_is_not_connected() {
    let (_fake, m, _store) = plain().await;
    let err = m.session(&CredentialId::new("nobody")).await.unwrap_err();
    assert!(matches!(err, Error::NotConnected(_)), "{err:?}");
}

#[tokio::test]
async fn session_is_renewed_before_expiry_without_a_401() {
    let fake = FakeBunq::start_with(FakeConfig {
        session_timeout: Duration::from_secs(2),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig {
            renew_margin: Duration::from_secs(1),
            ..SessionManagerConfig::default()
        },
    );
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "carol").await;
    let first = m.session(&cred).await.unwrap();
    m.request(&cred, get_user(user_id))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(fake.calls("POST /session-server"), 1, "still fresh");

    // Into the renewal margin (expiry - 1 s), not yet expired.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = m.request(&cred, get_user(user_id)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(fake.calls("POST /session-server"), 2);
    assert_eq!(
        fake.calls("GET /user/{id}"),
        2,
        "no call was refused and retried"
    );
    let second = m.session(&cred).await.unwrap();
    assert_ne!(first.token.expose_secret(), second.token.expose_secret());
    let stored = store.load(&cred).await.unwrap().unwrap().session.unwrap();
    assert_eq!(stored.token.expose_secret(), second.token.expose_secret());
}

#[tokio::test]
async fn dead_session_is_renewed_and_a_get_retried_exactly_once() {
    let (fake, m, _store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "dave").await;

    fake.knobs().fail_next_with_insufficient_authorisation(1);
    let resp = m.request(&cred, get_user(user_id)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(fake.calls("GET /user/{id}"), 2);
    assert_eq!(fake.calls("POST /session-server"), 2);

    // Refused again after the renewal: retried once only, and bunq's answer returned.
    fake.knobs().fail_next_with_insufficient_authorisation(2);
    let resp = m.request(&cred, get_user(user_id)).await.unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.is_insufficient_authorisation());
    assert_eq!(fake.calls("GET /user/{id}"), 4);
    assert_eq!(fake.calls("POST /session-server"), 3);
}

#[tokio::test]
async fn post_is_never_resent_after_a_dead_session() {
    let (fake, m, _store) = plain().await;
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("erin");
    m.connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();
    let path = format!(
        "user/{}/monetary-account/{}/request-inquiry",
        user.user_id, user.monetary_account_ids[0]
    );
    let body = serde_json::json!({
        "amount_inquired": {"value": "500", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
        "description": "test",
        "allow_bunqme": false,
    });
    fake.knobs().fail_next_with_insufficient_authorisation(1);
    let resp = m
        .request(&cred, ApiRequest::post_json(&path, &body))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(
        fake.calls("POST /user/{id}/monetary-account/{aid}/request-inquiry"),
        1,
        "the POST went out once"
    );
    // The session was renewed for the next call, which succeeds.
    assert_eq!(fake.calls("POST /session-server"), 2);
    let resp = m
        .request(&cred, ApiRequest::post_json(&path, &body))
        .await
        .unwrap();
    assert!(resp.is_success(), "status {}", resp.status);
}

#[tokio::test]
async fn tampered_response_signature_is_an_error() {
    let (fake, m, _store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "frank").await;
    fake.knobs().tamper_next_signatures(1);
    let err = m.request(&cred, get_user(user_id)).await.unwrap_err();
    assert!(
        matches!(err, Error::SignatureInvalid { status: 200, .. }),
        "{err:?}"
    );
    // The next, untampered response is accepted.
    assert_eq!(
        m.request(&cred, get_user(user_id)).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn get_backs_off_on_the_fakes_429_and_succeeds() {
    let window = Duration::from_millis(300);
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limit_window: window,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let store = Arc::new(MemoryContextStore::new());
    // No client-side limits, so the burst reaches the fake and gets 429s.
    let m = manager(
        client(&fake, RateLimitPolicy::disabled(), 5),
        &store,
        SessionManagerConfig::default(),
    );
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "gina").await;
    fake.knobs().set_rate_limits(true);
    let calls = (0..6).map(|_| m.request(&cred, get_user(user_id)));
    for resp in futures::future::join_all(calls).await {
        assert_eq!(resp.unwrap().status, 200);
    }
    assert!(
        fake.calls("GET /user/{id}") > 6,
        "some calls were refused and retried: {}",
        fake.calls("GET /user/{id}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_for_five_users_stays_inside_the_fakes_rate_limits() {
    let window = Duration::from_millis(300);
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limits: true,
        rate_limit_window: window,
        session_server_window: window,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let policy = RateLimitPolicy::bunq()
        .window(window)
        .session_server_window(window);
    // No retries: any 429 from the fake surfaces as an error.
    let m = manager(
        client(&fake, policy, 0),
        &store,
        SessionManagerConfig {
            session_wait_timeout: Duration::from_secs(10),
            ..SessionManagerConfig::default()
        },
    );
    let users: Vec<_> = (0..5).map(|_| fake.create_sandbox_user()).collect();
    let started = Instant::now();
    let work = users.iter().enumerate().map(|(i, user)| {
        let m = m.clone();
        let user = user.clone();
        async move {
            let cred = CredentialId::new(format!("user-{i}"));
            m.connect(&cred, SecretString::from(user.api_key)).await?;
            bank_account_ids(&m, &cred).await?;
            user_type(&m, &cred).await?;
            m.request(&cred, get_user(user.user_id))
                .await?
                .into_result()?;
            Ok::<_, Error>(())
        }
    });
    for outcome in futures::future::join_all(work).await {
        outcome.unwrap();
    }
    assert_eq!(fake.calls("POST /session-server"), 5);
    assert_eq!(m.session_creations(), 5);
    // Five sessions at one per window need at least four windows.
    assert!(started.elapsed() >= window * 4, "{:?}", started.elapsed());
}

#[tokio::test]
async fn session_queue_gives_a_bounded_wait_then_session_capacity() {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(
        client(&fake, RateLimitPolicy::bunq(), 0),
        &store,
        SessionManagerConfig {
            session_wait_timeout: Duration::from_millis(200),
            ..SessionManagerConfig::default()
        },
    );
    connect_sandbox_user(&fake, &m, "first").await;
    let second = fake.create_sandbox_user();
    let started = Instant::now();
    let err = m
        .connect(
            &CredentialId::new("second"),
            SecretString::from(second.api_key),
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match err {
        Error::SessionCapacity { retry_after } => {
            assert!(retry_after > Duration::from_secs(20), "{retry_after:?}");
        }
        other => panic!("expected SessionCapacity, got {other:?}"),
    }
    assert_eq!(fake.calls("POST /session-server"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_calls_without_a_session_open_exactly_one() {
    let (fake, m, store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "henk").await;
    // Leave the stored context without a session, and start from a cold cache.
    let mut ctx = store.load(&cred).await.unwrap().unwrap();
    ctx.session = None;
    store.save(&cred, &ctx).await.unwrap();
    let cold = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig::default(),
    );
    let before = fake.calls("POST /session-server");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let m = cold.clone();
            let cred = cred.clone();
            tokio::spawn(async move { m.request(&cred, get_user(user_id)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        assert_eq!(task.unwrap().unwrap().status, 200);
    }
    assert_eq!(cold.session_creations(), 1);
    assert_eq!(fake.calls("POST /session-server") - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_401s_on_one_dead_session_make_one_renewal() {
    let (fake, m, _store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "ines").await;
    fake.knobs().expire_all_sessions();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let m = m.clone();
            let cred = cred.clone();
            tokio::spawn(async move { m.request(&cred, get_user(user_id)).await })
        })
        .collect();
    for task in futures::future::join_all(tasks).await {
        assert_eq!(task.unwrap().unwrap().status, 200);
    }
    assert_eq!(
        fake.calls("POST /session-server"),
        2,
        "connect + one renewal"
    );
    assert_eq!(m.session_creations(), 2);
}

#[tokio::test]
async fn forget_drops_the_cache_but_the_store_still_serves() {
    let (fake, m, _store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "jan").await;
    m.forget(&cred).await;
    assert_eq!(
        m.request(&cred, get_user(user_id)).await.unwrap().status,
        200
    );
    assert_eq!(fake.calls("POST /session-server"), 1);
}

#[tokio::test]
async fn close_ends_the_session_at_bunq_and_in_the_store() {
    let (fake, m, store) = plain().await;
    let (cred, user_id) = connect_sandbox_user(&fake, &m, "kees").await;
    m.close(&cred).await.unwrap();
    assert_eq!(fake.calls("DELETE /session/{id}"), 1);
    assert!(store.load(&cred).await.unwrap().unwrap().session.is_none());

    // A restart does not try the closed session: it opens a new one straight away.
    let restarted = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig::default(),
    );
    restarted
        .request(&cred, get_user(user_id))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(fake.calls("POST /session-server"), 2);
    assert_eq!(
        fake.calls("GET /user/{id}"),
        1,
        "no call was made with the closed session"
    );
}

#[tokio::test]
async fn close_after_a_restart_closes_the_stored_session() {
    let (fake, m, store) = plain().await;
    let (cred, _) = connect_sandbox_user(&fake, &m, "mies").await;
    let restarted = manager(
        client(&fake, RateLimitPolicy::disabled(), 3),
        &store,
        SessionManagerConfig::default(),
    );
    restarted.close(&cred).await.unwrap();
    assert_eq!(fake.calls("DELETE /session/{id}"), 1);
    assert!(store.load(&cred).await.unwrap().unwrap().session.is_none());
}

/// A store that counts saves made after the application deleted the credential.
#[derive(Default)]
struct DeletingStore {
    inner: MemoryContextStore,
    deleted: std::sync::atomic::AtomicBool,
    saves_after_delete: std::sync::atomic::AtomicU64,
}

impl bunq_session::ContextStore for DeletingStore {
    async fn load(
        &self,
        credential: &CredentialId,
    ) -> Result<Option<bunq_session::ApiContext>, bunq_session::ContextStoreError> {
        if self.deleted.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.load(credential).await
    }

    async fn save(
        &self,
        credential: &CredentialId,
        context: &bunq_session::ApiContext,
    ) -> Result<(), bunq_session::ContextStoreError> {
        if self.deleted.load(std::sync::atomic::Ordering::SeqCst) {
            self.saves_after_delete
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.save(credential, context).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_waits_for_a_renewal_in_flight_so_nothing_is_saved_after_the_delete() {
    use std::sync::atomic::Ordering;
    let fake = FakeBunq::start().await.unwrap();
    // The pacer holds the renewal for most of a window: time to disconnect meanwhile.
    let policy = RateLimitPolicy::bunq().session_server_window(Duration::from_millis(800));
    let store = Arc::new(DeletingStore::default());
    let m = SessionManager::new(
        client(&fake, policy, 0),
        Arc::clone(&store),
        SessionManagerConfig::default(),
    );
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("wim");
    m.connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();

    fake.knobs().fail_next_with_insufficient_authorisation(1);
    let renewing = {
        let (m, cred) = (m.clone(), cred.clone());
        tokio::spawn(async move { m.request(&cred, get_user(user.user_id)).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The application's DELETE: disconnect first, then delete from the store.
    m.disconnect(&cred).await.unwrap();
    store.deleted.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(10), renewing)
        .await
        .unwrap();
    assert_eq!(fake.calls("POST /session-server"), 2, "the renewal ran");
    assert_eq!(store.saves_after_delete.load(Ordering::SeqCst), 0);

    // Later calls neither open nor save a session.
    assert!(matches!(
        m.request(&cred, get_user(user.user_id)).await,
        Err(Error::NotConnected(_))
    ));
    assert_eq!(fake.calls("POST /session-server"), 2);
    assert_eq!(store.saves_after_delete.load(Ordering::SeqCst), 0);

    // Connecting again lifts the disconnection.
    store.deleted.store(false, Ordering::SeqCst);
    m.connect(&cred, SecretString::from(user.api_key))
        .await
        .unwrap();
    m.request(&cred, get_user(user.user_id))
        .await
        .unwrap()
        .into_result()
        .unwrap();
}

#[tokio::test]
async fn a_withdrawn_grant_is_revoked_after_one_check_and_nothing_is_sent_for_it_again() {
    let (fake, m, _store) = plain().await;
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("leaver");
    let ctx = m
        .connect(
            &cred,
            SecretString::from(fake.grant_oauth_access(user.user_id)),
        )
        .await
        .unwrap();
    assert_eq!(ctx.session.unwrap().granted_by_user_id, Some(user.user_id));
    assert_eq!(fake.revoke_oauth_grants(user.user_id), 1);
    let sessions = fake.calls("POST /session-server");
    let devices = fake.calls("POST /device-server");
    // The session dies with the grant; its renewal is refused; a fresh installation's
    // device-server is refused too: revoked, at the cost of one session-server call.
    let err = m.request(&cred, get_user(user.user_id)).await.unwrap_err();
    assert!(matches!(err, Error::Revoked { status: 400, .. }), "{err:?}");
    assert!(!err.may_have_reached_bunq());
    assert_eq!(fake.calls("POST /session-server"), sessions + 1);
    assert_eq!(fake.calls("POST /device-server"), devices + 1);
    let total = fake.total_calls();
    for _ in 0..5 {
        let err = m.request(&cred, get_user(user.user_id)).await.unwrap_err();
        assert!(matches!(err, Error::Revoked { .. }), "{err:?}");
    }
    assert_eq!(
        fake.total_calls(),
        total,
        "a revoked credential costs bunq nothing"
    );

    // A new consent (a new token) connects again.
    m.connect(
        &cred,
        SecretString::from(fake.grant_oauth_access(user.user_id)),
    )
    .await
    .unwrap();
    assert!(m.request(&cred, get_user(user.user_id)).await.is_ok());
}

#[tokio::test]
async fn a_device_bound_to_another_ip_is_replaced_by_a_fresh_installation() {
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("mover");
    // Connected from 127.0.0.1: the device is bound to it (permitted_ips: []).
    let first = manager(
        client(&fake, RateLimitPolicy::disabled(), 0),
        &store,
        SessionManagerConfig::default(),
    );
    let ctx = first
        .connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();
    let old_installation = ctx.installation.id;
    // The egress changes to 127.0.0.2, and the stored session is gone.
    let mut moved = ctx.clone();
    moved.session = None;
    store.save(&cred, &moved).await.unwrap();
    let mut config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .rate_limits(RateLimitPolicy::disabled())
    // Connections now leave from 127.0.0.2: another IP to bunq.
    .local_address("127.0.0.2".parse().unwrap());
    config.max_retries = 0;
    let second = manager(
        BunqClient::new(config).unwrap(),
        &store,
        SessionManagerConfig::default(),
    );
    let sessions = fake.calls("POST /session-server");
    let session = second.session(&cred).await.unwrap();
    assert_eq!(
        fake.calls("POST /session-server"),
        sessions + 2,
        "refused from the new IP, then opened from a fresh installation"
    );
    let stored = store.load(&cred).await.unwrap().unwrap();
    assert_ne!(
        stored.installation.id, old_installation,
        "a new installation"
    );
    assert_eq!(stored.session.unwrap().id, session.id);
    assert!(second.request(&cred, get_user(user.user_id)).await.is_ok());
}

#[tokio::test]
async fn passing_failures_back_off_per_credential_with_growing_delays() {
    // Sessions of 31 s: with the 30 s renewal margin, one is due for renewal after 1 s.
    let fake = FakeBunq::start_with(FakeConfig {
        session_timeout: Duration::from_secs(31),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let store = Arc::new(MemoryContextStore::new());
    let m = manager(
        client(&fake, RateLimitPolicy::disabled(), 0),
        &store,
        SessionManagerConfig {
            refusal_backoff: Duration::from_millis(300),
            ..SessionManagerConfig::default()
        },
    );
    let (cred, _) = connect_sandbox_user(&fake, &m, "flaky").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // bunq is down when the renewal is due: an outage, then a back-off without calls.
    fake.knobs().fail_next_with_status(503, 2);
    let sessions = fake.calls("POST /session-server");
    let err = m.session(&cred).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { status: 503, .. }),
        "{err:?}"
    );
    let err = m.session(&cred).await.unwrap_err();
    let Error::SessionBackoff {
        retry_after,
        failures: 1,
        ..
    } = err
    else {
        panic!("expected a back-off, got {err:?}");
    };
    assert!(retry_after <= Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(320)).await;
    // The second failure doubles the delay.
    let err = m.session(&cred).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = m.session(&cred).await.unwrap_err();
    let Error::SessionBackoff {
        retry_after,
        failures: 2,
        ..
    } = err
    else {
        panic!("expected a second back-off, got {err:?}");
    };
    assert!(retry_after > Duration::from_millis(300), "{retry_after:?}");
    assert_eq!(
        fake.calls("POST /session-server") - sessions,
        2,
        "one call per failure"
    );
    tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
    assert!(
        m.session(&cred).await.is_ok(),
        "recovers after the back-off"
    );
}

#[tokio::test]
async fn a_disconnected_credential_leaves_no_slot_once_the_store_forgot_it() {
    use std::sync::atomic::Ordering;
    let fake = FakeBunq::start().await.unwrap();
    let store = Arc::new(DeletingStore::default());
    let m = SessionManager::new(
        client(&fake, RateLimitPolicy::disabled(), 0),
        Arc::clone(&store),
        SessionManagerConfig::default(),
    );
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("kees");
    m.connect(&cred, SecretString::from(user.api_key))
        .await
        .unwrap();
    assert_eq!(m.slot_count(), 1);
    m.disconnect(&cred).await.unwrap();
    // Kept while the store still holds the credential: it stops a renewal from
    // saving a session back.
    assert_eq!(m.slot_count(), 1);
    store.deleted.store(true, Ordering::SeqCst);
    // The next disconnect (of anyone, here of unknown credentials) drops it.
    for i in 0..100 {
        m.disconnect(&CredentialId::new(format!("gone-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(m.slot_count(), 0);
    assert!(matches!(
        m.request(&cred, get_user(user.user_id)).await,
        Err(Error::NotConnected(_))
    ));
    assert_eq!(m.slot_count(), 0);
    assert_eq!(store.saves_after_delete.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn notification_filters_are_set_and_listed_at_user_and_account_level() {
    let (fake, m, _) = plain().await;
    let user = fake.create_sandbox_user();
    let cred = CredentialId::new("filters");
    m.connect(&cred, SecretString::from(user.api_key.clone()))
        .await
        .unwrap();
    let wanted = vec![
        NotificationFilter::new("PAYMENT", "https://app.example/cb"),
        NotificationFilter::new("OAUTH", "https://app.example/cb"),
    ];
    let stored = m
        .set_notification_filters(&cred, FilterScope::User, &wanted)
        .await
        .unwrap();
    assert_eq!(stored, wanted);
    assert_eq!(
        m.notification_filters(&cred, FilterScope::User)
            .await
            .unwrap(),
        wanted
    );
    let account = FilterScope::MonetaryAccount(user.monetary_account_ids[1]);
    assert!(
        m.notification_filters(&cred, account)
            .await
            .unwrap()
            .is_empty()
    );
    let one = [NotificationFilter::new("MUTATION", "https://app.example/a")];
    m.set_notification_filters(&cred, account, &one)
        .await
        .unwrap();
    assert_eq!(m.notification_filters(&cred, account).await.unwrap(), one);

    // bunq's limit of 2 URLs per category comes back as bunq's error.
    let three: Vec<NotificationFilter> = (0..3)
        .map(|i| NotificationFilter::new("PAYMENT", format!("https://app.example/{i}")))
        .collect();
    let refused = m
        .set_notification_filters(&cred, FilterScope::User, &three)
        .await;
    assert!(
        matches!(refused, Err(Error::Api { status: 400, .. })),
        "{refused:?}"
    );
    // Clearing is an empty list.
    m.set_notification_filters(&cred, FilterScope::User, &[])
        .await
        .unwrap();
    assert!(
        m.notification_filters(&cred, FilterScope::User)
            .await
            .unwrap()
            .is_empty()
    );
}
