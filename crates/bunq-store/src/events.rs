//! bunq callbacks received and the gateway's own events: the outbox the relay delivers
//! from and the pull API reads.
//!
//! An event is stored (its payload sealed) before bunq's callback is answered, and only
//! leaves the outbox's "pending" state once delivered or given up: there is no
//! "sending" state, so a process killed during a delivery delivers the event again after
//! a restart (at least once, never lost). Per user, only the oldest pending event is
//! ever due ([`Store::due_events`]), which keeps a user's events in order even across
//! retries.

use std::fmt;
use std::time::{Duration, SystemTime};

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom as _, SystemRandom};
use rusqlite::{OptionalExtension as _, Row, params};

use crate::schema::{from_db_id, from_db_time, now_db, to_db_id, to_db_time};
use crate::vault::Vault;
use crate::{Store, StoreError};

pub(crate) const EVENTS: &str = "events";
pub(crate) const PAYLOAD: &str = "payload";

/// The digest bunq's retries of one callback share: SHA-256 of its exact body, hex.
pub fn callback_dedupe_key(body: &[u8]) -> String {
    hex(digest(&SHA256, body).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_id(prefix: &str) -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Crypto("no randomness for an id"))?;
    Ok(format!("{prefix}{}", hex(&bytes)))
}

/// An event to store.
#[derive(Clone)]
pub struct NewEvent {
    /// Whose event.
    pub user_ref: String,
    /// The event type the application sees (`bunq.PAYMENT`, `user.connected`, ...).
    pub event_type: String,
    /// What the application gets as `data` (JSON), sealed at rest: payment objects are
    /// personal data.
    pub payload: Vec<u8>,
    /// Events with the same key for one user are stored once (`None`: never deduplicated).
    pub dedupe_key: Option<String>,
}

impl fmt::Debug for NewEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEvent")
            .field("user_ref", &self.user_ref)
            .field("event_type", &self.event_type)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// What [`Store::record_event`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// Stored as a new event with this id.
    New(String),
    /// An event with the same dedupe key was already stored (its id).
    Duplicate(String),
}

/// Where an event's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// Not delivered yet; retried at `next_attempt_at`.
    Pending,
    /// A webhook receiver accepted it.
    Delivered,
    /// Given up after the retry period; [`Store::redeliver_event`] revives it.
    Dead,
    /// bunq did not confirm the object the callback named ([`Store::event_unconfirmed`]):
    /// never sent to receivers, listed by the pull API.
    Unconfirmed,
}

impl DeliveryState {
    /// `pending`, `delivered`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Unconfirmed => "unconfirmed",
        }
    }
}

/// A stored event, payload opened.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRecord {
    /// The position in the outbox: the pull API's cursor.
    pub seq: u64,
    /// The public id (`webhook-id`).
    pub id: String,
    /// Whose event.
    pub user_ref: String,
    /// The event type.
    pub event_type: String,
    /// The payload as stored.
    pub payload: Vec<u8>,
    /// When it was stored.
    pub received_at: SystemTime,
    /// Delivery attempts so far.
    pub attempts: u64,
    /// When the next attempt is due (pending events).
    pub next_attempt_at: SystemTime,
    /// Where its delivery stands.
    pub state: DeliveryState,
    /// Whether the payload is bunq's re-fetched object ([`Store::event_confirmed`]).
    pub confirmed: bool,
    /// When it was delivered, given up, or found unconfirmed.
    pub settled_at: Option<SystemTime>,
    /// Why the last attempt failed (no secrets: a status or a transport error).
    pub last_error: Option<String>,
}

impl fmt::Debug for EventRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRecord")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("user_ref", &self.user_ref)
            .field("event_type", &self.event_type)
            .field("payload_len", &self.payload.len())
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

pub(crate) const COLUMNS: &str = "seq, id, user_ref, type, payload, received_at, attempts, \
     next_attempt_at, delivered_at, dead_at, last_error, confirmed_at, unconfirmed_at";

/// An `events` row as stored ([`COLUMNS`], in order), payload still sealed.
pub(crate) struct RawEvent {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) user_ref: String,
    pub(crate) event_type: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) received_at: i64,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) delivered_at: Option<i64>,
    pub(crate) dead_at: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) confirmed_at: Option<i64>,
    pub(crate) unconfirmed_at: Option<i64>,
}

impl RawEvent {
    pub(crate) fn open(self, vault: &Vault) -> Result<EventRecord, StoreError> {
        let payload = vault
            .keyring()
            .open(&self.payload, EVENTS, PAYLOAD, &self.id)?;
        let (state, settled) = match (self.delivered_at, self.dead_at, self.unconfirmed_at) {
            (Some(t), _, _) => (DeliveryState::Delivered, Some(from_db_time(t)?)),
            (None, Some(t), _) => (DeliveryState::Dead, Some(from_db_time(t)?)),
            (None, None, Some(t)) => (DeliveryState::Unconfirmed, Some(from_db_time(t)?)),
            (None, None, None) => (DeliveryState::Pending, None),
        };
        Ok(EventRecord {
            seq: from_db_id(self.seq, "event seq")?,
            user_ref: self.user_ref,
            event_type: self.event_type,
            payload: payload.to_vec(),
            received_at: from_db_time(self.received_at)?,
            attempts: from_db_id(self.attempts, "attempts")?,
            next_attempt_at: from_db_time(self.next_attempt_at)?,
            state,
            confirmed: self.confirmed_at.is_some(),
            settled_at: settled,
            last_error: self.last_error,
            id: self.id,
        })
    }
}

fn event_row(row: &Row<'_>, shared: &crate::db::Shared) -> Result<EventRecord, StoreError> {
    RawEvent {
        seq: row.get(0)?,
        id: row.get(1)?,
        user_ref: row.get(2)?,
        event_type: row.get(3)?,
        payload: row.get(4)?,
        received_at: row.get(5)?,
        attempts: row.get(6)?,
        next_attempt_at: row.get(7)?,
        delivered_at: row.get(8)?,
        dead_at: row.get(9)?,
        last_error: row.get(10)?,
        confirmed_at: row.get(11)?,
        unconfirmed_at: row.get(12)?,
    }
    .open(shared)
}

impl Store {
    /// The opaque callback id of `user_ref`, created (random) on first use.
    pub async fn callback_id(&self, user_ref: &str) -> Result<String, StoreError> {
        crate::on_postgres!(self, pg => pg.callback_id(user_ref));
        let user_ref = user_ref.to_owned();
        let fresh = random_id("cb_")?;
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO callback_ids (user_ref, callback_id, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_ref) DO NOTHING",
            )?
            .execute(params![user_ref, fresh, now_db()?])?;
            Ok(conn
                .prepare_cached("SELECT callback_id FROM callback_ids WHERE user_ref = ?1")?
                .query_row([&user_ref], |r| r.get(0))?)
        })
        .await
    }

    /// Whether `user_ref` has a callback id (was ever given a callback URL).
    pub async fn has_callback_id(&self, user_ref: &str) -> Result<bool, StoreError> {
        crate::on_postgres!(self, pg => pg.has_callback_id(user_ref));
        let user_ref = user_ref.to_owned();
        self.read(move |conn, _| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM callback_ids WHERE user_ref = ?1")?
                .query_row([&user_ref], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    /// The user a callback id belongs to, if any.
    pub async fn user_of_callback(&self, callback_id: &str) -> Result<Option<String>, StoreError> {
        crate::on_postgres!(self, pg => pg.user_of_callback(callback_id));
        let callback_id = callback_id.to_owned();
        self.read(move |conn, _| {
            Ok(conn
                .prepare_cached("SELECT user_ref FROM callback_ids WHERE callback_id = ?1")?
                .query_row([&callback_id], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Stores `event` (payload sealed), due for delivery at once, unless an event with
    /// the same dedupe key is stored for the user already. Committed (and fsynced at
    /// [`crate::Durability::Full`]) when it returns; concurrent calls share commits
    /// (group commit), which is what lets bunq's callbacks be stored at thousands per
    /// second without weakening that.
    pub async fn record_event(&self, event: NewEvent) -> Result<Recorded, StoreError> {
        crate::on_postgres!(self, pg => pg.record_event(event));
        let id = random_id("evt_")?;
        let payload = zeroize::Zeroizing::new(event.payload);
        self.write_grouped(move |tx, shared| {
            if let Some(key) = &event.dedupe_key {
                let existing: Option<String> = tx
                    .prepare_cached(
                        "SELECT id FROM events WHERE user_ref = ?1 AND dedupe_key = ?2",
                    )?
                    .query_row(params![event.user_ref, key], |r| r.get(0))
                    .optional()?;
                if let Some(existing) = existing {
                    return Ok(Recorded::Duplicate(existing));
                }
            }
            let sealed = shared
                .keyring()
                .sealer()
                .seal(&payload, EVENTS, PAYLOAD, &id)?;
            let now = now_db()?;
            tx.prepare_cached(
                "INSERT INTO events (id, user_ref, type, payload, dedupe_key, received_at,
                                     next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            )?
            .execute(params![
                id,
                event.user_ref,
                event.event_type,
                sealed,
                event.dedupe_key,
                now
            ])?;
            Ok(Recorded::New(id))
        })
        .await
    }

    /// The events due for delivery at `now`: for each user, the oldest event neither
    /// delivered nor dead, if its next attempt is due; oldest first, at most `limit`.
    pub async fn due_events(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.due_events(now, limit));
        let now = to_db_time(now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn, shared| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq IN (
                     SELECT MIN(seq) FROM events
                     WHERE delivered_at IS NULL AND dead_at IS NULL AND unconfirmed_at IS NULL
                     GROUP BY user_ref)
                 AND next_attempt_at <= ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![now, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_row(row, shared)?);
            }
            Ok(out)
        })
        .await
    }

    /// [`due_events`](Self::due_events) for a relay that may share the database with
    /// others: each event returned is leased to the caller until `now + lease` (its
    /// settlement ends the lease sooner), and an event leased to another relay is not
    /// due, nor is any later event of the same user, so that no two relays deliver one
    /// event, or one user's events, at the same time. A relay that dies leaves its
    /// events to be taken again once their lease ends. On SQLite (one process) the
    /// lease is kept the same way.
    ///
    /// With `egress`, events of users pinned to another egress ([`UserRecord::egress`](crate::UserRecord::egress))
    /// are left to the relays of that egress: confirming one means a call to bunq with
    /// the user's session, which bunq accepts only from the user's egress.
    pub async fn claim_due_events(
        &self,
        now: SystemTime,
        limit: usize,
        lease: Duration,
        egress: Option<&str>,
    ) -> Result<Vec<EventRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.claim_due_events(now, limit, lease, egress));
        let egress = egress.map(str::to_owned);
        let until = to_db_time(now.checked_add(lease).unwrap_or(now))?;
        let now = to_db_time(now)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn, shared| {
            let mut stmt = conn.prepare_cached(&format!(
                "UPDATE events SET leased_until = ?3 WHERE seq IN (
                     SELECT seq FROM events WHERE seq IN (
                         SELECT MIN(seq) FROM events
                         WHERE delivered_at IS NULL AND dead_at IS NULL
                           AND unconfirmed_at IS NULL
                         GROUP BY user_ref)
                     AND next_attempt_at <= ?1
                     AND (leased_until IS NULL OR leased_until <= ?1)
                     AND (?4 IS NULL OR NOT EXISTS (
                         SELECT 1 FROM users u WHERE u.user_ref = events.user_ref
                           AND u.egress IS NOT NULL AND u.egress <> ?4))
                     ORDER BY seq LIMIT ?2)
                 RETURNING {COLUMNS}"
            ))?;
            let mut rows = stmt.query(params![now, limit, until, egress])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_row(row, shared)?);
            }
            out.sort_by_key(|e| e.seq);
            Ok(out)
        })
        .await
    }

    /// Events after `after` (a `seq`), oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.events_after(after, limit));
        let after = to_db_id(after, "cursor")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn, shared| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![after, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_row(row, shared)?);
            }
            Ok(out)
        })
        .await
    }

    /// One event by its public id.
    pub async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        crate::on_postgres!(self, pg => pg.event(id));
        let id = id.to_owned();
        self.read(move |conn, shared| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?1"))?;
            let mut rows = stmt.query([&id])?;
            rows.next()?.map(|row| event_row(row, shared)).transpose()
        })
        .await
    }

    /// Records that the event was delivered. Grouped with the outbox's other writes
    /// (one commit for many), like every settlement below: under load the relay's
    /// writes would otherwise take an fsync each between the inserts' groups.
    pub async fn event_delivered(&self, id: &str) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.event_delivered(id));
        let id = id.to_owned();
        self.write_grouped(move |conn, _| {
            conn.prepare_cached(
                "UPDATE events SET leased_until = NULL, delivered_at = ?2, attempts = attempts + 1, last_error = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, now_db()?])?;
            Ok(())
        })
        .await
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up (`dead`).
    pub async fn event_failed(
        &self,
        id: &str,
        error: &str,
        next_attempt_at: SystemTime,
        dead: bool,
    ) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.event_failed(id, error, next_attempt_at, dead));
        let (id, error) = (id.to_owned(), error.to_owned());
        let next = to_db_time(next_attempt_at)?;
        self.write_grouped(move |conn, _| {
            let now = now_db()?;
            conn.prepare_cached(
                "UPDATE events SET leased_until = NULL, attempts = attempts + 1, last_error = ?2,
                   next_attempt_at = ?3, dead_at = CASE WHEN ?4 THEN ?5 ELSE NULL END
                 WHERE id = ?1 AND delivered_at IS NULL",
            )?
            .execute(params![id, error, next, dead, now])?;
            Ok(())
        })
        .await
    }

    /// Replaces the payload of a pending event with bunq's re-fetched object (sealed
    /// like any payload) and marks it confirmed; the relay then sends that instead of
    /// the callback's body.
    pub async fn event_confirmed(&self, id: &str, payload: Vec<u8>) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.event_confirmed(id, payload));
        let id = id.to_owned();
        let payload = zeroize::Zeroizing::new(payload);
        self.write_grouped(move |conn, shared| {
            let sealed = shared
                .keyring()
                .sealer()
                .seal(&payload, EVENTS, PAYLOAD, &id)?;
            conn.prepare_cached(
                "UPDATE events SET payload = ?2, confirmed_at = ?3
                 WHERE id = ?1 AND delivered_at IS NULL",
            )?
            .execute(params![id, sealed, now_db()?])?;
            Ok(())
        })
        .await
    }

    /// Settles a pending event as unconfirmed: bunq does not know the object it names
    /// (`reason` says how, without personal data). It is never delivered, and the
    /// user's later events are no longer held behind it.
    pub async fn event_unconfirmed(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.event_unconfirmed(id, reason));
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write_grouped(move |conn, _| {
            conn.prepare_cached(
                "UPDATE events SET leased_until = NULL, unconfirmed_at = ?2, attempts = attempts + 1, last_error = ?3
                 WHERE id = ?1 AND delivered_at IS NULL",
            )?
            .execute(params![id, now_db()?, reason])?;
            Ok(())
        })
        .await
    }

    /// Deletes the events delivered or found unconfirmed before `settled_before`
    /// (retention). Pending and dead events stay: they are still owed to the
    /// application. Returns how many were deleted.
    pub async fn purge_settled_events(
        &self,
        settled_before: SystemTime,
    ) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.purge_settled_events(settled_before));
        let before = to_db_time(settled_before)?;
        self.write(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM events
                     WHERE (delivered_at IS NOT NULL OR unconfirmed_at IS NOT NULL)
                       AND coalesce(delivered_at, unconfirmed_at) < ?1",
                )?
                .execute([before])?;
            Ok(n as u64)
        })
        .await
    }

    /// How many events wait for delivery (neither delivered, dead nor unconfirmed).
    pub async fn count_pending_events(&self) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.count_pending_events());
        self.read(|conn, _| {
            let n: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM events
                     WHERE delivered_at IS NULL AND dead_at IS NULL AND unconfirmed_at IS NULL",
                )?
                .query_row([], |r| r.get(0))?;
            from_db_id(n, "count")
        })
        .await
    }

    /// Makes an event pending again, due now, with a fresh retry period (after it died,
    /// was found unconfirmed, or to send a delivered one again); an unconfirmed one is
    /// checked with bunq again. Returns whether it exists.
    pub async fn redeliver_event(&self, id: &str) -> Result<bool, StoreError> {
        crate::on_postgres!(self, pg => pg.redeliver_event(id));
        let id = id.to_owned();
        self.write(move |conn, _| {
            let now = now_db()?;
            let n = conn
                .prepare_cached(
                    "UPDATE events SET leased_until = NULL, delivered_at = NULL, dead_at = NULL, unconfirmed_at = NULL,
                       attempts = 0,
                       next_attempt_at = ?2, received_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now])?;
            Ok(n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keys_are_body_digests() {
        assert_eq!(callback_dedupe_key(b"a"), callback_dedupe_key(b"a"));
        assert_ne!(callback_dedupe_key(b"a"), callback_dedupe_key(b"b"));
        assert_eq!(callback_dedupe_key(b"").len(), 64);
    }
}
