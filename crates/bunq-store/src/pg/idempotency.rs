//! Idempotency records on PostgreSQL; see `idempotency.rs`.

use std::time::{Duration, SystemTime};

use super::{PgStore, execute, query_opt};
use crate::StoreError;
use crate::idempotency::{
    ANSWER, IDEMPOTENCY_KEYS, IdempotencyBegin, IdempotencyScope, Judged, RecordRow, StoredAnswer,
    judge, pack,
};
use crate::schema::{now_db, to_db_time};

/// How often a begin starts over when the row it found vanished before it could lock
/// it (abandoned or purged in between); each round is a fresh insert attempt.
const BEGIN_ROUNDS: usize = 8;

impl PgStore {
    /// Of concurrent first uses of a key (in any process), exactly one inserts the row
    /// and is told to send: the others' `ON CONFLICT DO NOTHING` waits for that insert
    /// to commit and inserts nothing. A found row is locked (`FOR UPDATE`) before it is
    /// judged, so that of two requests reviving an expired or unknown record only the
    /// first changes it; the second reads it as the first left it.
    pub(crate) async fn begin_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
        fingerprint: [u8; 32],
        new_request_id: &str,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        let id = scope.id();
        let expires_at = to_db_time(
            SystemTime::now()
                .checked_add(retention)
                .ok_or_else(|| StoreError::InvalidInput("retention out of range".into()))?,
        )?;
        let fingerprint_bytes = fingerprint.as_slice();
        let mut client = self.client().await?;
        for _ in 0..BEGIN_ROUNDS {
            let tx = client.transaction().await?;
            let now = now_db()?;
            let inserted = execute(
                &tx,
                "INSERT INTO idempotency_keys (id, user_ref, fingerprint, request_id, state,
                                               created_at, expires_at, owner)
                 VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $7)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &scope.user_ref,
                    &fingerprint_bytes,
                    &new_request_id,
                    &now,
                    &expires_at,
                    &self.replica,
                ],
            )
            .await?;
            if inserted == 1 {
                tx.commit().await?;
                return Ok(IdempotencyBegin::Send {
                    request_id: new_request_id.to_owned(),
                });
            }
            let Some(r) = query_opt(
                &tx,
                "SELECT fingerprint, request_id, state, status, answer, expires_at
                 FROM idempotency_keys WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            else {
                // Deleted since our insert saw it: try again from the insert.
                tx.rollback().await?;
                continue;
            };
            let row: RecordRow = (
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            );
            let outcome = match judge(row, now, &fingerprint, self, &id)? {
                Judged::Answer(outcome) => outcome,
                Judged::Resend(request_id) => {
                    execute(
                        &tx,
                        "UPDATE idempotency_keys SET state = 'in_flight', owner = $2 WHERE id = $1",
                        &[&id, &self.replica],
                    )
                    .await?;
                    IdempotencyBegin::Resend { request_id }
                }
                Judged::Expired => {
                    execute(
                        &tx,
                        "UPDATE idempotency_keys SET
                           user_ref = $2, fingerprint = $3, request_id = $4,
                           state = 'in_flight', status = NULL, answer = NULL,
                           created_at = $5, expires_at = $6, owner = $7
                         WHERE id = $1",
                        &[
                            &id,
                            &scope.user_ref,
                            &fingerprint_bytes,
                            &new_request_id,
                            &now,
                            &expires_at,
                            &self.replica,
                        ],
                    )
                    .await?;
                    IdempotencyBegin::Send {
                        request_id: new_request_id.to_owned(),
                    }
                }
            };
            tx.commit().await?;
            return Ok(outcome);
        }
        Err(StoreError::Corrupt(format!(
            "idempotency record {id} kept vanishing while it was begun"
        )))
    }

    pub(crate) async fn finish_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let id = scope.id();
        let packed = zeroize::Zeroizing::new(pack(answer.content_type.as_deref(), &answer.body));
        let sealed = self
            .keyring()
            .sealer()
            .seal(&packed, IDEMPOTENCY_KEYS, ANSWER, &id)?;
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE idempotency_keys SET state = 'done', status = $2, answer = $3
             WHERE id = $1",
            &[&id, &i64::from(answer.status), &sealed],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn unknown_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE idempotency_keys SET state = 'unknown' WHERE id = $1",
            &[&scope.id()],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn abandon_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM idempotency_keys WHERE id = $1",
            &[&scope.id()],
        )
        .await?;
        Ok(())
    }

    /// Every `in_flight` record whose gateway is gone becomes `unknown`: one written
    /// without a replica id (a gateway outside fleet mode, which is the only one on its
    /// database), or by a replica no longer among the live ones in `fleet_replicas`
    /// (dead replicas are forgotten first: see `forget_dead_replicas`). A live peer's
    /// call in flight is left alone.
    pub(crate) async fn recover_idempotency(&self) -> Result<u64, StoreError> {
        self.forget_dead_replicas().await?;
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE idempotency_keys SET state = 'unknown'
             WHERE state = 'in_flight'
               AND (owner IS NULL
                    OR NOT EXISTS (SELECT 1 FROM fleet_replicas r WHERE r.id = owner))",
            &[],
        )
        .await
    }

    pub(crate) async fn purge_expired_idempotency(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM idempotency_keys WHERE expires_at <= $1",
            &[&now_db()?],
        )
        .await
    }
}
