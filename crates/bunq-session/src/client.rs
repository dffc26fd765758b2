//! The HTTP client: bunq's headers, request signing, response verification, limits,
//! timeouts and retries. The lifecycle calls (installation, device, session) are in
//! `lifecycle`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bunq_signing::{SERVER_SIGNATURE_HEADER, VerificationError};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method};
use rand::Rng as _;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, Page};
use crate::error::SendFailure;
use crate::error::is_dead_session;
use crate::fleet::SharedSessionWindow;
use crate::rate_limit::{Limiter, Refusal, SessionPacer};
use crate::transport::{Failure, Transport};
use crate::verify_cache::VerifiedCache;
use crate::{ClientConfig, Error, Installation, Session};

/// `X-Bunq-Client-Request-Id`: the caller's [`ApiRequest::request_id`], else a fresh
/// UUID per attempt.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-bunq-client-request-id");
/// `X-Bunq-Client-Authentication`: the installation or session token.
pub const AUTHENTICATION_HEADER: HeaderName =
    HeaderName::from_static("x-bunq-client-authentication");
/// `X-Bunq-Client-Signature`: the request body's signature.
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("x-bunq-client-signature");
/// `X-Bunq-Client-Response-Id`: bunq's id of a response, for support.
pub const RESPONSE_ID_HEADER: HeaderName = HeaderName::from_static("x-bunq-client-response-id");
const LANGUAGE_HEADER: HeaderName = HeaderName::from_static("x-bunq-language");
const REGION_HEADER: HeaderName = HeaderName::from_static("x-bunq-region");
const GEOLOCATION_HEADER: HeaderName = HeaderName::from_static("x-bunq-geolocation");
/// How long an unused pooled connection to bunq stays open.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest `Retry-After` taken from an unsigned answer: the header is not covered
/// by any signature, and a bound keeps a garbled one from sending callers away for days.
const MAX_UNSIGNED_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// One call to bunq's API, relative to the API base.
#[derive(Clone)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: Method,
    /// Path and query relative to the API base, e.g.
    /// `user/1/monetary-account-bank?count=10` (a leading `/` is tolerated). Sent as
    /// given: it must be valid in a URI (percent-encode spaces and the like), or the call
    /// fails with [`Error::InvalidRequest`] before anything is sent.
    pub path_and_query: String,
    /// The raw body; it is signed byte for byte.
    pub body: Bytes,
    /// Allows retrying a PUT or DELETE (on 429, 502–504, connection failures, and once
    /// after a session renewal). GET is always retried; POST never.
    pub idempotent_retry: bool,
    /// Extra headers. They replace the client's defaults of the same name (user agent,
    /// language, ...); the bunq headers the client sets (request id, authentication,
    /// signature) replace them.
    pub extra_headers: HeaderMap,
    /// The `X-Bunq-Client-Request-Id` to send, on every attempt of this request (retries
    /// included); `None`: a fresh UUID per attempt. bunq refuses an id it has already
    /// seen on this device, which makes resending with the same id a safe way to ask
    /// "did my first attempt arrive?" after [`Error::OutcomeUnknown`]: an error means it
    /// did. Never reuse an id for a different request. It must be a non-empty header
    /// value of visible ASCII, or the call fails with [`Error::InvalidRequest`] before
    /// anything is sent.
    pub request_id: Option<String>,
    /// When the caller stops waiting. It bounds the waits *before* sending (the rate
    /// limiter, retry back-offs): if it passes first, the call fails with
    /// [`Error::NotSent`] and [`SendFailure::DeadlinePassed`]. A request already written
    /// is never abandoned because of it (only the client's own
    /// [`request_timeout`](crate::ClientConfig::request_timeout) ends an exchange), so
    /// that a caller giving up does not turn a sent call into a lost answer.
    pub deadline: Option<Instant>,
    /// Why [`post_json`](Self::post_json) or [`put_json`](Self::put_json) could not
    /// serialize the body: kept so that the builders stay infallible and the call fails
    /// with [`Error::InvalidRequest`] before anything is sent, as a bad path does.
    body_error: Option<String>,
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may carry personal data; its size is enough to debug with.
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("body_len", &self.body.len())
            .field("idempotent_retry", &self.idempotent_retry)
            .field("request_id", &self.request_id)
            .field("deadline", &self.deadline)
            .field("body_error", &self.body_error)
            .finish_non_exhaustive()
    }
}

impl ApiRequest {
    /// A request with any method and body.
    pub fn new(method: Method, path_and_query: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method,
            path_and_query: path_and_query.into(),
            body: body.into(),
            idempotent_retry: false,
            extra_headers: HeaderMap::new(),
            request_id: None,
            deadline: None,
            body_error: None,
        }
    }

    /// A GET with an empty body.
    pub fn get(path_and_query: impl Into<String>) -> Self {
        Self::new(Method::GET, path_and_query, Bytes::new())
    }

    /// A POST of `body` as JSON: a typed body (any `Serialize`) or a
    /// `serde_json::Value`. A body that cannot be serialized (a map with non-string
    /// keys, a `Serialize` impl that fails) makes the call fail with
    /// [`Error::InvalidRequest`] before anything is sent.
    pub fn post_json<T: Serialize + ?Sized>(path_and_query: impl Into<String>, body: &T) -> Self {
        Self::json(Method::POST, path_and_query, body)
    }

    /// A PUT of `body` as JSON (see [`post_json`](Self::post_json)).
    pub fn put_json<T: Serialize + ?Sized>(path_and_query: impl Into<String>, body: &T) -> Self {
        Self::json(Method::PUT, path_and_query, body)
    }

    fn json<T: Serialize + ?Sized>(
        method: Method,
        path_and_query: impl Into<String>,
        body: &T,
    ) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => Self::new(method, path_and_query, bytes),
            Err(e) => {
                let mut req = Self::new(method, path_and_query, Bytes::new());
                req.body_error = Some(format!("body is not serializable as JSON: {e}"));
                req
            }
        }
    }

    /// A DELETE with an empty body.
    pub fn delete(path_and_query: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path_and_query, Bytes::new())
    }

    /// Marks a PUT or DELETE as safe to send more than once.
    pub fn idempotent(mut self) -> Self {
        self.idempotent_retry = true;
        self
    }

    /// Sends `id` as `X-Bunq-Client-Request-Id` on every attempt (see
    /// [`request_id`](Self::request_id)).
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Bounds the waits before sending (see [`deadline`](Self::deadline)).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Whether we may send this request again: GET and HEAD always, PUT and DELETE when
    /// the caller said so, POST (a payment) never.
    pub fn is_retryable(&self) -> bool {
        match self.method {
            Method::GET | Method::HEAD => true,
            Method::PUT | Method::DELETE => self.idempotent_retry,
            _ => false,
        }
    }

    /// How many times this request may be resent, given the client's `max_retries`:
    /// a GET or HEAD up to `max_retries`; a PUT or DELETE marked idempotent once (it is
    /// the caller's word, not the method's, that makes it safe: the documented promise
    /// is one resend, and each resend is one more chance to apply a write twice if the
    /// caller was wrong); anything else never.
    pub fn retry_limit(&self, max_retries: u32) -> u32 {
        match self.method {
            Method::GET | Method::HEAD => max_retries,
            _ if self.is_retryable() => max_retries.min(1),
            _ => 0,
        }
    }

    /// The path without the query string (for limits and error messages).
    pub(crate) fn path(&self) -> &str {
        let p = self.path_and_query.trim_start_matches('/');
        p.split(['?', '#']).next().unwrap_or(p)
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("{} {}", self.method, self.path())
    }
}

/// A response whose signature has been verified (or the installation response, which
/// bunq does not sign). Any signed status comes back as a `RawResponse`; use
/// [`into_result`](Self::into_result) to turn a non-2xx into [`Error::Api`]. Unsigned
/// answers never do: bunq's unsigned 429, 491 and 5xx become [`Error::RateLimited`] and
/// [`Error::Unavailable`], anything else unsigned [`Error::SignatureInvalid`].
#[derive(Clone)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// All response headers.
    pub headers: HeaderMap,
    /// The body, verified.
    pub body: Bytes,
    /// `X-Bunq-Client-Response-Id`.
    pub response_id: Option<String>,
    /// The `X-Bunq-Client-Request-Id` sent on the attempt that got this answer.
    pub request_id: String,
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies can hold tokens (session-server) or personal data.
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("response_id", &self.response_id)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl RawResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// bunq's `error_description`s, if this is an error body.
    pub fn error_descriptions(&self) -> Vec<String> {
        envelope::error_descriptions(&self.body)
    }

    /// Whether this is bunq's "session is dead" answer (401/403 "Insufficient
    /// authorisation." or "Insufficient authentication.").
    pub fn is_insufficient_authorisation(&self) -> bool {
        (self.status == 401 || self.status == 403)
            && is_dead_session(self.status, &self.error_descriptions())
    }

    /// Whether bunq refused the request because its `X-Bunq-Client-Request-Id` was used
    /// before on the same device ("the server will respond with an error when the same
    /// ID is used again on the same DeviceServer"): the earlier request with that id
    /// reached bunq. bunq documents the rule, not its wording, so any 4xx whose
    /// description speaks of the request id (or of the same id) counts: on a resend with
    /// a reused id, mistaking another refusal for this one says "reconcile" where "not
    /// executed" was true, the safe direction for a payment.
    pub fn is_reused_request_id(&self) -> bool {
        (400..500).contains(&self.status)
            && self.error_descriptions().iter().any(|d| {
                let d = d.to_ascii_lowercase();
                d.contains("request id") || d.contains("request-id") || d.contains("same id")
            })
    }

    /// `Ok(self)` for 2xx, else [`Error::Api`] with every description and the response id.
    pub fn into_result(self) -> Result<Self, Error> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(Error::Api {
                status: self.status,
                descriptions: self.error_descriptions(),
                response_id: self.response_id,
            })
        }
    }

    /// Deserializes the whole body as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::unexpected("response body", e.to_string()))
    }

    /// The first object of `type_name` in the `Response` envelope.
    pub fn single<T: DeserializeOwned>(&self, type_name: &str) -> Result<T, Error> {
        envelope::single(&self.body, type_name)
    }

    /// Every object of `type_name` and the `Pagination`.
    pub fn list<T: DeserializeOwned>(&self, type_name: &str) -> Result<Page<T>, Error> {
        envelope::list(&self.body, type_name)
    }

    /// `(type, object)` for every item of the `Response` envelope.
    pub fn items(&self) -> Result<Vec<(String, serde_json::Value)>, Error> {
        envelope::decode_items(&self.body)
    }
}

/// Which credentials a request carries.
#[derive(Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// `POST /installation`: no token, no signature, no verification.
    None,
    /// device-server and session-server: the installation token.
    Installation(&'a Installation),
    /// Everything else: the session token, signed with the installation key.
    Session(&'a Installation, &'a Session),
}

pub(crate) struct ClientInner {
    http: Transport,
    /// User agent, language, region, geolocation, cache control, content type.
    default_headers: HeaderMap,
    pub(crate) config: ClientConfig,
    pub(crate) api_base: String,
    pub(crate) limiter: Limiter,
    pub(crate) pacer: SessionPacer,
    /// The egress's session-server turn shared with other processes, if any.
    pub(crate) shared_window: Option<Arc<dyn SharedSessionWindow>>,
    pub(crate) session_server_calls: AtomicU64,
    /// `None` when `verify_cache_entries` is 0: every response goes to RSA.
    verified: Option<VerifiedCache>,
}

/// The bunq API client: one per process. Cheap to clone (clones share the connection
/// pool, the rate limiter and the session-server pacer), which is what makes the limits
/// hold for every credential the process serves.
#[derive(Clone)]
pub struct BunqClient {
    pub(crate) inner: Arc<ClientInner>,
}

impl fmt::Debug for BunqClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BunqClient")
            .field("api_base", &self.inner.api_base)
            .finish_non_exhaustive()
    }
}

impl BunqClient {
    /// Builds the client (and its connection pool). Fails on header values that are not
    /// valid HTTP or an API base that is not a URL.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let api_base = config.environment.api_base().to_owned();
        url::Url::parse(&api_base)
            .map_err(|e| Error::Config(format!("API base {api_base:?}: {e}")))?;
        let value = |name: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| Error::Config(format!("invalid {name} {v:?}")))
        };
        // Headers that never change are built once; each request starts from a copy.
        let mut defaults = HeaderMap::new();
        defaults.insert(USER_AGENT, value("user agent", &config.user_agent)?);
        defaults.insert(LANGUAGE_HEADER, value("language", &config.language)?);
        defaults.insert(REGION_HEADER, value("region", &config.region)?);
        defaults.insert(
            GEOLOCATION_HEADER,
            value("geolocation", &config.geolocation)?,
        );
        defaults.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        defaults.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let http = Transport::new(
            config.connect_timeout,
            POOL_IDLE_TIMEOUT,
            // HTTPS_PROXY / ALL_PROXY / NO_PROXY, as reqwest (and curl) read them.
            hyper_util::client::proxy::matcher::Matcher::from_env(),
            config.local_address,
        );
        let verified = (config.verify_cache_entries > 0)
            .then(|| VerifiedCache::new(config.verify_cache_entries));
        Ok(Self {
            inner: Arc::new(ClientInner {
                limiter: Limiter::new(config.rate_limits.clone()),
                pacer: SessionPacer::new(&config.rate_limits),
                shared_window: None,
                http,
                default_headers: defaults,
                api_base,
                config,
                session_server_calls: AtomicU64::new(0),
                verified,
            }),
        })
    }

    /// The API base URL (no trailing slash).
    pub fn api_base(&self) -> &str {
        &self.inner.api_base
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// How many `POST /session-server` calls this client (and its clones) sent.
    pub fn session_server_calls(&self) -> u64 {
        self.inner
            .session_server_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one `session-server` call as made just now, so that the first one this
    /// client sends waits a full window. The pacer knows only this process's calls: a
    /// process restarted at once after one that was opening sessions (a crash, a
    /// `kill -9`, a deploy) would otherwise call within its predecessor's window, and
    /// bunq refuses that with 429 (and may block an IP that does it often). Costs at
    /// most one window before the first new session after a start; sessions already
    /// stored serve at once.
    pub fn assume_recent_session_server_call(&self) {
        self.inner.pacer.assume_recent_call();
    }

    /// Shares the session-server turn with the other processes behind the same egress
    /// IP through `window` (see [`SharedSessionWindow`]): each call waits for the
    /// shared turn, and this process's own pacer only queues its callers (in arrival
    /// order, one call at a time), since the shared turn spaces the calls. Call it on a
    /// client just built, before it is cloned; fails otherwise.
    pub fn share_session_window(
        mut self,
        window: Arc<dyn SharedSessionWindow>,
    ) -> Result<Self, Error> {
        let inner = Arc::get_mut(&mut self.inner).ok_or_else(|| {
            Error::Config("share_session_window on a client already cloned".into())
        })?;
        inner.pacer.only_queue();
        inner.shared_window = Some(window);
        Ok(self)
    }

    /// Splits this IP's per-endpoint limits between `processes` processes behind it:
    /// each keeps to its share (the limit divided by `processes`, at least one call per
    /// window), so that together they stay within bunq's count for the IP. 1 (the
    /// default) is a process alone.
    pub fn set_limit_share(&self, processes: u32) {
        self.inner.limiter.set_share(processes);
    }

    /// How many callers wait for a turn at the session-server pacer now: a queue that
    /// stays long means more users need sessions than bunq's limit lets through.
    pub fn session_queue_len(&self) -> usize {
        self.inner.pacer.waiting()
    }

    /// Sends `req` with `session`, verifies the response's signature with the
    /// installation's server key and returns it whatever its status (bar 429, which is
    /// retried for idempotent requests and otherwise [`Error::RateLimited`]).
    pub async fn request(
        &self,
        installation: &Installation,
        session: &Session,
        req: ApiRequest,
    ) -> Result<RawResponse, Error> {
        self.send(Auth::Session(installation, session), &req).await
    }

    /// [`request`](Self::request) by reference, for callers that may resend.
    ///
    /// Retries (idempotent requests only) follow 429, 502–504, and failures whether
    /// sent or not; none starts after the caller's deadline. When the last attempt was
    /// not even sent (or our own limiter refused it) but an earlier one may have reached
    /// bunq, the earlier outcome is returned: "not sent" would claim that resending
    /// cannot execute the request twice, which the earlier attempt makes untrue.
    pub(crate) async fn send(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
    ) -> Result<RawResponse, Error> {
        let limit = req.retry_limit(self.inner.config.max_retries);
        self.send_within(auth, req, limit).await.0
    }

    /// The client's `max_retries`.
    pub(crate) fn max_retries(&self) -> u32 {
        self.inner.config.max_retries
    }

    /// [`send`](Self::send) with at most `retries` resends (and none for a request that
    /// is not retryable); also returns how many resends it made, so that a caller that
    /// resends after a session renewal can keep to the request's total.
    pub(crate) async fn send_within(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        retries: u32,
    ) -> (Result<RawResponse, Error>, u32) {
        let mut attempt = 0;
        let outcome = self.send_counted(auth, req, retries, &mut attempt).await;
        (outcome, attempt)
    }

    /// The body of [`send_within`](Self::send_within); counts resends in `attempt`.
    async fn send_counted(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        retries: u32,
        attempt: &mut u32,
    ) -> Result<RawResponse, Error> {
        let cfg = &self.inner.config;
        let url = format!(
            "{}/{}",
            self.inner.api_base,
            req.path_and_query.trim_start_matches('/')
        );
        if let Some(detail) = &req.body_error {
            return Err(Error::InvalidRequest {
                endpoint: req.endpoint(),
                detail: detail.clone(),
            });
        }
        // The caller's id is checked once, before anything is sent.
        let callers_id = match &req.request_id {
            Some(id) => Some((id.as_str(), request_id_value(req, id)?)),
            None => None,
        };
        let retryable = req.is_retryable();
        let mut reached: Option<Result<RawResponse, Error>> = None;
        loop {
            let mut id_buf = uuid::Uuid::encode_buffer();
            let (request_id, id_value) = match &callers_id {
                Some((id, value)) => (*id, value.clone()),
                None => {
                    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_buf);
                    let value =
                        HeaderValue::from_str(id).map_err(|e| Error::Config(e.to_string()))?;
                    (&*id, value)
                }
            };
            let outcome = self.attempt(auth, req, &url, request_id, id_value).await;
            let worth_retrying = match &outcome {
                Ok(resp) => resp.status == 429 || matches!(resp.status, 502..=504),
                Err(Error::NotSent { reason, .. }) => {
                    !matches!(reason, SendFailure::DeadlinePassed)
                }
                Err(Error::OutcomeUnknown { .. }) => true,
                Err(_) => false,
            };
            let delay = self.backoff(*attempt);
            // `checked_add`: a back-off configured absurdly long must not panic.
            let in_time = req.deadline.is_none_or(|deadline| {
                Instant::now()
                    .checked_add(delay)
                    .is_some_and(|resume| resume < deadline)
            });
            if worth_retrying && retryable && *attempt < retries && in_time {
                match &outcome {
                    Ok(resp) => {
                        tracing::debug!(endpoint = %req.endpoint(), status = resp.status, attempt = *attempt, ?delay, "retrying");
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %req.endpoint(), error = %e, attempt = *attempt, ?delay, "retrying");
                    }
                }
                if may_have_reached_bunq(&outcome) {
                    reached = Some(outcome);
                }
                tokio::time::sleep(delay).await;
                *attempt += 1;
                continue;
            }
            let outcome = match (outcome, reached) {
                (Err(e), Some(earlier)) if !e.may_have_reached_bunq() => earlier,
                (outcome, _) => outcome,
            };
            return match outcome {
                // bunq sends no Retry-After; a full window is when the limit has
                // certainly reset.
                Ok(resp) if resp.status == 429 => Err(Error::RateLimited {
                    retry_after: delay.max(cfg.rate_limits.window),
                }),
                Ok(resp) => self.verify(auth, req, resp),
                Err(e) => Err(e),
            };
        }
    }

    /// One attempt: a slot of the rate limiter (waiting at most until the caller's
    /// deadline), then the exchange, which the deadline no longer cuts short.
    async fn attempt(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        url: &str,
        request_id: &str,
        id_value: HeaderValue,
    ) -> Result<RawResponse, Error> {
        let deadline_passed = || Error::NotSent {
            endpoint: req.endpoint(),
            request_id: request_id.to_owned(),
            reason: SendFailure::DeadlinePassed,
        };
        let passed = || req.deadline.is_some_and(|d| Instant::now() >= d);
        if passed() {
            return Err(deadline_passed());
        }
        let permit = match self
            .inner
            .limiter
            .acquire(&req.method, req.path(), req.deadline)
            .await
        {
            Ok(permit) => permit,
            Err(Refusal::RateLimited { retry_after }) => {
                return Err(Error::RateLimited { retry_after });
            }
            Err(Refusal::DeadlinePassed) => return Err(deadline_passed()),
            Err(Refusal::Poisoned) => {
                return Err(Error::Config("rate limiter lock poisoned".into()));
            }
        };
        if passed() {
            return Err(deadline_passed());
        }
        let outcome = self.exchange(auth, req, url, request_id, id_value).await;
        drop(permit);
        outcome
    }

    /// Exponential back-off with full jitter on top: `base·2^attempt + U(0, base·2^attempt)`.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .inner
            .config
            .retry_backoff
            .saturating_mul(1u32 << attempt.min(8));
        let jitter = rand::thread_rng().gen_range(0.0..1.0);
        base + base.mul_f64(jitter)
    }

    /// One HTTP exchange: headers, signature, send, read the whole body.
    async fn exchange(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        url: &str,
        request_id: &str,
        id_value: HeaderValue,
    ) -> Result<RawResponse, Error> {
        // The caller's extra headers replace the defaults of the same name; the bunq
        // headers below replace both.
        let mut headers = self.inner.default_headers.clone();
        for name in req.extra_headers.keys() {
            headers.remove(name);
            for value in req.extra_headers.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(REQUEST_ID_HEADER, id_value);
        let signer = match auth {
            Auth::None => None,
            Auth::Installation(inst) => Some((inst, inst.token.expose_secret())),
            Auth::Session(inst, session) => Some((inst, session.token.expose_secret())),
        };
        if let Some((inst, token)) = signer {
            let mut token = HeaderValue::from_str(token)
                .map_err(|_| Error::Config("token is not a valid header value".into()))?;
            token.set_sensitive(true);
            headers.insert(AUTHENTICATION_HEADER, token);
            let signature = inst.private_key.sign_body(&req.body);
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(signature.as_str())
                    .map_err(|e| Error::Config(e.to_string()))?,
            );
        }
        let cfg = &self.inner.config;
        let answer = self
            .inner
            .http
            .exchange(
                req.method.clone(),
                url,
                headers,
                req.body.clone(),
                cfg.request_timeout,
                cfg.max_response_bytes,
            )
            .await
            .map_err(|failure| match failure {
                Failure::NotSent(reason) => Error::NotSent {
                    endpoint: req.endpoint(),
                    request_id: request_id.to_owned(),
                    reason,
                },
                Failure::Lost(reason) => Error::OutcomeUnknown {
                    endpoint: req.endpoint(),
                    request_id: request_id.to_owned(),
                    reason,
                },
                Failure::TooLarge => Error::unexpected(
                    req.endpoint(),
                    format!("response body larger than {} bytes", cfg.max_response_bytes),
                ),
                Failure::InvalidUri(e) => Error::InvalidRequest {
                    endpoint: req.endpoint(),
                    detail: e.to_string(),
                },
            })?;
        let response_id = answer
            .headers
            .get(RESPONSE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(RawResponse {
            status: answer.status.as_u16(),
            headers: answer.headers,
            body: answer.body,
            response_id,
            request_id: request_id.to_owned(),
        })
    }

    /// Checks `X-Bunq-Server-Signature` with the installation's server key; on failure
    /// the response (and its body) is dropped.
    ///
    /// bunq signs its answers but not its outages: an error status *without* any
    /// signature header is 429 ([`Error::RateLimited`]) or, for 491 (maintenance) and
    /// 5xx, [`Error::Unavailable`]. A success without a valid signature, a signature
    /// that is present but wrong, and any other unsigned answer are
    /// [`Error::SignatureInvalid`]: a forgery cannot pass itself off as data.
    fn verify(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        resp: RawResponse,
    ) -> Result<RawResponse, Error> {
        let installation = match auth {
            // Nothing to verify with yet; an outage is still an outage.
            Auth::None => {
                return match self.unsigned_refusal(&resp) {
                    Some(e @ Error::Unavailable { .. }) => Err(e),
                    _ => Ok(resp),
                };
            }
            Auth::Installation(inst) | Auth::Session(inst, _) => inst,
        };
        if !resp.is_success() && !resp.headers.contains_key(SERVER_SIGNATURE_HEADER) {
            if let Some(refusal) = self.unsigned_refusal(&resp) {
                tracing::debug!(endpoint = %req.endpoint(), status = resp.status, "unsigned answer from bunq");
                return Err(refusal);
            }
        }
        let signature = resp
            .headers
            .get(SERVER_SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let headers = resp
            .headers
            .iter()
            .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v)));
        let checked = if signature.is_empty() {
            Err(VerificationError::Missing)
        } else if let Some(cache) = &self.inner.verified {
            cache.verify_response(
                &installation.server_public_key,
                resp.status,
                headers,
                &resp.body,
                signature,
            )
        } else {
            installation.server_public_key.verify_response(
                resp.status,
                headers,
                &resp.body,
                signature,
            )
        };
        match checked {
            Ok(()) => Ok(resp),
            Err(reason) => {
                tracing::warn!(endpoint = %req.endpoint(), status = resp.status, %reason, "response signature rejected");
                Err(Error::SignatureInvalid {
                    endpoint: req.endpoint(),
                    status: resp.status,
                    reason,
                    response_id: resp.response_id,
                })
            }
        }
    }

    /// What an error answer means when bunq did not sign it (see [`verify`](Self::verify)):
    /// `None` for statuses that bunq always signs.
    fn unsigned_refusal(&self, resp: &RawResponse) -> Option<Error> {
        let retry_after = resp
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_UNSIGNED_RETRY_AFTER));
        match resp.status {
            429 => Some(Error::RateLimited {
                retry_after: retry_after.unwrap_or(self.inner.config.rate_limits.window),
            }),
            491 | 500..=599 => Some(Error::Unavailable {
                status: resp.status,
                retry_after,
                response_id: resp.response_id.clone(),
            }),
            _ => None,
        }
    }
}

/// The caller's request id as a header value, or [`Error::InvalidRequest`].
fn request_id_value(req: &ApiRequest, id: &str) -> Result<HeaderValue, Error> {
    let invalid = |detail: &str| Error::InvalidRequest {
        endpoint: req.endpoint(),
        detail: format!("request id {detail}"),
    };
    if id.is_empty() {
        return Err(invalid("is empty"));
    }
    // `to_str` also refuses the bytes above ASCII that HTTP tolerates as "obs-text":
    // an id the caller, bunq and any log must all read back alike is visible ASCII.
    HeaderValue::from_str(id)
        .ok()
        .filter(|value| value.to_str().is_ok())
        .ok_or_else(|| invalid("is not a valid header value (visible ASCII)"))
}

/// Whether an attempt's outcome means bunq may have received the request.
fn may_have_reached_bunq(outcome: &Result<RawResponse, Error>) -> bool {
    match outcome {
        // A 429 is bunq refusing the request unexecuted.
        Ok(resp) => resp.status != 429,
        Err(e) => e.may_have_reached_bunq(),
    }
}
