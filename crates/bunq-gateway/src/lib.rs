#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod app;
mod auth;
mod callbacks;
pub mod config;
mod connect;
mod connector;
mod error;
mod fleet;
mod idempotent;
mod listener;
mod metrics;
mod proxy;
mod relay;

use std::future::Future;

pub use config::{Config, ConfigError, LogFormat};
pub use error::GatewayError;

/// Entry points for the fuzz targets (`fuzz/`), which build outside this crate: the
/// parsers of outside input that are otherwise private. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// The proxy's check of `/v1/users/{ref}/bunq/{path}?{query}`: the target forwarded
    /// to bunq, or `None` when refused.
    pub fn proxy_target(path: &str, query: Option<&str>) -> Option<String> {
        crate::proxy::upstream_target(path, query).ok()
    }

    /// A bunq callback body as the receiving route reads it: `Some(is_revocation)` when
    /// it is a NotificationUrl, and the object `callbacks.confirm` would re-fetch.
    pub fn callback_body(body: &[u8]) -> (Option<bool>, Option<(String, u64, u64)>) {
        let revocation = crate::callbacks::is_revocation_body(body);
        let object = serde_json::from_slice(body)
            .ok()
            .and_then(|v| crate::relay::named_object(&v));
        (revocation, object)
    }

    /// The Standard Webhooks signature of an event and the body sent, from a
    /// `webhook_secret` text; `None` when the secret is refused.
    pub fn webhook(
        secret: &str,
        id: &str,
        timestamp: u64,
        payload: &[u8],
    ) -> Option<(String, Vec<u8>)> {
        let secret = crate::config::WebhookSecret::parse(secret).ok()?;
        let body =
            crate::relay::envelope(id, "bunq.PAYMENT", "fuzz", std::time::UNIX_EPOCH, payload);
        let signature = crate::relay::sign(&secret, id, timestamp, &body);
        Some((signature, body))
    }
}

/// Serves the gateway on `listener` until `shutdown` completes: [`Gateway::build`] then
/// [`Gateway::serve`].
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    Gateway::build(config)
        .await?
        .serve(listener, shutdown)
        .await
}

/// A gateway whose database is open and checked (schema, master key; on SQLite the full
/// integrity check runs in the background from here, see `/readyz`) and whose
/// crates are wired: what is left is to serve. Building before announcing the address
/// means a caller that sees the address sees a gateway that can answer.
pub struct Gateway {
    config: Config,
    state: app::Shared,
    /// `admin_listen`, bound at build so that a taken port fails the start.
    admin: Option<tokio::net::TcpListener>,
}

impl Gateway {
    /// Opens and checks the database, builds the crates' objects, forgets the OAuth
    /// states that expired while the gateway was down, marks the idempotent requests a
    /// stopped gateway left in flight as of unknown outcome, and resumes connecting the
    /// consents it left (on the caller's runtime, in the background).
    pub async fn build(config: Config) -> Result<Self, GatewayError> {
        let state = app::build(&config).await?;
        app::check_integrity_in_background(&state, &config);
        sweep_expired_states(&state).await;
        fleet::join(&state).await?;
        let unknown = state.store.recover_idempotency().await?;
        if unknown > 0 {
            tracing::warn!(
                unknown,
                "requests were in flight when the gateway stopped; a retry with their \
                 Idempotency-Key resends them with the same request id"
            );
        }
        let resumed = connector::Connector::resume(&state).await?;
        if resumed > 0 {
            tracing::info!(resumed, "resuming consents that were being connected");
        }
        let admin = match config.admin_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| GatewayError::Bind { addr, source })?;
                let bound = listener.local_addr().map_err(GatewayError::Serve)?;
                tracing::info!(%bound, "admin listener (/metrics, /healthz, /readyz)");
                Some(listener)
            }
            None => None,
        };
        Ok(Self {
            config,
            state,
            admin,
        })
    }

    /// Where the admin listener (`admin_listen`) is bound, if one is configured.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (at most `http.shutdown_grace_seconds`), and closes the
    /// database. Everything runs on the caller's runtime.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Self {
            config,
            state,
            admin,
        } = self;
        let serving = serve_connections(
            listener,
            app::router(state.clone()),
            announced(shutdown),
            listener::Limits::new(&config.http),
        );
        sweeping(&state, admin, serving).await?;
        close(&state).await
    }

    /// Serves like [`serve`](Self::serve), on `workers` threads that each run their own
    /// single-threaded tokio runtime, accept on the same listening socket, and serve the
    /// connections they accepted start to finish, as nginx's worker processes do. Blocks
    /// until every worker is done.
    ///
    /// `runtime`, the one the gateway was built on, becomes the first worker; it also
    /// runs `shutdown`, the expired-state sweeper, and the closing of the database.
    ///
    /// Why: a proxied request crosses two sockets and several tasks (the caller's
    /// connection, the handler, the connection to bunq). On a work-stealing runtime they
    /// wander between threads and wake each other across them; on one worker's runtime,
    /// with bunq-session's connection pool per thread, a request stays on one thread
    /// from accept to answer (measured in docs/PERFORMANCE.md). The session cache, the
    /// store and the rate limiter stay shared by all workers: one gateway, one view of
    /// every user's session, one budget of bunq calls.
    pub fn serve_on_workers(
        self,
        runtime: tokio::runtime::Runtime,
        listener: tokio::net::TcpListener,
        workers: std::num::NonZeroUsize,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Self {
            config,
            state,
            admin,
        } = self;
        // One connection budget for every worker.
        let limits = listener::Limits::new(&config.http);
        let router = app::router(state.clone());
        let listener = {
            let _inside = runtime.enter();
            listener.into_std().map_err(GatewayError::Serve)?
        };
        let crew = Crew::new(workers.get());
        let outcome = std::thread::scope(|scope| {
            let mut others = Vec::with_capacity(workers.get() - 1);
            for n in 1..workers.get() {
                let (listener, router, mate, limits) = (
                    listener.try_clone(),
                    router.clone(),
                    crew.clone(),
                    limits.clone(),
                );
                let worker = std::thread::Builder::new()
                    .name(format!("gateway-worker-{n}"))
                    .spawn_scoped(scope, move || {
                        mate.run_own_runtime(listener, router, limits)
                    });
                match worker {
                    Ok(worker) => others.push(worker),
                    Err(e) => {
                        // The workers already running stop; none waits for those
                        // that never will.
                        crew.give_up(workers.get());
                        return Err(GatewayError::Serve(e));
                    }
                }
            }
            let first = runtime.block_on(sweeping(
                &state,
                admin,
                crew.clone()
                    .work(listener, router, announced(shutdown), limits),
            ));
            others
                .into_iter()
                .map(|worker| {
                    worker.join().unwrap_or_else(|_| {
                        Err(GatewayError::Serve(std::io::Error::other(
                            "a gateway worker panicked",
                        )))
                    })
                })
                .fold(first, Result::and)
        });
        let closed = runtime.block_on(close(&state));
        outcome.and(closed)
    }
}

/// What the workers of [`Gateway::serve_on_workers`] share: the stop signal, and how many
/// of them are still serving.
#[derive(Clone)]
struct Crew {
    stop: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    serving: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
}

impl Crew {
    fn new(workers: usize) -> Self {
        Self {
            stop: std::sync::Arc::new(tokio::sync::watch::Sender::new(false)),
            serving: std::sync::Arc::new(tokio::sync::watch::Sender::new(workers)),
        }
    }

    /// One worker: serve until `shutdown` completes here or the crew is stopped, then
    /// keep this runtime running until every worker is done. A pooled connection is
    /// driven by the runtime that opened it, and some pools are shared by the workers
    /// (the OAuth token exchange's), so another worker's request in its grace period may
    /// be riding on one of this runtime's connections.
    async fn work(
        self,
        listener: std::net::TcpListener,
        router: axum::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
        limits: listener::Limits,
    ) -> Result<(), GatewayError> {
        let served = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(listener) => {
                let mut stopped = self.stop.subscribe();
                let stop = self.stop.clone();
                let until = async move {
                    tokio::select! {
                        () = shutdown => {
                            stop.send_replace(true);
                        }
                        _ = stopped.wait_for(|stop| *stop) => {}
                    }
                };
                serve_connections(listener, router, until, limits).await
            }
            Err(e) => Err(GatewayError::Serve(e)),
        };
        if served.is_err() {
            // A worker that cannot serve stops the others: a gateway running on fewer
            // workers than asked would hide the failure.
            self.stop.send_replace(true);
        }
        self.serving.send_modify(|n| *n = n.saturating_sub(1));
        let _ = self.serving.subscribe().wait_for(|n| *n == 0).await;
        served
    }

    /// A worker other than the first: its own single-threaded runtime, serving until the
    /// crew stops. One that cannot start counts itself done and stops the others.
    fn run_own_runtime(
        self,
        listener: std::io::Result<std::net::TcpListener>,
        router: axum::Router,
        limits: listener::Limits,
    ) -> Result<(), GatewayError> {
        let started = listener.and_then(|listener| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok((runtime, listener))
        });
        match started {
            Ok((runtime, listener)) => {
                runtime.block_on(self.work(listener, router, std::future::pending(), limits))
            }
            Err(e) => {
                self.give_up(1);
                Err(GatewayError::Serve(e))
            }
        }
    }

    /// For `workers` that never started: counts them done and stops the others.
    fn give_up(&self, workers: usize) {
        self.stop.send_replace(true);
        self.serving.send_modify(|n| *n = n.saturating_sub(workers));
    }
}

/// `shutdown`, logged when it completes.
async fn announced(shutdown: impl Future<Output = ()>) {
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
}

use listener::serve_connections;

/// Closes the database once serving is over.
async fn close(state: &app::Shared) -> Result<(), GatewayError> {
    fleet::leave(state).await;
    state.store.close().await?;
    tracing::info!("stopped");
    Ok(())
}

/// How often expired OAuth states are forgotten. A state lives minutes; an end user who
/// never comes back must not leave a row behind forever.
const STATE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// `serving`, with expired OAuth states and settled events past their retention swept
/// every [`STATE_SWEEP_INTERVAL`] while it runs.
async fn sweeping<T>(
    state: &app::Shared,
    admin: Option<tokio::net::TcpListener>,
    serving: impl Future<Output = T>,
) -> T {
    let sweeper = tokio::spawn(sweep_expired_states_forever(state.clone()));
    // Aborting the relay mid-delivery loses nothing: the event is still pending.
    let relay = tokio::spawn(relay::run(state.clone()));
    let fleet = tokio::spawn(fleet::run(state.clone()));
    // Probes and scrapes are short and carry no state: stopped with the rest.
    let admin = admin.map(|listener| {
        let router = app::admin_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the admin listener stopped");
            }
        })
    });
    let served = serving.await;
    sweeper.abort();
    relay.abort();
    fleet.abort();
    if let Some(admin) = admin {
        admin.abort();
    }
    served
}

async fn sweep_expired_states_forever(state: app::Shared) {
    let mut every = tokio::time::interval(STATE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate and `build` has just swept.
    every.tick().await;
    loop {
        every.tick().await;
        sweep_expired_states(&state).await;
        sweep_settled_events(&state).await;
    }
}

/// Deletes the events settled (delivered, or unconfirmed) longer ago than
/// `callbacks.retention_seconds`: the outbox holds payment data, which is kept only as
/// long as the application may still want to pull it again.
async fn sweep_settled_events(state: &app::Shared) {
    let Some(before) = std::time::SystemTime::now().checked_sub(state.callback_settings.retention)
    else {
        return;
    };
    match state.store.purge_settled_events(before).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "purged settled events past their retention"),
        Err(e) => tracing::warn!(error = %e, "could not purge settled events"),
    }
}

async fn sweep_expired_states(state: &app::Shared) {
    match state.flow.sweep_expired().await {
        Ok(0) => {}
        Ok(swept) => tracing::debug!(swept, "forgot expired OAuth states"),
        Err(e) => tracing::warn!(error = %e, "could not sweep expired OAuth states"),
    }
}

/// Re-seals every secret in the gateway's database from the configured encryption key to
/// the key in `new_key_file` (32 raw bytes or their base64; owner-only, like every key
/// file), in one transaction, and writes "key_rotated" to the audit log. Run it with the
/// gateway stopped, then point `security.encryption_key_file` at the new key: a gateway
/// still holding the old key would refuse the re-sealed values.
pub async fn rotate_key(
    config: &Config,
    new_key_file: &std::path::Path,
) -> Result<bunq_store::RotationReport, GatewayError> {
    let old = app::master_key(&config.security.encryption_key)?;
    let new = bunq_store::MasterKey::from_file(new_key_file)?;
    let store = bunq_store::Store::open_location(
        &config.database,
        old.clone(),
        bunq_store::StoreOptions::default(),
    )
    .await?;
    let report = store.rotate_key(&old, &new).await;
    let closed = store.close().await;
    let report = report?;
    closed?;
    Ok(report)
}

/// Copies the SQLite store `from` into the empty PostgreSQL database `to`, every value
/// still sealed under the configured encryption key (checked against `from` before
/// anything is written), in one transaction; `from` is first migrated to the current
/// schema, as a start would. Run it with the gateway stopped (rows written to `from`
/// meanwhile would not be copied), then set `database` to `to`. A database holding
/// any row is refused and left as it was.
pub async fn migrate_store(
    config: &Config,
    from: &std::path::Path,
    to: &bunq_store::PostgresUrl,
) -> Result<bunq_store::migrate::MigrationReport, GatewayError> {
    let key = app::master_key(&config.security.encryption_key)?;
    Ok(bunq_store::migrate::copy_sqlite_to_postgres(from, to, key).await?)
}

/// Validates what can be validated without serving: the config (already parsed, a
/// PostgreSQL URL included), the master key, and the crates' acceptance of the derived
/// settings. Touches no network and no database, on either backend.
pub fn check_config(config: &Config) -> Result<(), GatewayError> {
    app::check(config)
}

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `info`), `format`
/// picks readable lines or JSON. Logs go to stderr; stdout carries only the
/// `listening on` line.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file or a collector's
    // pipeline break every search for `key=value`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}
