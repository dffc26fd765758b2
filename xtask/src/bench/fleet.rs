//! Item 11: fleet mode on PostgreSQL (docs/DEPLOYMENT.md).
//!
//! - The hot path must not touch the database: proxied GETs through a gateway on
//!   PostgreSQL against the same gateway on SQLite, in rounds that take turns (ratios
//!   within a round, verdict on the median round): requests per second and CPU per
//!   request within 10%.
//! - Connect capacity grows with egress IPs: 1, 2 and 4 gateways, each behind its own
//!   loopback address (the fake counts its limits per caller address), on one database,
//!   consents arriving at 1.5x their joint limit and handed round-robin to the gateways
//!   (a load balancer's spread): users connected per bunq minute per address, and 429s.
//!   bunq's windows are shortened 10x on both sides, as in item 7.

use std::path::Path;
use std::time::{Duration, Instant};

use bunq_testkit::{FakeBunq, FakeConfig};
use serde_json::json;

use super::connect_rate::connected;
use super::gateway::{self, GatewayProcess, call};
use super::load::{CpuMeter, wrk};
use super::report::{Report, Verdict};

/// bunq's windows divided by this (as item 7).
const SCALE: u32 = 10;
const BUNQ_SESSION_WINDOW: Duration = Duration::from_secs(30);
const BUNQ_RATE_WINDOW: Duration = Duration::from_secs(3);
/// Consents arrive at this multiple of the joint limit.
const ARRIVAL_OVER_LIMIT: f64 = 1.5;
/// The database the item makes its schemas in, unless `BUNQ_STORE_POSTGRES_URL` names one.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own in the test database, dropped when done.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    async fn create(tag: &str) -> Result<Schema, String> {
        let base = std::env::var("BUNQ_STORE_POSTGRES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_POSTGRES.to_owned());
        let name = format!("bench_{tag}_{}", std::process::id());
        let client = connect(&base).await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .map_err(|e| {
                format!("PostgreSQL at {DEFAULT_POSTGRES} or BUNQ_STORE_POSTGRES_URL: {e}")
            })?;
        Ok(Schema { base, name })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    async fn drop_schema(self) {
        if let Ok(client) = connect(&self.base).await {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .await;
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL (BUNQ_STORE_POSTGRES_URL): {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Sets `key = value` in `[section]` (or at the top with an empty section).
fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    if section.is_empty() {
        table.insert(key.into(), value);
        return;
    }
    let mut inner = table
        .remove(section)
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default();
    inner.insert(key.into(), value);
    table.insert(section.into(), inner.into());
}

fn write_config(path: &Path, table: &toml::Table) -> Result<(), String> {
    let text = toml::to_string(table).map_err(|e| e.to_string())?;
    bunq_signing::write_private_file(path, text.as_bytes()).map_err(|e| e.to_string())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Proxied GETs, SQLite against PostgreSQL, `rounds` rounds of `seconds` each side.
pub async fn postgres_vs_sqlite(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    rounds: u32,
    seconds: u64,
) -> Result<(), String> {
    let fake = FakeBunq::start().await.map_err(|e| e.to_string())?;
    let dir = dir.join("fleet-store");
    let own = gateway::own_config(&fake, &dir, "gateway-sqlite.toml", |table| {
        set(table, "bunq", "rate_limits", false.into());
    })
    .await?;
    let schema = Schema::create("store").await?;
    let pg_url = format!("http://127.0.0.1:{}", crate::gateway_process::free_port()?);
    let mut table = gateway::read_config(&own.path)?.table;
    set(&mut table, "", "database", schema.url().into());
    set(
        &mut table,
        "",
        "listen",
        pg_url.trim_start_matches("http://").into(),
    );
    let pg_config = dir.join("gateway-postgres.toml");
    write_config(&pg_config, &table)?;

    let sqlite = GatewayProcess::start(bin, &own.path, &own.url, &dir.join("sqlite.log")).await?;
    let postgres =
        GatewayProcess::start(bin, &pg_config, &pg_url, &dir.join("postgres.log")).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let browser = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    for (gw, url) in [(&sqlite, &own.url), (&postgres, &pg_url)] {
        let user = "bench-store";
        // The OAuth callback URL is the SQLite gateway's: the PostgreSQL one gets its
        // callback handed over.
        consent_via(&browser, &own.bearer, &own.url, url, user).await?;
        let record = call(
            &http,
            &own.bearer,
            reqwest::Method::GET,
            &format!("{url}/v1/users/{user}"),
            None,
            200,
        )
        .await?;
        let bunq_user_id = record["bunq_user_id"]
            .as_u64()
            .ok_or_else(|| format!("{user} not connected: {record}"))?;
        let get = format!("{url}/v1/users/{user}/bunq/user/{bunq_user_id}/monetary-account-bank");
        // Warm: the session and the verification cache.
        call(&http, &own.bearer, reqwest::Method::GET, &get, None, 200).await?;
        targets.push((gw.pid().ok_or("a gateway has no pid")?, get));
    }
    let headers = vec![("Authorization".to_owned(), own.bearer.clone())];
    let mut rps_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut rounds_json = Vec::new();
    for round in 0..rounds {
        let mut measured = [(0.0, 0.0); 2];
        // Alternate which side goes first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (pid, url) = &targets[side];
            let meter = CpuMeter::start(vec![*pid]);
            let result = wrk(url, &headers, 2, 64, seconds)?;
            let (cpu, _) = meter.stop();
            if result.non_2xx > 0 || result.socket_errors > 0 {
                return Err(format!(
                    "{} non-2xx and {} socket errors under wrk",
                    result.non_2xx, result.socket_errors
                ));
            }
            measured[side] = (result.rps, cpu * 1e6 / result.requests.max(1) as f64);
        }
        let (sq, pg) = (measured[0], measured[1]);
        println!(
            "  round {}: SQLite {:.0} req/s, {:.0} us/req; PostgreSQL {:.0} req/s, {:.0} us/req",
            round + 1,
            sq.0,
            sq.1,
            pg.0,
            pg.1
        );
        rps_ratios.push(pg.0 / sq.0);
        cpu_ratios.push(pg.1 / sq.1);
        rounds_json.push(json!({"sqlite": {"rps": sq.0, "cpu_us": sq.1}, "postgres": {"rps": pg.0, "cpu_us": pg.1}}));
    }
    let _ = sqlite.terminate();
    let _ = postgres.terminate();
    fake.shutdown().await;
    schema.drop_schema().await;
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (rps, cpu) = (median(rps_ratios.clone()), median(cpu_ratios.clone()));
    report.row(
        "11",
        "proxied GET, PostgreSQL store / SQLite store, requests per second",
        format!(
            "{rps:.2}x (median of {rounds} rounds: {})",
            list(&rps_ratios)
        ),
        ">= 0.9x",
        Verdict::of(rps >= 0.9),
    );
    report.row(
        "11",
        "proxied GET, PostgreSQL store / SQLite store, CPU per request",
        format!(
            "{cpu:.2}x (median of {rounds} rounds: {})",
            list(&cpu_ratios)
        ),
        "<= 1.1x",
        Verdict::of(cpu <= 1.1),
    );
    report.section("fleet_store", json!({ "rounds": rounds_json }));
    Ok(())
}

/// Connects per bunq minute with `egresses` gateways, one per loopback address.
async fn connect_rate_with(
    bin: &Path,
    dir: &Path,
    egresses: u8,
    bunq_minutes: u32,
) -> Result<(f64, u64, usize, usize), String> {
    let window = BUNQ_SESSION_WINDOW / SCALE;
    let rate_window = BUNQ_RATE_WINDOW / SCALE;
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limits: true,
        session_server_window: window,
        rate_limit_window: rate_window,
        ..FakeConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let dir = dir.join(format!("fleet-connect-{egresses}"));
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let own = gateway::own_config(&fake, &dir, "base.toml", |table| {
        set(table, "bunq", "rate_limits", true.into());
        set(table, "bunq", "session_window_ms", ms(window).into());
        set(
            table,
            "bunq",
            "rate_limit_window_ms",
            ms(rate_window).into(),
        );
        set(table, "oauth", "callback_wait_ms", 0.into());
        set(
            table,
            "callbacks",
            "categories",
            toml::Value::Array(Vec::new()),
        );
    })
    .await?;
    let schema = Schema::create(&format!("connect{egresses}")).await?;
    let mut gateways = Vec::new();
    for i in 0..egresses {
        let address = format!("127.0.0.{}", 2 + i);
        let url = if i == 0 {
            own.url.clone()
        } else {
            format!("http://127.0.0.1:{}", crate::gateway_process::free_port()?)
        };
        let mut table = gateway::read_config(&own.path)?.table;
        set(&mut table, "", "database", schema.url().into());
        set(
            &mut table,
            "",
            "listen",
            url.trim_start_matches("http://").into(),
        );
        set(&mut table, "bunq", "egress", address.clone().into());
        set(&mut table, "bunq", "bind_address", address.into());
        let config = dir.join(format!("gateway-{i}.toml"));
        write_config(&config, &table)?;
        let gw = GatewayProcess::start(bin, &config, &url, &dir.join(format!("gateway-{i}.log")))
            .await?;
        gateways.push((gw, url));
    }
    // The end users' browsers: redirects followed by hand, so that the callback can be
    // sent to the gateway the load balancer picks.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let span = window * 2 * bunq_minutes;
    let arrivals =
        (f64::from(2 * u32::from(egresses) * bunq_minutes) * ARRIVAL_OVER_LIMIT).ceil() as u32;
    let gap = span / arrivals;
    let sessions_before = fake.calls("POST /session-server");
    let limited_before = fake.rate_limited_calls();
    let started = Instant::now();
    let mut users = Vec::new();
    for i in 0..arrivals {
        let user_ref = format!("bench-fleet-{i}");
        let (_, url) = &gateways[i as usize % gateways.len()];
        consent_via(&http, &own.bearer, &own.url, url, &user_ref).await?;
        users.push((user_ref, url.clone()));
        let next = gap * (i + 1);
        tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
    }
    tokio::time::sleep(span.saturating_sub(started.elapsed())).await;
    let pairs = || users.iter().map(|(u, g)| (u.as_str(), g.as_str()));
    let in_span = connected(&http, &own.bearer, pairs()).await?;
    let deadline = Instant::now() + window * (arrivals + 4);
    let mut all = in_span;
    while all < users.len() && Instant::now() < deadline {
        tokio::time::sleep(window / 2).await;
        all = connected(&http, &own.bearer, pairs()).await?;
    }
    let limited = fake.rate_limited_calls() - limited_before;
    let sessions = fake.calls("POST /session-server") - sessions_before;
    for (gw, _) in gateways {
        let _ = gw.terminate();
    }
    fake.shutdown().await;
    schema.drop_schema().await;
    println!(
        "  {egresses} egress: {arrivals} consents, {in_span} connected in {bunq_minutes} bunq minutes, \
         {all} in the end, {sessions} session-server calls, {limited} 429s"
    );
    Ok((
        in_span as f64 / f64::from(bunq_minutes),
        limited,
        users.len() - all,
        arrivals as usize,
    ))
}

/// Authorization on `callback_to`, the fake's consent page, then the callback (whose
/// URL is `public`'s, the one registered at bunq) handed to `callback_to`, as a load
/// balancer in front of several gateways would. `http` must not follow redirects.
async fn consent_via(
    http: &reqwest::Client,
    bearer: &str,
    public: &str,
    callback_to: &str,
    user_ref: &str,
) -> Result<(), String> {
    let body = call(
        http,
        bearer,
        reqwest::Method::POST,
        &format!("{callback_to}/v1/authorizations"),
        Some(json!({ "user_ref": user_ref })),
        201,
    )
    .await?;
    let mut url = body["authorization_url"]
        .as_str()
        .ok_or("no authorization_url")?
        .to_owned();
    for _ in 0..5 {
        if url.starts_with(public) {
            let routed = url.replacen(public, callback_to, 1);
            let answer = http.get(&routed).send().await.map_err(|e| e.to_string())?;
            if answer.status().is_client_error() || answer.status().is_server_error() {
                return Err(format!("callback ended with {}", answer.status()));
            }
            return Ok(());
        }
        let answer = http.get(&url).send().await.map_err(|e| e.to_string())?;
        url = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                format!(
                    "the consent page answered {} without a redirect",
                    answer.status()
                )
            })?
            .to_owned();
    }
    Err("too many redirects on the way to the callback".into())
}

/// Connects per bunq minute with 1, 2 and 4 egress addresses.
pub async fn connect_rate(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    bunq_minutes: u32,
) -> Result<(), String> {
    let mut rows = Vec::new();
    for egresses in [1u8, 2, 4] {
        let (per_minute, limited, lost, arrivals) =
            connect_rate_with(bin, dir, egresses, bunq_minutes).await?;
        let per_address = per_minute / f64::from(egresses);
        report.row(
            "11",
            format!("users connected per bunq minute with {egresses} egress address(es), consents at {ARRIVAL_OVER_LIMIT}x the limit (windows 1/{SCALE})"),
            format!("{per_minute:.2}/min ({per_address:.2} per address); {limited} 429s; {lost} of {arrivals} lost"),
            ">= 1.8/min per address, 0 429s, 0 lost",
            Verdict::of(per_address >= 1.8 && limited == 0 && lost == 0),
        );
        rows.push(json!({"egresses": egresses, "per_bunq_minute": per_minute, "rate_limited": limited, "lost": lost}));
    }
    report.section(
        "fleet_connect_rate",
        json!({ "scale": SCALE, "bunq_minutes": bunq_minutes, "runs": rows }),
    );
    Ok(())
}
