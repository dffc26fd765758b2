//! The soak's load: what an application does with the gateway, done the way the docs
//! tell an application to do it (docs/gateway-api.md). The state every task shares,
//! and the readers; the payments are in `payments.rs`, the users' comings and goings in
//! `users.rs`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use serde_json::Value;

use super::payments::{self, Payment};
use super::users::{self, User, UserState};

/// Concurrent payers and readers.
pub(super) const PAYERS: usize = 2;
const READERS: usize = 2;
/// Pauses between one reader's operations: a few requests a second in all, well inside
/// the shortened rate limits (the soak is about faults, not throughput).
const READ_PAUSE: Duration = Duration::from_millis(250);
/// The longest `Retry-After` the client honours as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3);

/// The state every load task shares.
pub struct Soak {
    pub http: reqwest::Client,
    pub gateway: String,
    pub bearer: String,
    pub(super) users: Mutex<Vec<User>>,
    pub(super) payments: Mutex<Vec<Payment>>,
    /// Answers by kind: `"GET accounts 200"`, `"DELETE user 204"`, ...
    pub(super) answers: Mutex<BTreeMap<String, u64>>,
    /// Lifecycle events: connects, reconnects, deletes and their failures.
    pub(super) events: Mutex<BTreeMap<&'static str, u64>>,
    pub(super) stop: AtomicBool,
    pub(super) next_payment: AtomicU64,
    pub(super) next_user: AtomicU64,
    pub(super) in_flight: AtomicU64,
}

impl Soak {
    pub fn new(gateway: String, bearer: String) -> Result<Self, String> {
        // Redirects followed like a browser's (the consent trip); a timeout above the
        // gateway's own bound on a write (request + upstream timeout + 1 s).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            gateway,
            bearer,
            users: Mutex::default(),
            payments: Mutex::default(),
            answers: Mutex::default(),
            events: Mutex::default(),
            stop: AtomicBool::new(false),
            next_payment: AtomicU64::new(1),
            next_user: AtomicU64::new(1),
            in_flight: AtomicU64::new(0),
        })
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn users(&self) -> Vec<User> {
        self.users.lock().map(|u| u.clone()).unwrap_or_default()
    }

    pub fn payments(&self) -> Vec<Payment> {
        self.payments.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn events(&self) -> BTreeMap<&'static str, u64> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Payments being retried right now.
    pub fn payments_in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn count(&self, event: &'static str) {
        if let Ok(mut e) = self.events.lock() {
            *e.entry(event).or_insert(0) += 1;
        }
    }

    pub(super) fn answer(&self, kind: &str, status: u16, code: &str) {
        let key = if code.is_empty() {
            format!("{kind} {status}")
        } else {
            format!("{kind} {status} {code}")
        };
        if let Ok(mut a) = self.answers.lock() {
            *a.entry(key).or_insert(0) += 1;
        }
    }

    pub(super) fn add_user(&self, user: User) {
        if let Ok(mut users) = self.users.lock() {
            users.retain(|u| u.user_ref != user.user_ref);
            users.push(user);
        }
    }

    pub(super) fn set_state(&self, user_ref: &str, state: UserState) {
        if let Ok(mut users) = self.users.lock() {
            for u in users.iter_mut().filter(|u| u.user_ref == user_ref) {
                // A deleted user stays deleted.
                if u.state != UserState::Deleted {
                    u.state = state;
                }
            }
        }
    }

    /// A random connected user that `filter` accepts.
    pub fn pick(&self, filter: impl Fn(&User) -> bool) -> Option<User> {
        let users = self.users.lock().ok()?;
        let candidates: Vec<&User> = users
            .iter()
            .filter(|u| u.state == UserState::Connected && filter(u))
            .collect();
        candidates
            .choose(&mut rand::thread_rng())
            .map(|u| (*u).clone())
    }

    pub(super) fn record(&self, payment: Payment) {
        if let Ok(mut p) = self.payments.lock() {
            p.push(payment);
        }
    }

    /// Sleeps `d`, or less once the soak stops.
    pub(super) async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
    }
}

/// The gateway's error code in an error body (`{"error": "..."}`), "" for bunq's own.
pub(super) fn error_code(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A `Retry-After` in seconds, capped.
pub(super) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The proxied URL of `path` under `user`'s bunq user id.
pub(super) fn bunq_url(soak: &Soak, user: &User, path: &str) -> String {
    format!(
        "{}/v1/users/{}/bunq/user/{}/{path}",
        soak.gateway, user.user_ref, user.bunq_user_id
    )
}

/// Spawns the payers, the readers and the churner; they run until [`Soak::stop`], each
/// finishing what it is doing.
pub fn spawn(soak: &std::sync::Arc<Soak>) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PAYERS {
        let soak = soak.clone();
        tasks.spawn(async move { payments::payer(&soak).await });
    }
    for _ in 0..READERS {
        let soak = soak.clone();
        tasks.spawn(async move { reader(&soak).await });
    }
    let soak = soak.clone();
    tasks.spawn(async move { users::churner(&soak).await });
    tasks
}

/// Reads accounts through the proxy (three in four) and the user's status.
async fn reader(soak: &Soak) {
    while !soak.stopped() {
        let Some(user) = soak.pick(|_| true) else {
            soak.pause(Duration::from_millis(500)).await;
            continue;
        };
        let accounts = rand::thread_rng().gen_bool(0.75);
        let (kind, url) = if accounts {
            (
                "GET accounts",
                bunq_url(soak, &user, "monetary-account-bank"),
            )
        } else {
            (
                "GET user",
                format!("{}/v1/users/{}", soak.gateway, user.user_ref),
            )
        };
        let sent = soak
            .http
            .get(&url)
            .header("Authorization", &soak.bearer)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let code = if status >= 400 {
                    error_code(&text)
                } else {
                    String::new()
                };
                if code == "grant_revoked" {
                    soak.set_state(&user.user_ref, UserState::Revoked);
                }
                soak.answer(kind, status, &code);
            }
            Err(e) if e.is_connect() => soak.answer(kind, 0, "refused"),
            Err(_) => soak.answer(kind, 0, "lost"),
        }
        soak.pause(READ_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_come_from_the_gateways_bodies_only() {
        assert_eq!(
            error_code(r#"{"error":"outcome_unknown","message":"x"}"#),
            "outcome_unknown"
        );
        assert_eq!(error_code(r#"{"Error":[{"error_description":"x"}]}"#), "");
        assert_eq!(error_code("not json"), "");
    }
}
