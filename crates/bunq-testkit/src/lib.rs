#![doc = include_str!("../README.md")]
//!
//! # What it serves
//! Under `/v1`: `POST /installation` (no auth), `POST /device-server`,
//! `POST /session-server` and `POST /payment-service-provider-credential` (installation
//! token; a PSD2 provider's certificate, chain and public-key signature checked as bunq
//! does, see [`TestCertificate`] to make one), `POST /sandbox-user-person` (no auth),
//! then with a session token: `GET /user`, `GET /user/{id}`,
//! `GET /user/{id}/monetary-account-bank[/{aid}]`, `GET /user/{id}/monetary-account[/{aid}]`,
//! `POST|GET /user/{id}/monetary-account/{aid}/payment` (the list holds payments made
//! and received, top-ups included), `GET .../payment/{pid}`,
//! `POST|GET /user/{id}/monetary-account/{aid}/request-inquiry` (to
//! `sugardaddy@bunq.com`: accepted and the account credited at once, at most 500.00 per
//! request; others stay `PENDING`), `GET .../request-inquiry/{rid}`,
//! `POST|GET /user/{id}/monetary-account/{aid}/draft-payment` (stored `PENDING`; nobody
//! accepts it), `GET .../draft-payment/{did}`,
//! `POST|GET /user/{id}/oauth-client`, `GET|PUT /user/{id}/oauth-client/{cid}`,
//! `POST|GET /user/{id}/oauth-client/{cid}/callback-url`,
//! `POST|GET /user/{id}[/monetary-account/{aid}]/notification-filter-url`,
//! `DELETE /session/{id}` (closes the calling session).
//!
//! # Callbacks
//! `POST .../notification-filter-url` `{"notification_filters":[{"category",
//! "notification_target"}]}` replaces the caller's filters there (at most 2 URLs per
//! category; `http://` targets are accepted too, so tests need no TLS). Then the fake
//! POSTs `{"NotificationUrl":{"target_url","category","event_type","object"}}`, signed
//! with `X-Bunq-Server-Signature` like its answers, to every matching target: `PAYMENT`
//! (`PAYMENT_CREATED`, and `PAYMENT_RECEIVED` to the owner of a fake IBAN paid) and
//! `MUTATION` (`MUTATION_CREATED` / `MUTATION_RECEIVED`) with a `Payment` object for
//! payments and sandbox top-ups, `REQUEST` (`REQUEST_INQUIRY_ACCEPTED`) for top-ups, and
//! `OAUTH` (`OAUTH_REVOKED`) to a grant's own filters when it is revoked. A delivery not
//! answered 2xx is retried [`FakeConfig::callback_retries`] more times,
//! [`FakeConfig::callback_retry_interval`] apart; [`FakeBunq::sent_callbacks`] lists what
//! was sent. Outside it: `GET /auth` and `POST /v1/token`.
//!
//! Lists are paginated as bunq's: newest first, `count` (default 10, at most 200),
//! `older_id` / `newer_id`, and `Pagination` URLs.
//!
//! Sandbox users start with two EUR bank accounts at `0.00`; top them up with a request
//! inquiry to the sugar daddy. [`FakeBunq::create_monetary_account`] adds savings, joint
//! and external accounts: the generic `monetary-account` endpoints show every kind,
//! each wrapped in its object name (`MonetaryAccountSavings`, ...), and
//! `monetary-account-bank` only bank accounts. Payments and amounts are EUR only.
//! Counterparties in payments, request-inquiries and draft-payments are shown as bunq
//! shows them, as `LabelMonetaryAccount` objects (`iban`, `display_name`, `label_user`). In `/user/{id}` paths an OAuth session uses its
//! `UserApiKey` id and acts on the granting user's accounts. Sessions live
//! `session_timeout` from creation. `GET /auth` consents at once: the consenting user is
//! the `user_id` query parameter if given (a test hook bunq lacks), else a fresh sandbox
//! user with two accounts.
//!
//! # bunq's rules it enforces
//! - **Devices and IPs.** `POST /device-server` binds the device to the calling IP when
//!   `permitted_ips` is `[]`, `null` or absent, to the listed IPv4 addresses otherwise,
//!   and to any IP if `"*"` is listed. session-server and session calls from an IP the
//!   device does not permit get 400 [`BAD_CREDENTIALS_DESCRIPTION`]. To stand for other
//!   IPs, bind the client to other loopback addresses (`127.0.0.2`, ...).
//! - **Credentials.** A wrong, unknown or revoked API key or OAuth access token at
//!   device-server, or session-server from an installation whose device was registered
//!   with one, gets 400 [`BAD_CREDENTIALS_DESCRIPTION`] (signed).
//!   [`FakeBunq::revoke_oauth_grants`] withdraws a user's grants and ends their sessions.
//! - **Request ids.** A device (installation) may use an `X-Bunq-Client-Request-Id` for
//!   one session call that is not a GET; a second such call with it gets 400
//!   [`REUSED_REQUEST_ID_DESCRIPTION`] without executing. Calls answered by a fault knob
//!   before executing do not use their id up; GETs never do.
//!
//! Endpoint names for [`FakeBunq::calls`] are the method and the path pattern without
//! `/v1`, with `{id}`, `{aid}`, `{cid}` for ids: `"POST /installation"`,
//! `"GET /user/{id}/monetary-account-bank"`, `"POST /token"`, `"GET /auth"`.
//!
//! # Control endpoint (for the `bunq-fake` binary)
//! - `GET /_fake/calls` → `{"total": n, "calls": {"POST /installation": 1, ...},
//!   "rate_limited": {"POST /session-server": 1, ...}}` (the limits' 429s per endpoint,
//!   [`FakeBunq::rate_limited_calls_to`])
//! - `POST /_fake/knobs` with any of `{"session_timeout_secs": n, "expire_all_sessions":
//!   true, "fail_next_with_insufficient_authorisation": n, "tamper_next_signatures": n,
//!   "latency_ms": n, "fail_next_with_status": {"status": 503, "n": 1,
//!   "retry_after_secs": 30}` (`retry_after_secs` optional), `"deny_consent": bool,
//!   "rate_limits": bool, "cut_after_execute": n, "delay_after_execute": {"delay_ms": n,
//!   "n": k}}` → `{"ok": true}` (see the [`Knobs`] methods of the same names)
//! - `POST /_fake/sandbox-user` → `{"user_id", "api_key", "monetary_account_ids"}`
//! - `POST /_fake/oauth-grant` `{"user_id": n}` → `{"access_token"}`
//! - `POST /_fake/revoke-oauth-grants` `{"user_id": n}` → `{"revoked": k}`, the grants
//!   that were still live ([`FakeBunq::revoke_oauth_grants`])
//! - `GET /_fake/balance?user_id=..&account_id=..` → `{"balance": "500.00"}`
//! - `POST /_fake/monetary-account` `{"user_id": n, "type": "savings", "description":
//!   "...", "status": "CANCELLED"}` (`type`: `bank`, `savings`, `joint`, `external` or
//!   bunq's object name; `description` and `status` optional) →
//!   `{"monetary_account_id"}` ([`FakeBunq::create_monetary_account`])
//! - `GET /_fake/payment-count` → `{"payment_count": n}` ([`FakeBunq::payment_count`])
//! - `GET /_fake/payments` → `{"payments": [{"id", "monetary_account_id", "amount",
//!   "description", "counterparty_alias"}]}`, every payment executed, oldest first
//! - `GET /_fake/secrets` → `{"api_keys", "oauth_access_tokens", "oauth_client_secrets",
//!   "installation_tokens", "session_tokens"}`, every credential issued since start
//!   (ended sessions included), to check a client stores and logs none in clear
//! - `GET /_fake/callbacks` → `{"callbacks": [...]}` ([`FakeBunq::sent_callbacks`])
//!
//! Control calls are not counted and no knob applies to them.

mod api;
mod control;
mod knobs;
mod money;
mod notify;
mod oauth;
mod objects;
mod psd2;
mod server;
mod test_certificate;
mod wire;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bunq_signing::PrivateKey;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use knobs::Knobs;
pub use notify::SentCallback;
pub use test_certificate::{TestCertificate, TestCertificateError};
pub use world::AccountKind;

/// The `error_description` of bunq's HTTP 400 to a session-authenticated non-GET call
/// whose `X-Bunq-Client-Request-Id` was already used on the same device (installation).
/// The call is not executed.
pub const REUSED_REQUEST_ID_DESCRIPTION: &str = "The request id was already used on this device.";

/// The `error_description` of bunq's HTTP 400 at device-server and session-server for a
/// wrong, unknown or revoked API key or OAuth access token, and for a call from an IP the
/// device does not permit.
pub const BAD_CREDENTIALS_DESCRIPTION: &str =
    "User credentials are incorrect. Incorrect API key or IP address.";

use server::Shared;

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The server's RSA key could not be generated.
    #[error("cannot generate the server key: {0}")]
    ServerKey(String),
}

/// How the fake behaves from the start; [`Knobs`] change it while running.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// Lifetime of new sessions, reported as `session_timeout` in user objects
    /// (default 3600 s).
    pub session_timeout: Duration,
    /// Whether bunq's rate limits answer 429 (default off).
    pub rate_limits: bool,
    /// The session-server limit's window: 1 call per window (default 30 s).
    pub session_server_window: Duration,
    /// The other limits' window: GET 3, POST 5, PUT 2 per window (default 3 s).
    pub rate_limit_window: Duration,
    /// How long an OAuth authorization code stays valid (default 600 s).
    pub code_ttl: Duration,
    /// The pause before each retry of a failed callback delivery (bunq: a minute).
    pub callback_retry_interval: Duration,
    /// Retries of a failed callback delivery after the first attempt (bunq: 5).
    pub callback_retries: u32,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(3600),
            rate_limits: false,
            session_server_window: Duration::from_secs(30),
            rate_limit_window: Duration::from_secs(3),
            code_ttl: Duration::from_secs(600),
            callback_retry_interval: Duration::from_secs(60),
            callback_retries: 5,
        }
    }
}

/// A sandbox user made by [`FakeBunq::create_sandbox_user`].
#[derive(Clone, Debug)]
pub struct SandboxUser {
    /// The `UserPerson` id.
    pub user_id: u64,
    /// The API key (the `secret` for device-server and session-server).
    pub api_key: String,
    /// The ids of its two `MonetaryAccountBank` accounts.
    pub monetary_account_ids: Vec<u64>,
}

/// A running fake bunq. Dropping it stops the server.
pub struct FakeBunq {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeBunq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeBunq")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeBunq {
    /// Starts on a random `127.0.0.1` port with default settings.
    pub async fn start() -> Result<FakeBunq, FakeError> {
        Self::start_with(FakeConfig::default()).await
    }

    /// Starts on a random `127.0.0.1` port.
    pub async fn start_with(config: FakeConfig) -> Result<FakeBunq, FakeError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr, config: FakeConfig) -> Result<FakeBunq, FakeError> {
        // Key generation takes 50–300 ms of CPU: keep it off the async workers.
        let key = tokio::task::spawn_blocking(PrivateKey::generate)
            .await
            .map_err(|e| FakeError::ServerKey(e.to_string()))?
            .map_err(|e| FakeError::ServerKey(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| FakeError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(config, wire::Signer::new(key)));
        let app = server::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<server::Peer>();
            let served = axum::serve(server::FakeListener(listener), service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "bunq-fake server stopped with an error");
            }
        });
        Ok(FakeBunq {
            shared,
            addr: local,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, where bunq's API lives.
    pub fn api_base(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// `http://127.0.0.1:PORT/auth`, the consent page.
    pub fn oauth_authorize_url(&self) -> String {
        format!("{}/auth", self.base_url())
    }

    /// `http://127.0.0.1:PORT/v1/token`, the OAuth token endpoint.
    pub fn oauth_token_url(&self) -> String {
        format!("{}/v1/token", self.base_url())
    }

    /// `http://127.0.0.1:PORT/_fake`, the control endpoint (see the crate docs).
    pub fn control_url(&self) -> String {
        format!("{}/_fake", self.base_url())
    }

    /// A handle on the knobs.
    pub fn knobs(&self) -> Knobs {
        Knobs(self.shared.clone())
    }

    /// How many requests reached `endpoint` (e.g. `"POST /session-server"`), refused
    /// ones included.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.shared.calls(endpoint)
    }

    /// Calls the rate limits refused with 429 (those of `fail_next_with_status` not
    /// included): what a client that stays inside bunq's limits keeps at zero.
    pub fn rate_limited_calls(&self) -> u64 {
        self.shared.rate_limited()
    }

    /// The 429s of the rate limits at one `endpoint`: at `"POST /session-server"`, how
    /// often a client tried a second session-server call within one window.
    pub fn rate_limited_calls_to(&self, endpoint: &str) -> u64 {
        self.shared.rate_limited_at(endpoint)
    }

    /// Requests to the API and OAuth endpoints, unknown routes included.
    pub fn total_calls(&self) -> u64 {
        self.shared.total_calls()
    }

    /// Creates a sandbox `UserPerson` with two EUR accounts at 0.00, without HTTP.
    pub fn create_sandbox_user(&self) -> SandboxUser {
        let (user_id, api_key, monetary_account_ids) = self.shared.world().create_sandbox_user();
        SandboxUser {
            user_id,
            api_key,
            monetary_account_ids,
        }
    }

    /// An OAuth access token as if user `granted_by_user_id` approved a fake-internal
    /// OAuth client; session-server with it returns a `UserApiKey`. An unknown user id
    /// still gets a token, which session-server then refuses.
    pub fn grant_oauth_access(&self, granted_by_user_id: u64) -> String {
        let mut world = self.shared.world();
        let psp = world.internal_psp();
        world.create_grant(granted_by_user_id, psp)
    }

    /// The user id of the PSD2 provider registered with `certificate`
    /// (`POST /payment-service-provider-credential`), if any.
    pub fn psd2_provider(&self, certificate: &bunq_signing::Certificate) -> Option<u64> {
        let fingerprint = certificate.sha256_fingerprint();
        self.shared
            .world()
            .psd2_providers
            .get(&fingerprint)
            .copied()
    }

    /// Revokes every OAuth access token user `granted_by_user_id` granted, as when the
    /// user withdraws access in the bunq app; returns how many were still live. See
    /// [`Knobs::revoke_oauth_grants`].
    pub fn revoke_oauth_grants(&self, granted_by_user_id: u64) -> usize {
        self.knobs().revoke_oauth_grants(granted_by_user_id)
    }

    /// Adds an active EUR account of `kind` at 0.00 to user `user_id` (a sandbox user
    /// made by [`create_sandbox_user`](Self::create_sandbox_user)); returns its id, or
    /// `None` for an unknown user.
    pub fn create_monetary_account(
        &self,
        user_id: u64,
        kind: AccountKind,
        description: &str,
    ) -> Option<u64> {
        self.shared
            .world()
            .create_account(user_id, kind, description)
    }

    /// Sets the `status` bunq reports for account `account_id` (`ACTIVE`, `BLOCKED`,
    /// `CANCELLED`, `PENDING_REOPEN`); false for an unknown account.
    pub fn set_monetary_account_status(&self, account_id: u64, status: &str) -> bool {
        set_account_status(&self.shared, account_id, status)
    }

    /// How many payments were executed, over all accounts and users, since start (for
    /// "exactly one payment was made" after retries). Sandbox top-ups are not payments.
    pub fn payment_count(&self) -> usize {
        self.shared.world().payments.len()
    }

    /// Every callback sent (or being sent) to notification filter targets since start,
    /// oldest first, with its exact body, signature and delivery attempts.
    pub fn sent_callbacks(&self) -> Vec<SentCallback> {
        self.shared.callbacks.sent()
    }

    /// The balance of `account_id` if it belongs to `user_id`, e.g. `"500.00"`.
    pub fn balance(&self, user_id: u64, account_id: u64) -> Option<String> {
        balance_of(&self.shared, user_id, account_id)
    }

    /// Stops the server, letting in-flight requests finish (at most 5 s).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(server::SHUTDOWN_GRACE, task).await;
        }
    }
}

impl Drop for FakeBunq {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn grant_oauth_access(shared: &Shared, user_id: u64) -> Option<String> {
    let mut world = shared.world();
    if !world.users.contains_key(&user_id) {
        return None;
    }
    let psp = world.internal_psp();
    Some(world.create_grant(user_id, psp))
}

pub(crate) fn balance_of(shared: &Shared, user_id: u64, account_id: u64) -> Option<String> {
    let world = shared.world();
    world
        .accounts
        .get(&account_id)
        .filter(|a| a.user_id == user_id)
        .map(|a| world::format_cents(a.balance_cents))
}

pub(crate) fn set_account_status(shared: &Shared, account_id: u64, status: &str) -> bool {
    match shared.world().accounts.get_mut(&account_id) {
        Some(account) => {
            status.clone_into(&mut account.status);
            true
        }
        None => false,
    }
}
