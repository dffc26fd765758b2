//! The HTTP client: bunq's headers, request signing, response verification, limits,
//! timeouts and retries. The lifecycle calls (installation, device, session) are in
//! `lifecycle`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bunq_signing::{SERVER_SIGNATURE_HEADER, VerificationError};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method};
use rand::Rng as _;
use secrecy::ExposeSecret as _;
use serde::de::DeserializeOwned;

use crate::envelope::{self, Page};
use crate::error::is_dead_session;
use crate::rate_limit::{Limiter, SessionPacer};
use crate::transport::{Failure, Transport};
use crate::verify_cache::VerifiedCache;
use crate::{ClientConfig, Error, Installation, Session};

/// `X-Bunq-Client-Request-Id`: a fresh UUID per request.
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
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body may carry personal data; its size is enough to debug with.
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("body_len", &self.body.len())
            .field("idempotent_retry", &self.idempotent_retry)
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
        }
    }

    /// A GET with an empty body.
    pub fn get(path_and_query: impl Into<String>) -> Self {
        Self::new(Method::GET, path_and_query, Bytes::new())
    }

    /// A POST of a JSON value.
    pub fn post_json(path_and_query: impl Into<String>, body: &serde_json::Value) -> Self {
        Self::new(Method::POST, path_and_query, body.to_string())
    }

    /// A PUT of a JSON value.
    pub fn put_json(path_and_query: impl Into<String>, body: &serde_json::Value) -> Self {
        Self::new(Method::PUT, path_and_query, body.to_string())
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

    /// Whether we may send this request again: GET and HEAD always, PUT and DELETE when
    /// the caller said so, POST (a payment) never.
    pub fn is_retryable(&self) -> bool {
        match self.method {
            Method::GET | Method::HEAD => true,
            Method::PUT | Method::DELETE => self.idempotent_retry,
            _ => false,
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
/// bunq does not sign). Any status comes back as a `RawResponse`; use
/// [`into_result`](Self::into_result) to turn a non-2xx into [`Error::Api`].
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
}

impl fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies can hold tokens (session-server) or personal data.
        f.debug_struct("RawResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("response_id", &self.response_id)
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
        );
        let verified = (config.verify_cache_entries > 0)
            .then(|| VerifiedCache::new(config.verify_cache_entries));
        Ok(Self {
            inner: Arc::new(ClientInner {
                limiter: Limiter::new(config.rate_limits.clone()),
                pacer: SessionPacer::new(&config.rate_limits),
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
    pub(crate) async fn send(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
    ) -> Result<RawResponse, Error> {
        let cfg = &self.inner.config;
        let url = format!(
            "{}/{}",
            self.inner.api_base,
            req.path_and_query.trim_start_matches('/')
        );
        let retryable = req.is_retryable();
        let mut attempt = 0;
        loop {
            let permit = self.inner.limiter.acquire(&req.method, req.path()).await?;
            let outcome = self.exchange(auth, req, &url).await;
            drop(permit);
            let can_retry = retryable && attempt < cfg.max_retries;
            match outcome {
                Ok(resp) if resp.status == 429 => {
                    let delay = self.backoff(attempt);
                    if !can_retry {
                        // bunq sends no Retry-After; a full window is when the limit
                        // has certainly reset.
                        return Err(Error::RateLimited {
                            retry_after: delay.max(cfg.rate_limits.window),
                        });
                    }
                    tracing::debug!(endpoint = %req.endpoint(), attempt, ?delay, "429; backing off");
                    tokio::time::sleep(delay).await;
                }
                Ok(resp) if can_retry && matches!(resp.status, 502..=504) => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(endpoint = %req.endpoint(), status = resp.status, attempt, "retrying");
                    tokio::time::sleep(delay).await;
                }
                Ok(resp) => return self.verify(auth, req, resp),
                Err(Error::Transport { endpoint, source }) if can_retry => {
                    tracing::debug!(%endpoint, error = %source, attempt, "transport error; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
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
        let mut id_buf = uuid::Uuid::encode_buffer();
        let request_id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_buf);
        headers.insert(
            REQUEST_ID_HEADER,
            HeaderValue::from_str(request_id).map_err(|e| Error::Config(e.to_string()))?,
        );
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
                Failure::TimedOut(after) => Error::Timeout {
                    endpoint: req.endpoint(),
                    after,
                },
                Failure::TooLarge => Error::unexpected(
                    req.endpoint(),
                    format!("response body larger than {} bytes", cfg.max_response_bytes),
                ),
                Failure::InvalidUri(e) => Error::InvalidRequest {
                    endpoint: req.endpoint(),
                    detail: e.to_string(),
                },
                Failure::Transport(source) => Error::Transport {
                    endpoint: req.endpoint(),
                    source,
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
        })
    }

    /// Checks `X-Bunq-Server-Signature` with the installation's server key; on failure
    /// the response (and its body) is dropped.
    fn verify(
        &self,
        auth: Auth<'_>,
        req: &ApiRequest,
        resp: RawResponse,
    ) -> Result<RawResponse, Error> {
        let installation = match auth {
            Auth::None => return Ok(resp),
            Auth::Installation(inst) | Auth::Session(inst, _) => inst,
        };
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
}
