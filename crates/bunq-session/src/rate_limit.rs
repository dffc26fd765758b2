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
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// What counts as one endpoint for the per-endpoint limits. bunq's documentation
    /// says "per IP address per endpoint" without saying whether ids in the path make
    /// endpoints distinct, so the default, [`LimitScope::EndpointPattern`], is the
    /// cautious reading.
    pub scope: LimitScope,
}

/// What the per-endpoint limits count as one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitScope {
    /// Ids folded: `GET user/1/monetary-account-bank` and `GET
    /// user/2/monetary-account-bank` share one window. The cautious reading of bunq's
    /// limits (never more than bunq allows per endpoint, whichever reading bunq applies),
    /// at the price of capping a gateway at bunq's limit per endpoint *shape* for all
    /// users together (3 GETs per 3 s).
    #[default]
    EndpointPattern,
    /// Every concrete path has its own window. The generous reading: many users are
    /// served in parallel, but if bunq does fold ids, a burst across users collects
    /// 429s (which idempotent calls then retry with back-off).
    ConcretePath,
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
            scope: LimitScope::EndpointPattern,
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

    /// Sets what counts as one endpoint (see [`LimitScope`]).
    pub fn scope(mut self, scope: LimitScope) -> Self {
        self.scope = scope;
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
    /// How many processes behind this IP split the limits (1: alone).
    share: std::sync::atomic::AtomicU32,
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
            share: std::sync::atomic::AtomicU32::new(1),
            windows: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            released: Notify::new(),
        }
    }

    /// Splits the limits between `processes` processes behind the same IP.
    pub(crate) fn set_share(&self, processes: u32) {
        self.share.store(processes.max(1), Ordering::Relaxed);
        // A larger share frees slots for waiters at once.
        self.released.notify_waiters();
    }

    /// Waits for a slot for `method path`, at most the policy's `max_wait` and never
    /// past the caller's `deadline`. `Ok(None)` when limits are off. A wait that cannot
    /// end in time fails at once rather than after sleeping in vain.
    pub(crate) async fn acquire(
        &self,
        method: &Method,
        path: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<Permit<'_>>, Refusal> {
        let limit = self.policy.limit_for(method) as usize;
        if !self.policy.enabled || limit == 0 {
            return Ok(None);
        }
        // This process's share of the IP's limit; one call per window at least, or
        // nothing could ever be sent.
        let share = self.share.load(Ordering::Relaxed).max(1) as usize;
        let limit = (limit / share).max(1);
        let window = self.policy.window;
        let key = endpoint_key(method, path, self.policy.scope);
        let own_limit = after(Instant::now(), self.policy.max_wait);
        // Whichever bound is nearer ends the wait, and says why it ended.
        let (until, callers) = match deadline {
            Some(d) if d < own_limit => (d, true),
            _ => (own_limit, false),
        };
        loop {
            let wait = {
                let mut windows = self.windows.lock().map_err(|_| Refusal::Poisoned)?;
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
            let budget = until.saturating_duration_since(now);
            let needed = wait.unwrap_or(window);
            if wait.is_some_and(|w| w > budget) || budget.is_zero() {
                return Err(if callers {
                    Refusal::DeadlinePassed
                } else {
                    Refusal::RateLimited {
                        retry_after: needed.max(Duration::from_millis(1)),
                    }
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

/// Why the limiter did not give a slot.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The policy's `max_wait` would pass first.
    RateLimited { retry_after: Duration },
    /// The caller's deadline would pass first.
    DeadlinePassed,
    /// The limiter's lock was poisoned by a panic.
    Poisoned,
}

/// `now + wait`, or a far future when that overflows `Instant`.
pub(crate) fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(now)
}

/// A hash of the method and the path with the query dropped and, with
/// [`LimitScope::EndpointPattern`], id-like segments replaced by `{id}`, so that `GET
/// user/1/monetary-account-bank` and `GET user/2/monetary-account-bank` share one window.
/// A hash instead of the pattern string keeps the hot path free of allocation; a 64-bit
/// collision between two of an application's few dozen endpoints would only make them
/// share a window.
fn endpoint_key(method: &Method, path: &str, scope: LimitScope) -> u64 {
    // `DefaultHasher::new()` has fixed keys: stable within the process, which is all
    // a key needs.
    let mut hasher = std::hash::DefaultHasher::new();
    method.as_str().hash(&mut hasher);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if scope == LimitScope::EndpointPattern && is_id_like(segment) {
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
///
/// A call counts from the moment it is sent (a slot is taken before the call starts),
/// whether it completes, fails or is abandoned midway (its future dropped): bunq may
/// have received it either way. When it ends, its slot is counted again from that
/// moment, since bunq counts an arrival that lies somewhere in between.
pub(crate) struct SessionPacer {
    enabled: bool,
    limit: usize,
    /// Zero when a shared turn spaces the calls ([`Self::only_queue`]).
    window: Duration,
    state: Mutex<PacerState>,
    /// Woken whenever the queue or the slots change.
    changed: Notify,
}

#[derive(Default)]
struct PacerState {
    /// The calls that still count: in flight, or ended less than a window ago.
    spent: VecDeque<Spent>,
    /// The tickets of waiting callers, in arrival order.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

struct Spent {
    ticket: u64,
    /// When the call was sent, then when it ended.
    counted_from: Instant,
    in_flight: bool,
}

/// Removes a waiting caller from the queue however it leaves (served, refused, or its
/// future dropped).
struct Queued<'a> {
    pacer: &'a SessionPacer,
    ticket: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.pacer.state.lock() {
            state.queue.retain(|t| *t != self.ticket);
        }
        self.pacer.changed.notify_waiters();
    }
}

/// A slot taken for one call; dropping it (when the call ends, or is abandoned) restarts
/// the slot's window from that moment.
struct Slot<'a> {
    pacer: &'a SessionPacer,
    ticket: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Ok(mut state) = self.pacer.state.lock() {
            if let Some(spent) = state.spent.iter_mut().find(|s| s.ticket == self.ticket) {
                spent.counted_from = spent.counted_from.max(now);
                spent.in_flight = false;
            }
        }
        self.pacer.changed.notify_waiters();
    }
}

impl SessionPacer {
    pub(crate) fn new(policy: &RateLimitPolicy) -> Self {
        Self {
            enabled: policy.enabled && policy.session_server > 0,
            limit: policy.session_server.max(1) as usize,
            window: policy.session_server_window,
            state: Mutex::new(PacerState::default()),
            changed: Notify::new(),
        }
    }

    /// Counts one call as made just now, by no caller of this pacer: the next one waits
    /// a window. For a process that may have had a predecessor on the same IP (see
    /// [`crate::BunqClient::assume_recent_session_server_call`]).
    pub(crate) fn assume_recent_call(&self) {
        if !self.enabled {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.spent.push_back(Spent {
                ticket,
                counted_from: Instant::now(),
                in_flight: false,
            });
        }
        self.changed.notify_waiters();
    }

    /// Leaves the spacing of the calls to a turn shared with other processes: this
    /// pacer then only queues its callers and lets one call out at a time.
    pub(crate) fn only_queue(&mut self) {
        self.window = Duration::ZERO;
        self.limit = 1;
    }

    /// How many callers wait for their turn.
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().map_or(0, |s| s.queue.len())
    }

    /// Runs `call` (one session-server request) when the pacer allows, in arrival order,
    /// or fails with [`Error::SessionCapacity`] if its turn would come after `deadline`
    /// (at once when that is already clear).
    pub(crate) async fn run<T, F>(&self, deadline: Instant, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        if !self.enabled {
            return call.await;
        }
        let slot = self.wait_for_turn(deadline).await?;
        let result = call.await;
        drop(slot);
        result
    }

    async fn wait_for_turn(&self, deadline: Instant) -> Result<Slot<'_>, Error> {
        let poisoned = || Error::Config("session pacer lock poisoned".into());
        let ticket = {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            let now = Instant::now();
            self.prune(&mut state, now);
            // Everyone already waiting needs a slot first: a caller who cannot be served
            // in time is told so at once instead of at its deadline.
            let turn = self.turn_of(&state, state.queue.len(), now);
            if turn > deadline {
                return Err(Error::SessionCapacity {
                    retry_after: turn.saturating_duration_since(now),
                });
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.queue.push_back(ticket);
            ticket
        };
        let _queued = Queued {
            pacer: self,
            ticket,
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change in between is missed.
            changed.as_mut().enable();
            let turn = {
                let mut state = self.state.lock().map_err(|_| poisoned())?;
                let now = Instant::now();
                self.prune(&mut state, now);
                let position = state.queue.iter().position(|t| *t == ticket).unwrap_or(0);
                if position == 0 && state.spent.len() < self.limit {
                    state.queue.pop_front();
                    state.spent.push_back(Spent {
                        ticket,
                        counted_from: now,
                        in_flight: true,
                    });
                    // The next in line may fit too (a limit above one).
                    self.changed.notify_waiters();
                    return Ok(Slot {
                        pacer: self,
                        ticket,
                    });
                }
                let turn = self.turn_of(&state, position, now);
                if turn > deadline || now >= deadline {
                    return Err(Error::SessionCapacity {
                        retry_after: turn.saturating_duration_since(now),
                    });
                }
                turn
            };
            tokio::select! {
                () = tokio::time::sleep_until(turn.into()) => {}
                () = &mut changed => {}
            }
        }
    }

    /// Forgets calls that ended a window ago or more.
    fn prune(&self, state: &mut PacerState, now: Instant) {
        let window = self.window;
        state
            .spent
            .retain(|s| s.in_flight || s.counted_from + window > now);
    }

    /// When the caller at `position` in the queue (0: next) may expect its turn: the
    /// slots free up one by one (a call in flight at the earliest a window from now),
    /// and each further round of `limit` callers takes one window more. An estimate,
    /// never later than the truth: calls that have yet to run only add to it.
    fn turn_of(&self, state: &PacerState, position: usize, now: Instant) -> Instant {
        let mut free: Vec<Instant> = state
            .spent
            .iter()
            .map(|s| {
                if s.in_flight {
                    now + self.window
                } else {
                    s.counted_from + self.window
                }
            })
            .collect();
        free.resize(self.limit.max(free.len()), now);
        free.sort_unstable();
        let rounds = u32::try_from(position / self.limit).unwrap_or(u32::MAX);
        let first = free.get(position % self.limit).copied().unwrap_or(now);
        first
            .checked_add(self.window.saturating_mul(rounds))
            .unwrap_or(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn in_(wait: Duration) -> Instant {
        Instant::now() + wait
    }

    #[test]
    fn concrete_path_scope_keeps_ids_apart_and_still_drops_the_query() {
        let key = |p: &str| endpoint_key(&Method::GET, p, LimitScope::ConcretePath);
        assert_ne!(
            key("user/1/monetary-account-bank"),
            key("user/2/monetary-account-bank")
        );
        assert_eq!(
            key("user/1/monetary-account-bank?count=10"),
            key("user/1/monetary-account-bank")
        );
        assert_eq!(
            RateLimitPolicy::default().scope,
            LimitScope::EndpointPattern
        );
    }

    /// The fault the cautious default guards against: two users' GETs of one endpoint
    /// shape are one window for bunq if bunq folds ids.
    #[tokio::test]
    async fn the_scope_decides_whether_two_users_share_a_window() {
        let window = Duration::from_secs(5);
        let policy = RateLimitPolicy::bunq()
            .window(window)
            .get(1)
            .max_wait(Duration::from_millis(20));
        let folded = Limiter::new(policy.clone());
        drop(
            folded
                .acquire(&Method::GET, "user/1/payment", None)
                .await
                .unwrap(),
        );
        let second = folded
            .acquire(&Method::GET, "user/2/payment", None)
            .await
            .err();
        assert!(
            matches!(second, Some(Refusal::RateLimited { .. })),
            "{second:?}"
        );

        let concrete = Limiter::new(policy.scope(LimitScope::ConcretePath));
        drop(
            concrete
                .acquire(&Method::GET, "user/1/payment", None)
                .await
                .unwrap(),
        );
        assert!(
            concrete
                .acquire(&Method::GET, "user/2/payment", None)
                .await
                .is_ok()
        );
        let again = concrete
            .acquire(&Method::GET, "user/1/payment", None)
            .await
            .err();
        assert!(
            matches!(again, Some(Refusal::RateLimited { .. })),
            "{again:?}"
        );
    }

    #[tokio::test]
    async fn a_caller_deadline_nearer_than_max_wait_ends_the_wait_as_deadline_passed() {
        let limiter = Limiter::new(
            RateLimitPolicy::bunq()
                .window(Duration::from_secs(5))
                .get(1)
                .max_wait(Duration::from_secs(30)),
        );
        let _held = limiter.acquire(&Method::GET, "user", None).await.unwrap();
        let started = Instant::now();
        let err = limiter
            .acquire(&Method::GET, "user", Some(in_(Duration::from_millis(50))))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Refusal::DeadlinePassed), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no sleeping in vain"
        );
    }

    #[tokio::test]
    async fn a_slot_is_spent_even_when_the_call_is_abandoned_midway() {
        let window = Duration::from_secs(30);
        let pacer = SessionPacer::new(&RateLimitPolicy::bunq().session_server_window(window));
        // The caller gives up while its call is in flight (bunq may have it by now).
        let abandoned = tokio::time::timeout(
            Duration::from_millis(30),
            pacer.run(
                in_(Duration::from_secs(1)),
                std::future::pending::<Result<(), Error>>(),
            ),
        )
        .await;
        assert!(abandoned.is_err(), "the call was cut off");
        let err = pacer
            .run(in_(Duration::from_millis(20)), async { Ok::<_, Error>(()) })
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

    #[tokio::test]
    async fn callers_are_served_in_arrival_order() {
        let window = Duration::from_millis(60);
        let pacer = Arc::new(SessionPacer::new(
            &RateLimitPolicy::bunq().session_server_window(window),
        ));
        let order = Arc::new(Mutex::new(Vec::new()));
        pacer
            .run(in_(Duration::from_secs(1)), async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (pacer, order) = (Arc::clone(&pacer), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                pacer
                    .run(in_(Duration::from_secs(5)), async {
                        order.lock().unwrap().push(i);
                        Ok::<_, Error>(())
                    })
                    .await
            }));
            // Each one queued before the next arrives.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn retry_after_grows_with_the_place_in_the_queue() {
        let window = Duration::from_secs(30);
        let pacer = Arc::new(SessionPacer::new(
            &RateLimitPolicy::bunq().session_server_window(window),
        ));
        pacer
            .run(in_(Duration::from_secs(1)), async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        let refused_after = || async {
            match pacer
                .run(in_(Duration::from_millis(10)), async { Ok::<_, Error>(()) })
                .await
            {
                Err(Error::SessionCapacity { retry_after }) => retry_after,
                other => panic!("expected SessionCapacity, got {other:?}"),
            }
        };
        let mut seen = vec![refused_after().await];
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let pacer = Arc::clone(&pacer);
            waiting.push(tokio::spawn(async move {
                pacer
                    .run(in_(Duration::from_secs(600)), async { Ok::<_, Error>(()) })
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
            seen.push(refused_after().await);
        }
        for task in &waiting {
            task.abort();
        }
        // One window per caller ahead (limit 1), less what has passed of the first.
        for (ahead, after) in seen.iter().enumerate() {
            let expected = window * (ahead as u32 + 1);
            assert!(
                *after <= expected && *after > expected - Duration::from_secs(2),
                "{ahead} ahead: {after:?}"
            );
        }
    }

    #[test]
    fn numeric_and_uuid_segments_share_one_endpoint_key() {
        let endpoint_key = |m: &Method, p: &str| endpoint_key(m, p, LimitScope::EndpointPattern);
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
            drop(limiter.acquire(&Method::GET, "user/1", None).await.unwrap());
        }
        assert!(start.elapsed() < window, "first three pass at once");
        drop(limiter.acquire(&Method::GET, "user/2", None).await.unwrap());
        assert!(start.elapsed() >= window, "the fourth waits a window");
        // Other endpoints are unaffected.
        let t = Instant::now();
        drop(
            limiter
                .acquire(&Method::GET, "user/1/payment", None)
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
        let _held = limiter.acquire(&Method::GET, "user", None).await.unwrap();
        let err = limiter
            .acquire(&Method::GET, "user", None)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Refusal::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn disabled_limiter_never_waits() {
        let limiter = Limiter::new(RateLimitPolicy::disabled());
        for _ in 0..100 {
            assert!(
                limiter
                    .acquire(&Method::GET, "user", None)
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
                .run(in_(Duration::from_secs(5)), async { Ok::<_, Error>(()) })
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
            .run(in_(Duration::from_secs(1)), async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        let err = pacer
            .run(in_(Duration::from_millis(20)), async { Ok::<_, Error>(()) })
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
