//! Item 2: RSA private-key operations per proxied GET after warm-up, counted exactly.
//!
//! Method: a Linux uprobe (tracefs `uprobe_events`) on the RSA signing function that
//! bunq-signing calls (aws-lc-rs's `KeyPair::sign`) inside the running release gateway, counted with `perf stat -p PID` while
//! the bench sends GETs. A positive control proves the probe fires: the same probe
//! must count one operation per proxied POST with a body (bodies other than the empty
//! one are signed each time). bunq-signing has no operation counter of its own, and
//! this needs none. If perf or uprobes are unavailable, the bench falls back to a
//! bound from CPU time (see [`bound_from_cpu`]) and says so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::Connected;
use super::gateway::GatewayProcess;
use super::load::CpuMeter;
use super::report::{Report, Verdict};

const PROBE_GROUP: &str = "bunqbench";
const PROBE_NAME: &str = "rsa_sign";

/// Counts and reports.
pub async fn measure(
    report: &mut Report,
    bin: &Path,
    gw: &GatewayProcess,
    user: &Connected,
    sign_us: Option<f64>,
) -> Result<(), String> {
    let pid = gw.pid().ok_or("gateway has no pid")?;
    let get_url = format!(
        "{}/v1/users/{}/bunq/user/{}/monetary-account-bank",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let post_url = format!(
        "{}/v1/users/{}/bunq/user/{}/monetary-account/1/payment",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    // Warm-up: the session and its cached empty-body signature exist after this.
    send(&http, &user.bearer, reqwest::Method::GET, &get_url, 50).await?;

    match probe(bin) {
        Ok(event) => {
            let gets = 2_000;
            let get_ops = count_during(
                &event,
                pid,
                send(&http, &user.bearer, reqwest::Method::GET, &get_url, gets),
            )
            .await;
            let posts = 5;
            let post_ops = count_during(
                &event,
                pid,
                send(&http, &user.bearer, reqwest::Method::POST, &post_url, posts),
            )
            .await;
            remove_probe();
            let (get_ops, post_ops) = (get_ops?, post_ops?);
            let per_get = get_ops as f64 / gets as f64;
            report.row(
                "2",
                "RSA sign operations per proxied GET after warm-up (uprobe count)",
                format!(
                    "{per_get} ({get_ops} in {gets} GETs; control: {post_ops} in {posts} POSTs)"
                ),
                "0",
                if post_ops >= posts as u64 {
                    Verdict::of(get_ops == 0)
                } else {
                    Verdict::Skipped
                },
            );
            if post_ops < posts as u64 {
                report.note(format!("the uprobe counted {post_ops} signatures for {posts} POSTs: it does not see every signature, so the GET count proves nothing"));
            }
            report.section("rsa_per_get", json!({ "method": "perf uprobe on aws-lc-rs RsaKeyPair::sign", "gets": gets, "sign_ops": get_ops, "control_posts": posts, "control_sign_ops": post_ops }));
            Ok(())
        }
        Err(why) => {
            report.note(format!(
                "uprobe unavailable ({why}); falling back to a CPU-time bound"
            ));
            bound_from_cpu(report, &http, user, &get_url, pid, sign_us).await
        }
    }
}

/// If each GET signed, the gateway would spend at least one signature's CPU time per
/// GET; its measured CPU per GET below that bounds the mean number of signatures.
async fn bound_from_cpu(
    report: &mut Report,
    http: &reqwest::Client,
    user: &Connected,
    url: &str,
    pid: u32,
    sign_us: Option<f64>,
) -> Result<(), String> {
    let sign_us = sign_us.ok_or("no signing figure to compare with")?;
    let n = 2_000;
    let meter = CpuMeter::start(vec![pid]);
    send(http, &user.bearer, reqwest::Method::GET, url, n).await?;
    let (cpu_s, _) = meter.stop();
    let bound = cpu_s * 1e6 / n as f64 / sign_us;
    report.row(
        "2",
        "RSA signs per proxied GET (upper bound from CPU time)",
        format!("< {bound:.2}"),
        "0",
        Verdict::of(bound < 1.0),
    );
    Ok(())
}

/// Sends `n` requests one after the other; bodies for POSTs are small JSON payments.
async fn send(
    http: &reqwest::Client,
    bearer: &str,
    method: reqwest::Method,
    url: &str,
    n: usize,
) -> Result<(), String> {
    for i in 0..n {
        let mut rq = http
            .request(method.clone(), url)
            .header("Authorization", bearer);
        if method == reqwest::Method::POST {
            rq = rq.json(&json!({ "amount": { "value": "0.01", "currency": "EUR" }, "description": format!("bench {i}") }));
        }
        let r = rq.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let _ = r.bytes().await;
        if method == reqwest::Method::GET && !status.is_success() {
            return Err(format!("GET {url}: {status}"));
        }
    }
    Ok(())
}

/// The mangled name of the RSA signing function bunq-signing calls,
/// `aws_lc_rs::rsa::key::KeyPair::sign` (ring's `KeyPair::sign` is linked too, for
/// rustls, but bunq-signing never calls it: probing it would count nothing).
const SIGN_SYMBOL: &str = "9aws_lc_rs3rsa3key7KeyPair4sign17h";

/// bunq-signing's RSA signing function in `bin`: its address (from `nm`).
fn sign_symbol_address(bin: &Path) -> Result<u64, String> {
    let out = Command::new("nm")
        .arg(bin)
        .output()
        .map_err(|e| format!("nm: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(SIGN_SYMBOL))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .ok_or_else(|| "aws-lc-rs's KeyPair::sign not found in the gateway's symbols".into())
}

/// The file offset of virtual address `addr`, from the ELF program headers.
fn file_offset(bin: &Path, addr: u64) -> Result<u64, String> {
    let out = Command::new("readelf")
        .arg("-lW")
        .arg(bin)
        .output()
        .map_err(|e| format!("readelf: {e}"))?;
    file_offset_in(&String::from_utf8_lossy(&out.stdout), addr)
        .ok_or_else(|| format!("no LOAD segment holds {addr:#x}"))
}

/// `LOAD Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align` lines of `readelf -lW`.
fn file_offset_in(readelf: &str, addr: u64) -> Option<u64> {
    readelf.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"LOAD") || f.len() < 6 {
            return None;
        }
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let (offset, vaddr, memsz) = (hex(f[1])?, hex(f[2])?, hex(f[5])?);
        (vaddr <= addr && addr < vaddr + memsz).then(|| addr - vaddr + offset)
    })
}

const UPROBE_EVENTS: &str = "/sys/kernel/tracing/uprobe_events";

/// Adds the uprobe through tracefs (perf probe places it at the virtual address, not
/// the file offset, in these PIE binaries); returns the event name for `perf stat -e`.
fn probe(bin: &Path) -> Result<String, String> {
    let addr = sign_symbol_address(bin)?;
    let offset = file_offset(bin, addr)?;
    let bin = bin.canonicalize().map_err(|e| e.to_string())?;
    remove_probe();
    let line = format!(
        "p:{PROBE_GROUP}/{PROBE_NAME} {}:{offset:#x}\n",
        bin.display()
    );
    append(UPROBE_EVENTS, &line).map_err(|e| format!("{UPROBE_EVENTS}: {e}"))?;
    Ok(format!("{PROBE_GROUP}:{PROBE_NAME}"))
}

fn append(path: &str, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(line.as_bytes())
}

fn remove_probe() {
    let _ = append(UPROBE_EVENTS, &format!("-:{PROBE_GROUP}/{PROBE_NAME}\n"));
}

/// Runs `perf stat -e event -p pid` around `work`; the event's count.
async fn count_during(
    event: &str,
    pid: u32,
    work: impl Future<Output = Result<(), String>>,
) -> Result<u64, String> {
    let child = tokio::process::Command::new("perf")
        .args(["stat", "-x", ",", "-e", event, "-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("perf stat: {e}"))?;
    // perf needs a moment to attach before the first request counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worked = work.await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(id) = child.id() {
        let _ = Command::new("kill")
            .args(["-INT", &id.to_string()])
            .status();
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "perf stat did not stop".to_owned())?
        .map_err(|e| e.to_string())?;
    worked?;
    let text = String::from_utf8_lossy(&out.stderr);
    parse_perf_count(&text, event)
        .ok_or_else(|| format!("no count for {event} in perf's output: {text}"))
}

/// `perf stat -x,` lines are `count,unit,event,...`.
fn parse_perf_count(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut fields = l.split(',');
        let count = fields.next()?;
        let _unit = fields.next()?;
        let name = fields.next()?;
        (name == event).then(|| count.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_text_address_to_its_file_offset() {
        let readelf = "  LOAD           0x000000 0x0000000000000000 0x0000000000000000 0x08d008 0x08d008 R   0x1000
  LOAD           0x08d040 0x000000000008e040 0x000000000008e040 0x208510 0x208510 R E 0x1000
";
        assert_eq!(file_offset_in(readelf, 0x236b40), Some(0x235b40));
        assert_eq!(file_offset_in(readelf, 0x900000), None);
    }

    #[test]
    fn parses_perf_stat_csv() {
        let text = "\n2000,,bunqbench:rsa_sign,1012345,100.00,,\n";
        assert_eq!(parse_perf_count(text, "bunqbench:rsa_sign"), Some(2000));
        assert_eq!(
            parse_perf_count(
                "<not counted>,,bunqbench:rsa_sign,0,0.00,,",
                "bunqbench:rsa_sign"
            ),
            None
        );
    }
}
