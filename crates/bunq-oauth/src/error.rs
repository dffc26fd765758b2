//! The crate's errors: [`OAuthError`] for the flow, [`CallbackError`] for a callback
//! query that cannot be read.
//!
//! None of them carries a secret: no client secret, code, state or token, and no URL
//! (reqwest errors are stripped of theirs, which holds the query-style secret).

use crate::state::{StateContext, StateStoreError};

/// Why the authorization flow failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// The configuration cannot work (a URL does not parse, the token endpoint is plain
    /// http off loopback, ...).
    #[error("invalid OAuth configuration: {0}")]
    Config(String),
    /// The callback's state was never issued here, has expired and been swept, or is
    /// missing. Treat as a forged or stale request.
    #[error("unknown OAuth state")]
    UnknownState,
    /// The callback's state does not have the shape of a state this crate issues (its
    /// length or its characters): a forgery or garbage, refused before the state store
    /// is asked.
    #[error("malformed OAuth state")]
    MalformedState,
    /// The callback's state was already consumed: the callback is a replay (or a
    /// double-submit by the browser).
    #[error("OAuth state already used")]
    ReplayedState,
    /// The callback came after the state's TTL; the state is now consumed.
    #[error("OAuth state expired")]
    ExpiredState,
    /// The end user (or bunq) refused the authorization; the state was valid and is now
    /// consumed, so the context says whom to tell.
    #[error("authorization denied: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        /// What the application attached to the state.
        context: StateContext,
        /// The RFC 6749 error code (`access_denied`, ...).
        error: String,
        /// bunq's `error_description`, if any.
        description: Option<String>,
    },
    /// The callback query cannot be read.
    #[error(transparent)]
    Callback(#[from] CallbackError),
    /// The token endpoint refused the exchange (an RFC 6749 error response, or any
    /// other non-2xx answer).
    #[error("token endpoint answered {status}: {}{}", error.as_deref().unwrap_or("no error code"), description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    TokenEndpoint {
        /// The HTTP status.
        status: u16,
        /// The RFC 6749 `error` code (`invalid_grant`, ...), if the body had one.
        error: Option<String>,
        /// The `error_description`, if the body had one.
        description: Option<String>,
    },
    /// The token endpoint answered 2xx with something that is not a usable bearer token.
    #[error("invalid token response: {0}")]
    InvalidTokenResponse(String),
    /// The request did not get an answer (connect, TLS, reading the body, ...). The
    /// error is stripped of its URL.
    #[error("token endpoint unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// The exchange took longer than [`crate::OAuthConfig::timeout`]. Codes are single
    /// use, so it is not retried: the end user has to start again.
    #[error("token endpoint timed out")]
    Timeout,
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StateStoreError),
    /// A call to bunq's API (OAuth client management) failed.
    #[error("bunq: {0}")]
    Bunq(#[from] bunq_session::Error),
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
}

impl OAuthError {
    /// Converts a reqwest error, dropping its URL (which, for query-style exchanges,
    /// holds the code and the client secret).
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            OAuthError::Timeout
        } else {
            OAuthError::Transport(err.without_url())
        }
    }
}

/// Why a callback query cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallbackError {
    /// A parameter the callback needs is absent (or empty).
    #[error("callback is missing `{0}`")]
    Missing(&'static str),
    /// A parameter appears more than once; which one to believe is ambiguous, so none
    /// is.
    #[error("callback has `{0}` more than once")]
    Duplicated(&'static str),
    /// The callback has both a `code` and an `error`.
    #[error("callback has both `code` and `error`")]
    CodeAndError,
}
