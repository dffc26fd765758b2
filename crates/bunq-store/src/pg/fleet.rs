//! How gateways sharing one PostgreSQL database coordinate (see `fleet.rs`): the
//! replicas' heartbeats, the session-server turn per egress, a lock per credential
//! while a session is created, and the notifications of users whose grant changed.
//!
//! Every time here is the database's (`clock_timestamp()`), so that the gateways'
//! clocks need not agree.

use std::sync::Arc;
use std::time::Duration;

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
/// credential changed, naming the replica that changed it (empty outside fleet mode), so
/// that the replica's own listener skips what it did itself.
pub(crate) async fn notify_user<C: deadpool_postgres::GenericClient>(
    client: &C,
    by: Option<&str>,
    user_ref: &str,
) -> Result<(), StoreError> {
    let payload = format!("{}\n{user_ref}", by.unwrap_or_default());
    execute(
        client,
        "SELECT pg_notify($1, $2)",
        &[&USERS_CHANNEL, &payload],
    )
    .await?;
    Ok(())
}

/// The key of the advisory lock a replica holds for as long as it lives, on a
/// connection of its own: the server releases it the moment the process dies (its
/// connection closes), so that a replica that can take it knows its holder is dead.
pub(crate) fn liveness_key(replica: &str) -> i64 {
    super::owner_lock_key(&format!("replica alive\0{replica}"))
}

/// Held by a live replica: its liveness lock's connection, closed when dropped.
pub(crate) struct Liveness {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A claim on a credential's session creation, in `session_creations`: released when
/// dropped (by a spawned delete; a claim left behind by a dead process is taken over
/// once its holder is known dead or its lease ends).
pub(crate) struct CreationClaim {
    store: Option<Arc<PgStore>>,
    credential: String,
    holder: String,
}

impl Drop for CreationClaim {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (credential, holder) = (
            std::mem::take(&mut self.credential),
            std::mem::take(&mut self.holder),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let released = async {
                    let client = store.client().await?;
                    execute(
                        &client,
                        "DELETE FROM session_creations WHERE credential = $1 AND holder = $2",
                        &[&credential, &holder],
                    )
                    .await
                }
                .await;
                if let Err(e) = released {
                    tracing::warn!(error = %e, "cannot release a session creation claim");
                }
            });
        }
    }
}

/// How long a claim on a session creation holds without its holder: longer than any
/// creation (its wait for the session turn and its calls).
const CREATION_LEASE: Duration = Duration::from_secs(180);
/// How often a gateway waiting for another's creation looks again.
const CREATION_POLL: Duration = Duration::from_millis(50);

impl PgStore {
    pub(crate) async fn join_fleet(
        &self,
        replica: &str,
        egress: &str,
        url: Option<&str>,
    ) -> Result<Liveness, StoreError> {
        let liveness = self.hold_liveness(replica).await?;
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
        Ok(liveness)
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

    /// Takes `replica`'s liveness lock on a connection of its own, held until the
    /// returned guard is dropped (or the process dies).
    pub(crate) async fn hold_liveness(&self, replica: &str) -> Result<Liveness, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the fleet liveness connection ended");
            }
        });
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&liveness_key(replica)])
            .await?
            .try_get(0)?;
        if !taken {
            driver.abort();
            return Err(StoreError::InvalidInput(format!(
                "replica id {replica} is in use by a live gateway"
            )));
        }
        Ok(Liveness {
            _client: client,
            driver,
        })
    }

    /// Whether `replica` is dead: nobody holds its liveness lock. (Taken for a moment
    /// to tell, then released.)
    pub(crate) async fn is_dead(&self, replica: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let key = liveness_key(replica);
        let free: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .try_get(0)?;
        if free {
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await?;
        }
        Ok(free)
    }

    /// Forgets the replicas that are dead though their heartbeat is recent (a SIGKILL
    /// a moment ago): their liveness lock is free. Returns how many.
    pub(crate) async fn forget_dead_replicas(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let ids: Vec<String> = query(&client, "SELECT id FROM fleet_replicas", &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        drop(client);
        let mut forgotten = 0;
        for id in ids {
            if Some(&id) != self.replica.as_ref() && self.is_dead(&id).await? {
                let client = self.client().await?;
                forgotten +=
                    execute(&client, "DELETE FROM fleet_replicas WHERE id = $1", &[&id]).await?;
            }
        }
        Ok(forgotten)
    }

    /// Claims the creation of a session for `credential`, waiting while another live
    /// gateway holds the claim (polling; no connection is held while waiting).
    pub(crate) async fn claim_creation(
        self: &Arc<Self>,
        credential: &str,
    ) -> Result<CreationClaim, StoreError> {
        let holder = match &self.replica {
            Some(replica) => crate::events::random_id(&format!("{replica}/"))?,
            None => crate::events::random_id("")?,
        };
        let lease = micros(CREATION_LEASE);
        loop {
            let client = self.client().await?;
            let taken = query_opt(
                &client,
                "INSERT INTO session_creations (credential, holder, until)
                 VALUES ($1, $2, clock_timestamp() + $3::BIGINT * interval '1 microsecond')
                 ON CONFLICT (credential) DO UPDATE
                   SET holder = EXCLUDED.holder, until = EXCLUDED.until
                   WHERE session_creations.until <= clock_timestamp()
                 RETURNING 1",
                &[&credential, &holder, &lease],
            )
            .await?;
            if taken.is_some() {
                return Ok(CreationClaim {
                    store: Some(Arc::clone(self)),
                    credential: credential.to_owned(),
                    holder,
                });
            }
            // A claim whose gateway died is taken over at once, not after its lease.
            let other: Option<String> = query_opt(
                &client,
                "SELECT holder FROM session_creations WHERE credential = $1",
                &[&credential],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
            drop(client);
            if let Some(replica) = other
                .as_deref()
                .and_then(|h| h.split_once('/'))
                .map(|(r, _)| r)
            {
                if self.is_dead(replica).await? {
                    let client = self.client().await?;
                    execute(
                        &client,
                        "DELETE FROM session_creations WHERE credential = $1 AND holder = $2",
                        &[&credential, &other],
                    )
                    .await?;
                    continue;
                }
            }
            tokio::time::sleep(CREATION_POLL).await;
        }
    }

    /// Listens for user changes on a connection of its own, reconnecting when it
    /// drops; every (re)connection is announced as [`UserChange::Resync`], since what
    /// was announced meanwhile is lost.
    pub(crate) fn listen_users(self: &Arc<Self>) -> mpsc::Receiver<UserChange> {
        let (tx, rx) = mpsc::channel(1024);
        let config = self.config.clone();
        let me = self.replica.clone().unwrap_or_default();
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
                            while let Some(payload) = notes.recv().await {
                                let Some((by, user_ref)) = payload.split_once('\n') else {
                                    continue;
                                };
                                if !me.is_empty() && by == me {
                                    continue;
                                }
                                let change = UserChange::User(user_ref.to_owned());
                                if tx.send(change).await.is_err() {
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
