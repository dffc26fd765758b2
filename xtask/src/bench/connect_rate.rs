//! Item 7: connecting users at bunq's session limit. bunq allows one `session-server`
//! call per 30 s per IP, so one gateway connects at most 2 users a minute; a good one
//! reaches that physical limit under a backlog of consents, with zero 429s from bunq and
//! zero lost consents.
//!
//! bunq's windows are shortened `SCALE` times on both sides (the fake's limits and the
//! gateway's pacer alike), so that "5 minutes" of bunq time take 30 s; rates are
//! reported in bunq time (per bunq minute).

use std::path::Path;
use std::time::{Duration, Instant};

use bunq_testkit::{FakeBunq, FakeConfig};
use serde_json::{Value, json};

use super::gateway::{self, GatewayProcess, call};
use super::report::{Report, Verdict};

/// bunq's windows divided by this.
const SCALE: u32 = 10;
/// bunq's session-server window.
const BUNQ_SESSION_WINDOW: Duration = Duration::from_secs(30);
/// bunq's window of the other limits.
const BUNQ_RATE_WINDOW: Duration = Duration::from_secs(3);
/// Consents arrive at this multiple of the limit, so that a backlog forms.
const ARRIVAL_OVER_LIMIT: f64 = 1.5;

/// Runs the connect-rate measurement for `bunq_minutes` of bunq time.
pub async fn measure(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    bunq_minutes: u32,
) -> Result<(), String> {
    let window = BUNQ_SESSION_WINDOW / SCALE;
    let rate_window = BUNQ_RATE_WINDOW / SCALE;
    let fake = FakeBunq::start_with(FakeConfig {
        rate_limits: true,
        session_server_window: window,
        rate_limit_window: rate_window,
        ..FakeConfig::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let dir = dir.join("connect-rate");
    let own = gateway::own_config(&fake, &dir, "gateway-connect-rate.toml", |table| {
        scale_config(table, window, rate_window);
    })
    .await?;
    let (url, bearer, config) = (own.url, own.bearer, own.path);
    // sandbox-setup's own session took the current window.
    tokio::time::sleep(window).await;
    let gw = GatewayProcess::start(bin, &config, &url, &dir.join("gateway.log")).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;

    let span = window * 2 * bunq_minutes; // bunq minutes, scaled
    let arrivals = (f64::from(2 * bunq_minutes) * ARRIVAL_OVER_LIMIT).ceil() as u32;
    let gap = span / arrivals;
    println!(
        "  {arrivals} consents over {:.0} s ({bunq_minutes} bunq minutes at 1/{SCALE} scale, session window {} ms)",
        span.as_secs_f64(),
        window.as_millis()
    );
    let sessions_before = fake.calls("POST /session-server");
    // sandbox-setup's own calls are not the gateway's.
    let limited_before = fake.rate_limited_calls();
    let started = Instant::now();
    let mut user_refs = Vec::new();
    for i in 0..arrivals {
        let user_ref = format!("bench-rate-{i}");
        gateway::consent(&http, &bearer, &url, &user_ref).await?;
        user_refs.push(user_ref);
        let next = gap * (i + 1);
        tokio::time::sleep(next.saturating_sub(started.elapsed())).await;
    }
    // How many were connected when the span ended: the rate.
    tokio::time::sleep(span.saturating_sub(started.elapsed())).await;
    let users = || user_refs.iter().map(|u| (u.as_str(), url.as_str()));
    let in_span = connected(&http, &bearer, users()).await?;
    // Then every consent must end connected: none lost.
    let deadline = Instant::now() + window * (arrivals + 4);
    let mut all = in_span;
    while all < user_refs.len() && Instant::now() < deadline {
        tokio::time::sleep(window / 2).await;
        all = connected(&http, &bearer, users()).await?;
    }
    let lost = user_refs.len() - all;
    let limited = fake.rate_limited_calls() - limited_before;
    let sessions = fake.calls("POST /session-server") - sessions_before;
    let _ = gw.terminate();
    fake.shutdown().await;

    let per_minute = in_span as f64 / f64::from(bunq_minutes);
    let physical = 2.0;
    report.row(
        "7",
        format!("users connected per bunq minute, {arrivals} consents arriving at {ARRIVAL_OVER_LIMIT}x the limit (windows 1/{SCALE})"),
        format!("{per_minute:.2}/min ({in_span} in {bunq_minutes} min; {sessions} session-server calls)"),
        ">= 1.8/min (limit 2)",
        Verdict::of(per_minute >= 0.9 * physical),
    );
    report.row(
        "7",
        "429s from bunq while connecting; consents lost",
        format!("{limited} 429s; {lost} lost of {}", user_refs.len()),
        "0; 0",
        Verdict::of(limited == 0 && lost == 0),
    );
    report.section(
        "connect_rate",
        json!({
            "scale": SCALE, "bunq_minutes": bunq_minutes, "arrivals": arrivals,
            "connected_in_span": in_span, "per_bunq_minute": per_minute,
            "rate_limited": limited, "lost": lost, "session_server_calls": sessions,
        }),
    );
    Ok(())
}

/// bunq's limits on, both windows scaled, and a callback that answers at once (the
/// connection goes on in the background).
fn scale_config(table: &mut toml::Table, window: Duration, rate_window: Duration) {
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
            ("session_window_ms", ms(window).into()),
            ("rate_limit_window_ms", ms(rate_window).into()),
        ],
    );
    section("oauth", vec![("callback_wait_ms", 0.into())]);
}

/// How many of `users` (each a user_ref and the gateway asked about it) read
/// `connected`.
pub(super) async fn connected<'a>(
    http: &reqwest::Client,
    bearer: &str,
    users: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<usize, String> {
    let mut n = 0;
    for (user_ref, gateway) in users {
        let user: Value = call(
            http,
            bearer,
            reqwest::Method::GET,
            &format!("{gateway}/v1/users/{user_ref}"),
            None,
            200,
        )
        .await?;
        if user["status"] == "connected" {
            n += 1;
        }
    }
    Ok(n)
}
