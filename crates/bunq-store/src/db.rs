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

pub(crate) struct Shared {
    path: PathBuf,
    pub(crate) keyring: RwLock<Arc<Keyring>>,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
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

        let (tx, rx) = mpsc::channel::<WriteJob>();
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
        {
            let writer = self.0.writer.lock().map_err(|_| StoreError::Closed)?;
            writer
                .as_ref()
                .ok_or(StoreError::Closed)?
                .send(boxed)
                .map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
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

fn run_writer(mut conn: Connection, jobs: mpsc::Receiver<WriteJob>) {
    while let Ok(job) = jobs.recv() {
        // A panicking job (a bug) loses only its own answer (its caller sees `Closed`);
        // its transaction, if any, rolled back when it unwound.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
        if outcome.is_err() {
            tracing::error!("bunq-store write job panicked");
        }
    }
}
