//! `bunq-gateway migrate-store --from FILE --to postgres://...` through the real binary:
//! a gateway that served on SQLite (two users connected, a payment made with an
//! `Idempotency-Key`, events recorded) is stopped, its file copied into a fresh
//! PostgreSQL schema, and the gateway started there carries on as if nothing happened:
//! no new installation or session at bunq, the payment's answer replayed without a
//! second payment, the same events behind the same cursor, the same audit log. A wrong
//! master key is refused before anything is written, a target holding rows is refused
//! and left as it was, and the URL's password shows nowhere. Runs when
//! `BUNQ_STORE_POSTGRES_URL` is set, and fails without it under `CI=true`.
#![allow(clippy::unwrap_used)]

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{API_KEY, Env, Gateway, MASTER_KEY, PgSchema, postgres_url, run_to_exit};

/// A password the test server does not ask for (it trusts local users) but the URL
/// carries: it must appear in no output.
const URL_PASSWORD: &str = "pw-migrate-never-shown-51c2";
/// Another valid master key (base64 of 32 bytes).
const OTHER_KEY: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
/// Every table of the store, and refinery's history.
const TABLES: &[&str] = &[
    "store_keys",
    "users",
    "contexts",
    "sessions",
    "consents",
    "oauth_states",
    "idempotency_keys",
    "callback_ids",
    "events",
    "audit_log",
    "refinery_schema_history",
];

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlite_store_moves_to_postgres_and_the_gateway_carries_on() {
    let Some(base_url) = postgres_url() else {
        return;
    };
    let mut env = Env::new().await;
    // The source is a SQLite file, even when the whole suite runs on PostgreSQL.
    env.postgres = None;
    env.database = env.dir.path().join("gateway.sqlite3").display().to_string();
    let sqlite = env.dir.path().join("gateway.sqlite3");
    let sqlite_config = env.write_config("sqlite.toml", &env.config_text(600));

    // On SQLite: two users, a payment with a key, the users' `user.connected` events.
    let gw = Gateway::start(&sqlite_config, env.dir.path());
    let alice = env.connected_payer(&gw, "alice").await;
    let bob = env.connected_payer(&gw, "bob").await;
    let paid = pay(&env, &gw, alice, "move-pay-1").await;
    assert_eq!((paid.0, paid.1), (200, false), "{paid:?}");
    let payments = env.fake.payment_count();
    let events = eventually("both user.connected events", async || {
        let events = pull_all(&env, &gw).await;
        let connected = events
            .iter()
            .filter(|e| e["type"] == "user.connected")
            .count();
        (connected == 2).then_some(events)
    })
    .await;
    assert!(gw.stop().success());
    let (installations, sessions) = (
        env.fake.calls("POST /installation"),
        env.fake.calls("POST /session-server"),
    );
    // What the file holds (bunq's callbacks for the top-ups and the payment may have
    // added events after the pull above).
    let store = env.open_store().await;
    let stored_events = store.events_after(0, 10_000).await.unwrap();
    let audit = store.audit_log(None).await.unwrap();
    let alice_audit = store.audit_log(Some("alice")).await.unwrap();
    store.close().await.unwrap();
    assert!(
        alice_audit.len() >= 2,
        "consent and connect at least: {alice_audit:?}"
    );

    let schema = PgSchema::create(base_url.clone()).await;
    let target = format!("{}&password={URL_PASSWORD}", schema.url());
    let migrate = |config: &Path| {
        run_to_exit(
            &[
                "migrate-store".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--from".as_ref(),
                sqlite.as_os_str(),
                "--to".as_ref(),
                OsStr::new(&target),
            ],
            &[],
        )
    };
    let mut outputs = Vec::new();

    // A wrong master key: refused before the file or the database is touched.
    let wrong_config = env.write_config(
        "wrong.toml",
        &env.config_text(600).replace(MASTER_KEY, OTHER_KEY),
    );
    let file_before = std::fs::read(&sqlite).unwrap();
    let wrong = migrate(&wrong_config);
    let stderr = String::from_utf8_lossy(&wrong.stderr).into_owned();
    assert_eq!(wrong.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("wrong master key"), "{stderr}");
    assert!(wrong.stdout.is_empty());
    assert_eq!(
        table_count(&base_url, &schema.name).await,
        0,
        "nothing created"
    );
    assert!(
        std::fs::read(&sqlite).unwrap() == file_before,
        "source as it was"
    );
    outputs.push(stderr);

    // The move.
    let moved = migrate(&sqlite_config);
    let stdout = String::from_utf8_lossy(&moved.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&moved.stderr).into_owned();
    assert!(moved.status.success(), "{stdout}{stderr}");
    let counts = counts_printed(&stdout);
    assert_eq!(counts["users"], 2, "{stdout}");
    assert_eq!(counts["contexts"], 2, "{stdout}");
    assert_eq!(counts["sessions"], 2, "{stdout}");
    assert_eq!(counts["store_keys"], 1, "{stdout}");
    assert_eq!(counts["idempotency_keys"], 1, "{stdout}");
    assert_eq!(counts["events"], stored_events.len() as u64, "{stdout}");
    assert_eq!(counts["audit_log"], audit.len() as u64, "{stdout}");
    assert_eq!(
        counts["total"],
        counts
            .iter()
            .filter(|(t, _)| *t != "total")
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    assert!(
        stdout.contains("next: set database = \"postgres://"),
        "{stdout}"
    );
    assert!(stdout.contains("password=***"), "{stdout}");
    outputs.push(stdout);
    outputs.push(stderr);

    // The store on PostgreSQL holds the same, before any gateway ran there.
    env.database = target.clone();
    let store = env.open_store().await;
    assert!(
        store.events_after(0, 10_000).await.unwrap() == stored_events,
        "the same events, seq, payloads and delivery states"
    );
    assert_eq!(
        format!("{:?}", store.audit_log(None).await.unwrap()),
        format!("{audit:?}"),
        "the audit rows, ids and order kept"
    );
    assert_eq!(
        format!("{:?}", store.audit_log(Some("alice")).await.unwrap()),
        format!("{alice_audit:?}"),
        "the audit key came along: a user's rows are still found by user_ref"
    );
    store.close().await.unwrap();

    // The gateway on PostgreSQL.
    let pg_config = env.write_config("postgres.toml", &env.config_text(600));
    let gw = Gateway::start(&pg_config, env.dir.path());
    for (user_ref, (bunq_user_id, _)) in [("alice", alice), ("bob", bob)] {
        let (status, user) = env.user(&gw, user_ref).await;
        assert_eq!((status, user["status"].as_str()), (200, Some("connected")));
        assert_eq!(user["bunq_user_id"].as_u64(), Some(bunq_user_id));
        assert_eq!(
            env.accounts(&gw, user_ref, bunq_user_id).await.status(),
            200
        );
    }
    assert_eq!(
        env.fake.calls("POST /installation"),
        installations,
        "no new installation"
    );
    assert_eq!(
        env.fake.calls("POST /session-server"),
        sessions,
        "no new session"
    );
    let replayed = pay(&env, &gw, alice, "move-pay-1").await;
    assert_eq!(
        (replayed.0, replayed.1),
        (200, true),
        "the stored answer: {replayed:?}"
    );
    assert_eq!(replayed.2, paid.2, "the same answer");
    assert_eq!(env.fake.payment_count(), payments, "no second payment");
    // The same events behind the same cursors (bunq may retry a callback it could not
    // deliver while no gateway ran: anything new comes after them).
    let after = pull_all(&env, &gw).await;
    assert!(after.len() >= stored_events.len());
    for (view, record) in after.iter().zip(&stored_events) {
        assert_eq!(view["id"], record.id.as_str());
        assert_eq!(view["cursor"], record.seq.to_string().as_str());
        assert_eq!(view["type"], record.event_type.as_str());
        assert_eq!(view["user_ref"], record.user_ref.as_str());
        assert_eq!(
            view["data"],
            serde_json::from_slice::<Value>(&record.payload).unwrap()
        );
    }
    assert_eq!(
        listed(&after[..events.len()]),
        listed(&events),
        "what the application pulled on SQLite"
    );
    let last = stored_events.last().unwrap().seq;
    let later = get_json(&env, &gw, &format!("/v1/events?after={last}")).await;
    for event in later["events"].as_array().unwrap() {
        let cursor: u64 = event["cursor"].as_str().unwrap().parse().unwrap();
        assert!(cursor > last, "a new event gets a new seq: {event}");
    }
    outputs.push(gw.logs());
    assert!(gw.stop().success());

    let store = env.open_store().await;
    let audit_after = store.audit_log(None).await.unwrap();
    let alice_after = store.audit_log(Some("alice")).await.unwrap();
    store.close().await.unwrap();
    assert!(audit_after.len() >= audit.len());
    assert_eq!(
        format!("{:?}", &audit_after[..audit.len()]),
        format!("{audit:?}"),
        "the audit rows are there after the gateway ran on PostgreSQL"
    );
    assert_eq!(
        format!("{:?}", &alice_after[..alice_audit.len()]),
        format!("{alice_audit:?}")
    );
    if let (Some(before), Some(first_new)) = (audit.last(), audit_after.get(audit.len())) {
        assert!(first_new.id > before.id, "new audit rows get new ids");
    }

    // A second copy into the now non-empty database: refused, nothing changed.
    let before = digest(&schema).await;
    let again = migrate(&sqlite_config);
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert!(stderr.contains("users"), "names the tables: {stderr}");
    assert!(again.stdout.is_empty());
    assert_eq!(digest(&schema).await, before, "the target as it was");
    outputs.push(stderr);

    // A URL that is not PostgreSQL's: a usage error that does not echo it.
    let bad = run_to_exit(
        &[
            "migrate-store".as_ref(),
            "--config".as_ref(),
            sqlite_config.as_os_str(),
            "--from".as_ref(),
            sqlite.as_os_str(),
            "--to".as_ref(),
            OsStr::new(&format!("mysql://gw:{URL_PASSWORD}@db/x")),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("bunq-gateway: --to:"), "{stderr}");
    outputs.push(stderr);

    for output in outputs {
        assert!(
            !output.contains(URL_PASSWORD),
            "the URL's password leaked: {output}"
        );
    }
}

/// The payment with `key`: (status, whether replayed, body).
async fn pay(
    env: &Env,
    gw: &Gateway,
    (bunq_user_id, account): (u64, u64),
    key: &str,
) -> (u16, bool, Value) {
    let response = env
        .http
        .post(format!(
            "{}/v1/users/alice/bunq/user/{bunq_user_id}/monetary-account/{account}/payment",
            gw.base
        ))
        .bearer_auth(API_KEY)
        .header("Idempotency-Key", key)
        .json(&json!({
            "amount": {"value": "1.50", "currency": "EUR"},
            "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com", "name": "Bob"},
            "description": "before and after the move"
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn get_json(env: &Env, gw: &Gateway, path: &str) -> Value {
    env.http
        .get(format!("{}{path}", gw.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every event of the pull API, page by page.
async fn pull_all(env: &Env, gw: &Gateway) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page = get_json(env, gw, &format!("/v1/events?after={cursor}&limit=2")).await;
        let events = page["events"].as_array().unwrap().clone();
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
    panic!("the cursor never ended");
}

/// What an event is, apart from its delivery (which goes on after a restart).
fn listed(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            json!([
                e["id"],
                e["cursor"],
                e["type"],
                e["user_ref"],
                e["timestamp"],
                e["data"]
            ])
        })
        .collect()
}

/// The per-table counts `migrate-store` printed, and its total.
fn counts_printed(stdout: &str) -> std::collections::HashMap<String, u64> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, count) = (words.next()?, words.next()?);
            words.next().is_none().then_some(())?;
            Some((name.to_owned(), count.parse().ok()?))
        })
        .collect()
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// How many tables the schema holds.
async fn table_count(base_url: &str, schema: &str) -> i64 {
    connect(base_url)
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0)
}

/// Every table's row count and a digest of its rows, and the sequences' positions.
async fn digest(schema: &PgSchema) -> Vec<(String, i64, String)> {
    let client = connect(&schema.url()).await;
    let mut out = Vec::new();
    for table in TABLES {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push(((*table).to_owned(), row.get(0), row.get(1)));
    }
    for (table, column) in [("events", "seq"), ("audit_log", "id")] {
        let row = client
            .query_one(
                &format!(
                    "SELECT last_value, 0::BIGINT, is_called::TEXT FROM {}",
                    sequence(&client, table, column).await
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((format!("{table}.{column}"), row.get(0), row.get(2)));
    }
    out
}

async fn sequence(client: &tokio_postgres::Client, table: &str, column: &str) -> String {
    client
        .query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table, &column])
        .await
        .unwrap()
        .get(0)
}
