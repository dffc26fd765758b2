//! The bunq API client and the installation → device-server → session-server lifecycle.
//!
//! Everything that talks to bunq's API goes through this crate: the standard headers,
//! request signing and response verification (with `bunq-signing`), bunq's error and
//! envelope formats, client-side rate limiting, and a [`SessionManager`]-to-be that keeps
//! one live session per credential (API key or OAuth access token) for many end users at
//! once, persisted through the [`ContextStore`] trait so that a restart opens no new
//! sessions.
//!
//! (Work in progress: the types that other crates store are defined; the client and the
//! manager arrive with issue 4.)

mod context;
mod store;

pub use context::{ApiContext, CredentialId, Device, Installation, Session, UserKind};
pub use store::{ContextStore, ContextStoreError, MemoryContextStore};
