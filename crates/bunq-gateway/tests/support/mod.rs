//! Test support: a fake bunq with a registered OAuth client, and the real gateway binary
//! started against it. Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bunq_oauth::{OAuthClientInfo, ensure_oauth_client};
use bunq_session::{
    BunqClient, ClientConfig, CredentialId, Environment, MemoryContextStore, RateLimitPolicy,
    SessionManager, SessionManagerConfig,
};
use bunq_testkit::{FakeBunq, FakeConfig, SandboxUser};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

/// The bearer key the tests' gateways accept.
pub const API_KEY: &str = "test-api-key-0123456789";
/// Base64 of 32 bytes.
pub const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// How long the tests wait for the gateway to start or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// A fake bunq with an OAuth client registered for `http://127.0.0.1:{port}/oauth/callback`,
/// and a temporary directory for the gateway's config and database.
pub struct Env {
    pub fake: FakeBunq,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub oauth: OAuthClientInfo,
    pub http: reqwest::Client,
    /// The config's `database`: the SQLite file in `dir`, or a PostgreSQL URL whose
    /// connections use a schema of this env's own.
    pub database: String,
    /// That schema, dropped with the env.
    pub postgres: Option<PgSchema>,
}

/// Names the PostgreSQL database the tests make their schemas in (as bunq-store's).
pub const POSTGRES_URL_ENV: &str = "BUNQ_STORE_POSTGRES_URL";
/// Set to 1, every `Env::new` puts the gateway on PostgreSQL: the whole suite then runs
/// on that backend (tests that read the SQLite file behind the gateway's back excepted).
pub const ALL_ON_POSTGRES_ENV: &str = "BUNQ_GATEWAY_TESTS_ON_POSTGRES";

/// The PostgreSQL URL of the test run; under `CI=true` its absence is a failure.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{POSTGRES_URL_ENV} is not set under CI=true: the PostgreSQL tests must run")
        }
        _ => {
            eprintln!("{POSTGRES_URL_ENV} not set: this PostgreSQL test did not run");
            None
        }
    }
}

/// A schema of one test in the run's PostgreSQL database, dropped with it.
pub struct PgSchema {
    pub base_url: String,
    pub name: String,
}

impl PgSchema {
    pub async fn create(base_url: String) -> PgSchema {
        let name = format!("gw_{}", uuid::Uuid::new_v4().simple());
        pg_connect(&base_url)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        PgSchema { base_url, name }
    }

    /// The base URL with this schema as the connections' search_path.
    pub fn url(&self) -> String {
        let sep = if self.base_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}options=-csearch_path%3D{}",
            self.base_url, self.name
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.base_url.clone(), self.name.clone());
        // Drop may run on a runtime's worker: a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                pg_connect(&url)
                    .await
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
            })
        })
        .join();
    }
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_ENV}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A port that was free a moment ago (the gateway binds it right after).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Env {
    pub async fn new() -> Env {
        Env::with_fake(FakeConfig::default()).await
    }

    /// An env whose gateway keeps its database on PostgreSQL; `None` (the test passes
    /// without running) when no server is configured and `CI` is not `true`.
    pub async fn on_postgres() -> Option<Env> {
        let base = postgres_url()?;
        let mut env = Env::with_fake(FakeConfig::default()).await;
        env.use_postgres(base).await;
        Some(env)
    }

    pub async fn use_postgres(&mut self, base_url: String) {
        let schema = PgSchema::create(base_url).await;
        self.database = schema.url();
        self.postgres = Some(schema);
    }

    /// On PostgreSQL, a connection holding an exclusive lock on `oauth_states` until it
    /// is dropped (as a SQLite test holds the write lock); `None` on SQLite.
    pub async fn lock_states_table(&self) -> Option<tokio_postgres::Client> {
        self.postgres.as_ref()?;
        let client = pg_connect(&self.database).await;
        client
            .batch_execute("BEGIN; LOCK TABLE oauth_states IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Some(client)
    }

    /// The gateway's database, opened beside the gateway (SQLite in WAL mode and
    /// PostgreSQL both allow it) with the tests' master key.
    pub async fn open_store(&self) -> bunq_store::Store {
        let location = bunq_store::StoreLocation::parse(&self.database).unwrap();
        bunq_store::Store::open_location(
            &location,
            bunq_store::MasterKey::from_base64(MASTER_KEY).unwrap(),
            bunq_store::StoreOptions::default(),
        )
        .await
        .unwrap()
    }

    /// Starts the fake and registers the application's OAuth client the way an
    /// operator would: with the API key of the application's own bunq user.
    pub async fn with_fake(config: FakeConfig) -> Env {
        let fake = FakeBunq::start_with(config).await.unwrap();
        let port = free_port();
        let owner = fake.create_sandbox_user();
        let client = BunqClient::new(
            ClientConfig::new(Environment::Custom {
                api_base: fake.api_base(),
            })
            .rate_limits(RateLimitPolicy::disabled()),
        )
        .unwrap();
        let manager = SessionManager::new(
            client,
            MemoryContextStore::new(),
            SessionManagerConfig::default(),
        );
        let credential = CredentialId::new("app-owner");
        manager
            .connect(&credential, SecretString::from(owner.api_key.clone()))
            .await
            .unwrap();
        let oauth = ensure_oauth_client(
            &manager,
            &credential,
            owner.user_id,
            &format!("http://127.0.0.1:{port}/oauth/callback"),
        )
        .await
        .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("gateway.sqlite3").display().to_string();
        let mut env = Env {
            fake,
            dir,
            port,
            oauth,
            http,
            database,
            postgres: None,
        };
        if std::env::var(ALL_ON_POSTGRES_ENV).is_ok_and(|v| v == "1") {
            if let Some(base) = postgres_url() {
                env.use_postgres(base).await;
            }
        }
        env
    }

    /// A complete config for this env; `extra` is appended (a `[http]` section, ...).
    pub fn config_text(&self, state_ttl_seconds: u64) -> String {
        format!(
            r#"
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
database = "{db}"

[bunq]
environment = "sandbox"
api_base_url = "{api}"
oauth_authorize_url = "{auth}"
oauth_token_url = "{token}"
rate_limits = false

[oauth]
client_id = "{client_id}"
client_secret = "{client_secret}"
state_ttl_seconds = {state_ttl_seconds}

[security]
encryption_key = "{MASTER_KEY}"
api_keys = ["{API_KEY}"]

[http]
max_body_bytes = 4096
# Two serving threads whatever the machine, so that every test crosses workers.
workers = 2
"#,
            port = self.port,
            db = self.database,
            api = self.fake.api_base(),
            auth = self.fake.oauth_authorize_url(),
            token = self.fake.oauth_token_url(),
            client_id = self.oauth.client_id.as_str(),
            client_secret = self.oauth.client_secret.expose_secret(),
        )
    }

    /// Starts the gateway with the standard config changed by `edit` (e.g. a
    /// `.replace("rate_limits = false", ...)`), on the same database every time.
    pub fn start_gateway_edited(&self, edit: impl Fn(String) -> String) -> Gateway {
        let config = self.write_config("gateway.toml", &edit(self.config_text(600)));
        Gateway::start(&config, self.dir.path())
    }

    /// Connects `user_ref` as `end_user` and returns the user's `bunq_user_id` and
    /// first account id (a top-up of 100.00 on it is done, for payments).
    pub async fn connected_payer(&self, gw: &Gateway, user_ref: &str) -> (u64, u64) {
        let end_user = self.end_user();
        let callback = self.connect(gw, user_ref, end_user.user_id).await;
        assert_eq!(callback.status(), 302);
        let (_, user) = self.user(gw, user_ref).await;
        let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();
        let account = end_user.monetary_account_ids[0];
        let top_up = serde_json::json!({
            "amount_inquired": {"value": "100.00", "currency": "EUR"},
            "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
            "description": "top up",
            "allow_bunqme": false
        });
        let path = format!("user/{bunq_user_id}/monetary-account/{account}/request-inquiry");
        let topped = self
            .proxy(gw, reqwest::Method::POST, user_ref, &path, Some(top_up))
            .await;
        assert_eq!(topped.status(), 200);
        (bunq_user_id, account)
    }

    /// Writes `text` as the config file and returns its path.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts the gateway with the standard config.
    pub fn start_gateway(&self) -> Gateway {
        self.start_gateway_with_ttl(600)
    }

    pub fn start_gateway_with_ttl(&self, state_ttl_seconds: u64) -> Gateway {
        let config = self.write_config("gateway.toml", &self.config_text(state_ttl_seconds));
        Gateway::start(&config, self.dir.path())
    }

    /// A user the fake's consent page will act as (the `user_id` test hook).
    pub fn end_user(&self) -> SandboxUser {
        self.fake.create_sandbox_user()
    }

    /// `POST /v1/authorizations` → the response JSON.
    pub async fn authorize(&self, gw: &Gateway, user_ref: &str, return_to: Option<&str>) -> Value {
        let mut body = serde_json::json!({ "user_ref": user_ref });
        if let Some(r) = return_to {
            body["return_to"] = Value::from(r);
        }
        let response = self
            .http
            .post(format!("{}/v1/authorizations", gw.base))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// Follows the authorize URL at the fake (redirects disabled) as `end_user` and
    /// returns the callback URL bunq redirects to.
    pub async fn consent(&self, authorization_url: &str, end_user: u64) -> String {
        let response = self
            .http
            .get(format!("{authorization_url}&user_id={end_user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302, "consent page did not redirect");
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// The whole flow for `user_ref`; returns the callback's response.
    pub async fn connect(&self, gw: &Gateway, user_ref: &str, end_user: u64) -> reqwest::Response {
        let auth = self
            .authorize(gw, user_ref, Some("https://app.example/after"))
            .await;
        let callback = self
            .consent(auth["authorization_url"].as_str().unwrap(), end_user)
            .await;
        assert!(callback.starts_with(&gw.base), "{callback}");
        self.http.get(callback).send().await.unwrap()
    }

    /// A call through the proxy.
    pub async fn proxy(
        &self,
        gw: &Gateway,
        method: reqwest::Method,
        user_ref: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(
                method,
                format!("{}/v1/users/{user_ref}/bunq/{path}", gw.base),
            )
            .bearer_auth(API_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// The user's account list through the proxy:
    /// `GET .../bunq/user/{bunq_user_id}/monetary-account-bank`.
    pub async fn accounts(
        &self,
        gw: &Gateway,
        user_ref: &str,
        bunq_user_id: u64,
    ) -> reqwest::Response {
        let path = format!("user/{bunq_user_id}/monetary-account-bank");
        self.proxy(gw, reqwest::Method::GET, user_ref, &path, None)
            .await
    }

    /// `GET /v1/users/{user_ref}` → (status, JSON or Null).
    pub async fn user(&self, gw: &Gateway, user_ref: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/v1/users/{user_ref}", gw.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The real `bunq-gateway` binary, running.
pub struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`, from the binary's `listening on` line.
    pub base: String,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(config: &Path, dir: &Path) -> Gateway {
        Self::start_with_env(config, dir, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_with_env(config: &Path, dir: &Path, vars: &[(&str, &str)]) -> Gateway {
        let log = dir.join(format!("gateway-{}.log", free_port()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_bunq-gateway"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(PROCESS_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!(
                    "gateway did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .unwrap();
        let base = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Gateway { child, base, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (through `kill`, as the workspace forbids unsafe code).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, nothing flushed but what was committed.
    pub fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// What the gateway logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the gateway binary to completion (a subcommand, or a start that must fail) with
/// `args` and extra environment variables, returning what it printed.
pub fn run_to_exit(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bunq-gateway"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}
