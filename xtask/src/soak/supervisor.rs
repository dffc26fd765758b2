//! The gateway's processes, one after the other on one database and port: started,
//! watched (an exit nobody caused is recorded and restarted), sampled through `/proc`,
//! SIGKILLed and restarted on schedule, stopped with SIGTERM at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::checks::{self, Sample};
use super::load::Soak;
use super::payments::Outcome;
use super::report::{SESSION_SERVER, counter};
use super::users::UserState;
use crate::fake_process::FakeProcess;
use crate::gateway_process::{GatewayProcess, fd_count, rss_mib};

/// How often the gateway's RSS and descriptors (and the fake's counters) are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// Before a SIGKILL the next write is held this long after it executed, and the kill
/// comes `KILL_AFTER` into the hold: the gateway dies with a payment executed at bunq
/// and its answer unread, the case its idempotency records exist for.
const HOLD_BEFORE_KILL: Duration = Duration::from_secs(4);
const KILL_AFTER: Duration = Duration::from_secs(1);
/// Our crates at debug (their request lines, retries, renewals): more for the secret
/// scan to read.
const GATEWAY_LOG: &str =
    "info,bunq_gateway=debug,bunq_session=debug,bunq_oauth=debug,bunq_store=debug";

/// The gateway's processes, one after the other: started, watched, sampled, killed.
pub(super) struct Supervisor<'a> {
    bin: &'a Path,
    config: &'a Path,
    url: &'a str,
    dir: &'a Path,
    gateway: Option<GatewayProcess>,
    /// The current process (1 = the first).
    lifetime: usize,
    born: Instant,
    /// How long each ended process lived.
    pub(super) lengths: Vec<Duration>,
    pub(super) samples: Vec<Sample>,
    /// The fake's RSS at each sample (it keeps every payment: context, not judged).
    pub(super) fake_rss: Vec<f64>,
    pub(super) fake_pid: Option<u32>,
    /// The fake's count of session-server calls its limit refused, at the last look,
    /// and when each new one was seen: (process, its age).
    pub(super) refused_seen: u64,
    pub(super) refusals: Vec<(usize, Duration)>,
    pub(super) kills: usize,
    pub(super) restart_ms: Vec<u128>,
    pub(super) unexpected: Vec<String>,
    pub(super) logs: Vec<PathBuf>,
}

impl<'a> Supervisor<'a> {
    pub(super) fn new(bin: &'a Path, config: &'a Path, url: &'a str, dir: &'a Path) -> Self {
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
    pub(super) async fn start(&mut self) -> Result<(), String> {
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
    pub(super) async fn watch(
        &mut self,
        fake: &FakeProcess,
        soak: &Soak,
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

    fn progress(&self, soak: &Soak, elapsed: Duration) {
        let payments = soak.payments();
        let acked = payments
            .iter()
            .filter(|p| {
                matches!(
                    p.outcome,
                    Outcome::Acknowledged { .. } | Outcome::AlreadySubmitted
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
            .filter(|u| u.state != UserState::Deleted)
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
    pub(super) fn stop(&mut self) -> Result<std::process::ExitStatus, String> {
        let gateway = self.gateway.take().ok_or("no gateway running")?;
        self.end_lifetime();
        gateway.terminate()
    }
}
