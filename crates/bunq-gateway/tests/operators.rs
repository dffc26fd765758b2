//! The operator's surface through the real binary: an orchestrator's stray
//! `BUNQ_GATEWAY_*` variables, request ids and the access log, the admin listener.
#![allow(clippy::unwrap_used)]

mod support;

use support::{API_KEY, Env, Gateway, free_port};

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_service_variables_are_ignored_with_one_warning() {
    let env = Env::new().await;
    let config = env.write_config("gateway.toml", &env.config_text(600));
    // What Kubernetes injects into every pod for a Service named `bunq-gateway`.
    let gw = Gateway::start_with_env(
        &config,
        env.dir.path(),
        &[
            ("BUNQ_GATEWAY_PORT", "tcp://10.0.0.1:8080"),
            ("BUNQ_GATEWAY_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("BUNQ_GATEWAY_SERVICE_HOST", "10.0.0.1"),
            ("BUNQ_GATEWAY_SERVICE_PORT", "8080"),
        ],
    );
    let r = env
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = std::fs::read_to_string(&gw.log).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ignoring BUNQ_GATEWAY_* variables"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    for name in [
        "BUNQ_GATEWAY_PORT",
        "BUNQ_GATEWAY_PORT_8080_TCP",
        "BUNQ_GATEWAY_SERVICE_HOST",
        "BUNQ_GATEWAY_SERVICE_PORT",
    ] {
        assert!(warnings[0].contains(name), "{name}: {}", warnings[0]);
    }
    assert!(!warnings[0].contains("10.0.0.1"), "values are not logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_kept_or_made_returned_and_on_the_access_line() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let get = |id: Option<&'static str>| {
        let mut request = env
            .http
            .get(format!("{}/v1/users/someone@example.com", gw.base))
            .bearer_auth(API_KEY);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };
    let kept = get(Some("lb-7f3a.42:1")).await.unwrap();
    assert_eq!(kept.status(), 404);
    assert_eq!(kept.headers()["x-request-id"], "lb-7f3a.42:1");
    let made = get(None).await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!made_id.is_empty());
    // An id that could forge a log line is replaced.
    let forged = get(Some("x\" status=200 fake=")).await.unwrap();
    let forged_id = forged.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(forged_id, "x\" status=200 fake=");
    let again = get(None).await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), made_id);

    // One info line per request with its id, the route template, the status and the
    // key's name; never the user_ref from the path.
    let log = std::fs::read_to_string(&gw.log).unwrap();
    for id in ["lb-7f3a.42:1", made_id.as_str(), forged_id.as_str()] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(id) && l.contains(" request"))
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {log}");
        let line = lines[0];
        assert!(line.contains("INFO"), "{line}");
        assert!(line.contains("/v1/users/{user_ref}"), "{line}");
        assert!(line.contains("status=404"), "{line}");
        assert!(line.contains("key=\"key-1\""), "{line}");
    }
    assert!(!log.contains("someone@example.com"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_listener_takes_metrics_off_the_public_one() {
    let env = Env::new().await;
    let admin = format!("127.0.0.1:{}", free_port());
    let gw = env.start_gateway_edited(|config| format!("admin_listen = \"{admin}\"\n{config}"));
    let status = |url: String| {
        let http = env.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(status(format!("{}/metrics", gw.base)).await.status(), 404);
    assert_eq!(status(format!("{}/healthz", gw.base)).await.status(), 200);
    let metrics = status(format!("http://{admin}/metrics")).await;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for family in [
        "bunq_gateway_build_info{version=",
        "bunq_gateway_session_queue 0",
        "bunq_gateway_http_requests_total{route=\"/healthz\"",
    ] {
        assert!(text.contains(family), "{family}: {text}");
    }
    assert_eq!(status(format!("http://{admin}/readyz")).await.status(), 200);
    assert_eq!(
        status(format!("http://{admin}/v1/events")).await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_user_ref_is_logged_only_when_configured() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|config| {
        config.replace("workers = 2", "workers = 2\nlog_user_ref = true")
    });
    let r = env
        .http
        .get(format!("{}/v1/users/carol-42", gw.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let log = std::fs::read_to_string(&gw.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("user_ref=carol-42") && l.contains(" request")),
        "{log}"
    );
}

/// The full integrity check runs after start (so that start time does not grow with the
/// database): a database that fails it still starts, and `/readyz` then answers 503,
/// with the failure in the log as an error.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_failing_its_integrity_check_is_not_ready() {
    let env = Env::new().await;
    if env.postgres.is_some() {
        // PostgreSQL's check is a schema-version query at start; nothing runs later.
        return;
    }
    let gw = env.start_gateway();
    let ready = env
        .http
        .get(format!("{}/readyz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    gw.stop();

    // An index whose schema row is removed leaves its page unused: the file opens and
    // answers queries, and `PRAGMA integrity_check` reports "Page N is never used".
    {
        let conn = rusqlite::Connection::open(&env.database).unwrap();
        conn.execute_batch(
            "CREATE INDEX corrupt_probe ON users(status);
             PRAGMA writable_schema = ON;
             DELETE FROM sqlite_master WHERE name = 'corrupt_probe';
             PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    }
    // A new connection (this one's schema cache still knows the index).
    let conn = rusqlite::Connection::open(&env.database).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_ne!(check, "ok");
    drop(conn);

    let gw = env.start_gateway();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = env
            .http
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .unwrap()
            .status();
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never answered 503: {}",
            gw.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        gw.logs().contains("database integrity check failed"),
        "{}",
        gw.logs()
    );
    // Liveness is not readiness: the process still answers.
    let health = env
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
