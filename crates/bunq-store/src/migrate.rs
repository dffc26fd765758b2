//! Moving a store from SQLite to PostgreSQL (feature `postgres`):
//! [`copy_sqlite_to_postgres`], behind `bunq-gateway migrate-store`.
//!
//! # Rows as they are
//! Every row is copied with the values it holds, sealed values byte for byte. That is
//! sound because both backends seal a value with associated data naming the same
//! table, column and row key: `pg/` seals and opens with the very constants the SQLite
//! code uses (`users.access_token` under the row's `user_ref`, `contexts.*` and
//! `sessions.token` under `credential`, `consents.access_token` under `credential`,
//! `idempotency_keys.answer` under `id`, `events.payload` under `id`,
//! `store_keys.sealed_key` under `name`), and each of those row keys is its table's
//! primary key, copied with the row. Re-sealing would change nothing but the nonces.
//! Each value is still opened once on the way, under the name and row it is copied
//! to: a value that would not open on PostgreSQL stops the copy instead of arriving.
//!
//! The audit key (`store_keys`) goes along, so the audit log's keyed hashes of
//! `user_ref`s still match; the audit log keeps its ids and the events outbox its
//! `seq` (the pull API's cursor), and both identity sequences are set past the highest
//! id SQLite ever handed out (`sqlite_sequence`, which remembers ids of deleted rows
//! too: an application's cursor may point past the last event still stored).
//!
//! # Order of the steps
//! Each check comes before anything it protects is written:
//! 1. the master key is checked against the SQLite file, read only, before its schema
//!    is migrated (migrating a file from before v5 seals a new audit key under the key
//!    given: a wrong key would be left behind in the source);
//! 2. the PostgreSQL database is checked to hold no rows, before its schema is touched;
//! 3. the SQLite file is opened as [`Store::open`] opens it (migrated to
//!    [`SCHEMA_VERSION`], its integrity and every value's key checked) and closed;
//! 4. under the migration lock (a gateway starting on the target meanwhile waits for
//!    it, as for a migration), the PostgreSQL schema is migrated and, in one
//!    transaction with every table locked against writes, found empty again and
//!    filled from one read snapshot of the SQLite file. A failure rolls it all back:
//!    the target is left with its schema and no rows.
//!
//! The gateway must be stopped: rows it writes to the file after the snapshot are not
//! copied.

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension as _};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, Transaction};

use crate::audit::STORE_KEYS;
use crate::consents::CONSENTS;
use crate::context::{CONTEXTS, SESSIONS};
use crate::events::EVENTS;
use crate::idempotency::IDEMPOTENCY_KEYS;
use crate::key::FORMAT_V1;
use crate::rotate::SEALED_COLUMNS;
use crate::schema::{Durability, SCHEMA_VERSION};
use crate::users::USERS;
use crate::{MasterKey, PostgresUrl, Store, StoreError};

/// Every table of the store, in an order the foreign keys accept (`sessions` refers to
/// `contexts`). The SQLite file must hold exactly these (SQLite's own tables aside) and
/// the PostgreSQL database at least these (it may be shared with other tables): a schema
/// version that adds a table fails the copy until it is listed here, rather than being
/// left behind.
const TABLES: &[&str] = &[
    STORE_KEYS,
    USERS,
    CONTEXTS,
    SESSIONS,
    CONSENTS,
    "oauth_states",
    IDEMPOTENCY_KEYS,
    "callback_ids",
    EVENTS,
    "audit_log",
];

/// SQLite's table of AUTOINCREMENT high-water marks: read, not copied.
const SQLITE_SEQUENCE: &str = "sqlite_sequence";

/// How many rows one read of the SQLite file takes (and holds in memory at once).
const CHUNK: usize = 500;

/// What [`copy_sqlite_to_postgres`] copied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// Rows copied per table, in the order copied; every table of the store, empty
    /// ones included.
    pub tables: Vec<(&'static str, u64)>,
    /// The schema version both databases are at now.
    pub schema_version: usize,
    /// The id of the master key every copied value is sealed under.
    pub key_id: String,
}

impl MigrationReport {
    /// Rows copied in all.
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// Copies the SQLite store at `from` into the PostgreSQL database `to`, which must hold
/// no rows (its schema is created or migrated here). `key` is the master key the file
/// is sealed under; it is checked before anything is written anywhere, and the copied
/// values stay sealed under it.
///
/// The SQLite file is migrated to [`SCHEMA_VERSION`] first, as [`Store::open`] does.
/// The copy runs in one PostgreSQL transaction: it lands whole or not at all. Errors
/// name tables, columns and row keys, never a value or the URL's password.
///
/// # Errors
/// [`StoreError::TargetNotEmpty`] when the PostgreSQL database holds rows (nothing is
/// written); [`StoreError::UnknownKeyId`] or [`StoreError::Decrypt`] when `key` does
/// not open the file's values (nothing is written); [`StoreError::Io`] when `from` does
/// not exist; any database error.
pub async fn copy_sqlite_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    key: MasterKey,
) -> Result<MigrationReport, StoreError> {
    // `Store::open` would create a missing file and copy an empty store.
    if !from.is_file() {
        return Err(StoreError::Io {
            path: from.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such SQLite file"),
        });
    }
    let path = from.to_owned();
    let checking = key.clone();
    tokio::task::spawn_blocking(move || check_source_key(&path, &checking))
        .await
        .map_err(|_| StoreError::Closed)??;

    let config = crate::pg::connection_config(to, Durability::Full)?;
    let mut client = crate::pg::connect(&config).await?;
    crate::pg::lock_migrations(&client).await?;
    let copied = async {
        // The migration lock is waited for without a limit; the tables' locks below
        // are not (a gateway holding them would be a gateway running on the target).
        client.batch_execute("RESET lock_timeout").await?;
        refuse_rows(&client).await?;
        prepare_source(from, &key).await?;
        crate::pg::migrate(&mut client, None).await?;
        copy_tables(&mut client, from, &key).await
    }
    .await;
    let unlocked = crate::pg::unlock_migrations(&client).await;
    let tables = copied?;
    unlocked?;
    Ok(MigrationReport {
        tables,
        schema_version: SCHEMA_VERSION,
        key_id: key.key_id(),
    })
}

/// Step 1: every sealed value the file holds is under `key`, and one of them opens.
/// Reads only; run before the file's schema is migrated (see the module docs).
fn check_source_key(path: &Path, key: &MasterKey) -> Result<(), StoreError> {
    let conn = crate::schema::open_reader(path)?;
    let tables = sqlite_tables(&conn)?;
    let header = [&[FORMAT_V1][..], key.id().as_bytes()].concat();
    let mut opened_one = false;
    for &(table, row_key, column) in SEALED_COLUMNS {
        // Tables come in with their schema version; an older file lacks the newer ones.
        if !tables.iter().any(|t| t == table) {
            continue;
        }
        // Names come from the constant table, never from input.
        let other = conn
            .query_row(
                &format!(
                    "SELECT {row_key}, {column} FROM {table} \
                     WHERE {column} IS NOT NULL AND substr({column}, 1, 9) <> ?1 LIMIT 1"
                ),
                [&header],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .optional()?;
        if let Some((row, blob)) = other {
            // Under another key id (or not a sealed value): opening it says which.
            key.open(&blob, table, column, &row)?;
        }
        if !opened_one {
            // The key id matching is the key matching, short of a SHA-256 collision;
            // opening one value proves it the way every later read will.
            let first = conn
                .query_row(
                    &format!(
                        "SELECT {row_key}, {column} FROM {table} \
                         WHERE {column} IS NOT NULL LIMIT 1"
                    ),
                    [],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
                )
                .optional()?;
            if let Some((row, blob)) = first {
                key.open(&blob, table, column, &row)?;
                opened_one = true;
            }
        }
    }
    Ok(())
}

/// The tables of a SQLite file, its own bookkeeping left out.
fn sqlite_tables(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names)
}

/// Step 2 (and again inside the copy's transaction): no table of the store holds a row.
/// A table not created yet (a database never migrated) holds none.
async fn refuse_rows<C: GenericClient>(client: &C) -> Result<(), StoreError> {
    let mut full = Vec::new();
    for &table in TABLES {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await?
            .try_get(0)?;
        // Names come from the constant table, never from input.
        if exists
            && client
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
                .await?
                .try_get::<_, bool>(0)?
        {
            full.push(table);
        }
    }
    if full.is_empty() {
        Ok(())
    } else {
        Err(StoreError::TargetNotEmpty { tables: full })
    }
}

/// Step 3: the file opened as the gateway opens it (migrated, its audit key created if
/// it predates v5), checked whole and under `key` throughout, and closed again.
async fn prepare_source(from: &Path, key: &MasterKey) -> Result<(), StoreError> {
    let store = Store::open(from, key.clone()).await?;
    let checked = async {
        store.integrity_check().await?;
        store.check_master_key().await
    }
    .await;
    let closed = store.close().await;
    checked?;
    closed
}

/// How a column is carried: PostgreSQL's type for it and the SQLite values it takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `BIGINT` from `INTEGER`.
    Int,
    /// `BOOLEAN` from an `INTEGER` 0 or 1.
    Bool,
    /// `TEXT` from `TEXT`.
    Text,
    /// `BYTEA` from `BLOB`.
    Bytes,
}

impl Kind {
    fn from_postgres(data_type: &str) -> Option<Kind> {
        match data_type {
            "bigint" => Some(Kind::Int),
            "boolean" => Some(Kind::Bool),
            "text" => Some(Kind::Text),
            "bytea" => Some(Kind::Bytes),
            _ => None,
        }
    }

    fn postgres_type(self) -> Type {
        match self {
            Kind::Int => Type::INT8,
            Kind::Bool => Type::BOOL,
            Kind::Text => Type::TEXT,
            Kind::Bytes => Type::BYTEA,
        }
    }
}

/// One value on its way: what PostgreSQL's column takes, `None` for NULL.
enum Cell {
    Int(Option<i64>),
    Bool(Option<bool>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

impl Cell {
    fn from_sqlite(
        kind: Kind,
        value: ValueRef<'_>,
        table: &str,
        column: &str,
    ) -> Result<Cell, StoreError> {
        // Names the column, never the value (it may be a sealed secret or a token).
        let unexpected = || {
            StoreError::Corrupt(format!(
                "{table}.{column} holds a value PostgreSQL's {kind:?} column cannot take"
            ))
        };
        Ok(match (kind, value) {
            (Kind::Int, ValueRef::Null) => Cell::Int(None),
            (Kind::Int, ValueRef::Integer(i)) => Cell::Int(Some(i)),
            (Kind::Bool, ValueRef::Null) => Cell::Bool(None),
            (Kind::Bool, ValueRef::Integer(0)) => Cell::Bool(Some(false)),
            (Kind::Bool, ValueRef::Integer(1)) => Cell::Bool(Some(true)),
            (Kind::Text, ValueRef::Null) => Cell::Text(None),
            (Kind::Text, ValueRef::Text(bytes)) => Cell::Text(Some(
                std::str::from_utf8(bytes)
                    .map_err(|_| unexpected())?
                    .to_owned(),
            )),
            (Kind::Bytes, ValueRef::Null) => Cell::Bytes(None),
            (Kind::Bytes, ValueRef::Blob(bytes)) => Cell::Bytes(Some(bytes.to_vec())),
            _ => return Err(unexpected()),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Int(v) => v,
            Cell::Bool(v) => v,
            Cell::Text(v) => v,
            Cell::Bytes(v) => v,
        }
    }
}

/// How one table is copied.
struct TablePlan {
    table: &'static str,
    /// Column names and kinds, in PostgreSQL's order (the two orders differ: SQLite
    /// rebuilt `users` at v2, PostgreSQL altered it).
    columns: Vec<(String, Kind)>,
    /// Sealed columns: (index of the row key, index of the sealed column, its name).
    sealed: Vec<(usize, usize, &'static str)>,
    /// The identity column (`events.seq`, `audit_log.id`), if any.
    identity: Option<usize>,
}

/// One read of the SQLite file: rows in PostgreSQL's column order.
struct Chunk {
    rows: Vec<Vec<Cell>>,
    last_rowid: i64,
}

/// The SQLite side of the copy: one connection holding one read transaction, so that
/// every table is read from the same snapshot. rusqlite blocks: each read runs on the
/// blocking pool, the connection moved there and back.
struct Source {
    conn: Option<Connection>,
}

impl Source {
    async fn open(path: &Path) -> Result<Source, StoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || {
            let conn = crate::schema::open_reader(&path)?;
            // In WAL mode the snapshot is taken by the transaction's first read.
            conn.execute_batch("BEGIN")?;
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        Ok(Source { conn: Some(conn) })
    }

    /// Runs `job` on the connection, on the blocking pool.
    async fn run<T, F>(&mut self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.take().ok_or(StoreError::Closed)?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = job(&conn);
            (conn, result)
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        self.conn = Some(conn);
        result
    }
}

/// Closing a SQLite connection may touch the file (the last one checkpoints the WAL):
/// on the blocking pool too, never on an async worker.
impl Drop for Source {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || drop(conn));
                }
                Err(_) => drop(conn),
            }
        }
    }
}

/// Step 4: the copy itself, in one transaction of `client` (which holds the migration
/// lock); returns the rows copied per table.
async fn copy_tables(
    client: &mut tokio_postgres::Client,
    from: &Path,
    key: &MasterKey,
) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let tx = client.transaction().await?;
    // Writes to any table wait for the commit (reads go on and see nothing until then):
    // the target was empty a moment ago and must still be when the copy starts.
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        TABLES.join(", ")
    ))
    .await?;
    refuse_rows(&tx).await?;
    let mut source = Source::open(from).await?;
    let sqlite = source.run(sqlite_tables).await?;
    if let Some(extra) = sqlite.iter().find(|t| !TABLES.contains(&t.as_str())) {
        return Err(StoreError::Corrupt(format!(
            "the SQLite file has a table {extra:?} this build does not know how to copy"
        )));
    }
    no_table_missing("the SQLite file", &sqlite)?;
    no_table_missing("the PostgreSQL database", &postgres_tables(&tx).await?)?;

    let mut counts = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        let plan = Arc::new(plan(&tx, &mut source, table).await?);
        let copied = copy_table(&tx, &mut source, &plan, key).await?;
        counts.push((table, copied));
    }
    tx.commit().await?;
    Ok(counts)
}

/// The tables of the current schema of the PostgreSQL database.
async fn postgres_tables(tx: &Transaction<'_>) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .query(
            "SELECT table_name::TEXT FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(r.try_get::<_, String>(0)?))
        .collect()
}

/// Every table of [`TABLES`] is among `found` (a database's tables, after its migration).
fn no_table_missing(database: &str, found: &[String]) -> Result<(), StoreError> {
    match TABLES.iter().find(|t| !found.iter().any(|f| f == *t)) {
        Some(missing) => Err(StoreError::Corrupt(format!(
            "{database} has no table {missing} after its migration"
        ))),
        None => Ok(()),
    }
}

/// How `table` is copied: PostgreSQL's columns and types, which must be SQLite's
/// columns too (both at [`SCHEMA_VERSION`]).
async fn plan(
    tx: &Transaction<'_>,
    source: &mut Source,
    table: &'static str,
) -> Result<TablePlan, StoreError> {
    let rows = tx
        .query(
            "SELECT column_name::TEXT, data_type::TEXT, is_identity::TEXT = 'YES'
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
            &[&table],
        )
        .await?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut identity = None;
    for row in &rows {
        let (name, data_type, is_identity): (String, String, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        // Column names go into SQL text below: only plain lower-case names (all of ours).
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Corrupt(format!(
                "{table} has a column {name:?} this build did not create"
            )));
        }
        let kind = Kind::from_postgres(&data_type).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{table}.{name} is of type {data_type}, which this build does not copy"
            ))
        })?;
        if is_identity {
            identity = Some(columns.len());
        }
        columns.push((name, kind));
    }
    let sqlite_columns: Vec<String> = source
        .run(move |conn| {
            let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
            let names = stmt
                .query_map([table], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(names)
        })
        .await?;
    let mut ours: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let mut theirs: Vec<&str> = sqlite_columns.iter().map(String::as_str).collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    if ours != theirs {
        return Err(StoreError::Corrupt(format!(
            "{table} has columns ({}) on SQLite but ({}) on PostgreSQL",
            theirs.join(", "),
            ours.join(", ")
        )));
    }
    let index = |name: &str| {
        columns.iter().position(|(n, _)| n == name).ok_or_else(|| {
            StoreError::Corrupt(format!("{table} has no column {name} on PostgreSQL"))
        })
    };
    let mut sealed = Vec::new();
    for &(t, row_key, column) in SEALED_COLUMNS {
        if t == table {
            let (row_key, column_index) = (index(row_key)?, index(column)?);
            // What `read_chunk` opens: bytes bound to a text key.
            if !matches!(
                (columns[row_key].1, columns[column_index].1),
                (Kind::Text, Kind::Bytes)
            ) {
                return Err(StoreError::Corrupt(format!(
                    "{table}.{column} is not a sealed value under a text key on PostgreSQL"
                )));
            }
            sealed.push((row_key, column_index, column));
        }
    }
    Ok(TablePlan {
        table,
        columns,
        sealed,
        identity,
    })
}

/// Copies one table through `COPY ... FROM STDIN (FORMAT binary)`, chunk by chunk in
/// SQLite's row order (ids and `seq` ascending); returns the rows copied.
async fn copy_table(
    tx: &Transaction<'_>,
    source: &mut Source,
    plan: &Arc<TablePlan>,
    key: &MasterKey,
) -> Result<u64, StoreError> {
    let table = plan.table;
    let names: Vec<&str> = plan.columns.iter().map(|(n, _)| n.as_str()).collect();
    let types: Vec<Type> = plan
        .columns
        .iter()
        .map(|(_, k)| k.postgres_type())
        .collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    tokio::pin!(writer);
    let select = Arc::new(format!(
        "SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {CHUNK}",
        names.join(", ")
    ));

    let (mut after, mut read, mut highest) = (i64::MIN, 0u64, 0i64);
    loop {
        let (job_plan, job_key, job_select) = (Arc::clone(plan), key.clone(), Arc::clone(&select));
        let chunk = source
            .run(move |conn| read_chunk(conn, &job_select, after, &job_plan, &job_key))
            .await?;
        if chunk.rows.is_empty() {
            break;
        }
        after = chunk.last_rowid;
        for row in &chunk.rows {
            if let Some(Cell::Int(Some(id))) = plan.identity.map(|i| &row[i]) {
                highest = highest.max(*id);
            }
            let values: Vec<&(dyn ToSql + Sync)> = row.iter().map(Cell::as_sql).collect();
            writer.as_mut().write(&values).await?;
        }
        read += chunk.rows.len() as u64;
    }
    let written = writer.as_mut().finish().await?;
    if written != read {
        return Err(StoreError::Corrupt(format!(
            "{table}: {read} rows read from SQLite but {written} written to PostgreSQL"
        )));
    }

    if let Some(i) = plan.identity {
        // Past every id SQLite handed out, not only the highest still stored: an
        // event purged after the application pulled it keeps its `seq` taken.
        let handed_out = source
            .run(move |conn| {
                let has_sequence = conn
                    .query_row(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                        [SQLITE_SEQUENCE],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !has_sequence {
                    return Ok(0);
                }
                Ok(conn
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                        [table],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .unwrap_or(0))
            })
            .await?;
        let last = highest.max(handed_out);
        if last > 0 {
            let column = plan.columns[i].0.as_str();
            tx.query_one(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                &[&table, &column, &last],
            )
            .await?;
        }
    }
    Ok(written)
}

/// Up to [`CHUNK`] rows of `plan.table` after `after` (a rowid), each sealed value
/// opened once under its table, column and row (see the module docs).
fn read_chunk(
    conn: &Connection,
    select: &str,
    after: i64,
    plan: &TablePlan,
    key: &MasterKey,
) -> Result<Chunk, StoreError> {
    let mut stmt = conn.prepare_cached(select)?;
    let mut rows = stmt.query([after])?;
    let mut chunk = Chunk {
        rows: Vec::with_capacity(CHUNK),
        last_rowid: after,
    };
    while let Some(row) = rows.next()? {
        chunk.last_rowid = row.get(0)?;
        let mut cells = Vec::with_capacity(plan.columns.len());
        for (i, (name, kind)) in plan.columns.iter().enumerate() {
            cells.push(Cell::from_sqlite(
                *kind,
                row.get_ref(i + 1)?,
                plan.table,
                name,
            )?);
        }
        for &(row_key, column, column_name) in &plan.sealed {
            // NULL: nothing sealed (a consent of a v1 user, an answer not in yet).
            let Cell::Bytes(Some(blob)) = &cells[column] else {
                continue;
            };
            // A primary key: never NULL.
            let Cell::Text(Some(row_key)) = &cells[row_key] else {
                return Err(StoreError::Corrupt(format!(
                    "{}.{column_name} is sealed in a row without a key",
                    plan.table
                )));
            };
            key.open(blob, plan.table, column_name, row_key)?;
        }
        chunk.rows.push(cells);
    }
    Ok(chunk)
}
