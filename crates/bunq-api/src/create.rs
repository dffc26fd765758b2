//! A create call (a POST that answers `{"Id":{"id":N}}`), to tune before sending.

use std::future::IntoFuture;
use std::marker::PhantomData;
use std::time::Instant;

use bunq_session::{ApiRequest, ContextStore, Error, envelope};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::UserApi;

/// A POST that creates something (a payment, a request, a draft), not sent yet:
/// `.await` sends it and gives the new object's id. Set a request id or a deadline
/// first if needed:
///
/// ```no_run
/// # use bunq_api::{Amount, MonetaryAccountId, NewPayment, Pointer, UserApi};
/// # async fn pay<S: bunq_session::ContextStore>(api: &UserApi<S>) -> Result<(), Box<dyn std::error::Error>> {
/// let payment = NewPayment::new(Amount::eur("10.00")?, Pointer::email("bob@example.com")?, "Lunch")?;
/// let id = api
///     .create_payment(MonetaryAccountId(2), &payment)
///     .request_id("lunch-2024-06-01")
///     .await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// The client never resends a POST. A failure says whether bunq may have seen it
/// ([`Error::may_have_reached_bunq`]); after [`Error::OutcomeUnknown`], send the same
/// body again with the *same* request id: bunq refuses an id it has seen on this
/// device, so an error then means the first attempt arrived.
#[must_use = "nothing is sent until the call is awaited"]
pub struct Create<'a, S: ContextStore, Id> {
    api: &'a UserApi<S>,
    /// The path under `user/{id}/`.
    tail: String,
    /// The POST, its path filled in when the user id is known.
    request: ApiRequest,
    id: PhantomData<fn() -> Id>,
}

impl<'a, S: ContextStore, Id> Create<'a, S, Id> {
    pub(crate) fn new<B: Serialize + ?Sized>(api: &'a UserApi<S>, tail: String, body: &B) -> Self {
        Self {
            api,
            tail,
            // Serialized now, so the caller's body need not outlive the call; a body
            // that does not serialize fails the call before anything is sent.
            request: ApiRequest::post_json("", body),
            id: PhantomData,
        }
    }

    /// Sends `id` as `X-Bunq-Client-Request-Id` (see
    /// [`ApiRequest::request_id`](bunq_session::ApiRequest::request_id)): one id per
    /// object you mean to create, kept with it in your own records.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request = self.request.with_request_id(id);
        self
    }

    /// Stops waiting at `deadline` for anything before the POST is sent: a session
    /// renewal's turn at the pacer ([`Error::SessionCapacity`]), the rate limiter
    /// ([`Error::NotSent`]). A POST already sent is never abandoned.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.request = self.request.with_deadline(deadline);
        self
    }
}

impl<'a, S: ContextStore, Id: From<u64> + 'a> IntoFuture for Create<'a, S, Id> {
    type Output = Result<Id, Error>;
    type IntoFuture = BoxFuture<'a, Result<Id, Error>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Self {
                api,
                tail,
                mut request,
                ..
            } = self;
            let user = api.user_id(request.deadline).await?;
            request.path_and_query = format!("user/{user}/{tail}");
            let answer = api
                .manager()
                .request(api.credential(), request)
                .await?
                .into_result()?;
            envelope::id(&answer.body).map(Id::from)
        })
    }
}
