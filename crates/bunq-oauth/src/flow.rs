//! [`OAuthFlow`]: issue a state and an authorize URL, then complete the callback.

use std::fmt;
use std::time::SystemTime;

use crate::callback::Callback;
use crate::config::{OAuthConfig, authorization_url};
use crate::error::OAuthError;
use crate::state::{PendingState, State, StateContext, StateKey, StateStore, TakeOutcome};
use crate::token::{AccessToken, exchange_code};

/// Where to send the end user, and the state that will bring them back. `Debug` shows the
/// URL without its query, which holds the state.
#[derive(Clone)]
pub struct Authorization {
    /// bunq's authorize URL with our parameters. It holds the state: do not log it.
    pub url: String,
    /// The state inside `url` (already stored).
    pub state: State,
    /// After this instant the callback is refused.
    pub expires_at: SystemTime,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let base = self
            .url
            .split_once('?')
            .map_or(self.url.as_str(), |(b, _)| b);
        f.debug_struct("Authorization")
            .field("url", &format_args!("{base}?[redacted]"))
            .field("state", &self.state)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A completed authorization: whose it was and the token it earned.
#[derive(Clone, Debug)]
pub struct Completed {
    /// What the application attached to the state in [`OAuthFlow::begin`].
    pub context: StateContext,
    /// The end user's access token.
    pub token: AccessToken,
    /// The digest the (now taken) state was stored under.
    pub state: StateKey,
}

/// The authorization-code flow for one OAuth client: the config, the state store, and an
/// HTTP client for the token endpoint (no redirects, the config's timeout).
#[derive(Debug)]
pub struct OAuthFlow<S: StateStore> {
    config: OAuthConfig,
    store: S,
    http: reqwest::Client,
}

impl<S: StateStore> OAuthFlow<S> {
    /// Checks the config and builds the HTTP client.
    pub fn new(config: OAuthConfig, store: S) -> Result<Self, OAuthError> {
        config.validate().map_err(OAuthError::Config)?;
        let http = reqwest::Client::builder()
            // A redirect would carry the client secret (query style) to wherever it
            // points; the token endpoint has no reason to send one.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("bunq-oauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(OAuthError::from_reqwest)?;
        Ok(Self {
            config,
            store,
            http,
        })
    }

    /// Starts an authorization: issues a fresh state, stores it (by digest) with
    /// `context` and a TTL of [`OAuthConfig::state_ttl`], and returns the authorize URL
    /// to send the end user to.
    pub async fn begin(&self, context: StateContext) -> Result<Authorization, OAuthError> {
        let state = State::generate()?;
        let created_at = SystemTime::now();
        // The TTL is the caller's; an absurd one must be an error, not an overflow panic.
        let expires_at = created_at
            .checked_add(self.config.state_ttl)
            .ok_or_else(|| OAuthError::Config("state_ttl is out of range".to_owned()))?;
        self.store
            .insert(&PendingState {
                key: state.key(),
                context,
                created_at,
                expires_at,
            })
            .await?;
        Ok(Authorization {
            url: authorization_url(&self.config, &state),
            state,
            expires_at,
        })
    }

    /// Completes an authorization from its callback.
    ///
    /// A state without the shape of one we issue is [`OAuthError::MalformedState`],
    /// before the store is asked. Otherwise the state is taken from the store exactly once, whatever the callback says: an
    /// unknown (or absent) state is [`OAuthError::UnknownState`], a second use
    /// [`OAuthError::ReplayedState`], a late one [`OAuthError::ExpiredState`]. A valid
    /// denial is [`OAuthError::Denied`] with the state's context. Otherwise the code is
    /// exchanged once (see [`exchange_code`]).
    pub async fn complete(&self, callback: &Callback) -> Result<Completed, OAuthError> {
        // A denial without a state cannot be tied to any request of ours; it is as good
        // as forged.
        let state = callback.state().ok_or(OAuthError::UnknownState)?;
        // Anyone can send a callback; the store's lookup is a write transaction. A
        // state we could not have issued costs no store call.
        if !state.has_issued_shape() {
            return Err(OAuthError::MalformedState);
        }
        let key = state.key();
        let pending = match self.store.take(&key).await? {
            TakeOutcome::Taken(pending) => pending,
            TakeOutcome::AlreadyTaken => return Err(OAuthError::ReplayedState),
            TakeOutcome::Unknown => return Err(OAuthError::UnknownState),
        };
        // The store found the state by its key; confirm, in constant time, that what it
        // returned is the state this callback carries and not a near match.
        if !pending.key.ct_eq(&key) {
            return Err(OAuthError::UnknownState);
        }
        if SystemTime::now() >= pending.expires_at {
            return Err(OAuthError::ExpiredState);
        }
        match callback {
            Callback::Denied {
                error, description, ..
            } => Err(OAuthError::Denied {
                context: pending.context,
                error: error.clone(),
                description: description.clone(),
            }),
            Callback::Code { code, .. } => {
                let token = exchange_code(&self.http, &self.config, code).await?;
                Ok(Completed {
                    context: pending.context,
                    token,
                    state: key,
                })
            }
        }
    }

    /// Asks the store to forget expired states; returns how many it dropped. Call it
    /// now and then (the gateway does, on a timer).
    pub async fn sweep_expired(&self) -> Result<u64, OAuthError> {
        Ok(self.store.sweep_expired(SystemTime::now()).await?)
    }

    /// The config.
    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    /// The state store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The HTTP client used for the token endpoint.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{MemoryStateStore, OAuthEndpoints};

    #[tokio::test]
    async fn absurd_state_ttl_is_an_error_not_a_panic() {
        let config = OAuthConfig::new(
            "cid",
            "secret".to_owned(),
            "http://127.0.0.1:1/oauth/callback",
            OAuthEndpoints::custom("http://127.0.0.1:1/auth", "http://127.0.0.1:1/token"),
        )
        .with_state_ttl(Duration::MAX);
        let flow = OAuthFlow::new(config, MemoryStateStore::new()).unwrap();
        let err = flow
            .begin(StateContext {
                user_ref: "alice".to_owned(),
                return_to: None,
                replace: false,
            })
            .await
            .unwrap_err();
        assert!(matches!(err, OAuthError::Config(_)), "{err}");
        assert!(flow.store().is_empty());
    }
}
