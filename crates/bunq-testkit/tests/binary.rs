//! The `bunq-fake` binary: its URLs line, and the limits' windows from its arguments.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Client;
use serde_json::Value;

/// Kills the child however the test ends.
struct Fake(Child);

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_takes_the_limits_windows_from_its_arguments() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bunq-fake"))
        .args([
            "--print-json",
            "--rate-limits",
            "--session-server-window-ms",
            "600",
            "--rate-limit-window-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let fake = Fake(child);
    // The first line comes once the listener is bound; a blocking read in a thread of
    // its own, bounded by the timeout.
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let urls: Value = serde_json::from_str(&line).unwrap();
    let api_base = urls["api_base"].as_str().unwrap().to_owned();
    let control = urls["control_url"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let user: Value = http
        .post(format!("{control}/sandbox-user"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api_key = user["api_key"].as_str().unwrap();

    let mut second = Client::new(api_base.clone());
    second.install().await;
    assert_eq!(second.device(api_key).await.status, 200);
    let _first = Client::login(api_base, api_key).await;
    assert_eq!(second.session(api_key).await.status, 429);
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(second.session(api_key).await.status, 200);
    let calls: Value = http
        .get(format!("{control}/calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["rate_limited"]["POST /session-server"], 1);
    drop(fake);
}
