//! `bunq-fake`: the fake bunq server as a process, for demos and tests in other languages.
//!
//! Prints its URLs on start, one `name=value` per line (or one JSON object with
//! `--print-json`), then serves until SIGINT or SIGTERM. Knobs are set over the control
//! endpoint (`control_url`, see the bunq-testkit crate docs).

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bunq_testkit::{FakeBunq, FakeConfig};
use clap::Parser;

/// A faithful fake bunq server (API, OAuth, sandbox) on localhost.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Session lifetime reported as `session_timeout`, in seconds.
    #[arg(long, default_value_t = 3600)]
    session_timeout_secs: u64,
    /// Answer bunq's rate limits with 429.
    #[arg(long)]
    rate_limits: bool,
    /// The session-server limit's window (1 call per window), in milliseconds; bunq: 30 s.
    #[arg(long, default_value_t = 30_000)]
    session_server_window_ms: u64,
    /// The other limits' window (GET 3, POST 5, PUT 2 per window), in milliseconds; bunq: 3 s.
    #[arg(long, default_value_t = 3_000)]
    rate_limit_window_ms: u64,
    /// The pause before each retry of a failed callback delivery (bunq: a minute).
    #[arg(long, default_value_t = 60_000)]
    callback_retry_interval_ms: u64,
    /// Print the URLs as one JSON object line instead of `name=value` lines.
    #[arg(long)]
    print_json: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = FakeConfig {
        session_timeout: Duration::from_secs(args.session_timeout_secs),
        rate_limits: args.rate_limits,
        session_server_window: Duration::from_millis(args.session_server_window_ms),
        rate_limit_window: Duration::from_millis(args.rate_limit_window_ms),
        callback_retry_interval: Duration::from_millis(args.callback_retry_interval_ms),
        ..FakeConfig::default()
    };
    let fake = match FakeBunq::start_on(args.listen, config).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("bunq-fake: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let urls = [
        ("base_url", fake.base_url()),
        ("api_base", fake.api_base()),
        ("oauth_authorize_url", fake.oauth_authorize_url()),
        ("oauth_token_url", fake.oauth_token_url()),
        ("control_url", fake.control_url()),
    ];
    let text = if args.print_json {
        let map: serde_json::Map<String, serde_json::Value> = urls
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(v.as_str())))
            .collect();
        format!("{}\n", serde_json::Value::Object(map))
    } else {
        urls.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    };
    let mut out = std::io::stdout().lock();
    // Whoever started us reads these lines to find the port: flush them now.
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        eprintln!("bunq-fake: cannot write to stdout");
    }
    drop(out);
    wait_for_signal().await;
    fake.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
