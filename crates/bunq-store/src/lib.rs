//! SQLite persistence for the gateway, encrypted at rest.
//!
//! One SQLite file (bundled SQLite through rusqlite) holding pending OAuth states,
//! connected end users, their OAuth access tokens and bunq contexts (installation key,
//! tokens, session), and an append-only audit log. Every secret column is sealed with
//! AES-256-GCM under a caller-supplied master key, bound to its table, column and row.
//! It implements `bunq_oauth::StateStore` and `bunq_session::ContextStore`.
//!
//! (Skeleton: the implementation arrives with issue 6.)
