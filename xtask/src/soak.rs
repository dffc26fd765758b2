//! `cargo xtask soak --minutes N` (issue 17, item 3): the real `bunq-gateway` and
//! `bunq-fake` binaries under mixed load while a fault schedule runs, then the
//! invariants, printed as a table; the exit status is non-zero if any fails.
//!
//! - Load (`soak/load.rs`, `payments.rs`, `users.rs`): payments with an
//!   `Idempotency-Key` retried until a definitive answer, proxied GETs, connects through
//!   the OAuth redirects, deletes, reconnects after revocations.
//! - Faults (`soak/faults.rs`): a rotation of 401 session kills, 500/503/491, latency
//!   spikes, connections cut after execute, answers after the gateway gave up, tampered
//!   signatures, revoked grants; and here, the gateway SIGKILLed (with a payment held
//!   executed and unanswered) and restarted on the same database every few minutes.
//! - Checks (`soak/checks.rs`): payments against the fake's list, session-server
//!   windows, panics, plaintext secrets in the database, its WAL and the logs, RSS and
//!   file descriptors per gateway process.
//!
//! bunq's session-server window is shortened to 2 s on both sides (the fake's limit and
//! the gateway's pacer), so that a 2-minute run spans 60 windows. Everything is written
//! under `target/soak/` (logs, database, `report.json`). Debug builds by default: what
//! CI has already built for the tests.

mod checks;
mod faults;
mod load;
mod payments;
mod report;
mod supervisor;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake_process::{FakeOptions, FakeProcess};
use crate::gateway_process::{build_bin, own_config, workspace_root};
use crate::progress::StepError;
use report::{SESSION_SERVER, counter};
use supervisor::Supervisor;

/// The command line of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Minutes of load and faults (set-up, drain and checks come on top).
    #[arg(long, default_value_t = 2)]
    pub minutes: u64,
    /// Seconds between SIGKILLs of the gateway [default: a third of the run, within
    /// 30..240].
    #[arg(long)]
    pub kill_every_seconds: Option<u64>,
    /// Seconds between two faults of the rotation.
    #[arg(long, default_value_t = 5)]
    pub fault_every_seconds: u64,
    /// Build and run release binaries instead of debug ones.
    #[arg(long)]
    pub release: bool,
}

/// bunq's session-server window (30 s), shortened on both sides.
pub(super) const SESSION_WINDOW: Duration = Duration::from_secs(2);
/// bunq's window of the other limits (3 s), shortened likewise.
const RATE_WINDOW: Duration = Duration::from_millis(300);
/// Sessions also end by age, not only by the faults.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// The gateway's bound on one call to bunq: below the delay-after-execute fault.
const UPSTREAM_TIMEOUT_SECONDS: i64 = 5;
const REQUEST_TIMEOUT_SECONDS: i64 = 20;
/// How long the load may take to finish its current operations after the run.
const DRAIN_LIMIT: Duration = Duration::from_secs(150);
fn heading(started: Instant, title: &str) {
    println!("== [{:>4.0} s] {title}", started.elapsed().as_secs_f64());
}

fn fail(step: &str, e: impl std::fmt::Display, hint: &str) -> StepError {
    StepError {
        step: step.into(),
        detail: e.to_string(),
        hint: hint.into(),
    }
}

pub async fn run(args: &SoakArgs) -> Result<(), StepError> {
    let started = Instant::now();
    let span = Duration::from_secs(args.minutes.max(1) * 60);
    let kill_every = Duration::from_secs(
        args.kill_every_seconds
            .unwrap_or((span.as_secs() / 3).clamp(30, 240))
            .max(5),
    );
    let fault_every = Duration::from_secs(args.fault_every_seconds.max(1));
    let workspace = workspace_root();
    let dir = workspace.join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail("prepare target/soak", e, "check disk space"))?;

    let profile = if args.release { "release" } else { "debug" };
    heading(
        started,
        &format!("build bunq-gateway and bunq-fake ({profile})"),
    );
    let build = |package: &str, bin: &str| {
        build_bin(&workspace, package, bin, args.release).map_err(|e| {
            fail(
                &format!("cargo build -p {package}"),
                e,
                "build it by hand to see the compiler's message",
            )
        })
    };
    let gateway_bin = build("bunq-gateway", "bunq-gateway")?;
    let fake_bin = build("bunq-testkit", "bunq-fake")?;

    heading(
        started,
        "start bunq-fake, sandbox-setup against it, start the gateway",
    );
    let fake = FakeProcess::start(
        &fake_bin,
        &FakeOptions {
            rate_limits: true,
            session_server_window: SESSION_WINDOW,
            rate_limit_window: RATE_WINDOW,
            session_timeout: SESSION_TIMEOUT,
            callback_retry_interval: Duration::from_secs(2),
        },
        &dir.join("fake.log"),
    )
    .await
    .map_err(|e| fail("start bunq-fake", e, "read target/soak/fake.log"))?;
    let own = own_config(&fake, &dir, "gateway-soak.toml", soak_config)
        .await
        .map_err(|e| fail("sandbox-setup against the fake", e, "read the output above"))?;
    // sandbox-setup's own session took the current window.
    tokio::time::sleep(SESSION_WINDOW).await;
    let calls_before = fake
        .get("calls")
        .await
        .map_err(|e| fail("read the fake's counters", e, "read target/soak/fake.log"))?;

    let mut supervisor = Supervisor::new(&gateway_bin, &own.path, &own.url, &dir);
    supervisor.fake_pid = fake.pid();
    supervisor.refused_seen = counter(&calls_before, "rate_limited", SESSION_SERVER);
    supervisor
        .start()
        .await
        .map_err(|e| fail("start bunq-gateway", e, "read target/soak/gateway-1.log"))?;
    let soak = Arc::new(
        load::Soak::new(own.url.clone(), own.bearer.clone())
            .map_err(|e| fail("HTTP client", e, "none"))?,
    );
    users::connect_steady(&soak).await.map_err(|e| {
        fail(
            "connect the steady users",
            e,
            "read target/soak/gateway-1.log",
        )
    })?;

    heading(
        started,
        &format!(
            "{} min of load and faults: a fault every {} s ({}), SIGKILL every {} s",
            args.minutes.max(1),
            fault_every.as_secs(),
            faults::rotation().join(", "),
            kill_every.as_secs()
        ),
    );
    let run_started = Instant::now();
    let until = run_started + span;
    let mut tasks = load::spawn(&soak);
    let (applied, watched) = tokio::join!(
        faults::run(&fake, &soak, fault_every, until),
        supervisor.watch(&fake, &soak, until, kill_every),
    );
    watched.map_err(|e| {
        fail(
            "keep the gateway running",
            e,
            "read target/soak/gateway-*.log",
        )
    })?;
    let run_length = run_started.elapsed();

    heading(
        started,
        "drain: the load finishes what it is doing; faults off",
    );
    let _ = faults::calm(&fake).await;
    soak.stop();
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !drained {
        tasks.abort_all();
        println!(
            "  the load did not finish within {} s; aborted",
            DRAIN_LIMIT.as_secs()
        );
    }
    let settled = payments::settle_unresolved(&soak).await;
    println!("  {settled} unresolved payment(s) settled by a retry with their key");

    heading(started, "checks");
    // The WAL is read while the gateway runs (a clean stop checkpoints it away).
    let db = dir.join("gateway.sqlite3");
    let db_files = |suffixes: &[&str]| -> Vec<PathBuf> {
        suffixes
            .iter()
            .map(|s| PathBuf::from(format!("{}{s}", db.display())))
            .collect()
    };
    let live_copies = copy_files(&db_files(&["", "-wal", "-shm"]), &dir.join("at-end"));
    let final_exit = supervisor.stop();
    let executed = fake.get("payments").await;
    let issued = fake.get("secrets").await;
    let calls_after = fake.get("calls").await;
    let fake_exit = fake.terminate();

    let logs = {
        let mut logs = supervisor.logs.clone();
        logs.push(dir.join("fake.log"));
        logs
    };
    let mut database_files = live_copies;
    database_files.extend(db_files(&["", "-wal", "-shm"]));
    let table = report::table(&report::Evidence {
        soak: &soak,
        supervisor: &supervisor,
        applied: &applied,
        executed,
        issued,
        calls_before: &calls_before,
        calls_after,
        final_exit,
        fake_exit,
        run_length,
        config: &own.path,
        bearer: &own.bearer,
        logs,
        database_files,
    });

    let command = format!("cargo xtask soak --minutes {}", args.minutes.max(1));
    println!(
        "\n{command}: {:.0} s in all\n",
        started.elapsed().as_secs_f64()
    );
    println!("{}", table.markdown());
    for line in &table.details {
        println!("  {line}");
    }
    report::write_report(
        &dir,
        &command,
        started.elapsed(),
        &table,
        &supervisor,
        &soak,
        &applied,
    );
    let failed = table.failed();
    if failed > 0 {
        return Err(fail(
            "soak invariants",
            format!("{failed} invariant(s) failed"),
            "read the lines under the table and target/soak/ (logs, report.json)",
        ));
    }
    println!("all invariants hold.");
    Ok(())
}

/// The soak's changes to the config sandbox-setup wrote: bunq's limits on with the
/// shortened windows (the same as the fake's), and short timeouts toward bunq so that
/// the delayed answers outlast them.
fn soak_config(table: &mut toml::Table) {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let mut section = |name: &str, values: Vec<(&str, toml::Value)>| {
        let mut section = table
            .remove(name)
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default();
        for (key, value) in values {
            section.insert(key.into(), value);
        }
        table.insert(name.into(), section.into());
    };
    section(
        "bunq",
        vec![
            ("rate_limits", true.into()),
            ("session_window_ms", ms(SESSION_WINDOW).into()),
            ("rate_limit_window_ms", ms(RATE_WINDOW).into()),
        ],
    );
    section(
        "http",
        vec![
            ("upstream_timeout_seconds", UPSTREAM_TIMEOUT_SECONDS.into()),
            ("request_timeout_seconds", REQUEST_TIMEOUT_SECONDS.into()),
        ],
    );
}

/// Copies `files` (those that exist) into `into`; returns the copies.
fn copy_files(files: &[PathBuf], into: &Path) -> Vec<PathBuf> {
    let _ = std::fs::create_dir_all(into);
    files
        .iter()
        .filter_map(|f| {
            let to = into.join(f.file_name()?);
            std::fs::copy(f, &to).ok().map(|_| to)
        })
        .collect()
}
