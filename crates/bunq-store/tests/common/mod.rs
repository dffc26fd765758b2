//! Shared fixtures for the integration tests, and the two backends they run on.
//!
//! A test written as `async fn name(db: TestDb)` and listed in
//! `on_both_backends!(name)` runs twice: `name::sqlite` on a file in a temporary
//! directory, and `name::postgres` in a schema of its own (created for the test,
//! dropped after it) of the PostgreSQL database `BUNQ_STORE_POSTGRES_URL` names. Without
//! that variable the PostgreSQL half passes without running, unless `CI=true`: there a
//! missing server is a failure.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bunq_session::{ApiContext, Device, Installation, Session, UserKind};
use bunq_signing::PrivateKey;
use bunq_store::{MasterKey, Store, StoreError, StoreLocation, StoreOptions};
use secrecy::SecretString;

/// Names the PostgreSQL database the tests make their schemas in.
pub const POSTGRES_URL_ENV: &str = "BUNQ_STORE_POSTGRES_URL";

/// Makes `mod name { sqlite, postgres }` tests of each `async fn name(db: TestDb)`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => { $(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$test(crate::common::TestDb::sqlite()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = crate::common::TestDb::postgres().await {
                    super::$test(db).await
                }
            }
        }
    )* };
}

/// RSA generation is slow; one installation key and one "server" key per test binary.
pub fn installation_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap()).clone()
}

pub fn server_key() -> PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap()).clone()
}

/// A temporary directory with a database path inside (SQLite-only tests).
pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    TempDb { dir, path }
}

pub async fn open(path: &Path, key: &MasterKey) -> Store {
    Store::open(path, key.clone()).await.unwrap()
}

/// A realistic context: real keys, device, live session.
pub fn context(
    secret: &str,
    installation_token: &str,
    session_token: &str,
    session_id: u64,
) -> ApiContext {
    ApiContext {
        api_base: "https://public-api.sandbox.bunq.com/v1".to_owned(),
        secret: SecretString::from(secret.to_owned()),
        installation: Installation {
            id: 11,
            token: SecretString::from(installation_token.to_owned()),
            private_key: installation_key(),
            server_public_key: server_key().public_key(),
        },
        device: Some(Device { id: 22 }),
        session: Some(Session {
            id: session_id,
            token: SecretString::from(session_token.to_owned()),
            user_id: 33,
            kind: UserKind::UserApiKey,
            granted_by_user_id: None,
            expires_at: SystemTime::UNIX_EPOCH + Duration::new(1_900_000_000, 123_456_789),
        }),
        psd2: None,
    }
}

/// A raw connection to the same file, for attacks and inspection behind the store's back.
pub fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// The PostgreSQL URL of the test run, if any; under `CI=true` its absence fails.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{POSTGRES_URL_ENV} is not set under CI=true: the PostgreSQL tests must run \
             (.ci/run starts a server and sets it)"
        ),
        _ => {
            eprintln!("{POSTGRES_URL_ENV} not set: the PostgreSQL half of this test did not run");
            None
        }
    }
}

/// One test's database: a SQLite file in a temporary directory, or a PostgreSQL schema
/// of its own (dropped when this is dropped, also after a panic).
pub struct TestDb {
    dir: tempfile::TempDir,
    /// The SQLite file (also set, unused, for PostgreSQL).
    pub path: PathBuf,
    pg: Option<PgSchema>,
}

struct PgSchema {
    base_url: String,
    schema: String,
    /// The base URL with the schema as the connections' search_path.
    url: String,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        TestDb {
            dir,
            path,
            pg: None,
        }
    }

    /// A fresh schema in the test run's PostgreSQL database; `None` (the test passes
    /// without running) when there is none and `CI` is not `true`.
    pub async fn postgres() -> Option<TestDb> {
        let base_url = postgres_url()?;
        let mut bytes = [0u8; 8];
        getrandom(&mut bytes);
        let schema = format!(
            "t_{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let client = connect(&base_url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let sep = if base_url.contains('?') { '&' } else { '?' };
        let url = format!("{base_url}{sep}options=-csearch_path%3D{schema}");
        let mut db = TestDb::sqlite();
        db.pg = Some(PgSchema {
            base_url,
            schema,
            url,
        });
        Some(db)
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// Where the store lives: the file path or the URL (with the test's schema).
    pub fn location(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => self.path.display().to_string(),
        }
    }

    pub async fn try_open_with(
        &self,
        key: &MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let location = StoreLocation::parse(&self.location())?;
        Store::open_location(&location, key.clone(), options).await
    }

    pub async fn try_open(&self, key: &MasterKey) -> Result<Store, StoreError> {
        self.try_open_with(key, StoreOptions::default()).await
    }

    pub async fn open(&self, key: &MasterKey) -> Store {
        self.try_open(key).await.unwrap()
    }

    /// Builds the schema at an earlier version (0: nothing).
    pub async fn create_at_version(&self, version: usize) {
        match &self.pg {
            #[cfg(feature = "postgres")]
            Some(pg) => bunq_store::create_postgres_at_version(&pg.url, version)
                .await
                .unwrap(),
            #[cfg(not(feature = "postgres"))]
            Some(_) => panic!("bunq-store was built without its postgres feature"),
            None => bunq_store::create_at_version(&self.path, version).unwrap(),
        }
    }

    /// Runs `sql` behind the store's back (`$1`-style placeholders are not used: the
    /// statements carry their literals); the rows changed, or the refusal.
    pub async fn exec(&self, sql: &str) -> Result<u64, String> {
        match &self.pg {
            Some(pg) => connect(&pg.url)
                .await
                .execute(sql, &[])
                .await
                .map_err(|e| e.to_string()),
            None => raw(&self.path)
                .execute(sql, [])
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
        }
    }

    /// The first column of `sql`'s rows, as text (NULL as `None`).
    pub async fn strings(&self, sql: &str) -> Vec<Option<String>> {
        match &self.pg {
            Some(pg) => connect(&pg.url)
                .await
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            None => raw(&self.path)
                .prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
        }
    }

    /// The first column of `sql`'s rows, as bytes.
    pub async fn bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        match &self.pg {
            Some(pg) => connect(&pg.url)
                .await
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
            None => raw(&self.path)
                .prepare(sql)
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
        }
    }

    /// A count (`SELECT COUNT(*) ...`).
    pub async fn count(&self, sql: &str) -> i64 {
        match &self.pg {
            Some(pg) => connect(&pg.url)
                .await
                .query_one(sql, &[])
                .await
                .unwrap()
                .get(0),
            None => raw(&self.path).query_row(sql, [], |r| r.get(0)).unwrap(),
        }
    }

    /// A literal for `bytes` in this backend's SQL.
    pub fn bytes_literal(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        if self.is_postgres() {
            format!("'\\x{hex}'::bytea")
        } else {
            format!("X'{hex}'")
        }
    }

    /// Everything the database holds, as an attacker with a copy would read it: the
    /// SQLite file and its WAL, or every column of every row of the test's schema (bytes
    /// as stored, anything else as text).
    /// Every value of the database, column by column, each column in a fixed order (so
    /// that two dumps of unchanged data are equal, whatever order PostgreSQL scans in).
    pub async fn dump(&self) -> Vec<u8> {
        match &self.pg {
            Some(pg) => {
                let client = connect(&pg.url).await;
                let columns = client
                    .query(
                        "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT
                         FROM information_schema.columns WHERE table_schema = $1
                         ORDER BY table_name, ordinal_position",
                        &[&pg.schema],
                    )
                    .await
                    .unwrap();
                assert!(!columns.is_empty(), "no tables in {}", pg.schema);
                let mut out = Vec::new();
                for c in &columns {
                    let (table, column, kind): (String, String, String) =
                        (c.get(0), c.get(1), c.get(2));
                    if kind == "bytea" {
                        for r in client
                            .query(&format!("SELECT \"{column}\" FROM {table} ORDER BY 1"), &[])
                            .await
                            .unwrap()
                        {
                            let v: Option<Vec<u8>> = r.get(0);
                            out.extend(v.unwrap_or_default());
                            out.push(b'\n');
                        }
                    } else {
                        for r in client
                            .query(
                                &format!("SELECT \"{column}\"::TEXT FROM {table} ORDER BY 1"),
                                &[],
                            )
                            .await
                            .unwrap()
                        {
                            let v: Option<String> = r.get(0);
                            out.extend(v.unwrap_or_default().into_bytes());
                            out.push(b'\n');
                        }
                    }
                }
                out
            }
            None => {
                let mut out = std::fs::read(&self.path).unwrap_or_default();
                let mut wal = self.path.as_os_str().to_owned();
                wal.push("-wal");
                out.extend(std::fs::read(PathBuf::from(wal)).unwrap_or_default());
                out
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(pg) = self.pg.take() else { return };
        // Drop may run on a runtime's worker (or while unwinding): the schema is
        // dropped from a thread and runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = connect(&pg.base_url).await;
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", pg.schema))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test schema: {dropped:?}");
        }
    }
}

/// A raw connection (its driver task spawned on the current runtime).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_ENV}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Random bytes for names.
fn getrandom(out: &mut [u8]) {
    use ring::rand::SecureRandom as _;
    ring::rand::SystemRandom::new().fill(out).unwrap();
}
