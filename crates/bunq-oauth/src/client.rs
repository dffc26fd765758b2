//! The bunq user's OAuth client: find it or register it, make sure our callback URL is
//! on it, read its `client_id` and secret, change its status.
//!
//! bunq allows one OAuth client per user, so every function here is idempotent: run
//! [`ensure_oauth_client`] at every start and it converges on the same client.

use std::fmt;

use bunq_session::{ApiRequest, ContextStore, CredentialId, SessionManager, envelope};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::{ClientId, OAuthConfig, OAuthEndpoints};
use crate::error::OAuthError;

/// bunq's `OauthClient` object, decoded. `Debug` redacts the secret.
#[derive(Clone)]
pub struct OAuthClientInfo {
    /// bunq's numeric id of the client (for the `/oauth-client/{id}` paths; not the
    /// `client_id` of the OAuth protocol).
    pub id: u64,
    /// The `client_id` string the authorize URL and the token endpoint take.
    pub client_id: ClientId,
    /// The client secret.
    pub client_secret: SecretString,
    /// `ACTIVE` or `CANCELLED`.
    pub status: String,
    /// The registered redirect URIs.
    pub callback_urls: Vec<String>,
}

impl fmt::Debug for OAuthClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClientInfo")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("status", &self.status)
            .field("callback_urls", &self.callback_urls)
            .finish()
    }
}

impl OAuthClientInfo {
    /// Whether the client can be used for authorizations.
    pub fn is_active(&self) -> bool {
        self.status == "ACTIVE"
    }

    /// An [`OAuthConfig`] for this client with the defaults.
    pub fn config(
        &self,
        redirect_uri: impl Into<String>,
        endpoints: OAuthEndpoints,
    ) -> OAuthConfig {
        OAuthConfig::new(
            self.client_id.clone(),
            self.client_secret.clone(),
            redirect_uri,
            endpoints,
        )
    }
}

/// Finds the user's OAuth client or registers one (`{"status":"ACTIVE"}`), adds
/// `callback_url` if it is not registered yet, and returns the client as bunq now has
/// it. Safe to run at every start, and concurrently: if another caller registered the
/// client in between, its client is used.
///
/// An existing client is returned whatever its status; reactivating a client an
/// operator cancelled is [`set_oauth_client_status`]'s job, not a side effect.
pub async fn ensure_oauth_client<S: ContextStore>(
    manager: &SessionManager<S>,
    credential: &CredentialId,
    user_id: u64,
    callback_url: &str,
) -> Result<OAuthClientInfo, OAuthError> {
    let client = match find_oauth_client(manager, credential, user_id).await? {
        Some(client) => client,
        None => {
            let created = manager
                .request(
                    credential,
                    ApiRequest::post_json(
                        format!("user/{user_id}/oauth-client"),
                        &json!({"status": "ACTIVE"}),
                    ),
                )
                .await?
                .into_result();
            match created {
                Ok(response) => {
                    let id = envelope::id(&response.body)?;
                    tracing::info!(user_id, oauth_client = id, "registered bunq OAuth client");
                    get_oauth_client(manager, credential, user_id, id).await?
                }
                // One client per user: a concurrent caller may have won the race.
                Err(err) => match find_oauth_client(manager, credential, user_id).await? {
                    Some(client) => client,
                    None => return Err(err.into()),
                },
            }
        }
    };
    if client.callback_urls.iter().any(|u| u == callback_url) {
        return Ok(client);
    }
    manager
        .request(
            credential,
            ApiRequest::post_json(
                format!("user/{user_id}/oauth-client/{}/callback-url", client.id),
                &json!({"url": callback_url}),
            ),
        )
        .await?
        .into_result()?;
    tracing::info!(
        user_id,
        oauth_client = client.id,
        "added OAuth callback URL"
    );
    get_oauth_client(manager, credential, user_id, client.id).await
}

/// The user's OAuth client, if it has one (`GET /user/{id}/oauth-client`). Should
/// bunq ever list more than one, an active one is preferred.
pub async fn find_oauth_client<S: ContextStore>(
    manager: &SessionManager<S>,
    credential: &CredentialId,
    user_id: u64,
) -> Result<Option<OAuthClientInfo>, OAuthError> {
    let response = manager
        .request(
            credential,
            ApiRequest::get(format!("user/{user_id}/oauth-client")),
        )
        .await?
        .into_result()?;
    let mut clients = Vec::new();
    for (kind, object) in envelope::decode_items(&response.body)? {
        if kind == "OauthClient" {
            clients.push(decode_client(&object)?);
        }
    }
    let pick = clients
        .iter()
        .position(OAuthClientInfo::is_active)
        .unwrap_or(0);
    let Some(mut client) = (pick < clients.len()).then(|| clients.swap_remove(pick)) else {
        return Ok(None);
    };
    if client.callback_urls.is_empty() {
        // Lists may leave out the callback URLs; ask for them before concluding that
        // one is missing.
        client = get_oauth_client(manager, credential, user_id, client.id).await?;
    }
    Ok(Some(client))
}

/// One OAuth client by bunq's numeric id (`GET /user/{id}/oauth-client/{cid}`).
pub async fn get_oauth_client<S: ContextStore>(
    manager: &SessionManager<S>,
    credential: &CredentialId,
    user_id: u64,
    client_id: u64,
) -> Result<OAuthClientInfo, OAuthError> {
    let response = manager
        .request(
            credential,
            ApiRequest::get(format!("user/{user_id}/oauth-client/{client_id}")),
        )
        .await?
        .into_result()?;
    let object = envelope::decode_items(&response.body)?
        .into_iter()
        .find_map(|(kind, object)| (kind == "OauthClient").then_some(object))
        .ok_or_else(|| unexpected("no OauthClient object in \"Response\""))?;
    decode_client(&object)
}

/// Sets the client's status (`ACTIVE` or `CANCELLED`) with
/// `PUT /user/{id}/oauth-client/{cid}`. Setting the status it already has is harmless,
/// so the call may be retried.
pub async fn set_oauth_client_status<S: ContextStore>(
    manager: &SessionManager<S>,
    credential: &CredentialId,
    user_id: u64,
    client_id: u64,
    status: &str,
) -> Result<(), OAuthError> {
    manager
        .request(
            credential,
            ApiRequest::put_json(
                format!("user/{user_id}/oauth-client/{client_id}"),
                &json!({"status": status}),
            )
            .idempotent(),
        )
        .await?
        .into_result()?;
    tracing::info!(
        user_id,
        oauth_client = client_id,
        status,
        "set OAuth client status"
    );
    Ok(())
}

fn unexpected(detail: impl Into<String>) -> OAuthError {
    OAuthError::Bunq(bunq_session::Error::UnexpectedResponse {
        context: "OauthClient".to_owned(),
        detail: detail.into(),
    })
}

/// Decodes an `OauthClient` by hand: a serde error about the `secret` field could quote
/// it.
fn decode_client(object: &Value) -> Result<OAuthClientInfo, OAuthError> {
    let text = |name: &str| object.get(name).and_then(Value::as_str);
    let id = object
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| unexpected("missing or non-numeric \"id\""))?;
    let client_id = text("client_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unexpected("missing \"client_id\""))?;
    let secret = text("secret")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unexpected("missing \"secret\""))?;
    Ok(OAuthClientInfo {
        id,
        client_id: ClientId::new(client_id),
        client_secret: SecretString::from(secret),
        status: text("status").unwrap_or_default().to_owned(),
        callback_urls: callback_urls(object.get("callback_url")),
    })
}

/// The URLs of `callback_url`, which bunq has been seen to send both as plain
/// `{"id","url"}` objects and wrapped as `{"CallbackUrl":{"id","url"}}` (or
/// `OauthCallbackUrl`).
fn callback_urls(value: Option<&Value>) -> Vec<String> {
    let url_of = |item: &Value| -> Option<String> {
        if let Some(url) = item.get("url").and_then(Value::as_str) {
            return Some(url.to_owned());
        }
        let Value::Object(map) = item else {
            return None;
        };
        map.values()
            .find_map(|inner| inner.get("url").and_then(Value::as_str))
            .map(str::to_owned)
    };
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(url_of).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_with_plain_and_wrapped_callback_urls() {
        let object = json!({
            "id": 7, "status": "ACTIVE", "display_name": "x", "client_id": "cid",
            "secret": "sec",
            "callback_url": [
                {"id": 1, "url": "https://a.example/cb"},
                {"CallbackUrl": {"id": 2, "url": "https://b.example/cb"}},
                {"OauthCallbackUrl": {"id": 3, "url": "https://c.example/cb"}},
                {"weird": 1}
            ]
        });
        let client = decode_client(&object).unwrap();
        assert_eq!(client.id, 7);
        assert_eq!(client.client_id.as_str(), "cid");
        assert!(client.is_active());
        assert_eq!(
            client.callback_urls,
            [
                "https://a.example/cb",
                "https://b.example/cb",
                "https://c.example/cb"
            ]
        );
    }

    #[test]
    fn missing_fields_are_errors_that_do_not_quote_the_secret() {
        let err = decode_client(&json!({"id": 1, "client_id": "c"})).unwrap_err();
        assert!(err.to_string().contains("secret"));
        let err =
            decode_client(&json!({"id": "x", "client_id": "c", "secret": "S3CR3T"})).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("S3CR3T"));
    }

    #[test]
    fn client_info_debug_redacts_secret() {
        let client =
            decode_client(&json!({"id": 1, "client_id": "c", "secret": "S3CR3T"})).unwrap();
        assert!(!format!("{client:?}").contains("S3CR3T"));
        assert!(client.callback_urls.is_empty());
        assert!(!client.is_active());
    }
}
