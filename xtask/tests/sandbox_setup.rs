//! `cargo xtask sandbox-setup` end to end against bunq-testkit, including the idempotent
//! second run.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use bunq_testkit::FakeBunq;
use common::against;

async fn sandbox_setup(fake: &FakeBunq, dir: &Path, extra: &[&str]) -> Output {
    common::xtask(common::in_dir(against(fake), dir, extra)).await
}

fn config(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("gateway.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

const ONCE_PER_SETUP: [&str; 5] = [
    "POST /sandbox-user-person",
    "POST /installation",
    "POST /session-server",
    "POST /user/{id}/oauth-client",
    "POST /user/{id}/monetary-account/{aid}/request-inquiry",
];

#[tokio::test(flavor = "multi_thread")]
async fn sets_up_once_and_reuses_everything_on_the_second_run() {
    let fake = FakeBunq::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let first = sandbox_setup(&fake, dir.path(), &[]).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for step in ["[1/5]", "[5/5]", "new sandbox user created", "Next:"] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    for endpoint in ONCE_PER_SETUP {
        assert_eq!(fake.calls(endpoint), 1, "{endpoint}");
    }

    #[cfg(unix)]
    for file in ["gateway.toml", "bunq-sandbox.json"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let written = config(dir.path());
    assert_eq!(
        written["bunq"]["api_base_url"].as_str(),
        Some(fake.api_base().as_str())
    );
    assert_eq!(written["bunq"]["rate_limits"].as_bool(), Some(false));
    assert!(!written["oauth"]["client_id"].as_str().unwrap().is_empty());
    assert!(
        !written["oauth"]["client_secret"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(written["security"]["encryption_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(key.len(), 32);

    // The sandbox user got money.
    let context: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bunq-sandbox.json")).unwrap())
            .unwrap();
    let user_id = context["sandbox-owner"]["session"]["user_id"]
        .as_u64()
        .unwrap();
    assert!(user_id > 0);

    let second = sandbox_setup(&fake, dir.path(), &[]).await;
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(stdout.contains("reused"), "{stdout}");
    // No new user, installation, session, OAuth client or top-up.
    for endpoint in ONCE_PER_SETUP {
        assert_eq!(fake.calls(endpoint), 1, "{endpoint} after the second run");
    }
    let again = config(dir.path());
    assert_eq!(
        again["security"], written["security"],
        "keys must survive a re-run"
    );
    assert_eq!(again["oauth"]["client_id"], written["oauth"]["client_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn given_api_key_and_no_money_skip_user_creation_and_top_up() {
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let dir = tempfile::tempdir().unwrap();
    let out = sandbox_setup(
        &fake,
        dir.path(),
        &["--api-key", &user.api_key, "--no-money"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fake.calls("POST /sandbox-user-person"), 0);
    assert_eq!(
        fake.calls("POST /user/{id}/monetary-account/{aid}/request-inquiry"),
        0
    );
    // The secret never reaches the terminal.
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&user.api_key));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_names_the_step_and_what_to_do() {
    let fake = FakeBunq::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = sandbox_setup(&fake, dir.path(), &["--api-key", "not-a-key-bunq-issued"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("installation, device-server and session-server"),
        "{stderr}"
    );
    assert!(stderr.contains("what to do"), "{stderr}");
    assert!(!dir.path().join("gateway.toml").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn state_goes_to_a_private_bunq_dir_and_an_old_root_file_is_moved_there() {
    use std::os::unix::fs::PermissionsExt as _;
    let fake = FakeBunq::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |cwd: std::path::PathBuf, env_key: Option<String>| {
        let args = against(&fake);
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
            command
                .current_dir(cwd)
                .args(&args)
                .env_remove("BUNQ_API_KEY");
            if let Some(key) = env_key {
                command.env("BUNQ_API_KEY", key);
            }
            command.output().unwrap()
        })
    };
    // An earlier version's file at the root: moved, and its sandbox user reused.
    let first = sandbox_setup(&fake, dir.path(), &[]).await;
    assert!(first.status.success());
    let users = fake.calls("POST /sandbox-user-person");
    let out = run(dir.path().to_owned(), None).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!dir.path().join("bunq-sandbox.json").exists());
    let state = dir.path().join(".bunq/sandbox.json");
    assert!(state.exists());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(".bunq")), 0o700);
    assert_eq!(mode(&state), 0o600);
    assert_eq!(fake.calls("POST /sandbox-user-person"), users, "reused");

    // An API key from the environment: no sandbox user is made.
    let fresh = tempfile::tempdir().unwrap();
    let key = fake.create_sandbox_user().api_key;
    let out = run(fresh.path().to_owned(), Some(key)).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("BUNQ_API_KEY"), "{stdout}");
    assert_eq!(fake.calls("POST /sandbox-user-person"), users);
}
