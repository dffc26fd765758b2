#![doc = include_str!("../README.md")]

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
