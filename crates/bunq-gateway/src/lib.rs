//! bunq-gateway: connects end users' bunq accounts over OAuth and calls bunq for them.
//!
//! A thin HTTP service over the workspace's crates: `bunq-oauth` for the authorization
//! flow, `bunq-session` for installations, sessions, signing and verification,
//! `bunq-store` for encrypted persistence. An application calls the gateway with a
//! bearer key and never touches an RSA key, an installation or a session:
//!
//! - `POST /v1/authorizations` → an authorize URL to send the end user to;
//! - `GET /oauth/callback` ← bunq sends the end user back; the gateway stores the token
//!   and opens installation, device and session;
//! - `ANY /v1/users/{user_ref}/bunq/{path}` → forwarded to bunq for that user.
//!
//! The contract is in `docs/gateway-api.md` and `docs/openapi.yaml`. The binary is
//! `bunq-gateway --config PATH`; the same server runs in-process through [`serve`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), bunq_gateway::GatewayError> {
//! use bunq_gateway::{Config, serve};
//!
//! let config = Config::load(Some(std::path::Path::new("gateway.toml")))?;
//! let listener = tokio::net::TcpListener::bind(config.listen)
//!     .await
//!     .map_err(|source| bunq_gateway::GatewayError::Bind { addr: config.listen, source })?;
//! serve(config, listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![forbid(unsafe_code)]

mod app;
mod auth;
pub mod config;
mod connect;
mod error;
mod metrics;
mod proxy;

use std::future::Future;

pub use config::{Config, ConfigError, LogFormat};
pub use error::GatewayError;

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

/// A gateway whose database is open and checked (integrity, master key) and whose
/// crates are wired: what is left is to serve. Building before announcing the address
/// means a caller that sees the address sees a gateway that can answer.
pub struct Gateway {
    config: Config,
    state: app::Shared,
}

impl Gateway {
    /// Opens and checks the database, builds the crates' objects, and forgets the OAuth
    /// states that expired while the gateway was down.
    pub async fn build(config: Config) -> Result<Self, GatewayError> {
        let state = app::build(&config).await?;
        sweep_expired_states(&state).await;
        Ok(Self { config, state })
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (at most `http.shutdown_grace_seconds`), and closes the
    /// database.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Self { config, state } = self;
        let sweeper = tokio::spawn(sweep_expired_states_forever(state.clone()));
        let router = app::router(state.clone());
        let grace = config.http.shutdown_grace;
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = stopping_tx.send(());
            })
            .into_future();
        let mut server = std::pin::pin!(server);
        // Biased: the server is polled first, so a server that ended on its own is never
        // polled again through the shutdown branch.
        let served = tokio::select! {
            biased;
            result = &mut server => result,
            _ = stopping_rx => match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?grace, "shutdown grace period over; dropping open requests");
                    Ok(())
                }
            },
        };
        sweeper.abort();
        served.map_err(GatewayError::Serve)?;
        state
            .store
            .close()
            .await
            .map_err(|e| GatewayError::Store(Box::new(e)))?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often expired OAuth states are forgotten. A state lives minutes; an end user who
/// never comes back must not leave a row behind forever.
const STATE_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

async fn sweep_expired_states_forever(state: app::Shared) {
    let mut every = tokio::time::interval(STATE_SWEEP_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate and `build` has just swept.
    every.tick().await;
    loop {
        every.tick().await;
        sweep_expired_states(&state).await;
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
    let new = bunq_store::MasterKey::from_file(new_key_file)
        .map_err(|e| GatewayError::Store(Box::new(e)))?;
    let store = bunq_store::Store::open(&config.database, old.clone())
        .await
        .map_err(|e| GatewayError::Store(Box::new(e)))?;
    let report = store.rotate_key(&old, &new).await;
    let closed = store.close().await;
    let report = report.map_err(|e| GatewayError::Store(Box::new(e)))?;
    closed.map_err(|e| GatewayError::Store(Box::new(e)))?;
    Ok(report)
}

/// Validates what can be validated without serving: the config (already parsed), the
/// master key, and the crates' acceptance of the derived settings. Touches no network
/// and no database.
pub fn check_config(config: &Config) -> Result<(), GatewayError> {
    app::check(config)
}

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `info`), `format`
/// picks readable lines or JSON. Logs go to stderr; stdout carries only the
/// `listening on` line.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        _ => builder.try_init(),
    };
}
