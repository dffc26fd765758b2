//! The fault schedule: one fault every few seconds, in a fixed rotation, set through the
//! fake's control endpoint. (The gateway's SIGKILLs are the supervisor's, in
//! `soak.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::load::Soak;
use crate::fake_process::FakeProcess;

/// Above the gateway's `http.upstream_timeout_seconds` of the soak: the gateway gives
/// up on the answer of a payment that executed.
const DELAY_AFTER_EXECUTE: Duration = Duration::from_secs(7);
/// A latency spike: every call to the fake this much slower, for `SPIKE_FOR`.
const SPIKE: Duration = Duration::from_millis(1500);
const SPIKE_FOR: Duration = Duration::from_secs(3);

/// One kind of fault.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Every session ends: their next calls get 401 "Insufficient authorisation.".
    SessionKill,
    /// The next 3 session calls get 401 without executing.
    Unauthorised,
    /// The next 2 calls get an unsigned 500, without executing.
    Status500,
    /// The next 2 calls get an unsigned 503 with `Retry-After: 1`.
    Status503,
    /// The next 2 calls get 491 (maintenance).
    Status491,
    LatencySpike,
    /// The next write executes, then its connection closes without an answer.
    CutAfterExecute,
    /// The next write executes, then its answer comes after the gateway gave up.
    DelayAfterExecute,
    /// The next 2 signed answers carry a wrong signature.
    TamperedSignatures,
    /// A connected user withdraws every grant in the bunq app.
    RevokedGrant,
}

/// The rotation: writes-after-execute faults between the others, so that payments meet
/// every kind.
const ROTATION: [Fault; 10] = [
    Fault::SessionKill,
    Fault::CutAfterExecute,
    Fault::Status503,
    Fault::TamperedSignatures,
    Fault::LatencySpike,
    Fault::DelayAfterExecute,
    Fault::Unauthorised,
    Fault::Status500,
    Fault::RevokedGrant,
    Fault::Status491,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::SessionKill => "all sessions killed (401)",
            Fault::Unauthorised => "401 x3",
            Fault::Status500 => "500 x2",
            Fault::Status503 => "503 x2, Retry-After 1",
            Fault::Status491 => "491 x2",
            Fault::LatencySpike => "latency +1.5 s for 3 s",
            Fault::CutAfterExecute => "connection cut after execute",
            Fault::DelayAfterExecute => "answer 7 s after execute",
            Fault::TamperedSignatures => "tampered signatures x2",
            Fault::RevokedGrant => "grant revoked",
        }
    }
}

/// The schedule's names, in rotation order, for the docs and the report.
pub fn rotation() -> Vec<&'static str> {
    ROTATION.iter().map(|f| f.name()).collect()
}

/// Every knob back to normal.
pub async fn calm(fake: &FakeProcess) -> Result<(), String> {
    fake.knobs(&json!({
        "latency_ms": 0,
        "fail_next_with_insufficient_authorisation": 0,
        "tamper_next_signatures": 0,
        "fail_next_with_status": {"status": 500, "n": 0},
        "cut_after_execute": 0,
        "delay_after_execute": {"delay_ms": 0, "n": 0},
    }))
    .await
}

/// Applies one fault every `every` until `until`, then calms the fake; returns how many
/// of each were applied.
pub async fn run(
    fake: &FakeProcess,
    soak: &Soak,
    every: Duration,
    until: Instant,
) -> BTreeMap<&'static str, u64> {
    let mut applied: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut next = Instant::now() + every;
    for fault in ROTATION.iter().cycle() {
        if next >= until {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        next += every;
        match apply(fake, soak, *fault).await {
            Ok(true) => *applied.entry(fault.name()).or_insert(0) += 1,
            // No connected user to revoke: the rotation moves on.
            Ok(false) => {}
            Err(e) => println!("  fault {} not applied: {e}", fault.name()),
        }
    }
    if let Err(e) = calm(fake).await {
        println!("  could not calm the fake: {e}");
    }
    applied
}

async fn apply(fake: &FakeProcess, soak: &Soak, fault: Fault) -> Result<bool, String> {
    let knobs = match fault {
        Fault::SessionKill => json!({"expire_all_sessions": true}),
        Fault::Unauthorised => json!({"fail_next_with_insufficient_authorisation": 3}),
        Fault::Status500 => json!({"fail_next_with_status": {"status": 500, "n": 2}}),
        Fault::Status503 => {
            json!({"fail_next_with_status": {"status": 503, "n": 2, "retry_after_secs": 1}})
        }
        Fault::Status491 => json!({"fail_next_with_status": {"status": 491, "n": 2}}),
        Fault::LatencySpike => {
            let ms = u64::try_from(SPIKE.as_millis()).unwrap_or(u64::MAX);
            fake.knobs(&json!({"latency_ms": ms})).await?;
            tokio::time::sleep(SPIKE_FOR).await;
            json!({"latency_ms": 0})
        }
        Fault::CutAfterExecute => json!({"cut_after_execute": 1}),
        Fault::DelayAfterExecute => {
            let ms = u64::try_from(DELAY_AFTER_EXECUTE.as_millis()).unwrap_or(u64::MAX);
            json!({"delay_after_execute": {"delay_ms": ms, "n": 1}})
        }
        Fault::TamperedSignatures => json!({"tamper_next_signatures": 2}),
        Fault::RevokedGrant => {
            let Some(user) = soak.pick(|_| true) else {
                return Ok(false);
            };
            fake.post("revoke-oauth-grants", &json!({"user_id": user.person}))
                .await?;
            return Ok(true);
        }
    };
    fake.knobs(&knobs).await.map(|()| true)
}
