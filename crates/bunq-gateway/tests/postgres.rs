//! The gateway on PostgreSQL, through the real binary: `database = "postgres://..."`
//! selects the backend; a user connected at the fake stays connected across a restart;
//! `check-config` and `rotate-key` work on it; the URL's password never reaches a log.
//! Runs when `BUNQ_STORE_POSTGRES_URL` is set, and fails without it under `CI=true`.
//! (`BUNQ_GATEWAY_TESTS_ON_POSTGRES=1` runs every other gateway test there as well.)
#![allow(clippy::unwrap_used)]

mod support;

use support::{Env, Gateway, MASTER_KEY, run_to_exit};

/// A password the server does not ask for (the test database trusts local users) but
/// the URL carries: it must appear in no output.
const URL_PASSWORD: &str = "pw-never-logged-7f3a";

#[tokio::test(flavor = "multi_thread")]
async fn serves_from_postgres_and_keeps_users_across_restarts_and_rotations() {
    let Some(mut env) = Env::on_postgres().await else {
        return;
    };
    if !has_password(&env.database) {
        env.database = format!("{}&password={URL_PASSWORD}", env.database);
    }
    let config = env.write_config("gateway.toml", &env.config_text(600));

    let checked = run_to_exit(
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &[],
    );
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    let hedda = env.end_user();
    let gw = Gateway::start(&config, env.dir.path());
    assert_eq!(env.connect(&gw, "hedda", hedda.user_id).await.status(), 302);
    let (status, user) = env.user(&gw, "hedda").await;
    assert_eq!((status, user["status"].as_str()), (200, Some("connected")));
    let bunq_user_id = user["bunq_user_id"].as_u64().unwrap();
    assert_eq!(env.accounts(&gw, "hedda", bunq_user_id).await.status(), 200);
    let ready = env
        .http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the readiness probe asks PostgreSQL");
    let first_logs = gw.logs();
    assert!(gw.stop().success());

    // Restarted: the user and the session come from PostgreSQL; bunq sees nothing new.
    let (installations, sessions) = (
        env.fake.calls("POST /installation"),
        env.fake.calls("POST /session-server"),
    );
    let gw = Gateway::start(&config, env.dir.path());
    let (status, user) = env.user(&gw, "hedda").await;
    assert_eq!((status, user["status"].as_str()), (200, Some("connected")));
    assert_eq!(env.accounts(&gw, "hedda", bunq_user_id).await.status(), 200);
    assert_eq!(env.fake.calls("POST /installation"), installations);
    assert_eq!(env.fake.calls("POST /session-server"), sessions);
    let second_logs = gw.logs();
    assert!(gw.stop().success());

    // rotate-key on PostgreSQL, then the gateway starts with the new key only.
    let new_key = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
    let new_key_file = env.dir.path().join("new.key");
    bunq_signing::write_private_file(&new_key_file, new_key.as_bytes()).unwrap();
    let rotated = run_to_exit(
        &[
            "rotate-key".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--new-key-file".as_ref(),
            new_key_file.as_os_str(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(stdout.contains("re-encrypted"), "{stdout}");
    let old = run_to_exit(&["--config".as_ref(), config.as_os_str()], &[]);
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("wrong master key"));
    let rotated_config = env.write_config(
        "rotated.toml",
        &env.config_text(600).replace(MASTER_KEY, new_key),
    );
    let gw = Gateway::start(&rotated_config, env.dir.path());
    let (status, user) = env.user(&gw, "hedda").await;
    assert_eq!((status, user["status"].as_str()), (200, Some("connected")));
    assert_eq!(env.accounts(&gw, "hedda", bunq_user_id).await.status(), 200);
    let third_logs = gw.logs();
    assert!(gw.stop().success());

    for output in [
        first_logs,
        second_logs,
        third_logs,
        String::from_utf8_lossy(&checked.stdout).into_owned(),
        String::from_utf8_lossy(&rotated.stderr).into_owned(),
        String::from_utf8_lossy(&old.stderr).into_owned(),
        stdout.into_owned(),
    ] {
        assert!(
            !output.contains(URL_PASSWORD),
            "the URL's password leaked: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_postgres_url_is_a_config_error_naming_the_key_not_the_password() {
    let env = Env::new().await;
    let config = env.write_config(
        "bad.toml",
        &env.config_text(600).replace(
            &format!("database = \"{}\"", env.database),
            &format!("database = \"postgres://gw:{URL_PASSWORD}@db:notaport/x\""),
        ),
    );
    let out = run_to_exit(
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database"), "{stderr}");
    assert!(!stderr.contains(URL_PASSWORD), "{stderr}");
}

/// Whether a URL carries a password already (in its user info or as a parameter).
fn has_password(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .unwrap_or("");
    let user_info_password = authority
        .rsplit_once('@')
        .is_some_and(|(user_info, _)| user_info.contains(':'));
    user_info_password || url.contains("password=")
}
