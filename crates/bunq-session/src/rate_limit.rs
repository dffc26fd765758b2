//! Client-side rate limiting: stay inside bunq's limits instead of collecting 429s.
//!
//! bunq limits each IP per endpoint: GET 3, POST 5, PUT 2 requests within any 3
//! consecutive seconds, and `session-server` 1 within 30. One [`BunqClient`](crate::BunqClient)
//! holds one [`Limiter`] and one [`SessionPacer`], shared by every credential it serves,
//! because bunq counts per IP, not per user.
//!
//! Both count a request from the moment it is sent until its response has arrived and
//! then for one window after that: bunq counts arrival times, which lie somewhere in
//! between, so counting from completion can never let bunq see more than the limit in
//! any window, however the network delays individual requests.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use tokio::sync::Notify;

use crate::Error;

/// Which limits the client keeps. [`RateLimitPolicy::bunq`] (the default) mirrors bunq's
/// documented limits; [`RateLimitPolicy::disabled`] is for a local fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Whether limits are enforced at all.
    pub enabled: bool,
    /// GET requests per endpoint per [`window`](Self::window).
    pub get: u32,
    /// POST requests per endpoint per window.
    pub post: u32,
    /// PUT requests per endpoint per window.
    pub put: u32,
    /// Any other method (DELETE, PATCH) per endpoint per window; bunq documents none,
    /// so the strictest documented limit (PUT's) is the default.
    pub other: u32,
    /// The sliding window of the per-endpoint limits (bunq: 3 s).
    pub window: Duration,
    /// `session-server` calls per [`session_server_window`](Self::session_server_window).
    pub session_server: u32,
    /// The sliding window of the session-server limit (bunq: 30 s).
    pub session_server_window: Duration,
    /// Longest a call waits for the per-endpoint limiter before failing with
    /// [`Error::RateLimited`].
    pub max_wait: Duration,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        Self::bunq()
    }
}

impl RateLimitPolicy {
    /// bunq's limits: GET 3, POST 5, PUT 2 per 3 s per endpoint; session-server 1 per 30 s.
    pub fn bunq() -> Self {
        Self {
            enabled: true,
            get: 3,
            post: 5,
            put: 2,
            other: 2,
            window: Duration::from_secs(3),
            session_server: 1,
            session_server_window: Duration::from_secs(30),
            max_wait: Duration::from_secs(30),
        }
    }

    /// No client-side limits (for a local fake without limits).
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::bunq()
        }
    }

    /// Turns enforcement on or off.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the per-endpoint window (e.g. shortened in tests, matching the fake's).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets the session-server window.
    pub fn session_server_window(mut self, window: Duration) -> Self {
        self.session_server_window = window;
        self
    }

    /// Sets the GET limit per window.
    pub fn get(mut self, n: u32) -> Self {
        self.get = n;
        self
    }

    /// Sets the POST limit per window.
    pub fn post(mut self, n: u32) -> Self {
        self.post = n;
        self
    }

    /// Sets the PUT limit per window.
    pub fn put(mut self, n: u32) -> Self {
        self.put = n;
        self
    }

    /// Sets the longest wait for a per-endpoint slot.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    fn limit_for(&self, method: &Method) -> u32 {
        match *method {
            Method::GET | Method::HEAD => self.get,
            Method::POST => self.post,
            Method::PUT => self.put,
            _ => self.other,
        }
    }
}

/// Beyond this many tracked endpoints, idle ones are dropped so memory stays bounded.
const MAX_TRACKED_ENDPOINTS: usize = 1024;

struct Entry {
    id: u64,
    /// `None` while the request is in flight.
    done: Option<Instant>,
}

/// Sliding-window limiter keyed by method and endpoint pattern.
pub(crate) struct Limiter {
    policy: RateLimitPolicy,
    windows: Mutex<HashMap<u64, VecDeque<Entry>>>,
    next_id: AtomicU64,
    released: Notify,
}

/// Holds one slot of the limiter; dropping it (after the response) starts the slot's
/// cool-down window.
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    key: u64,
    id: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Ok(mut windows) = self.limiter.windows.lock() {
            if let Some(entry) = windows
                .get_mut(&self.key)
                .and_then(|w| w.iter_mut().find(|e| e.id == self.id))
            {
                entry.done = Some(now);
            }
        }
        self.limiter.released.notify_waiters();
    }
}

impl Limiter {
    pub(crate) fn new(policy: RateLimitPolicy) -> Self {
        Self {
            policy,
            windows: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            released: Notify::new(),
        }
    }

    /// Waits (bounded by the policy's `max_wait`) for a slot for `method path`.
    /// `Ok(None)` when limits are off.
    pub(crate) async fn acquire(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<Option<Permit<'_>>, Error> {
        let limit = self.policy.limit_for(method) as usize;
        if !self.policy.enabled || limit == 0 {
            return Ok(None);
        }
        let window = self.policy.window;
        let key = endpoint_key(method, path);
        let deadline = Instant::now() + self.policy.max_wait;
        loop {
            let wait = {
                let mut windows = self
                    .windows
                    .lock()
                    .map_err(|_| Error::Config("rate limiter lock poisoned".into()))?;
                let now = Instant::now();
                if windows.len() > MAX_TRACKED_ENDPOINTS {
                    windows.retain(|_, w| {
                        w.retain(|e| e.done.is_none_or(|d| d + window > now));
                        !w.is_empty()
                    });
                }
                let entries = windows.entry(key).or_default();
                entries.retain(|e| e.done.is_none_or(|d| d + window > now));
                if entries.len() < limit {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    entries.push_back(Entry { id, done: None });
                    return Ok(Some(Permit {
                        limiter: self,
                        key,
                        id,
                    }));
                }
                // All slots taken: the earliest finished one frees first; if all are
                // still in flight, a release notification (or one window) wakes us.
                entries
                    .iter()
                    .filter_map(|e| e.done)
                    .min()
                    .map(|d| (d + window).saturating_duration_since(now))
            };
            let now = Instant::now();
            let budget = deadline.saturating_duration_since(now);
            let needed = wait.unwrap_or(window);
            if wait.is_some_and(|w| w > budget) || budget.is_zero() {
                return Err(Error::RateLimited {
                    retry_after: needed.max(Duration::from_millis(1)),
                });
            }
            let released = self.released.notified();
            tokio::select! {
                () = tokio::time::sleep(needed.min(budget)) => {}
                () = released => {}
            }
        }
    }
}

/// A hash of the method and the path with id-like segments replaced by `{id}` and the
/// query dropped, so that `GET user/1/monetary-account-bank` and `GET
/// user/2/monetary-account-bank` share one window, as they share one at bunq. A hash
/// instead of the pattern string keeps the hot path free of allocation; a 64-bit
/// collision between two of an application's few dozen endpoints would only make them
/// share a window.
fn endpoint_key(method: &Method, path: &str) -> u64 {
    // `DefaultHasher::new()` has fixed keys: stable within the process, which is all
    // a key needs.
    let mut hasher = std::hash::DefaultHasher::new();
    method.as_str().hash(&mut hasher);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if is_id_like(segment) {
            "{id}".hash(&mut hasher);
        } else {
            segment.hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// Numeric ids, and long tokens with digits (UUIDs), are path parameters.
fn is_id_like(segment: &str) -> bool {
    segment.bytes().all(|b| b.is_ascii_digit())
        || (segment.len() >= 16 && segment.bytes().any(|b| b.is_ascii_digit()))
}

/// The single queue in front of `POST /session-server`: first come, first served, at
/// most `session_server` calls per `session_server_window` for the whole process, and a
/// bounded wait for every caller.
pub(crate) struct SessionPacer {
    enabled: bool,
    limit: usize,
    window: Duration,
    /// Completion times of the latest calls; tokio's mutex is FIFO-fair, which makes
    /// the queue.
    recent: tokio::sync::Mutex<VecDeque<Instant>>,
    waiting: AtomicU32,
}

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionPacer {
    pub(crate) fn new(policy: &RateLimitPolicy) -> Self {
        Self {
            enabled: policy.enabled && policy.session_server > 0,
            limit: policy.session_server.max(1) as usize,
            window: policy.session_server_window,
            recent: tokio::sync::Mutex::new(VecDeque::new()),
            waiting: AtomicU32::new(0),
        }
    }

    /// Runs `call` (one session-server request) when the pacer allows, or fails with
    /// [`Error::SessionCapacity`] if that would take longer than `max_wait`.
    pub(crate) async fn run<T, F>(&self, max_wait: Duration, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        if !self.enabled {
            return call.await;
        }
        let started = Instant::now();
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        // Everyone ahead needs a slot first: a caller who cannot possibly be served in
        // time is told so at once instead of after max_wait.
        let estimate = self
            .window
            .mul_f64(f64::from(ahead + 1) / self.limit as f64);
        if ahead as usize >= self.limit && estimate > max_wait {
            return Err(Error::SessionCapacity {
                retry_after: estimate,
            });
        }
        let mut recent = tokio::time::timeout(max_wait, self.recent.lock())
            .await
            .map_err(|_| Error::SessionCapacity {
                retry_after: estimate,
            })?;
        let now = Instant::now();
        while recent.front().is_some_and(|t| *t + self.window <= now) {
            recent.pop_front();
        }
        if recent.len() >= self.limit {
            if let Some(oldest) = recent.front() {
                let slot = *oldest + self.window;
                let budget = max_wait.saturating_sub(started.elapsed());
                let wait = slot.saturating_duration_since(now);
                if wait > budget {
                    return Err(Error::SessionCapacity { retry_after: wait });
                }
                tokio::time::sleep_until(slot.into()).await;
                recent.pop_front();
            }
        }
        let result = call.await;
        // bunq counted the call whatever its outcome.
        recent.push_back(Instant::now());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_uuid_segments_share_one_endpoint_key() {
        let a = endpoint_key(&Method::GET, "user/1/monetary-account-bank?count=10");
        let b = endpoint_key(&Method::GET, "user/22/monetary-account-bank");
        let c = endpoint_key(&Method::GET, "user/22/payment");
        let d = endpoint_key(&Method::POST, "user/22/monetary-account-bank");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(
            endpoint_key(
                &Method::GET,
                "attachment/7d7b3e43-b9d1-4a6a-9d1b-3f2f0e1c2d3e"
            ),
            endpoint_key(
                &Method::GET,
                "attachment/11111111-2222-3333-4444-555555555555"
            )
        );
    }

    #[tokio::test]
    async fn limiter_admits_the_limit_then_waits_for_the_window() {
        let window = Duration::from_millis(200);
        let limiter = Limiter::new(RateLimitPolicy::bunq().window(window).get(3));
        let start = Instant::now();
        for _ in 0..3 {
            drop(limiter.acquire(&Method::GET, "user/1").await.unwrap());
        }
        assert!(start.elapsed() < window, "first three pass at once");
        drop(limiter.acquire(&Method::GET, "user/2").await.unwrap());
        assert!(start.elapsed() >= window, "the fourth waits a window");
        // Other endpoints are unaffected.
        let t = Instant::now();
        drop(
            limiter
                .acquire(&Method::GET, "user/1/payment")
                .await
                .unwrap(),
        );
        assert!(t.elapsed() < window);
    }

    #[tokio::test]
    async fn limiter_gives_up_with_rate_limited_after_max_wait() {
        let limiter = Limiter::new(
            RateLimitPolicy::bunq()
                .window(Duration::from_secs(5))
                .get(1)
                .max_wait(Duration::from_millis(50)),
        );
        let _held = limiter.acquire(&Method::GET, "user").await.unwrap();
        let err = limiter.acquire(&Method::GET, "user").await.err().unwrap();
        assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn disabled_limiter_never_waits() {
        let limiter = Limiter::new(RateLimitPolicy::disabled());
        for _ in 0..100 {
            assert!(
                limiter
                    .acquire(&Method::GET, "user")
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn pacer_spaces_calls_by_the_window_in_order() {
        let window = Duration::from_millis(100);
        let pacer = SessionPacer::new(&RateLimitPolicy::bunq().session_server_window(window));
        let start = Instant::now();
        let mut done = Vec::new();
        for i in 0..3 {
            pacer
                .run(Duration::from_secs(5), async { Ok::<_, Error>(()) })
                .await
                .unwrap();
            done.push((i, start.elapsed()));
        }
        assert!(done[1].1 >= window && done[2].1 >= window * 2, "{done:?}");
    }

    #[tokio::test]
    async fn pacer_refuses_callers_beyond_the_bounded_wait() {
        let pacer = SessionPacer::new(
            &RateLimitPolicy::bunq().session_server_window(Duration::from_secs(30)),
        );
        pacer
            .run(Duration::from_secs(1), async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        let err = pacer
            .run(Duration::from_millis(20), async { Ok::<_, Error>(()) })
            .await
            .err()
            .unwrap();
        match err {
            Error::SessionCapacity { retry_after } => {
                assert!(retry_after > Duration::from_secs(25), "{retry_after:?}");
            }
            other => panic!("expected SessionCapacity, got {other:?}"),
        }
    }
}
