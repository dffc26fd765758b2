//! Idempotency records: what an application's `Idempotency-Key` stands for.
//!
//! One row per (caller, user, key), stored under a SHA-256 of the three (the key itself
//! is the application's and never stored), holding a fingerprint of the request, the
//! `X-Bunq-Client-Request-Id` sent to bunq for it, and, once known, the final answer
//! (status in clear, content type and body sealed). The states:
//!
//! | state       | meaning                                                   |
//! |-------------|-----------------------------------------------------------|
//! | `in_flight` | a request with this key is being sent now                 |
//! | `unknown`   | it was sent and its answer lost: resend with the same id  |
//! | `done`      | the answer is final: replay it                            |
//!
//! A process that dies leaves `in_flight` rows behind; [`Store::recover_idempotency`]
//! turns them into `unknown` at start, so the next retry resends with the same request
//! id and bunq tells whether the first attempt arrived.

use std::time::{Duration, SystemTime};

use ring::digest::{Context, SHA256};
use rusqlite::{OptionalExtension as _, params};

use crate::schema::{now_db, to_db_time};
use crate::vault::Vault;
use crate::{Store, StoreError};

pub(crate) const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
pub(crate) const ANSWER: &str = "answer";

/// Whose key: the caller (an id of its API key, never the key), the user it acts for,
/// and the application's `Idempotency-Key`.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyScope<'a> {
    /// An identifier of the calling application (e.g. a digest of its API key).
    pub caller: &'a str,
    /// The user the request acts for.
    pub user_ref: &'a str,
    /// The application's key.
    pub key: &'a str,
}

impl IdempotencyScope<'_> {
    /// The row id: hex SHA-256 of the three parts, length-prefixed so that no two
    /// scopes share one.
    pub fn id(&self) -> String {
        let mut ctx = Context::new(&SHA256);
        for part in [self.caller, self.user_ref, self.key] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        hex(ctx.finish().as_ref())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest of what makes two requests "the same request": method, path and query,
/// body.
pub fn request_fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    for part in [method.as_bytes(), path_and_query.as_bytes(), body] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A final answer, as the caller got it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body (bunq's payment objects: personal data, hence sealed at rest).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for StoredAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAnswer")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// What to do with a request that carries a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyBegin {
    /// A new key (or an expired one): send with `request_id`; the row is `in_flight`.
    Send {
        /// The request id to send.
        request_id: String,
    },
    /// The first attempt's outcome is unknown: send again with the **same**
    /// `request_id` (bunq refuses it if the first attempt arrived); the row is
    /// `in_flight` again.
    Resend {
        /// The request id of the first attempt.
        request_id: String,
    },
    /// Another request with this key is in flight.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
    /// The final answer, to replay.
    Replay(StoredAnswer),
}

/// fingerprint, request id, state, status, sealed answer, expiry.
pub(crate) type RecordRow = (Vec<u8>, String, String, Option<i64>, Option<Vec<u8>>, i64);

/// What a stored record says to a new request with its key (both backends).
pub(crate) enum Judged {
    /// Answered by the record alone: mismatch, in flight, or the answer to replay.
    Answer(IdempotencyBegin),
    /// Resend with the first attempt's request id (the row goes back to `in_flight`).
    Resend(String),
    /// Past its retention: the key is new again.
    Expired,
}

/// Judges the stored record `row` of row `id` for a request with `fingerprint` at `now`.
pub(crate) fn judge(
    row: RecordRow,
    now: i64,
    fingerprint: &[u8; 32],
    vault: &Vault,
    id: &str,
) -> Result<Judged, StoreError> {
    let (stored, request_id, state, status, answer, expires) = row;
    if expires <= now {
        return Ok(Judged::Expired);
    }
    if stored.as_slice() != fingerprint.as_slice() {
        return Ok(Judged::Answer(IdempotencyBegin::Mismatch));
    }
    match state.as_str() {
        "in_flight" => Ok(Judged::Answer(IdempotencyBegin::InFlight)),
        "unknown" => Ok(Judged::Resend(request_id)),
        "done" => {
            let status = status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| StoreError::Corrupt("done record without status".into()))?;
            let sealed =
                answer.ok_or_else(|| StoreError::Corrupt("done record without answer".into()))?;
            let opened = vault
                .keyring()
                .open(&sealed, IDEMPOTENCY_KEYS, ANSWER, id)?;
            let (content_type, body) = unpack(&opened)?;
            Ok(Judged::Answer(IdempotencyBegin::Replay(StoredAnswer {
                status,
                content_type,
                body,
            })))
        }
        other => Err(StoreError::Corrupt(format!(
            "unknown idempotency state {other:?}"
        ))),
    }
}

/// Packs content type and body into one sealed value: `len(ct) (u16 BE) ct body`.
pub(crate) fn pack(content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let ct = content_type.unwrap_or("").as_bytes();
    let ct = &ct[..ct.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(2 + ct.len() + body.len());
    out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    out.extend_from_slice(ct);
    out.extend_from_slice(body);
    out
}

fn unpack(bytes: &[u8]) -> Result<(Option<String>, Vec<u8>), StoreError> {
    let corrupt = || StoreError::Corrupt("idempotency answer too short".into());
    let (len, rest) = bytes.split_at_checked(2).ok_or_else(corrupt)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (ct, body) = rest.split_at_checked(len).ok_or_else(corrupt)?;
    let ct = (!ct.is_empty()).then(|| String::from_utf8_lossy(ct).into_owned());
    Ok((ct, body.to_vec()))
}

/// The stored record of row `id`, if any.
fn record(conn: &rusqlite::Connection, id: &str) -> Result<Option<RecordRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT fingerprint, request_id, state, status, answer, expires_at
             FROM idempotency_keys WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?)
}

impl Store {
    /// Looks up (and, for a new key, records as `in_flight` with `new_request_id`) the
    /// request `fingerprint` under `scope`, atomically: of two concurrent requests with
    /// one key, exactly one gets [`IdempotencyBegin::Send`]. A record older than its
    /// retention counts as absent.
    pub async fn begin_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
        fingerprint: [u8; 32],
        new_request_id: &str,
        retention: Duration,
    ) -> Result<IdempotencyBegin, StoreError> {
        crate::on_postgres!(self, pg => pg.begin_idempotent(scope, fingerprint, new_request_id, retention));
        let id = scope.id();
        // A caller's retry of a finished request (the common case of a second request
        // with a key) is answered from a read connection: a `done` record within its
        // retention is final, so what any committed state says of it is the answer,
        // and the retry waits for no commit. Everything else goes to the writer.
        let read_id = id.clone();
        let replay = self
            .read(move |conn, shared| {
                let Some(row) = record(conn, &read_id)? else {
                    return Ok(None);
                };
                if row.2 != "done" {
                    return Ok(None);
                }
                match judge(row, now_db()?, &fingerprint, shared, &read_id)? {
                    Judged::Answer(answer @ IdempotencyBegin::Replay(_)) => Ok(Some(answer)),
                    _ => Ok(None),
                }
            })
            .await?;
        if let Some(answer) = replay {
            return Ok(answer);
        }
        let user_ref = scope.user_ref.to_owned();
        let new_request_id = new_request_id.to_owned();
        let expires_at = to_db_time(
            SystemTime::now()
                .checked_add(retention)
                .ok_or_else(|| StoreError::InvalidInput("retention out of range".into()))?,
        )?;
        // Grouped: one commit (one fsync) serves every key begun or finished at the same
        // moment. The writer runs grouped jobs one after the other on its one
        // connection, so this read-then-write is still atomic against every other
        // write; the answer waits for the commit.
        self.write_grouped(move |tx, shared| {
            let now = now_db()?;
            let row = record(tx, &id)?;
            let outcome = match row.map(|row| judge(row, now, &fingerprint, shared, &id)) {
                Some(Ok(Judged::Answer(outcome))) => outcome,
                Some(Ok(Judged::Resend(request_id))) => {
                    tx.prepare_cached(
                        "UPDATE idempotency_keys SET state = 'in_flight' WHERE id = ?1",
                    )?
                    .execute([&id])?;
                    IdempotencyBegin::Resend { request_id }
                }
                Some(Err(e)) => return Err(e),
                None | Some(Ok(Judged::Expired)) => {
                    tx.prepare_cached(
                        "INSERT INTO idempotency_keys (id, user_ref, fingerprint, request_id, state,
                                                       created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5, ?6)
                         ON CONFLICT (id) DO UPDATE SET
                           user_ref = excluded.user_ref, fingerprint = excluded.fingerprint,
                           request_id = excluded.request_id, state = 'in_flight',
                           status = NULL, answer = NULL, created_at = excluded.created_at,
                           expires_at = excluded.expires_at",
                    )?
                    .execute(params![
                        id,
                        user_ref,
                        fingerprint.as_slice(),
                        new_request_id,
                        now,
                        expires_at
                    ])?;
                    IdempotencyBegin::Send {
                        request_id: new_request_id,
                    }
                }
            };
            Ok(outcome)
        })
        .await
    }

    /// Records the final answer of the request under `scope` (sealed); later requests
    /// with the key replay it.
    pub async fn finish_idempotent(
        &self,
        scope: IdempotencyScope<'_>,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.finish_idempotent(scope, answer));
        let id = scope.id();
        let status = i64::from(answer.status);
        let packed = zeroize::Zeroizing::new(pack(answer.content_type.as_deref(), &answer.body));
        self.write_grouped(move |conn, shared| {
            let sealed = shared
                .keyring()
                .sealer()
                .seal(&packed, IDEMPOTENCY_KEYS, ANSWER, &id)?;
            conn.prepare_cached(
                "UPDATE idempotency_keys SET state = 'done', status = ?2, answer = ?3
                 WHERE id = ?1",
            )?
            .execute(params![id, status, sealed])?;
            Ok(())
        })
        .await
    }

    /// Records that the request under `scope` was sent and its answer lost: the next
    /// request with the key resends with the same request id.
    pub async fn unknown_idempotent(&self, scope: IdempotencyScope<'_>) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.unknown_idempotent(scope));
        let id = scope.id();
        self.write(move |conn, _| {
            conn.prepare_cached("UPDATE idempotency_keys SET state = 'unknown' WHERE id = ?1")?
                .execute([&id])?;
            Ok(())
        })
        .await
    }

    /// Forgets the request under `scope`: nothing of it left the gateway, so the next
    /// request with the key starts afresh.
    ///
    /// Only an `in_flight` row that was never sent may be forgotten; one that is a resend
    /// of an unknown outcome goes back to `unknown` with [`Store::unknown_idempotent`].
    pub async fn abandon_idempotent(&self, scope: IdempotencyScope<'_>) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.abandon_idempotent(scope));
        let id = scope.id();
        self.write(move |conn, _| {
            conn.prepare_cached("DELETE FROM idempotency_keys WHERE id = ?1")?
                .execute([&id])?;
            Ok(())
        })
        .await
    }

    /// At start: every `in_flight` record belonged to a process that is gone, and may
    /// have been sent: make it `unknown`. Returns how many.
    pub async fn recover_idempotency(&self) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.recover_idempotency());
        self.write(|conn, _| {
            let n = conn
                .prepare_cached(
                    "UPDATE idempotency_keys SET state = 'unknown' WHERE state = 'in_flight'",
                )?
                .execute([])?;
            Ok(n as u64)
        })
        .await
    }

    /// Deletes records past their retention. Returns how many.
    pub async fn purge_expired_idempotency(&self) -> Result<u64, StoreError> {
        crate::on_postgres!(self, pg => pg.purge_expired_idempotency());
        self.write(|conn, _| {
            let n = conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
                .execute([now_db()?])?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pack_and_unpack() {
        let packed = pack(Some("application/json"), b"{\"a\":1}");
        assert_eq!(
            unpack(&packed).unwrap(),
            (Some("application/json".to_owned()), b"{\"a\":1}".to_vec())
        );
        assert_eq!(unpack(&pack(None, b"")).unwrap(), (None, Vec::new()));
        assert!(unpack(&[0]).is_err());
        assert!(unpack(&[0, 9, b'x']).is_err());
    }

    #[test]
    fn scopes_and_fingerprints_do_not_collide_by_concatenation() {
        let a = IdempotencyScope {
            caller: "ab",
            user_ref: "c",
            key: "k",
        };
        let b = IdempotencyScope {
            caller: "a",
            user_ref: "bc",
            key: "k",
        };
        assert_ne!(a.id(), b.id());
        assert_ne!(
            request_fingerprint("POST", "/a", b"b"),
            request_fingerprint("POST", "/ab", b"")
        );
    }
}
