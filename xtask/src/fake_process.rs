//! The `bunq-fake` binary as a child process, for the soak: the fake in a process of its
//! own (its own CPU, its own log), started with the limits' windows it is given, its
//! URLs read from its first stdout line, its knobs and counters reached through the
//! control endpoint (`/_fake`, see the bunq-testkit crate docs), stopped with SIGTERM
//! (killed if dropped).

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::FakeUrls;

/// How long the fake may take to print its URLs (it generates an RSA key first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the fake is started with.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// bunq's limits answer 429.
    pub rate_limits: bool,
    /// The session-server window (1 call per window per IP).
    pub session_server_window: Duration,
    /// The other limits' window.
    pub rate_limit_window: Duration,
    /// The lifetime of new sessions.
    pub session_timeout: Duration,
    /// The pause before a failed callback delivery is retried.
    pub callback_retry_interval: Duration,
}

/// A running `bunq-fake`. Killed on drop.
pub struct FakeProcess {
    child: Option<Child>,
    api_base: String,
    oauth_authorize_url: String,
    oauth_token_url: String,
    control_url: String,
    http: reqwest::Client,
}

impl FakeProcess {
    /// Spawns `bin` on a free 127.0.0.1 port with `options`; stderr goes to `log`.
    pub async fn start(bin: &Path, options: &FakeOptions, log: &Path) -> Result<Self, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let ms = |d: Duration| d.as_millis().to_string();
        let mut command = Command::new(bin);
        command
            .args(["--listen", "127.0.0.1:0", "--print-json"])
            .args([
                "--session-server-window-ms",
                &ms(options.session_server_window),
            ])
            .args(["--rate-limit-window-ms", &ms(options.rate_limit_window)])
            .args([
                "--session-timeout-secs",
                &options.session_timeout.as_secs().to_string(),
            ])
            .args([
                "--callback-retry-interval-ms",
                &ms(options.callback_retry_interval),
            ]);
        if options.rate_limits {
            command.arg("--rate-limits");
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        // Killed by the drop if the line never comes.
        let mut fake = FakeProcess {
            child: Some(child),
            api_base: String::new(),
            oauth_authorize_url: String::new(),
            oauth_token_url: String::new(),
            control_url: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())?,
        };
        // A blocking read on a thread of its own, bounded by the timeout.
        let line = tokio::time::timeout(
            START_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout)
                    .read_line(&mut line)
                    .map(|_| line)
            }),
        )
        .await
        .map_err(|_| format!("bunq-fake printed no URLs within {START_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading bunq-fake's stdout: {e}"))?;
        let urls: Value = serde_json::from_str(&line)
            .map_err(|e| format!("bunq-fake's first line is not JSON ({e}): {line}"))?;
        let url = |name: &str| {
            urls[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name} in {line}"))
        };
        fake.api_base = url("api_base")?;
        fake.oauth_authorize_url = url("oauth_authorize_url")?;
        fake.oauth_token_url = url("oauth_token_url")?;
        fake.control_url = url("control_url")?;
        Ok(fake)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `POST /_fake/knobs` with `knobs` (see the bunq-testkit crate docs).
    pub async fn knobs(&self, knobs: &Value) -> Result<(), String> {
        self.post("knobs", knobs).await.map(|_| ())
    }

    /// `GET /_fake/{path}`.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}/{path}", self.control_url);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        Self::json(&url, response).await
    }

    /// `POST /_fake/{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let url = format!("{}/{path}", self.control_url);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        Self::json(&url, response).await
    }

    async fn json(url: &str, response: reqwest::Response) -> Result<Value, String> {
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{url}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON ({e}): {text}"))
    }

    /// SIGTERM, then a bounded wait (SIGKILL after it).
    pub fn terminate(mut self) -> Result<std::process::ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err("bunq-fake already stopped".into());
        };
        crate::gateway_process::terminate_child(&mut child)
    }
}

impl FakeUrls for FakeProcess {
    fn api_base(&self) -> String {
        self.api_base.clone()
    }

    fn oauth_authorize_url(&self) -> String {
        self.oauth_authorize_url.clone()
    }

    fn oauth_token_url(&self) -> String {
        self.oauth_token_url.clone()
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
