//! Master key rotation.

use rusqlite::{Transaction, params};

use crate::audit::{self, AuditEvent};
use crate::context::{CONTEXTS, INSTALLATION_TOKEN, PRIVATE_KEY, SECRET, SESSION_TOKEN, SESSIONS};
use crate::key::{MasterKey, sealed_key_id};
use crate::users::{ACCESS_TOKEN, USERS};
use crate::{Store, StoreError};

/// Every sealed column: (table, row-key column, sealed column).
const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    (USERS, "user_ref", ACCESS_TOKEN),
    (CONTEXTS, "credential", SECRET),
    (CONTEXTS, "credential", INSTALLATION_TOKEN),
    (CONTEXTS, "credential", PRIVATE_KEY),
    (SESSIONS, "credential", SESSION_TOKEN),
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
        let mut stmt = tx.prepare(&format!("SELECT {row_key}, {column} FROM {table}"))?;
        stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?
    };
    let mut update = tx.prepare(&format!(
        "UPDATE {table} SET {column} = ?2 WHERE {row_key} = ?1"
    ))?;
    for (row, blob) in rows {
        let id = sealed_key_id(&blob, table, column, &row)?;
        if id == new.id() {
            report.already_new += 1;
        } else if id == old.id() {
            let plain = old.open(&blob, table, column, &row)?;
            let sealed = new.seal(&plain, table, column, &row)?;
            update.execute(params![row, sealed])?;
            report.reencrypted += 1;
        } else {
            return Err(StoreError::UnknownKeyId {
                key_id: id.to_string(),
                held: format!("{} or {}", old.key_id(), new.key_id()),
                table,
                column,
                row,
            });
        }
    }
    Ok(())
}
