//! Knobs that make the fake misbehave on purpose, and bunq's rate limits.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::Shared;

/// The knobs' current values; lock-free except for the pairs that must change together.
pub(crate) struct KnobState {
    session_timeout: Mutex<Duration>,
    fail_auth: AtomicU32,
    tamper: AtomicU32,
    latency_nanos: AtomicU64,
    fail_status: Mutex<FailStatus>,
    deny_consent: AtomicBool,
    rate_limits: AtomicBool,
    cut_after: AtomicU32,
    delay_after: Mutex<(Duration, u32)>,
}

/// The `fail_next_with_status` knob: answer `status` (with `Retry-After: retry_after`
/// seconds if set) to the next `n` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FailStatus {
    status: u16,
    n: u32,
    retry_after: Option<u64>,
}

/// Decrements `counter` if positive; true when it did (this call is one of the next n).
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl KnobState {
    pub fn new(session_timeout: Duration, rate_limits: bool) -> Self {
        Self {
            session_timeout: Mutex::new(session_timeout),
            fail_auth: AtomicU32::new(0),
            tamper: AtomicU32::new(0),
            latency_nanos: AtomicU64::new(0),
            fail_status: Mutex::new(FailStatus::default()),
            deny_consent: AtomicBool::new(false),
            rate_limits: AtomicBool::new(rate_limits),
            cut_after: AtomicU32::new(0),
            delay_after: Mutex::new((Duration::ZERO, 0)),
        }
    }

    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
            .lock()
            .map(|d| *d)
            .unwrap_or(Duration::from_secs(3600))
    }

    pub fn take_tamper(&self) -> bool {
        take_one(&self.tamper)
    }

    pub fn take_fail_auth(&self) -> bool {
        take_one(&self.fail_auth)
    }

    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    /// The status (and `Retry-After` seconds) to fail this call with, if the knob is
    /// armed.
    pub fn take_fail_status(&self) -> Option<(u16, Option<u64>)> {
        let mut guard = self.fail_status.lock().ok()?;
        let n = guard.n.checked_sub(1)?;
        guard.n = n;
        Some((guard.status, guard.retry_after))
    }

    /// True when this executed call's connection must be cut instead of answered.
    pub fn take_cut_after(&self) -> bool {
        take_one(&self.cut_after)
    }

    /// How long to wait after executing this call before answering, if the knob is armed.
    pub fn take_delay_after(&self) -> Option<Duration> {
        let mut guard = self.delay_after.lock().ok()?;
        let n = guard.1.checked_sub(1)?;
        guard.1 = n;
        Some(guard.0)
    }

    pub fn consent_denied(&self) -> bool {
        self.deny_consent.load(Ordering::Relaxed)
    }

    pub fn rate_limits_on(&self) -> bool {
        self.rate_limits.load(Ordering::Relaxed)
    }
}

/// A cheap handle on the running fake's knobs. Every knob takes effect on the next
/// request; none needs a restart.
#[derive(Clone)]
pub struct Knobs(pub(crate) Arc<Shared>);

impl std::fmt::Debug for Knobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knobs").finish_non_exhaustive()
    }
}

impl Knobs {
    /// The `session_timeout` reported in user objects of sessions created from now on,
    /// and their lifetime. Existing sessions keep theirs.
    pub fn set_session_timeout(&self, d: Duration) {
        if let Ok(mut t) = self.0.knobs.session_timeout.lock() {
            *t = d;
        }
    }

    /// Ends every current session: their tokens now get 401 "Insufficient authorisation.".
    pub fn expire_all_sessions(&self) {
        if let Ok(mut world) = self.0.world.lock() {
            world.sessions.clear();
        }
    }

    /// The next `n` session-authenticated API calls (not installation, device-server,
    /// session-server or sandbox-user-person) get 401 "Insufficient authorisation."
    /// without executing, as when bunq drops a session early.
    pub fn fail_next_with_insufficient_authorisation(&self, n: u32) {
        self.0.knobs.fail_auth.store(n, Ordering::Release);
    }

    /// The next `n` signed responses carry a wrong `X-Bunq-Server-Signature` (429, 491
    /// and 5xx answers carry none and do not count).
    pub fn tamper_next_signatures(&self, n: u32) {
        self.0.knobs.tamper.store(n, Ordering::Release);
    }

    /// Delays every request (API, OAuth) by `d` before it is handled.
    pub fn set_latency(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.knobs.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The next `n` calls (API, consent page and OAuth token endpoint) answer `status`
    /// with a bunq error body, without executing. Like bunq, 429, 491 (maintenance) and
    /// 5xx answers are not signed; other statuses are. A status that is not a valid
    /// HTTP status (outside 100..=999) is answered as 500.
    pub fn fail_next_with_status(&self, status: u16, n: u32) {
        self.set_fail_status(FailStatus {
            status,
            n,
            retry_after: None,
        });
    }

    /// Like [`Knobs::fail_next_with_status`], with a `Retry-After: retry_after_secs`
    /// header on those answers, as a server under load or in maintenance may send.
    pub fn fail_next_with_status_and_retry_after(
        &self,
        status: u16,
        n: u32,
        retry_after_secs: u64,
    ) {
        self.set_fail_status(FailStatus {
            status,
            n,
            retry_after: Some(retry_after_secs),
        });
    }

    fn set_fail_status(&self, f: FailStatus) {
        if let Ok(mut current) = self.0.knobs.fail_status.lock() {
            *current = f;
        }
    }

    /// Revokes every OAuth access token that bunq user `granted_by_user_id` granted, as
    /// bunq does when the user withdraws access in the app; returns how many were still
    /// live. Device-server and session-server with a revoked token (or from an
    /// installation whose device was registered with one) then answer 400 "User
    /// credentials are incorrect. Incorrect API key or IP address.", and the sessions
    /// opened with them end (401 "Insufficient authorisation."). A later consent gives a
    /// new token that works.
    ///
    /// Each revoked grant's `OAUTH` notification filters get an `OAUTH_REVOKED` callback
    /// (object `{"OauthGrant": {"id", "status": "REVOKED", "granted_by_user_id"}}`).
    pub fn revoke_oauth_grants(&self, granted_by_user_id: u64) -> usize {
        let revoked = self.0.world().revoke_grants(granted_by_user_id);
        let mut ids: Vec<u64> = revoked.iter().copied().collect();
        ids.sort_unstable();
        let events: Vec<crate::notify::Event> = ids
            .iter()
            .map(|&g| crate::notify::Event {
                owner: granted_by_user_id,
                account: None,
                only: Some(crate::world::Subject::ApiKey(g)),
                category: "OAUTH",
                event_type: "OAUTH_REVOKED",
                object: serde_json::json!({"OauthGrant": {
                    "id": g,
                    "status": "REVOKED",
                    "granted_by_user_id": granted_by_user_id,
                }}),
            })
            .collect();
        crate::notify::emit(&self.0, &events);
        ids.len()
    }

    /// The next `n` session-authenticated non-GET calls (POST, PUT, PATCH, DELETE) that
    /// reach their handler execute (a payment is made, balances change, the request id is
    /// remembered), then the connection closes without a single response byte: the
    /// client sees the connection closed before any status line. Calls refused before
    /// executing (authentication, fault knobs, a reused request id) do not count.
    pub fn cut_after_execute(&self, n: u32) {
        self.0.knobs.cut_after.store(n, Ordering::Release);
    }

    /// The next `n` session-authenticated non-GET calls that reach their handler execute,
    /// then wait `delay` before answering normally (a slow answer after the fact, for
    /// client timeouts). Counted like [`Knobs::cut_after_execute`], which wins when both
    /// are armed.
    pub fn delay_after_execute(&self, delay: Duration, n: u32) {
        if let Ok(mut d) = self.0.knobs.delay_after.lock() {
            *d = (delay, n);
        }
    }

    /// While on, `GET /auth` redirects with `error=access_denied` instead of a code.
    pub fn deny_consent(&self, deny: bool) {
        self.0.knobs.deny_consent.store(deny, Ordering::Relaxed);
    }

    /// Switches bunq's rate limits on or off.
    pub fn set_rate_limits(&self, on: bool) {
        self.0.knobs.rate_limits.store(on, Ordering::Relaxed);
    }
}

/// Sliding-window rate limits per client IP and endpoint, as bunq counts them.
#[derive(Default)]
pub(crate) struct RateLimiter {
    seen: HashMap<(IpAddr, &'static str), VecDeque<Instant>>,
}

impl RateLimiter {
    /// Records a request if it is within `limit` per `window`; false when over.
    pub fn admit(
        &mut self,
        ip: IpAddr,
        endpoint: &'static str,
        limit: usize,
        window: Duration,
    ) -> bool {
        let now = Instant::now();
        let log = self.seen.entry((ip, endpoint)).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            log.pop_front();
        }
        if log.len() >= limit {
            return false;
        }
        log.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refuses_over_the_limit_and_forgets_after_the_window() {
        let mut limiter = RateLimiter::default();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let window = Duration::from_millis(50);
        for _ in 0..3 {
            assert!(limiter.admit(ip, "GET /user", 3, window));
        }
        assert!(!limiter.admit(ip, "GET /user", 3, window));
        assert!(limiter.admit(ip, "GET /user/{id}", 3, window));
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.admit(ip, "GET /user", 3, window));
    }

    #[test]
    fn counters_count_down_to_zero() {
        let k = KnobState::new(Duration::from_secs(1), false);
        k.tamper.store(2, Ordering::Release);
        assert!(k.take_tamper());
        assert!(k.take_tamper());
        assert!(!k.take_tamper());
        *k.fail_status.lock().unwrap() = FailStatus {
            status: 503,
            n: 1,
            retry_after: Some(7),
        };
        assert_eq!(k.take_fail_status(), Some((503, Some(7))));
        assert_eq!(k.take_fail_status(), None);
        k.cut_after.store(1, Ordering::Release);
        assert!(k.take_cut_after());
        assert!(!k.take_cut_after());
        *k.delay_after.lock().unwrap() = (Duration::from_millis(5), 1);
        assert_eq!(k.take_delay_after(), Some(Duration::from_millis(5)));
        assert_eq!(k.take_delay_after(), None);
    }
}
