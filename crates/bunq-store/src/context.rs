//! bunq contexts (installation, device, session) per credential: the
//! `bunq_session::ContextStore` implementation.

use std::sync::Arc;

use bunq_session::{
    ApiContext, ContextStore, ContextStoreError, CredentialId, Device, Installation,
    Psd2Registration, Session, UserKind,
};
use bunq_signing::{PrivateKey, ServerPublicKey};
use rusqlite::{Connection, OptionalExtension as _, params};
use secrecy::{ExposeSecret as _, SecretString};

use crate::audit::{self, AuditEvent};
use crate::db::Shared;
use crate::schema::{from_db_id, from_db_time, now_db, to_db_id, to_db_time};
use crate::users::read_access_token;
use crate::vault::{ParsedKeys, Vault};
use crate::{Store, StoreError};

pub(crate) const CONTEXTS: &str = "contexts";
pub(crate) const SECRET: &str = "secret";
pub(crate) const INSTALLATION_TOKEN: &str = "installation_token";
pub(crate) const PRIVATE_KEY: &str = "private_key";
pub(crate) const SESSIONS: &str = "sessions";
pub(crate) const SESSION_TOKEN: &str = "token";

pub(crate) fn kind_name(kind: UserKind) -> Result<String, StoreError> {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(StoreError::InvalidInput(format!(
            "user kind {kind:?} has no name"
        ))),
    }
}

pub(crate) fn parse_kind(name: String) -> Result<UserKind, StoreError> {
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|e| StoreError::Corrupt(format!("unknown session user kind: {e}")))
}

/// A `sessions` row, still sealed: id, token, user id, kind, expiry, granted by.
pub(crate) type SealedSession = (i64, Vec<u8>, i64, String, i64, Option<i64>);

/// A `contexts` row joined with its `sessions` row, still sealed.
pub(crate) struct SealedContext {
    pub(crate) api_base: String,
    pub(crate) secret: Vec<u8>,
    pub(crate) installation_id: i64,
    pub(crate) installation_token: Vec<u8>,
    pub(crate) private_key: Vec<u8>,
    pub(crate) server_public_key: String,
    pub(crate) device_id: Option<i64>,
    pub(crate) session: Option<SealedSession>,
    /// A PSD2 provider's registration: credential id and certificate digest.
    pub(crate) psd2: (Option<i64>, Option<String>),
}

/// The query [`SealedContext`] is read with, its columns in order (both backends; the
/// placeholder is `?1` on SQLite and `$1` on PostgreSQL, spelled here as `{}`).
pub(crate) fn context_query(placeholder: &str) -> String {
    format!(
        "SELECT c.api_base, c.secret, c.installation_id, c.installation_token,
                c.private_key, c.server_public_key, c.device_id,
                s.session_id, s.token, s.user_id, s.kind, s.expires_at,
                s.granted_by_user_id, c.psd2_credential_id, c.psd2_certificate_sha256
         FROM contexts c LEFT JOIN sessions s ON s.credential = c.credential
         WHERE c.credential = {placeholder}"
    )
}

pub(crate) fn read_context(
    conn: &Connection,
    shared: &Shared,
    credential: &str,
) -> Result<Option<ApiContext>, StoreError> {
    let row = conn
        .prepare_cached(&context_query("?1"))?
        .query_row([credential], |r| {
            let session = match r.get::<_, Option<i64>>(7)? {
                Some(id) => Some((
                    id,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get::<_, Option<i64>>(12)?,
                )),
                None => None,
            };
            Ok(SealedContext {
                api_base: r.get(0)?,
                secret: r.get(1)?,
                installation_id: r.get(2)?,
                installation_token: r.get(3)?,
                private_key: r.get(4)?,
                server_public_key: r.get(5)?,
                device_id: r.get(6)?,
                session,
                psd2: (r.get(13)?, r.get(14)?),
            })
        })
        .optional()?;
    row.map(|row| open_context(shared, credential, row))
        .transpose()
}

/// Opens a context row: its secrets unsealed, its keys parsed (or taken from the cache
/// while the unsealed bytes still match).
pub(crate) fn open_context(
    vault: &Vault,
    credential: &str,
    row: SealedContext,
) -> Result<ApiContext, StoreError> {
    let keyring = vault.keyring();
    let secret = keyring.open_string(&row.secret, CONTEXTS, SECRET, credential)?;
    let token = keyring.open_string(
        &row.installation_token,
        CONTEXTS,
        INSTALLATION_TOKEN,
        credential,
    )?;
    let der = keyring.open(&row.private_key, CONTEXTS, PRIVATE_KEY, credential)?;
    let keys = match vault.cached_keys(credential) {
        Some(cached) if cached.matches(&der, &row.server_public_key) => cached,
        _ => {
            let parsed = Arc::new(ParsedKeys::new(
                PrivateKey::from_pkcs8_der(&der).map_err(|e| {
                    StoreError::Corrupt(format!("installation key of {credential:?}: {e}"))
                })?,
                ServerPublicKey::from_pem(&row.server_public_key).map_err(|e| {
                    StoreError::Corrupt(format!("server public key of {credential:?}: {e}"))
                })?,
                &row.server_public_key,
            ));
            vault.cache_keys(credential, Arc::clone(&parsed));
            parsed
        }
    };
    let session = row
        .session
        .map(|(id, sealed, user_id, kind, expires_at, granted_by)| {
            Ok::<_, StoreError>(Session {
                id: from_db_id(id, "session id")?,
                token: keyring.open_string(&sealed, SESSIONS, SESSION_TOKEN, credential)?,
                user_id: from_db_id(user_id, "session user id")?,
                kind: parse_kind(kind)?,
                granted_by_user_id: granted_by
                    .map(|id| from_db_id(id, "granted-by user id"))
                    .transpose()?,
                expires_at: from_db_time(expires_at)?,
            })
        })
        .transpose()?;
    Ok(ApiContext {
        api_base: row.api_base,
        secret,
        installation: Installation {
            id: from_db_id(row.installation_id, "installation id")?,
            token,
            private_key: keys.private_key.clone(),
            server_public_key: keys.server_public_key.clone(),
        },
        device: row
            .device_id
            .map(|id| {
                Ok::<_, StoreError>(Device {
                    id: from_db_id(id, "device id")?,
                })
            })
            .transpose()?,
        session,
        psd2: match row.psd2 {
            (Some(id), Some(certificate_sha256)) => Some(Psd2Registration {
                credential_id: from_db_id(id, "PSD2 credential id")?,
                certificate_sha256,
            }),
            _ => None,
        },
    })
}

/// The `contexts.psd2_*` columns of `context` (both backends).
pub(crate) fn psd2_columns(
    context: &ApiContext,
) -> Result<(Option<i64>, Option<&str>), StoreError> {
    Ok(match &context.psd2 {
        Some(p) => (
            Some(to_db_id(p.credential_id, "PSD2 credential id")?),
            Some(p.certificate_sha256.as_str()),
        ),
        None => (None, None),
    })
}

fn write_context(
    conn: &mut Connection,
    shared: &Shared,
    credential: &str,
    context: &ApiContext,
    server_public_key_pem: &str,
) -> Result<(), StoreError> {
    let keyring = shared.keyring();
    let key = keyring.sealer();
    let secret = key.seal(
        context.secret.expose_secret().as_bytes(),
        CONTEXTS,
        SECRET,
        credential,
    )?;
    let installation = &context.installation;
    let token = key.seal(
        installation.token.expose_secret().as_bytes(),
        CONTEXTS,
        INSTALLATION_TOKEN,
        credential,
    )?;
    let private_key = key.seal(
        installation.private_key.pkcs8_der().expose_secret(),
        CONTEXTS,
        PRIVATE_KEY,
        credential,
    )?;
    let device_id = context
        .device
        .as_ref()
        .map(|d| to_db_id(d.id, "device id"))
        .transpose()?;
    let (psd2_id, psd2_certificate) = psd2_columns(context)?;
    let now = now_db()?;

    let tx = conn.transaction()?;
    let previous_session: Option<i64> = tx
        .prepare_cached("SELECT session_id FROM sessions WHERE credential = ?1")?
        .query_row([credential], |r| r.get(0))
        .optional()?;
    tx.prepare_cached(
        "INSERT INTO contexts (credential, api_base, secret, installation_id,
           installation_token, private_key, server_public_key, device_id, updated_at,
           psd2_credential_id, psd2_certificate_sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (credential) DO UPDATE SET
           api_base = excluded.api_base, secret = excluded.secret,
           installation_id = excluded.installation_id,
           installation_token = excluded.installation_token,
           private_key = excluded.private_key,
           server_public_key = excluded.server_public_key,
           device_id = excluded.device_id, updated_at = excluded.updated_at,
           psd2_credential_id = excluded.psd2_credential_id,
           psd2_certificate_sha256 = excluded.psd2_certificate_sha256",
    )?
    .execute(params![
        credential,
        context.api_base,
        secret,
        to_db_id(installation.id, "installation id")?,
        token,
        private_key,
        server_public_key_pem,
        device_id,
        now,
        psd2_id,
        psd2_certificate
    ])?;
    match &context.session {
        Some(session) => {
            let session_id = to_db_id(session.id, "session id")?;
            let sealed = key.seal(
                session.token.expose_secret().as_bytes(),
                SESSIONS,
                SESSION_TOKEN,
                credential,
            )?;
            tx.prepare_cached(
                "INSERT INTO sessions (credential, session_id, token, user_id, kind, expires_at,
                                       granted_by_user_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (credential) DO UPDATE SET
                   session_id = excluded.session_id, token = excluded.token,
                   user_id = excluded.user_id, kind = excluded.kind,
                   expires_at = excluded.expires_at,
                   granted_by_user_id = excluded.granted_by_user_id",
            )?
            .execute(params![
                credential,
                session_id,
                sealed,
                to_db_id(session.user_id, "session user id")?,
                kind_name(session.kind)?,
                to_db_time(session.expires_at)?,
                session
                    .granted_by_user_id
                    .map(|id| to_db_id(id, "granted-by user id"))
                    .transpose()?
            ])?;
            if previous_session != Some(session_id) {
                let detail = format!(
                    "session_id={} user_id={} kind={}{}",
                    session.id,
                    session.user_id,
                    kind_name(session.kind)?,
                    if audit::is_user(&tx, credential)? {
                        ""
                    } else {
                        " (credential without user row)"
                    }
                );
                audit::append(
                    &tx,
                    shared,
                    Some(credential),
                    AuditEvent::SessionCreated,
                    &detail,
                )?;
            }
        }
        None => {
            tx.prepare_cached("DELETE FROM sessions WHERE credential = ?1")?
                .execute([credential])?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl Store {
    /// The bunq context saved for `credential` (a `user_ref`, or any other credential
    /// name such as an operator's API key), if any.
    pub async fn load_context(&self, credential: &str) -> Result<Option<ApiContext>, StoreError> {
        crate::on_postgres!(self, pg => pg.load_context(credential));
        let credential = credential.to_owned();
        self.read(move |conn, shared| read_context(conn, shared, &credential))
            .await
    }

    /// Saves (inserts or replaces) the bunq context of `credential`, sealing its secrets.
    /// A session id not seen before for this credential is written to the audit log.
    /// No user row is needed.
    pub async fn save_context(
        &self,
        credential: &str,
        context: &ApiContext,
    ) -> Result<(), StoreError> {
        crate::on_postgres!(self, pg => pg.save_context(credential, context));
        let credential = credential.to_owned();
        let context = context.clone();
        let server_public_key_pem = context
            .installation
            .server_public_key
            .to_pem()
            .map_err(|e| StoreError::InvalidInput(format!("server public key: {e}")))?;
        self.write(move |conn, shared| {
            write_context(conn, shared, &credential, &context, &server_public_key_pem)?;
            // The caller holds the parsed keys already: the next load need not parse.
            shared.cache_keys(
                &credential,
                Arc::new(ParsedKeys::new(
                    context.installation.private_key.clone(),
                    context.installation.server_public_key.clone(),
                    &server_public_key_pem,
                )),
            );
            Ok(())
        })
        .await
    }

    /// The access token and the bunq context of `user_ref` in one read: what a gateway
    /// needs to act for a user after a restart.
    pub async fn token_and_context(
        &self,
        user_ref: &str,
    ) -> Result<(Option<SecretString>, Option<ApiContext>), StoreError> {
        crate::on_postgres!(self, pg => pg.token_and_context(user_ref));
        let user_ref = user_ref.to_owned();
        self.read(move |conn, shared| {
            // One read transaction: both from the same snapshot.
            let tx = conn.unchecked_transaction()?;
            let token = read_access_token(&tx, shared, &user_ref)?;
            let context = read_context(&tx, shared, &user_ref)?;
            tx.finish()?;
            Ok((token, context))
        })
        .await
    }
}

impl ContextStore for Store {
    async fn load(
        &self,
        credential: &CredentialId,
    ) -> Result<Option<ApiContext>, ContextStoreError> {
        self.load_context(credential.as_str())
            .await
            .map_err(|e| ContextStoreError(Box::new(e)))
    }

    async fn save(
        &self,
        credential: &CredentialId,
        context: &ApiContext,
    ) -> Result<(), ContextStoreError> {
        self.save_context(credential.as_str(), context)
            .await
            .map_err(|e| ContextStoreError(Box::new(e)))
    }

    /// On PostgreSQL (several gateways may share it): the fleet's lock on the
    /// credential's session creation. On SQLite: none needed.
    async fn lock_creation(
        &self,
        credential: &CredentialId,
    ) -> Result<Option<bunq_session::CreationLock>, ContextStoreError> {
        #[cfg(feature = "postgres")]
        if let Some(fleet) = self.fleet() {
            let held = fleet
                .lock_creation(credential.as_str())
                .await
                .map_err(|e| ContextStoreError(Box::new(e)))?;
            return Ok(Some(bunq_session::CreationLock::new(held)));
        }
        let _ = credential;
        Ok(None)
    }
}
