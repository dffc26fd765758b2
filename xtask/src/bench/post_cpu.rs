//! Item 9: the gateway's CPU per proxied POST (a payment) against the cryptography it
//! cannot avoid: one RSA signature of the request body and one RSA verification of
//! bunq's fresh answer, at the rates item 1 measured in this run.
//!
//! Each POST creates a payment of 0.01 EUR at the fake, which answers with a new id,
//! so every answer is signed afresh by the fake and verified by RSA in the gateway (the
//! verification cache cannot hit); the request body is the same every time, but the
//! gateway caches only the empty body's signature, so every POST is signed. Only the
//! gateway's CPU is counted (`/proc/PID/stat`): the fake, which signs every answer,
//! runs in the bench's process and is not the figure.

use std::time::Duration;

use serde_json::{Value, json};

use super::Connected;
use super::gateway::GatewayProcess;
use super::load::CpuMeter;
use super::report::{Report, Verdict, each, median, median_of};

/// POSTs in flight at once.
const CONCURRENCY: usize = 8;

/// Measures `rounds` runs of `per_round` POSTs, after an unmeasured warm-up.
/// `crypto_us` is one signature plus one verification from item 1, in microseconds.
pub async fn measure(
    report: &mut Report,
    gw: &GatewayProcess,
    user: &Connected,
    crypto_us: f64,
    rounds: u32,
    per_round: usize,
) -> Result<(), String> {
    let pid = gw.pid().ok_or("gateway has no pid")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let base = format!(
        "{}/v1/users/{}/bunq/user/{}",
        gw.url, user.user_ref, user.bunq_user_id
    );
    let accounts: Value = http
        .get(format!("{base}/monetary-account-bank"))
        .header("Authorization", &user.bearer)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let account = accounts["Response"][0]["MonetaryAccountBank"]["id"]
        .as_u64()
        .ok_or("the fake listed no monetary-account-bank for the user")?;
    let url = format!("{base}/monetary-account/{account}/payment");
    // The user's account starts empty: 500.00 EUR from the sugar daddy pays for 50,000
    // payments of 0.01 (through the gateway too, a POST like the measured ones).
    let top_up = http
        .post(format!("{base}/monetary-account/{account}/request-inquiry"))
        .header("Authorization", &user.bearer)
        .header("Content-Type", "application/json")
        .body(
            json!({
                "amount_inquired": {"value": "500.00", "currency": "EUR"},
                "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com"},
                "description": "bunq-bench item 9",
            })
            .to_string(),
        )
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !top_up.status().is_success() {
        return Err(format!("top-up at the fake: {}", top_up.status()));
    }

    posts(&http, &url, &user.bearer, 20).await?;
    let mut per_post = Vec::new();
    let (mut user_us, mut system_us) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("  round {round}/{rounds}: {per_round} POSTs, {CONCURRENCY} at a time ...");
        let meter = CpuMeter::start(vec![pid]);
        posts(&http, &url, &user.bearer, per_round).await?;
        let (user_s, system_s, _) = meter.stop_split();
        per_post.push(1e6 * (user_s + system_s) / per_round as f64);
        user_us.push(1e6 * user_s / per_round as f64);
        system_us.push(1e6 * system_s / per_round as f64);
    }
    let us = median(per_post.iter().copied());
    // Where the time goes: the RSA is user time; the kernel's share is the two TCP
    // hops and the wake-ups of a POST, not cryptography.
    report.note(format!(
        "item 9 split: user {:.0} us + system {:.0} us per POST (medians; rounds user {} us, system {} us)",
        median(user_us.iter().copied()),
        median(system_us.iter().copied()),
        each(user_us.iter().copied()),
        each(system_us.iter().copied()),
    ));
    let ratio = us / crypto_us.max(1e-9);
    report.row(
        "9",
        "gateway CPU per proxied POST ÷ one RSA sign + one verify (item 1)",
        format!(
            "{ratio:.2}x ({us:.0} vs {crypto_us:.0} us; {}: {} us)",
            median_of(per_post.len()),
            each(per_post.iter().copied())
        ),
        "<= 1.15x",
        Verdict::of(ratio <= 1.15),
    );
    report.section(
        "post",
        json!({ "gateway_cpu_us_per_post": us, "rounds_us": per_post, "crypto_us": crypto_us,
                "rounds_user_us": user_us, "rounds_system_us": system_us,
                "ratio": ratio, "posts_per_round": per_round, "concurrency": CONCURRENCY }),
    );
    Ok(())
}

/// `n` payments of 0.01 EUR, [`CONCURRENCY`] at a time; any failure fails the run.
async fn posts(http: &reqwest::Client, url: &str, bearer: &str, n: usize) -> Result<(), String> {
    let body = json!({
        "amount": {"value": "0.01", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "bench@example.com", "name": "Bench"},
        "description": "bunq-bench item 9",
    })
    .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut failure = None;
    while next < n || !tasks.is_empty() {
        while tasks.len() < CONCURRENCY && next < n {
            next += 1;
            let rq = http
                .post(url)
                .header("Authorization", bearer)
                .header("Content-Type", "application/json")
                .body(body.clone());
            tasks.spawn(async move {
                let r = rq.send().await.map_err(|e| e.to_string())?;
                let status = r.status();
                let text = r.text().await.map_err(|e| e.to_string())?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{status}: {text}"))
                }
            });
        }
        match tasks.join_next().await {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => failure = failure.or(Some(e)),
            Some(Err(e)) => failure = failure.or(Some(e.to_string())),
            None => break,
        }
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(format!("a proxied POST failed: {e}")),
    }
}
