//! The gateway's configuration: a TOML file, overridden key by key from the environment.
//!
//! Every key `k` of section `s` may come from `BUNQ_GATEWAY_<S>_<K>` (top-level keys from
//! `BUNQ_GATEWAY_<K>`), so that secrets can stay out of the file. Loading validates
//! everything up front: a gateway that starts is a gateway whose config is complete, and
//! a bad config fails with one [`ConfigError`] line that names the key.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use toml::Table;
use url::Url;

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "BUNQ_GATEWAY_";

/// Names the config file when `--config` is not given (read by the CLI, not a key).
pub const CONFIG_PATH_ENV: &str = "BUNQ_GATEWAY_CONFIG";

/// A complete, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served apart from the API
    /// (`admin_listen`); `/metrics` then leaves the main listener.
    pub admin_listen: Option<SocketAddr>,
    /// `BUNQ_GATEWAY_*` variables that name no key, ignored (names only: the caller
    /// warns). Orchestrators inject some (Kubernetes: `BUNQ_GATEWAY_PORT`,
    /// `BUNQ_GATEWAY_SERVICE_HOST` for a Service named `bunq-gateway`).
    pub ignored_environment: Vec<String>,
    /// The gateway's public base URL (the OAuth redirect is derived from it).
    pub public_url: Url,
    /// The database: a SQLite file (created on first start), or a PostgreSQL database
    /// named by a `postgres://` or `postgresql://` URL (its password redacted in `Debug`
    /// and errors).
    pub database: bunq_store::StoreLocation,
    /// How logs are written.
    pub log_format: LogFormat,
    /// `[bunq]`: which bunq to talk to.
    pub bunq: BunqSettings,
    /// `[oauth]`: the gateway's OAuth client at bunq.
    pub oauth: OAuthSettings,
    /// `[security]`: encryption at rest and caller authentication.
    pub security: SecuritySettings,
    /// `[http]`: limits of the HTTP surface.
    pub http: HttpSettings,
    /// `[callbacks]`: bunq's callbacks and the relay to the application.
    pub callbacks: CallbackSettings,
    /// `[fleet]`.
    pub fleet: FleetSettings,
}

/// `[callbacks]` (all optional).
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The categories registered at bunq for every connected user (default MUTATION,
    /// PAYMENT and OAUTH; empty: no subscription).
    pub categories: Vec<String>,
    /// Where callbacks may come from; empty: anywhere (the default for the sandbox and
    /// a custom base; production defaults to bunq's 185.40.108.0/22).
    pub allowed_sources: Vec<ipnet::IpNet>,
    /// Proxies in front of the gateway whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether a callback without `X-Bunq-Server-Signature` is refused (one with a
    /// signature that fails is always refused).
    pub require_signature: bool,
    /// The largest callback body accepted.
    pub max_body_bytes: usize,
    /// The application's webhook receivers (empty: events are only pulled).
    pub webhook_urls: Vec<url::Url>,
    /// The Standard Webhooks secret (`whsec_` + base64), required with `webhook_urls`.
    pub webhook_secret: Option<WebhookSecret>,
    /// How long an event is retried before it is dead.
    pub retry_period: Duration,
    /// The first retry's pause; each failure doubles it (with jitter).
    pub min_backoff: Duration,
    /// The longest pause between two attempts.
    pub max_backoff: Duration,
    /// The timeout of one delivery attempt.
    pub delivery_timeout: Duration,
    /// Whether a bunq callback's object is re-fetched from bunq with the user's session
    /// before it is relayed, bunq's answer replacing the callback's body; one bunq does
    /// not confirm is settled as `unconfirmed` and never sent.
    pub confirm: bool,
    /// How long a delivered (or unconfirmed) event stays in the outbox before the
    /// sweeper deletes it.
    pub retention: Duration,
}

/// The decoded bytes of a `whsec_` webhook secret. `Debug` redacts them.
#[derive(Clone)]
pub struct WebhookSecret(secrecy::SecretSlice<u8>);

impl WebhookSecret {
    /// Decodes `whsec_<base64>` (the prefix is optional, as in the Standard Webhooks
    /// libraries); at least 16 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix("whsec_").unwrap_or(b64);
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) if bytes.len() >= 16 => Ok(Self(bytes.into())),
            Ok(_) => Err("must hold at least 16 bytes".to_owned()),
            Err(_) => Err("must be `whsec_` followed by base64".to_owned()),
        }
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Which bunq deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BunqEnvironment {
    /// `https://public-api.sandbox.bunq.com/v1` and the sandbox OAuth endpoints.
    Sandbox,
    /// `https://api.bunq.com/v1` and the production OAuth endpoints.
    Production,
}

/// `[bunq]`.
#[derive(Debug, Clone)]
pub struct BunqSettings {
    /// Sandbox or production; picks the default URLs.
    pub environment: BunqEnvironment,
    /// Overrides the API base URL (e.g. a local fake).
    pub api_base_url: Option<Url>,
    /// Overrides the OAuth authorize URL.
    pub oauth_authorize_url: Option<Url>,
    /// Overrides the OAuth token URL.
    pub oauth_token_url: Option<Url>,
    /// The `User-Agent` sent to bunq.
    pub user_agent: String,
    /// Whether to pace calls to stay inside bunq's per-IP rate limits.
    pub rate_limits: bool,
    /// The window of bunq's session-server limit (one call per window per IP; bunq:
    /// 30 s). Shorter only against a fake with the same window (tests, benchmarks).
    pub session_window: Duration,
    /// The window of bunq's other limits (bunq: 3 s).
    pub rate_limit_window: Duration,
    /// What counts as one endpoint for those limits: ids folded (`endpoint`, the
    /// cautious default) or each concrete path (`path`).
    pub rate_limit_scope: bunq_session::LimitScope,
    /// The longest a caller waits in the session-server queue before 503
    /// `session_capacity` with a `Retry-After` from its place in the queue.
    pub session_wait: Duration,
    /// `permitted_ips` of `POST /device-server`. Empty (the default) binds each device to
    /// the IP that registers it, for good; list the egress IPs (and `*` for any) when
    /// they may change.
    pub permitted_ips: Vec<String>,
    /// Whether a response whose exact (server key, body, signature) already verified is
    /// accepted on its SHA-256 instead of a second RSA verification (equivalent, as the
    /// verification is deterministic; on by default).
    pub verify_cache: bool,
    /// Fleet mode: the egress (the IP bunq sees this gateway's calls from, or a name
    /// for it) this gateway is behind. Gateways of one egress share its session-server
    /// turn and split its rate limits through the database; users are served by the
    /// gateways of the egress their device was registered from. `default` when unset.
    pub egress: String,
    /// The local address this gateway's connections to bunq leave from (on a host with
    /// several, the one its egress IP is routed through). The system's choice if unset.
    pub bind_address: Option<std::net::IpAddr>,
}

/// `[fleet]`: several gateways on one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// How often a gateway tells the others it is alive.
    pub heartbeat: Duration,
    /// After how long without a heartbeat a gateway counts as dead: its in-flight
    /// `Idempotency-Key`s settle as unknown, and its egress's limits are split among
    /// fewer.
    pub stale_after: Duration,
    /// How long the relay holds an event it delivers before another gateway may take
    /// it over (a gateway that died mid-delivery).
    pub event_lease: Duration,
    /// Where the other gateways reach this one (its private address, e.g.
    /// `http://10.0.0.5:8080`): a request for a user pinned to this gateway's egress
    /// that lands on another egress's gateway is handed here. Unset: such requests are
    /// answered 421 `wrong_egress` there.
    pub advertise_url: Option<Url>,
}

/// `[oauth]`.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// The OAuth client's `client_id`.
    pub client_id: String,
    /// The OAuth client's secret.
    pub client_secret: SecretString,
    /// Where bunq sends the end user back; `public_url + /oauth/callback` by default.
    /// Kept as written (validated as a URL): bunq compares it as a string, and a URL
    /// type would add a `/` to `https://host`.
    pub redirect_uri: String,
    /// How long the callback waits for the consent's connection before answering
    /// "connecting" (the connection goes on in the background).
    pub callback_wait: Duration,
    /// How long an issued `state` stays valid.
    pub state_ttl: Duration,
}

/// Where the 32-byte master key for encryption at rest comes from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// `encryption_key`: base64 of 32 bytes, given inline (validated).
    Inline(SecretString),
    /// `encryption_key_file`: a file holding the key (read when the store opens).
    File(PathBuf),
}

/// `[security]`.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// The master key for encryption at rest.
    pub encryption_key: KeySource,
    /// Bearer tokens accepted on `/v1/*`, each with a name.
    pub api_keys: Vec<ApiKey>,
}

/// One accepted bearer token (`[security] api_keys`). `Debug` shows the name and the
/// prefixes, never the key.
#[derive(Debug, Clone)]
pub struct ApiKey {
    /// What logs and the audit log call the key (`key-1`, `key-2`... for the plain
    /// list form and the environment variable).
    pub name: String,
    /// The token itself.
    pub key: SecretString,
    /// When not empty, the key may only act on `user_ref`s starting with one of these
    /// (multi-tenant use: one key per tenant).
    pub user_ref_prefixes: Vec<String>,
}

/// `[http]` (all optional).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// The longest a request may take end to end, upstream calls included.
    pub request_timeout: Duration,
    /// The timeout of one call to bunq.
    pub upstream_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers (hyper's HTTP/1
    /// header-read timeout, counted from when the gateway waits for them, so also the
    /// longest an HTTP/1.1 keep-alive connection waits for its next request), and how
    /// long a new connection may stay silent.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in progress and no traffic stays open
    /// (HTTP/2 connections; HTTP/1.1 ones are bounded by `header_read_timeout` first).
    pub idle_timeout: Duration,
    /// The most connections open at once, over all workers; more wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// How long an `Idempotency-Key`'s record (and its answer) is kept.
    pub idempotency_retention: Duration,
    /// How many serving threads, each with its own single-threaded runtime; `None`
    /// (`http.workers = 0`, the default) means one per core.
    pub workers: Option<NonZeroUsize>,
    /// Whether the access line names the `user_ref` of `/v1/users/{user_ref}/...`
    /// (off by default: a `user_ref` is often an e-mail address, and logs travel).
    pub log_user_ref: bool,
}

impl HttpSettings {
    /// The number of serving threads: `workers`, or one per available core.
    pub fn worker_count(&self) -> NonZeroUsize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

/// A config that cannot be used. Its `Display` is one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("config file {path}: invalid TOML at line {line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// A key is missing, malformed, or unknown.
    #[error("config key `{key}`{origin}: {reason}")]
    Key {
        /// The dotted key, e.g. `oauth.client_id`.
        key: String,
        /// Where the value came from (empty, or ` (from env BUNQ_GATEWAY_…)`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key this error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The shortest bearer token accepted: shorter ones are guessable.
const MIN_API_KEY_LEN: usize = 16;

impl Config {
    /// Loads the file at `path` (if any) and applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.to_owned(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        let file = path.unwrap_or(Path::new("<none>"));
        Config::from_sources(text.as_deref(), file, std::env::vars())
    }

    /// Builds a config from TOML text and environment pairs; `file` only names the file
    /// in errors. Pure, so tests need not touch the process environment.
    pub fn from_sources(
        toml_text: Option<&str>,
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table = match toml_text {
            Some(text) => parse_toml(text, file)?,
            None => Table::new(),
        };
        let sources = collect(table, env)?;
        let mut config = validate(&sources)?;
        config.ignored_environment = sources.ignored_environment();
        Ok(config)
    }
}

fn validate(src: &Sources) -> Result<Config, ConfigError> {
    let listen = src.str("listen")?.unwrap_or("127.0.0.1:8080");
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| src.err("listen", "must be an address like 127.0.0.1:8080"))?;
    let admin_listen = src
        .str("admin_listen")?
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|_| src.err("admin_listen", "must be an address like 127.0.0.1:9090"))
        })
        .transpose()?;
    if admin_listen.is_some_and(|a| a == listen && a.port() != 0) {
        return Err(src.err("admin_listen", "must differ from listen"));
    }

    let public_url = src
        .url("public_url")?
        .ok_or_else(|| src.err("public_url", "is missing"))?;
    // Checked without connecting; an error names what is wrong, never the URL (it may
    // carry a password).
    let database =
        bunq_store::StoreLocation::parse(src.str("database")?.unwrap_or("bunq-gateway.sqlite3"))
            .map_err(|e| src.err("database", e))?;

    let log_format = match src.str("log_format")?.unwrap_or("human") {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        _ => return Err(src.err("log_format", "must be \"human\" or \"json\"")),
    };

    let environment = match src.required_str("bunq.environment")? {
        "sandbox" => BunqEnvironment::Sandbox,
        "production" => BunqEnvironment::Production,
        _ => {
            return Err(src.err("bunq.environment", "must be \"sandbox\" or \"production\""));
        }
    };
    let bunq = BunqSettings {
        environment,
        api_base_url: src.bunq_url("bunq.api_base_url")?,
        oauth_authorize_url: src.bunq_url("bunq.oauth_authorize_url")?,
        oauth_token_url: src.bunq_url("bunq.oauth_token_url")?,
        user_agent: src
            .str("bunq.user_agent")?
            .unwrap_or(concat!("bunq-gateway/", env!("CARGO_PKG_VERSION")))
            .to_owned(),
        rate_limits: src.bool("bunq.rate_limits", true)?,
        session_window: Duration::from_millis(src.int(
            "bunq.session_window_ms",
            30_000,
            (1, 3_600_000),
        )?),
        rate_limit_window: Duration::from_millis(src.int(
            "bunq.rate_limit_window_ms",
            3_000,
            (1, 3_600_000),
        )?),
        rate_limit_scope: match src.str("bunq.rate_limit_scope")?.unwrap_or("endpoint") {
            "endpoint" => bunq_session::LimitScope::EndpointPattern,
            "path" => bunq_session::LimitScope::ConcretePath,
            _ => return Err(src.err("bunq.rate_limit_scope", "must be \"endpoint\" or \"path\"")),
        },
        session_wait: Duration::from_secs(src.int("bunq.session_wait_seconds", 35, (0, 3_600))?),
        permitted_ips: src.str_list("bunq.permitted_ips")?.unwrap_or_default(),
        verify_cache: src.bool("bunq.verify_cache", true)?,
        egress: match src.str("bunq.egress")? {
            None => "default".to_owned(),
            Some(e)
                if !e.is_empty()
                    && e.len() <= 64
                    && e.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) =>
            {
                e.to_owned()
            }
            Some(_) => {
                return Err(src.err(
                    "bunq.egress",
                    "must be 1 to 64 letters, digits, '.', '-', '_' or ':' (an IP or a name)",
                ));
            }
        },
        bind_address: match src.str("bunq.bind_address")? {
            None => None,
            Some(a) => Some(
                a.parse()
                    .map_err(|_| src.err("bunq.bind_address", "must be an IP address"))?,
            ),
        },
    };
    let fleet = FleetSettings {
        heartbeat: Duration::from_millis(src.int("fleet.heartbeat_ms", 1_000, (50, 60_000))?),
        stale_after: Duration::from_millis(src.int(
            "fleet.stale_after_ms",
            5_000,
            (100, 600_000),
        )?),
        event_lease: Duration::from_millis(src.int(
            "fleet.event_lease_ms",
            60_000,
            (100, 3_600_000),
        )?),
        advertise_url: src.url("fleet.advertise_url")?,
    };
    if fleet.stale_after <= fleet.heartbeat {
        return Err(src.err(
            "fleet.stale_after_ms",
            "must be longer than fleet.heartbeat_ms",
        ));
    }

    let redirect_uri = match (
        src.url("oauth.redirect_uri")?,
        src.str("oauth.redirect_uri")?,
    ) {
        (Some(_), Some(written)) => written.to_owned(),
        _ => {
            let base = public_url.as_str().trim_end_matches('/');
            Url::parse(&format!("{base}/oauth/callback"))
                .map_err(|e| src.err("public_url", format_args!("cannot append a path: {e}")))?
                .to_string()
        }
    };
    let oauth = OAuthSettings {
        client_id: src.required_str("oauth.client_id")?.to_owned(),
        client_secret: inline_or_file(src, "oauth.client_secret", "oauth.client_secret_file")?
            .ok_or_else(|| {
                src.err(
                    "oauth.client_secret",
                    "is missing (or set client_secret_file)",
                )
            })?,
        redirect_uri,
        state_ttl: Duration::from_secs(src.int("oauth.state_ttl_seconds", 600, (1, 86_400))?),
        callback_wait: Duration::from_millis(src.int(
            "oauth.callback_wait_ms",
            3_000,
            (0, 60_000),
        )?),
    };

    let encryption_key = match (
        src.str("security.encryption_key")?,
        src.str("security.encryption_key_file")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(src.err(
                "security.encryption_key",
                "give either encryption_key or encryption_key_file, not both",
            ));
        }
        (None, None) => {
            return Err(src.err(
                "security.encryption_key",
                "is missing (or set security.encryption_key_file)",
            ));
        }
        (Some(b64), None) => {
            let b64 = b64.trim();
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(k) if k.len() == 32 => KeySource::Inline(SecretString::from(b64.to_owned())),
                Ok(k) => {
                    return Err(src.err(
                        "security.encryption_key",
                        format_args!("must be base64 of 32 bytes, got {} bytes", k.len()),
                    ));
                }
                Err(_) => {
                    return Err(src.err(
                        "security.encryption_key",
                        "must be base64 of 32 bytes (e.g. `openssl rand -base64 32`)",
                    ));
                }
            }
        }
        (None, Some(path)) => KeySource::File(PathBuf::from(path)),
    };
    let api_keys = api_keys(src)?;
    let security = SecuritySettings {
        encryption_key,
        api_keys,
    };

    let http = HttpSettings {
        max_body_bytes: usize::try_from(src.int(
            "http.max_body_bytes",
            1024 * 1024,
            (1024, 64 * 1024 * 1024),
        )?)
        .unwrap_or(usize::MAX),
        request_timeout: Duration::from_secs(src.int(
            "http.request_timeout_seconds",
            60,
            (1, 3600),
        )?),
        upstream_timeout: Duration::from_secs(src.int(
            "http.upstream_timeout_seconds",
            30,
            (1, 3600),
        )?),
        shutdown_grace: Duration::from_secs(src.int(
            "http.shutdown_grace_seconds",
            25,
            (0, 3600),
        )?),
        header_read_timeout: Duration::from_millis(src.int(
            "http.header_read_timeout_ms",
            10_000,
            (100, 600_000),
        )?),
        idle_timeout: Duration::from_secs(src.int("http.idle_timeout_seconds", 60, (1, 86_400))?),
        max_connections: usize::try_from(src.int(
            "http.max_connections",
            10_000,
            (1, 1_000_000),
        )?)
        .unwrap_or(usize::MAX),
        idempotency_retention: Duration::from_secs(src.int(
            "http.idempotency_retention_seconds",
            86_400,
            (1, 30 * 86_400),
        )?),
        workers: usize::try_from(src.int("http.workers", 0, (0, 1024))?)
            .ok()
            .and_then(NonZeroUsize::new),
        log_user_ref: src.bool("http.log_user_ref", false)?,
    };

    let callbacks = callback_settings(src, environment, bunq.api_base_url.is_some())?;

    Ok(Config {
        admin_listen,
        ignored_environment: Vec::new(),
        listen,
        public_url,
        database,
        log_format,
        bunq,
        oauth,
        security,
        http,
        callbacks,
        fleet,
    })
}

/// The longest key file read (a key is a line; a longer file is a wrong path).
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The longest `api_keys_file` read (one key per line).
const MAX_KEYS_FILE_BYTES: u64 = 256 * 1024;

/// A secret given inline (`key`) or in a file (`file_key`, as Kubernetes and systemd
/// mount secrets), never both; the file is refused when group or others may read it,
/// as every key file is, and its text is trimmed.
fn inline_or_file(
    src: &Sources,
    key: &str,
    file_key: &str,
) -> Result<Option<SecretString>, ConfigError> {
    match (src.str(key)?, src.str(file_key)?) {
        (Some(_), Some(_)) => Err(src.err(
            key,
            format_args!("give either {key} or {file_key}, not both"),
        )),
        (Some(text), None) => Ok(Some(SecretString::from(text.trim().to_owned()))),
        (None, Some(path)) => Ok(Some(SecretString::from(read_secret_file(
            src,
            file_key,
            path,
            MAX_KEY_FILE_BYTES,
        )?))),
        (None, None) => Ok(None),
    }
}

/// A secret file's trimmed text; errors name the key and the file, never the content.
fn read_secret_file(
    src: &Sources,
    key: &str,
    path: &str,
    max_bytes: u64,
) -> Result<String, ConfigError> {
    let bytes = bunq_signing::read_private_file(path, max_bytes)
        .map_err(|e| src.err(key, format_args!("{path}: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| src.err(key, format_args!("{path} is not UTF-8 text")))?;
    Ok(text.trim().to_owned())
}

/// `security.api_keys`: a list of strings (named `key-1`, `key-2`... by position, as
/// the environment variable's comma-separated form is), or a list of tables
/// `{name, key | key_file, user_ref_prefixes}`. Both forms may be mixed.
fn api_keys(src: &Sources) -> Result<Vec<ApiKey>, ConfigError> {
    const KEY: &str = "security.api_keys";
    let items = src.raw_list(KEY)?.unwrap_or_default();
    let mut candidates = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let position = i + 1;
        candidates.push(match item {
            toml::Value::String(key) => ApiKey {
                name: format!("key-{position}"),
                key: SecretString::from(key.clone()),
                user_ref_prefixes: Vec::new(),
            },
            toml::Value::Table(table) => named_key(src, table, position)?,
            _ => {
                return Err(src.err(
                    KEY,
                    "must be a list of strings or of {name, key | key_file} tables",
                ));
            }
        });
    }
    if let Some(path) = src.str("security.api_keys_file")? {
        candidates.extend(keys_file(src, path)?);
    }
    if candidates.is_empty() {
        return Err(src.err(KEY, "must hold at least one key (or set api_keys_file)"));
    }
    let mut keys: Vec<ApiKey> = Vec::with_capacity(candidates.len());
    for key in candidates {
        // The key's text is never part of an error: only its name or position.
        if secrecy::ExposeSecret::expose_secret(&key.key).len() < MIN_API_KEY_LEN {
            return Err(src.err(
                KEY,
                format_args!(
                    "every key must be at least {MIN_API_KEY_LEN} characters (key {:?} is not)",
                    key.name
                ),
            ));
        }
        if keys.iter().any(|k| k.name == key.name) {
            return Err(src.err(KEY, format_args!("the name {:?} is used twice", key.name)));
        }
        // Two names for one key would make the name a caller is logged under a guess.
        if keys.iter().any(|k| {
            secrecy::ExposeSecret::expose_secret(&k.key)
                == secrecy::ExposeSecret::expose_secret(&key.key)
        }) {
            return Err(src.err(
                KEY,
                format_args!("key {:?} is the same key as an earlier one", key.name),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// `security.api_keys_file`: one key per line, `name:key` to name it (names as in the
/// table form; a line without one is `file-<line>`); blank lines and `#` comments are
/// skipped. The form Kubernetes and systemd mount secrets in.
fn keys_file(src: &Sources, path: &str) -> Result<Vec<ApiKey>, ConfigError> {
    const KEY: &str = "security.api_keys_file";
    let text = read_secret_file(src, KEY, path, MAX_KEYS_FILE_BYTES)?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, key) = match line.split_once(':') {
            Some((name, key)) if valid_key_name(name) => (name.to_owned(), key.trim()),
            _ => (format!("file-{}", i + 1), line),
        };
        keys.push(ApiKey {
            name,
            key: SecretString::from(key.to_owned()),
            user_ref_prefixes: Vec::new(),
        });
    }
    Ok(keys)
}

/// A key's name goes into logs and the audit log as it is: a tame alphabet keeps it
/// from forging log lines.
fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn named_key(src: &Sources, table: &Table, position: usize) -> Result<ApiKey, ConfigError> {
    const KEY: &str = "security.api_keys";
    let field = |name: &str| -> Result<Option<&str>, ConfigError> {
        match table.get(name) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.as_str())),
            Some(_) => Err(src.err(
                KEY,
                format_args!("entry {position}: `{name}` must be a non-empty string"),
            )),
        }
    };
    if let Some(unknown) = table.keys().find(|k| {
        !matches!(
            k.as_str(),
            "name" | "key" | "key_file" | "user_ref_prefixes"
        )
    }) {
        return Err(src.err(
            KEY,
            format_args!("entry {position}: unknown field `{unknown}`"),
        ));
    }
    let name = field("name")?
        .ok_or_else(|| src.err(KEY, format_args!("entry {position}: `name` is missing")))?;
    if !valid_key_name(name) {
        return Err(src.err(
            KEY,
            format_args!("entry {position}: `name` must be 1 to 64 of A-Z a-z 0-9 - _ ."),
        ));
    }
    let key = match (field("key")?, field("key_file")?) {
        (Some(key), None) => SecretString::from(key.to_owned()),
        (None, Some(path)) => {
            // Refused when group or others may read it, as the master key's file is.
            let bytes = bunq_signing::read_private_file(path, MAX_KEY_FILE_BYTES)
                .map_err(|e| src.err(KEY, format_args!("key {name:?}: key_file: {e}")))?;
            let text = std::str::from_utf8(&bytes).map_err(|_| {
                src.err(
                    KEY,
                    format_args!("key {name:?}: key_file is not UTF-8 text"),
                )
            })?;
            SecretString::from(text.trim().to_owned())
        }
        _ => {
            return Err(src.err(
                KEY,
                format_args!("key {name:?}: give exactly one of `key` and `key_file`"),
            ));
        }
    };
    let user_ref_prefixes = match table.get("user_ref_prefixes") {
        None => Vec::new(),
        Some(toml::Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| match v {
                toml::Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(src.err(
                    KEY,
                    format_args!("key {name:?}: user_ref_prefixes must be non-empty strings"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(src.err(
                KEY,
                format_args!("key {name:?}: user_ref_prefixes must be a non-empty list"),
            ));
        }
    };
    Ok(ApiKey {
        name: name.to_owned(),
        key,
        user_ref_prefixes,
    })
}

/// bunq's production callback source range.
const BUNQ_CALLBACK_RANGE: &str = "185.40.108.0/22";

fn networks(src: &Sources, key: &str) -> Result<Option<Vec<ipnet::IpNet>>, ConfigError> {
    let Some(list) = src.str_list(key)? else {
        return Ok(None);
    };
    list.iter()
        .map(|s| {
            // A bare address is a network of one.
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| src.err(key, format_args!("{s:?} is not an address or CIDR range")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn callback_settings(
    src: &Sources,
    environment: BunqEnvironment,
    custom_base: bool,
) -> Result<CallbackSettings, ConfigError> {
    // Subscribed at every connect whether or not a webhook receiver is configured: the
    // events wait in the outbox for the pull API, and OAUTH callbacks mark revocations
    // without waiting for a refused call. `categories = []` turns subscribing off.
    let categories = src
        .str_list("callbacks.categories")?
        .unwrap_or_else(|| ["MUTATION", "PAYMENT", "OAUTH"].map(str::to_owned).to_vec());
    if let Some(bad) = categories
        .iter()
        .find(|c| c.is_empty() || !c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
    {
        return Err(src.err(
            "callbacks.categories",
            format_args!("{bad:?} is not a bunq category (upper case, e.g. PAYMENT)"),
        ));
    }
    let allowed_sources = match networks(src, "callbacks.allowed_sources")? {
        Some(list) => list,
        None if environment == BunqEnvironment::Production && !custom_base => {
            vec![
                BUNQ_CALLBACK_RANGE
                    .parse()
                    .map_err(|_| src.err("callbacks.allowed_sources", "bad built-in default"))?,
            ]
        }
        None => Vec::new(),
    };
    let webhook_urls = src
        .str_list("callbacks.webhook_urls")?
        .unwrap_or_default()
        .iter()
        .map(|u| match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
            _ => Err(src.err(
                "callbacks.webhook_urls",
                format_args!("{u:?} is not an http:// or https:// URL"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let webhook_secret = inline_or_file(
        src,
        "callbacks.webhook_secret",
        "callbacks.webhook_secret_file",
    )?
    .map(|text| {
        WebhookSecret::parse(secrecy::ExposeSecret::expose_secret(&text))
            .map_err(|reason| src.err("callbacks.webhook_secret", reason))
    })
    .transpose()?;
    if !webhook_urls.is_empty() && webhook_secret.is_none() {
        return Err(src.err(
            "callbacks.webhook_secret",
            "is missing (webhook_urls are set; set it or webhook_secret_file)",
        ));
    }
    Ok(CallbackSettings {
        categories,
        allowed_sources,
        trusted_proxies: networks(src, "callbacks.trusted_proxies")?.unwrap_or_default(),
        require_signature: src.bool("callbacks.require_signature", false)?,
        max_body_bytes: usize::try_from(src.int(
            "callbacks.max_body_bytes",
            64 * 1024,
            (1024, 16 * 1024 * 1024),
        )?)
        .unwrap_or(usize::MAX),
        webhook_urls,
        webhook_secret,
        retry_period: Duration::from_secs(src.int(
            "callbacks.retry_period_seconds",
            86_400,
            (1, 30 * 86_400),
        )?),
        min_backoff: Duration::from_millis(src.int(
            "callbacks.min_backoff_ms",
            1_000,
            (1, 3_600_000),
        )?),
        max_backoff: Duration::from_secs(src.int(
            "callbacks.max_backoff_seconds",
            3_600,
            (1, 86_400),
        )?),
        delivery_timeout: Duration::from_secs(src.int(
            "callbacks.delivery_timeout_seconds",
            10,
            (1, 300),
        )?),
        confirm: src.bool("callbacks.confirm", false)?,
        retention: Duration::from_secs(src.int(
            "callbacks.retention_seconds",
            7 * 86_400,
            (60, 366 * 86_400),
        )?),
    })
}

mod sources;
#[cfg(test)]
mod tests;

use sources::{Sources, collect, parse_toml};
