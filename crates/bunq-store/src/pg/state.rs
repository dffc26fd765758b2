//! OAuth states on PostgreSQL; see `state.rs`.

use std::time::SystemTime;

use bunq_oauth::{PendingState, StateContext, StateKey, TakeOutcome};

use super::{PgStore, execute, query_opt};
use crate::StoreError;
use crate::schema::{from_db_time, now_db, to_db_time};

impl PgStore {
    pub(crate) async fn insert_state(&self, state: &PendingState) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO oauth_states (state_key, user_ref, return_to, created_at, expires_at,
                                       replace_identity)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &state.key.0,
                &state.context.user_ref,
                &state.context.return_to,
                &to_db_time(state.created_at)?,
                &to_db_time(state.expires_at)?,
                &state.context.replace,
            ],
        )
        .await?;
        Ok(())
    }

    /// One statement takes the state: of concurrent takers (in any process) the one
    /// whose UPDATE runs first sets `taken_at`; the others wait for its row lock, see
    /// `taken_at` set when they re-check the row, and change nothing.
    pub(crate) async fn take_state(&self, key: &StateKey) -> Result<TakeOutcome, StoreError> {
        let client = self.client().await?;
        let taken = query_opt(
            &client,
            "UPDATE oauth_states SET taken_at = $2
             WHERE state_key = $1 AND taken_at IS NULL
             RETURNING user_ref, return_to, created_at, expires_at, replace_identity",
            &[&key.0, &now_db()?],
        )
        .await?;
        if let Some(r) = taken {
            return Ok(TakeOutcome::Taken(PendingState {
                key: key.clone(),
                context: StateContext {
                    user_ref: r.try_get(0)?,
                    return_to: r.try_get(1)?,
                    replace: r.try_get(4)?,
                },
                created_at: from_db_time(r.try_get(2)?)?,
                expires_at: from_db_time(r.try_get(3)?)?,
            }));
        }
        let exists = query_opt(
            &client,
            "SELECT 1 FROM oauth_states WHERE state_key = $1",
            &[&key.0],
        )
        .await?
        .is_some();
        Ok(if exists {
            TakeOutcome::AlreadyTaken
        } else {
            TakeOutcome::Unknown
        })
    }

    pub(crate) async fn sweep_states(&self, now: SystemTime) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM oauth_states WHERE expires_at < $1",
            &[&to_db_time(now)?],
        )
        .await
    }
}
