//! The [`Store`] handle: one writer thread, a small pool of readers, the keyring.
//!
//! rusqlite blocks, so no SQLite call runs on an async worker thread. Writes go to one
//! dedicated thread that owns the only writing connection: they are serialized in
//! arrival order without lock contention, and a rotation of the master key is ordered
//! with every other write. Reads take one of a few `query_only` connections on tokio's
//! blocking pool and run concurrently with each other and with the writer (WAL).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{Semaphore, oneshot};

use crate::StoreError;
use crate::key::MasterKey;
use crate::schema::{self, Durability};
use crate::vault::Vault;

/// How a [`Store`] is opened beyond its location and key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// What a committed write survives; see [`Durability`].
    pub durability: Durability,
    /// SQLite: how many read connections run concurrently (at least 1).
    pub readers: usize,
    /// PostgreSQL: the most connections the pool opens (at least 1).
    pub connections: usize,
    /// PostgreSQL in fleet mode: this gateway's replica id, recorded with the
    /// `Idempotency-Key`s it sends (so that only a dead replica's are settled as
    /// unknown).
    pub replica: Option<String>,
    /// PostgreSQL in fleet mode: the egress this gateway reaches bunq through,
    /// recorded with each user it connects (bunq binds the user's device to that IP).
    pub egress: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
            connections: 8,
            replica: None,
            egress: None,
        }
    }
}

impl StoreOptions {
    /// Makes this store a gateway of a fleet: `replica` its id, `egress` the IP (or a
    /// name for it) bunq sees it from. See [`Store::fleet`](crate::Store::fleet).
    pub fn fleet_member(mut self, replica: impl Into<String>, egress: impl Into<String>) -> Self {
        self.replica = Some(replica.into());
        self.egress = Some(egress.into());
        self
    }

    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the number of read connections (SQLite).
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Sets the size of the connection pool (PostgreSQL).
    pub fn connections(mut self, connections: usize) -> Self {
        self.connections = connections.max(1);
        self
    }
}

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// How a grouped write is told its commit's outcome (and then answers its caller).
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A write that may share one transaction, and so one commit (one fsync), with other
/// grouped writes waiting at the same time ([`Store::write_grouped`]). Given the
/// connection inside the open transaction, it runs its statements and returns whether
/// they succeeded and its [`Reply`]; given an error (no transaction could be opened),
/// it answers its caller with it.
type GroupedJob = Box<dyn FnOnce(Result<&Connection, StoreError>) -> Option<(bool, Reply)> + Send>;

enum Job {
    Solo(WriteJob),
    Grouped(GroupedJob),
}

/// The most grouped writes one commit takes; bounds how long the first one waits for
/// the statements of the others.
const MAX_GROUP: usize = 256;

/// The SQLite backend's state: the writer thread, the readers, and the vault.
pub(crate) struct Shared {
    path: PathBuf,
    vault: Vault,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
}

/// The vault's keyring, key cache and audit key serve the SQL code as `shared.keyring()`
/// and so on, as they would on any backend.
impl std::ops::Deref for Shared {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        &self.vault
    }
}

impl Shared {
    /// The key `audit_log.user_ref` is hashed with (see `audit.rs`).
    pub(crate) fn audit_key(&self, conn: &Connection) -> Result<Arc<ring::hmac::Key>, StoreError> {
        if let Some(key) = self.vault.loaded_audit_key() {
            return Ok(key);
        }
        let key = crate::audit::load_key(conn, self)?;
        Ok(self.vault.set_audit_key(key))
    }
}

/// The encrypted store, on SQLite ([`Store::open`]) or PostgreSQL
/// (`Store::open_postgres`, with the `postgres` feature). Cheap to clone (a shared
/// handle); `Send + Sync`.
///
/// See the crate docs for what it keeps and how.
#[derive(Clone)]
pub struct Store(pub(crate) Backend);

/// Which database a [`Store`] runs on. Every public method of [`Store`] is written for
/// SQLite beside the SQL it runs, and hands over to `pg/` first when the store is on
/// PostgreSQL ([`on_postgres!`](crate::on_postgres)).
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(Arc<Shared>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<crate::pg::PgStore>),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Backend::Sqlite(shared) => f
                .debug_struct("Store")
                .field("path", &shared.path)
                .field("key_id", &shared.keyring().sealer().key_id())
                .finish_non_exhaustive(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => f
                .debug_struct("Store")
                .field("postgres", &pg.location())
                .field("key_id", &pg.keyring().sealer().key_id())
                .finish_non_exhaustive(),
        }
    }
}

impl Store {
    /// Opens the database at `path` (creating it, mode 0600, if missing), migrates its
    /// schema, and starts the writer thread. Durability [`Durability::Full`].
    pub async fn open(path: impl AsRef<Path>, key: MasterKey) -> Result<Store, StoreError> {
        Self::open_with(path, key, StoreOptions::default()).await
    }

    /// [`Store::open`] with options.
    pub async fn open_with(
        path: impl AsRef<Path>,
        key: MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_owned();
        let open_path = path.clone();
        let prepare_key = key.clone();
        let (writer, readers, audit_key) = tokio::task::spawn_blocking(move || {
            let mut writer = schema::open_writer(&open_path, options.durability)?;
            let audit_key = crate::audit::prepare(&mut writer, &prepare_key)?;
            let readers = (0..options.readers.max(1))
                .map(|_| schema::open_reader(&open_path))
                .collect::<Result<Vec<_>, _>>()?;
            Ok::<_, StoreError>((writer, readers, audit_key))
        })
        .await
        .map_err(|_| StoreError::Closed)??;

        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("bunq-store-writer".into())
            .spawn(move || run_writer(writer, rx))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        let permits = readers.len();
        Ok(Store(Backend::Sqlite(Arc::new(Shared {
            path,
            vault: Vault::new(key, audit_key),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
            readers: Mutex::new(readers),
            reader_permits: Semaphore::new(permits),
        }))))
    }

    /// Opens the store at `location`: a SQLite file ([`Store::open_with`]) or, with the
    /// `postgres` feature, a PostgreSQL database (`Store::open_postgres`).
    pub async fn open_location(
        location: &crate::StoreLocation,
        key: MasterKey,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        match location {
            crate::StoreLocation::Sqlite(path) => Self::open_with(path, key, options).await,
            #[cfg(feature = "postgres")]
            crate::StoreLocation::Postgres(url) => {
                let pg = crate::pg::PgStore::open(url, key, &options).await?;
                Ok(Store(Backend::Postgres(pg)))
            }
            #[cfg(not(feature = "postgres"))]
            crate::StoreLocation::Postgres(_) => Err(StoreError::InvalidInput(
                "bunq-store was built without its postgres feature".to_owned(),
            )),
        }
    }

    /// The database file; empty for a store on PostgreSQL.
    pub fn path(&self) -> &Path {
        match &self.0 {
            Backend::Sqlite(shared) => &shared.path,
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Path::new(""),
        }
    }

    /// The id of the key new values are sealed under.
    pub fn key_id(&self) -> String {
        self.vault().keyring().sealer().key_id()
    }

    /// The backend's vault (keyring, key cache, audit key).
    pub(crate) fn vault(&self) -> &Vault {
        match &self.0 {
            Backend::Sqlite(shared) => &shared.vault,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg,
        }
    }

    /// The SQLite backend, for the helpers below; a store on PostgreSQL never gets here
    /// (every public method hands over to `pg/` first).
    fn sqlite(&self) -> Result<&Arc<Shared>, StoreError> {
        match &self.0 {
            Backend::Sqlite(shared) => Ok(shared),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => Err(StoreError::Corrupt(
                "a SQLite statement was sent to a PostgreSQL store".to_owned(),
            )),
        }
    }

    /// The store answers and its schema is whole: on SQLite `PRAGMA integrity_check`
    /// answered "ok"; on PostgreSQL the server answers and the schema is at
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION). The readiness probe of a service that
    /// cannot work without its store.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.integrity_check());
        self.read(|conn, _| {
            let mut stmt = conn.prepare_cached("PRAGMA integrity_check")?;
            let lines = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            if lines.len() == 1 && lines[0] == "ok" {
                Ok(())
            } else {
                Err(StoreError::Integrity(lines.join("; ")))
            }
        })
        .await
    }

    /// Finishes the writes already queued and stops the writer thread; later calls on
    /// any clone of this store fail with [`StoreError::Closed`]. Dropping the last clone
    /// stops the thread too, without waiting for it.
    pub async fn close(&self) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.close());
        let shared = self.sqlite()?;
        let sender = shared.writer.lock().map_err(|_| StoreError::Closed)?.take();
        drop(sender);
        let thread = shared
            .writer_thread
            .lock()
            .map_err(|_| StoreError::Closed)?
            .take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|_| StoreError::Closed)?
                .map_err(|_| StoreError::Closed)?;
        }
        if let Ok(mut readers) = shared.readers.lock() {
            readers.clear();
        }
        Ok(())
    }

    /// Runs `job` on the writer thread and waits for its answer.
    pub(crate) async fn write<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Arc<Shared>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(self.sqlite()?);
        let boxed: WriteJob = Box::new(move |conn| {
            // The receiver may have given up (its task was cancelled): nothing to tell.
            let _ = tx.send(job(conn, &shared));
        });
        self.send_job(Job::Solo(boxed))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`write`](Self::write), for a short insert-like `job` that does not open a
    /// transaction itself: it runs inside a transaction shared with the other grouped
    /// writes waiting when it starts (each under a savepoint of its own, rolled back
    /// alone if it fails), and is answered only once that transaction committed
    /// (fsynced at [`Durability::Full`](crate::Durability::Full)). Under load one
    /// commit then serves many writes instead of one fsync each; alone, it waits for
    /// nobody.
    pub(crate) async fn write_grouped<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Arc<Shared>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let shared = Arc::clone(self.sqlite()?);
        let boxed: GroupedJob = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            let result = job(conn, &shared);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                // The receiver may have given up (its task was cancelled).
                let _ = tx.send(committed.and(result));
            });
            Some((ok, reply))
        });
        self.send_job(Job::Grouped(boxed))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn send_job(&self, job: Job) -> Result<(), StoreError> {
        let writer = self
            .sqlite()?
            .writer
            .lock()
            .map_err(|_| StoreError::Closed)?;
        writer
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    /// Runs `job` on a read connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Arc<Shared>) -> Result<T, StoreError> + Send + 'static,
    {
        let sqlite = self.sqlite()?;
        let _permit = sqlite
            .reader_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let shared = Arc::clone(sqlite);
        tokio::task::spawn_blocking(move || {
            let conn = shared
                .readers
                .lock()
                .map_err(|_| StoreError::Closed)?
                .pop()
                .ok_or(StoreError::Closed)?;
            let result = job(&conn, &shared);
            if let Ok(mut readers) = shared.readers.lock() {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn run_writer(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    let mut next = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Solo(job) => {
                // A panicking job (a bug) loses only its own answer (its caller sees
                // `Closed`); its transaction, if any, rolled back when it unwound.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                if outcome.is_err() {
                    tracing::error!("bunq-store write job panicked");
                }
            }
            Job::Grouped(first) => {
                // Only what is already waiting joins: nobody is delayed to fill a group.
                // A solo write stops the group and runs right after it, in order.
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(Job::Grouped(job)) => group.push(job),
                        Ok(solo) => {
                            next = Some(solo);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_group(&conn, group);
            }
        }
    }
}

/// A copy of a commit's error for each write that shared it (rusqlite's error is not
/// `Clone`).
fn shared_error(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        )),
    }
}

/// One transaction for `group`: each job under its own savepoint (a failed one is
/// rolled back alone and answered at once), then one commit, then the answers.
fn run_group(conn: &Connection, group: Vec<GroupedJob>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        for job in group {
            let _ = job(Err(shared_error(&e)));
        }
        return;
    }
    let mut replies = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT grouped_write") {
            let _ = job(Err(shared_error(&e)));
            continue;
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(conn))));
        match ran {
            Ok(Some((true, reply))) => {
                let _ = conn.execute_batch("RELEASE grouped_write");
                replies.push(reply);
            }
            Ok(outcome) => {
                let _ = conn.execute_batch("ROLLBACK TO grouped_write; RELEASE grouped_write");
                // Its own error: the commit's outcome does not change it.
                if let Some((_, reply)) = outcome {
                    reply(Ok(()));
                }
            }
            Err(_) => {
                let _ = conn.execute_batch("ROLLBACK TO grouped_write; RELEASE grouped_write");
                tracing::error!("bunq-store write job panicked");
            }
        }
    }
    let committed = conn.execute_batch("COMMIT");
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for reply in replies {
        reply(committed.as_ref().map(|_| ()).map_err(shared_error));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn grouped_writes_commit_together_and_a_failed_one_alone_is_undone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.db");
        let store = Store::open(
            &path,
            MasterKey::generate().unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let insert = |user: String, fail: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_grouped(move |conn, _| {
                        conn.execute(
                            "INSERT INTO callback_ids (user_ref, callback_id, created_at)
                             VALUES (?1, ?1, 0)",
                            [&user],
                        )?;
                        if fail {
                            return Err(StoreError::InvalidInput(
                                "refused after its insert".into(),
                            ));
                        }
                        Ok(())
                    })
                    .await
            })
        };
        // Many at once, so that groups form; every fifth fails after its insert.
        let tasks: Vec<_> = (0..200)
            .map(|i| insert(format!("u{i}"), i % 5 == 0))
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let result = task.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(result.is_err(), i % 5 == 0, "u{i}: {result:?}");
        }
        // A duplicate key fails alone too (the row it collides with stays).
        assert!(
            insert("u1".into(), false)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_err()
        );
        store.close().await.unwrap_or_else(|e| panic!("{e}"));
        // Acknowledged means committed: reopened, exactly the successful ones are there.
        let store = Store::open(
            &path,
            MasterKey::generate().unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<String> = store
            .read(|conn, _| {
                let mut stmt = conn.prepare("SELECT user_ref FROM callback_ids")?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 160);
        assert!(
            rows.iter()
                .all(|u| u[1..].parse::<u32>().is_ok_and(|n| n % 5 != 0))
        );
    }
}
