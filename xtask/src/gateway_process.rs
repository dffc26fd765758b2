//! The `bunq-gateway` binary as a child process, for the demo and the bench: built by
//! cargo, started with a bounded wait for `/readyz`, stopped with SIGTERM and a bounded
//! wait (killed if dropped), and called with a bearer key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Not `--quiet`: a first build takes minutes, and cargo's own progress on stderr
    // (compiling lines, the progress bar on a terminal) shows that something happens.
    let mut args = vec!["build", "-p", "bunq-gateway", "--bin", "bunq-gateway"];
    if release {
        args.push("--release");
    }
    // Artifacts as JSON on stdout (for the path), diagnostics rendered on stderr.
    args.push("--message-format=json-render-diagnostics");
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p bunq-gateway failed ({})",
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "bunq-gateway")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo reported no bunq-gateway executable".to_owned())
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

    /// SIGTERM, then a bounded wait for a graceful exit (SIGKILL after it).
    pub fn terminate(mut self) -> Result<std::process::ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("gateway already stopped".into());
        };
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
