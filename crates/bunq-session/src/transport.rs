//! The HTTP engine under [`BunqClient`](crate::BunqClient): hyper's pooled client
//! (hyper-util's, the one reqwest itself runs on) over rustls with the webpki roots.
//!
//! Why not reqwest here: every proxied call goes through this hop, and reqwest's layers
//! were a third of the gateway's user-space instructions per proxied GET under callgrind
//! (139k → 91k without them). Among them, it parsed each call's URL three times (the
//! request, its redirect policy even with redirects off, the response's URL), with IDNA
//! processing of the host each time. This engine builds one `http::Uri` per call and
//! does nothing else that bunq calls do not need.
//! What reqwest gave that the bunq API needs is kept: a connection pool, keep-alive,
//! HTTP/2 over ALPN, a connect timeout, a total timeout per call (send and whole body),
//! no redirects (hyper's client never follows them), and an egress proxy from the
//! environment: `HTTPS_PROXY` / `ALL_PROXY` (and `NO_PROXY`), read as curl reads them,
//! reached with an HTTP `CONNECT` tunnel for `https://` destinations (bunq's bases).
//! A plain `http://` base, such as a local fake, is always reached directly.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector, capture_connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::error::{SendFailure, TimeoutKind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The HTTP engine's error behind [`SendFailure::Transport`]. It displays its whole
/// chain of causes on one line ("client error (Connect): tcp connect error: Connection
/// refused ..."), since the engine's own top message rarely says what happened.
#[derive(Debug)]
pub struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for TransportError {}

/// Why one exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request could not be built (the path is not a valid URI).
    InvalidUri(http::Error),
    /// The body announced or turned out to be larger than the limit.
    TooLarge,
    /// Nothing of the request was written: no connection was obtained for it (refused,
    /// DNS, TLS handshake, proxy tunnel, connect timeout, or the total timeout elapsed
    /// while still connecting).
    NotSent(SendFailure),
    /// The request was (or may have been) written, but no whole answer came back.
    Lost(SendFailure),
}

/// One response, its body read whole.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body is not verified yet and may hold tokens: its size is enough.
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

type PooledClient = Client<HttpsConnector<Dialer>, Full<Bytes>>;

/// Opens the TCP connection under TLS: directly, or through the environment's proxy.
#[derive(Clone)]
pub(crate) struct Dialer {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl tower::Service<Uri> for Dialer {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both ways out are ready at any time: each call dials anew.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let mut direct = self.direct.clone();
        let proxy = (destination.scheme() == Some(&http::uri::Scheme::HTTPS))
            .then(|| self.proxies.intercept(&destination))
            .flatten();
        match proxy {
            None => Box::pin(async move { Ok(direct.call(destination).await?) }),
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), direct);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move { Ok(tunnel.call(destination).await?) })
            }
        }
    }
}

thread_local! {
    /// This thread's connection pools, one per live [`Transport`], each next to the
    /// transport's identity (a weak handle, dead once every clone is dropped).
    static POOLS: RefCell<Vec<(Weak<()>, PooledClient)>> = const { RefCell::new(Vec::new()) };
}

/// The HTTP client, with **a connection pool per thread**. Cheap to clone: clones share
/// the pools.
///
/// Why per thread: a pooled connection is driven by a task of the runtime that opened
/// it. With one shared pool, a request often rode a connection driven by another
/// thread's runtime, so each exchange crossed threads. With pools per thread, a gateway
/// worker (a thread with its own runtime) only uses connections it drives itself: the
/// gateway's CPU per proxied request fell by 5-24% in four interleaved rounds
/// (docs/PERFORMANCE.md, fourth round). On a work-stealing runtime this changes nothing
/// but the number of pools: one per thread that calls bunq, each with its own idle
/// connections.
#[derive(Clone)]
pub(crate) struct Transport {
    /// The identity of this transport (and its clones) in every thread's `POOLS`.
    identity: Arc<()>,
    connector: HttpsConnector<Dialer>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Transport {
    /// Pools whose connections connect within `connect_timeout` (through a proxy when
    /// `proxies` says so), have Nagle off, and are closed after `idle_timeout` unused.
    pub(crate) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        proxies: Matcher,
        local_address: Option<std::net::IpAddr>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_local_address(local_address);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        // The https connector below decides the scheme; the plain one must let it.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            // bunq's own bases are https://; http:// serves a custom base such as a
            // local fake or a test server.
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(Dialer {
                direct: http,
                proxies: Arc::new(proxies),
            });
        Self {
            identity: Arc::new(()),
            connector,
            connect_timeout,
            idle_timeout,
        }
    }

    /// This thread's client (and pool) for this transport, made on first use. Pools of
    /// transports that are gone are dropped then, so a long-lived thread does not keep
    /// them.
    fn client(&self) -> PooledClient {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let mine = Arc::as_ptr(&self.identity);
            if let Some((_, client)) = pools.iter().find(|(owner, _)| owner.as_ptr() == mine) {
                return client.clone();
            }
            pools.retain(|(owner, _)| owner.strong_count() > 0);
            let client = Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.idle_timeout)
                .pool_timer(TokioTimer::new())
                .build(self.connector.clone());
            pools.push((Arc::downgrade(&self.identity), client.clone()));
            client
        })
    }

    /// Sends one request and reads its whole body (at most `max_body` bytes), all
    /// within `timeout`.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        uri: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Answer, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(Uri::try_from(uri).map_err(|e| Failure::InvalidUri(e.into()))?)
            .body(Full::new(body))
            .map_err(Failure::InvalidUri)?;
        *request.headers_mut() = headers;
        // hyper fills this in once it has a connection for the request, just before it
        // writes the request to it: as long as it is empty, nothing can have been sent.
        let connection = capture_connection(&mut request);
        let exchange = async {
            let response = self
                .client()
                .request(request)
                .await
                .map_err(|e| self.request_failure(e, &connection))?;
            let (parts, body) = response.into_parts();
            let announced = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max_body as u64) {
                return Err(Failure::TooLarge);
            }
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::TooLarge
                    } else {
                        // The answer had begun: the request was certainly sent.
                        Failure::Lost(SendFailure::Transport(TransportError(e)))
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let reason = SendFailure::Timeout {
                    kind: TimeoutKind::Total,
                    after: timeout,
                };
                if has_connection(&connection) {
                    Err(Failure::Lost(reason))
                } else {
                    Err(Failure::NotSent(reason))
                }
            }
        }
    }

    /// Sorts a failure of hyper's client by whether any of the request can have been
    /// written. Only hyper's connect errors and failures before the request had a
    /// connection are `NotSent`; anything later may have reached bunq, including
    /// failures hyper reports as "canceled" on a fresh connection (it cannot be told
    /// from outside whether the request was written before the connection closed).
    fn request_failure(
        &self,
        error: hyper_util::client::legacy::Error,
        connection: &CaptureConnection,
    ) -> Failure {
        let before_sending = error.is_connect() || !has_connection(connection);
        if error.is_connect() && caused_by_timeout(&error) {
            return Failure::NotSent(SendFailure::Timeout {
                kind: TimeoutKind::Connect,
                after: self.connect_timeout,
            });
        }
        let reason = SendFailure::Transport(TransportError(Box::new(error)));
        if before_sending {
            Failure::NotSent(reason)
        } else {
            Failure::Lost(reason)
        }
    }
}

/// Whether hyper had obtained a connection for the request.
fn has_connection(connection: &CaptureConnection) -> bool {
    connection.connection_metadata().is_some()
}

/// Whether an I/O timeout is in `error`'s chain of causes (the connector's connect
/// timeout surfaces as one).
fn caused_by_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No proxy, whatever the environment of the test run says.
    fn no_proxy() -> Matcher {
        Matcher::builder().build()
    }

    fn transport(proxies: Matcher) -> Transport {
        Transport::new(
            Duration::from_secs(2),
            Duration::from_secs(60),
            proxies,
            None,
        )
    }

    /// A GET of `url` through `transport`, with a short timeout.
    async fn get_url(transport: &Transport, url: &str) -> Result<Answer, Failure> {
        transport
            .exchange(
                Method::GET,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Duration::from_secs(5),
                1024,
            )
            .await
    }

    /// A proxy that accepts one connection, keeps its request head, answers `CONNECT`
    /// with 200 and then closes (so the TLS handshake through it fails).
    async fn one_shot_proxy() -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://bunq-user:s3cret@{}",
            listener.local_addr().expect("addr")
        );
        let head = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = socket
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, head)
    }

    #[tokio::test]
    async fn an_https_destination_goes_through_the_proxy_with_its_credentials() {
        let (proxy, head) = one_shot_proxy().await;
        let via_proxy = transport(Matcher::builder().https(proxy).build());
        let outcome = get_url(&via_proxy, "https://api.bunq.example/v1/user").await;
        // The tunnel and the TLS handshake are the connector's: nothing was sent.
        assert!(
            matches!(outcome, Err(Failure::NotSent(SendFailure::Transport(_)))),
            "{outcome:?}"
        );
        let head = head.await.expect("proxy");
        assert!(
            head.starts_with("CONNECT api.bunq.example:443 HTTP/1.1\r\n"),
            "{head}"
        );
        // base64("bunq-user:s3cret")
        assert!(
            head.contains("Basic YnVucS11c2VyOnMzY3JldA=="),
            "the proxy's credentials are sent: {head}"
        );
    }

    #[tokio::test]
    async fn a_plain_http_destination_is_reached_directly_even_with_a_proxy() {
        use std::sync::atomic::Ordering;
        let (addr, accepted) = counting_server();
        let (proxy, head) = one_shot_proxy().await;
        let proxies = Matcher::builder().all(proxy).build();
        let answer = get_url(&transport(proxies), &format!("http://{addr}/v1/user")).await;
        assert_eq!(answer.ok().map(|a| a.status), Some(StatusCode::OK));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert!(!head.is_finished(), "the proxy saw no connection");
        head.abort();
    }

    /// An https:// base goes through rustls: a server that answers in plain HTTP fails
    /// the handshake (a transport error), and nothing is read as a response.
    #[tokio::test]
    async fn https_is_spoken_to_an_https_base() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut hello = [0u8; 5];
            socket.read_exact(&mut hello).await.expect("read");
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await;
            hello
        });
        let outcome = get_url(&transport(no_proxy()), &format!("https://{addr}/v1/user")).await;
        assert!(
            matches!(outcome, Err(Failure::NotSent(SendFailure::Transport(_)))),
            "{outcome:?}"
        );
        let hello = server.await.expect("server");
        assert_eq!(
            hello[0], 0x16,
            "a TLS handshake record opened the connection"
        );
    }

    /// A server that reads one request, writes `answer` and closes the connection (or,
    /// with `hold`, keeps it open without a word more).
    async fn answering_then(answer: &'static [u8], hold: bool) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer).await;
                if hold {
                    held.push(socket);
                }
            }
        });
        addr
    }

    /// A GET of `addr` with a 300 ms total timeout.
    async fn get_within_300ms(transport: &Transport, url: &str) -> Result<Answer, Failure> {
        transport
            .exchange(
                Method::GET,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Duration::from_millis(300),
                1024,
            )
            .await
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_sent() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let outcome = get_url(&transport(no_proxy()), &format!("http://{addr}/v1/user")).await;
        assert!(
            matches!(outcome, Err(Failure::NotSent(SendFailure::Transport(_)))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_cut_after_the_request_is_lost_not_unsent() {
        let addr = answering_then(b"", false).await;
        let outcome = get_url(&transport(no_proxy()), &format!("http://{addr}/v1/user")).await;
        assert!(
            matches!(outcome, Err(Failure::Lost(SendFailure::Transport(_)))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_body_cut_midway_is_lost() {
        let addr = answering_then(
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"Resp",
            false,
        )
        .await;
        let outcome = get_url(&transport(no_proxy()), &format!("http://{addr}/v1/user")).await;
        assert!(
            matches!(outcome, Err(Failure::Lost(SendFailure::Transport(_)))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_stalls_after_reading_the_request_times_out_as_lost() {
        let addr = answering_then(b"", true).await;
        let outcome =
            get_within_300ms(&transport(no_proxy()), &format!("http://{addr}/v1/user")).await;
        assert!(
            matches!(
                outcome,
                Err(Failure::Lost(SendFailure::Timeout { kind: TimeoutKind::Total, after }))
                    if after == Duration::from_millis(300)
            ),
            "{outcome:?}"
        );
    }

    /// A proxy that accepts the TCP connection but never answers `CONNECT`: the
    /// connection to bunq is never made, so when the total timeout elapses nothing of the
    /// request can have been sent.
    #[tokio::test]
    async fn a_timeout_while_still_connecting_was_not_sent() {
        let stalling_proxy = answering_then(b"", true).await;
        let via_proxy = transport(
            Matcher::builder()
                .https(format!("http://{stalling_proxy}"))
                .build(),
        );
        let outcome = get_within_300ms(&via_proxy, "https://api.bunq.example/v1/user").await;
        assert!(
            matches!(
                outcome,
                Err(Failure::NotSent(SendFailure::Timeout {
                    kind: TimeoutKind::Total,
                    ..
                }))
            ),
            "{outcome:?}"
        );
    }

    /// A keep-alive HTTP/1.1 server on its own thread that answers `{}` to every
    /// request; it counts the connections it accepted.
    fn counting_server() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let accepted = Arc::new(AtomicUsize::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let counter = Arc::clone(&accepted);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                while let Ok((mut socket, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = socket.read(&mut buf).await {
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                            if n == 0 || socket.write_all(answer).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        });
        (addr, accepted)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// One GET through `transport`, on `runtime` (of the calling thread).
    fn get(runtime: &tokio::runtime::Runtime, transport: &Transport, addr: std::net::SocketAddr) {
        let answer = runtime.block_on(get_url(transport, &format!("http://{addr}/v1/user")));
        assert_eq!(answer.ok().map(|a| a.status), Some(StatusCode::OK));
    }

    #[test]
    fn each_thread_reuses_its_own_connections_only() {
        use std::sync::atomic::Ordering;
        let (addr, accepted) = counting_server();
        let shared = transport(no_proxy());
        let here = runtime();
        let call = |transport: &Transport| get(&here, transport, addr);
        call(&shared);
        call(&shared);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one thread, one connection"
        );
        let clone = shared.clone();
        std::thread::spawn(move || get(&runtime(), &clone, addr))
            .join()
            .expect("thread");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "another thread, its own"
        );
        call(&shared);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the first pool is still there"
        );
        // Another transport on the same thread has a pool of its own.
        call(&transport(no_proxy()));
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
