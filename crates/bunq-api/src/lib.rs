//! Typed calls for what bunq's OAuth scopes grant, on top of `bunq-session`.
//!
//! `bunq-session` signs, verifies, paces and keeps sessions; this crate knows bunq's
//! objects. A [`UserApi`] is one credential's view of bunq (an end user's OAuth access
//! token, or an API key), with a call per thing the default OAuth scopes allow:
//!
//! - **monetary accounts** of every kind through the generic endpoint, bank, savings,
//!   joint and external, active ones first ([`UserApi::monetary_accounts`]);
//! - **payments**: made with a typed [`Amount`] and [`Pointer`], listed as a
//!   [`Stream`](futures::Stream) that follows bunq's pagination, read one by one;
//! - **request-inquiries** and **draft-payments**: made, listed, read;
//! - **notification filters** (callbacks), through `bunq-session`'s calls.
//!
//! Values are checked where they are built ([`Amount::eur`], [`Pointer::iban`],
//! [`NewPayment::new`], ...) and refused with a [`ValueError`], so a typo fails before
//! anything reaches bunq. Calls fail with [`bunq_session::Error`], which says whether
//! bunq may have seen the request. Request bodies are plain `Serialize` types: what
//! this crate does not model can still be sent with
//! [`ApiRequest::post_json`](bunq_session::ApiRequest::post_json) and any body.
//!
//! Against the fake bunq of `bunq-testkit`:
//!
//! ```
//! use bunq_api::{Amount, MonetaryAccount, NewPayment, NewRequestInquiry, PageSize, Pointer, UserApi};
//! use bunq_session::{BunqClient, ClientConfig, CredentialId, Environment, MemoryContextStore, SessionManager, SessionManagerConfig};
//! use futures::TryStreamExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fake = bunq_testkit::FakeBunq::start().await?;
//! let end_user = fake.create_sandbox_user();
//! let access_token = fake.grant_oauth_access(end_user.user_id);
//!
//! let client = BunqClient::new(ClientConfig::new(Environment::Custom { api_base: fake.api_base() }))?;
//! let manager = SessionManager::new(client, MemoryContextStore::new(), SessionManagerConfig::default());
//! let alice = CredentialId::new("alice");
//! manager.connect(&alice, access_token.into()).await?;
//! let api = UserApi::new(manager, alice);
//!
//! let accounts = api.monetary_accounts().await?;
//! let from = accounts[0].id();
//! let to = accounts[1].info().iban().ok_or("no IBAN")?;
//! assert!(accounts.iter().all(|a| matches!(a, MonetaryAccount::Bank(_))));
//!
//! // Money in (the sandbox's sugar daddy pays at once), then a payment out.
//! let top_up = NewRequestInquiry::new(Amount::eur("100")?, Pointer::email("sugardaddy@bunq.com")?, "top up")?;
//! api.create_request_inquiry(from, &top_up).await?;
//! let rent = NewPayment::new(Amount::eur("25.50")?, Pointer::iban(to, "Me")?, "rent")?;
//! let paid = api.create_payment(from, &rent).request_id("rent-2024-06").await?;
//!
//! let payments: Vec<_> = api.payments(from, PageSize::new(1)?).try_collect().await?;
//! assert_eq!(payments.len(), 2); // one page each: the payment, then the top-up
//! assert_eq!((payments[0].id, payments[0].amount.value()), (paid, "-25.50".to_owned()));
//! # Ok(())
//! # }
//! ```

mod account;
mod amount;
mod create;
mod draft_payment;
mod error;
mod id;
mod pages;
mod payment;
mod pointer;
mod request_inquiry;
mod status;
mod user;

use std::fmt;
use std::time::Instant;

use bunq_session::{ApiRequest, ContextStore, CredentialId, Error, SessionManager};
use bytes::Bytes;

pub use account::{
    AccountInfo, CoOwner, MonetaryAccount, MonetaryAccountBank, MonetaryAccountExternal,
    MonetaryAccountJoint, MonetaryAccountSavings,
};
pub use amount::{Amount, Currency};
pub use bunq_session::{FilterScope, NotificationFilter};
pub use create::Create;
pub use draft_payment::{DraftPayment, DraftPaymentEntry, NewDraftPayment};
pub use error::ValueError;
pub use id::{DraftPaymentId, MonetaryAccountId, PaymentId, RequestInquiryId};
pub use pages::{PageSize, Pages};
pub use payment::{NewPayment, Payment};
pub use pointer::{LabelMonetaryAccount, LabelUser, Pointer, PointerType};
pub use request_inquiry::{NewRequestInquiry, RequestInquiry};
pub use status::{AccountStatus, DraftPaymentStatus, RequestInquiryStatus};
pub use user::User;

/// One credential's view of bunq: the typed calls, each made with the credential's
/// session through its [`SessionManager`] (which opens, shares and renews it). Cheap to
/// clone; make one per credential when needed, or keep them.
///
/// Paths name the session's user (`/user/{id}/...`, for OAuth the `UserApiKey` id);
/// it is taken from the session at each call, so a renewed or reconnected credential
/// never uses a stale one.
pub struct UserApi<S: ContextStore> {
    manager: SessionManager<S>,
    credential: CredentialId,
}

impl<S: ContextStore> Clone for UserApi<S> {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            credential: self.credential.clone(),
        }
    }
}

impl<S: ContextStore> fmt::Debug for UserApi<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserApi")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

impl<S: ContextStore> UserApi<S> {
    /// The calls of `credential` (connected with
    /// [`SessionManager::connect`](bunq_session::SessionManager::connect)) through
    /// `manager`.
    pub fn new(manager: SessionManager<S>, credential: CredentialId) -> Self {
        Self {
            manager,
            credential,
        }
    }

    /// The session manager the calls go through.
    pub fn manager(&self) -> &SessionManager<S> {
        &self.manager
    }

    /// The credential the calls act for.
    pub fn credential(&self) -> &CredentialId {
        &self.credential
    }

    /// The id paths name (`/user/{id}`): the session's user. With a `deadline`, a
    /// renewal's turn at the pacer is not awaited past it.
    pub(crate) async fn user_id(&self, deadline: Option<Instant>) -> Result<u64, Error> {
        let session = match deadline {
            Some(deadline) => self.manager.session_until(&self.credential, deadline).await,
            None => self.manager.session(&self.credential).await,
        };
        Ok(session?.user_id)
    }

    /// The verified body of a successful `GET user/{id}/{tail}` (`user/{id}` for an
    /// empty tail).
    pub(crate) async fn get(&self, tail: &str) -> Result<Bytes, Error> {
        let user = self.user_id(None).await?;
        let path = if tail.is_empty() {
            format!("user/{user}")
        } else {
            format!("user/{user}/{tail}")
        };
        let answer = self
            .manager
            .request(&self.credential, ApiRequest::get(path))
            .await?
            .into_result()?;
        Ok(answer.body)
    }

    /// The user's notification filters at `scope` (where bunq sends callbacks);
    /// `bunq-session`'s [`SessionManager::notification_filters`].
    pub async fn notification_filters(
        &self,
        scope: FilterScope,
    ) -> Result<Vec<NotificationFilter>, Error> {
        self.manager
            .notification_filters(&self.credential, scope)
            .await
    }

    /// Replaces the user's notification filters at `scope` (empty: removes them);
    /// `bunq-session`'s [`SessionManager::set_notification_filters`].
    pub async fn set_notification_filters(
        &self,
        scope: FilterScope,
        filters: &[NotificationFilter],
    ) -> Result<Vec<NotificationFilter>, Error> {
        self.manager
            .set_notification_filters(&self.credential, scope, filters)
            .await
    }
}
