//! `cargo xtask soak --minutes N` (issue 17, item 3): the real `bunq-gateway` and
//! `bunq-fake` binaries under mixed load while a fault schedule runs, then the
//! invariants, printed as a table; the exit status is non-zero if any fails.
//!
//! - Load (`soak/load.rs`): payments with an `Idempotency-Key` retried until a
//!   definitive answer, proxied GETs, connects through the OAuth redirects, deletes,
//!   reconnects after revocations.
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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::fake_process::{FakeOptions, FakeProcess};
use crate::gateway_process::{
    GatewayProcess, build_bin, fd_count, own_config, read_config, rss_mib, workspace_root,
};
use crate::progress::StepError;
use checks::{Sample, Table};

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
const SESSION_WINDOW: Duration = Duration::from_secs(2);
/// bunq's window of the other limits (3 s), shortened likewise.
const RATE_WINDOW: Duration = Duration::from_millis(300);
/// Sessions also end by age, not only by the faults.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// The gateway's bound on one call to bunq: below the delay-after-execute fault.
const UPSTREAM_TIMEOUT_SECONDS: i64 = 5;
const REQUEST_TIMEOUT_SECONDS: i64 = 20;
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// Before a SIGKILL the next write is held this long after it executed, and the kill
/// comes `KILL_AFTER` into the hold: the gateway dies with a payment executed at bunq
/// and its answer unread, the case its idempotency records exist for.
const HOLD_BEFORE_KILL: Duration = Duration::from_secs(4);
const KILL_AFTER: Duration = Duration::from_secs(1);
/// How long the load may take to finish its current operations after the run.
const DRAIN_LIMIT: Duration = Duration::from_secs(150);
/// Our crates at debug (their request lines, retries, renewals): more for the secret
/// scan to read.
const GATEWAY_LOG: &str =
    "info,bunq_gateway=debug,bunq_session=debug,bunq_oauth=debug,bunq_store=debug";

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
    load::connect_steady(&soak).await.map_err(|e| {
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
    let settled = load::settle_unresolved(&soak).await;
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

    let mut table = Table::default();
    let payments = soak.payments();
    match &executed {
        Ok(list) => checks::payments(
            &mut table,
            &payments,
            list["payments"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ),
        Err(e) => table.check(
            "payments at the fake",
            format!("cannot list them: {e}"),
            false,
        ),
    }
    session_windows(
        &mut table,
        &calls_before,
        calls_after.as_ref().ok(),
        run_length,
        &supervisor.refusals,
    );

    let mut logs = supervisor.logs.clone();
    logs.push(dir.join("fake.log"));
    let panics = checks::panics(&logs);
    table.check(
        "no panic in any log",
        format!(
            "{} panics in {} logs ({} gateway processes and the fake)",
            panics.len(),
            logs.len(),
            supervisor.logs.len()
        ),
        panics.is_empty(),
    );
    table.details.extend(panics.into_iter().take(10));

    let mut scanned = live_copies;
    scanned.extend(db_files(&["", "-wal", "-shm"]));
    scanned.extend(logs.iter().cloned());
    secrets_row(
        &mut table,
        &own.path,
        &own.bearer,
        issued.as_ref().ok(),
        &scanned,
    );

    checks::resources(&mut table, &supervisor.samples, &supervisor.lengths);
    let exits_ok = supervisor.unexpected.is_empty() && matches!(&final_exit, Ok(s) if s.success());
    table.check(
        "the gateway only dies when killed, and stops cleanly at the end",
        format!(
            "{} SIGKILLs, restarted (to /readyz) in {}; {} unexpected exits; final SIGTERM: {}",
            supervisor.kills,
            spread(&supervisor.restart_ms),
            supervisor.unexpected.len(),
            match &final_exit {
                Ok(s) => s.to_string(),
                Err(e) => e.clone(),
            }
        ),
        exits_ok,
    );
    table.details.extend(supervisor.unexpected.iter().cloned());
    load_rows(&mut table, &soak, &applied, &payments, run_length);
    if let (Some(first), Some(last)) = (supervisor.fake_rss.first(), supervisor.fake_rss.last()) {
        table.info(
            "the fake's RSS (it keeps every payment and session; not judged)",
            format!("{first:.1} → {last:.1} MiB"),
        );
    }
    if let Err(e) = fake_exit {
        table
            .details
            .push(format!("bunq-fake did not stop cleanly: {e}"));
    }

    let command = format!("cargo xtask soak --minutes {}", args.minutes.max(1));
    println!(
        "\n{command}: {:.0} s in all\n",
        started.elapsed().as_secs_f64()
    );
    println!("{}", table.markdown());
    for line in &table.details {
        println!("  {line}");
    }
    write_report(
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

/// The gateway's processes, one after the other: started, watched, sampled, killed.
struct Supervisor<'a> {
    bin: &'a Path,
    config: &'a Path,
    url: &'a str,
    dir: &'a Path,
    gateway: Option<GatewayProcess>,
    /// The current process (1 = the first).
    lifetime: usize,
    born: Instant,
    /// How long each ended process lived.
    lengths: Vec<Duration>,
    samples: Vec<Sample>,
    /// The fake's RSS at each sample (it keeps every payment: context, not judged).
    fake_rss: Vec<f64>,
    fake_pid: Option<u32>,
    /// The fake's count of session-server calls its limit refused, at the last look,
    /// and when each new one was seen: (process, its age).
    refused_seen: u64,
    refusals: Vec<(usize, Duration)>,
    kills: usize,
    restart_ms: Vec<u128>,
    unexpected: Vec<String>,
    logs: Vec<PathBuf>,
}

impl<'a> Supervisor<'a> {
    fn new(bin: &'a Path, config: &'a Path, url: &'a str, dir: &'a Path) -> Self {
        Self {
            bin,
            config,
            url,
            dir,
            gateway: None,
            lifetime: 0,
            born: Instant::now(),
            lengths: Vec::new(),
            samples: Vec::new(),
            fake_rss: Vec::new(),
            fake_pid: None,
            refused_seen: 0,
            refusals: Vec::new(),
            kills: 0,
            restart_ms: Vec::new(),
            unexpected: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// Starts the next process on the same database and port (retried: the port of a
    /// killed process may take a moment to free).
    async fn start(&mut self) -> Result<(), String> {
        self.lifetime += 1;
        let log = self.dir.join(format!("gateway-{}.log", self.lifetime));
        self.logs.push(log.clone());
        let mut last = String::new();
        for _ in 0..5 {
            match GatewayProcess::start_with_env(
                self.bin,
                self.config,
                self.url,
                &log,
                &[("RUST_LOG", GATEWAY_LOG)],
            )
            .await
            {
                Ok(gateway) => {
                    self.gateway = Some(gateway);
                    self.born = Instant::now();
                    return Ok(());
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Err(last)
    }

    fn end_lifetime(&mut self) {
        self.lengths.push(self.born.elapsed());
    }

    /// Runs until `until`: samples, progress lines, the SIGKILLs, and a restart of a
    /// process that died on its own (recorded: a failure).
    async fn watch(
        &mut self,
        fake: &FakeProcess,
        soak: &load::Soak,
        until: Instant,
        kill_every: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut next_kill = started + kill_every;
        let mut next_sample = started;
        let mut next_progress = started + PROGRESS_EVERY;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            if let Some(status) = self.gateway.as_mut().and_then(GatewayProcess::exited) {
                let line = format!(
                    "gateway process #{} exited on its own after {:.0} s: {status} (see {})",
                    self.lifetime,
                    self.born.elapsed().as_secs_f64(),
                    checks::file_name(self.logs.last().map(PathBuf::as_path).unwrap_or(self.dir))
                );
                println!("  {line}");
                self.unexpected.push(line);
                self.gateway = None;
                self.end_lifetime();
                self.start().await?;
            }
            if now >= next_sample {
                next_sample += SAMPLE_EVERY;
                self.sample();
                self.look_for_refusals(fake).await;
            }
            if now >= next_kill && now + KILL_AFTER < until {
                next_kill += kill_every;
                self.kill_and_restart(fake).await?;
            }
            if now >= next_progress {
                next_progress += PROGRESS_EVERY;
                self.progress(soak, started.elapsed());
            }
        }
        Ok(())
    }

    fn sample(&mut self) {
        if let Some(rss) = self.fake_pid.and_then(rss_mib) {
            self.fake_rss.push(rss);
        }
        let Some(pid) = self.gateway.as_ref().and_then(GatewayProcess::pid) else {
            return;
        };
        if let (Some(rss_mib), Some(fds)) = (rss_mib(pid), fd_count(pid)) {
            self.samples.push(Sample {
                lifetime: self.lifetime,
                age: self.born.elapsed(),
                rss_mib,
                fds,
            });
        }
    }

    /// Notes when the fake's limit refused a session-server call (within the last
    /// sample interval), to tell which process made it and how long after its start.
    async fn look_for_refusals(&mut self, fake: &FakeProcess) {
        let Ok(calls) = fake.get("calls").await else {
            return;
        };
        let refused = counter(&calls, "rate_limited", SESSION_SERVER);
        for _ in self.refused_seen..refused {
            self.refusals.push((self.lifetime, self.born.elapsed()));
        }
        self.refused_seen = self.refused_seen.max(refused);
    }

    async fn kill_and_restart(&mut self, fake: &FakeProcess) -> Result<(), String> {
        let mut hold = json!({"delay_after_execute": {
            "delay_ms": u64::try_from(HOLD_BEFORE_KILL.as_millis()).unwrap_or(u64::MAX),
            "n": 1,
        }});
        // Every other kill lands in a storm of session renewals: every session ended
        // a moment before, renewals queued at the pacer, one of them just sent.
        let storm = self.kills % 2 == 1;
        if storm {
            hold["expire_all_sessions"] = true.into();
        }
        if let Err(e) = fake.knobs(&hold).await {
            println!("  could not hold a write before the kill: {e}");
        }
        tokio::time::sleep(KILL_AFTER).await;
        let Some(gateway) = self.gateway.take() else {
            return Ok(());
        };
        let killed_at = Instant::now();
        let status = gateway.kill()?;
        self.kills += 1;
        self.end_lifetime();
        let lived = self.lengths.last().copied().unwrap_or_default();
        self.start().await?;
        let ms = killed_at.elapsed().as_millis();
        self.restart_ms.push(ms);
        println!(
            "  SIGKILL of gateway #{} after {:.0} s{} ({status}); #{} ready {ms} ms later",
            self.lifetime - 1,
            lived.as_secs_f64(),
            if storm {
                ", in a storm of session renewals"
            } else {
                ""
            },
            self.lifetime
        );
        Ok(())
    }

    fn progress(&self, soak: &load::Soak, elapsed: Duration) {
        let payments = soak.payments();
        let acked = payments
            .iter()
            .filter(|p| {
                matches!(
                    p.outcome,
                    load::Outcome::Acknowledged { .. } | load::Outcome::AlreadySubmitted
                )
            })
            .count();
        let answers = soak.answers();
        let (reads, reads_ok) = answers.iter().filter(|(k, _)| k.starts_with("GET ")).fold(
            (0, 0),
            |(all, ok), (k, n)| {
                let good = k.split(' ').nth(2).is_some_and(|s| s.starts_with('2'));
                (all + n, ok + if good { *n } else { 0 })
            },
        );
        let users = soak.users();
        let live = users
            .iter()
            .filter(|u| u.state != load::UserState::Deleted)
            .count();
        let last = self.samples.last();
        println!(
            "[{:>3}:{:02}] gateway #{} | payments {} done ({acked} acknowledged), {} in retry | GETs {reads} ({reads_ok} 2xx) | users {live} | RSS {} MiB, {} fds",
            elapsed.as_secs() / 60,
            elapsed.as_secs() % 60,
            self.lifetime,
            payments.len(),
            soak.payments_in_flight(),
            last.map(|s| format!("{:.1}", s.rss_mib))
                .unwrap_or_else(|| "?".into()),
            last.map(|s| s.fds.to_string())
                .unwrap_or_else(|| "?".into()),
        );
    }

    /// SIGTERM to the last process; its exit status.
    fn stop(&mut self) -> Result<std::process::ExitStatus, String> {
        let gateway = self.gateway.take().ok_or("no gateway running")?;
        self.end_lifetime();
        gateway.terminate()
    }
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

/// "120–340 ms" over `values`.
fn spread(values: &[u128]) -> String {
    match (values.iter().min(), values.iter().max()) {
        (Some(a), Some(b)) => format!("{a}–{b} ms"),
        _ => "-".into(),
    }
}

fn counter(calls: &Value, group: &str, endpoint: &str) -> u64 {
    calls[group][endpoint].as_u64().unwrap_or(0)
}

const SESSION_SERVER: &str = "POST /session-server";

/// The fake's own accounting: its limit answers 429 to a second session-server call
/// within a window from one IP, so every such 429 is a window the gateway exceeded.
/// `refusals` says when the supervisor saw each (which process, how long after its
/// start; to within a sample interval).
fn session_windows(
    table: &mut Table,
    before: &Value,
    after: Option<&Value>,
    run: Duration,
    refusals: &[(usize, Duration)],
) {
    let Some(after) = after else {
        table.check(
            "no session-server window exceeded",
            "cannot read the fake's counters",
            false,
        );
        return;
    };
    // The fake runs throughout, so its counters only grow; saturating all the same.
    let calls = counter(after, "calls", SESSION_SERVER).saturating_sub(counter(
        before,
        "calls",
        SESSION_SERVER,
    ));
    let refused = counter(after, "rate_limited", SESSION_SERVER).saturating_sub(counter(
        before,
        "rate_limited",
        SESSION_SERVER,
    ));
    let when = if refusals.is_empty() {
        String::new()
    } else {
        format!(
            "; seen {}",
            refusals
                .iter()
                .map(|(l, age)| format!("{:.0} s into process #{l}", age.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    table.check(
        "no session-server window exceeded",
        format!(
            "{refused} of {calls} session-server calls refused by the fake's limit (1 per {} s per IP; the run spans {} windows){when}",
            SESSION_WINDOW.as_secs(),
            run.as_secs() / SESSION_WINDOW.as_secs().max(1)
        ),
        refused == 0,
    );
    let others: Vec<String> = after["rate_limited"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != SESSION_SERVER)
        .filter_map(|(k, v)| {
            let n = v
                .as_u64()?
                .saturating_sub(counter(before, "rate_limited", k));
            (n > 0).then(|| format!("{k}: {n}"))
        })
        .collect();
    table.info(
        "429s of bunq's other limits (per endpoint, 300 ms windows)",
        if others.is_empty() {
            "none".to_owned()
        } else {
            others.join(", ")
        },
    );
}

/// Every secret the run knows: the fake's credentials, the gateway's master key, API
/// key and OAuth client secret; looked for in the database, its WAL, and every log.
fn secrets_row(
    table: &mut Table,
    config: &Path,
    bearer: &str,
    issued: Option<&Value>,
    files: &[PathBuf],
) {
    let Some(issued) = issued else {
        table.check(
            "no plaintext secret in the database, WAL or logs",
            "cannot list the fake's credentials",
            false,
        );
        return;
    };
    let mut secrets = checks::secrets_of_fake(issued);
    let token = bearer.trim_start_matches("Bearer ").as_bytes().to_vec();
    secrets.push(checks::Secret {
        kind: "gateway API key",
        value: token,
    });
    match read_config(config) {
        Ok(facts) => {
            secrets.push(checks::Secret {
                kind: "master key",
                value: facts
                    .master_key
                    .to_base64()
                    .expose_secret()
                    .as_bytes()
                    .to_vec(),
            });
            if let Some(s) = facts
                .table
                .get("oauth")
                .and_then(|o| o.get("client_secret"))
                .and_then(toml::Value::as_str)
            {
                secrets.push(checks::Secret {
                    kind: "OAuth client secret",
                    value: s.as_bytes().to_vec(),
                });
            }
        }
        Err(e) => table
            .details
            .push(format!("config not read for the secret scan: {e}")),
    }
    match checks::scan(files, secrets) {
        Ok(result) => {
            table.check(
                "no plaintext secret in the database, WAL or logs",
                format!(
                    "{} secrets and 3 private-key markers in {} files ({:.1} MiB: database, WAL and shm during and after the run, {} logs): {} found",
                    result.secrets,
                    result.files,
                    result.bytes as f64 / (1024.0 * 1024.0),
                    files.iter().filter(|f| f.extension().is_some_and(|e| e == "log")).count(),
                    result.hits.len()
                ),
                result.hits.is_empty(),
            );
            for (file, kind, at) in result.hits.iter().take(20) {
                table
                    .details
                    .push(format!("{kind} in {} at byte {at}", file.display()));
            }
        }
        Err(e) => table.check("no plaintext secret in the database, WAL or logs", e, false),
    }
}

/// What the load did, for the table: the load made progress (else the invariants would
/// hold vacuously), and the figures behind it.
fn load_rows(
    table: &mut Table,
    soak: &load::Soak,
    applied: &std::collections::BTreeMap<&'static str, u64>,
    payments: &[load::Payment],
    run: Duration,
) {
    let answers = soak.answers();
    let reads_ok: u64 = answers
        .iter()
        .filter(|(k, _)| {
            k.starts_with("GET ") && k.split(' ').nth(2).is_some_and(|s| s.starts_with('2'))
        })
        .map(|(_, n)| n)
        .sum();
    let acked = payments
        .iter()
        .filter(|p| {
            matches!(
                p.outcome,
                load::Outcome::Acknowledged { .. } | load::Outcome::AlreadySubmitted
            )
        })
        .count();
    let events = soak.events();
    let event = |k: &str| events.get(k).copied().unwrap_or(0);
    table.check(
        "the load made progress under the faults",
        format!(
            "{} payments ({acked} acknowledged), {reads_ok} GETs answered 2xx, {} connects, {} deletes, {} reconnects after a revocation in {:.0} s",
            payments.len(),
            event("connected"),
            event("deleted"),
            event("reconnected after a revocation"),
            run.as_secs_f64()
        ),
        acked > 0 && reads_ok > 0 && event("deleted") > 0,
    );
    let failed: Vec<String> = ["connects failed", "reconnects failed", "deletes failed"]
        .iter()
        .filter(|k| event(k) > 0)
        .map(|k| format!("{k}: {}", event(k)))
        .collect();
    if !failed.is_empty() {
        table.info("lifecycle operations that gave up", failed.join(", "));
    }
    table.info(
        "faults applied",
        applied
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut attempts: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for p in payments {
        for a in &p.attempts {
            *attempts.entry(a.label()).or_insert(0) += 1;
        }
    }
    table.info(
        "payment attempts by answer",
        attempts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
}

fn write_report(
    dir: &Path,
    command: &str,
    elapsed: Duration,
    table: &Table,
    supervisor: &Supervisor<'_>,
    soak: &load::Soak,
    applied: &std::collections::BTreeMap<&'static str, u64>,
) {
    let report = json!({
        "command": command,
        "seconds": elapsed.as_secs_f64(),
        "table": table,
        "faults": applied,
        "lifetimes_seconds": supervisor.lengths.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
        "samples": supervisor.samples,
        "answers": soak.answers(),
        "events": soak.events(),
    });
    let path = dir.join("report.json");
    match serde_json::to_string_pretty(&report) {
        Ok(text) => match std::fs::write(&path, text) {
            Ok(()) => println!("written: {}", path.display()),
            Err(e) => println!("could not write {}: {e}", path.display()),
        },
        Err(e) => println!("could not encode the report: {e}"),
    }
}
