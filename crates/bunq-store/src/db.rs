//! The [`Store`] handle: one writer thread, a small pool of readers, the keyring.
//!
//! rusqlite blocks, so no SQLite call runs on an async worker thread. Writes go to one
//! dedicated thread that owns the only writing connection: they are serialized in
//! arrival order without lock contention, and a rotation of the master key is ordered
//! with every other write. Reads take one of a few `query_only` connections on tokio's
//! blocking pool and run concurrently with each other and with the writer (WAL).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use bunq_signing::{PrivateKey, ServerPublicKey};
use rusqlite::Connection;
use tokio::sync::{Semaphore, oneshot};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::key::{MasterKey, sealed_key_id};
use crate::schema::{self, Durability};

/// How a [`Store`] is opened beyond its path and key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// What a committed write survives; see [`Durability`].
    pub durability: Durability,
    /// How many read connections run concurrently (at least 1).
    pub readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
        }
    }
}

impl StoreOptions {
    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the number of read connections.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }
}

/// The master keys a store can open values with; the first one seals new values.
///
/// After a rotation the old key stays here (in memory only, until the store is
/// reopened): a read whose snapshot predates the rotation's commit still finds values
/// under the old key.
pub(crate) struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    /// The keys values can be opened with.
    pub(crate) fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// The key new values are sealed under.
    pub(crate) fn sealer(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub(crate) fn open(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.key_for(blob, table, column, row)?
            .open(blob, table, column, row)
    }

    pub(crate) fn open_string(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<secrecy::SecretString, StoreError> {
        self.key_for(blob, table, column, row)?
            .open_string(blob, table, column, row)
    }

    fn key_for(
        &self,
        blob: &[u8],
        table: &'static str,
        column: &'static str,
        row: &str,
    ) -> Result<&MasterKey, StoreError> {
        let id = sealed_key_id(blob, table, column, row)?;
        // Fall back to the sealing key, whose `open` reports the unknown id in full.
        Ok(self
            .keys
            .iter()
            .find(|k| k.id() == id)
            .unwrap_or(&self.keys[0]))
    }
}

/// Parsed installation keys by credential. Parsing an RSA key (ring validates it) and
/// a PEM costs far more than the rest of a context lookup, and both change only with a
/// new installation, so the parsed forms are kept and reused while the decrypted bytes
/// still match.
pub(crate) struct ParsedKeys {
    pub(crate) private_key: PrivateKey,
    pub(crate) server_public_key_pem: String,
    pub(crate) server_public_key: ServerPublicKey,
}

/// Bounds memory for stores with very many credentials; past it the cache starts over.
const KEY_CACHE_CAPACITY: usize = 10_000;

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

pub(crate) struct Shared {
    path: PathBuf,
    pub(crate) keyring: RwLock<Arc<Keyring>>,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Semaphore,
    key_cache: Mutex<HashMap<String, Arc<ParsedKeys>>>,
    /// The audit log's HMAC key, unsealed on first use (the keyring may change by then).
    audit_key: std::sync::OnceLock<Arc<ring::hmac::Key>>,
}

impl Shared {
    /// The key `audit_log.user_ref` is hashed with (see `audit.rs`).
    pub(crate) fn audit_key(&self, conn: &Connection) -> Result<Arc<ring::hmac::Key>, StoreError> {
        if let Some(key) = self.audit_key.get() {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(crate::audit::load_key(conn, self)?);
        // Two threads loading at once load the same key; either copy will do.
        Ok(Arc::clone(self.audit_key.get_or_init(|| key)))
    }

    pub(crate) fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the keyring (after a committed rotation).
    pub(crate) fn set_keys(&self, keys: Vec<MasterKey>) {
        let ring = Arc::new(Keyring { keys });
        match self.keyring.write() {
            Ok(mut k) => *k = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }

    pub(crate) fn cached_keys(&self, credential: &str) -> Option<Arc<ParsedKeys>> {
        self.key_cache.lock().ok()?.get(credential).cloned()
    }

    pub(crate) fn cache_keys(&self, credential: &str, keys: Arc<ParsedKeys>) {
        if let Ok(mut cache) = self.key_cache.lock() {
            if cache.len() >= KEY_CACHE_CAPACITY && !cache.contains_key(credential) {
                cache.clear();
            }
            cache.insert(credential.to_owned(), keys);
        }
    }

    pub(crate) fn evict_keys(&self, credential: &str) {
        if let Ok(mut cache) = self.key_cache.lock() {
            cache.remove(credential);
        }
    }
}

/// The encrypted SQLite store. Cheap to clone (a shared handle); `Send + Sync`.
///
/// See the crate docs for what it keeps and how.
#[derive(Clone)]
pub struct Store(pub(crate) Arc<Shared>);

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.0.path)
            .field("key_id", &self.0.keyring().sealer().key_id())
            .finish_non_exhaustive()
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
        Ok(Store(Arc::new(Shared {
            path,
            keyring: RwLock::new(Arc::new(Keyring { keys: vec![key] })),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
            readers: Mutex::new(readers),
            reader_permits: Semaphore::new(permits),
            key_cache: Mutex::new(HashMap::new()),
            audit_key: audit_key.map(std::sync::OnceLock::from).unwrap_or_default(),
        })))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The id of the key new values are sealed under.
    pub fn key_id(&self) -> String {
        self.0.keyring().sealer().key_id()
    }

    /// `PRAGMA integrity_check` answered "ok": the readiness probe of a service that
    /// cannot work without its store.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
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
        let sender = self.0.writer.lock().map_err(|_| StoreError::Closed)?.take();
        drop(sender);
        let thread = self
            .0
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
        if let Ok(mut readers) = self.0.readers.lock() {
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
        let shared = Arc::clone(&self.0);
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
        let shared = Arc::clone(&self.0);
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
        let writer = self.0.writer.lock().map_err(|_| StoreError::Closed)?;
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
        let _permit = self
            .0
            .reader_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let shared = Arc::clone(&self.0);
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
