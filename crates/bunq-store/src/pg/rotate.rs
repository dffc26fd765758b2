//! Master key rotation on PostgreSQL; see `rotate.rs`.

use super::audit;
use super::{PgStore, execute, query};
use crate::StoreError;
use crate::audit::AuditEvent;
use crate::key::{FORMAT_V1, MasterKey};
use crate::rotate::{RotationReport, SEALED_COLUMNS, reseal};

impl PgStore {
    pub(crate) async fn check_master_key(&self) -> Result<(), StoreError> {
        let keyring = self.keyring();
        let held: Vec<Vec<u8>> = keyring
            .keys()
            .iter()
            .map(|k| [&[FORMAT_V1][..], k.id().as_bytes()].concat())
            .collect();
        let client = self.client().await?;
        for &(table, row_key, column) in SEALED_COLUMNS {
            // Names come from the constant table, never from input.
            let rows = query(
                &client,
                &format!(
                    "SELECT {row_key}, {column} FROM {table} \
                     WHERE NOT (substr({column}, 1, 9) = ANY($1)) LIMIT 1"
                ),
                &[&held],
            )
            .await?;
            if let Some(r) = rows.first() {
                let (row, blob): (String, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
                // Opening it reports exactly what is wrong (unknown key or corrupt).
                keyring.open(&blob, table, column, &row)?;
            }
        }
        Ok(())
    }

    /// One transaction, as on SQLite. The sealed tables are locked against writes
    /// (reads go on) for its length, so that no gateway still running with the old key
    /// seals a value behind the rotation's back.
    pub(crate) async fn rotate_key(
        &self,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<RotationReport, StoreError> {
        if old.id() == new.id() {
            return Err(StoreError::InvalidInput(
                "rotation to the same key".to_owned(),
            ));
        }
        let mut report = RotationReport {
            old_key_id: old.key_id(),
            new_key_id: new.key_id(),
            reencrypted: 0,
            already_new: 0,
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut tables: Vec<&str> = SEALED_COLUMNS.iter().map(|&(t, _, _)| t).collect();
        tables.dedup();
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .await?;
        for &(table, row_key, column) in SEALED_COLUMNS {
            let rows = query(
                &tx,
                &format!("SELECT {row_key}, {column} FROM {table} WHERE {column} IS NOT NULL"),
                &[],
            )
            .await?;
            let update = format!("UPDATE {table} SET {column} = $2 WHERE {row_key} = $1");
            for r in &rows {
                let (row, blob): (String, Vec<u8>) = (r.try_get(0)?, r.try_get(1)?);
                if let Some(sealed) = reseal(old, new, table, column, &row, &blob, &mut report)? {
                    execute(&tx, &update, &[&row, &sealed]).await?;
                }
            }
        }
        audit::append(
            &tx,
            self,
            None,
            AuditEvent::KeyRotated,
            &format!(
                "from={} to={} reencrypted={} already_new={}",
                report.old_key_id, report.new_key_id, report.reencrypted, report.already_new
            ),
        )
        .await?;
        tx.commit().await?;
        self.set_keys(vec![new.clone(), old.clone()]);
        Ok(report)
    }
}
