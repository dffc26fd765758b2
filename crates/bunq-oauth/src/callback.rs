//! The callback: what bunq appends to the redirect URI when the end user comes back.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};

use crate::error::CallbackError;
use crate::state::State;

/// The single-use authorization code from the callback. It is worth an access token to
/// whoever exchanges it first, so `Debug` redacts it and there is no `Display`.
#[derive(Clone)]
pub struct AuthorizationCode(SecretString);

impl AuthorizationCode {
    /// Wraps a code.
    pub fn new(code: impl Into<String>) -> Self {
        Self(SecretString::from(code.into()))
    }

    /// The code, for the token request.
    pub fn secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for AuthorizationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthorizationCode([redacted])")
    }
}

/// What came back on the redirect URI.
#[derive(Clone, Debug)]
pub enum Callback {
    /// The end user granted access.
    Code {
        /// The authorization code, to exchange for a token.
        code: AuthorizationCode,
        /// The state we sent.
        state: State,
    },
    /// The authorization failed (`error=access_denied`, ...).
    Denied {
        /// The RFC 6749 error code.
        error: String,
        /// `error_description`, if any.
        description: Option<String>,
        /// The state we sent, if bunq returned it.
        state: Option<State>,
    },
}

impl Callback {
    /// Parses the callback's query string (with or without the leading `?`).
    ///
    /// `code` and `state`, or `error` (with optional `error_description` and `state`);
    /// any of these present twice, or empty, or `code` beside `error`, is refused: a
    /// callback is made by bunq and there is no reason for it to be ambiguous. Other
    /// parameters are ignored.
    ///
    /// ```
    /// use bunq_oauth::Callback;
    ///
    /// let cb = Callback::from_query("code=abc&state=xyz").unwrap();
    /// assert!(matches!(cb, Callback::Code { .. }));
    /// assert!(Callback::from_query("code=abc").is_err());
    /// ```
    pub fn from_query(query: &str) -> Result<Callback, CallbackError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let mut code = None;
        let mut state = None;
        let mut error = None;
        let mut description = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, name) = match key.as_ref() {
                "code" => (&mut code, "code"),
                "state" => (&mut state, "state"),
                "error" => (&mut error, "error"),
                "error_description" => (&mut description, "error_description"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(CallbackError::Duplicated(name));
            }
            *slot = Some(value.into_owned());
        }
        let non_empty = |v: Option<String>, name| match v {
            Some(v) if v.is_empty() => Err(CallbackError::Missing(name)),
            v => Ok(v),
        };
        let code = non_empty(code, "code")?;
        let state = non_empty(state, "state")?;
        let error = non_empty(error, "error")?;
        match (error, code) {
            (Some(_), Some(_)) => Err(CallbackError::CodeAndError),
            (Some(error), None) => Ok(Callback::Denied {
                error,
                description: description.filter(|d| !d.is_empty()),
                state: state.map(State::new),
            }),
            (None, Some(code)) => Ok(Callback::Code {
                code: AuthorizationCode::new(code),
                state: State::new(state.ok_or(CallbackError::Missing("state"))?),
            }),
            (None, None) => Err(CallbackError::Missing("code")),
        }
    }

    /// Parses the query of a full redirect URL (e.g. a `Location` header).
    pub fn from_url(url: &str) -> Result<Callback, CallbackError> {
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        let query = query.split_once('#').map(|(q, _)| q).unwrap_or(query);
        Self::from_query(query)
    }

    /// The state, if the callback carries one.
    pub fn state(&self) -> Option<&State> {
        match self {
            Callback::Code { state, .. } => Some(state),
            Callback::Denied { state, .. } => state.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_code_and_state() {
        let cb = Callback::from_query("?code=a%2Bb+c&state=s1&extra=1").unwrap();
        let Callback::Code { code, state } = cb else {
            panic!("expected a code")
        };
        assert_eq!(code.secret(), "a+b c");
        assert_eq!(state.secret(), "s1");
    }

    #[test]
    fn parses_access_denied_with_description() {
        let cb = Callback::from_query("error=access_denied&error_description=User+said+no&state=s")
            .unwrap();
        let Callback::Denied {
            error,
            description,
            state,
        } = cb
        else {
            panic!("expected a denial")
        };
        assert_eq!(error, "access_denied");
        assert_eq!(description.as_deref(), Some("User said no"));
        assert_eq!(state.unwrap().secret(), "s");
    }

    #[test]
    fn denial_without_state_parses_with_no_state() {
        let cb = Callback::from_query("error=server_error").unwrap();
        assert!(cb.state().is_none());
    }

    #[test]
    fn rejects_missing_parameters() {
        assert_eq!(
            Callback::from_query("state=s").unwrap_err(),
            CallbackError::Missing("code")
        );
        assert_eq!(
            Callback::from_query("code=c").unwrap_err(),
            CallbackError::Missing("state")
        );
        assert_eq!(
            Callback::from_query("code=&state=s").unwrap_err(),
            CallbackError::Missing("code")
        );
        assert_eq!(
            Callback::from_query("code=c&state=").unwrap_err(),
            CallbackError::Missing("state")
        );
        assert_eq!(
            Callback::from_query("").unwrap_err(),
            CallbackError::Missing("code")
        );
    }

    #[test]
    fn rejects_duplicated_parameters() {
        for (query, name) in [
            ("code=a&code=b&state=s", "code"),
            ("code=a&state=s&state=t", "state"),
            ("error=a&error=b", "error"),
            (
                "error=a&error_description=x&error_description=y",
                "error_description",
            ),
            ("code=a&state=s&state=s", "state"),
        ] {
            assert_eq!(
                Callback::from_query(query).unwrap_err(),
                CallbackError::Duplicated(name),
                "{query}"
            );
        }
    }

    #[test]
    fn rejects_code_beside_error() {
        assert_eq!(
            Callback::from_query("code=c&state=s&error=access_denied").unwrap_err(),
            CallbackError::CodeAndError
        );
    }

    #[test]
    fn from_url_reads_the_query_of_a_location() {
        let cb = Callback::from_url("https://app.example/cb?code=c&state=s#frag").unwrap();
        assert_eq!(cb.state().unwrap().secret(), "s");
        assert!(Callback::from_url("https://app.example/cb").is_err());
    }
}
