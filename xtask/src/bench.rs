//! `cargo xtask bench`: the gateway's performance measured side by side with the
//! references a user would compare it with, in one run on one machine (issue 9).
//!
//! Everything it measures is a release build: run in a debug build (as `cargo xtask`
//! is), it re-runs itself as `cargo run --release -p xtask -- bench ...`, so that the
//! in-process parts (our signing loop, the fake bunq, the store) are optimised, and it
//! builds `bunq-gateway` with `--release`. With `--install` it installs Debian's `nginx`
//! and `wrk` with apt-get when missing (and says so); without, it only checks for them. Results: a table on stdout and `target/bench/report.json`.
//! See `docs/PERFORMANCE.md` for the method and the latest figures.

mod callbacks_rate;
mod connect_rate;
mod fleet;
mod gateway;
mod load;
mod nginx;
mod population;
mod post_cpu;
mod proxy;
mod report;
mod rsa_count;
mod signing;
mod store_rate;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bunq_testkit::{FakeBunq, FakeConfig};
use secrecy::ExposeSecret as _;
use serde_json::json;

use crate::progress::StepError;
use crate::sandbox::{self, SandboxArgs};
use gateway::GatewayProcess;
use report::{Report, Verdict};

/// The command line of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of each `wrk` run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// wrk's connections.
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Rounds of the gateway-vs-nginx comparison (wrk and fixed-rate runs); the
    /// verdicts are on the median round.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Requests per second of the fixed-rate latency runs.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Seconds of each fixed-rate latency run.
    #[arg(long, default_value_t = 5)]
    pub latency_seconds: u64,
    /// Seconds of `openssl speed` and of each of our signing loops.
    #[arg(long, default_value_t = 3)]
    pub signing_seconds: u64,
    /// Connected users in the footprint database.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Of them, users with a live session loaded into the gateway.
    #[arg(long, default_value_t = 1_000)]
    pub live_sessions: usize,
    /// Connected users in the second, larger footprint database (issue 19's scale).
    #[arg(long, default_value_t = 100_000)]
    pub large_users: usize,
    /// Of them, users with a live session loaded into the gateway.
    #[arg(long, default_value_t = 10_000)]
    pub large_live_sessions: usize,
    /// Short runs everywhere (a smoke test of the bench itself; figures are rough).
    #[arg(long)]
    pub quick: bool,
    /// Install Debian's nginx and wrk with apt-get when they are missing (without it, a
    /// missing tool is reported as a missed item 3, with the command that installs it).
    #[arg(long)]
    pub install: bool,
    /// For profiling by hand: run only these parts (comma-separated: signing, proxy,
    /// rsa, post, coalescing, callbacks, connect, relay, fleet, idempotency, footprint); the
    /// report then lacks the others.
    #[arg(long, hide = true, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure even in a debug build (figures meaningless; for testing the bench).
    #[arg(long, hide = true)]
    pub allow_debug: bool,
    /// For profiling: after the set-up, write the gateway's URL, pid and bearer to
    /// `target/bench/hold.env`, keep the gateway and the fake up this many seconds (for
    /// `wrk` and `perf record -p` by hand), then stop without measuring anything.
    #[arg(long, hide = true)]
    pub hold: Option<u64>,
}

impl BenchArgs {
    /// Whether the part `name` runs (`--only`).
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }

    fn effective(&self) -> BenchArgs {
        let mut a = self.clone();
        if a.quick {
            a.seconds = a.seconds.min(3);
            a.rounds = a.rounds.min(1);
            a.latency_seconds = a.latency_seconds.min(2);
            a.signing_seconds = a.signing_seconds.min(1);
            a.users = a.users.min(1_000);
            a.live_sessions = a.live_sessions.min(100);
            a.large_users = a.large_users.min(10_000);
            a.large_live_sessions = a.large_live_sessions.min(1_000);
        }
        a.live_sessions = a.live_sessions.min(a.users.saturating_sub(1));
        a.large_live_sessions = a.large_live_sessions.min(a.large_users.saturating_sub(1));
        a.rounds = a.rounds.max(1);
        a
    }
}

/// The demo-style user the proxy runs use, with what the comparison needs.
pub struct Connected {
    /// The gateway's name for the user.
    pub user_ref: String,
    /// The id the gateway reports (the path's `/user/{id}` through the gateway).
    pub bunq_user_id: u64,
    /// The id of the stored session's user (the path's `/user/{id}` at the fake).
    pub session_user_id: u64,
    /// `Bearer <gateway API key>`.
    pub bearer: String,
    /// The session headers the gateway sends for this user, for direct and nginx runs.
    pub session_headers: Vec<(String, String)>,
}

const USER_REF: &str = "bench-alice";

/// Item 11: fleet mode on PostgreSQL (`bench/fleet.rs`).
async fn fleet_item(args: &BenchArgs, report: &mut Report, bin: &Path, dir: &Path) {
    heading(
        "11. fleet mode on PostgreSQL: the store off the hot path; connects per egress address",
    );
    let (rounds, seconds) = if args.quick { (1, 3) } else { (3, 5) };
    if let Err(e) = fleet::postgres_vs_sqlite(report, bin, dir, rounds, seconds).await {
        report.skip("11", "proxied GET, PostgreSQL store / SQLite store", e);
    }
    let bunq_minutes = if args.quick { 1 } else { 2 };
    if let Err(e) = fleet::connect_rate(report, bin, dir, bunq_minutes).await {
        report.skip(
            "11",
            "connects per minute with 1, 2 and 4 egress addresses",
            e,
        );
    }
}

pub async fn run(args: &BenchArgs) -> Result<(), StepError> {
    if cfg!(debug_assertions) && !args.allow_debug {
        return rerun_in_release();
    }
    let args = args.effective();
    let started = Instant::now();
    let workspace = crate::gateway_process::workspace_root();
    let dir = workspace.join("target/bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail("prepare target/bench", e, "check disk space"))?;
    let mut report = Report::default();

    heading("1. signing: ours vs `openssl speed rsa2048`");
    let signing = if args.runs("signing") || args.runs("post") {
        signing::measure(args.signing_seconds, args.rounds)
    } else {
        Err("not run (--only)".to_owned())
    };
    let sign_us = match signing {
        Ok(r) => {
            let (s, v) = (r.sign_ratio, r.verify_ratio);
            let rounds = report::median_of(r.rounds.len());
            let per_round =
                |ratio: fn(&signing::SigningRound) -> f64| report::each(r.rounds.iter().map(ratio));
            report.row(
                "1",
                "RSA-2048 sign, ours / openssl",
                format!(
                    "{s:.2}x ({:.0} vs {:.0}/s; {rounds}: {})",
                    r.ours_sign,
                    r.openssl_sign,
                    per_round(signing::SigningRound::sign_ratio)
                ),
                ">= 0.9x",
                Verdict::of(s >= 0.9),
            );
            report.row(
                "1",
                "RSA-2048 verify, ours / openssl",
                format!(
                    "{v:.2}x ({:.0} vs {:.0}/s; {rounds}: {})",
                    r.ours_verify,
                    r.openssl_verify,
                    per_round(signing::SigningRound::verify_ratio)
                ),
                ">= 0.75x",
                Verdict::of(v >= 0.75),
            );
            if let Some(plain) = r.openssl_sign_without_ifma {
                report.row(
                    "1",
                    "RSA-2048 sign, ours / openssl without AVX-512 IFMA",
                    format!(
                        "{:.2}x ({:.0} vs {plain:.0}/s)",
                        r.ours_sign / plain,
                        r.ours_sign
                    ),
                    "",
                    Verdict::Info,
                );
            }
            report.section("signing", json!(r));
            Some((r.ours_sign_us, r.ours_verify_us))
        }
        Err(e) => {
            report.skip("1", "RSA-2048 sign and verify", e);
            None
        }
    };

    heading("build bunq-gateway (release) and start bunq-fake");
    let bin = crate::gateway_process::build_gateway(&workspace, true).map_err(|e| {
        fail(
            "cargo build --release -p bunq-gateway",
            e,
            "build it by hand to see the compiler's message",
        )
    })?;
    let fake = FakeBunq::start_with(FakeConfig::default())
        .await
        .map_err(|e| fail("start bunq-fake", e, "is 127.0.0.1 available?"))?;
    println!("  fake at {}; gateway {}", fake.api_base(), bin.display());

    heading("sandbox-setup against the fake, start the gateway, connect a user");
    let (gw, user, config_path) = setup(&fake, &bin, &dir).await?;
    if let Some(seconds) = args.hold {
        return hold(&gw, &user, &fake, &dir, seconds).await;
    }
    report.row(
        "6",
        "start to /readyz 200 (empty database)",
        format!("{} ms", gw.ready_after.as_millis()),
        "<= 200 ms",
        Verdict::of(gw.ready_after <= Duration::from_millis(200)),
    );

    if args.runs("proxy") {
        heading("3. gateway vs nginx over the same fake endpoint");
        if let Err(e) = proxy::gateway_vs_nginx(
            &args,
            &mut report,
            &fake,
            &gw,
            &user,
            &dir,
            proxy::Relaunch {
                bin: &bin,
                config: &config_path,
            },
        )
        .await
        {
            report.skip("3", "gateway vs nginx", e);
        }
    }

    if args.runs("rsa") {
        heading("2. RSA signatures per proxied GET after warm-up");
        if let Err(e) =
            rsa_count::measure(&mut report, &bin, &gw, &user, sign_us.map(|(s, _)| s)).await
        {
            report.skip("2", "RSA signatures per proxied GET", e);
        }
    }

    if args.runs("post") {
        heading("9. gateway CPU per proxied POST against one RSA sign + one verify");
        match sign_us {
            Some((sign, verify)) => {
                let per_round = if args.quick { 100 } else { 400 };
                if let Err(e) = post_cpu::measure(
                    &mut report,
                    &gw,
                    &user,
                    sign + verify,
                    args.rounds,
                    per_round,
                )
                .await
                {
                    report.skip("9", "gateway CPU per proxied POST", e);
                }
            }
            None => report.skip(
                "9",
                "gateway CPU per proxied POST",
                "item 1 was not measured",
            ),
        }
    }

    if args.runs("coalescing") {
        heading("4. session coalescing");
        if let Err(e) = proxy::coalescing_after_expiry(&mut report, &fake, &gw, &user).await {
            report.skip("4", "coalescing after expiry", e);
        }
    }

    if args.runs("callbacks") {
        heading("5. callbacks per second");
        let n = if args.quick { 8 } else { 24 };
        if let Err(e) = proxy::callbacks_per_second(&mut report, &gw, &user.bearer, n, 4).await {
            report.skip("5", "callbacks per second", e);
        }
    }

    if args.runs("connect") {
        heading("7. connect rate at bunq's session limit (windows shortened 10x)");
        let bunq_minutes = if args.quick { 1 } else { 5 };
        if let Err(e) = connect_rate::measure(&mut report, &bin, &dir, bunq_minutes).await {
            report.skip("7", "connect rate", e);
        }
    }

    if args.runs("relay") {
        heading("8. bunq callbacks: accepted per second, relay latency (vs a plain echo)");
        let span = Duration::from_secs(if args.quick { 2 } else { 5 });
        if let Err(e) = callbacks_rate::measure(&mut report, &bin, &dir, span).await {
            report.skip("8", "bunq callbacks accepted and relayed", e);
        }
    }

    if args.runs("fleet") {
        fleet_item(&args, &mut report, &bin, &dir).await;
    }

    let idle_rss_a = gw.pid().and_then(load::rss_mib);

    if args.runs("idempotency") {
        heading(
            "10. idempotency records written and read back (bunq-store, SQLite, synchronous=FULL)",
        );
        let facts = gateway::read_config(&config_path)
            .map_err(|e| fail("read the gateway config", e, "none"))?;
        let span = Duration::from_secs(if args.quick { 1 } else { 3 });
        if let Err(e) = store_rate::measure(
            &mut report,
            &dir.join("idempotency.sqlite3"),
            facts.master_key.clone(),
            span,
        )
        .await
        {
            report.skip("10", "idempotency records per second", e);
        }
    }

    if args.runs("footprint") {
        heading("5-6. store lookups, footprint with a populated database, cold coalescing");
        let sizes = [
            Footprint {
                users: args.users,
                live: args.live_sessions,
                rss_goal_mib: 64.0,
                ready_goal: Duration::from_millis(200),
                first: true,
            },
            Footprint {
                users: args.large_users,
                live: args.large_live_sessions,
                rss_goal_mib: 64.0,
                ready_goal: Duration::from_millis(100),
                first: false,
            },
        ];
        for size in sizes {
            if let Err(e) = footprint(
                &args,
                size,
                &mut report,
                &fake,
                &bin,
                &config_path,
                &user.bearer,
                &dir,
                Some((&gw, &user)),
            )
            .await
            {
                report.skip("6", format!("footprint ({} users)", size.users), e);
            }
        }
    }

    let _ = gw.terminate();
    if let Some(rss) = idle_rss_a {
        report.note(format!(
            "gateway RSS after the proxy runs (one user): {rss:.1} MiB"
        ));
    }
    fake.shutdown().await;

    let command = format!(
        "cargo xtask bench{}",
        if args.quick { " --quick" } else { "" }
    );
    let elapsed = started.elapsed().as_secs_f64();
    println!("\n{}", report.table());
    match report.write_json(&dir, &command, elapsed) {
        Ok(path) => println!("written: {} ({elapsed:.0} s)", path.display()),
        Err(e) => println!("could not write report.json: {e}"),
    }
    let missed = report.missed();
    if missed > 0 {
        println!("{missed} goal(s) missed: see docs/PERFORMANCE.md for what the profiles show.");
    }
    Ok(())
}

/// `--hold`: the set-up only, kept up for profiling by hand: the gateway and, when
/// nginx is installed, the reference nginx in front of the same fake.
async fn hold(
    gw: &GatewayProcess,
    user: &Connected,
    fake: &FakeBunq,
    dir: &Path,
    seconds: u64,
) -> Result<(), StepError> {
    let url = format!(
        "{}/v1/users/{}/bunq/user/{}/monetary-account-bank",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let mut env = format!(
        "GW_URL='{url}'\nGW_PID={}\nGW_AUTH='{}'\n",
        gw.pid().unwrap_or(0),
        user.bearer
    );
    let reference =
        nginx::Nginx::start_in_front_of(fake, &dir.join("nginx"), &user.session_headers);
    let _nginx = match reference {
        Ok((n, port)) => {
            let pids: Vec<String> = n
                .master_pid()
                .into_iter()
                .chain(n.workers())
                .map(|p| p.to_string())
                .collect();
            env.push_str(&format!(
                "NGINX_URL='http://127.0.0.1:{port}/v1/user/{}/monetary-account-bank'\nNGINX_PIDS='{}'\n",
                user.session_user_id,
                pids.join(" ")
            ));
            Some(n)
        }
        Err(e) => {
            println!("  no nginx beside the gateway: {e}");
            None
        }
    };
    let path = dir.join("hold.env");
    std::fs::write(&path, env).map_err(|e| fail("write hold.env", e, "none"))?;
    println!(
        "  holding {seconds} s (Ctrl-C stops the gateway and nginx); see {}",
        path.display()
    );
    // Ctrl-C ends the hold like the timeout, so that the gateway and nginx are stopped
    // by their drops instead of outliving the bench.
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = tokio::signal::ctrl_c() => println!("  interrupted; stopping"),
    }
    Ok(())
}

fn heading(title: &str) {
    println!("\n== {title}");
}

fn fail(step: &str, e: impl std::fmt::Display, hint: &str) -> StepError {
    StepError {
        step: step.into(),
        detail: e.to_string(),
        hint: hint.into(),
    }
}

/// `cargo run --release -p xtask -- bench <same arguments>`.
fn rerun_in_release() -> Result<(), StepError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "cargo xtask bench measures optimised code: re-running as `cargo run --release -p xtask -- {}`",
        args.join(" ")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::gateway_process::workspace_root())
        .args(["run", "--release", "--quiet", "-p", "xtask", "--"])
        .args(&args)
        .status()
        .map_err(|e| fail("cargo run --release", e, "is cargo on PATH?"))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(
            "bench (release)",
            format!("exited with {status}"),
            "read the output above",
        ))
    }
}

/// sandbox-setup against the fake, the gateway started, one user connected through
/// the real OAuth redirects, and that user's session read from the gateway's store.
async fn setup(
    fake: &FakeBunq,
    bin: &Path,
    dir: &Path,
) -> Result<(GatewayProcess, Connected, PathBuf), StepError> {
    let port =
        gateway::free_port().map_err(|e| fail("pick a port", e, "is 127.0.0.1 available?"))?;
    let gateway_url = format!("http://127.0.0.1:{port}");
    let database = dir.join("gateway.sqlite3");
    let setup = SandboxArgs::against_fake(fake, dir, &gateway_url, &database);
    let outcome = sandbox::run(&setup).await?;
    let bearer = format!("Bearer {}", outcome.gateway_api_key.expose_secret());
    let gw = GatewayProcess::start(
        bin,
        &outcome.config_path,
        &gateway_url,
        &dir.join("gateway.log"),
    )
    .await
    .map_err(|e| fail("start bunq-gateway", e, "read target/bench/gateway.log"))?;
    println!("  gateway ready after {} ms", gw.ready_after.as_millis());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail("HTTP client", e, "none"))?;
    let bunq_user_id = gateway::connect_user(&http, &bearer, &gateway_url, USER_REF)
        .await
        .map_err(|e| fail("connect a user", e, "read target/bench/gateway.log"))?;
    let facts = gateway::read_config(&outcome.config_path)
        .map_err(|e| fail("read the gateway config", e, "none"))?;
    let (session_headers, session_user_id) =
        gateway::session_headers(&database, facts.master_key, USER_REF)
            .await
            .map_err(|e| {
                fail(
                    "read the user's session from the gateway's store",
                    e,
                    "none",
                )
            })?;
    println!("  connected {USER_REF} as bunq user {bunq_user_id} (session user {session_user_id})");
    let user = Connected {
        user_ref: USER_REF.into(),
        bunq_user_id,
        session_user_id,
        bearer,
        session_headers,
    };
    Ok((gw, user, outcome.config_path))
}

/// One footprint database: its size and goals.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    users: usize,
    live: usize,
    rss_goal_mib: f64,
    ready_goal: Duration,
    /// The first size also measures store lookups and cold coalescing (as before).
    first: bool,
}

/// Items 5 (store lookups), 6 (footprint, start time) and 4 (cold coalescing) on a
/// second gateway over a database filled through bunq-store.
#[allow(clippy::too_many_arguments)]
async fn footprint(
    args: &BenchArgs,
    size: Footprint,
    report: &mut Report,
    fake: &FakeBunq,
    bin: &Path,
    config: &Path,
    bearer: &str,
    dir: &Path,
    compare_with: Option<(&GatewayProcess, &Connected)>,
) -> Result<(), String> {
    let facts = gateway::read_config(config)?;
    let (users, live) = (size.users, size.live);
    let name = if size.first {
        "footprint"
    } else {
        "footprint-large"
    };
    let db = dir.join(format!("{name}.sqlite3"));
    let t = Instant::now();
    println!(
        "  writing {} connected users, {} with sessions opened at the fake ...",
        users, live
    );
    let population = population::populate(&db, facts.master_key.clone(), fake, users, live).await?;
    println!("  written in {:.1} s", t.elapsed().as_secs_f64());

    let refs: Vec<String> = population.live.iter().map(|u| u.user_ref.clone()).collect();
    let lookup_s = Duration::from_secs(if args.quick { 1 } else { 3 });
    let lookups = if size.first {
        population::lookups_per_second(&db, facts.master_key.clone(), &refs, 4, lookup_s).await
    } else {
        Ok(-1.0)
    };
    match lookups {
        Ok(rate) if rate < 0.0 => {}
        Ok(rate) => {
            report.row(
                "5",
                "warm token+context lookups (bunq-store, 4 tasks)",
                format!("{rate:.0}/s"),
                ">= 20,000/s",
                Verdict::of(rate >= 20_000.0),
            );
            report.section(
                "store",
                json!({ "lookups_per_second": rate, "concurrency": 4, "users": population.users }),
            );
        }
        Err(e) => report.skip("5", "store lookups", e),
    }

    let port = gateway::free_port()?;
    let variant = dir.join(format!("{name}.toml"));
    gateway::write_variant(&facts, &variant, port, &db)?;
    let url = format!("http://127.0.0.1:{port}");
    let gw = GatewayProcess::start(
        bin,
        &variant,
        &url,
        &dir.join(format!("gateway-{name}.log")),
    )
    .await?;
    let pid = gw.pid().ok_or("no pid")?;
    report.row(
        "6",
        format!(
            "start to /readyz 200 ({} users in the database)",
            population.users
        ),
        format!("{} ms", gw.ready_after.as_millis()),
        format!("<= {} ms", size.ready_goal.as_millis()),
        Verdict::of(gw.ready_after <= size.ready_goal),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = load::rss_mib(pid).ok_or("cannot read the gateway's RSS")?;
    report.row(
        "6",
        format!(
            "gateway RSS idle ({} users in the database)",
            population.users
        ),
        format!("{idle:.1} MiB"),
        format!("<= {:.0} MiB", size.rss_goal_mib),
        Verdict::of(idle <= size.rss_goal_mib),
    );

    // One proxied GET per live user loads each session into the gateway's memory.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = 0usize;
    for (i, user) in population.live.iter().enumerate() {
        if tasks.len() >= 16 {
            if let Some(Ok(false)) | Some(Err(_)) = tasks.join_next().await {
                failed += 1;
            }
        }
        let (http, bearer) = (http.clone(), bearer.to_owned());
        let u = format!(
            "{url}/v1/users/{}/bunq/user/{}/monetary-account-bank",
            user.user_ref, user.bunq_user_id
        );
        let _ = i;
        tasks.spawn(async move {
            match http.get(&u).header("Authorization", bearer).send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if !matches!(joined, Ok(true)) {
            failed += 1;
        }
    }
    if failed > 0 {
        report.note(format!(
            "{failed} of {} warm-up GETs through the footprint gateway failed",
            population.live.len()
        ));
    }
    let loaded = load::rss_mib(pid).ok_or("cannot read the gateway's RSS")?;
    report.row(
        "6",
        format!(
            "gateway RSS, {} users, {} live sessions loaded",
            population.users,
            population.live.len()
        ),
        format!("{loaded:.1} MiB"),
        format!("<= {:.0} MiB", size.rss_goal_mib),
        Verdict::of(loaded <= size.rss_goal_mib),
    );
    report.section(name, json!({ "users": population.users, "live_sessions": population.live.len(), "rss_idle_mib": idle, "rss_loaded_mib": loaded, "ready_ms": gw.ready_after.as_millis() as u64, "warmup_failures": failed }));

    if size.first {
        if let Err(e) =
            proxy::coalescing_cold(report, fake, &gw, &population.sessionless.user_ref, bearer)
                .await
        {
            report.skip("4", "cold coalescing", e);
        }
    } else if let Some((small, small_user)) = compare_with {
        if let Err(e) =
            proxy::hot_path_at_scale(args, report, small, small_user, &gw, &population).await
        {
            report.skip("6", "proxied GET at scale", e);
        }
    }
    let _ = gw.terminate();
    Ok(())
}
