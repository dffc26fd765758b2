//! Connected end users and their OAuth access tokens.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};
use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{self, AuditEvent};
use crate::schema::{from_db_id, from_db_time, now_db, to_db_id};
use crate::{Store, StoreError};

pub(crate) const USERS: &str = "users";
pub(crate) const ACCESS_TOKEN: &str = "access_token";

/// Where a user is in the connect flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserStatus {
    /// An access token is stored, but the bunq context is not (yet) confirmed working.
    Connecting,
    /// The bunq account is connected ([`Store::mark_connected`]).
    Connected,
}

impl UserStatus {
    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Connecting => "connecting",
            UserStatus::Connected => "connected",
        }
    }

    fn parse(name: &str) -> Result<Self, StoreError> {
        match name {
            "connecting" => Ok(UserStatus::Connecting),
            "connected" => Ok(UserStatus::Connected),
            other => Err(StoreError::Corrupt(format!(
                "unknown user status {other:?}"
            ))),
        }
    }
}

/// A user row without its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The application's reference of the end user.
    pub user_ref: String,
    /// bunq's id of the user, once connected.
    pub bunq_user_id: Option<u64>,
    /// Where the user is in the connect flow.
    pub status: UserStatus,
    /// When the user was (last) connected.
    pub connected_at: Option<SystemTime>,
    /// When the row last changed.
    pub updated_at: SystemTime,
}

fn user_row(conn: &Connection, user_ref: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT bunq_user_id, status, connected_at, updated_at FROM users WHERE user_ref = ?1",
        )?
        .query_row([user_ref], |r| {
            Ok((
                r.get::<_, Option<i64>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((bunq_user_id, status, connected_at, updated_at)) = row else {
        return Ok(None);
    };
    Ok(Some(UserRecord {
        user_ref: user_ref.to_owned(),
        bunq_user_id: bunq_user_id
            .map(|id| from_db_id(id, "bunq user id"))
            .transpose()?,
        status: UserStatus::parse(&status)?,
        connected_at: connected_at.map(from_db_time).transpose()?,
        updated_at: from_db_time(updated_at)?,
    }))
}

impl Store {
    /// Stores (sealed) the OAuth access token of `user_ref`, creating the user row if
    /// needed. The status becomes [`UserStatus::Connecting`] until
    /// [`Store::mark_connected`] confirms the token works: a new token is not yet a
    /// working connection.
    pub async fn put_access_token(
        &self,
        user_ref: &str,
        token: &SecretString,
    ) -> Result<(), StoreError> {
        let user_ref = user_ref.to_owned();
        let token = token.clone();
        self.write(move |conn, shared| {
            let sealed = shared.keyring().sealer().seal(
                token.expose_secret().as_bytes(),
                USERS,
                ACCESS_TOKEN,
                &user_ref,
            )?;
            conn.prepare_cached(
                "INSERT INTO users (user_ref, status, updated_at, access_token)
                 VALUES (?1, 'connecting', ?2, ?3)
                 ON CONFLICT (user_ref) DO UPDATE SET
                   status = 'connecting', updated_at = excluded.updated_at,
                   access_token = excluded.access_token",
            )?
            .execute(params![user_ref, now_db()?, sealed])?;
            Ok(())
        })
        .await
    }

    /// The OAuth access token of `user_ref`, if the user exists.
    pub async fn access_token(&self, user_ref: &str) -> Result<Option<SecretString>, StoreError> {
        let user_ref = user_ref.to_owned();
        self.read(move |conn, shared| read_access_token(conn, shared, &user_ref))
            .await
    }

    /// Marks `user_ref` connected as bunq user `bunq_user_id`, and writes "connect" to
    /// the audit log in the same transaction. The user must exist
    /// ([`Store::put_access_token`] first).
    pub async fn mark_connected(
        &self,
        user_ref: &str,
        bunq_user_id: u64,
    ) -> Result<UserRecord, StoreError> {
        let user_ref = user_ref.to_owned();
        let db_id = to_db_id(bunq_user_id, "bunq user id")?;
        self.write(move |conn, _| {
            let tx = conn.transaction()?;
            let now = now_db()?;
            let changed = tx
                .prepare_cached(
                    "UPDATE users SET status = 'connected', bunq_user_id = ?2,
                       connected_at = ?3, updated_at = ?3 WHERE user_ref = ?1",
                )?
                .execute(params![user_ref, db_id, now])?;
            if changed == 0 {
                return Err(StoreError::UnknownUser { user_ref });
            }
            audit::append(
                &tx,
                Some(&user_ref),
                AuditEvent::Connect,
                &format!("bunq_user_id={bunq_user_id}"),
            )?;
            let record = user_row(&tx, &user_ref)?.ok_or_else(|| StoreError::UnknownUser {
                user_ref: user_ref.clone(),
            })?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    /// The user row of `user_ref`, without secrets.
    pub async fn user(&self, user_ref: &str) -> Result<Option<UserRecord>, StoreError> {
        let user_ref = user_ref.to_owned();
        self.read(move |conn, _| user_row(conn, &user_ref)).await
    }

    /// Deletes `user_ref`: the user row with its token, the bunq context and the session
    /// stored under the same name, and its pending OAuth states, in one transaction,
    /// with a "disconnect" audit row that stays. Returns whether anything was there.
    pub async fn delete_user(&self, user_ref: &str) -> Result<bool, StoreError> {
        let user_ref = user_ref.to_owned();
        self.write(move |conn, shared| {
            let tx = conn.transaction()?;
            let bunq_user_id: Option<Option<i64>> = tx
                .prepare_cached("SELECT bunq_user_id FROM users WHERE user_ref = ?1")?
                .query_row([&user_ref], |r| r.get(0))
                .optional()?;
            let sessions = tx
                .prepare_cached("DELETE FROM sessions WHERE credential = ?1")?
                .execute([&user_ref])?;
            let contexts = tx
                .prepare_cached("DELETE FROM contexts WHERE credential = ?1")?
                .execute([&user_ref])?;
            let users = tx
                .prepare_cached("DELETE FROM users WHERE user_ref = ?1")?
                .execute([&user_ref])?;
            // A pending state would let a stale authorization bring the user back.
            tx.prepare_cached("DELETE FROM oauth_states WHERE user_ref = ?1 AND taken_at IS NULL")?
                .execute([&user_ref])?;
            let existed = users + contexts + sessions > 0;
            if existed {
                let detail = match bunq_user_id.flatten() {
                    Some(id) => {
                        format!("bunq_user_id={id} contexts={contexts} sessions={sessions}")
                    }
                    None => format!("contexts={contexts} sessions={sessions}"),
                };
                audit::append(&tx, Some(&user_ref), AuditEvent::Disconnect, &detail)?;
            }
            tx.commit()?;
            shared.evict_keys(&user_ref);
            Ok(existed)
        })
        .await
    }

    /// How many user rows there are (connecting or connected).
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM users")?
                .query_row([], |r| r.get(0))?;
            from_db_id(n, "count")
        })
        .await
    }

    /// How many users are connected.
    pub async fn count_connected_users(&self) -> Result<u64, StoreError> {
        self.read(|conn, _| {
            let n: i64 = conn
                .prepare_cached("SELECT COUNT(*) FROM users WHERE status = 'connected'")?
                .query_row([], |r| r.get(0))?;
            from_db_id(n, "count")
        })
        .await
    }
}

pub(crate) fn read_access_token(
    conn: &Connection,
    shared: &crate::db::Shared,
    user_ref: &str,
) -> Result<Option<SecretString>, StoreError> {
    let sealed: Option<Vec<u8>> = conn
        .prepare_cached("SELECT access_token FROM users WHERE user_ref = ?1")?
        .query_row([user_ref], |r| r.get(0))
        .optional()?;
    sealed
        .map(|blob| {
            shared
                .keyring()
                .open_string(&blob, USERS, ACCESS_TOKEN, user_ref)
        })
        .transpose()
}
