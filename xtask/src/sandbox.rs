//! `cargo xtask sandbox-setup`: onboarding against bunq's sandbox (or any bunq-compatible
//! base such as a local `bunq-fake`) in one idempotent command.
//!
//! What it keeps between runs: the sandbox user's API key and bunq context (installation
//! key, tokens, session) in a 0600 JSON file (`--context-file`), and in the gateway config
//! (`--out`, 0600) the encryption key and API key of the first run, so that a database
//! written with them stays readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use bunq_api::{Amount, NewRequestInquiry, Pointer, UserApi};
use bunq_oauth::{OAuthClientInfo, ensure_oauth_client};
use bunq_session::{
    ApiContext, BunqClient, ClientConfig, ContextStore, ContextStoreError, CredentialId,
    Environment, RateLimitPolicy, SessionManager, SessionManagerConfig,
};
use bunq_signing::write_private_file;
use ring::rand::SecureRandom as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::progress::{Progress, StepError};

/// bunq's sandbox API.
pub const SANDBOX_API_BASE: &str = "https://public-api.sandbox.bunq.com/v1";
/// The sandbox's sugar daddy, who pays any request-inquiry.
const SUGARDADDY: &str = "sugardaddy@bunq.com";
/// Top up only below this balance, so that a second run does not ask again.
const TOP_UP_EUR: &str = "500.00";

/// Where sandbox-setup keeps its state by default: a git-ignored directory, so that the
/// sandbox user's API key and private key never sit at the repository's root.
const DEFAULT_CONTEXT_FILE: &str = ".bunq/sandbox.json";
/// Where versions before `.bunq/` kept it; moved on the next run.
const LEGACY_CONTEXT_FILE: &str = "bunq-sandbox.json";

/// The command line of `sandbox-setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// bunq API base; bunq's sandbox unless given (e.g. a local bunq-fake's `/v1`).
    #[arg(long, default_value = SANDBOX_API_BASE)]
    pub api_base_url: String,
    /// OAuth authorize URL; bunq's sandbox one for bunq's base, `{origin}/auth` for any other.
    #[arg(long)]
    pub oauth_authorize_url: Option<String>,
    /// OAuth token URL; bunq's sandbox one for bunq's base, `{api_base}/token` for any other.
    #[arg(long)]
    pub oauth_token_url: Option<String>,
    /// Where to write the gateway config (mode 0600).
    #[arg(long, default_value = "gateway.toml")]
    pub out: PathBuf,
    /// The gateway's OAuth callback URL, registered with the OAuth client.
    #[arg(long, default_value = "http://127.0.0.1:8080/oauth/callback")]
    pub callback_url: String,
    /// Use this API key instead of creating a sandbox user (or `BUNQ_API_KEY`).
    #[arg(
        long,
        env = "BUNQ_API_KEY",
        hide_env_values = true,
        conflicts_with = "api_key_file"
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file (not readable by group or others).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Do not top up the first account from sugardaddy@bunq.com.
    #[arg(long)]
    pub no_money: bool,
    /// Where the sandbox user's API key and bunq context are kept (mode 0600, in a 0700
    /// directory; `.bunq/` is git-ignored).
    #[arg(long, default_value = DEFAULT_CONTEXT_FILE)]
    pub context_file: PathBuf,
    /// The gateway's database path, written into the config.
    #[arg(long, default_value = "bunq-gateway.sqlite3")]
    pub database: String,
    /// Onboard as a licensed PSD2 provider (AISP/PISP) by its certificate, not an API
    /// key: the OAuth client and the gateway config then belong to the provider. With
    /// `--certificate`, `--certificate-key` and `--chain`, else (bunq's sandbox or a
    /// local fake only) a self-signed test certificate kept beside the context file.
    /// An API key given (`--api-key`, `BUNQ_API_KEY`) is not used.
    #[arg(long, conflicts_with = "api_key_file")]
    pub psd2: bool,
    /// The provider's certificate (PEM), for `--psd2`.
    #[arg(long, requires_all = ["psd2", "certificate_key", "chain"])]
    pub certificate: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8 or PKCS#1, RSA; mode 0600), for `--psd2`.
    #[arg(long, requires_all = ["psd2", "certificate", "chain"])]
    pub certificate_key: Option<PathBuf>,
    /// The certificate's chain (PEM certificates, issuer first, root last), for `--psd2`.
    #[arg(long, requires_all = ["psd2", "certificate", "certificate_key"])]
    pub chain: Option<PathBuf>,
}

/// Where a local bunq-fake serves: one in this process ([`bunq_testkit::FakeBunq`]) or
/// the `bunq-fake` binary ([`crate::fake_process::FakeProcess`]).
pub trait FakeUrls {
    /// `http://127.0.0.1:PORT/v1`.
    fn api_base(&self) -> String;
    /// The consent page, `http://127.0.0.1:PORT/auth`.
    fn oauth_authorize_url(&self) -> String;
    /// The token endpoint, `http://127.0.0.1:PORT/v1/token`.
    fn oauth_token_url(&self) -> String;
}

impl FakeUrls for bunq_testkit::FakeBunq {
    fn api_base(&self) -> String {
        bunq_testkit::FakeBunq::api_base(self)
    }

    fn oauth_authorize_url(&self) -> String {
        bunq_testkit::FakeBunq::oauth_authorize_url(self)
    }

    fn oauth_token_url(&self) -> String {
        bunq_testkit::FakeBunq::oauth_token_url(self)
    }
}

impl SandboxArgs {
    /// Onboarding against a local bunq-fake (the demo's, the bench's and the soak's
    /// set-up): the fake's API and OAuth URLs, a new sandbox user topped up, the config
    /// and the sandbox context under `dir`, the gateway's callback under `gateway_url`.
    pub fn against_fake(
        fake: &impl FakeUrls,
        dir: &Path,
        gateway_url: &str,
        database: &Path,
    ) -> Self {
        SandboxArgs {
            api_base_url: fake.api_base(),
            oauth_authorize_url: Some(fake.oauth_authorize_url()),
            oauth_token_url: Some(fake.oauth_token_url()),
            out: dir.join("gateway.toml"),
            callback_url: format!("{gateway_url}/oauth/callback"),
            api_key: None,
            api_key_file: None,
            no_money: false,
            context_file: dir.join("bunq-sandbox.json"),
            database: database.display().to_string(),
            psd2: false,
            certificate: None,
            certificate_key: None,
            chain: None,
        }
    }
}

/// What a run produced.
pub struct SetupOutcome {
    /// The config written.
    pub config_path: PathBuf,
    /// The bearer token callers of the gateway's `/v1/*` send.
    pub gateway_api_key: SecretString,
    /// The gateway's public URL (the callback URL's origin).
    pub public_url: String,
}

/// The credential under which the sandbox owner's context is kept.
fn owner() -> CredentialId {
    CredentialId::new("sandbox-owner")
}

pub async fn run(args: &SandboxArgs) -> Result<SetupOutcome, StepError> {
    let api_base = args.api_base_url.trim_end_matches('/').to_owned();
    let (authorize_url, token_url) = oauth_urls(args, &api_base);
    move_legacy_context_file(&args.context_file).map_err(|e| StepError {
        step: "move the context file into .bunq/".into(),
        detail: e,
        hint: format!("move {LEGACY_CONTEXT_FILE} to {DEFAULT_CONTEXT_FILE} by hand"),
    })?;
    let store = ContextFile::open(&args.context_file).map_err(|e| StepError {
        step: "read the context file".into(),
        detail: e.to_string(),
        hint: format!("remove or fix {}", args.context_file.display()),
    })?;
    let client = BunqClient::new(client_config(&api_base)).map_err(|e| StepError {
        step: "configure the bunq client".into(),
        detail: e.to_string(),
        hint: "check --api-base-url".into(),
    })?;
    let mut progress = Progress::new(if args.psd2 { 4 } else { 5 });
    let (manager, credential, user_id) = if args.psd2 {
        crate::sandbox_psd2::provider(args, &api_base, store, client, &mut progress).await?
    } else {
        sandbox_user(args, &api_base, store, client, &mut progress).await?
    };

    let oauth_client = progress
        .step(
            "OAuth client and callback URL",
            "bunq allows one OAuth client per user; check it in the bunq app or with GET /user/{id}/oauth-client",
            async {
                let info =
                    ensure_oauth_client(&manager, &credential, user_id, &args.callback_url).await?;
                let outcome = format!(
                    "client {} (client_id {}), callback {}",
                    info.id,
                    info.client_id.as_str(),
                    args.callback_url
                );
                Ok::<_, bunq_oauth::OAuthError>((info, outcome))
            },
        )
        .await?;

    let written = progress
        .step(
            "gateway config",
            "check that the directory of --out exists and is writable",
            write_gateway_config(args, &api_base, &authorize_url, &token_url, &oauth_client),
        )
        .await?;

    println!(
        "\nDone in {} ms. Next:\n  cargo run -p bunq-gateway -- --config {}\n  curl -H 'Authorization: Bearer <api_keys[0] in {}>' -X POST {}/v1/authorizations -d '{{\"user_ref\":\"alice\"}}'",
        progress.elapsed_ms(),
        args.out.display(),
        args.out.display(),
        written.public_url,
    );
    Ok(written)
}

/// The API-key path: the sandbox user and its API key, its session, its top-up.
async fn sandbox_user(
    args: &SandboxArgs,
    api_base: &str,
    store: ContextFile,
    client: BunqClient,
    progress: &mut Progress,
) -> Result<(SessionManager<ContextFile>, CredentialId, u64), StepError> {
    let secret = progress
        .step(
            "sandbox user and API key",
            "check that --api-base-url is bunq's sandbox (or a bunq-fake) and reachable",
            api_key(args, api_base, &store),
        )
        .await?;

    let manager = SessionManager::new(client, store, SessionManagerConfig::default());
    let user_id = progress
        .step(
            "installation, device-server and session-server",
            "a refused API key means the sandbox user is gone: delete the context file and run again",
            async {
                let context = manager.connect(&owner(), secret).await?;
                let user_id = session_user(&context)?;
                Ok::<_, bunq_session::Error>((
                    user_id,
                    format!(
                        "bunq user {user_id}; context kept in {}",
                        args.context_file.display()
                    ),
                ))
            },
        )
        .await?;

    progress
        .step(
            "top up from sugardaddy@bunq.com",
            "sandbox top-ups can fail while bunq's sandbox is busy: run again, or pass --no-money",
            top_up(&manager, args.no_money),
        )
        .await?;
    Ok((manager, owner(), user_id))
}

/// The bunq user id of a connected context's session.
pub(crate) fn session_user(context: &ApiContext) -> Result<u64, bunq_session::Error> {
    context
        .session
        .as_ref()
        .map(|s| s.user_id)
        .ok_or_else(|| bunq_session::Error::Config("connect returned no session".into()))
}

/// The OAuth endpoints: given, bunq's sandbox for bunq's base, or bunq-fake's layout.
fn oauth_urls(args: &SandboxArgs, api_base: &str) -> (String, String) {
    let (default_authorize, default_token) = if api_base == SANDBOX_API_BASE {
        (
            "https://oauth.sandbox.bunq.com/auth".to_owned(),
            "https://api-oauth.sandbox.bunq.com/v1/token".to_owned(),
        )
    } else {
        let origin = url::Url::parse(api_base)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| api_base.to_owned());
        (format!("{origin}/auth"), format!("{api_base}/token"))
    };
    (
        args.oauth_authorize_url
            .clone()
            .unwrap_or(default_authorize),
        args.oauth_token_url.clone().unwrap_or(default_token),
    )
}

pub(crate) fn is_loopback(api_base: &str) -> bool {
    url::Url::parse(api_base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
}

fn client_config(api_base: &str) -> ClientConfig {
    let environment = if api_base == SANDBOX_API_BASE {
        Environment::Sandbox
    } else {
        Environment::Custom {
            api_base: api_base.to_owned(),
        }
    };
    // bunq's per-IP limits do not apply to a fake on this machine.
    let limits = if is_loopback(api_base) {
        RateLimitPolicy::disabled()
    } else {
        RateLimitPolicy::bunq()
    };
    ClientConfig::new(environment)
        .user_agent(concat!("bunq-gateway-xtask/", env!("CARGO_PKG_VERSION")))
        .rate_limits(limits)
}

/// A context file at the repository's root from before `.bunq/`: moved there, so that a
/// second run reuses its sandbox user and the root holds no credentials.
fn move_legacy_context_file(context_file: &Path) -> Result<(), String> {
    let legacy = Path::new(LEGACY_CONTEXT_FILE);
    if context_file != Path::new(DEFAULT_CONTEXT_FILE) || context_file.exists() || !legacy.exists()
    {
        return Ok(());
    }
    create_private_dir(context_file)?;
    std::fs::rename(legacy, context_file).map_err(|e| e.to_string())?;
    println!("moved {LEGACY_CONTEXT_FILE} to {DEFAULT_CONTEXT_FILE}");
    Ok(())
}

/// Creates the parent directory of `file` (mode 0700) if it is missing.
pub(crate) fn create_private_dir(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt as _;
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// The longest API key file read.
const MAX_API_KEY_FILE_BYTES: u64 = 4096;

/// The API key: given (flag, `BUNQ_API_KEY` or file), kept from an earlier run, or a new
/// sandbox user's.
async fn api_key(
    args: &SandboxArgs,
    api_base: &str,
    store: &ContextFile,
) -> Result<(SecretString, String), String> {
    if let Some(key) = &args.api_key {
        return Ok((
            SecretString::from(key.trim().to_owned()),
            "given with --api-key or BUNQ_API_KEY".into(),
        ));
    }
    if let Some(path) = &args.api_key_file {
        let bytes = bunq_signing::read_private_file(path, MAX_API_KEY_FILE_BYTES)
            .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?;
        let key = std::str::from_utf8(&bytes)
            .map_err(|_| format!("--api-key-file {} is not text", path.display()))?;
        return Ok((
            SecretString::from(key.trim().to_owned()),
            format!("read from {}", path.display()),
        ));
    }
    if let Some(context) = store.get(&owner()).filter(|c| c.api_base == api_base) {
        return Ok((
            context.secret.clone(),
            format!("reused from {}", args.context_file.display()),
        ));
    }
    let url = format!("{api_base}/sandbox-user-person");
    let response = reqwest::Client::new()
        .post(&url)
        .header("User-Agent", "bunq-gateway-xtask")
        .header("X-Bunq-Client-Request-Id", uuid::Uuid::new_v4().to_string())
        .header("X-Bunq-Language", "en_US")
        .header("X-Bunq-Region", "nl_NL")
        .header("X-Bunq-Geolocation", "0 0 0 0 000")
        .header("Cache-Control", "no-cache")
        .header("Content-Type", "application/json")
        .body("{}")
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let response_id = response
        .headers()
        .get("X-Bunq-Client-Response-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| format!("POST {url}: {status}, body not JSON: {e}"))?;
    let key = body
        .pointer("/Response/0/ApiKey/api_key")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            let error = body
                .pointer("/Error/0/error_description")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no ApiKey in the response");
            format!("POST sandbox-user-person: {status}: {error} (response id {response_id})")
        })?;
    Ok((
        SecretString::from(key.to_owned()),
        "new sandbox user created".into(),
    ))
}

async fn top_up<S: ContextStore>(
    manager: &SessionManager<S>,
    skip: bool,
) -> Result<((), String), Box<dyn std::error::Error + Send + Sync>> {
    if skip {
        return Ok(((), "skipped (--no-money)".into()));
    }
    let api = UserApi::new(manager.clone(), owner());
    let target = Amount::eur(TOP_UP_EUR)?;
    let accounts = api.monetary_accounts().await?;
    // Active accounts come first: a closed account cannot take money.
    let Some(account) = accounts.first().filter(|a| a.is_active()) else {
        return Ok(((), "no active monetary account to top up".into()));
    };
    let balance = account.info().balance;
    if let Some(balance) = balance.filter(|b| b.minor_units() >= target.minor_units()) {
        return Ok((
            (),
            format!("account {} already holds {balance}", account.id()),
        ));
    }
    let request = NewRequestInquiry::new(
        target,
        Pointer::email(SUGARDADDY)?.with_name("Sugar Daddy")?,
        "sandbox-setup top-up",
    )?;
    api.create_request_inquiry(account.id(), &request).await?;
    Ok(((), format!("asked {target} for account {}", account.id())))
}

fn random_base64(len: usize, url_safe: bool) -> String {
    let mut bytes = vec![0u8; len];
    // The OS random source failing is not something a setup tool can work around.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random source");
    if url_safe {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    } else {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Writes the gateway config, keeping the keys of an existing one.
async fn write_gateway_config(
    args: &SandboxArgs,
    api_base: &str,
    authorize_url: &str,
    token_url: &str,
    oauth_client: &OAuthClientInfo,
) -> Result<(SetupOutcome, String), String> {
    let existing: toml::Table = match std::fs::read_to_string(&args.out) {
        Ok(text) => text
            .parse()
            .map_err(|e| format!("{} exists but is not TOML: {e}", args.out.display()))?,
        Err(_) => toml::Table::new(),
    };
    let kept = |section: &str, key: &str| existing.get(section).and_then(|s| s.get(key)).cloned();
    let callback = url::Url::parse(&args.callback_url)
        .map_err(|e| format!("--callback-url {}: {e}", args.callback_url))?;
    let public_url = callback.origin().ascii_serialization();
    let listen = existing
        .get("listen")
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(
            || match (callback.host_str(), callback.port_or_known_default()) {
                (Some(host @ ("127.0.0.1" | "localhost")), Some(port)) => format!("{host}:{port}"),
                _ => "127.0.0.1:8080".to_owned(),
            },
        );
    let mut security = toml::Table::new();
    match (
        kept("security", "encryption_key"),
        kept("security", "encryption_key_file"),
    ) {
        (_, Some(file)) => {
            security.insert("encryption_key_file".into(), file);
        }
        (Some(key), None) => {
            security.insert("encryption_key".into(), key);
        }
        (None, None) => {
            security.insert("encryption_key".into(), random_base64(32, false).into());
        }
    }
    let api_keys = kept("security", "api_keys")
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .unwrap_or_else(|| toml::Value::Array(vec![random_base64(32, true).into()]));
    let gateway_api_key = api_keys
        .as_array()
        .and_then(|a| a.first())
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    security.insert("api_keys".into(), api_keys);

    let mut bunq = toml::Table::new();
    bunq.insert("environment".into(), "sandbox".into());
    if api_base != SANDBOX_API_BASE {
        bunq.insert("api_base_url".into(), api_base.into());
    }
    bunq.insert("oauth_authorize_url".into(), authorize_url.into());
    bunq.insert("oauth_token_url".into(), token_url.into());
    bunq.insert("rate_limits".into(), (!is_loopback(api_base)).into());

    let mut oauth = toml::Table::new();
    oauth.insert("client_id".into(), oauth_client.client_id.as_str().into());
    oauth.insert(
        "client_secret".into(),
        oauth_client.client_secret.expose_secret().into(),
    );
    oauth.insert("redirect_uri".into(), args.callback_url.clone().into());

    let mut config = toml::Table::new();
    config.insert("listen".into(), listen.into());
    config.insert("public_url".into(), public_url.clone().into());
    let database = existing
        .get("database")
        .cloned()
        .unwrap_or_else(|| args.database.clone().into());
    config.insert("database".into(), database);
    config.insert("bunq".into(), bunq.into());
    config.insert("oauth".into(), oauth.into());
    config.insert("security".into(), security.into());
    let text = format!(
        "# bunq-gateway config written by `cargo xtask sandbox-setup`. Holds secrets: keep it 0600.\n{}",
        toml::to_string(&config).map_err(|e| e.to_string())?
    );
    write_private_file(&args.out, text.as_bytes()).map_err(|e| e.to_string())?;
    let outcome = format!("{} written (mode 0600)", args.out.display());
    Ok((
        SetupOutcome {
            config_path: args.out.clone(),
            gateway_api_key: SecretString::from(gateway_api_key),
            public_url,
        },
        outcome,
    ))
}

/// A [`ContextStore`] kept in one 0600 JSON file, rewritten on every save: enough for
/// one developer's sandbox user.
pub struct ContextFile {
    path: PathBuf,
    contexts: Mutex<BTreeMap<CredentialId, ApiContext>>,
}

impl ContextFile {
    fn open(path: &Path) -> Result<Self, String> {
        let loaded: BTreeMap<CredentialId, ApiContext> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a context file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Self {
            path: path.to_owned(),
            contexts: Mutex::new(loaded),
        })
    }

    pub(crate) fn get(&self, credential: &CredentialId) -> Option<ApiContext> {
        self.contexts.lock().ok()?.get(credential).cloned()
    }
}

impl ContextStore for ContextFile {
    async fn load(
        &self,
        credential: &CredentialId,
    ) -> Result<Option<ApiContext>, ContextStoreError> {
        Ok(self.get(credential))
    }

    async fn save(
        &self,
        credential: &CredentialId,
        context: &ApiContext,
    ) -> Result<(), ContextStoreError> {
        let mut contexts = self
            .contexts
            .lock()
            .map_err(|_| ContextStoreError("context file lock poisoned".into()))?;
        contexts.insert(credential.clone(), context.clone());
        let json =
            serde_json::to_vec_pretty(&*contexts).map_err(|e| ContextStoreError(Box::new(e)))?;
        create_private_dir(&self.path).map_err(|e| ContextStoreError(e.into()))?;
        write_private_file(&self.path, &json).map_err(|e| ContextStoreError(Box::new(e)))
    }
}
