#![doc = include_str!("../README.md")]
//!
//! ## Did bunq get it?
//!
//! A failed call says whether bunq may have seen it. [`Error::NotSent`]: nothing reached
//! the wire, so sending again cannot execute it twice. [`Error::OutcomeUnknown`]: the
//! request was (or may have been) written but its answer was lost, so bunq may have
//! executed it. Give a payment its own request id, and after an unknown outcome resend
//! it with the *same* id: bunq refuses an id it has already seen on this device, so an
//! error then means the first attempt arrived (reconcile), an execution that it did not.
//! A [`deadline`](ApiRequest::deadline) bounds the waits before sending, never a request
//! already sent.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//!
//! use bunq_session::{ApiRequest, ContextStore, CredentialId, Error, SessionManager};
//!
//! # async fn pay<S: ContextStore>(manager: &SessionManager<S>, alice: &CredentialId) -> Result<(), Error> {
//! let payment = serde_json::json!({
//!     "amount": { "value": "10.00", "currency": "EUR" },
//!     "counterparty_alias": { "type": "IBAN", "value": "NL00BUNQ0000000000", "name": "Bob" },
//!     "description": "invoice 17",
//! });
//! // One id per payment, kept with the payment in your own records.
//! let request = ApiRequest::post_json("user/1/monetary-account/2/payment", &payment)
//!     .with_request_id("invoice-17-payment-1")
//!     .with_deadline(Instant::now() + Duration::from_secs(10));
//! match manager.request(alice, request.clone()).await {
//!     Ok(response) => {
//!         let _id = bunq_session::envelope::id(&response.into_result()?.body)?;
//!     }
//!     Err(Error::NotSent { reason, .. }) => {
//!         // Nothing was sent: safe to try again later.
//!         eprintln!("not sent ({reason}); will retry");
//!     }
//!     Err(Error::OutcomeUnknown { request_id, .. }) => {
//!         // bunq may have paid. Resend with the same id: an error means it arrived.
//!         eprintln!("answer lost for {request_id}; asking again with the same id");
//!         let again = manager.request(alice, request).await?;
//!         let _ = again.is_success();
//!     }
//!     Err(other) => return Err(other),
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod context;
pub mod envelope;
mod error;
mod fleet;
mod lifecycle;
mod manager;
mod notification;
mod rate_limit;
mod store;
mod transport;
mod verify_cache;

pub use client::{
    AUTHENTICATION_HEADER, ApiRequest, BunqClient, REQUEST_ID_HEADER, RESPONSE_ID_HEADER,
    RawResponse, SIGNATURE_HEADER,
};
pub use config::{ClientConfig, Environment};
pub use context::{
    ApiContext, CredentialId, Device, Installation, Psd2Credential, Psd2Registration, Session,
    UserKind,
};
pub use envelope::Pagination;
pub use error::{Error, SendFailure, TimeoutKind};
pub use fleet::{BoxFuture, CreationLock, SharedSessionWindow};
pub use manager::{SessionManager, SessionManagerConfig};
pub use notification::{FilterScope, NotificationFilter};
pub use rate_limit::{LimitScope, RateLimitPolicy};
pub use store::{ContextStore, ContextStoreError, MemoryContextStore};
pub use transport::TransportError;

/// Entry points for the fuzz targets (`fuzz/`), which build outside this crate: parsers
/// that are otherwise private. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses a `POST /session-server` response body as the session lifecycle does.
    pub fn parse_session_server(body: &[u8]) -> Result<crate::Session, crate::Error> {
        crate::lifecycle::parse_session(body, std::time::SystemTime::now())
    }
}
