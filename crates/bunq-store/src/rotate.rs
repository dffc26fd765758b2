//! Master key rotation.

use rusqlite::{Transaction, params};

use crate::audit::{self, AuditEvent, SEALED_KEY, STORE_KEYS};
use crate::consents::CONSENTS;
use crate::context::{CONTEXTS, INSTALLATION_TOKEN, PRIVATE_KEY, SECRET, SESSION_TOKEN, SESSIONS};
use crate::events::{EVENTS, PAYLOAD};
use crate::idempotency::{ANSWER, IDEMPOTENCY_KEYS};
use crate::key::{FORMAT_V1, MasterKey, sealed_key_id};
use crate::users::{ACCESS_TOKEN, USERS};
use crate::{Store, StoreError};

/// Every sealed column: (table, row-key column, sealed column).
pub(crate) const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    (USERS, "user_ref", ACCESS_TOKEN),
    (CONTEXTS, "credential", SECRET),
    (CONTEXTS, "credential", INSTALLATION_TOKEN),
    (CONTEXTS, "credential", PRIVATE_KEY),
    (SESSIONS, "credential", SESSION_TOKEN),
    (CONSENTS, "credential", ACCESS_TOKEN),
    (IDEMPOTENCY_KEYS, "id", ANSWER),
    (EVENTS, "id", PAYLOAD),
    (STORE_KEYS, "name", SEALED_KEY),
];

/// What [`Store::rotate_key`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationReport {
    /// The key values were sealed under.
    pub old_key_id: String,
    /// The key every value is sealed under now.
    pub new_key_id: String,
    /// Values re-sealed from the old key to the new one.
    pub reencrypted: u64,
    /// Values already under the new key (left as they were).
    pub already_new: u64,
}

impl Store {
    /// Checks that every sealed value in the database is under a key this store holds,
    /// so that a service started with the wrong master key fails at start with
    /// [`StoreError::UnknownKeyId`] (naming the key found and the key held) instead of
    /// failing every later request. Reads only the 9-byte headers, not the values.
    pub async fn check_master_key(&self) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.check_master_key());
        self.read(|conn, shared| {
            let keyring = shared.keyring();
            let held: Vec<Vec<u8>> = keyring
                .keys()
                .iter()
                .map(|k| [&[FORMAT_V1][..], k.id().as_bytes()].concat())
                .collect();
            let placeholders = (1..=held.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ");
            for &(table, row_key, column) in SEALED_COLUMNS {
                // Names come from the constant table above, never from input.
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {row_key}, {column} FROM {table} \
                     WHERE substr({column}, 1, 9) NOT IN ({placeholders}) LIMIT 1"
                ))?;
                let mut rows = stmt.query(rusqlite::params_from_iter(held.iter()))?;
                if let Some(row) = rows.next()? {
                    let (row, blob): (String, Vec<u8>) = (row.get(0)?, row.get(1)?);
                    // Opening it reports exactly what is wrong (unknown key or corrupt).
                    keyring.open(&blob, table, column, &row)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Re-seals every secret value from `old` to `new` in one transaction, writes
    /// "key_rotated" to the audit log, and makes `new` the key new values are sealed
    /// under.
    ///
    /// Resumable: values already under `new` are skipped, so a database left partly
    /// under each key (for instance by a store opened with the new key before the
    /// rotation ran) is completed by running it again; a crash mid-rotation rolls back
    /// to all-old. A value under neither key stops the rotation with
    /// [`StoreError::UnknownKeyId`] and changes nothing.
    ///
    /// The old key stays usable for reading in this process (reads already running may
    /// hold rows from before the commit); the database holds nothing under it.
    pub async fn rotate_key(
        &self,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<RotationReport, StoreError> {
        if old.id() == new.id() {
            return Err(StoreError::InvalidInput(
                "rotation to the same key".to_owned(),
            ));
        }
        crate::on_postgres!(self, pg => pg.rotate_key(old, new));
        let (old, new) = (old.clone(), new.clone());
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let mut report = RotationReport {
                old_key_id: old.key_id(),
                new_key_id: new.key_id(),
                reencrypted: 0,
                already_new: 0,
            };
            for &(table, row_key, column) in SEALED_COLUMNS {
                rotate_column(&tx, &old, &new, table, row_key, column, &mut report)?;
            }
            audit::append(
                &tx,
                shared,
                None,
                AuditEvent::KeyRotated,
                &format!(
                    "from={} to={} reencrypted={} already_new={}",
                    report.old_key_id, report.new_key_id, report.reencrypted, report.already_new
                ),
            )?;
            tx.commit()?;
            shared.set_keys(vec![new, old]);
            Ok(report)
        })
        .await
    }
}

fn rotate_column(
    tx: &Transaction<'_>,
    old: &MasterKey,
    new: &MasterKey,
    table: &'static str,
    row_key: &str,
    column: &'static str,
    report: &mut RotationReport,
) -> Result<(), StoreError> {
    // Names come from the constant table above, never from input.
    let rows = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {row_key}, {column} FROM {table} WHERE {column} IS NOT NULL"
        ))?;
        stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let mut update = tx.prepare(&format!(
        "UPDATE {table} SET {column} = ?2 WHERE {row_key} = ?1"
    ))?;
    for (row, blob) in rows {
        if let Some(sealed) = reseal(old, new, table, column, &row, &blob, report)? {
            update.execute(params![row, sealed])?;
        }
    }
    Ok(())
}

/// The value `blob` of `table.column` in `row` sealed under `new`, if it is under
/// `old`; `None` if it is under `new` already (counted in `report`); an error if it is
/// under neither (both backends).
pub(crate) fn reseal(
    old: &MasterKey,
    new: &MasterKey,
    table: &'static str,
    column: &'static str,
    row: &str,
    blob: &[u8],
    report: &mut RotationReport,
) -> Result<Option<Vec<u8>>, StoreError> {
    let id = sealed_key_id(blob, table, column, row)?;
    if id == new.id() {
        report.already_new += 1;
        Ok(None)
    } else if id == old.id() {
        let plain = old.open(blob, table, column, row)?;
        report.reencrypted += 1;
        new.seal(&plain, table, column, row).map(Some)
    } else {
        Err(StoreError::UnknownKeyId {
            key_id: id.to_string(),
            held: format!("{} or {}", old.key_id(), new.key_id()),
            table,
            column,
            row: row.to_owned(),
        })
    }
}
