//! Pending OAuth states: the `bunq_oauth::StateStore` implementation.
//!
//! A state is stored under its digest ([`StateKey`]), never in clear, so the column needs
//! no sealing. A taken state stays (marked taken) until it expires, so a replayed
//! callback is told apart from a forged one.

use std::time::SystemTime;

use bunq_oauth::{PendingState, StateContext, StateKey, StateStore, StateStoreError, TakeOutcome};
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use crate::schema::{from_db_time, now_db, to_db_time};
use crate::{Store, StoreError};

impl Store {
    /// Records a freshly issued state. A digest already present is an error (a state
    /// is issued once).
    pub async fn insert_state(&self, state: &PendingState) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.insert_state(state));
        let state = state.clone();
        let created_at = to_db_time(state.created_at)?;
        let expires_at = to_db_time(state.expires_at)?;
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO oauth_states (state_key, user_ref, return_to, created_at, expires_at,
                                           replace_identity)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                state.key.0,
                state.context.user_ref,
                state.context.return_to,
                created_at,
                expires_at,
                state.context.replace
            ])?;
            Ok(())
        })
        .await
    }

    /// Consumes the state stored under `key`, at most once over all callers.
    pub async fn take_state(&self, key: &StateKey) -> Result<TakeOutcome, StoreError> {
        crate::on_postgres!(self, pg => pg.take_state(key));
        let key = key.clone();
        self.write(move |conn, _| {
            // IMMEDIATE takes the write lock before the read, so even another process on
            // the same file cannot take the state between our SELECT and UPDATE.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row = tx
                .prepare_cached(
                    "SELECT user_ref, return_to, created_at, expires_at, taken_at,
                            replace_identity
                     FROM oauth_states WHERE state_key = ?1",
                )?
                .query_row([&key.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                })
                .optional()?;
            let outcome = match row {
                None => TakeOutcome::Unknown,
                Some((_, _, _, _, Some(_), _)) => TakeOutcome::AlreadyTaken,
                Some((user_ref, return_to, created_at, expires_at, None, replace)) => {
                    tx.prepare_cached(
                        "UPDATE oauth_states SET taken_at = ?2 WHERE state_key = ?1",
                    )?
                    .execute(params![key.0, now_db()?])?;
                    TakeOutcome::Taken(PendingState {
                        key,
                        context: StateContext {
                            user_ref,
                            return_to,
                            replace,
                        },
                        created_at: from_db_time(created_at)?,
                        expires_at: from_db_time(expires_at)?,
                    })
                }
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    /// Forgets states (pending or taken) that expired before `now`; returns how many.
    pub async fn sweep_states(&self, now: SystemTime) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.sweep_states(now));
        let now = to_db_time(now)?;
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached("DELETE FROM oauth_states WHERE expires_at < ?1")?
                .execute([now])?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }

    /// [`Store::sweep_states`] as of now.
    pub async fn sweep_expired_states(&self) -> Result<u64, StoreError> {
        self.sweep_states(SystemTime::now()).await
    }
}

fn state_error(e: StoreError) -> StateStoreError {
    StateStoreError(Box::new(e))
}

impl StateStore for Store {
    async fn insert(&self, state: &PendingState) -> Result<(), StateStoreError> {
        self.insert_state(state).await.map_err(state_error)
    }

    async fn take(&self, key: &StateKey) -> Result<TakeOutcome, StateStoreError> {
        self.take_state(key).await.map_err(state_error)
    }

    async fn sweep_expired(&self, now: SystemTime) -> Result<u64, StateStoreError> {
        self.sweep_states(now).await.map_err(state_error)
    }
}
