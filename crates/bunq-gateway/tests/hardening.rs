//! Issue 17 through the real binary: the proxy path allow-list, the listener's limits,
//! the callback's state check before any database write, and `return_to`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{API_KEY, Env};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// `http://127.0.0.1:PORT` → `127.0.0.1:PORT`.
fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Sends `request` as is on a fresh connection and returns the response's status code
/// (0 when the gateway closed the connection without an answer).
async fn raw_status(base: &str, request: &str) -> u16 {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the gateway answers");
    if read.is_err() {
        return 0;
    }
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn proxied_get(path: &str) -> String {
    format!(
        "GET /v1/users/nobody/bunq/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
         {API_KEY}\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_paths_outside_the_allow_list_are_refused_as_sent() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    // Sent raw: an HTTP client library would normalise some of these itself.
    for path in [
        "%2Fsession-server",
        "x%2F..%2F..%2Fsession-server",
        "\\session-server",
        "session-server;x",
        "%73ession-server",
        "user/1/..",
        "user//1",
    ] {
        let status = raw_status(&gw.base, &proxied_get(path)).await;
        assert_eq!(status, 400, "{path}");
    }
    assert_eq!(
        raw_status(&gw.base, &proxied_get("session-server")).await,
        403
    );
    // A bunq path of the allowed shape reaches the user lookup (unknown here).
    assert_eq!(
        raw_status(
            &gw.base,
            &proxied_get("user/1/monetary-account-bank?count=10")
        )
        .await,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_connections_neither_block_others_nor_stay_open() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|config| {
        config.replace("workers = 2", "workers = 2\nheader_read_timeout_ms = 1500")
    });
    // 300 connections that send a request line and never the blank line after it.
    let mut half_sent = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(addr(&gw.base)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        half_sent.push(stream);
    }
    let opened = Instant::now();
    let served = env
        .http
        .get(format!("{}/healthz", gw.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    // Each is closed by the gateway after the header-read timeout (read: EOF or reset),
    // not kept forever.
    for mut stream in half_sent {
        let mut buf = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("the gateway closes a half-sent connection");
        if let Ok(n) = read {
            // hyper may answer 408 before closing; then the close follows.
            if n > 0 {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                })
                .await;
            }
        }
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(1000),
        "closed after the timeout, not at once: {:?}",
        opened.elapsed()
    );
    // A connection that sends nothing at all is closed as well.
    let mut silent = TcpStream::connect(addr(&gw.base)).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the gateway closes a silent connection");
    assert!(read.as_ref().map_or(true, |n| *n == 0), "{read:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_holds_new_connections_until_one_closes() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|config| {
        config.replace(
            "workers = 2",
            "workers = 2\nheader_read_timeout_ms = 1000\nmax_connections = 4",
        )
    });
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr(&gw.base)).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let served = env
        .http
        .get(format!("{}/healthz", gw.base))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served only once a held connection timed out: {:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_states_are_refused_without_touching_the_database() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    // Another connection holds the database's write lock (on PostgreSQL: the states
    // table's): a callback that reached the store would wait out the busy or lock
    // timeout (5 s).
    let pg_holder = env.lock_states_table().await;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let db = env.dir.path().join("gateway.sqlite3");
    let on_sqlite = pg_holder.is_none();
    let holder = std::thread::spawn(move || {
        if !on_sqlite {
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
            return;
        }
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let long = "A".repeat(4000);
    for state in [
        long.as_str(),
        "short",
        "%00AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%0A",
        "%3Cscript%3EAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let started = Instant::now();
        let response = env
            .http
            .get(format!("{}/oauth/callback?code=c&state={state}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{state}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_state", "{state}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{state}: waited for the database"
        );
    }
    // The lock is real: a state of the issued shape does wait for the database.
    let started = Instant::now();
    let shaped = "A".repeat(43);
    let _ = env
        .http
        .get(format!("{}/oauth/callback?code=c&state={shaped}", gw.base))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    drop(pg_holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn return_to_is_stored_as_validated_and_the_redirect_never_fails() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let authorize = |return_to: &str| {
        env.http
            .post(format!("{}/v1/authorizations", gw.base))
            .bearer_auth(API_KEY)
            .json(&json!({"user_ref": "carla", "return_to": return_to}))
            .send()
    };
    // Control characters: refused up front, not a 500 after the user connected.
    for bad in [
        "https://app.example/after\tx",
        "https://app.example/after\nx",
        "https://app.example/after\r\nSet-Cookie: x=1",
        "https://app.\u{0}example/",
        "https://app.example/\u{7f}",
    ] {
        let response = authorize(bad).await.unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_return_to", "{bad:?}");
    }
    // A URL the parser normalises is stored (and redirected to) normalised.
    let response = authorize("HTTPS://App.Example/a b/../after?x=é")
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let auth: Value = response.json().await.unwrap();
    let end_user = env.end_user();
    let callback = env
        .consent(
            auth["authorization_url"].as_str().unwrap(),
            end_user.user_id,
        )
        .await;
    let redirect = env.http.get(callback).send().await.unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://app.example/after?x=%C3%A9&status="),
        "{location}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_idle_and_half_sent_connections_do_not_stop_new_requests() {
    let env = Env::new().await;
    // The default limits (10,000 connections, 10 s header read, 60 s idle).
    let gw = env.start_gateway_edited(|config| config);
    let mut held = Vec::with_capacity(5_000);
    for i in 0..5_000 {
        let mut stream = TcpStream::connect(addr(&gw.base)).await.unwrap();
        if i % 2 == 0 {
            // Half a request: the request line and one header, never the blank line.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    // Every connection is accepted and held: new ones are still served, at once.
    for _ in 0..20 {
        let served = env
            .http
            .get(format!("{}/healthz", gw.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200);
    }
    let r = env
        .http
        .get(format!("{}/v1/users/alice", gw.base))
        .bearer_auth(API_KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a request through the database as well");
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_and_query_strings_are_refused_with_4xx() {
    let env = Env::new().await;
    let gw = env.start_gateway_edited(|config| config);
    // One header of 1 MiB: beyond hyper's header buffer.
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let status = raw_status(&gw.base, &big_header).await;
    assert!((400..500).contains(&status), "oversized header: {status}");
    // 10,000 small headers.
    let many: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = raw_status(
        &gw.base,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"),
    )
    .await;
    assert!((400..500).contains(&status), "too many headers: {status}");
    // A query string of 1 MiB on the proxy.
    let status = raw_status(
        &gw.base,
        &proxied_get(&format!(
            "user/1/monetary-account?q={}",
            "a".repeat(1 << 20)
        )),
    )
    .await;
    assert!((400..500).contains(&status), "oversized query: {status}");
    // The gateway still serves.
    let served = env
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}
