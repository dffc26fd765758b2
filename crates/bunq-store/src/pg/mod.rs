//! The PostgreSQL backend (feature `postgres`): the same tables, seals and guarantees as
//! the SQLite one, for several gateways sharing one database.
//!
//! # Driver
//! tokio-postgres with a deadpool-postgres pool: both async (no blocking thread needed,
//! unlike rusqlite), maintained together for years, and with nothing checked against a
//! database at compile time (sqlx's `query!` macros want a database or an offline cache
//! at build time; its runtime API would do, but brings a second SQL toolkit beside
//! rusqlite for no gain). Migrations run through refinery, fed from the table of
//! versions in `schema.rs` that SQLite's migrations come from too.
//!
//! # Concurrency
//! The SQLite backend serializes every write on one thread; here several processes may
//! write at once, so each guarantee is held by the database itself:
//! - writes that concern one user (grants, consents, contexts, deletion) take a
//!   transaction-scoped advisory lock on the user ([`lock_owner`]), which orders them
//!   as SQLite's single writer does;
//! - a state is taken by one `UPDATE ... WHERE taken_at IS NULL RETURNING`;
//! - an idempotency key is inserted with `ON CONFLICT DO NOTHING`, else its row is
//!   locked (`FOR UPDATE`) before it is read;
//! - events are inserted under one advisory lock held to the commit, so that `seq`
//!   order is commit order and the pull API's cursor never passes an event that commits
//!   later (a sequence alone hands out numbers before the commits that make them
//!   visible);
//! - a key rotation locks every sealed table against writes (`SHARE ROW EXCLUSIVE`).
//!
//! - relays sharing the database claim due events with a lease
//!   (`claim_due_events`: `FOR UPDATE SKIP LOCKED` on the heads of the users' queues);
//! - the coordination of gateways (replicas' liveness, the session-server turn per
//!   egress, session-creation claims, user-change notifications) is in `fleet.rs`.
//!
//! Every connection also runs with `lock_timeout = 5s`, SQLite's busy timeout: a
//! session holding a lock for longer makes statements fail rather than hang.
//!
//! # Durability
//! Every connection runs with `synchronous_commit = on` ([`Durability::Full`], whatever
//! the server's default) or `off` ([`Durability::ProcessCrash`]: a commit may be lost
//! if the server crashes, never if the gateway does).

mod audit;
mod consents;
mod context;
mod events;
pub(crate) mod fleet;
mod idempotency;
mod rotate;
mod state;
mod users;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use ring::digest::{SHA256, digest};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use crate::schema::{Durability, SCHEMA_VERSION, STEPS};
use crate::vault::Vault;
use crate::{MasterKey, StoreError, StoreOptions};

/// The parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How long a caller waits for a pooled connection, and for a new one to connect.
const POOL_WAIT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a statement waits for a lock another session holds (a row, a table, an
/// advisory lock) before it fails: SQLite's busy timeout, so that a stuck session (an
/// operator's open transaction) fails requests instead of hanging them.
const LOCK_TIMEOUT: &str = "5s";

/// The advisory lock that lets one process at a time migrate the schema.
const MIGRATION_LOCK: i64 = 0x6275_6e71_5f6d_6967; // "bunq_mig"

/// The PostgreSQL backend's state: the pool and the vault.
pub(crate) struct PgStore {
    pool: Pool,
    vault: Vault,
    /// The URL without its password, for `Debug`.
    shown: String,
    /// The connection settings, for connections outside the pool (LISTEN).
    pub(crate) config: tokio_postgres::Config,
    /// This gateway's replica id and egress in fleet mode ([`StoreOptions::fleet_member`]).
    pub(crate) replica: Option<String>,
    pub(crate) egress: Option<String>,
}

impl Deref for PgStore {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        &self.vault
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => StoreError::Postgres(e),
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Pool(other.to_string()),
        }
    }
}

impl PgStore {
    /// Connects, migrates the schema to [`SCHEMA_VERSION`] and prepares the audit key.
    pub(crate) async fn open(
        url: &crate::PostgresUrl,
        key: MasterKey,
        options: &StoreOptions,
    ) -> Result<Arc<PgStore>, StoreError> {
        let config = connection_config(url, options.durability)?;
        let mut migrator = connect(&config).await?;
        lock_migrations(&migrator).await?;
        let prepared = async {
            migrate(&mut migrator, None).await?;
            audit::prepare(&mut migrator, &key).await
        }
        .await;
        let unlocked = unlock_migrations(&migrator).await;
        let audit_key = prepared?;
        unlocked?;
        drop(migrator);

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A connection is checked with a cheap query only when it was closed;
                // a broken one fails its statement and the pool drops it.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(Arc::new(PgStore {
            pool,
            vault: Vault::new(key, audit_key),
            shown: url.to_string(),
            config,
            replica: options.replica.clone(),
            egress: options.egress.clone(),
        }))
    }

    /// The URL, without its password.
    pub(crate) fn location(&self) -> &str {
        &self.shown
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    pub(crate) async fn integrity_check(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        let version = schema_version(&client).await?;
        if version == Some(SCHEMA_VERSION as i64) {
            Ok(())
        } else {
            Err(StoreError::Integrity(format!(
                "the PostgreSQL schema is at version {version:?}, this build writes {SCHEMA_VERSION}"
            )))
        }
    }

    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        self.pool.close();
        Ok(())
    }
}

/// The driver's configuration from `url`, with the settings every connection needs.
pub(crate) fn connection_config(
    url: &crate::PostgresUrl,
    durability: Durability,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e| StoreError::InvalidInput(format!("not a valid PostgreSQL URL: {e}")))?;
    let sync = match durability {
        Durability::Full => "on",
        Durability::ProcessCrash => "off",
    };
    // Appended to what the URL asks for (a search_path, say), never replacing it.
    let ours = format!("-c synchronous_commit={sync} -c lock_timeout={LOCK_TIMEOUT}");
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours,
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("bunq-store");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(config)
}

/// One connection outside the pool (for the migrations), its driver task spawned.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres migration connection ended");
        }
    });
    Ok(client)
}

/// Waits for the advisory lock under which the schema is migrated and the audit key
/// created, so that gateways starting together do it one after the other. A session
/// lock: released by [`unlock_migrations`], or by the server when the connection dies.
pub(crate) async fn lock_migrations(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    // A long migration of another gateway is waited for, however long it takes.
    client.batch_execute("SET lock_timeout = 0").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(())
}

pub(crate) async fn unlock_migrations(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(())
}

/// Brings the schema to `target` (the latest when `None`); the caller holds the
/// migration lock. refinery refuses a database that holds a version this build does
/// not know (a newer build migrated it) or whose applied SQL differs from ours.
pub(crate) async fn migrate(
    client: &mut tokio_postgres::Client,
    target: Option<u32>,
) -> Result<(), StoreError> {
    let migrations = STEPS
        .iter()
        .map(|step| {
            refinery::Migration::unapplied(
                &format!("V{}__{}", step.version, step.name),
                step.postgres,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runner = refinery::Runner::new(&migrations)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .set_target(match target {
            Some(version) => refinery::Target::Version(version),
            None => refinery::Target::Latest,
        });
    runner.run_async(client).await?;
    Ok(())
}

/// The latest version refinery applied, if any.
async fn schema_version<C: GenericClient>(client: &C) -> Result<Option<i64>, StoreError> {
    let exists = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .try_get::<_, bool>(0)?;
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT MAX(version)::BIGINT FROM refinery_schema_history",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Builds the schema at an earlier `version` in the database `url` names (0: nothing),
/// so that tests can prove that a store opens and migrates from every version. Not for
/// production use.
pub(crate) async fn create_at_version(
    url: &crate::PostgresUrl,
    version: usize,
) -> Result<(), StoreError> {
    let config = connection_config(url, Durability::Full)?;
    let mut client = connect(&config).await?;
    if version > 0 {
        let version = u32::try_from(version)
            .map_err(|_| StoreError::InvalidInput(format!("schema version {version}")))?;
        lock_migrations(&client).await?;
        let migrated = migrate(&mut client, Some(version)).await;
        unlock_migrations(&client).await?;
        migrated?;
    }
    Ok(())
}

impl crate::Store {
    /// Opens the PostgreSQL database `url` names (`postgres://user:password@host/db`),
    /// migrates its schema, and makes a pool of at most `options.connections`
    /// connections. Several stores (several gateways) may share one database. The URL
    /// never appears in errors or `Debug` with its password.
    pub async fn open_postgres(
        url: &str,
        key: MasterKey,
        options: StoreOptions,
    ) -> Result<crate::Store, StoreError> {
        let url = crate::PostgresUrl::parse(url)?;
        let pg = PgStore::open(&url, key, &options).await?;
        Ok(crate::Store(crate::db::Backend::Postgres(pg)))
    }
}

/// Builds a PostgreSQL schema at an earlier `version` (0: nothing) in the database `url`
/// names, so that tests can prove that [`crate::Store::open_postgres`] migrates from
/// every version. Not for production use.
#[doc(hidden)]
pub async fn create_postgres_at_version(url: &str, version: usize) -> Result<(), StoreError> {
    create_at_version(&crate::PostgresUrl::parse(url)?, version).await
}

/// The key of the advisory lock that orders the writes concerning one user: the
/// `user_ref` a credential belongs to (`{user_ref}/...` or the name itself; an
/// operator's API key is its own owner). A hash collision only makes two users wait for
/// each other.
pub(crate) fn owner_lock_key(credential: &str) -> i64 {
    let owner = credential.split('/').next().unwrap_or(credential);
    let mut input = Vec::with_capacity(owner.len() + 24);
    input.extend_from_slice(b"bunq-store user lock\0");
    input.extend_from_slice(owner.as_bytes());
    let hash = digest(&SHA256, &input);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_ref()[..8]);
    i64::from_be_bytes(bytes)
}

/// Takes the lock of `credential`'s user until the transaction ends.
pub(crate) async fn lock_owner<C: GenericClient>(
    client: &C,
    credential: &str,
) -> Result<(), StoreError> {
    execute(
        client,
        "SELECT pg_advisory_xact_lock($1)",
        &[&owner_lock_key(credential)],
    )
    .await?;
    Ok(())
}

/// Runs a statement (prepared once per connection); returns the rows it changed.
pub(crate) async fn execute<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, params).await?)
}

/// The rows of a query.
pub(crate) async fn query<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// The row of a query that finds at most one.
pub(crate) async fn query_opt<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_opt(&statement, params).await?)
}

/// The row of a query that finds exactly one.
pub(crate) async fn query_one<C: GenericClient>(
    client: &C,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_one(&statement, params).await?)
}

/// A count as the API reports it.
pub(crate) fn count(row: &Row) -> Result<u64, StoreError> {
    crate::schema::from_db_id(row.try_get::<_, i64>(0)?, "count")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_credentials_share_the_users_lock() {
        assert_eq!(owner_lock_key("alice"), owner_lock_key("alice/0123abcd"));
        assert_ne!(owner_lock_key("alice"), owner_lock_key("bob"));
    }
}
