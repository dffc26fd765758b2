//! `OAuthFlow` against a mockito token endpoint: the state is taken exactly once, and
//! each way a callback can be wrong is its own error.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bunq_oauth::{
    Callback, MemoryStateStore, OAuthConfig, OAuthEndpoints, OAuthError, OAuthFlow, PendingState,
    State, StateContext, StateKey, StateStore, StateStoreError, TakeOutcome,
};
use mockito::Matcher;
use secrecy::ExposeSecret as _;

fn config(server: &mockito::ServerGuard) -> OAuthConfig {
    OAuthConfig::new(
        "client-id-1",
        "client-secret",
        "https://app.example/oauth/callback",
        OAuthEndpoints::custom(
            "https://oauth.example/auth",
            format!("{}/v1/token", server.url()),
        ),
    )
}

fn context() -> StateContext {
    StateContext {
        user_ref: "alice".to_owned(),
        return_to: Some("/settings".to_owned()),
        replace: false,
    }
}

async fn token_mock(server: &mut mockito::ServerGuard, hits: usize) -> mockito::Mock {
    server
        .mock("POST", "/v1/token")
        .match_query(Matcher::UrlEncoded("code".into(), "the-code".into()))
        .with_body(r#"{"access_token":"tok-alice","token_type":"bearer"}"#)
        .expect(hits)
        .create_async()
        .await
}

fn code_callback(state: &State) -> Callback {
    Callback::from_query(&format!("code=the-code&state={}", state.secret())).unwrap()
}

#[tokio::test]
async fn begin_stores_state_by_digest_and_builds_authorize_url() {
    let server = mockito::Server::new_async().await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    let auth = flow.begin(context()).await.unwrap();
    assert!(auth.url.starts_with(
        "https://oauth.example/auth?response_type=code&client_id=client-id-1\
         &redirect_uri=https%3A%2F%2Fapp.example%2Foauth%2Fcallback&state="
    ));
    assert!(auth.url.ends_with(auth.state.secret()));
    let ttl = auth.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(ttl <= Duration::from_secs(600) && ttl > Duration::from_secs(590));
    assert_eq!(flow.store().len(), 1);
    // Stored under the digest, never the state itself.
    let TakeOutcome::Taken(pending) = flow.store().take(&auth.state.key()).await.unwrap() else {
        panic!("state not stored under its digest")
    };
    assert_eq!(pending.context, context());
    assert_ne!(pending.key.as_str(), auth.state.secret());
}

#[tokio::test]
async fn complete_exchanges_code_and_returns_context() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 1).await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    let auth = flow.begin(context()).await.unwrap();
    let done = flow.complete(&code_callback(&auth.state)).await.unwrap();
    mock.assert_async().await;
    assert_eq!(done.context, context());
    assert_eq!(done.token.access_token.expose_secret(), "tok-alice");
}

#[tokio::test]
async fn rejects_replayed_state() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 1).await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    let auth = flow.begin(context()).await.unwrap();
    flow.complete(&code_callback(&auth.state)).await.unwrap();
    let err = flow
        .complete(&code_callback(&auth.state))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::ReplayedState), "{err:?}");
    mock.assert_async().await;
}

#[tokio::test]
async fn rejects_unknown_state_without_calling_bunq() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 0).await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    flow.begin(context()).await.unwrap();
    let forged = State::generate().unwrap();
    let err = flow.complete(&code_callback(&forged)).await.unwrap_err();
    assert!(matches!(err, OAuthError::UnknownState), "{err:?}");
    mock.assert_async().await;
}

#[tokio::test]
async fn rejects_expired_state_and_consumes_it() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 0).await;
    let config = config(&server).with_state_ttl(Duration::ZERO);
    let flow = OAuthFlow::new(config, MemoryStateStore::new()).unwrap();
    let auth = flow.begin(context()).await.unwrap();
    let err = flow
        .complete(&code_callback(&auth.state))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::ExpiredState), "{err:?}");
    let err = flow
        .complete(&code_callback(&auth.state))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::ReplayedState), "{err:?}");
    // Once swept, an expired state is simply unknown.
    assert_eq!(flow.sweep_expired().await.unwrap(), 1);
    let err = flow
        .complete(&code_callback(&auth.state))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::UnknownState), "{err:?}");
    mock.assert_async().await;
}

#[tokio::test]
async fn denial_consumes_state_and_returns_context() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 0).await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    let auth = flow.begin(context()).await.unwrap();
    let denied = Callback::from_query(&format!(
        "error=access_denied&error_description=User+declined&state={}",
        auth.state.secret()
    ))
    .unwrap();
    match flow.complete(&denied).await.unwrap_err() {
        OAuthError::Denied {
            context: ctx,
            error,
            description,
        } => {
            assert_eq!(ctx, context());
            assert_eq!(error, "access_denied");
            assert_eq!(description.as_deref(), Some("User declined"));
        }
        other => panic!("expected Denied, got {other:?}"),
    }
    // The state is gone: a code arriving later for it is a replay.
    let err = flow
        .complete(&code_callback(&auth.state))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::ReplayedState), "{err:?}");
    mock.assert_async().await;
}

#[tokio::test]
async fn denial_without_state_is_unknown_state() {
    let server = mockito::Server::new_async().await;
    let flow = OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap();
    let err = flow
        .complete(&Callback::from_query("error=access_denied").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::UnknownState), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_is_taken_once_when_100_callbacks_race() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 1).await;
    let flow = Arc::new(OAuthFlow::new(config(&server), MemoryStateStore::new()).unwrap());
    let auth = flow.begin(context()).await.unwrap();
    let callback = Arc::new(code_callback(&auth.state));
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (flow, callback, barrier) = (flow.clone(), callback.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                flow.complete(&callback).await
            })
        })
        .collect();
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .unwrap();
    let (mut completed, mut replayed) = (0, 0);
    for result in results {
        match result.unwrap() {
            Ok(done) => {
                assert_eq!(done.context, context());
                completed += 1;
            }
            Err(OAuthError::ReplayedState) => replayed += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((completed, replayed), (1, 99));
    mock.assert_async().await;
}

/// A store whose lookup is sloppier than it should be: it hands out its only pending
/// state for any key (think of a case-insensitive or truncated index).
struct SloppyStore(PendingState);

impl StateStore for SloppyStore {
    async fn insert(&self, _: &PendingState) -> Result<(), StateStoreError> {
        Ok(())
    }
    async fn take(&self, _: &StateKey) -> Result<TakeOutcome, StateStoreError> {
        Ok(TakeOutcome::Taken(self.0.clone()))
    }
    async fn sweep_expired(&self, _: SystemTime) -> Result<u64, StateStoreError> {
        Ok(0)
    }
}

#[tokio::test]
async fn rejects_state_a_store_matched_loosely() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 0).await;
    let genuine = State::generate().unwrap();
    let store = SloppyStore(PendingState {
        key: genuine.key(),
        context: context(),
        created_at: SystemTime::now(),
        expires_at: SystemTime::now() + Duration::from_secs(60),
    });
    let flow = OAuthFlow::new(config(&server), store).unwrap();
    let err = flow
        .complete(&code_callback(&State::generate().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::UnknownState), "{err:?}");
    mock.assert_async().await;
}

/// A store that counts its lookups (each one a write transaction in a database).
#[derive(Default)]
struct CountingStore {
    takes: std::sync::atomic::AtomicUsize,
}

impl StateStore for CountingStore {
    async fn insert(&self, _: &PendingState) -> Result<(), StateStoreError> {
        Ok(())
    }
    async fn take(&self, _: &StateKey) -> Result<TakeOutcome, StateStoreError> {
        self.takes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(TakeOutcome::Unknown)
    }
    async fn sweep_expired(&self, _: SystemTime) -> Result<u64, StateStoreError> {
        Ok(0)
    }
}

#[tokio::test]
async fn malformed_states_are_refused_before_the_store_is_asked() {
    let mut server = mockito::Server::new_async().await;
    let mock = token_mock(&mut server, 0).await;
    let flow = OAuthFlow::new(config(&server), CountingStore::default()).unwrap();
    let long = "A".repeat(100_000);
    for state in [
        "short",
        long.as_str(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%00",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%0A",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%2F",
        "%C3%A9AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        for query in [
            format!("code=the-code&state={state}"),
            format!("error=access_denied&state={state}"),
        ] {
            let callback = Callback::from_query(&query).unwrap();
            let err = flow.complete(&callback).await.unwrap_err();
            assert!(matches!(err, OAuthError::MalformedState), "{err:?}");
        }
    }
    assert_eq!(
        flow.store().takes.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // A state of the issued shape is looked up (and unknown here).
    let err = flow
        .complete(&code_callback(&State::generate().unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(err, OAuthError::UnknownState), "{err:?}");
    assert_eq!(
        flow.store().takes.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    mock.assert_async().await;
}

#[test]
fn new_rejects_plain_http_token_endpoint() {
    let config = OAuthConfig::new(
        "c",
        "s",
        "https://app.example/cb",
        OAuthEndpoints::custom(
            "https://oauth.example/auth",
            "http://token.example/v1/token",
        ),
    );
    let err = OAuthFlow::new(config, MemoryStateStore::new()).unwrap_err();
    assert!(matches!(err, OAuthError::Config(_)), "{err:?}");
}
