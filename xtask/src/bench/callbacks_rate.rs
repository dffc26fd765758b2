//! Item 8: bunq's callbacks through the gateway (issue 16). How many distinct callbacks
//! per second the gateway accepts durably (stored, fsynced, answered 200) from several
//! concurrent senders, and the end-to-end relay latency at 200 events/s, from the POST
//! to the gateway's `/bunq/callbacks/{id}` to the application's webhook receiver.
//!
//! The reference is a plain HTTP echo of the same bodies on the same machine (an
//! in-process server that reads the body and sends it back): what one HTTP exchange of
//! such a body costs here, with nothing stored and nothing relayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bunq_testkit::{FakeBunq, FakeConfig};
use serde_json::{Value, json};

use super::gateway::{self, GatewayProcess, call};
use super::report::{Report, Verdict};

/// Connected users the callbacks are spread over (bunq's callbacks come from many
/// users; the relay keeps each user's events in order, one at a time).
const USERS: usize = 8;
/// Concurrent senders of the throughput runs.
const SENDERS: usize = 8;
/// The fixed rate of the latency runs.
const RATE: u32 = 200;
/// The Standard Webhooks secret of the bench's receiver (not verified there: the
/// receiver only timestamps arrivals).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long the relay may take to drain what the throughput run stored.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// When each event id reached the receiver.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, headers: HeaderMap) -> StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok())
        && let Ok(mut map) = arrivals.lock()
    {
        map.entry(id.to_owned()).or_insert(now);
    }
    StatusCode::NO_CONTENT
}

async fn echo(body: Bytes) -> Bytes {
    body
}

async fn serve(app: Router) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// A distinct, validly shaped NotificationUrl (bunq's retries share a body; these
/// never do).
fn body(target: &str, n: u64) -> String {
    json!({"NotificationUrl": {
        "target_url": target,
        "category": "PAYMENT",
        "event_type": "PAYMENT_CREATED",
        "object": {"Payment": {
            "id": n,
            "monetary_account_id": 1,
            "amount": {"value": "-1.00", "currency": "EUR"},
            "description": "bench callback",
            "type": "BUNQ",
        }},
    }})
    .to_string()
}

/// The outcome of one POST: the gateway's event id when it answered 200.
async fn send(http: &reqwest::Client, url: &str, body: String) -> Option<String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let answer: Value = response.json().await.ok()?;
    (answer["duplicate"] == false)
        .then(|| answer["event_id"].as_str().map(str::to_owned))
        .flatten()
}

/// `SENDERS` loops POSTing distinct bodies to `urls` (round robin) for `span`; returns
/// the 200s per second.
async fn throughput(http: &reqwest::Client, urls: &[String], span: Duration) -> (u64, f64) {
    let next = Arc::new(AtomicU64::new(1));
    let ok = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (http, urls, next, ok) = (http.clone(), urls.to_vec(), next.clone(), ok.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < span {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let url = &urls[usize::try_from(n).unwrap_or(0) % urls.len()];
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body(url, n))
                    .send()
                    .await;
                if let Ok(r) = response
                    && r.status() == 200
                    && r.bytes().await.is_ok()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let n = ok.load(Ordering::Relaxed);
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// p50 and p99 in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99))
}

/// Runs item 8; `span` is the length of each throughput and latency run.
pub async fn measure(
    report: &mut Report,
    bin: &Path,
    dir: &Path,
    span: Duration,
) -> Result<(), String> {
    let arrivals: Arrivals = Arc::default();
    let receiver = serve(
        Router::new()
            .route("/hook", post(receive))
            .with_state(arrivals.clone()),
    )
    .await?;
    let echo_addr = serve(Router::new().route("/echo", post(echo))).await?;

    let fake = FakeBunq::start_with(FakeConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let dir = dir.join("callbacks-rate");
    let own = gateway::own_config(&fake, &dir, "gateway-callbacks.toml", |table| {
        let mut callbacks = toml::Table::new();
        callbacks.insert(
            "webhook_urls".into(),
            vec![toml::Value::from(format!("http://{receiver}/hook"))].into(),
        );
        callbacks.insert("webhook_secret".into(), SECRET.into());
        // Nothing subscribed at the fake: the bench sends the callbacks itself.
        callbacks.insert("categories".into(), toml::Value::Array(Vec::new()));
        table.insert("callbacks".into(), callbacks.into());
    })
    .await?;
    let (url, bearer, config) = (own.url, own.bearer, own.path);
    let gw = GatewayProcess::start(bin, &config, &url, &dir.join("gateway.log")).await?;
    let outcome = run(report, &gw, &bearer, &url, echo_addr, &arrivals, span).await;
    let _ = gw.terminate();
    fake.shutdown().await;
    outcome
}

async fn run(
    report: &mut Report,
    _gw: &GatewayProcess,
    bearer: &str,
    url: &str,
    echo_addr: SocketAddr,
    arrivals: &Arrivals,
    span: Duration,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    for i in 0..USERS {
        let user_ref = format!("bench-cb-{i}");
        gateway::connect_user(&http, bearer, url, &user_ref).await?;
        let subscriptions = call(
            &http,
            bearer,
            reqwest::Method::GET,
            &format!("{url}/v1/users/{user_ref}/callbacks"),
            None,
            200,
        )
        .await?;
        let target = subscriptions["callback_url"]
            .as_str()
            .ok_or("no callback_url")?
            .to_owned();
        targets.push(target);
    }
    // The relay delivers the users' user.connected first.
    let settle = Instant::now() + Duration::from_secs(10);
    while arrivals.lock().map(|m| m.len()).unwrap_or(0) < USERS && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relayed_before = arrivals.lock().map(|m| m.len()).unwrap_or(0);

    // Throughput: the gateway, then the echo with the same bodies and senders.
    let (accepted, per_second) = throughput(&http, &targets, span).await;
    let echo_url = vec![format!("http://{echo_addr}/echo")];
    let (_, echo_per_second) = throughput(&http, &echo_url, span).await;
    println!(
        "  {accepted} callbacks accepted in {:.1} s by {SENDERS} senders over {USERS} users",
        span.as_secs_f64()
    );
    report.row(
        "8",
        format!("bunq callbacks accepted durably per second ({SENDERS} senders, distinct bodies)"),
        format!(
            "{per_second:.0}/s (plain HTTP echo of the same bodies: {echo_per_second:.0}/s, {:.0}%)",
            100.0 * per_second / echo_per_second
        ),
        ">= 2000/s",
        Verdict::of(per_second >= 2000.0),
    );

    // The relay drains what was stored (all must arrive: none lost).
    let want = relayed_before + usize::try_from(accepted).unwrap_or(usize::MAX);
    let drain_start = Instant::now();
    let mut drained = arrivals.lock().map(|m| m.len()).unwrap_or(0);
    while drained < want && drain_start.elapsed() < DRAIN_LIMIT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drained = arrivals.lock().map(|m| m.len()).unwrap_or(0);
    }
    let drain = drain_start.elapsed();
    report.row(
        "8",
        "relay backlog of the throughput run drained (context)",
        format!(
            "{} of {} events in {:.1} s after the run",
            drained - relayed_before,
            accepted,
            drain.as_secs_f64()
        ),
        "",
        Verdict::Info,
    );

    // Latency at RATE events/s: send instant per event id, arrival per webhook-id.
    let sends: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let echo_rtts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let count = u64::from(RATE) * span.as_secs().max(1);
    let gap = Duration::from_secs(1) / RATE;
    let mut tick = tokio::time::interval(gap);
    let mut tasks = Vec::new();
    let base = 1_000_000_000u64;
    for n in 0..count {
        tick.tick().await;
        let (http, sends) = (http.clone(), sends.clone());
        let target = targets[usize::try_from(n).unwrap_or(0) % targets.len()].clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            if let Some(id) = send(&http, &target, body(&target, base + n)).await
                && let Ok(mut s) = sends.lock()
            {
                s.push((id, sent));
            }
        }));
    }
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    let sent: Vec<(String, Instant)> = sends.lock().map(|s| s.clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = arrivals
            .lock()
            .map(|m| sent.iter().all(|(id, _)| m.contains_key(id)))
            .unwrap_or(false);
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (latencies, missing) = {
        let map = arrivals.lock().map_err(|_| "receiver poisoned")?;
        let mut latencies = Vec::new();
        let mut missing = 0;
        for (id, at) in &sent {
            match map.get(id) {
                Some(got) => latencies.push(got.saturating_duration_since(*at)),
                None => missing += 1,
            }
        }
        (latencies, missing)
    };
    let (p50, p99) = percentiles(latencies);

    // The echo's round trip at the same rate.
    let echo_target = echo_url[0].clone();
    let mut tick = tokio::time::interval(gap);
    for n in 0..count {
        tick.tick().await;
        let (http, rtts, target) = (http.clone(), echo_rtts.clone(), echo_target.clone());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = http
                .post(&target)
                .body(body(&target, n))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok && let Ok(mut r) = rtts.lock() {
                r.push(sent.elapsed());
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let (echo_p50, echo_p99) = percentiles(echo_rtts.lock().map(|r| r.clone()).unwrap_or_default());
    report.row(
        "8",
        format!("relay latency, callback POST to webhook receipt, at {RATE} events/s"),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms over {} events{} (echo round trip: p50 {echo_p50:.2} ms, p99 {echo_p99:.2} ms)",
            sent.len(),
            if missing > 0 {
                format!(", {missing} not arrived within 30 s")
            } else {
                String::new()
            }
        ),
        "p99 <= 50 ms",
        Verdict::of(missing == 0 && p99 <= 50.0),
    );
    report.section(
        "callbacks",
        json!({
            "users": USERS, "senders": SENDERS, "span_seconds": span.as_secs_f64(),
            "accepted": accepted, "accepted_per_second": per_second,
            "echo_per_second": echo_per_second,
            "drained": drained - relayed_before, "drain_seconds": drain.as_secs_f64(),
            "latency_rate": RATE, "latency_events": sent.len(), "latency_missing": missing,
            "relay_p50_ms": p50, "relay_p99_ms": p99,
            "echo_p50_ms": echo_p50, "echo_p99_ms": echo_p99,
        }),
    );
    Ok(())
}
