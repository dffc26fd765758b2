//! The events outbox on PostgreSQL; see `events.rs`, and `pg/mod.rs` for how inserts
//! keep the pull API's cursor from passing an event.

use std::time::{Duration, SystemTime};

use tokio_postgres::Row;

use super::{PgStore, count, execute, query, query_one, query_opt};
use crate::StoreError;
use crate::events::{
    COLUMNS, EVENTS, EventRecord, NewEvent, PAYLOAD, RawEvent, Recorded, random_id,
};
use crate::schema::{now_db, to_db_id, to_db_time};

/// The advisory lock every event insert holds until its commit: `seq` is drawn under
/// it, so events become visible in `seq` order and a reader that has seen `seq` n has
/// seen every committed event below n.
const EVENTS_INSERT_LOCK: i64 = 0x6275_6e71_5f65_7674; // "bunq_evt"

fn raw_event(r: &Row) -> Result<RawEvent, StoreError> {
    Ok(RawEvent {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        user_ref: r.try_get(2)?,
        event_type: r.try_get(3)?,
        payload: r.try_get(4)?,
        received_at: r.try_get(5)?,
        attempts: r.try_get(6)?,
        next_attempt_at: r.try_get(7)?,
        delivered_at: r.try_get(8)?,
        dead_at: r.try_get(9)?,
        last_error: r.try_get(10)?,
        confirmed_at: r.try_get(11)?,
        unconfirmed_at: r.try_get(12)?,
    })
}

impl PgStore {
    fn open_events(&self, rows: &[Row]) -> Result<Vec<EventRecord>, StoreError> {
        rows.iter().map(|r| raw_event(r)?.open(self)).collect()
    }

    pub(crate) async fn callback_id(&self, user_ref: &str) -> Result<String, StoreError> {
        let fresh = random_id("cb_")?;
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO callback_ids (user_ref, callback_id, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_ref) DO NOTHING",
            &[&user_ref, &fresh, &now_db()?],
        )
        .await?;
        Ok(query_one(
            &client,
            "SELECT callback_id FROM callback_ids WHERE user_ref = $1",
            &[&user_ref],
        )
        .await?
        .try_get(0)?)
    }

    pub(crate) async fn has_callback_id(&self, user_ref: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(query_opt(
            &client,
            "SELECT 1 FROM callback_ids WHERE user_ref = $1",
            &[&user_ref],
        )
        .await?
        .is_some())
    }

    pub(crate) async fn user_of_callback(
        &self,
        callback_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        match query_opt(
            &client,
            "SELECT user_ref FROM callback_ids WHERE callback_id = $1",
            &[&callback_id],
        )
        .await?
        {
            Some(r) => Ok(Some(r.try_get(0)?)),
            None => Ok(None),
        }
    }

    /// Committed (with `synchronous_commit = on`) when it returns. The dedupe check runs
    /// under the insert lock, so bunq's retries of one callback arriving at two gateways
    /// at once are stored once.
    pub(crate) async fn record_event(&self, event: NewEvent) -> Result<Recorded, StoreError> {
        let id = random_id("evt_")?;
        let payload = zeroize::Zeroizing::new(event.payload);
        let sealed = self
            .keyring()
            .sealer()
            .seal(&payload, EVENTS, PAYLOAD, &id)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(
            &tx,
            "SELECT pg_advisory_xact_lock($1)",
            &[&EVENTS_INSERT_LOCK],
        )
        .await?;
        if let Some(key) = &event.dedupe_key {
            if let Some(r) = query_opt(
                &tx,
                "SELECT id FROM events WHERE user_ref = $1 AND dedupe_key = $2",
                &[&event.user_ref, key],
            )
            .await?
            {
                return Ok(Recorded::Duplicate(r.try_get(0)?));
            }
        }
        let now = now_db()?;
        execute(
            &tx,
            "INSERT INTO events (id, user_ref, type, payload, dedupe_key, received_at,
                                 next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[
                &id,
                &event.user_ref,
                &event.event_type,
                &sealed,
                &event.dedupe_key,
                &now,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Recorded::New(id))
    }

    pub(crate) async fn due_events(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let now = to_db_time(now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "SELECT {COLUMNS} FROM events WHERE seq IN (
                     SELECT MIN(seq) FROM events
                     WHERE delivered_at IS NULL AND dead_at IS NULL AND unconfirmed_at IS NULL
                     GROUP BY user_ref)
                 AND next_attempt_at <= $1 ORDER BY seq LIMIT $2"
            ),
            &[&now, &limit],
        )
        .await?;
        self.open_events(&rows)
    }

    /// See `Store::claim_due_events`: the heads of the users' queues, locked with
    /// `FOR UPDATE SKIP LOCKED` so that two relays claiming at once take different
    /// events, and leased in the same statement.
    pub(crate) async fn claim_due_events(
        &self,
        now: SystemTime,
        limit: usize,
        lease: Duration,
        egress: Option<&str>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let until = to_db_time(now.checked_add(lease).unwrap_or(now))?;
        let now = to_db_time(now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "UPDATE events SET leased_until = $3 WHERE seq IN (
                     SELECT seq FROM events WHERE seq IN (
                         SELECT MIN(seq) FROM events
                         WHERE delivered_at IS NULL AND dead_at IS NULL
                           AND unconfirmed_at IS NULL
                         GROUP BY user_ref)
                     AND next_attempt_at <= $1
                     AND (leased_until IS NULL OR leased_until <= $1)
                     AND ($4::TEXT IS NULL OR NOT EXISTS (
                         SELECT 1 FROM users u WHERE u.user_ref = events.user_ref
                           AND u.egress IS NOT NULL AND u.egress <> $4))
                     ORDER BY seq LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING {COLUMNS}"
            ),
            &[&now, &limit, &until, &egress],
        )
        .await?;
        let mut events = self.open_events(&rows)?;
        events.sort_by_key(|e| e.seq);
        Ok(events)
    }

    pub(crate) async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let after = to_db_id(after, "cursor")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&after, &limit],
        )
        .await?;
        self.open_events(&rows)
    }

    pub(crate) async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {COLUMNS} FROM events WHERE id = $1"),
            &[&id],
        )
        .await?;
        row.map(|r| raw_event(&r)?.open(self)).transpose()
    }

    pub(crate) async fn event_delivered(&self, id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET leased_until = NULL, delivered_at = $2, attempts = attempts + 1, last_error = NULL
             WHERE id = $1",
            &[&id, &now_db()?],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn event_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: SystemTime,
        dead: bool,
    ) -> Result<(), StoreError> {
        let next = to_db_time(next_attempt_at)?;
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET leased_until = NULL, attempts = attempts + 1, last_error = $2,
               next_attempt_at = $3,
               dead_at = CASE WHEN $4::BOOLEAN THEN $5::BIGINT ELSE NULL END
             WHERE id = $1 AND delivered_at IS NULL",
            &[&id, &error, &next, &dead, &now_db()?],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn event_confirmed(
        &self,
        id: &str,
        payload: Vec<u8>,
    ) -> Result<(), StoreError> {
        let payload = zeroize::Zeroizing::new(payload);
        let sealed = self
            .keyring()
            .sealer()
            .seal(&payload, EVENTS, PAYLOAD, id)?;
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET payload = $2, confirmed_at = $3
             WHERE id = $1 AND delivered_at IS NULL",
            &[&id, &sealed, &now_db()?],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn event_unconfirmed(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE events SET leased_until = NULL, unconfirmed_at = $2, attempts = attempts + 1, last_error = $3
             WHERE id = $1 AND delivered_at IS NULL",
            &[&id, &now_db()?, &reason],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn purge_settled_events(
        &self,
        settled_before: SystemTime,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM events
             WHERE (delivered_at IS NOT NULL OR unconfirmed_at IS NOT NULL)
               AND coalesce(delivered_at, unconfirmed_at) < $1",
            &[&to_db_time(settled_before)?],
        )
        .await
    }

    pub(crate) async fn count_pending_events(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        count(
            &query_one(
                &client,
                "SELECT COUNT(*) FROM events
                 WHERE delivered_at IS NULL AND dead_at IS NULL AND unconfirmed_at IS NULL",
                &[],
            )
            .await?,
        )
    }

    pub(crate) async fn redeliver_event(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = execute(
            &client,
            "UPDATE events SET leased_until = NULL, delivered_at = NULL, dead_at = NULL, unconfirmed_at = NULL,
               attempts = 0, next_attempt_at = $2, received_at = $2 WHERE id = $1",
            &[&id, &now_db()?],
        )
        .await?;
        Ok(n > 0)
    }
}
