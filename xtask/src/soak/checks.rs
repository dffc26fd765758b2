//! The invariants the soak checks at the end, and its table: each a PASS or a FAIL with
//! its numbers (information rows carry no verdict).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use super::payments::{Outcome, Payment};

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub figure: String,
    /// `None` for information.
    pub pass: Option<bool>,
}

/// The invariants' table.
#[derive(Debug, Default, serde::Serialize)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Lines that explain a FAIL (which payment, which file).
    pub details: Vec<String>,
}

impl Table {
    pub fn check(&mut self, name: impl Into<String>, figure: impl Into<String>, pass: bool) {
        self.rows.push(Row {
            name: name.into(),
            figure: figure.into(),
            pass: Some(pass),
        });
    }

    pub fn info(&mut self, name: impl Into<String>, figure: impl Into<String>) {
        self.rows.push(Row {
            name: name.into(),
            figure: figure.into(),
            pass: None,
        });
    }

    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.pass == Some(false)).count()
    }

    /// Markdown, to paste into docs/RELIABILITY.md as is.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| invariant | figure | verdict |\n| --- | --- | --- |\n");
        for r in &self.rows {
            let verdict = match r.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "-",
            };
            out.push_str(&format!(
                "| {} | {} | {verdict} |\n",
                r.name,
                r.figure.replace('|', "/")
            ));
        }
        out
    }
}

/// The payments' invariants against the fake's list of executed payments
/// (`GET /_fake/payments`).
pub fn payments(table: &mut Table, payments: &[Payment], executed: &[Value]) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for p in executed {
        let description = p["description"].as_str().unwrap_or_default();
        *count.entry(description).or_insert(0) += 1;
    }
    let keys: std::collections::HashSet<String> = payments.iter().map(Payment::key).collect();
    let strangers: Vec<&str> = count
        .keys()
        .filter(|d| !keys.contains(**d))
        .copied()
        .collect();

    let (mut acked, mut replayed, mut submitted, mut late) = (0, 0, 0, 0);
    let (mut unresolved, mut unresolved_once, mut not_sent, mut rejected) = (0, 0, 0, 0);
    let (mut ack_bad, mut twice, mut sent_bad) = (Vec::new(), Vec::new(), Vec::new());
    for p in payments {
        let key = p.key();
        let n = count.get(key.as_str()).copied().unwrap_or(0);
        if p.settled_late {
            late += 1;
        }
        match &p.outcome {
            Outcome::Acknowledged { replayed: r } => {
                acked += 1;
                if *r {
                    replayed += 1;
                }
                if n != 1 {
                    ack_bad.push((p, n));
                }
            }
            Outcome::AlreadySubmitted => {
                acked += 1;
                submitted += 1;
                if n != 1 {
                    ack_bad.push((p, n));
                }
            }
            Outcome::Unresolved => {
                unresolved += 1;
                if n == 1 {
                    unresolved_once += 1;
                }
                if n > 1 {
                    twice.push((p, n));
                }
            }
            Outcome::NeverSent | Outcome::Rejected(_) => {
                if matches!(p.outcome, Outcome::NeverSent) {
                    not_sent += 1;
                } else {
                    rejected += 1;
                }
                if n > 0 {
                    sent_bad.push((p, n));
                }
            }
        }
    }
    table.check(
        "every acknowledged payment exists exactly once at the fake",
        format!(
            "{acked} acknowledged ({replayed} by a replay, {submitted} as already_submitted, {late} settled by the retry after the faults); {} not exactly once",
            ack_bad.len()
        ),
        ack_bad.is_empty(),
    );
    table.check(
        "no unacknowledged payment exists twice",
        format!(
            "{unresolved} never acknowledged: {unresolved_once} executed once, {} not at all, {} twice or more; {} executed payments the client never made",
            unresolved - unresolved_once - twice.len(),
            twice.len(),
            strangers.len()
        ),
        twice.is_empty() && strangers.is_empty(),
    );
    table.check(
        "no payment answered \"nothing sent\" (or refused) executed",
        format!(
            "{not_sent} answered only with not-sent answers, {rejected} refused: {} executed",
            sent_bad.len()
        ),
        sent_bad.is_empty(),
    );
    let resent: Vec<&Payment> = payments.iter().filter(|p| p.resent.is_some()).collect();
    let not_replayed: Vec<&Payment> = resent
        .iter()
        .copied()
        .filter(|p| p.resent == Some(false))
        .collect();
    table.check(
        "an acknowledged payment sent again with its key is replayed, not executed again",
        format!(
            "{} sent again: {} answered by the stored answer (Idempotent-Replayed), {} otherwise",
            resent.len(),
            resent.len() - not_replayed.len(),
            not_replayed.len()
        ),
        not_replayed.is_empty(),
    );
    for p in not_replayed.iter().take(10) {
        table.details.push(format!(
            "{} sent again was not replayed; attempts: {}",
            p.key(),
            p.attempts
                .iter()
                .map(|a| a.label())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (p, n) in ack_bad.iter().chain(&twice).chain(&sent_bad).take(20) {
        table.details.push(format!(
            "{} ({}, {:?}) executed {n} times; attempts: {}",
            p.key(),
            p.user_ref,
            p.outcome,
            p.attempts
                .iter()
                .map(|a| a.label())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for s in strangers.iter().take(10) {
        table.details.push(format!(
            "executed at the fake, never made by the client: {s:?}"
        ));
    }
}

/// A secret to look for, by kind (its value is never printed).
pub struct Secret {
    pub kind: &'static str,
    pub value: Vec<u8>,
}

/// Every credential the fake issued (`GET /_fake/secrets`).
pub fn secrets_of_fake(listed: &Value) -> Vec<Secret> {
    let mut out = Vec::new();
    for (field, kind) in [
        ("api_keys", "API key"),
        ("oauth_access_tokens", "OAuth access token"),
        ("oauth_client_secrets", "OAuth client secret"),
        ("installation_tokens", "installation token"),
        ("session_tokens", "session token"),
    ] {
        for v in listed[field].as_array().into_iter().flatten() {
            if let Some(s) = v.as_str() {
                out.push(Secret {
                    kind,
                    value: s.as_bytes().to_vec(),
                });
            }
        }
    }
    out
}

/// What a private key looks like however it is written: a PEM header, the start of a
/// PKCS#8 RSA key in base64 (after its 4 length bytes: version 0, rsaEncryption, the
/// OCTET STRING's header; a public key's SPKI differs), and the same bytes in DER.
fn private_key_markers() -> Vec<Secret> {
    vec![
        Secret {
            kind: "private key (PEM)",
            value: b"PRIVATE KEY".to_vec(),
        },
        Secret {
            kind: "private key (PKCS#8 base64)",
            value: b"ADANBgkqhkiG9w0BAQEFAASC".to_vec(),
        },
        Secret {
            kind: "private key (PKCS#8 DER)",
            value: vec![
                0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
                0x01, 0x01, 0x05, 0x00, 0x04, 0x82,
            ],
        },
    ]
}

/// Long secrets are also looked for by their first and last 24 characters (96 bits of
/// a hex token: no accident), so that a truncated one in a log line is found too.
const PART: usize = 24;

/// Where the scan found what.
#[derive(Debug, Default)]
pub struct ScanResult {
    pub files: usize,
    pub bytes: u64,
    pub secrets: usize,
    /// (file, kind, byte offset).
    pub hits: Vec<(PathBuf, &'static str, usize)>,
}

/// Looks for every secret (whole, or its first or last 24 characters) and every
/// private-key marker in `files` (missing files are skipped).
pub fn scan(files: &[PathBuf], secrets: Vec<Secret>) -> Result<ScanResult, String> {
    let mut secrets = secrets;
    let count = secrets.len();
    secrets.extend(private_key_markers());
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    let mut kinds: Vec<&'static str> = Vec::new();
    for s in &secrets {
        if s.value.is_empty() {
            continue;
        }
        patterns.push(s.value.clone());
        kinds.push(s.kind);
        if s.value.len() >= 2 * PART {
            patterns.push(s.value[..PART].to_vec());
            kinds.push(s.kind);
            patterns.push(s.value[s.value.len() - PART..].to_vec());
            kinds.push(s.kind);
        }
    }
    let matcher = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&patterns)
        .map_err(|e| e.to_string())?;
    let mut result = ScanResult {
        secrets: count,
        ..ScanResult::default()
    };
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        result.files += 1;
        result.bytes += bytes.len() as u64;
        for m in matcher.find_iter(&bytes) {
            result
                .hits
                .push((file.clone(), kinds[m.pattern().as_usize()], m.start()));
        }
    }
    Ok(result)
}

/// The lines of `logs` that tell of a panic, with their file.
pub fn panics(logs: &[PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    for log in logs {
        let text = std::fs::read(log).unwrap_or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            if line.contains("panicked at") || line.contains("panicked:") {
                found.push(format!("{}: {}", file_name(log), line.trim()));
            }
        }
    }
    found
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One reading of the gateway's resources.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Which gateway process (1 = the first start).
    pub lifetime: usize,
    /// Since that process started.
    pub age: Duration,
    pub rss_mib: f64,
    pub fds: usize,
}

/// A lifetime shorter than this is not judged: its fifths would be a few samples each.
pub const MIN_JUDGED: Duration = Duration::from_secs(30);
/// Growth allowed from the second fifth to the last: the larger of the two, RSS (what
/// the allocator keeps between bursts) and descriptors (connections in flight at the
/// sample instant).
const RSS_SLACK_MIB: f64 = 4.0;
const RSS_SLACK_SHARE: f64 = 0.10;
const FD_SLACK: f64 = 8.0;

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Per gateway lifetime (a SIGKILL starts a new process with a new heap, so that
/// comparing across them says nothing): the medians of the second and of the last fifth
/// of its life. Returns (lifetime, length, rss 2nd, rss last, fds 2nd, fds last).
pub fn fifths(
    samples: &[Sample],
    lengths: &[Duration],
) -> Vec<(usize, Duration, f64, f64, f64, f64)> {
    let mut out = Vec::new();
    for (i, length) in lengths.iter().enumerate() {
        let lifetime = i + 1;
        if *length < MIN_JUDGED {
            continue;
        }
        let of = |from: f64, to: f64| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| {
                    let at = s.age.as_secs_f64() / length.as_secs_f64();
                    s.lifetime == lifetime && at >= from && at < to
                })
                .collect()
        };
        let (second, last) = (of(0.2, 0.4), of(0.8, 1.01));
        let rss = |v: &[&Sample]| median(v.iter().map(|s| s.rss_mib).collect());
        let fds = |v: &[&Sample]| median(v.iter().map(|s| s.fds as f64).collect());
        if let (Some(r2), Some(r5), Some(f2), Some(f5)) =
            (rss(&second), rss(&last), fds(&second), fds(&last))
        {
            out.push((lifetime, *length, r2, r5, f2, f5));
        }
    }
    out
}

/// The RSS and descriptor rows.
pub fn resources(table: &mut Table, samples: &[Sample], lengths: &[Duration]) {
    let judged = fifths(samples, lengths);
    let skipped = lengths.len() - judged.len();
    let rss_ok = |r2: f64, r5: f64| r5 - r2 <= RSS_SLACK_MIB.max(r2 * RSS_SLACK_SHARE);
    let fd_ok = |f2: f64, f5: f64| f5 - f2 <= FD_SLACK;
    let describe = |values: &mut dyn Iterator<Item = String>| values.collect::<Vec<_>>().join("; ");
    let peak_rss = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let peak_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let note = if skipped > 0 {
        format!(
            " ({skipped} shorter than {} s not judged)",
            MIN_JUDGED.as_secs()
        )
    } else {
        String::new()
    };
    table.check(
        "gateway RSS bounded: no growth from the 2nd to the last fifth of each process's life",
        format!(
            "median MiB, 2nd → last fifth: {}{note}; peak {peak_rss:.1} MiB",
            describe(&mut judged.iter().map(|(l, len, r2, r5, _, _)| format!(
                "#{l} ({:.0} s) {r2:.1} → {r5:.1}",
                len.as_secs_f64()
            )))
        ),
        !judged.is_empty() && judged.iter().all(|j| rss_ok(j.2, j.3)),
    );
    table.check(
        "gateway file descriptors bounded (same fifths)",
        format!(
            "median fds, 2nd → last fifth: {}{note}; peak {peak_fds}",
            describe(
                &mut judged
                    .iter()
                    .map(|(l, _, _, _, f2, f5)| format!("#{l} {f2:.0} → {f5:.0}"))
            )
        ),
        !judged.is_empty() && judged.iter().all(|j| fd_ok(j.4, j.5)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::payments::Attempt;

    fn payment(n: u64, outcome: Outcome) -> Payment {
        Payment {
            n,
            user_ref: "u".into(),
            url: String::new(),
            attempts: vec![Attempt::Lost],
            outcome,
            settled_late: false,
            resent: None,
        }
    }

    fn executed(descriptions: &[&str]) -> Vec<Value> {
        descriptions
            .iter()
            .map(|d| serde_json::json!({"description": d}))
            .collect()
    }

    #[test]
    fn payments_pass_when_each_outcome_matches_the_fake() {
        let mut table = Table::default();
        let made = [
            payment(1, Outcome::Acknowledged { replayed: false }),
            payment(2, Outcome::AlreadySubmitted),
            payment(3, Outcome::Unresolved),
            payment(4, Outcome::Unresolved),
            payment(5, Outcome::NeverSent),
        ];
        payments(
            &mut table,
            &made,
            &executed(&["soak-1", "soak-2", "soak-3"]),
        );
        assert_eq!(table.failed(), 0, "{}", table.markdown());
    }

    #[test]
    fn payments_fail_on_a_double_a_missing_ack_and_a_not_sent_one_executed() {
        for (outcome, at_fake) in [
            (
                Outcome::Acknowledged { replayed: true },
                vec!["soak-1", "soak-1"],
            ),
            (Outcome::AlreadySubmitted, vec![]),
            (Outcome::Unresolved, vec!["soak-1", "soak-1"]),
            (Outcome::NeverSent, vec!["soak-1"]),
            (Outcome::Unresolved, vec!["soak-1", "soak-99"]),
        ] {
            let mut table = Table::default();
            payments(
                &mut table,
                &[payment(1, outcome.clone())],
                &executed(&at_fake),
            );
            assert_eq!(table.failed(), 1, "{outcome:?} {at_fake:?}");
            assert!(!table.details.is_empty());
        }
    }

    #[test]
    fn a_resent_payment_must_come_back_as_a_replay() {
        let mut replayed = payment(1, Outcome::Acknowledged { replayed: false });
        replayed.resent = Some(true);
        let mut executed_again = payment(2, Outcome::Acknowledged { replayed: false });
        executed_again.resent = Some(false);
        let mut table = Table::default();
        payments(&mut table, &[replayed.clone()], &executed(&["soak-1"]));
        assert_eq!(table.failed(), 0, "{}", table.markdown());
        let mut table = Table::default();
        payments(
            &mut table,
            &[replayed, executed_again],
            &executed(&["soak-1", "soak-2"]),
        );
        assert_eq!(table.failed(), 1, "{}", table.markdown());
    }

    #[test]
    fn scan_finds_whole_and_truncated_secrets_and_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let token = "0123456789abcdef".repeat(4);
        let clean = dir.path().join("clean.log");
        std::fs::write(
            &clean,
            "nothing here; a public key MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A",
        )
        .unwrap();
        let leaky = dir.path().join("leaky.log");
        std::fs::write(
            &leaky,
            format!("token={} and -----BEGIN PRIVATE KEY-----", &token[..30]),
        )
        .unwrap();
        let secrets = || {
            vec![Secret {
                kind: "session token",
                value: token.as_bytes().to_vec(),
            }]
        };
        let result = scan(std::slice::from_ref(&clean), secrets()).unwrap();
        assert!(result.hits.is_empty(), "{:?}", result.hits);
        let result = scan(&[clean, leaky], secrets()).unwrap();
        let kinds: Vec<&str> = result.hits.iter().map(|h| h.1).collect();
        assert_eq!(kinds, ["session token", "private key (PEM)"]);
    }

    #[test]
    fn resources_judge_each_lifetime_by_its_own_fifths() {
        let sample = |lifetime, secs, rss_mib, fds| Sample {
            lifetime,
            age: Duration::from_secs(secs),
            rss_mib,
            fds,
        };
        // Lifetime 1 grows steadily (a leak); lifetime 2 is flat after warm-up.
        let mut samples = Vec::new();
        for s in 0..50 {
            samples.push(sample(1, s * 2, 30.0 + s as f64, 20));
            samples.push(sample(2, s * 2, if s < 5 { 20.0 } else { 40.0 }, 30));
        }
        let lengths = [Duration::from_secs(100), Duration::from_secs(100)];
        let mut table = Table::default();
        resources(&mut table, &samples, &lengths);
        assert_eq!(table.failed(), 1, "{}", table.markdown());
        assert!(table.rows[0].pass == Some(false) && table.rows[1].pass == Some(true));
        let flat: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| s.lifetime == 2)
            .map(|s| Sample { lifetime: 1, ..s })
            .collect();
        let mut table = Table::default();
        resources(&mut table, &flat, &lengths[..1]);
        assert_eq!(table.failed(), 0, "{}", table.markdown());
    }
}
