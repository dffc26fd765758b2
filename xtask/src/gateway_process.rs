//! The `bunq-gateway` binary as a child process, for the demo, the bench and the soak:
//! built by cargo, configured through sandbox-setup, started with a bounded wait for
//! `/readyz`, stopped with SIGTERM and a bounded wait (or SIGKILL; killed if dropped),
//! watched through `/proc`, and called with a bearer key, end users connected through
//! the real OAuth redirects.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bunq_store::MasterKey;
use serde_json::{Value, json};

/// The workspace's root (this crate lives in `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Bounded waits.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `cargo build [--release] -p bunq-gateway` with the cargo running us, returning the
/// executable's path.
pub fn build_gateway(workspace: &Path, release: bool) -> Result<PathBuf, String> {
    build_bin(workspace, "bunq-gateway", "bunq-gateway", release)
}

/// `cargo build [--release] -p package --bin bin` with the cargo running us, returning
/// the executable's path.
pub fn build_bin(
    workspace: &Path,
    package: &str,
    bin: &str,
    release: bool,
) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Not `--quiet`: a first build takes minutes, and cargo's own progress on stderr
    // (compiling lines, the progress bar on a terminal) shows that something happens.
    let mut args = vec!["build", "-p", package, "--bin", bin];
    if release {
        args.push("--release");
    }
    // Artifacts as JSON on stdout (for the path), diagnostics rendered on stderr.
    args.push("--message-format=json-render-diagnostics");
    // `cargo run` gave this process the variables of xtask's own package
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ...); ring's build script watches some of
    // them, and a value other than the one of a build from the shell rebuilds ring and
    // all that depends on it (the TLS stack, the gateway) here and again there.
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| name_str.starts_with(p))
        {
            command.env_remove(&name);
        }
    }
    let output = command
        .current_dir(workspace)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p {package} failed ({})",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo reported no {bin} executable"))
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A gateway child process. Killed on drop.
pub struct GatewayProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// From spawning the process to the first `/readyz` 200.
    pub ready_after: Duration,
}

impl GatewayProcess {
    /// Spawns `bin --config config` and polls `/readyz` every 2 ms (bounded); stderr goes
    /// to `log`.
    pub async fn start(bin: &Path, config: &Path, url: &str, log: &Path) -> Result<Self, String> {
        Self::start_with_env(bin, config, url, log, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables (config overrides such
    /// as `BUNQ_GATEWAY_BUNQ_VERIFY_CACHE`).
    pub async fn start_with_env(
        bin: &Path,
        config: &Path,
        url: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut gateway = GatewayProcess {
            child: Some(child),
            url: url.to_owned(),
            ready_after: Duration::ZERO,
        };
        while started.elapsed() < READY_TIMEOUT {
            if let Some(child) = gateway.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(format!("gateway exited at start with {status}: {log}"));
                }
            }
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
                if r.status().is_success() {
                    gateway.ready_after = started.elapsed();
                    return Ok(gateway);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(format!("{url}/readyz not ready within {READY_TIMEOUT:?}"))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has ended (on its own: nobody stopped it).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (a crash, an OOM kill, a pulled plug) and the wait for the exit.
    pub fn kill(mut self) -> Result<std::process::ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("gateway already stopped".into());
        };
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())
    }

    /// SIGTERM, then a bounded wait for a graceful exit (SIGKILL after it).
    pub fn terminate(mut self) -> Result<std::process::ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("gateway already stopped".into());
        };
        terminate_child(&mut child)
    }
}

/// SIGTERM to `child`, then a bounded wait for its exit (SIGKILL after it).
pub fn terminate_child(child: &mut Child) -> Result<std::process::ExitStatus, String> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One gateway call that must answer `expect`; returns its JSON body.
pub async fn call(
    http: &reqwest::Client,
    bearer: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    expect: u16,
) -> Result<Value, String> {
    let mut request = http
        .request(method.clone(), url)
        .header("Authorization", bearer);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if status != expect {
        return Err(format!(
            "{method} {url}: expected {expect}, got {status}: {text}"
        ));
    }
    serde_json::from_str(&text).map_err(|e| format!("{method} {url}: not JSON ({e}): {text}"))
}

/// Connects `user_ref` the way an end user does ([`consent`]) and returns the bunq user
/// id the gateway reports (the callback waits for the connection, which is immediate
/// without rate limits).
pub async fn connect_user(
    http: &reqwest::Client,
    bearer: &str,
    gateway: &str,
    user_ref: &str,
) -> Result<u64, String> {
    consent(http, bearer, gateway, user_ref).await?;
    let user = call(
        http,
        bearer,
        reqwest::Method::GET,
        &format!("{gateway}/v1/users/{user_ref}"),
        None,
        200,
    )
    .await?;
    user["bunq_user_id"]
        .as_u64()
        .ok_or_else(|| format!("no bunq_user_id in {user}"))
}

/// `POST /v1/authorizations`, then the browser's trip through the fake's consent page
/// back to the gateway's callback (`http` follows redirects).
pub async fn consent(
    http: &reqwest::Client,
    bearer: &str,
    gateway: &str,
    user_ref: &str,
) -> Result<(), String> {
    let body = call(
        http,
        bearer,
        reqwest::Method::POST,
        &format!("{gateway}/v1/authorizations"),
        Some(json!({ "user_ref": user_ref })),
        201,
    )
    .await?;
    let url = body["authorization_url"]
        .as_str()
        .ok_or("no authorization_url")?
        .to_owned();
    let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(format!(
            "callback ended with {status}: {}",
            response.text().await.unwrap_or_default()
        ));
    }
    Ok(())
}

/// A gateway config of a chore's own (a bench item's, the soak's), made by sandbox-setup against `fake` in `dir`.
pub struct OwnConfig {
    /// `http://127.0.0.1:PORT`, the gateway's address once started.
    pub url: String,
    /// `Bearer <gateway API key>`.
    pub bearer: String,
    /// The config file, changed by the item's `edit`.
    pub path: std::path::PathBuf,
}

/// sandbox-setup against `fake` in `dir` (a fresh database), then the config it wrote
/// changed by `edit` and written (0600) as `file_name` beside it.
pub async fn own_config(
    fake: &impl crate::sandbox::FakeUrls,
    dir: &Path,
    file_name: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> Result<OwnConfig, String> {
    use secrecy::ExposeSecret as _;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let database = dir.join("gateway.sqlite3");
    let setup = crate::sandbox::SandboxArgs::against_fake(fake, dir, &url, &database);
    let outcome = crate::sandbox::run(&setup)
        .await
        .map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {}", outcome.gateway_api_key.expose_secret());
    let mut table = read_config(&outcome.config_path)?.table;
    edit(&mut table);
    let path = dir.join(file_name);
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    bunq_signing::write_private_file(&path, text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(OwnConfig { url, bearer, path })
}

/// The parts of a gateway config written by sandbox-setup that the chores need.
pub struct ConfigFacts {
    /// The master key (inline in configs written by sandbox-setup).
    pub master_key: MasterKey,
    /// The whole config, to derive variants from.
    pub table: toml::Table,
}

/// Reads the master key out of a config written by sandbox-setup.
pub fn read_config(path: &Path) -> Result<ConfigFacts, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let security = table.get("security").and_then(toml::Value::as_table);
    let master_key = match (
        security
            .and_then(|s| s.get("encryption_key"))
            .and_then(toml::Value::as_str),
        security
            .and_then(|s| s.get("encryption_key_file"))
            .and_then(toml::Value::as_str),
    ) {
        (Some(b64), _) => MasterKey::from_base64(b64),
        (None, Some(file)) => MasterKey::from_file(file),
        _ => return Err("the config has no security.encryption_key".into()),
    }
    .map_err(|e| e.to_string())?;
    Ok(ConfigFacts { master_key, table })
}

/// The resident set of process `pid` in MiB, from `/proc/<pid>/status`.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// How many file descriptors process `pid` holds open (`/proc/<pid>/fd`).
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|entries| entries.count())
}
