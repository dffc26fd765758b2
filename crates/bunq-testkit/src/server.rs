//! The shared state of a running fake and its HTTP router.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

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
    pub callbacks: crate::notify::Callbacks,
    calls: Mutex<HashMap<&'static str, u64>>,
    total: AtomicU64,
    /// Calls refused with 429 by the rate limits (not by a knob).
    rate_limited: AtomicU64,
    /// The same, per endpoint: a 429 at `POST /session-server` is a client that tried to
    /// exceed the one call per window.
    rate_limited_by: Mutex<HashMap<&'static str, u64>>,
    rate: Mutex<RateLimiter>,
}

impl Shared {
    pub fn new(config: FakeConfig, signer: Signer) -> Self {
        Self {
            knobs: KnobState::new(config.session_timeout, config.rate_limits),
            callbacks: crate::notify::Callbacks::new(
                config.callback_retry_interval,
                config.callback_retries,
            ),
            config,
            world: Mutex::new(World::new()),
            signer,
            calls: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            rate_limited_by: Mutex::new(HashMap::new()),
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

    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub fn rate_limited_at(&self, endpoint: &str) -> u64 {
        self.rate_limited_by
            .lock()
            .ok()
            .and_then(|c| c.get(endpoint).copied())
            .unwrap_or(0)
    }

    pub fn all_rate_limited(&self) -> HashMap<String, u64> {
        self.rate_limited_by
            .lock()
            .map(|c| c.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default()
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
        if let Some((status, retry_after)) = self.knobs.take_fail_status() {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = match status.as_u16() {
                503 => "The service is temporarily unavailable.",
                491 => "bunq is in maintenance mode.",
                429 => "Too many requests.",
                _ => "Something went wrong on our side.",
            };
            let mut response = wire::error(self, status, text);
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            return Some(response);
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
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut by) = self.rate_limited_by.lock() {
                    *by.entry(endpoint).or_insert(0) += 1;
                }
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
        .route(
            "/_fake/revoke-oauth-grants",
            post(crate::control::revoke_oauth_grants),
        )
        .route("/_fake/payment-count", get(crate::control::payment_count))
        .route(
            "/_fake/monetary-account",
            post(crate::control::monetary_account),
        )
        .route("/_fake/payments", get(crate::control::payments))
        .route("/_fake/secrets", get(crate::control::secrets))
        .route("/_fake/callbacks", get(crate::control::callbacks))
        .fallback(crate::api::handle)
        .with_state(shared)
}

/// A deadline for awaiting the server task at shutdown: in-flight requests get this
/// long to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The fake's listener: a `TcpListener` whose connections a handler can cut (see
/// [`Peer::cut_connection`]).
pub(crate) struct FakeListener(pub TcpListener);

impl Listener for FakeListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((inner, addr)) => {
                    let stream = CuttableStream {
                        inner,
                        cut: Arc::default(),
                    };
                    return (stream, addr);
                }
                // A client that gave up between SYN and accept is its own problem.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of file descriptors and the like: spinning would not help, waiting
                // for connections to close might (what axum's own listener does).
                Err(e) => {
                    tracing::warn!(error = %e, "bunq-fake cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP connection that fails every write once cut. hyper treats a failed write as a
/// dead connection and drops it, which closes the socket: the client reads EOF where it
/// expected a status line, exactly what it sees when bunq's connection breaks after the
/// request was executed. Reads pass through untouched.
pub(crate) struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn refuse_if_cut(&self) -> Option<io::Error> {
        self.cut.load(Ordering::Acquire).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut by the cut_after_execute knob",
            )
        })
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refuse_if_cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refuse_if_cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refuse_if_cut() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Who is calling, per connection: the peer address (per-IP rate limits, device
/// `permitted_ips`) and the switch that cuts this connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Peer {
    /// The calling IP, with IPv4-mapped IPv6 addresses (a dual-stack listener) as IPv4
    /// so they compare equal to the IPv4 addresses devices are bound to.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip().to_canonical()
    }

    /// Makes this connection close without another byte: the response the handler
    /// returns next is never written.
    pub fn cut_connection(&self) {
        self.cut.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, FakeListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, FakeListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            cut: stream.io().cut.clone(),
        }
    }
}
