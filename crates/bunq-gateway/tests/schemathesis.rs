//! schemathesis (PyPI) against the running binary, from docs/openapi.yaml: generated
//! requests on every route, and no answer may be a server error.
//!
//! Uses `$SCHEMATHESIS` (set by `.ci/run`), else `target/bunq-sdk-venv/bin/st`. Where
//! neither runs it prints why and returns, but under `CI=true` a missing schemathesis is
//! a failure: CI installs it.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{API_KEY, Env};

async fn schemathesis() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = std::env::var_os("SCHEMATHESIS")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace.join("target/bunq-sdk-venv/bin/st")]);
    for st in candidates {
        let probe = tokio::process::Command::new(&st)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(30), probe).await {
            if status.success() {
                return Some(st);
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error() {
    let Some(st) = schemathesis().await else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true and no schemathesis: .ci/run installs it into target/bunq-sdk-venv"
        );
        println!("SKIPPED: no schemathesis (set SCHEMATHESIS, or run .ci/run to install it)");
        return;
    };
    let env = Env::new().await;
    let gw = env.start_gateway();
    // A connected user, so that generated proxy calls for it reach the fake.
    env.connected_payer(&gw, "alice").await;
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml");
    let run = tokio::process::Command::new(&st)
        .arg("run")
        .arg(&spec)
        .args(["--url", &gw.base])
        .args(["--header", &format!("Authorization: Bearer {API_KEY}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "40"])
        .args(["--seed", "17"])
        .args(["--request-timeout", "10"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        // Its example cache goes with the test's directory, not into the source tree.
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finishes within 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}\ngateway log tail:\n{}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    println!("{stdout}");
    // It ran operations, not nothing.
    assert!(
        stdout.contains("passed") || stdout.contains("Passed"),
        "{stdout}"
    );
}
