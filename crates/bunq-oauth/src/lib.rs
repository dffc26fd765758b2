#![doc = include_str!("../README.md")]

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
