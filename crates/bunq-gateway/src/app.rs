//! Wiring: the shared state, the router, and the middleware every request goes through
//! (metrics, logs, the end-to-end timeout, bearer authentication).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bunq_oauth::{OAuthConfig, OAuthEndpoints, OAuthFlow};
use bunq_session::{
    BunqClient, ClientConfig, CredentialId, Environment, RateLimitPolicy, SessionManager,
    SessionManagerConfig,
};
use bunq_store::{MasterKey, Store, StoreOptions};
use http::StatusCode;
use secrecy::ExposeSecret as _;

use crate::auth::{ApiKeys, Caller};
use crate::config::{BunqEnvironment, Config, KeySource};
use crate::connector::Connector;
use crate::error::{ApiError, GatewayError};
use crate::metrics::Metrics;
use crate::{callbacks, connect, proxy, relay};

/// Everything a handler needs, shared by all of them.
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) sessions: Arc<SessionManager<Store>>,
    pub(crate) flow: OAuthFlow<Store>,
    pub(crate) api_keys: ApiKeys,
    pub(crate) metrics: Metrics,
    /// Connected user_refs and the credential of their connection, so the proxy's hot
    /// path reads no database row. Filled on first use or on connect; an entry leaves on
    /// DELETE and on revocation, and changes when a new consent replaces a connection.
    pub(crate) routes: RwLock<HashMap<String, CredentialId>>,
    /// Consents being connected in the background.
    pub(crate) connector: Connector,
    /// How long the OAuth callback waits for its consent's connection before telling the
    /// browser "connecting".
    pub(crate) callback_wait: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) idempotency_retention: Duration,
    /// The proxy's bound end to end: its calls are not sent after `request_timeout`,
    /// and one that was sent gets the time of one upstream exchange more to answer.
    pub(crate) proxy_timeout: Duration,
    /// The gateway's public base URL (callback URLs registered at bunq start with it).
    pub(crate) public_url: String,
    /// Whether `/metrics` is served by the admin listener instead of the main one.
    pub(crate) admin_listener: bool,
    /// `http.log_user_ref`: the access line names the path's `user_ref`.
    pub(crate) log_user_ref: bool,
    /// `[callbacks]`.
    pub(crate) callback_settings: crate::config::CallbackSettings,
    /// The outbox deliverer's handle.
    pub(crate) relay: crate::relay::Relay,
    /// `bunq.egress`: users pinned to another egress are not served here.
    pub(crate) egress: String,
    /// This gateway's place in the fleet (PostgreSQL only).
    pub(crate) fleet: Option<crate::fleet::Member>,
    /// Set when the full integrity check that runs after start (SQLite, see
    /// [`check_integrity_in_background`]) failed: `/readyz` answers 503 from then on.
    pub(crate) integrity_failure: std::sync::OnceLock<String>,
}

pub(crate) type Shared = Arc<AppState>;

/// The master key, from the config or its file.
pub(crate) fn master_key(source: &KeySource) -> Result<MasterKey, GatewayError> {
    let key = match source {
        KeySource::Inline(b64) => MasterKey::from_base64(b64.expose_secret()),
        KeySource::File(path) => MasterKey::from_file(path),
    };
    key.map_err(|e| {
        let key = match source {
            KeySource::File(_) => "security.encryption_key_file",
            _ => "security.encryption_key",
        };
        GatewayError::Config(crate::config::ConfigError::Key {
            key: key.into(),
            origin: String::new(),
            reason: e.to_string(),
        })
    })
}

pub(crate) fn client_config(config: &Config) -> ClientConfig {
    let environment = match (&config.bunq.api_base_url, config.bunq.environment) {
        (Some(url), _) => Environment::Custom {
            api_base: url.as_str().trim_end_matches('/').to_owned(),
        },
        (None, BunqEnvironment::Production) => Environment::Production,
        (None, _) => Environment::Sandbox,
    };
    let rate_limits = RateLimitPolicy::bunq()
        .enabled(config.bunq.rate_limits)
        .window(config.bunq.rate_limit_window)
        .scope(config.bunq.rate_limit_scope)
        .session_server_window(config.bunq.session_window);
    // 0 entries: every response is verified with RSA.
    let verify_cache_entries = if config.bunq.verify_cache {
        ClientConfig::new(Environment::Sandbox).verify_cache_entries
    } else {
        0
    };
    let client = ClientConfig::new(environment)
        .user_agent(config.bunq.user_agent.clone())
        .rate_limits(rate_limits)
        .verify_cache_entries(verify_cache_entries)
        .request_timeout(config.http.upstream_timeout);
    match config.bunq.bind_address {
        Some(address) => client.local_address(address),
        None => client,
    }
}

pub(crate) fn oauth_config(config: &Config) -> OAuthConfig {
    let defaults = match config.bunq.environment {
        BunqEnvironment::Production => OAuthEndpoints::production(),
        _ => OAuthEndpoints::sandbox(),
    };
    let endpoints = OAuthEndpoints::custom(
        config
            .bunq
            .oauth_authorize_url
            .as_ref()
            .map_or(defaults.authorize_url, |u| u.to_string()),
        config
            .bunq
            .oauth_token_url
            .as_ref()
            .map_or(defaults.token_url, |u| u.to_string()),
    );
    OAuthConfig::new(
        config.oauth.client_id.as_str(),
        config.oauth.client_secret.clone(),
        config.oauth.redirect_uri.clone(),
        endpoints,
    )
    .with_state_ttl(config.oauth.state_ttl)
    .with_timeout(config.http.upstream_timeout)
}

/// Checks what can be checked without serving: the key, and that the crates accept the
/// configuration built from ours. Opens nothing and calls no one.
pub(crate) fn check(config: &Config) -> Result<(), GatewayError> {
    master_key(&config.security.encryption_key)?;
    BunqClient::new(client_config(config)).map_err(|e| GatewayError::Setup(e.to_string()))?;
    OAuthFlow::new(oauth_config(config), bunq_oauth::MemoryStateStore::new())
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    Ok(())
}

/// Opens the store and builds the crates' objects.
pub(crate) async fn build(config: &Config) -> Result<Shared, GatewayError> {
    let key = master_key(&config.security.encryption_key)?;
    let replica = crate::fleet::replica_id();
    let options = StoreOptions::default().fleet_member(&replica, &config.bunq.egress);
    let store = Store::open_location(&config.database, key, options).await?;
    // Opening read the file's header and schema (and migrated it). On SQLite the full
    // `PRAGMA integrity_check` reads every page (about 0.5 s for 100,000 users): it runs
    // right after start instead (`check_integrity_in_background`), so that start time
    // does not grow with the database. PostgreSQL's check is a schema-version query.
    if !matches!(config.database, bunq_store::StoreLocation::Sqlite(_)) {
        store.integrity_check().await?;
    }
    // A wrong encryption key must stop the start, not fail every request later.
    store.check_master_key().await?;
    let mut client =
        BunqClient::new(client_config(config)).map_err(|e| GatewayError::Setup(e.to_string()))?;
    let fleet = store.fleet().map(|fleet| {
        crate::fleet::Member::new(
            fleet,
            replica,
            config.fleet.clone(),
            config.http.request_timeout + config.http.upstream_timeout + Duration::from_secs(2),
        )
    });
    match &fleet {
        // The egress's turn is in the database, with the last call's time: a restart
        // waits exactly what is left of its predecessor's window. (Without rate
        // limits, against a fake that has none, there is no turn to share.)
        Some(member) if config.bunq.rate_limits => {
            let window = crate::fleet::shared_window(
                &member.fleet,
                &config.bunq.egress,
                &member.replica,
                config.bunq.session_window,
            );
            client = client
                .share_session_window(window)
                .map_err(|e| GatewayError::Setup(e.to_string()))?;
        }
        // A database with users is a restart: the process before may have opened a
        // session moments ago (a crash mid-renewal), within the window this process
        // cannot see. A first start has no predecessor on this database.
        Some(_) => {}
        None => {
            if store.has_users().await? {
                client.assume_recent_session_server_call();
            }
        }
    }
    let session_config = SessionManagerConfig {
        device_description: "bunq-gateway".to_owned(),
        session_wait_timeout: config.bunq.session_wait,
        permitted_ips: config.bunq.permitted_ips.clone(),
        // One bunq window: a failing credential tries at most once per window at first.
        refusal_backoff: config.bunq.session_window,
        ..SessionManagerConfig::default()
    };
    let sessions = Arc::new(SessionManager::new(client, store.clone(), session_config));
    let flow = OAuthFlow::new(oauth_config(config), store.clone())
        .map_err(|e| GatewayError::Setup(e.to_string()))?;
    let (counted, queued) = (Arc::clone(&sessions), Arc::clone(&sessions));
    let metrics = Metrics::new(crate::metrics::SessionProbe {
        creations: Box::new(move || counted.session_creations()),
        queue_len: Box::new(move || queued.client().session_queue_len()),
    });
    Ok(Arc::new(AppState {
        store,
        sessions,
        flow,
        api_keys: ApiKeys::new(&config.security.api_keys),
        metrics,
        routes: RwLock::new(HashMap::new()),
        connector: Connector::default(),
        callback_wait: config.oauth.callback_wait,
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: config.http.request_timeout,
        idempotency_retention: config.http.idempotency_retention,
        proxy_timeout: config.http.request_timeout
            + config.http.upstream_timeout
            + Duration::from_secs(1),
        public_url: config.public_url.to_string(),
        callback_settings: config.callbacks.clone(),
        relay: crate::relay::Relay::new(&config.callbacks),
        admin_listener: config.admin_listen.is_some(),
        log_user_ref: config.http.log_user_ref,
        egress: config.bunq.egress.clone(),
        fleet,
        integrity_failure: std::sync::OnceLock::new(),
    }))
}

/// SQLite: the full integrity check, on a read connection beside the traffic. A
/// failure is logged as an error and takes the gateway out of readiness (`/readyz` 503)
/// until it is restarted over a sound database; a corrupt page met by a request before
/// that fails the request (SQLite reports `SQLITE_CORRUPT`), it is not read as data.
pub(crate) fn check_integrity_in_background(state: &Shared, config: &Config) {
    if !matches!(config.database, bunq_store::StoreLocation::Sqlite(_)) {
        return;
    }
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let started = Instant::now();
        match state.store.integrity_check().await {
            Ok(()) => tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "database integrity check passed"
            ),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "database integrity check failed: /readyz answers 503; restore the \
                     database from a backup"
                );
                let _ = state.integrity_failure.set(e.to_string());
            }
        }
    });
}

/// The HTTP surface.
pub(crate) fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/authorizations", post(connect::authorize))
        .route(
            "/v1/users/{user_ref}",
            get(connect::get_user).delete(connect::delete_user),
        )
        .route("/v1/users/{user_ref}/bunq/{*path}", any(proxy::forward))
        .route(
            "/v1/users/{user_ref}/callbacks",
            get(callbacks::get_callbacks).put(callbacks::put_callbacks),
        )
        .route("/v1/events", get(relay::list))
        .route("/v1/events/{id}", get(relay::one))
        .route("/v1/events/{id}/redeliver", post(relay::redeliver))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_bearer,
        ));
    let public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // With an admin listener, the metrics (which name routes, outcomes and volumes) stay
    // off the internet-facing one; the probes stay on both, where load balancers look.
    let public = if state.admin_listener {
        public
    } else {
        public.route("/metrics", get(render_metrics))
    };
    public
        .route("/oauth/callback", get(connect::callback))
        .route(CALLBACK_ROUTE, post(callbacks::receive))
        .merge(v1)
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// The admin listener's surface (`admin_listen`): metrics and probes only.
pub(crate) fn admin_router(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(state)
}

const PROXY_ROUTE: &str = "/v1/users/{user_ref}/bunq/{*path}";
const CALLBACK_ROUTE: &str = "/bunq/callbacks/{callback_id}";

/// A static name per route, so that metric labels cost no allocation.
fn route_label(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str) {
        Some("/healthz") => "/healthz",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some("/oauth/callback") => "/oauth/callback",
        Some("/v1/authorizations") => "/v1/authorizations",
        Some("/v1/users/{user_ref}") => "/v1/users/{user_ref}",
        Some(PROXY_ROUTE) => PROXY_ROUTE,
        Some(CALLBACK_ROUTE) => CALLBACK_ROUTE,
        Some("/v1/users/{user_ref}/callbacks") => "/v1/users/{user_ref}/callbacks",
        Some("/v1/events") => "/v1/events",
        Some("/v1/events/{id}") => "/v1/events/{id}",
        Some("/v1/events/{id}/redeliver") => "/v1/events/{id}/redeliver",
        _ => "other",
    }
}

/// The request id header: accepted from the caller (a load balancer's, say) when it is
/// tame, generated otherwise, returned on the answer and on every log line of the request.
pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// A caller's request id is kept if it is 1 to 128 of `A-Z a-z 0-9 - _ . :` (what
/// load balancers and tracing systems send); anything else could forge log lines.
fn tame_request_id(value: &http::HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?;
    (!text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')))
    .then_some(text)
}

/// Generated request ids: a random per-process prefix and a counter, unique across
/// restarts and replicas without a random draw per request.
struct RequestIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0u8; 6];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes);
        let prefix = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            prefix,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn generate(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n:x}", self.prefix)
    }
}

static REQUEST_IDS: std::sync::LazyLock<RequestIds> = std::sync::LazyLock::new(RequestIds::new);

/// The API key's name, put on the answer by [`require_bearer`] for the access log.
#[derive(Clone)]
struct KeyName(Arc<str>);

/// Times, counts and logs every routed request (one access line at info), bounds it by
/// the request timeout, and gives it a request id.
async fn observe(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let started = Instant::now();
    let request_id = match request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(tame_request_id)
    {
        Some(id) => id.to_owned(),
        None => REQUEST_IDS.generate(),
    };
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        // Handlers see the id the log uses (the proxy does not forward it to bunq).
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let limit = if route == PROXY_ROUTE {
        state.proxy_timeout
    } else {
        state.request_timeout
    };
    // The path's user_ref (as sent, percent-escapes and all) only when configured.
    let user_ref = state
        .log_user_ref
        .then(|| request.uri().path().strip_prefix("/v1/users/"))
        .flatten()
        .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        user_ref = user_ref.as_deref().map(tracing::field::display),
    );
    let mut response = match tokio::time::timeout(limit, next.run(request))
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "the request took longer than http.request_timeout_seconds",
        )
        .into_response(),
    };
    let took = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe_http(route, &method, status, took);
    if let Ok(value) = http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // Only the route template is logged: paths carry user_refs and the callback's
    // query carries the code and state. The key's name, never the key.
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    let key = response.extensions().get::<KeyName>().map(|k| k.0.clone());
    let key = key.as_deref().unwrap_or("-");
    let _inside = span.enter();
    if status >= 500 {
        tracing::warn!(%method, route, status, micros, key, "request failed");
    } else {
        tracing::info!(%method, route, status, micros, key, "request");
    }
    response
}

/// Accepts a request whose bearer token is one of the API keys, puts the key's
/// [`Caller`] in its extensions (handlers read the name and prefixes from there), keeps
/// a key limited to `user_ref` prefixes to its users, and logs the key's name.
async fn require_bearer(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let header = request.headers().get(http::header::AUTHORIZATION);
    let Some(caller) = state.api_keys.caller(header).cloned() else {
        let mut response = ApiError::unauthorized().into_response();
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    };
    let (mut parts, body) = request.into_parts();
    let route = route_label(parts.extensions.get::<MatchedPath>());
    if caller.is_restricted() && !restricted_may_call(&caller, route, &mut parts, &state).await {
        tracing::info!(
            key = caller.name(),
            route,
            "API key used outside its user_ref_prefixes"
        );
        return ApiError::forbidden_user_ref().into_response();
    }
    parts.extensions.insert(caller.clone());
    let mut response = next.run(Request::from_parts(parts, body)).await;
    // Who did what, for the operator: on the request's access line (`observe`).
    response
        .extensions_mut()
        .insert(KeyName(caller.shared_name()));
    response
}

/// Whether a key limited to `user_ref` prefixes may call `route`: a route about one user
/// when the user's (decoded, as the handler sees it) `user_ref` has one of them. The
/// event routes list and redeliver every user's events, so such a key may not use
/// them; `POST /v1/authorizations` carries its `user_ref` in the body and is checked by
/// its handler.
async fn restricted_may_call(
    caller: &Caller,
    route: &str,
    parts: &mut http::request::Parts,
    state: &Shared,
) -> bool {
    use axum::extract::{FromRequestParts as _, RawPathParams};
    if route.contains("{user_ref}") {
        match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params
                .iter()
                .find(|(name, _)| *name == "user_ref")
                .is_some_and(|(_, user_ref)| caller.may_act_on(user_ref)),
            // Fail closed: an undecodable user_ref is no user of this key's.
            Err(_) => false,
        }
    } else {
        route == "/v1/authorizations"
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the database answers a query (a cheap one: probes come often) and the
/// full integrity check after start did not fail.
async fn readyz(State(state): State<Shared>) -> Response {
    if state.integrity_failure.get().is_some() {
        return ApiError::unavailable("the database failed its integrity check").into_response();
    }
    match state.store.user("-").await {
        Ok(_) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness probe: database does not answer");
            ApiError::unavailable("the database does not answer").into_response()
        }
    }
}

async fn render_metrics(State(state): State<Shared>) -> Response {
    match state.store.count_pending_events().await {
        Ok(pending) => state.metrics.set_events_pending(pending),
        // The other metrics are still worth a scrape; the gauge keeps its last value.
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count pending events"),
    }
    match state.metrics.render() {
        Ok(text) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::internal("cannot render metrics").into_response(),
    }
}

/// A request body within `http.max_body_bytes` (axum's limit, set in [`router`]), or
/// the JSON error for one that is not: 413 when it is too large.
pub(crate) fn body_or_error(
    body: Result<bytes::Bytes, BytesRejection>,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request("cannot read the request body")
        }
    })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
