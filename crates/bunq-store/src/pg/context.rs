//! bunq contexts on PostgreSQL; see `context.rs`.

use std::sync::Arc;

use bunq_session::ApiContext;
use deadpool_postgres::GenericClient;
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::IsolationLevel;

use super::audit;
use super::users::read_access_token;
use super::{PgStore, execute, lock_owner, query_opt};
use crate::StoreError;
use crate::audit::AuditEvent;
use crate::context::{
    CONTEXTS, INSTALLATION_TOKEN, PRIVATE_KEY, SECRET, SESSION_TOKEN, SESSIONS, SealedContext,
    context_query, kind_name, open_context, psd2_columns,
};
use crate::schema::{now_db, to_db_id, to_db_time};
use crate::vault::{ParsedKeys, Vault};

async fn read_context<C: GenericClient>(
    client: &C,
    vault: &Vault,
    credential: &str,
) -> Result<Option<ApiContext>, StoreError> {
    let Some(r) = query_opt(client, &context_query("$1"), &[&credential]).await? else {
        return Ok(None);
    };
    let session = match r.try_get::<_, Option<i64>>(7)? {
        Some(id) => Some((
            id,
            r.try_get(8)?,
            r.try_get(9)?,
            r.try_get(10)?,
            r.try_get(11)?,
            r.try_get::<_, Option<i64>>(12)?,
        )),
        None => None,
    };
    let row = SealedContext {
        api_base: r.try_get(0)?,
        secret: r.try_get(1)?,
        installation_id: r.try_get(2)?,
        installation_token: r.try_get(3)?,
        private_key: r.try_get(4)?,
        server_public_key: r.try_get(5)?,
        device_id: r.try_get(6)?,
        session,
        psd2: (r.try_get(13)?, r.try_get(14)?),
    };
    open_context(vault, credential, row).map(Some)
}

impl PgStore {
    pub(crate) async fn load_context(
        &self,
        credential: &str,
    ) -> Result<Option<ApiContext>, StoreError> {
        let client = self.client().await?;
        read_context(&client, self, credential).await
    }

    pub(crate) async fn save_context(
        &self,
        credential: &str,
        context: &ApiContext,
    ) -> Result<(), StoreError> {
        let server_public_key_pem = context
            .installation
            .server_public_key
            .to_pem()
            .map_err(|e| StoreError::InvalidInput(format!("server public key: {e}")))?;
        let keyring = self.keyring();
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
        let installation_id = to_db_id(installation.id, "installation id")?;
        let (psd2_id, psd2_certificate) = psd2_columns(context)?;
        let now = now_db()?;

        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Two saves of one credential (or a save beside the user's deletion) run one
        // after the other, so a new session id is audited exactly once.
        lock_owner(&tx, credential).await?;
        let previous_session: Option<i64> = match query_opt(
            &tx,
            "SELECT session_id FROM sessions WHERE credential = $1",
            &[&credential],
        )
        .await?
        {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        };
        execute(
            &tx,
            "INSERT INTO contexts (credential, api_base, secret, installation_id,
               installation_token, private_key, server_public_key, device_id, updated_at,
               psd2_credential_id, psd2_certificate_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (credential) DO UPDATE SET
               api_base = excluded.api_base, secret = excluded.secret,
               installation_id = excluded.installation_id,
               installation_token = excluded.installation_token,
               private_key = excluded.private_key,
               server_public_key = excluded.server_public_key,
               device_id = excluded.device_id, updated_at = excluded.updated_at,
               psd2_credential_id = excluded.psd2_credential_id,
               psd2_certificate_sha256 = excluded.psd2_certificate_sha256",
            &[
                &credential,
                &context.api_base,
                &secret,
                &installation_id,
                &token,
                &private_key,
                &server_public_key_pem,
                &device_id,
                &now,
                &psd2_id,
                &psd2_certificate,
            ],
        )
        .await?;
        match &context.session {
            Some(session) => {
                let session_id = to_db_id(session.id, "session id")?;
                let sealed = key.seal(
                    session.token.expose_secret().as_bytes(),
                    SESSIONS,
                    SESSION_TOKEN,
                    credential,
                )?;
                let kind = kind_name(session.kind)?;
                let granted_by = session
                    .granted_by_user_id
                    .map(|id| to_db_id(id, "granted-by user id"))
                    .transpose()?;
                execute(
                    &tx,
                    "INSERT INTO sessions (credential, session_id, token, user_id, kind,
                                           expires_at, granted_by_user_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (credential) DO UPDATE SET
                       session_id = excluded.session_id, token = excluded.token,
                       user_id = excluded.user_id, kind = excluded.kind,
                       expires_at = excluded.expires_at,
                       granted_by_user_id = excluded.granted_by_user_id",
                    &[
                        &credential,
                        &session_id,
                        &sealed,
                        &to_db_id(session.user_id, "session user id")?,
                        &kind,
                        &to_db_time(session.expires_at)?,
                        &granted_by,
                    ],
                )
                .await?;
                if previous_session != Some(session_id) {
                    let is_user = query_opt(
                        &tx,
                        "SELECT 1 FROM users WHERE user_ref = $1",
                        &[&credential],
                    )
                    .await?
                    .is_some();
                    let detail = format!(
                        "session_id={} user_id={} kind={kind}{}",
                        session.id,
                        session.user_id,
                        if is_user {
                            ""
                        } else {
                            " (credential without user row)"
                        }
                    );
                    audit::append(
                        &tx,
                        self,
                        Some(credential),
                        AuditEvent::SessionCreated,
                        &detail,
                    )
                    .await?;
                }
            }
            None => {
                execute(
                    &tx,
                    "DELETE FROM sessions WHERE credential = $1",
                    &[&credential],
                )
                .await?;
            }
        }
        tx.commit().await?;
        // The caller holds the parsed keys already: the next load need not parse.
        self.cache_keys(
            credential,
            Arc::new(ParsedKeys::new(
                context.installation.private_key.clone(),
                context.installation.server_public_key.clone(),
                &server_public_key_pem,
            )),
        );
        Ok(())
    }

    pub(crate) async fn token_and_context(
        &self,
        user_ref: &str,
    ) -> Result<(Option<SecretString>, Option<ApiContext>), StoreError> {
        let mut client = self.client().await?;
        // Both from one snapshot, as SQLite's read transaction gives.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let token = read_access_token(&tx, self, user_ref).await?;
        let context = read_context(&tx, self, user_ref).await?;
        tx.commit().await?;
        Ok((token, context))
    }
}
