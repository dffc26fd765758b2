//! The accept loop and the connection limits of `[http]`: hyper's own header-read
//! timeout, a watchdog that closes connections idle for too long, and a cap on open
//! connections shared by every worker.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout never
//! runs, and it has no idle timeout and no connection cap; a client that sends half a
//! request (or nothing) held a socket and a file descriptor forever.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::config::HttpSettings;
use crate::error::GatewayError;

/// The listener's limits, shared by all workers (one connection budget for the process).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// hyper's HTTP/1 header-read timeout; also how long a new connection may stay silent.
    header_read_timeout: Duration,
    /// How long a connection with no request in progress may stay without traffic.
    idle_timeout: Duration,
    /// One permit per open connection.
    connections: Arc<Semaphore>,
    /// How long shutdown waits for in-flight requests.
    grace: Duration,
}

impl Limits {
    pub(crate) fn new(http: &HttpSettings) -> Self {
        Self {
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            connections: Arc::new(Semaphore::new(
                http.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            grace: http.shutdown_grace,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish for at most the grace period.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) -> Result<(), GatewayError> {
    let (stop_tx, _) = watch::channel(false);
    // Every connection task holds a receiver: the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        // A permit first: at the cap, new connections wait in the kernel's backlog
        // instead of costing a task and a descriptor here.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&limits.connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits.clone(),
            stop_tx.subscribe(),
            (open_rx.clone(), permit),
        ));
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_rx);
    if tokio::time::timeout(limits.grace, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.grace, "shutdown grace period over; dropping open requests");
    }
    Ok(())
}

/// What to do after a failed accept: a connection that died in the backlog is nothing;
/// anything else (out of file descriptors, most often) is logged, and accepting
/// pauses a moment rather than spinning.
async fn accept_failed(e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One connection, HTTP/1.1 or HTTP/2, until it ends, the gateway stops, or it idles.
async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    // Held until the connection is done: the shutdown's wait and the connection cap.
    _open: (watch::Receiver<()>, OwnedSemaphorePermit),
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            // What axum's `into_make_service_with_connect_info` would give handlers: the
            // peer, which `callbacks.allowed_sources` checks.
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let busy = Busy::begin(&activity);
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut conn = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = activity.idle(limits.header_read_timeout, limits.idle_timeout), if !stopping => {
                // No request in progress: dropping the connection loses nothing.
                tracing::debug!("closing an idle connection");
                return;
            }
        }
    }
}

/// When a connection last moved a byte, and whether a request is in progress on it.
struct Activity {
    born: Instant,
    /// Milliseconds from `born` to the last byte read or written, or the end of the
    /// last request.
    last: AtomicU64,
    /// Requests in progress (HTTP/2 runs several at once).
    busy: AtomicUsize,
    /// Whether a request was ever read: until then a connection gets the header-read
    /// timeout to send one, not the longer idle timeout.
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Completes once the connection has had no request in progress and no traffic for
    /// `first` (before its first request) or `idle` (after it).
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let limit = if self.served.load(Ordering::Relaxed) {
                idle
            } else {
                first
            };
            let last = self.born + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let due = last.checked_add(limit).unwrap_or(last);
            if Instant::now() < due {
                tokio::time::sleep_until(due).await;
            } else if self.busy.load(Ordering::Relaxed) == 0 {
                return;
            } else {
                // A request is being answered (bunq may take its time): not idle.
                tokio::time::sleep(limit).await;
            }
        }
    }
}

/// A request in progress on a connection.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.served.store(true, Ordering::Relaxed);
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records its traffic in an [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_is_idle_only_without_traffic_and_requests() {
        let activity = Arc::new(Activity::new());
        let (first, idle) = (Duration::from_millis(50), Duration::from_millis(200));
        // Silent from the start: idle after the header-read timeout.
        let started = Instant::now();
        activity.idle(first, idle).await;
        assert!(started.elapsed() >= first);
        assert!(started.elapsed() < idle, "{:?}", started.elapsed());
        // A request in progress for longer than the idle timeout is not idle; after it,
        // the idle timeout runs (not the shorter first one).
        let busy = Busy::begin(&activity);
        let watching = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { activity.idle(first, idle).await }
        });
        tokio::time::sleep(idle * 2).await;
        assert!(!watching.is_finished());
        drop(busy);
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), watching)
            .await
            .expect("the watchdog fires")
            .expect("watchdog");
        assert!(ended.elapsed() >= idle, "{:?}", ended.elapsed());
    }
}
