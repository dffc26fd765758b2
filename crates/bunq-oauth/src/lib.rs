//! bunq OAuth: everything between "this end user should connect their bunq account" and
//! "we hold their access token".
//!
//! - [`OAuthConfig`] and [`authorization_url`]: who we are and where bunq's OAuth lives.
//! - [`OAuthFlow::begin`]: an unguessable single-use [`State`] (256 bits from the OS
//!   CSPRNG), stored by digest through the [`StateStore`] trait with a TTL and the
//!   application's [`StateContext`], and the URL to send the end user to.
//! - [`Callback::from_query`] and [`OAuthFlow::complete`]: the state taken exactly once
//!   (replays, forgeries and late callbacks are distinct errors), then [`exchange_code`]
//!   for an [`AccessToken`].
//! - [`client`]: finding or registering the bunq user's OAuth client through a
//!   `bunq-session` [`SessionManager`](bunq_session::SessionManager).
//!
//! Secrets (client secret, state, code, token) live in `secrecy` types and never show in
//! `Debug`, `Display` or errors.
//!
//! ```no_run
//! use bunq_oauth::{Callback, MemoryStateStore, OAuthConfig, OAuthEndpoints, OAuthFlow, StateContext};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = OAuthConfig::new("client-id", "client-secret",
//!     "https://app.example/oauth/callback", OAuthEndpoints::sandbox());
//! let flow = OAuthFlow::new(config, MemoryStateStore::new())?;
//!
//! // 1. Send the end user to bunq.
//! let auth = flow.begin(StateContext { user_ref: "alice".into(), return_to: None, replace: false }).await?;
//! println!("redirect to {}", auth.url);
//!
//! // 2. bunq sends them back to the redirect URI with `?code=...&state=...`.
//! let callback = Callback::from_query("code=...&state=...")?;
//! let done = flow.complete(&callback).await?;
//! assert_eq!(done.context.user_ref, "alice");
//! // done.token.access_token is what device-server and session-server take as `secret`.
//! # Ok(())
//! # }
//! ```

mod callback;
pub mod client;
mod config;
mod error;
mod flow;
mod memory;
mod state;
mod token;

pub use callback::{AuthorizationCode, Callback};
pub use client::{OAuthClientInfo, ensure_oauth_client, set_oauth_client_status};
pub use config::{ClientId, OAuthConfig, OAuthEndpoints, TokenRequestStyle, authorization_url};
pub use error::{CallbackError, OAuthError};
pub use flow::{Authorization, Completed, OAuthFlow};
pub use memory::MemoryStateStore;
pub use state::{
    PendingState, STATE_BYTES, STATE_LEN, State, StateContext, StateKey, StateStore,
    StateStoreError, TakeOutcome,
};
pub use token::{AccessToken, exchange_code};
