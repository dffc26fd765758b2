//! The soak's load: what an application does with the gateway, done the way the docs
//! tell an application to do it. Users connect through the real OAuth redirects (and
//! come back after a revocation as the same bunq person), read their accounts, pay with
//! an `Idempotency-Key` retried until a definitive answer, and leave (`DELETE`).
//!
//! Every payment's attempts are recorded, so that the checks can hold each answer
//! against what the fake executed.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::seq::SliceRandom as _;
use serde_json::{Value, json};

use crate::gateway_process::call;

/// Steady users: connected at the start, paid from all along (and reconnected when
/// their grant is revoked).
pub const STEADY_USERS: usize = 3;
/// Churn users come and go beside them: at most this many at once.
const MAX_CHURN_USERS: usize = 2;
/// Concurrent payers and readers.
const PAYERS: usize = 2;
const READERS: usize = 2;
/// Pauses between one worker's operations: a few requests a second in all, well inside
/// the shortened rate limits (the soak is about faults, not throughput).
const PAYMENT_PAUSE: Duration = Duration::from_millis(400);
const READ_PAUSE: Duration = Duration::from_millis(250);
const CHURN_EVERY: Duration = Duration::from_secs(6);
/// How long one payment is retried before the payer moves on (it stays unresolved).
pub const PAYMENT_BUDGET: Duration = Duration::from_secs(90);
/// A payer's patience with one attempt, as a mobile app's: shorter than a slow
/// answer (latency spikes, the session-server queue), so that some answers are lost
/// while the gateway finishes the payment, and the retry meets the record.
const PAYMENT_TIMEOUT: Duration = Duration::from_secs(4);
/// The share of acknowledged payments sent once more with their key.
const RESEND_SHARE: f64 = 0.1;
/// Answered attempts per payment within the budget.
const MAX_ANSWERED_ATTEMPTS: usize = 15;
/// The longest `Retry-After` the client honours as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3);
/// A connect is retried this often (faults hit the consent page and the token exchange).
const CONNECT_ATTEMPTS: usize = 8;
/// How long a consent may take to connect (its turn at session-server included).
const CONNECT_WAIT: Duration = Duration::from_secs(60);
/// Where every payment goes: an IBAN outside the fake, so that no account receives it.
const COUNTERPARTY_IBAN: &str = "NL13TEST0123456789";

/// One end user as the application knows it.
#[derive(Clone, Debug)]
pub struct User {
    pub user_ref: String,
    /// Paid from; never deleted.
    pub steady: bool,
    /// The id in bunq paths (a new one per consent).
    pub bunq_user_id: u64,
    /// The bunq person behind the connection (the same across consents).
    pub person: u64,
    pub account_id: u64,
    pub state: UserState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserState {
    Connected,
    /// bunq refused the grant; the churner reconnects the user.
    Revoked,
    Deleted,
}

/// One attempt of a payment, as the client saw it.
#[derive(Clone, Debug)]
pub enum Attempt {
    /// An answer: status, the gateway's error code ("" for bunq's own bodies), whether
    /// it was a replay.
    Answer(u16, String, bool),
    /// No connection (the gateway was down): nothing was sent.
    Refused,
    /// Sent, answer lost (client timeout, connection cut).
    Lost,
}

impl Attempt {
    /// Whether this attempt's answer says that nothing of it executed: no connection,
    /// bunq's refusal of a dead session, or one of the gateway's "nothing was sent"
    /// answers (docs/gateway-api.md).
    fn sent_nothing(&self) -> bool {
        match self {
            Attempt::Refused => true,
            Attempt::Lost => false,
            Attempt::Answer(status, code, _) => match (*status, code.as_str()) {
                (401 | 404 | 429, _) => true,
                (409, c) => matches!(
                    c,
                    "grant_revoked" | "user_connecting" | "grant_failed" | "request_in_progress"
                ),
                (503, "session_capacity") | (502, "upstream_unreachable") => true,
                _ => false,
            },
        }
    }

    /// `502 outcome_unknown`, `refused`, `lost`: for the payment lines of the report.
    pub fn label(&self) -> String {
        match self {
            Attempt::Refused => "refused".into(),
            Attempt::Lost => "lost".into(),
            Attempt::Answer(s, c, replayed) => {
                let mut l = s.to_string();
                if !c.is_empty() {
                    l.push(' ');
                    l.push_str(c);
                }
                if *replayed {
                    l.push_str(" (replay)");
                }
                l
            }
        }
    }
}

/// What became of a payment in the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx (first answer or replay): it must exist exactly once.
    Acknowledged { replayed: bool },
    /// `409 already_submitted`: an earlier attempt reached bunq: exactly once.
    AlreadySubmitted,
    /// A definitive refusal (bunq's 4xx, the gateway's 422): it must not exist.
    Rejected(u16),
    /// Every attempt answered that nothing was sent: it must not exist.
    NeverSent,
    /// No definitive answer within the budget: it may exist, at most once.
    Unresolved,
}

/// One logical payment: description and `Idempotency-Key` `soak-<n>`.
#[derive(Clone, Debug)]
pub struct Payment {
    pub n: u64,
    pub user_ref: String,
    /// The proxied URL it was sent to (the same for every attempt).
    pub url: String,
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
    /// Settled by the retry after the faults stopped.
    pub settled_late: bool,
    /// Acknowledged, then sent once more with its key (an application that lost track
    /// of the answer): whether that answer was the stored one, replayed.
    pub resent: Option<bool>,
}

impl Payment {
    pub fn key(&self) -> String {
        format!("soak-{}", self.n)
    }
}

/// The state every load task shares.
pub struct Soak {
    pub http: reqwest::Client,
    pub gateway: String,
    pub bearer: String,
    users: Mutex<Vec<User>>,
    payments: Mutex<Vec<Payment>>,
    /// Answers by kind: `"GET accounts 200"`, `"DELETE user 204"`, ...
    answers: Mutex<BTreeMap<String, u64>>,
    /// Lifecycle events: connects, reconnects, deletes and their failures.
    events: Mutex<BTreeMap<&'static str, u64>>,
    stop: AtomicBool,
    next_payment: AtomicU64,
    next_user: AtomicU64,
    in_flight: AtomicU64,
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

    fn stopped(&self) -> bool {
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

    fn count(&self, event: &'static str) {
        if let Ok(mut e) = self.events.lock() {
            *e.entry(event).or_insert(0) += 1;
        }
    }

    fn answer(&self, kind: &str, status: u16, code: &str) {
        let key = if code.is_empty() {
            format!("{kind} {status}")
        } else {
            format!("{kind} {status} {code}")
        };
        if let Ok(mut a) = self.answers.lock() {
            *a.entry(key).or_insert(0) += 1;
        }
    }

    fn add_user(&self, user: User) {
        if let Ok(mut users) = self.users.lock() {
            users.retain(|u| u.user_ref != user.user_ref);
            users.push(user);
        }
    }

    fn set_state(&self, user_ref: &str, state: UserState) {
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

    fn record(&self, payment: Payment) {
        if let Ok(mut p) = self.payments.lock() {
            p.push(payment);
        }
    }

    /// Sleeps `d`, or less once the soak stops.
    async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
    }
}

/// The gateway's error code in an error body (`{"error": "..."}`), "" for bunq's own.
fn error_code(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A `Retry-After` in seconds, capped.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// The proxied URL of `path` under `user`'s bunq user id.
fn bunq_url(soak: &Soak, user: &User, path: &str) -> String {
    format!(
        "{}/v1/users/{}/bunq/user/{}/{path}",
        soak.gateway, user.user_ref, user.bunq_user_id
    )
}

/// The payment body of payment `n`.
fn payment_body(n: u64) -> Value {
    json!({
        "amount": {"value": "0.01", "currency": "EUR"},
        "counterparty_alias": {"type": "IBAN", "value": COUNTERPARTY_IBAN, "name": "Soak Counterparty"},
        "description": format!("soak-{n}"),
    })
}

/// Pays payment `n` from `user`, retrying with the same key until a definitive answer
/// or the budget is spent.
async fn pay(soak: &Soak, user: &User, n: u64) -> Payment {
    let mut payment = Payment {
        n,
        user_ref: user.user_ref.clone(),
        url: bunq_url(
            soak,
            user,
            &format!("monetary-account/{}/payment", user.account_id),
        ),
        attempts: Vec::new(),
        outcome: Outcome::Unresolved,
        settled_late: false,
        resent: None,
    };
    soak.in_flight.fetch_add(1, Ordering::Relaxed);
    drive(soak, &mut payment, PAYMENT_BUDGET).await;
    let resend = rand::thread_rng().gen_bool(RESEND_SHARE);
    if resend && payment.outcome == (Outcome::Acknowledged { replayed: false }) {
        let mut again = payment.clone();
        drive(soak, &mut again, PAYMENT_BUDGET).await;
        payment.resent = Some(again.outcome == Outcome::Acknowledged { replayed: true });
        payment.attempts = again.attempts;
    }
    soak.in_flight.fetch_sub(1, Ordering::Relaxed);
    payment
}

/// Sends `payment` again and again with its key until an answer settles it, as a real
/// application would: a lost answer, an outage or a dead session is retried with the
/// same key (after `Retry-After`); a revoked or deleted user ends the attempts.
async fn drive(soak: &Soak, payment: &mut Payment, budget: Duration) {
    let started = Instant::now();
    let body = payment_body(payment.n);
    let key = payment.key();
    let mut answered = 0;
    while started.elapsed() < budget && answered < MAX_ANSWERED_ATTEMPTS {
        let sent = soak
            .http
            .post(&payment.url)
            .header("Authorization", &soak.bearer)
            .header("Idempotency-Key", &key)
            .json(&body)
            .timeout(PAYMENT_TIMEOUT)
            .send()
            .await;
        let response = match sent {
            Err(e) if e.is_connect() => {
                payment.attempts.push(Attempt::Refused);
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(_) => {
                payment.attempts.push(Attempt::Lost);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Ok(r) => r,
        };
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let wait = retry_after(&response);
        let Ok(text) = response.text().await else {
            payment.attempts.push(Attempt::Lost);
            answered += 1;
            continue;
        };
        answered += 1;
        let code = error_code(&text);
        soak.answer("POST payment", status, &code);
        payment
            .attempts
            .push(Attempt::Answer(status, code.clone(), replayed));
        let pause = match (status, code.as_str()) {
            (200..=299, _) => {
                payment.outcome = Outcome::Acknowledged { replayed };
                return;
            }
            (409, "already_submitted") => {
                payment.outcome = Outcome::AlreadySubmitted;
                return;
            }
            (409, "grant_revoked" | "grant_failed") | (404, _) => {
                // The user must consent again (a new bunq user id, so another request):
                // this payment ends here, whatever its earlier attempts did.
                if code == "grant_revoked" {
                    soak.set_state(&payment.user_ref, UserState::Revoked);
                }
                break;
            }
            (409, _) | (401 | 429 | 500..=599, _) => wait.unwrap_or(Duration::from_millis(500)),
            _ => {
                payment.outcome = Outcome::Rejected(status);
                return;
            }
        };
        tokio::time::sleep(pause.max(Duration::from_millis(200))).await;
    }
    payment.outcome = if payment.attempts.iter().all(Attempt::sent_nothing) {
        Outcome::NeverSent
    } else {
        Outcome::Unresolved
    };
}

/// After the faults stopped: every unresolved payment whose user still has the same
/// bunq user id is retried once more with its key, as the application's reconciliation
/// would. Returns how many it settled.
pub async fn settle_unresolved(soak: &Soak) -> usize {
    let users = soak.users();
    let mut payments = soak.payments();
    let mut settled = 0;
    for payment in payments
        .iter_mut()
        .filter(|p| p.outcome == Outcome::Unresolved)
    {
        let same_path = users.iter().any(|u| {
            u.state == UserState::Connected
                && u.user_ref == payment.user_ref
                && payment.url
                    == bunq_url(
                        soak,
                        u,
                        &format!("monetary-account/{}/payment", u.account_id),
                    )
        });
        if !same_path {
            continue;
        }
        drive(soak, payment, Duration::from_secs(30)).await;
        if payment.outcome != Outcome::Unresolved {
            payment.settled_late = true;
            settled += 1;
        }
    }
    if let Ok(mut p) = soak.payments.lock() {
        *p = payments;
    }
    settled
}

/// Spawns the payers, the readers and the churner; they run until [`Soak::stop`], each
/// finishing what it is doing.
pub fn spawn(soak: &std::sync::Arc<Soak>) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PAYERS {
        let soak = soak.clone();
        tasks.spawn(async move { payer(&soak).await });
    }
    for _ in 0..READERS {
        let soak = soak.clone();
        tasks.spawn(async move { reader(&soak).await });
    }
    let soak = soak.clone();
    tasks.spawn(async move { churner(&soak).await });
    tasks
}

async fn payer(soak: &Soak) {
    while !soak.stopped() {
        let Some(user) = soak.pick(|u| u.steady) else {
            soak.pause(Duration::from_millis(500)).await;
            continue;
        };
        let n = soak.next_payment.fetch_add(1, Ordering::Relaxed);
        let payment = pay(soak, &user, n).await;
        soak.record(payment);
        soak.pause(PAYMENT_PAUSE).await;
    }
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

/// Every few seconds: reconnects the users bunq revoked (as the same bunq person), then
/// connects a new churn user or deletes the oldest, in turn.
async fn churner(soak: &Soak) {
    while !soak.stopped() {
        soak.pause(CHURN_EVERY).await;
        if soak.stopped() {
            break;
        }
        for user in soak.users() {
            if user.state == UserState::Connected
                && status_of(soak, &user.user_ref).await.as_deref() == Some("revoked")
            {
                soak.set_state(&user.user_ref, UserState::Revoked);
            }
        }
        for user in soak
            .users()
            .into_iter()
            .filter(|u| u.state == UserState::Revoked)
        {
            match connect(soak, &user.user_ref, Some(user.person), user.steady).await {
                Ok(again) => {
                    soak.count("reconnected after a revocation");
                    soak.add_user(again);
                }
                Err(e) => {
                    soak.count("reconnects failed");
                    println!("  reconnect of {} failed: {e}", user.user_ref);
                }
            }
        }
        let churn: Vec<User> = soak
            .users()
            .into_iter()
            .filter(|u| !u.steady && u.state != UserState::Deleted)
            .collect();
        if churn.len() < MAX_CHURN_USERS {
            let n = soak.next_user.fetch_add(1, Ordering::Relaxed);
            let user_ref = format!("soak-churn-{n}");
            match connect(soak, &user_ref, None, false).await {
                Ok(user) => {
                    soak.count("connected");
                    soak.add_user(user);
                }
                Err(e) => {
                    soak.count("connects failed");
                    println!("  connect of {user_ref} failed: {e}");
                }
            }
        } else if let Some(oldest) = churn.first() {
            soak.set_state(&oldest.user_ref, UserState::Deleted);
            if delete(soak, &oldest.user_ref).await {
                soak.count("deleted");
            } else {
                soak.count("deletes failed");
            }
        }
    }
}

/// The user's status at the gateway, if it answers.
async fn status_of(soak: &Soak, user_ref: &str) -> Option<String> {
    let user = call(
        &soak.http,
        &soak.bearer,
        reqwest::Method::GET,
        &format!("{}/v1/users/{user_ref}", soak.gateway),
        None,
        200,
    )
    .await
    .ok()?;
    user["status"].as_str().map(str::to_owned)
}

/// `DELETE /v1/users/{user_ref}` until 204 (bounded).
async fn delete(soak: &Soak, user_ref: &str) -> bool {
    let url = format!("{}/v1/users/{user_ref}", soak.gateway);
    for _ in 0..8 {
        let sent = soak
            .http
            .delete(&url)
            .header("Authorization", &soak.bearer)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let code = error_code(&r.text().await.unwrap_or_default());
                soak.answer("DELETE user", status, &code);
                if status == 204 {
                    return true;
                }
            }
            Err(_) => soak.answer("DELETE user", 0, "lost"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Connects `user_ref` through the consent flow, retried: a fresh bunq person (topped
/// up with 500.00) or, after a revocation, `person` again.
pub async fn connect(
    soak: &Soak,
    user_ref: &str,
    person: Option<u64>,
    steady: bool,
) -> Result<User, String> {
    let mut last = String::new();
    let mut consented = None;
    for _ in 0..CONNECT_ATTEMPTS {
        match consent(soak, user_ref, person).await {
            Ok(ids) => {
                consented = Some(ids);
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (bunq_user_id, granted_by) = consented.ok_or(last)?;
    let mut user = User {
        user_ref: user_ref.to_owned(),
        steady,
        bunq_user_id,
        person: granted_by,
        account_id: 0,
        state: UserState::Connected,
    };
    let mut last = String::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let accounts = call(
            &soak.http,
            &soak.bearer,
            reqwest::Method::GET,
            &bunq_url(soak, &user, "monetary-account-bank"),
            None,
            200,
        )
        .await;
        match accounts.map(|a| {
            a.pointer("/Response/0/MonetaryAccountBank/id")
                .and_then(Value::as_u64)
        }) {
            Ok(Some(id)) => {
                user.account_id = id;
                break;
            }
            Ok(None) => last = "no account listed".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if user.account_id == 0 {
        return Err(format!("accounts of {user_ref}: {last}"));
    }
    if person.is_none() {
        top_up(soak, &user).await?;
    }
    Ok(user)
}

/// One trip through the consent flow until the gateway reads `connected`: the bunq user
/// id and the person behind it.
async fn consent(soak: &Soak, user_ref: &str, person: Option<u64>) -> Result<(u64, u64), String> {
    let gateway = &soak.gateway;
    // A fresh person replaces whatever an earlier, seemingly failed attempt connected
    // (else the gateway would refuse the new identity); a returning one is the same.
    let body = call(
        &soak.http,
        &soak.bearer,
        reqwest::Method::POST,
        &format!("{gateway}/v1/authorizations"),
        Some(json!({ "user_ref": user_ref, "replace": person.is_none() })),
        201,
    )
    .await?;
    let mut url = body["authorization_url"]
        .as_str()
        .ok_or("no authorization_url")?
        .to_owned();
    // The fake's test hook: consent as this bunq person (bunq's page would ask them to
    // log in), so that the gateway sees the same identity come back.
    if let Some(person) = person {
        url.push_str(&format!("&user_id={person}"));
    }
    let response = soak
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("consent ended with {status}: {text}"));
    }
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        let user = call(
            &soak.http,
            &soak.bearer,
            reqwest::Method::GET,
            &format!("{gateway}/v1/users/{user_ref}"),
            None,
            200,
        )
        .await?;
        let pending = user["pending_consents"].as_u64().unwrap_or(0);
        match user["status"].as_str() {
            Some("connected") if pending == 0 => {
                let id = user["bunq_user_id"].as_u64().ok_or("no bunq_user_id")?;
                let person = user["granted_by_user_id"]
                    .as_u64()
                    .ok_or("no granted_by_user_id")?;
                return Ok((id, person));
            }
            Some(status) if pending > 0 || status == "connecting" => {}
            other => return Err(format!("consent ended {other:?}: {user}")),
        }
        if Instant::now() > deadline {
            return Err(format!("not connected within {CONNECT_WAIT:?}: {user}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// 500.00 from the sugar daddy through the gateway, under an `Idempotency-Key`.
async fn top_up(soak: &Soak, user: &User) -> Result<(), String> {
    let url = bunq_url(
        soak,
        user,
        &format!("monetary-account/{}/request-inquiry", user.account_id),
    );
    let body = json!({
        "amount_inquired": {"value": "500.00", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com", "name": "Sugar Daddy"},
        "description": "soak top-up",
        "allow_bunqme": false,
    });
    let key = format!("top-up-{}-{}", user.user_ref, user.bunq_user_id);
    let mut last = String::new();
    for _ in 0..10 {
        let sent = soak
            .http
            .post(&url)
            .header("Authorization", &soak.bearer)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if status == 200 || error_code(&text) == "already_submitted" {
                    return Ok(());
                }
                last = format!("{status}: {text}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Err(format!("top-up of {} failed: {last}", user.user_ref))
}

/// Connects the steady users one by one (each takes a session-server window).
pub async fn connect_steady(soak: &Soak) -> Result<(), String> {
    for i in 1..=STEADY_USERS {
        let user = connect(soak, &format!("soak-steady-{i}"), None, true).await?;
        println!(
            "  soak-steady-{i}: bunq person {}, account {}",
            user.person, user.account_id
        );
        soak.count("connected");
        soak.add_user(user);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Attempt {
        Attempt::Answer(status, code.into(), false)
    }

    #[test]
    fn only_the_documented_not_sent_answers_count_as_nothing_sent() {
        for a in [
            Attempt::Refused,
            answer(409, "grant_revoked"),
            answer(503, "session_capacity"),
            answer(502, "upstream_unreachable"),
            answer(429, "rate_limited"),
            answer(401, ""),
        ] {
            assert!(a.sent_nothing(), "{a:?}");
        }
        for a in [
            Attempt::Lost,
            answer(502, "outcome_unknown"),
            answer(502, "bad_signature"),
            answer(503, "bunq_unavailable"),
            answer(504, "upstream_timeout"),
            answer(500, ""),
        ] {
            assert!(!a.sent_nothing(), "{a:?}");
        }
    }

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
