//! How gateways sharing one PostgreSQL database coordinate (see `fleet.rs`): the
//! replicas' heartbeats, the session-server turn per egress, a lock per credential
//! while a session is created, and the notifications of users whose grant changed.
//!
//! Every time here is the database's (`clock_timestamp()`), so that the gateways'
//! clocks need not agree.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{PgStore, execute, query, query_opt};
use crate::StoreError;
use crate::fleet::{Replica, UserChange};

/// The channel on which user changes are announced.
pub(crate) const USERS_CHANNEL: &str = "bunq_store_users";

/// A duration as PostgreSQL microseconds, for `$n * interval '1 microsecond'`.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Announces (at the commit of `client`'s transaction) that `user_ref`'s grant or
/// credential changed.
pub(crate) async fn notify_user<C: deadpool_postgres::GenericClient>(
    client: &C,
    user_ref: &str,
) -> Result<(), StoreError> {
    execute(
        client,
        "SELECT pg_notify($1, $2)",
        &[&USERS_CHANNEL, &user_ref],
    )
    .await?;
    Ok(())
}

/// The key of the advisory lock held while a session is created for `credential`
/// (another key space than the per-user write lock, which short transactions take).
fn creation_lock_key(credential: &str) -> i64 {
    super::owner_lock_key(&format!("session creation\0{credential}"))
}

/// A session-level advisory lock on a pooled connection: released when dropped (by a
/// spawned unlock, or by closing the connection where no runtime is left to run one).
pub(crate) struct HeldLock {
    client: Option<Object>,
    key: i64,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let key = self.key;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let unlocked = client
                        .execute("SELECT pg_advisory_unlock($1)", &[&key])
                        .await;
                    if unlocked.is_err() {
                        // Not back to the pool holding a lock: the server releases
                        // it when the connection closes.
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

impl PgStore {
    pub(crate) async fn join_fleet(
        &self,
        replica: &str,
        egress: &str,
        url: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO fleet_replicas (id, egress, url, started_at, heartbeat_at)
             VALUES ($1, $2, $3, clock_timestamp(), clock_timestamp())
             ON CONFLICT (id) DO UPDATE SET egress = $2, url = $3,
               heartbeat_at = clock_timestamp()",
            &[&replica, &egress, &url],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn heartbeat(
        &self,
        replica: &str,
        stale_after: Duration,
    ) -> Result<Vec<Replica>, StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE fleet_replicas SET heartbeat_at = clock_timestamp() WHERE id = $1",
            &[&replica],
        )
        .await?;
        let stale = micros(stale_after);
        // The dead are forgotten by whoever notices first.
        execute(
            &client,
            "DELETE FROM fleet_replicas
             WHERE heartbeat_at < clock_timestamp() - $1::BIGINT * interval '1 microsecond'",
            &[&stale],
        )
        .await?;
        let rows = query(
            &client,
            "SELECT id, egress, url FROM fleet_replicas ORDER BY started_at, id",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Replica {
                    id: r.try_get(0)?,
                    egress: r.try_get(1)?,
                    url: r.try_get(2)?,
                })
            })
            .collect()
    }

    pub(crate) async fn leave_fleet(&self, replica: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM fleet_replicas WHERE id = $1",
            &[&replica],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn try_take_session_window(
        &self,
        egress: &str,
        holder: &str,
        hold: Duration,
        window: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let client = self.client().await?;
        let until = micros(hold.saturating_add(window));
        let taken = query_opt(
            &client,
            "INSERT INTO session_windows (egress, busy_until, holder)
             VALUES ($1, clock_timestamp() + $2::BIGINT * interval '1 microsecond', $3)
             ON CONFLICT (egress) DO UPDATE
               SET busy_until = EXCLUDED.busy_until, holder = EXCLUDED.holder
               WHERE session_windows.busy_until <= clock_timestamp()
             RETURNING 1",
            &[&egress, &until, &holder],
        )
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let row = query_opt(
            &client,
            "SELECT GREATEST(EXTRACT(EPOCH FROM busy_until - clock_timestamp()), 0)::FLOAT8
             FROM session_windows WHERE egress = $1",
            &[&egress],
        )
        .await?;
        let seconds: f64 = match row {
            Some(r) => r.try_get(0)?,
            None => 0.0,
        };
        Ok(Some(
            Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO),
        ))
    }

    pub(crate) async fn release_session_window(
        &self,
        egress: &str,
        holder: &str,
        window: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Only the holder's own turn, and never earlier than it would end anyway.
        execute(
            &client,
            "UPDATE session_windows
             SET busy_until = LEAST(busy_until,
                   clock_timestamp() + $3::BIGINT * interval '1 microsecond'),
                 holder = NULL
             WHERE egress = $1 AND holder = $2",
            &[&egress, &holder, &micros(window)],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn lock_creation(&self, credential: &str) -> Result<HeldLock, StoreError> {
        let client = self.client().await?;
        let key = creation_lock_key(credential);
        // Waited for however long another gateway's creation takes (it is bounded by
        // its pacer wait and its call's timeout), not the statements' lock timeout.
        client.batch_execute("SET lock_timeout = 0").await?;
        let locked = client.execute("SELECT pg_advisory_lock($1)", &[&key]).await;
        let reset = client.batch_execute("RESET lock_timeout").await;
        let held = HeldLock {
            client: Some(client),
            key,
        };
        locked?;
        reset?;
        Ok(held)
    }

    /// Listens for user changes on a connection of its own, reconnecting when it
    /// drops; every (re)connection is announced as [`UserChange::Resync`], since what
    /// was announced meanwhile is lost.
    pub(crate) fn listen_users(self: &Arc<Self>) -> mpsc::Receiver<UserChange> {
        let (tx, rx) = mpsc::channel(1024);
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match config.connect(NoTls).await {
                    Ok((client, mut connection)) => {
                        let (notes_tx, mut notes) = mpsc::unbounded_channel();
                        let driver = tokio::spawn(async move {
                            loop {
                                let message =
                                    std::future::poll_fn(|cx| connection.poll_message(cx)).await;
                                match message {
                                    Some(Ok(AsyncMessage::Notification(n))) => {
                                        if notes_tx.send(n.payload().to_owned()).is_err() {
                                            return;
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => return,
                                }
                            }
                        });
                        let listening = client
                            .batch_execute(&format!("LISTEN {USERS_CHANNEL}"))
                            .await;
                        if listening.is_ok() {
                            backoff = Duration::from_millis(100);
                            if tx.send(UserChange::Resync).await.is_err() {
                                driver.abort();
                                return;
                            }
                            while let Some(user_ref) = notes.recv().await {
                                if tx.send(UserChange::User(user_ref)).await.is_err() {
                                    driver.abort();
                                    return;
                                }
                            }
                            tracing::warn!("the PostgreSQL notification connection dropped");
                        }
                        driver.abort();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to PostgreSQL to listen");
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        rx
    }
}
