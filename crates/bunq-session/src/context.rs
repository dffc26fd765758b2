//! What one credential's bunq context is made of, and how it is serialized.
//!
//! The serialized form holds secrets in clear (the private key, the tokens, the API key
//! or access token): it is meant for an encrypted store (bunq-store) or a 0600 file, never
//! for logs. `Debug` redacts every secret.

use std::fmt;
use std::time::SystemTime;

use bunq_signing::{PrivateKey, ServerPublicKey};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names one credential (one end user's OAuth access token, or one API key) inside the
/// application, e.g. the gateway's `user_ref`. It is a key, not a secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CredentialId(String);

impl CredentialId {
    /// Wraps an application-chosen name.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of user object `POST /session-server` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum UserKind {
    /// A natural person (API key sessions).
    UserPerson,
    /// A company.
    UserCompany,
    /// An OAuth grant: the session acts for `granted_by_user` on behalf of `requested_by_user`.
    UserApiKey,
    /// A PSD2 payment service provider.
    UserPaymentServiceProvider,
}

/// The result of `POST /installation`: our key pair, bunq's token for it, and bunq's
/// server key that signs every later response.
#[derive(Clone, Serialize, Deserialize)]
pub struct Installation {
    /// bunq's id of the installation.
    pub id: u64,
    /// The installation token (`X-Bunq-Client-Authentication` for device-server and
    /// session-server).
    #[serde(serialize_with = "expose_string")]
    pub token: SecretString,
    /// Our RSA key; its public half was registered at installation.
    #[serde(
        serialize_with = "private_key_pem",
        deserialize_with = "private_key_from_pem"
    )]
    pub private_key: PrivateKey,
    /// bunq's key for `X-Bunq-Server-Signature`.
    #[serde(
        serialize_with = "public_key_pem",
        deserialize_with = "public_key_from_pem"
    )]
    pub server_public_key: ServerPublicKey,
}

impl fmt::Debug for Installation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Installation")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .field("private_key", &self.private_key)
            .finish_non_exhaustive()
    }
}

/// The result of `POST /device-server`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// bunq's id of the device.
    pub id: u64,
}

/// A live (or once live) session from `POST /session-server`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// bunq's id of the session (for `DELETE /session/{id}`).
    pub id: u64,
    /// The session token (`X-Bunq-Client-Authentication` for every other call).
    #[serde(serialize_with = "expose_string")]
    pub token: SecretString,
    /// The bunq user the session acts as (for OAuth: the `UserApiKey` id, used in paths
    /// such as `/user/{id}/monetary-account-bank`).
    pub user_id: u64,
    /// Which user object the session returned.
    pub kind: UserKind,
    /// For an OAuth session (`UserApiKey`): the bunq user who granted access, the
    /// person behind the connection (`user_id` is the key's own id, different for
    /// every consent of the same person). `None` for other sessions.
    #[serde(default)]
    pub granted_by_user_id: Option<u64>,
    /// When bunq will consider the session expired (from `session_timeout`; for
    /// `UserApiKey` the smaller of requested_by's and granted_by's).
    pub expires_at: SystemTime,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// How a PSD2 provider's credential was made (`POST /payment-service-provider-credential`):
/// which certificate registered it. Not a secret. The credential's `token_value` is the
/// context's [`secret`](ApiContext::secret), used like an API key from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Psd2Registration {
    /// bunq's id of the `CredentialPasswordIp`.
    pub credential_id: u64,
    /// Lowercase hex SHA-256 of the certificate's DER: a context made with another
    /// certificate is not reused for this one.
    pub certificate_sha256: String,
}

/// A PSD2 provider's credential, from `POST /payment-service-provider-credential`
/// (bunq's `CredentialPasswordIp`): its `token_value` is the `secret` of device-server
/// and session-server, as an API key is. `Debug` hides the token.
#[derive(Clone)]
pub struct Psd2Credential {
    /// bunq's id of the credential.
    pub id: u64,
    /// The credential's `token_value`.
    pub token_value: SecretString,
    /// bunq's status of it (`ACTIVE`, ...), when given.
    pub status: Option<String>,
}

impl fmt::Debug for Psd2Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psd2Credential")
            .field("id", &self.id)
            .field("token_value", &"[redacted]")
            .field("status", &self.status)
            .finish()
    }
}

/// Everything needed to call bunq for one credential without a new installation: the
/// credential itself (API key, OAuth access token, or a PSD2 provider's credential), the
/// installation, the device and the current session.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiContext {
    /// The API base this context belongs to (`https://api.bunq.com/v1`, ...): an
    /// installation is only valid on the server that made it.
    pub api_base: String,
    /// The API key or OAuth access token (`secret` of device-server and session-server).
    #[serde(serialize_with = "expose_string")]
    pub secret: SecretString,
    /// The installation.
    pub installation: Installation,
    /// The device, once registered.
    pub device: Option<Device>,
    /// The latest session, if any (it may have expired).
    pub session: Option<Session>,
    /// For a PSD2 provider's credential ([`SessionManager::connect_psd2`]): the
    /// certificate that registered it. `None` for API keys and OAuth access tokens, and
    /// in contexts stored before this field existed.
    ///
    /// [`SessionManager::connect_psd2`]: crate::SessionManager::connect_psd2
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psd2: Option<Psd2Registration>,
}

impl fmt::Debug for ApiContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiContext")
            .field("api_base", &self.api_base)
            .field("secret", &"[redacted]")
            .field("installation", &self.installation)
            .field("device", &self.device)
            .field("session", &self.session)
            .field("psd2", &self.psd2)
            .finish()
    }
}

fn expose_string<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn private_key_pem<S: Serializer>(key: &PrivateKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(key.to_pkcs8_pem().expose_secret())
}

fn private_key_from_pem<'de, D: Deserializer<'de>>(d: D) -> Result<PrivateKey, D::Error> {
    let pem = SecretString::deserialize(d)?;
    PrivateKey::from_pem(pem.expose_secret()).map_err(serde::de::Error::custom)
}

fn public_key_pem<S: Serializer>(key: &ServerPublicKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&key.to_pem().map_err(serde::ser::Error::custom)?)
}

fn public_key_from_pem<'de, D: Deserializer<'de>>(d: D) -> Result<ServerPublicKey, D::Error> {
    let pem = String::deserialize(d)?;
    ServerPublicKey::from_pem(&pem).map_err(serde::de::Error::custom)
}
