//! The `bunq-gateway` binary: `bunq-gateway [serve] --config PATH`,
//! `bunq-gateway check-config --config PATH`,
//! `bunq-gateway rotate-key --config PATH --new-key-file PATH`, or
//! `bunq-gateway migrate-store --config PATH --from FILE --to postgres://...`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bunq_gateway::{Config, GatewayError};
use clap::{Parser, Subcommand};

/// Connects end users' bunq accounts over OAuth and calls bunq for them.
///
/// Every config key may also come from the environment as BUNQ_GATEWAY_<SECTION>_<KEY>
/// (top-level keys: BUNQ_GATEWAY_<KEY>), e.g. BUNQ_GATEWAY_OAUTH_CLIENT_SECRET.
/// Logs go to stderr, filtered by RUST_LOG (default: info).
#[derive(Parser)]
#[command(name = "bunq-gateway", version)]
struct Cli {
    /// The TOML config file (without it, the config comes from the environment alone).
    #[arg(long, global = true, value_name = "PATH", env = bunq_gateway::config::CONFIG_PATH_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Validate the config and the master key, then exit (0 when valid).
    CheckConfig,
    /// Re-encrypt every secret in the database under a new master key (gateway stopped),
    /// then point security.encryption_key_file at the new key.
    RotateKey {
        /// The new key: 32 raw bytes or their base64, in a file only its owner may read.
        #[arg(long, value_name = "PATH")]
        new_key_file: PathBuf,
    },
    /// Copy a SQLite database into an empty PostgreSQL database (gateway stopped), values
    /// still sealed under the config's encryption key, then point `database` at it.
    MigrateStore {
        /// The SQLite file to copy (migrated to the current schema first, as a start
        /// would; nothing else in it changes).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL database to fill: postgres://user:password@host:port/db. It
        /// must hold no rows; its schema is created here. Also read from
        /// BUNQ_MIGRATE_TO, which keeps the password out of the process list.
        #[arg(
            long,
            value_name = "URL",
            env = "BUNQ_MIGRATE_TO",
            hide_env_values = true
        )]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&GatewayError::Config(e)),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match bunq_gateway::check_config(&config) {
            Ok(()) => {
                if !config.ignored_environment.is_empty() {
                    println!(
                        "ignored (no such config key): {}",
                        config.ignored_environment.join(", ")
                    );
                }
                println!("config OK");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::RotateKey { new_key_file } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&GatewayError::Serve(e)),
            };
            match runtime.block_on(bunq_gateway::rotate_key(&config, &new_key_file)) {
                Ok(report) => {
                    println!(
                        "re-encrypted {} values from key {} to key {} ({} were already under it); now set security.encryption_key_file = {:?} and start the gateway",
                        report.reencrypted,
                        report.old_key_id,
                        report.new_key_id,
                        report.already_new,
                        new_key_file.display().to_string()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::MigrateStore { from, to } => migrate_store(&config, &from, &to),
        Command::Serve => {
            if let Err(e) = bunq_gateway::check_config(&config) {
                return fail(&e);
            }
            bunq_gateway::init_tracing(config.log_format);
            if !config.ignored_environment.is_empty() {
                // Names only: their values may be anything, secrets included.
                tracing::warn!(
                    variables = config.ignored_environment.join(", "),
                    "ignoring BUNQ_GATEWAY_* variables that name no config key"
                );
            }
            // The runtime that builds the gateway becomes its first worker; see
            // `Gateway::serve_on_workers` for why each worker has a runtime of its own.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&GatewayError::Serve(e)),
            };
            let workers = config.http.worker_count();
            let started = runtime.block_on(start(config, workers));
            match started.and_then(|(gateway, listener)| {
                gateway.serve_on_workers(runtime, listener, workers, shutdown_signal())
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// `migrate-store`: the copy, then what was copied and what to do next on stdout.
fn migrate_store(config: &bunq_gateway::Config, from: &Path, to: &str) -> ExitCode {
    // Parsed here rather than by clap, whose error would quote the URL, password and all.
    let to = match bunq_store::PostgresUrl::parse(to) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("bunq-gateway: --to: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&GatewayError::Serve(e)),
    };
    let report = match runtime.block_on(bunq_gateway::migrate_store(config, from, &to)) {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    // `to` shows `***` for its password (PostgresUrl's Display).
    println!(
        "copied {} into {to} (schema version {}, values sealed under key {}):",
        from.display(),
        report.schema_version,
        report.key_id
    );
    for (table, rows) in &report.tables {
        println!("  {table:<18} {rows:>8}");
    }
    println!("  {:<18} {:>8}", "total", report.total_rows());
    let password = if to.to_string() == to.expose() {
        ""
    } else {
        " (the password in place of ***, or the whole URL in BUNQ_GATEWAY_DATABASE)"
    };
    println!("next: set database = \"{to}\"{password} and start the gateway");
    ExitCode::SUCCESS
}

/// Builds the gateway, binds its address and announces it.
async fn start(
    config: Config,
    workers: std::num::NonZeroUsize,
) -> Result<(bunq_gateway::Gateway, tokio::net::TcpListener), GatewayError> {
    let listen = config.listen;
    let gateway = bunq_gateway::Gateway::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(GatewayError::Serve)?;
    tracing::info!(%bound, workers, "listening");
    // Tools that start the gateway on port 0 read the address from this line; it is
    // printed once the database is open and checked.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on http://{bound}");
    let _ = stdout.flush();
    drop(stdout);
    Ok((gateway, listener))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// One line on stderr, and a non-zero exit.
fn fail(e: &GatewayError) -> ExitCode {
    eprintln!("bunq-gateway: {e}");
    ExitCode::from(match e {
        GatewayError::Config(_) => 2,
        _ => 1,
    })
}
