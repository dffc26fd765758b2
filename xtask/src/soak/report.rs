//! The soak's table: the invariants of `checks.rs` over what the run left behind, the
//! figures beside them, and `target/soak/report.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::SESSION_WINDOW;
use super::checks::{self, Table};
use super::load::Soak;
use super::payments::{self, Payment};
use super::supervisor::Supervisor;
use crate::gateway_process::read_config;

/// What the run left behind, for the checks.
pub(super) struct Evidence<'a> {
    pub soak: &'a Soak,
    pub supervisor: &'a Supervisor<'a>,
    /// Faults applied, by name.
    pub applied: &'a BTreeMap<&'static str, u64>,
    /// The fake's `/_fake/payments`, `/_fake/secrets`, and `/_fake/calls` before the
    /// gateway started and at the end.
    pub executed: Result<Value, String>,
    pub issued: Result<Value, String>,
    pub calls_before: &'a Value,
    pub calls_after: Result<Value, String>,
    /// The last gateway process's and the fake's exits on SIGTERM.
    pub final_exit: Result<ExitStatus, String>,
    pub fake_exit: Result<ExitStatus, String>,
    pub run_length: Duration,
    /// The gateway's config and bearer (secrets to look for).
    pub config: &'a Path,
    pub bearer: &'a str,
    /// Every log, and the database files to scan besides them.
    pub logs: Vec<PathBuf>,
    pub database_files: Vec<PathBuf>,
}

/// Every invariant and information row.
pub(super) fn table(e: &Evidence<'_>) -> Table {
    let (soak, supervisor) = (e.soak, e.supervisor);
    let mut table = Table::default();
    let payments = soak.payments();
    match &e.executed {
        Ok(list) => checks::payments(
            &mut table,
            &payments,
            list["payments"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
        ),
        Err(err) => table.check(
            "payments at the fake",
            format!("cannot list them: {err}"),
            false,
        ),
    }
    session_windows(
        &mut table,
        e.calls_before,
        e.calls_after.as_ref().ok(),
        e.run_length,
        &supervisor.refusals,
    );

    let logs = &e.logs;
    let panics = checks::panics(logs);
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

    let mut scanned = e.database_files.clone();
    scanned.extend(logs.iter().cloned());
    secrets_row(
        &mut table,
        e.config,
        e.bearer,
        e.issued.as_ref().ok(),
        &scanned,
    );

    checks::resources(&mut table, &supervisor.samples, &supervisor.lengths);
    let exits_ok =
        supervisor.unexpected.is_empty() && matches!(&e.final_exit, Ok(s) if s.success());
    table.check(
        "the gateway only dies when killed, and stops cleanly at the end",
        format!(
            "{} SIGKILLs, restarted (to /readyz) in {}; {} unexpected exits; final SIGTERM: {}",
            supervisor.kills,
            spread(&supervisor.restart_ms),
            supervisor.unexpected.len(),
            match &e.final_exit {
                Ok(s) => s.to_string(),
                Err(err) => err.clone(),
            }
        ),
        exits_ok,
    );
    table.details.extend(supervisor.unexpected.iter().cloned());
    load_rows(&mut table, soak, e.applied, &payments, e.run_length);
    if let (Some(first), Some(last)) = (supervisor.fake_rss.first(), supervisor.fake_rss.last()) {
        table.info(
            "the fake's RSS (it keeps every payment and session; not judged)",
            format!("{first:.1} → {last:.1} MiB"),
        );
    }
    if let Err(err) = &e.fake_exit {
        table
            .details
            .push(format!("bunq-fake did not stop cleanly: {err}"));
    }
    table
}

/// "120–340 ms" over `values`.
fn spread(values: &[u128]) -> String {
    match (values.iter().min(), values.iter().max()) {
        (Some(a), Some(b)) => format!("{a}–{b} ms"),
        _ => "-".into(),
    }
}

pub(super) fn counter(calls: &Value, group: &str, endpoint: &str) -> u64 {
    calls[group][endpoint].as_u64().unwrap_or(0)
}

pub(super) const SESSION_SERVER: &str = "POST /session-server";

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
    soak: &Soak,
    applied: &BTreeMap<&'static str, u64>,
    payments: &[Payment],
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
                payments::Outcome::Acknowledged { .. } | payments::Outcome::AlreadySubmitted
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

pub(super) fn write_report(
    dir: &Path,
    command: &str,
    elapsed: Duration,
    table: &Table,
    supervisor: &Supervisor<'_>,
    soak: &Soak,
    applied: &BTreeMap<&'static str, u64>,
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
        "unacknowledged_payments": unacknowledged(soak),
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

/// Every payment that ended without a 2xx or `already_submitted`, with its attempts: what
/// the table's counts are made of.
fn unacknowledged(soak: &Soak) -> Vec<Value> {
    soak.payments()
        .iter()
        .filter(|p| {
            !matches!(
                p.outcome,
                payments::Outcome::Acknowledged { .. } | payments::Outcome::AlreadySubmitted
            )
        })
        .map(|p| {
            json!({
                "key": p.key(),
                "user_ref": p.user_ref,
                "outcome": format!("{:?}", p.outcome),
                "attempts": p.attempts.iter().map(|a| a.label()).collect::<Vec<_>>(),
            })
        })
        .collect()
}
