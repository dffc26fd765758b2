//! Request-inquiries: asking someone for money into an account.

use bunq_session::envelope;
use bunq_session::{ContextStore, Error};
use serde::{Deserialize, Serialize};

use crate::create::Create;
use crate::pages::{PageSize, Pages, pages};
use crate::payment::check_description;
use crate::{
    Amount, LabelMonetaryAccount, MonetaryAccountId, Pointer, RequestInquiryId,
    RequestInquiryStatus, UserApi, ValueError,
};

/// A request for money sent from an account. Fields bunq may omit are optional;
/// unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RequestInquiry {
    /// bunq's id of the request.
    pub id: RequestInquiryId,
    /// When it was made.
    #[serde(default)]
    pub created: Option<String>,
    /// When it last changed.
    #[serde(default)]
    pub updated: Option<String>,
    /// When the counterparty answered.
    #[serde(default)]
    pub time_responded: Option<String>,
    /// When it expires unanswered.
    #[serde(default)]
    pub time_expiry: Option<String>,
    /// The account the money is asked into.
    pub monetary_account_id: MonetaryAccountId,
    /// The amount asked.
    pub amount_inquired: Amount,
    /// The amount paid, once answered.
    #[serde(default)]
    pub amount_responded: Option<Amount>,
    /// Where the request stands.
    #[serde(default)]
    pub status: Option<RequestInquiryStatus>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// The merchant's reference.
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// The account that asked (ours).
    #[serde(default)]
    pub user_alias_created: Option<LabelMonetaryAccount>,
    /// Who was asked.
    #[serde(default)]
    pub counterparty_alias: Option<LabelMonetaryAccount>,
    /// The bunq.me link to pay it, when bunq made one.
    #[serde(default)]
    pub bunqme_share_url: Option<String>,
    /// Where the payer is sent after paying through bunq.me.
    #[serde(default)]
    pub redirect_url: Option<String>,
    /// The batch it was part of.
    #[serde(default)]
    pub batch_id: Option<u64>,
}

/// The body of a request to send
/// (`POST /user/{id}/monetary-account/{aid}/request-inquiry`).
///
/// ```
/// use bunq_api::{Amount, NewRequestInquiry, Pointer};
///
/// let lunch = NewRequestInquiry::new(Amount::eur("7.50")?, Pointer::email("bob@example.com")?, "Lunch")?;
/// assert_eq!(
///     serde_json::to_value(&lunch).unwrap(),
///     serde_json::json!({
///         "amount_inquired": {"value": "7.50", "currency": "EUR"},
///         "counterparty_alias": {"type": "EMAIL", "value": "bob@example.com"},
///         "description": "Lunch",
///         "allow_bunqme": false,
///     })
/// );
/// # Ok::<(), bunq_api::ValueError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewRequestInquiry {
    amount_inquired: Amount,
    counterparty_alias: Pointer,
    description: String,
    // bunq requires it on every request.
    allow_bunqme: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_url: Option<String>,
}

impl NewRequestInquiry {
    /// Asks `from` for `amount` (above zero), with `description`; no bunq.me link
    /// (see [`allow_bunqme`](Self::allow_bunqme)).
    pub fn new(
        amount: Amount,
        from: Pointer,
        description: impl Into<String>,
    ) -> Result<Self, ValueError> {
        Ok(Self {
            amount_inquired: amount.positive()?,
            counterparty_alias: from,
            description: check_description(description.into())?,
            allow_bunqme: false,
            merchant_reference: None,
            redirect_url: None,
        })
    }

    /// Lets someone without bunq pay through a bunq.me link (`allow_bunqme`).
    pub fn allow_bunqme(mut self, allow: bool) -> Self {
        self.allow_bunqme = allow;
        self
    }

    /// Adds the merchant's reference.
    pub fn merchant_reference(mut self, reference: impl Into<String>) -> Self {
        self.merchant_reference = Some(reference.into());
        self
    }

    /// Where bunq.me sends the payer after paying.
    pub fn redirect_url(mut self, url: impl Into<String>) -> Self {
        self.redirect_url = Some(url.into());
        self
    }
}

impl<S: ContextStore> UserApi<S> {
    /// Sends a request for money into `account`
    /// (`POST .../monetary-account/{aid}/request-inquiry`): `.await` it for the new
    /// request's id.
    pub fn create_request_inquiry<'a>(
        &'a self,
        account: MonetaryAccountId,
        request: &NewRequestInquiry,
    ) -> Create<'a, S, RequestInquiryId> {
        Create::new(
            self,
            format!("monetary-account/{account}/request-inquiry"),
            request,
        )
    }

    /// The requests sent from `account`, newest first, `size` per call
    /// (`GET .../monetary-account/{aid}/request-inquiry`, then each `older_url`).
    pub fn request_inquiries(
        &self,
        account: MonetaryAccountId,
        size: PageSize,
    ) -> Pages<RequestInquiry> {
        pages(
            self.clone(),
            format!("monetary-account/{account}/request-inquiry"),
            size,
            |body| envelope::list(body, "RequestInquiry"),
        )
    }

    /// One request sent from `account`
    /// (`GET .../monetary-account/{aid}/request-inquiry/{rid}`).
    pub async fn request_inquiry(
        &self,
        account: MonetaryAccountId,
        request: RequestInquiryId,
    ) -> Result<RequestInquiry, Error> {
        let body = self
            .get(&format!(
                "monetary-account/{account}/request-inquiry/{request}"
            ))
            .await?;
        envelope::single(&body, "RequestInquiry")
    }
}
