//! What the xtask tests share: `cargo xtask` run as its binary, pointed at a fake.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use bunq_testkit::FakeBunq;

/// `sandbox-setup` pointed at `fake`.
pub fn against(fake: &FakeBunq) -> Vec<String> {
    vec![
        "sandbox-setup".to_owned(),
        "--api-base-url".into(),
        fake.api_base(),
        "--oauth-authorize-url".into(),
        fake.oauth_authorize_url(),
        "--oauth-token-url".into(),
        fake.oauth_token_url(),
    ]
}

/// `args` followed by `--out` and `--context-file` in `dir`, then `extra`.
pub fn in_dir(mut args: Vec<String>, dir: &Path, extra: &[&str]) -> Vec<String> {
    args.extend([
        "--out".into(),
        dir.join("gateway.toml").display().to_string(),
        "--context-file".into(),
        dir.join("bunq-sandbox.json").display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs the xtask binary with `args`, off the async workers, without `BUNQ_API_KEY`.
pub async fn xtask(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(&args)
            .env_remove("BUNQ_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
