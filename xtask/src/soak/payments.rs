//! The soak's payments: each sent with its `Idempotency-Key` and retried, as an
//! application must, until an answer settles it; every attempt recorded, so that the
//! checks can hold each answer against what the fake executed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{Value, json};

use super::load::{Soak, bunq_url, error_code, retry_after};
use super::users::{User, UserState};

/// Pauses between one payer's payments (see the readers' pause).
const PAYMENT_PAUSE: Duration = Duration::from_millis(400);
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
/// Where every payment goes: an IBAN outside the fake, so that no account receives it.
const COUNTERPARTY_IBAN: &str = "NL13TEST0123456789";

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

pub(super) async fn payer(soak: &Soak) {
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
}
