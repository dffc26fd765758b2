//! bunq OAuth: everything between "this end user should connect their bunq account" and
//! "we hold their access token".
//!
//! The authorize URL, an unguessable single-use `state` kept through the [`StateStore`]
//! trait, callback parsing, the code-for-token exchange, and the registration of the
//! OAuth client itself (through a `bunq-session` client).
//!
//! (Work in progress: the state types and the storage trait are defined; the rest
//! arrives with issue 5.)

mod state;

pub use state::{PendingState, StateContext, StateKey, StateStore, StateStoreError, TakeOutcome};
