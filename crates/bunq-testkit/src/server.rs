//! The shared state of a running fake and its HTTP router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::FakeConfig;
use crate::knobs::{KnobState, RateLimiter};
use crate::wire::{self, Signer};
use crate::world::World;

/// Largest request body accepted; bunq's own limit is larger, but nothing we fake needs
/// more and it keeps a misbehaving client from eating memory.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// Everything one running fake shares between its handlers.
pub(crate) struct Shared {
    pub config: FakeConfig,
    pub world: Mutex<World>,
    pub knobs: KnobState,
    pub signer: Signer,
    calls: Mutex<HashMap<&'static str, u64>>,
    total: AtomicU64,
    rate: Mutex<RateLimiter>,
}

impl Shared {
    pub fn new(config: FakeConfig, signer: Signer) -> Self {
        Self {
            knobs: KnobState::new(config.session_timeout, config.rate_limits),
            config,
            world: Mutex::new(World::new()),
            signer,
            calls: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            rate: Mutex::new(RateLimiter::default()),
        }
    }

    /// Locks the world. A poisoned lock means a handler panicked mid-update; the data
    /// is still the best we have, so keep serving rather than fail every later call.
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn count(&self, endpoint: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(endpoint).or_insert(0) += 1;
        }
    }

    pub fn count_unrouted(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self, endpoint: &str) -> u64 {
        self.calls
            .lock()
            .ok()
            .and_then(|c| c.get(endpoint).copied())
            .unwrap_or(0)
    }

    pub fn all_calls(&self) -> HashMap<String, u64> {
        self.calls
            .lock()
            .map(|c| c.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default()
    }

    pub fn total_calls(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The knobs that apply before a call is executed: latency, forced failures, rate
    /// limits. `Some` is the response to send instead of executing.
    pub async fn gate(
        &self,
        peer: SocketAddr,
        method: &str,
        endpoint: &'static str,
    ) -> Option<Response> {
        let latency = self.knobs.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Some(status) = self.knobs.take_fail_status() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = match status.as_u16() {
                503 => "The service is temporarily unavailable.",
                491 => "bunq is in maintenance mode.",
                _ => "Something went wrong on our side.",
            };
            return Some(wire::error(self, status, text));
        }
        if self.knobs.rate_limits_on() {
            let (limit, window, label) = if endpoint == "POST /session-server" {
                (1, self.config.session_server_window, "POST")
            } else {
                match method {
                    "GET" => (3, self.config.rate_limit_window, "GET"),
                    "PUT" => (2, self.config.rate_limit_window, "PUT"),
                    _ => (5, self.config.rate_limit_window, "POST"),
                }
            };
            let admitted = self
                .rate
                .lock()
                .map(|mut r| r.admit(peer.ip(), endpoint, limit, window))
                .unwrap_or(true);
            if !admitted {
                let text = format!(
                    "Too many requests. You can do a maximum of {limit} {label} calls per {} second to this endpoint.",
                    window.as_secs().max(1)
                );
                return Some(wire::error(self, StatusCode::TOO_MANY_REQUESTS, &text));
            }
        }
        None
    }
}

/// The whole fake: bunq's API under `/v1`, the OAuth pages, the control endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/auth", get(crate::oauth::authorize))
        .route("/v1/token", any(crate::oauth::token))
        .route("/_fake/calls", get(crate::control::calls))
        .route("/_fake/knobs", post(crate::control::knobs))
        .route("/_fake/sandbox-user", post(crate::control::sandbox_user))
        .route("/_fake/oauth-grant", post(crate::control::oauth_grant))
        .route("/_fake/balance", get(crate::control::balance))
        .fallback(crate::api::handle)
        .with_state(shared)
}

/// A deadline for awaiting the server task at shutdown: in-flight requests get this
/// long to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
