//! Unit tests of config loading.

use secrecy::ExposeSecret as _;

use super::*;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn full() -> String {
    format!(
        r#"
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
database = "gw.sqlite3"

[bunq]
environment = "sandbox"
api_base_url = "http://127.0.0.1:9000/v1"
rate_limits = false

[oauth]
client_id = "cid"
client_secret = "csecret"

[security]
encryption_key = "{KEY}"
api_keys = ["0123456789abcdef0123"]
"#
    )
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(
        Some(text),
        Path::new("gw.toml"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

fn without(text: &str, line_start: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(line_start))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn loads_a_complete_file_with_defaults() {
    let c = load(&full(), &[]).expect("valid");
    assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(
        c.oauth.redirect_uri.as_str(),
        "http://127.0.0.1:8080/oauth/callback"
    );
    assert_eq!(c.oauth.state_ttl, Duration::from_secs(600));
    assert!(!c.bunq.rate_limits);
    assert!(
        c.bunq.verify_cache,
        "the verification cache is on by default"
    );
    assert_eq!(c.bunq.environment, BunqEnvironment::Sandbox);
    assert_eq!(c.http.max_body_bytes, 1024 * 1024);
    assert_eq!(c.http.workers, None, "one worker per core by default");
    assert!(c.http.worker_count().get() >= 1);
    assert_eq!(c.security.api_keys.len(), 1);
}

#[test]
fn http_workers_is_a_count_or_zero_for_one_per_core() {
    let two = load(&full(), &[("BUNQ_GATEWAY_HTTP_WORKERS", "2")]).expect("2 workers");
    assert_eq!(two.http.worker_count().get(), 2);
    let auto = load(&full(), &[("BUNQ_GATEWAY_HTTP_WORKERS", "0")]).expect("0 workers");
    assert_eq!(auto.http.workers, None);
    for bad in ["-1", "1025", "many"] {
        let err = load(&full(), &[("BUNQ_GATEWAY_HTTP_WORKERS", bad)]).expect_err(bad);
        assert_eq!(err.key(), Some("http.workers"), "{err}");
    }
}

#[test]
fn environment_overrides_section_and_top_level_keys() {
    let c = load(
        &full(),
        &[
            ("BUNQ_GATEWAY_OAUTH_CLIENT_SECRET", "from-env"),
            ("BUNQ_GATEWAY_LISTEN", "127.0.0.1:9999"),
            ("BUNQ_GATEWAY_BUNQ_RATE_LIMITS", "true"),
            ("BUNQ_GATEWAY_BUNQ_VERIFY_CACHE", "false"),
            (
                "BUNQ_GATEWAY_SECURITY_API_KEYS",
                "aaaaaaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbbbbbb",
            ),
            ("PATH", "/usr/bin"),
        ],
    )
    .expect("valid");
    assert_eq!(c.oauth.client_secret.expose_secret(), "from-env");
    assert_eq!(c.listen.port(), 9999);
    assert!(c.bunq.rate_limits);
    assert!(!c.bunq.verify_cache, "the bench's switch turns it off");
    assert_eq!(c.security.api_keys.len(), 2);
    assert_eq!(
        c.security.api_keys[1].key.expose_secret(),
        "bbbbbbbbbbbbbbbbbbbb"
    );
    // The environment's form names keys by position, as a plain list in the file.
    assert_eq!(c.security.api_keys[0].name, "key-1");
    assert_eq!(c.security.api_keys[1].name, "key-2");
}

#[test]
fn environment_alone_is_a_complete_config() {
    let env = [
        ("BUNQ_GATEWAY_PUBLIC_URL", "https://gw.example"),
        ("BUNQ_GATEWAY_BUNQ_ENVIRONMENT", "production"),
        ("BUNQ_GATEWAY_OAUTH_CLIENT_ID", "cid"),
        ("BUNQ_GATEWAY_OAUTH_CLIENT_SECRET", "s"),
        ("BUNQ_GATEWAY_SECURITY_ENCRYPTION_KEY", KEY),
        ("BUNQ_GATEWAY_SECURITY_API_KEYS", "0123456789abcdef0123"),
    ];
    let c = Config::from_sources(
        None,
        Path::new("-"),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("valid");
    assert_eq!(c.bunq.environment, BunqEnvironment::Production);
    assert_eq!(
        c.oauth.redirect_uri.as_str(),
        "https://gw.example/oauth/callback"
    );
}

#[test]
fn missing_client_id_names_the_key() {
    let err = load(&without(&full(), "client_id"), &[]).expect_err("invalid");
    assert_eq!(err.key(), Some("oauth.client_id"));
    let line = err.to_string();
    assert!(
        line.contains("oauth.client_id") && line.contains("missing"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn rejects_a_short_encryption_key() {
    let text = full().replace(KEY, "AAECAwQ=");
    let err = load(&text, &[]).expect_err("invalid");
    assert_eq!(err.key(), Some("security.encryption_key"));
    assert!(err.to_string().contains("32 bytes"));
}

#[test]
fn rejects_both_key_and_key_file() {
    let err = load(
        &full(),
        &[("BUNQ_GATEWAY_SECURITY_ENCRYPTION_KEY_FILE", "/tmp/k")],
    )
    .expect_err("invalid");
    assert_eq!(err.key(), Some("security.encryption_key"));
}

#[test]
fn rejects_unknown_file_keys_but_only_lists_unknown_env_vars() {
    let err = load(&full().replace("database", "databse"), &[]).expect_err("typo");
    assert_eq!(err.key(), Some("databse"));
    // What Kubernetes injects for a Service named bunq-gateway, and a typo: both
    // ignored and listed (by name only) for the warning.
    let config = load(
        &full(),
        &[
            ("BUNQ_GATEWAY_PORT", "tcp://10.0.0.1:8080"),
            ("BUNQ_GATEWAY_SERVICE_HOST", "10.0.0.1"),
            ("BUNQ_GATEWAY_OAUTH_CLIENTID", "x"),
        ],
    )
    .expect("unknown variables do not fail");
    assert_eq!(
        config.ignored_environment,
        [
            "BUNQ_GATEWAY_OAUTH_CLIENTID",
            "BUNQ_GATEWAY_PORT",
            "BUNQ_GATEWAY_SERVICE_HOST"
        ]
    );
    assert!(
        load(&full(), &[])
            .expect("full")
            .ignored_environment
            .is_empty()
    );
}

fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.display().to_string()
}

#[test]
fn every_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = private_file(dir.path(), "secret", "file-secret\n", 0o600);
    let keys = private_file(
        dir.path(),
        "keys",
        "# the billing team\nbilling:0123456789abcdef-billing\n\n0123456789abcdef-plain\n",
        0o400,
    );
    let hook = private_file(
        dir.path(),
        "hook",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        0o600,
    );
    let text = format!(
        r#"
public_url = "http://127.0.0.1:8080"

[bunq]
environment = "sandbox"

[oauth]
client_id = "cid"
client_secret_file = "{secret}"

[security]
encryption_key = "{KEY}"
api_keys = ["0123456789abcdef0123"]
api_keys_file = "{keys}"

[callbacks]
webhook_urls = ["http://127.0.0.1:9/h"]
webhook_secret_file = "{hook}"
"#
    );
    let config = load(&text, &[]).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(config.oauth.client_secret.expose_secret(), "file-secret");
    let names: Vec<&str> = config
        .security
        .api_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(names, ["key-1", "billing", "file-4"]);
    assert_eq!(
        config.security.api_keys[1].key.expose_secret(),
        "0123456789abcdef-billing"
    );
    assert!(config.callbacks.webhook_secret.is_some());

    // Readable by others: refused, naming the key and the file, not the content.
    let open = private_file(dir.path(), "open", "file-secret", 0o644);
    let err = load(
        &full(),
        &[("BUNQ_GATEWAY_OAUTH_CLIENT_SECRET_FILE", open.as_str())],
    )
    .expect_err("both given");
    assert_eq!(err.key(), Some("oauth.client_secret"));
    let err = load(
        &without(&full(), "client_secret"),
        &[("BUNQ_GATEWAY_OAUTH_CLIENT_SECRET_FILE", open.as_str())],
    )
    .expect_err("world-readable");
    assert_eq!(err.key(), Some("oauth.client_secret_file"));
    assert!(!err.to_string().contains("file-secret"), "{err}");
}

#[test]
fn env_errors_name_the_variable() {
    let err =
        load(&full(), &[("BUNQ_GATEWAY_OAUTH_STATE_TTL_SECONDS", "soon")]).expect_err("invalid");
    let line = err.to_string();
    assert!(line.contains("oauth.state_ttl_seconds"), "{line}");
    assert!(
        line.contains("BUNQ_GATEWAY_OAUTH_STATE_TTL_SECONDS"),
        "{line}"
    );
}

#[test]
fn rejects_bad_values_with_the_key() {
    for (from, to, key) in [
        ("\"sandbox\"", "\"staging\"", "bunq.environment"),
        ("\"127.0.0.1:8080\"", "\"localhost\"", "listen"),
        (
            "\"http://127.0.0.1:9000/v1\"",
            "\"ftp://x\"",
            "bunq.api_base_url",
        ),
        ("\"0123456789abcdef0123\"", "\"short\"", "security.api_keys"),
        (
            "rate_limits = false",
            "rate_limits = \"no\"",
            "bunq.rate_limits",
        ),
    ] {
        let err = load(&full().replace(from, to), &[]).expect_err(key);
        assert_eq!(err.key(), Some(key), "{err}");
    }
}

#[test]
fn syntax_errors_are_one_line_with_the_line_number() {
    let err = load("listen = \"a\"\n[bunq\n", &[]).expect_err("invalid");
    let line = err.to_string();
    assert!(line.contains("line 2"), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn debug_does_not_show_secrets() {
    let c = load(&full(), &[]).expect("valid");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("csecret"));
    assert!(!dbg.contains(KEY));
    assert!(!dbg.contains("0123456789abcdef0123"));
}

#[test]
fn lifecycle_settings_have_bunqs_defaults_and_can_be_shortened() {
    let c = load(&full(), &[]).expect("valid");
    assert_eq!(c.bunq.session_window, Duration::from_secs(30));
    assert_eq!(c.bunq.rate_limit_window, Duration::from_secs(3));
    assert_eq!(c.bunq.session_wait, Duration::from_secs(35));
    assert_eq!(
        c.bunq.rate_limit_scope,
        bunq_session::LimitScope::EndpointPattern,
        "cautious by default"
    );
    assert!(c.bunq.permitted_ips.is_empty());
    assert_eq!(c.oauth.callback_wait, Duration::from_secs(3));
    assert_eq!(c.http.idempotency_retention, Duration::from_secs(86_400));
    let c = load(
        &full(),
        &[
            ("BUNQ_GATEWAY_BUNQ_SESSION_WINDOW_MS", "2000"),
            ("BUNQ_GATEWAY_BUNQ_RATE_LIMIT_SCOPE", "path"),
            ("BUNQ_GATEWAY_BUNQ_PERMITTED_IPS", "203.0.113.7,*"),
            ("BUNQ_GATEWAY_OAUTH_CALLBACK_WAIT_MS", "0"),
        ],
    )
    .expect("valid");
    assert_eq!(c.bunq.session_window, Duration::from_secs(2));
    assert_eq!(
        c.bunq.rate_limit_scope,
        bunq_session::LimitScope::ConcretePath
    );
    assert_eq!(c.bunq.permitted_ips, vec!["203.0.113.7", "*"]);
    assert_eq!(c.oauth.callback_wait, Duration::ZERO);
    let err = load(&full(), &[("BUNQ_GATEWAY_BUNQ_RATE_LIMIT_SCOPE", "ids")]).expect_err("bad");
    assert_eq!(err.key(), Some("bunq.rate_limit_scope"), "{err}");
}

#[test]
fn redirect_uri_is_kept_exactly_as_written() {
    // bunq compares redirect_uri as a string: a URL type would add a slash.
    let with = full().replace("[oauth]", "[oauth]\nredirect_uri = \"https://app.example\"");
    let c = load(&with, &[]).expect("valid");
    assert_eq!(c.oauth.redirect_uri, "https://app.example");
}

#[test]
fn listener_limits_have_safe_defaults_and_bounds() {
    let c = load(&full(), &[]).expect("valid");
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.http.max_connections, 10_000);
    let set = load(
        &full(),
        &[
            ("BUNQ_GATEWAY_HTTP_HEADER_READ_TIMEOUT_MS", "2500"),
            ("BUNQ_GATEWAY_HTTP_IDLE_TIMEOUT_SECONDS", "5"),
            ("BUNQ_GATEWAY_HTTP_MAX_CONNECTIONS", "64"),
        ],
    )
    .expect("set");
    assert_eq!(set.http.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(set.http.idle_timeout, Duration::from_secs(5));
    assert_eq!(set.http.max_connections, 64);
    for (var, key, bad) in [
        (
            "BUNQ_GATEWAY_HTTP_HEADER_READ_TIMEOUT_MS",
            "http.header_read_timeout_ms",
            "0",
        ),
        (
            "BUNQ_GATEWAY_HTTP_IDLE_TIMEOUT_SECONDS",
            "http.idle_timeout_seconds",
            "0",
        ),
        (
            "BUNQ_GATEWAY_HTTP_MAX_CONNECTIONS",
            "http.max_connections",
            "0",
        ),
    ] {
        let err = load(&full(), &[(var, bad)]).expect_err(bad);
        assert_eq!(err.key(), Some(key), "{err}");
    }
}

#[test]
fn bunq_urls_are_https_or_plain_http_on_loopback_only() {
    for key in ["api_base_url", "oauth_authorize_url", "oauth_token_url"] {
        let var = format!("BUNQ_GATEWAY_BUNQ_{}", key.to_ascii_uppercase());
        for ok in [
            "https://api.bunq.com/v1",
            "http://127.0.0.1:9000/v1",
            "http://127.9.9.9/v1",
            "http://[::1]:9000/v1",
            "http://localhost:9000/v1",
            "http://LOCALHOST/v1",
        ] {
            let c = load(&full(), &[(var.as_str(), ok)]);
            assert!(c.is_ok(), "{key} = {ok}: {:?}", c.err());
        }
        for bad in [
            "http://api.bunq.com/v1",
            "http://10.0.0.1/v1",
            "http://[::2]/v1",
            "http://localhost.example.com/v1",
            "http://0.0.0.0/v1",
        ] {
            let err = load(&full(), &[(var.as_str(), bad)]).expect_err(bad);
            assert_eq!(err.key(), Some(format!("bunq.{key}").as_str()), "{err}");
            assert!(err.to_string().contains("https"), "{err}");
        }
    }
}

fn with_keys(keys: &str) -> String {
    full().replace(
        r#"api_keys = ["0123456789abcdef0123"]"#,
        &format!("api_keys = {keys}"),
    )
}

#[test]
fn api_keys_may_be_named_with_prefixes_and_mixed_with_plain_ones() {
    let c = load(
        &with_keys(
            r#"[
    "0123456789abcdef0123",
    { name = "tenant-a", key = "aaaaaaaaaaaaaaaaaaaa", user_ref_prefixes = ["a-", "alpha-"] },
]"#,
        ),
        &[],
    )
    .expect("valid");
    let keys = &c.security.api_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name, "key-1");
    assert!(keys[0].user_ref_prefixes.is_empty());
    assert_eq!(keys[1].name, "tenant-a");
    assert_eq!(keys[1].key.expose_secret(), "aaaaaaaaaaaaaaaaaaaa");
    assert_eq!(keys[1].user_ref_prefixes, ["a-", "alpha-"]);
    let debug = format!("{:?}", c.security);
    assert!(!debug.contains("aaaaaaaaaaaaaaaaaaaa"), "{debug}");
}

#[test]
fn api_key_files_are_read_and_refused_when_others_may_read_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("key");
    std::fs::write(&path, "from-a-file-0123456789\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let table = format!(r#"[{{ name = "ops", key_file = "{}" }}]"#, path.display());
    let c = load(&with_keys(&table), &[]).expect("valid");
    assert_eq!(c.security.api_keys[0].name, "ops");
    assert_eq!(
        c.security.api_keys[0].key.expose_secret(),
        "from-a-file-0123456789",
        "surrounding whitespace is not part of the key"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = load(&with_keys(&table), &[]).expect_err("world-readable");
    assert_eq!(err.key(), Some("security.api_keys"));
    assert!(
        err.to_string().contains("readable by group or others"),
        "{err}"
    );
}

#[test]
fn api_key_tables_are_checked() {
    for (keys, says) in [
        (r#"[{ key = "aaaaaaaaaaaaaaaaaaaa" }]"#, "`name` is missing"),
        (r#"[{ name = "x" }]"#, "exactly one of"),
        (
            r#"[{ name = "x", key = "aaaaaaaaaaaaaaaaaaaa", key_file = "/k" }]"#,
            "exactly one of",
        ),
        (r#"[{ name = "x", key = "short" }]"#, "at least 16"),
        (
            r#"[{ name = "bad name", key = "aaaaaaaaaaaaaaaaaaaa" }]"#,
            "`name` must be",
        ),
        (
            r#"[{ name = "x", key = "aaaaaaaaaaaaaaaaaaaa", prefixes = ["a"] }]"#,
            "unknown field",
        ),
        (
            r#"[{ name = "x", key = "aaaaaaaaaaaaaaaaaaaa", user_ref_prefixes = [] }]"#,
            "non-empty list",
        ),
        (
            r#"[{ name = "x", key = "aaaaaaaaaaaaaaaaaaaa" }, { name = "x", key = "bbbbbbbbbbbbbbbbbbbb" }]"#,
            "used twice",
        ),
        (
            r#"[{ name = "x", key = "aaaaaaaaaaaaaaaaaaaa" }, { name = "y", key = "aaaaaaaaaaaaaaaaaaaa" }]"#,
            "same key",
        ),
        ("[1]", "list of strings or of"),
    ] {
        let err = load(&with_keys(keys), &[]).expect_err(keys);
        assert_eq!(err.key(), Some("security.api_keys"), "{err}");
        assert!(err.to_string().contains(says), "{keys}: {err}");
        assert!(!err.to_string().contains("aaaaaaaaaaaaaaaaaaaa"), "{err}");
    }
}

#[test]
fn database_is_a_path_or_a_postgres_url_whose_password_never_shows() {
    let c = load(&full(), &[]).expect("valid");
    assert!(matches!(
        &c.database,
        bunq_store::StoreLocation::Sqlite(p) if p == Path::new("gw.sqlite3")
    ));
    let url = "postgres://gw:db-SECRET-pw@db.internal:5432/gateway";
    let c = load(&full(), &[("BUNQ_GATEWAY_DATABASE", url)]).expect("valid");
    assert!(matches!(c.database, bunq_store::StoreLocation::Postgres(_)));
    let shown = format!("{c:?} {}", c.database);
    assert!(!shown.contains("db-SECRET-pw"), "{shown}");
    assert!(
        shown.contains("postgres://gw:***@db.internal:5432/gateway"),
        "{shown}"
    );

    let err = load(
        &full().replace("gw.sqlite3", "postgresql://gw:db-SECRET-pw@db:notaport/x"),
        &[],
    )
    .expect_err("a bad port");
    let text = err.to_string();
    assert!(text.contains("database"), "{text}");
    assert!(!text.contains("db-SECRET-pw"), "{text}");
}
