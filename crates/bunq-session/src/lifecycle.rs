//! The installation → device-server → session-server lifecycle, and closing a session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bunq_signing::{PrivateKey, Psd2Certificate, ServerPublicKey};
use http::Method;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{ApiRequest, Auth};
use crate::envelope::{self, decode_object};
use crate::fleet::SharedSessionWindow;
use crate::{BunqClient, Device, Error, Installation, Session, UserKind};

#[derive(Deserialize)]
struct IdObject {
    id: u64,
}

#[derive(Deserialize)]
struct TokenObject {
    token: SecretString,
}

#[derive(Deserialize)]
struct ServerPublicKeyObject {
    server_public_key: String,
}

#[derive(Deserialize)]
struct UserObject {
    id: u64,
    #[serde(default)]
    session_timeout: Option<u64>,
}

#[derive(Deserialize)]
struct UserApiKeyObject {
    id: u64,
    #[serde(default)]
    requested_by_user: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    granted_by_user: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct CredentialPasswordIpObject {
    id: u64,
    token_value: SecretString,
    #[serde(default)]
    status: Option<String>,
}

impl BunqClient {
    /// `POST /installation` with a freshly generated RSA-2048 key (generated off the
    /// async workers: it takes 70–360 ms of CPU). Neither signed nor verified: there is
    /// no key pair yet on either side.
    pub async fn installation(&self) -> Result<Installation, Error> {
        let private_key = tokio::task::spawn_blocking(PrivateKey::generate)
            .await
            .map_err(|e| Error::Config(format!("key generation task: {e}")))??;
        self.installation_with_key(private_key).await
    }

    /// `POST /installation` with a key the caller already has.
    pub async fn installation_with_key(
        &self,
        private_key: PrivateKey,
    ) -> Result<Installation, Error> {
        let body = serde_json::json!({ "client_public_key": private_key.public_key_pem() });
        let req = ApiRequest::post_json("installation", &body);
        let resp = self.send(Auth::None, &req).await?.into_result()?;
        let mut id = None;
        let mut token = None;
        let mut server_key = None;
        for (kind, object) in envelope::decode_items(&resp.body)? {
            match kind.as_str() {
                "Id" => id = Some(decode_object::<IdObject>("Id", object)?.id),
                "Token" => token = Some(decode_object::<TokenObject>("Token", object)?.token),
                "ServerPublicKey" => {
                    let pem = decode_object::<ServerPublicKeyObject>("ServerPublicKey", object)?;
                    server_key = Some(ServerPublicKey::from_pem(&pem.server_public_key)?);
                }
                _ => {}
            }
        }
        let missing = |what| Error::unexpected("POST installation", format!("no {what} object"));
        Ok(Installation {
            id: id.ok_or_else(|| missing("Id"))?,
            token: token.ok_or_else(|| missing("Token"))?,
            private_key,
            server_public_key: server_key.ok_or_else(|| missing("ServerPublicKey"))?,
        })
    }

    /// `POST /payment-service-provider-credential`: a licensed PSD2 provider registers
    /// its certificate for `installation` and gets its credential back. Authenticated
    /// with the installation token and signed like every call; the body carries the
    /// certificate, its chain, and the certificate key's signature of the installation's
    /// public key PEM (as sent at installation), `"\n"` and the installation token.
    /// Never retried (a POST).
    pub async fn payment_service_provider_credential(
        &self,
        installation: &Installation,
        certificate: &Psd2Certificate,
    ) -> Result<crate::Psd2Credential, Error> {
        let signature = certificate.public_key_signature(
            &installation.private_key.public_key_pem(),
            installation.token.expose_secret(),
        );
        let body = serde_json::json!({
            "client_payment_service_provider_certificate": certificate.certificate_pem(),
            "client_payment_service_provider_certificate_chain": certificate.chain_pem(),
            "client_public_key_signature": signature.as_str(),
        });
        let req = ApiRequest::post_json("payment-service-provider-credential", &body);
        let resp = self
            .send(Auth::Installation(installation), &req)
            .await?
            .into_result()?;
        for (kind, object) in envelope::decode_items(&resp.body)? {
            if kind == "CredentialPasswordIp" {
                let credential: CredentialPasswordIpObject =
                    decode_object("CredentialPasswordIp", object)?;
                return Ok(crate::Psd2Credential {
                    id: credential.id,
                    token_value: credential.token_value,
                    status: credential.status,
                });
            }
        }
        Err(Error::unexpected(
            "POST payment-service-provider-credential",
            "no CredentialPasswordIp object",
        ))
    }

    /// `POST /device-server`: registers this installation for `secret` (an API key or an
    /// OAuth access token). `permitted_ips` empty means "the IP of this call".
    pub async fn device_server(
        &self,
        installation: &Installation,
        secret: &SecretString,
        description: &str,
        permitted_ips: &[String],
    ) -> Result<Device, Error> {
        let body = serde_json::json!({
            "description": description,
            "secret": secret.expose_secret(),
            "permitted_ips": permitted_ips,
        });
        let req = ApiRequest::post_json("device-server", &body);
        let resp = self
            .send(Auth::Installation(installation), &req)
            .await?
            .into_result()?;
        Ok(Device {
            id: envelope::id(&resp.body)?,
        })
    }

    /// `POST /session-server`, queued behind the process-wide pacer (bunq allows one
    /// per 30 s per IP); waits at most the policy's `max_wait` for its turn.
    pub async fn session_server(
        &self,
        installation: &Installation,
        secret: &SecretString,
    ) -> Result<Session, Error> {
        let max_wait = self.inner.config.rate_limits.max_wait;
        self.session_server_within(installation, secret, max_wait)
            .await
    }

    /// [`session_server`](Self::session_server) with an explicit bound on the wait for
    /// the pacer; beyond it, [`Error::SessionCapacity`] says when to retry.
    pub async fn session_server_within(
        &self,
        installation: &Installation,
        secret: &SecretString,
        max_wait: Duration,
    ) -> Result<Session, Error> {
        let deadline = crate::rate_limit::after(Instant::now(), max_wait);
        self.session_server_until(installation, secret, deadline)
            .await
    }

    /// [`session_server`](Self::session_server) that waits for its turn at the pacer (and
    /// the rate limiter) at most until `deadline`: a caller whose turn would come later
    /// gets [`Error::SessionCapacity`] with an estimate of when it would have come. Once
    /// sent, the call is not cut short by the deadline.
    pub async fn session_server_until(
        &self,
        installation: &Installation,
        secret: &SecretString,
        deadline: Instant,
    ) -> Result<Session, Error> {
        let body = serde_json::json!({ "secret": secret.expose_secret() });
        let req = ApiRequest::post_json("session-server", &body).with_deadline(deadline);
        self.inner
            .pacer
            .run(deadline, async {
                let shared = self.inner.shared_window.as_ref();
                let mut turn = None;
                if let Some(window) = shared {
                    self.take_shared_turn(window.as_ref(), deadline).await?;
                    turn = Some(SharedTurn(Some(Arc::clone(window))));
                }
                // bunq starts the session's clock when it answers; taking the time
                // before sending errs on the early side.
                let started = SystemTime::now();
                self.inner
                    .session_server_calls
                    .fetch_add(1, Ordering::Relaxed);
                let result = async {
                    let resp = self
                        .send(Auth::Installation(installation), &req)
                        .await?
                        .into_result()?;
                    parse_session(&resp.body, started)
                }
                .await;
                if let Some(mut turn) = turn {
                    turn.release().await;
                }
                result
            })
            .await
    }

    /// Waits for the egress's shared session-server turn, at most until `deadline`
    /// (then [`Error::SessionCapacity`] with the wait another process's turn implies).
    async fn take_shared_turn(
        &self,
        window: &dyn SharedSessionWindow,
        deadline: Instant,
    ) -> Result<(), Error> {
        // The call may last its timeout; the turn is held for that long at most.
        let hold = self.inner.config.request_timeout + self.inner.config.connect_timeout;
        loop {
            let Some(wait) = window.try_take(hold).await? else {
                return Ok(());
            };
            let now = Instant::now();
            if now + wait > deadline {
                return Err(Error::SessionCapacity { retry_after: wait });
            }
            // Asked again a little after the turn should be free: the clocks of the
            // database and of this process need not tick together.
            tokio::time::sleep(wait + Duration::from_millis(5)).await;
        }
    }

    /// `DELETE /session/{id}`: ends the session at bunq.
    pub async fn close_session(
        &self,
        installation: &Installation,
        session: &Session,
    ) -> Result<(), Error> {
        let req = ApiRequest::new(
            Method::DELETE,
            format!("session/{}", session.id),
            bytes::Bytes::new(),
        );
        self.send(Auth::Session(installation, session), &req)
            .await?
            .into_result()?;
        Ok(())
    }
}

/// Reads `[{Id},{Token},{UserPerson|UserCompany|UserApiKey|UserPaymentServiceProvider}]`.
pub(crate) fn parse_session(body: &[u8], started: SystemTime) -> Result<Session, Error> {
    const CONTEXT: &str = "POST session-server";
    let mut id = None;
    let mut token = None;
    let mut user = None;
    let mut granted_by = None;
    for (kind, object) in envelope::decode_items(body)? {
        match kind.as_str() {
            "Id" => id = Some(decode_object::<IdObject>("Id", object)?.id),
            "Token" => token = Some(decode_object::<TokenObject>("Token", object)?.token),
            "UserApiKey" => {
                let key: UserApiKeyObject = decode_object("UserApiKey", object)?;
                // The session ends when either side's timeout does; the SDK takes
                // requested_by's alone, which can outlive the granting user's.
                let timeout = [&key.requested_by_user, &key.granted_by_user]
                    .into_iter()
                    .flatten()
                    .filter_map(nested_session_timeout)
                    .min()
                    .ok_or_else(|| {
                        Error::unexpected(CONTEXT, "UserApiKey without any session_timeout")
                    })?;
                granted_by = key.granted_by_user.as_ref().and_then(nested_id);
                user = Some((UserKind::UserApiKey, key.id, timeout));
            }
            other => {
                let kind = match other {
                    "UserPerson" => UserKind::UserPerson,
                    "UserCompany" => UserKind::UserCompany,
                    "UserPaymentServiceProvider" => UserKind::UserPaymentServiceProvider,
                    _ => continue,
                };
                let object: UserObject = decode_object(other, object)?;
                let timeout = object.session_timeout.ok_or_else(|| {
                    Error::unexpected(CONTEXT, format!("{other} without session_timeout"))
                })?;
                user = Some((kind, object.id, timeout));
            }
        }
    }
    let missing = |what| Error::unexpected(CONTEXT, format!("no {what} object"));
    let (kind, user_id, timeout) = user.ok_or_else(|| missing("user"))?;
    Ok(Session {
        id: id.ok_or_else(|| missing("Id"))?,
        token: token.ok_or_else(|| missing("Token"))?,
        user_id,
        kind,
        granted_by_user_id: granted_by,
        // bunq's number, not ours: an absurd timeout must be an error, not an overflow panic.
        expires_at: started
            .checked_add(Duration::from_secs(timeout))
            .ok_or_else(|| {
                Error::unexpected(CONTEXT, format!("session_timeout {timeout} out of range"))
            })?,
    })
}

/// `{"UserPerson": {"session_timeout": N, ...}}` → N.
/// The `id` of a nested `{"UserPerson": {"id": ..}}` (or any user type).
fn nested_id(user: &serde_json::Map<String, Value>) -> Option<u64> {
    user.values()
        .find_map(|object| object.get("id").and_then(Value::as_u64))
}

fn nested_session_timeout(user: &serde_json::Map<String, Value>) -> Option<u64> {
    user.values()
        .find_map(|object| object.get("session_timeout").and_then(Value::as_u64))
}

/// A shared session-server turn taken for one call: released when the call ended, or,
/// if the call's future is dropped midway (a caller that gave up), by a task of its
/// own. Not released at all (a failed release, or a process that dies), the turn stays
/// taken until the call's longest time plus a window has passed: later, never sooner.
struct SharedTurn(Option<Arc<dyn SharedSessionWindow>>);

impl SharedTurn {
    async fn release(&mut self) {
        if let Some(window) = self.0.take() {
            if let Err(e) = window.release().await {
                tracing::warn!(error = %e, "cannot release the shared session-server turn");
            }
        }
    }
}

impl Drop for SharedTurn {
    fn drop(&mut self) {
        if let Some(window) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = window.release().await {
                        tracing::warn!(error = %e, "cannot release the shared session-server turn");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_person_session_expires_after_its_session_timeout() {
        let body = include_bytes!("../../../fixtures/session_server_user_person.json");
        let t0 = SystemTime::UNIX_EPOCH;
        let s = parse_session(body, t0).unwrap();
        assert_eq!(s.id, 25536694);
        assert_eq!(s.user_id, 1822179);
        assert_eq!(s.kind, UserKind::UserPerson);
        assert_eq!(s.expires_at, t0 + Duration::from_secs(604800));
        assert!(s.token.expose_secret().starts_with("ce717e30"));
    }

    #[test]
    fn user_api_key_session_takes_the_smaller_timeout_and_the_user_api_key_id() {
        let body = include_bytes!("../../../fixtures/session_server_user_api_key.json");
        let t0 = SystemTime::UNIX_EPOCH;
        let s = parse_session(body, t0).unwrap();
        assert_eq!(s.kind, UserKind::UserApiKey);
        assert_eq!(s.user_id, 1964683);
        // requested_by 324000 < granted_by 604800
        assert_eq!(s.expires_at, t0 + Duration::from_secs(324000));

        // And the other way round: granted_by's is smaller.
        let swapped = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("324000", "999999")
            .replace("604800", "1200");
        let s = parse_session(swapped.as_bytes(), t0).unwrap();
        assert_eq!(s.expires_at, t0 + Duration::from_secs(1200));
    }

    #[test]
    fn payment_service_provider_session_is_typed_and_expires_after_its_session_timeout() {
        let body =
            include_bytes!("../../../fixtures/session_server_user_payment_service_provider.json");
        let t0 = SystemTime::UNIX_EPOCH;
        let s = parse_session(body, t0).unwrap();
        assert_eq!(s.kind, UserKind::UserPaymentServiceProvider);
        assert_eq!(s.user_id, 1822301);
        assert_eq!(s.granted_by_user_id, None);
        assert_eq!(s.expires_at, t0 + Duration::from_secs(3600));
    }

    #[test]
    fn absurd_session_timeout_is_an_error_not_a_panic() {
        let body = format!(
            r#"{{"Response":[{{"Id":{{"id":1}}}},{{"Token":{{"token":"t"}}}},{{"UserPerson":{{"id":3,"session_timeout":{}}}}}]}}"#,
            u64::MAX
        );
        let err = parse_session(body.as_bytes(), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn session_without_user_object_or_timeout_is_a_clear_error() {
        let no_user = br#"{"Response":[{"Id":{"id":1}},{"Token":{"token":"t"}}]}"#;
        let err = parse_session(no_user, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("no user object"), "{err}");
        let no_timeout =
            br#"{"Response":[{"Id":{"id":1}},{"Token":{"token":"t"}},{"UserPerson":{"id":3}}]}"#;
        let err = parse_session(no_timeout, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("session_timeout"), "{err}");
    }
}
