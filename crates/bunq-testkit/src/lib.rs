//! A faithful fake bunq server for offline tests and demos.
//!
//! (Skeleton: the server and the `bunq-fake` binary arrive with issue 3.)
