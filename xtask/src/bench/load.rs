//! Load generation and process accounting: `wrk` for throughput, a fixed-rate Rust loop
//! for latency percentiles (Debian has no `wrk2`), and `/proc` for CPU time and RSS.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

pub use crate::gateway_process::rss_mib;

/// What one `wrk` run reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout), summed.
    pub socket_errors: u64,
    /// 99th percentile latency under saturation, in ms (from `--latency`).
    pub p99_ms: Option<f64>,
}

/// `wrk -t{threads} -c{connections} -d{seconds}s --latency` with `headers`.
pub fn wrk(
    url: &str,
    headers: &[(String, String)],
    threads: u32,
    connections: u32,
    seconds: u64,
) -> Result<WrkResult, String> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
    ]);
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    cmd.arg(url);
    let output = cmd.output().map_err(|e| format!("running wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "wrk exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&stdout).ok_or_else(|| format!("unexpected wrk output:\n{stdout}"))
}

/// Reads wrk's summary.
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut result = WrkResult::default();
    let mut found_rps = false;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            result.rps = rest.trim().parse().ok()?;
            found_rps = true;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.non_2xx = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            result.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if line.contains(" requests in ") {
            result.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            result.p99_ms = parse_duration_ms(rest.trim());
        }
    }
    found_rps.then_some(result)
}

/// `850.00us`, `1.23ms`, `2.00s` → milliseconds.
fn parse_duration_ms(text: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|v| v * factor)
}

/// Latency percentiles of a fixed-rate run, in microseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Latency {
    /// Requests per second asked for.
    pub rate: u32,
    /// Requests measured (after warm-up).
    pub measured: usize,
    /// Requests that failed or answered non-2xx.
    pub errors: usize,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// 99th percentile of the sender's own lateness (sent − scheduled): how well the
    /// schedule was kept. Not part of the latencies above.
    pub lag_p99_us: u64,
}

/// Sends GETs at a fixed `rate` for `duration` (after `warmup` at the same rate, not
/// counted), each from its own task, so that no answer, however late, holds back the
/// next request: a stalled server cannot hide its stall by slowing the sender
/// (coordinated omission, the flaw wrk2 was written to fix). Each request is timed from
/// the moment it was sent. Timing from the *scheduled* moment instead added the sender's
/// own lateness to every sample (tokio's timer wakes up to a millisecond late), which
/// made the p99 of two runs differ by ±1 ms on its own; that lateness is reported apart,
/// as `lag_p99_us`. Concurrency is unbounded by design; each request has a 5 s timeout,
/// so the run ends at most 5 s after the schedule.
pub async fn fixed_rate(
    url: &str,
    headers: &[(String, String)],
    rate: u32,
    warmup: Duration,
    duration: Duration,
) -> Result<Latency, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        map.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(map)
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let rate = rate.max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let skip = (warmup.as_secs_f64() * f64::from(rate)) as usize;
    let total = skip + (duration.as_secs_f64() * f64::from(rate)) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let ok = match client.get(&url).send().await {
                Ok(r) => {
                    let ok = r.status().is_success();
                    ok && r.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            (i, ok, sent.elapsed(), sent - scheduled)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut lags = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, ok, took, lag) = joined.map_err(|e| e.to_string())?;
        if i < skip {
            continue;
        }
        if !ok {
            errors += 1;
        }
        latencies.push(took.as_micros() as u64);
        lags.push(lag.as_micros() as u64);
    }
    latencies.sort_unstable();
    lags.sort_unstable();
    Ok(Latency {
        rate,
        measured: latencies.len(),
        errors,
        p50_us: percentile(&latencies, 50.0),
        p90_us: percentile(&latencies, 90.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0),
        lag_p99_us: percentile(&lags, 99.0),
    })
}

/// The nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU seconds `pid` has used so far in user space and in the kernel, apart.
fn user_and_system_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds_of(&stat, clock_ticks())
}

/// Fields 14 and 15 (utime, stime) of a `stat` line, in seconds; the name in
/// parentheses may hold spaces, so count from the last `)`.
fn cpu_seconds_of(stat: &str, ticks_per_s: f64) -> Option<(f64, f64)> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / ticks_per_s, stime / ticks_per_s))
}

/// USER_HZ, the unit of `/proc/PID/stat` times (100 on every Linux we know).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The parent pid of a process.
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The children of `pid` (e.g. nginx's workers), by scanning `/proc`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_pid(p) == Some(pid))
        .collect()
}

/// CPU seconds of a set of processes over a piece of work.
pub struct CpuMeter {
    pids: Vec<u32>,
    before: (f64, f64),
    started: Instant,
}

impl CpuMeter {
    /// Starts counting.
    pub fn start(pids: Vec<u32>) -> Self {
        let before = user_and_system(&pids);
        Self {
            pids,
            before,
            started: Instant::now(),
        }
    }

    /// CPU seconds used since `start`, and the wall time.
    pub fn stop(&self) -> (f64, Duration) {
        let (user, system, wall) = self.stop_split();
        (user + system, wall)
    }

    /// CPU seconds used since `start` in user space and in the kernel, apart, and the
    /// wall time.
    pub fn stop_split(&self) -> (f64, f64, Duration) {
        let (user, system) = user_and_system(&self.pids);
        (
            user - self.before.0,
            system - self.before.1,
            self.started.elapsed(),
        )
    }
}

fn user_and_system(pids: &[u32]) -> (f64, f64) {
    pids.iter()
        .filter_map(|&p| user_and_system_seconds(p))
        .fold((0.0, 0.0), |(u, s), (pu, ps)| (u + pu, s + ps))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/v1/x
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.01ms  30.12ms   90.00%
    Req/Sec    15.40k     1.20k   18.00k    70.00%
  Latency Distribution
     50%    1.90ms
     75%    2.40ms
     90%    3.00ms
     99%  850.00us
  306543 requests in 10.00s, 120.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  30654.30
Transfer/sec:     12.00MB
";

    #[test]
    fn parses_wrk_summary() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.requests, 306_543);
        assert!((r.rps - 30654.3).abs() < 1e-6);
        assert_eq!(r.non_2xx, 7);
        assert_eq!(r.socket_errors, 6);
        assert!((r.p99_ms.unwrap() - 0.85).abs() < 1e-9);
    }

    #[test]
    fn wrk_output_without_rate_is_refused() {
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_none());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn stat_line_with_spaces_in_the_name() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 10";
        assert_eq!(cpu_seconds_of(stat, 100.0), Some((2.5, 0.5)));
    }

    #[test]
    fn reads_this_process_from_proc() {
        let me = std::process::id();
        assert!(rss_mib(me).unwrap() > 0.0);
        assert!(user_and_system_seconds(me).is_some());
        assert!(parent_pid(me).is_some());
    }
}
