//! The one error type of this crate.

use std::time::Duration;

use bunq_signing::{KeyError, VerificationError};

use crate::transport::TransportError;
use crate::{ContextStoreError, CredentialId};

/// bunq's wordings for "this session is dead" (both are seen in the wild).
const INSUFFICIENT_AUTH: [&str; 2] = [
    "Insufficient authorisation.",
    "Insufficient authentication.",
];

/// Everything that can go wrong talking to bunq. Never carries a secret: no tokens, no
/// keys, no request or response bodies beyond bunq's own error descriptions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (a malformed API base or header value, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Nothing of the request reached the wire (connection refused, DNS, TLS handshake,
    /// connect timeout, or the caller's deadline passed before sending): sending it again
    /// cannot execute it twice.
    #[error("{endpoint} was not sent (request id {request_id}): {reason}")]
    NotSent {
        /// `METHOD path` of the call (path without query string).
        endpoint: String,
        /// The `X-Bunq-Client-Request-Id` the attempt would have carried.
        request_id: String,
        /// Why it was not sent.
        #[source]
        reason: SendFailure,
    },
    /// The request was written (or may have been), but no whole answer came back
    /// (connection cut, reset, total timeout, a broken body): bunq may have executed it.
    /// Reconcile, or resend with the same request id (bunq refuses an id it has already
    /// seen on this device, so an error then means the first attempt arrived).
    #[error(
        "{endpoint}: no whole answer, bunq may have executed it (request id {request_id}): {reason}"
    )]
    OutcomeUnknown {
        /// `METHOD path` of the call (path without query string).
        endpoint: String,
        /// The `X-Bunq-Client-Request-Id` of the attempt whose answer was lost.
        request_id: String,
        /// How the answer was lost.
        #[source]
        reason: SendFailure,
    },
    /// The request cannot be sent as given (its path and query are not a valid URI).
    #[error("invalid request {endpoint}: {detail}")]
    InvalidRequest {
        /// `METHOD path` of the call.
        endpoint: String,
        /// What is wrong with it.
        detail: String,
    },
    /// bunq answered with a non-2xx status.
    #[error("bunq answered {status}: {} (response id {})", descriptions.join(" "), response_id.as_deref().unwrap_or("none"))]
    Api {
        /// The HTTP status.
        status: u16,
        /// Every `error_description` of bunq's `Error` array, in order.
        descriptions: Vec<String>,
        /// `X-Bunq-Client-Response-Id`, which bunq support asks for.
        response_id: Option<String>,
    },
    /// bunq answered 429 (and retrying was not allowed or did not help), or our own
    /// limiter could not fit the call in within its bounded wait.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited {
        /// A conservative estimate of when a retry can succeed (bunq sends no Retry-After).
        retry_after: Duration,
    },
    /// No session could be opened within the bounded wait: bunq allows one
    /// `session-server` call per 30 s per IP for all users together, and the queue in
    /// front of it is full.
    #[error("no session capacity; retry after {retry_after:?}")]
    SessionCapacity {
        /// When the queue is expected to have room for this caller.
        retry_after: Duration,
    },
    /// bunq answered 491 (maintenance) or 5xx without a signature: an unavailability, not
    /// a forgery (bunq signs successes; its front ends answer outages unsigned). The body
    /// was dropped unread.
    #[error("bunq is unavailable (status {status}, response id {})", response_id.as_deref().unwrap_or("none"))]
    Unavailable {
        /// The HTTP status (491 or 5xx).
        status: u16,
        /// The answer's `Retry-After`, when it gave one in seconds.
        retry_after: Option<Duration>,
        /// `X-Bunq-Client-Response-Id`, if present.
        response_id: Option<String>,
    },
    /// A response's `X-Bunq-Server-Signature` was missing or wrong. The body was dropped
    /// unread: it may not come from bunq.
    #[error("response of {endpoint} (status {status}) failed signature verification: {reason}")]
    SignatureInvalid {
        /// `METHOD path` of the call.
        endpoint: String,
        /// The HTTP status of the rejected response.
        status: u16,
        /// Why verification failed.
        reason: VerificationError,
        /// `X-Bunq-Client-Response-Id`, if present.
        response_id: Option<String>,
    },
    /// A 2xx response whose body is not what bunq documents (not JSON, a missing field,
    /// a missing object type).
    #[error("unexpected response from {context}: {detail}")]
    UnexpectedResponse {
        /// What was being decoded (`POST session-server`, `Pagination`, ...).
        context: String,
        /// What was wrong.
        detail: String,
    },
    /// No context for this credential: call `SessionManager::connect` first (or the
    /// stored context belongs to another API base).
    #[error("credential {0} is not connected")]
    NotConnected(CredentialId),
    /// The context store failed.
    #[error(transparent)]
    Store(#[from] ContextStoreError),
    /// Key generation or a key from bunq was refused.
    #[error("key: {0}")]
    Key(#[from] KeyError),
    /// bunq refused the credential itself ("User credentials are incorrect. Incorrect API
    /// key or IP address."), also from a fresh installation and device: the OAuth grant
    /// was withdrawn in the bunq app (or the API key deleted). No session can be opened
    /// with it; the [`SessionManager`](crate::SessionManager) sends nothing more for the
    /// credential until it is connected again. Ask the user to consent again.
    #[error("bunq refused the credential {credential} (status {status}): {}", descriptions.join(" "))]
    Revoked {
        /// The refused credential.
        credential: CredentialId,
        /// The HTTP status of bunq's refusal.
        status: u16,
        /// bunq's `error_description`s.
        descriptions: Vec<String>,
        /// `X-Bunq-Client-Response-Id` of the refusal.
        response_id: Option<String>,
    },
    /// Opening a session for this credential failed recently for a passing reason (bunq
    /// unavailable, a 429, a timeout); the manager waits, with growing delays, before
    /// trying again, so that one failing credential cannot spend the session-server
    /// budget that every credential shares.
    #[error(
        "no session for {credential} until the back-off ends in {retry_after:?} ({failures} failures; last: {last})"
    )]
    SessionBackoff {
        /// The credential.
        credential: CredentialId,
        /// When the manager tries again.
        retry_after: Duration,
        /// Consecutive failures so far.
        failures: u32,
        /// The last failure, as text (no secrets).
        last: String,
    },
}

impl Error {
    /// Whether this is bunq's "the session is dead" answer: 401 or 403 with
    /// "Insufficient authorisation." or "Insufficient authentication.".
    pub fn is_insufficient_authorisation(&self) -> bool {
        match self {
            Error::Api {
                status,
                descriptions,
                ..
            } => is_dead_session(*status, descriptions),
            _ => false,
        }
    }

    /// When the caller may retry, for the errors that say so (rate limits, session
    /// capacity, an unavailability that sent `Retry-After`): what a gateway sends as
    /// `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after }
            | Error::SessionCapacity { retry_after }
            | Error::SessionBackoff { retry_after, .. } => Some(*retry_after),
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// `X-Bunq-Client-Response-Id` of the response behind this error, if any.
    pub fn response_id(&self) -> Option<&str> {
        match self {
            Error::Api { response_id, .. }
            | Error::SignatureInvalid { response_id, .. }
            | Error::Unavailable { response_id, .. } => response_id.as_deref(),
            _ => None,
        }
    }

    /// The `X-Bunq-Client-Request-Id` of the attempt behind a [`NotSent`](Error::NotSent)
    /// or [`OutcomeUnknown`](Error::OutcomeUnknown): the id to resend with, or to
    /// reconcile by.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::NotSent { request_id, .. } | Error::OutcomeUnknown { request_id, .. } => {
                Some(request_id)
            }
            _ => None,
        }
    }

    /// Whether bunq may have received (and executed) the request behind this error.
    /// `false` means certainly not: resending cannot execute it twice. `true` for a lost
    /// answer ([`OutcomeUnknown`](Error::OutcomeUnknown)) and for every answer that came
    /// back ([`Api`](Error::Api), [`Unavailable`](Error::Unavailable),
    /// [`SignatureInvalid`](Error::SignatureInvalid),
    /// [`UnexpectedResponse`](Error::UnexpectedResponse)): something answered, so the
    /// request arrived somewhere.
    pub fn may_have_reached_bunq(&self) -> bool {
        match self {
            Error::OutcomeUnknown { .. }
            | Error::Api { .. }
            | Error::Unavailable { .. }
            | Error::SignatureInvalid { .. }
            | Error::UnexpectedResponse { .. } => true,
            // bunq's 429 refused the call unexecuted, and our own limiter never sent it.
            Error::NotSent { .. }
            | Error::RateLimited { .. }
            | Error::SessionCapacity { .. }
            | Error::NotConnected(_)
            | Error::InvalidRequest { .. }
            | Error::Config(_)
            | Error::Store(_)
            | Error::Key(_)
            // The manager refused to send: no session could be had for the credential.
            | Error::Revoked { .. }
            | Error::SessionBackoff { .. } => false,
        }
    }

    pub(crate) fn unexpected(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::UnexpectedResponse {
            context: context.into(),
            detail: detail.into(),
        }
    }
}

/// bunq's wording when it refuses an API key or OAuth token at device-server or
/// session-server: a withdrawn grant, a deleted key, or a device bound to another IP.
const CREDENTIAL_REFUSED: [&str; 2] = [
    "User credentials are incorrect.",
    "Incorrect API key or IP address.",
];

/// Whether bunq refused the credential (or the calling IP) rather than the request.
pub(crate) fn is_credential_refusal(error: &Error) -> bool {
    match error {
        Error::Api {
            status: 400 | 401 | 403,
            descriptions,
            ..
        } => descriptions
            .iter()
            .any(|d| CREDENTIAL_REFUSED.iter().any(|w| d.contains(w))),
        _ => false,
    }
}

/// Why a request got no answer: the cause inside [`Error::NotSent`] and
/// [`Error::OutcomeUnknown`] (which of the two says whether bunq may have seen it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// The HTTP engine failed: connection refused or reset, DNS, TLS, a broken body.
    #[error("{0}")]
    Transport(#[source] TransportError),
    /// A timeout of the client's configuration elapsed.
    #[error("{} after {after:?}", match kind { TimeoutKind::Connect => "no connection", TimeoutKind::Total => "no whole answer" })]
    Timeout {
        /// Which timeout: connect ([`ClientConfig::connect_timeout`](crate::ClientConfig::connect_timeout))
        /// or total ([`ClientConfig::request_timeout`](crate::ClientConfig::request_timeout)).
        kind: TimeoutKind,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The caller's [`ApiRequest::deadline`](crate::ApiRequest::deadline) passed, or
    /// could not be met, before the request could be sent (waiting for the rate limiter
    /// or for a retry's back-off).
    #[error("the caller's deadline passed before the request could be sent")]
    DeadlinePassed,
}

impl SendFailure {
    /// Whether this is a timeout (of the client's or the caller's deadline).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            SendFailure::Timeout { .. } | SendFailure::DeadlinePassed
        )
    }
}

/// Which of the client's timeouts elapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// No connection within the connect timeout: nothing was sent.
    Connect,
    /// No whole answer within the request timeout.
    Total,
}

/// 401/403 with one of bunq's dead-session wordings.
pub(crate) fn is_dead_session(status: u16, descriptions: &[String]) -> bool {
    (status == 401 || status == 403)
        && descriptions
            .iter()
            .any(|d| INSUFFICIENT_AUTH.iter().any(|w| d.trim() == *w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_both_dead_session_wordings_only_on_401_and_403() {
        let api = |status, d: &str| Error::Api {
            status,
            descriptions: vec![d.to_owned()],
            response_id: None,
        };
        assert!(api(401, "Insufficient authorisation.").is_insufficient_authorisation());
        assert!(api(403, "Insufficient authentication.").is_insufficient_authorisation());
        assert!(!api(400, "Insufficient authorisation.").is_insufficient_authorisation());
        assert!(!api(403, "Not allowed.").is_insufficient_authorisation());
    }

    #[test]
    fn api_error_display_keeps_descriptions_and_response_id() {
        let e = Error::Api {
            status: 490,
            descriptions: vec!["a.".into(), "b.".into()],
            response_id: Some("rid-1".into()),
        };
        let text = e.to_string();
        assert!(text.contains("490") && text.contains("a. b.") && text.contains("rid-1"));
        assert_eq!(e.response_id(), Some("rid-1"));
    }
}
