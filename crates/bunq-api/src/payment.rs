//! Payments: made from an account (`POST .../payment`), listed (made and received,
//! newest first) and read one by one.

use bunq_session::envelope;
use bunq_session::{ContextStore, Error};
use serde::{Deserialize, Serialize};

use crate::create::Create;
use crate::pages::{PageSize, Pages, pages};
use crate::{
    Amount, LabelMonetaryAccount, MonetaryAccountId, PaymentId, Pointer, UserApi, ValueError,
};

/// bunq's longest description (to other bunq accounts; 140 to external IBANs, which
/// bunq checks, since only it knows which IBANs are its own).
const MAX_DESCRIPTION_CHARS: usize = 9_000;

/// A payment booked on an account: made (negative `amount`) or received (positive).
/// Fields bunq may omit are optional; unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Payment {
    /// bunq's id of the payment.
    pub id: PaymentId,
    /// When it was made (bunq's `YYYY-MM-DD hh:mm:ss.ffffff`, UTC).
    #[serde(default)]
    pub created: Option<String>,
    /// When it last changed.
    #[serde(default)]
    pub updated: Option<String>,
    /// The account it is booked on.
    pub monetary_account_id: MonetaryAccountId,
    /// The amount: negative for money that left the account, positive for money in.
    pub amount: Amount,
    /// This side: the account it is booked on.
    #[serde(default)]
    pub alias: Option<LabelMonetaryAccount>,
    /// The other side.
    #[serde(default)]
    pub counterparty_alias: Option<LabelMonetaryAccount>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// `BUNQ`, `EBA_SCT`, `EBA_SDD`, `IDEAL`, `SWIFT`, `FIS` (card), ...
    #[serde(default, rename = "type")]
    pub payment_type: Option<String>,
    /// `PAYMENT`, `WITHDRAWAL`, `REVERSAL`, `REQUEST`, `BILLING`, ...
    #[serde(default)]
    pub sub_type: Option<String>,
    /// The merchant's reference, if the payment carried one.
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// The account's balance after this payment.
    #[serde(default)]
    pub balance_after_mutation: Option<Amount>,
    /// The batch it was part of.
    #[serde(default)]
    pub batch_id: Option<u64>,
    /// The schedule that made it.
    #[serde(default)]
    pub scheduled_id: Option<u64>,
}

/// The body of a payment to make (`POST /user/{id}/monetary-account/{aid}/payment`),
/// also one entry of a [`NewDraftPayment`](crate::NewDraftPayment).
///
/// ```
/// use bunq_api::{Amount, NewPayment, Pointer};
///
/// let payment = NewPayment::new(
///     Amount::eur("950.00")?,
///     Pointer::iban("NL91ABNA0417164300", "J. Landlord")?,
///     "Rent March",
/// )?
/// .merchant_reference("contract-17");
/// assert_eq!(
///     serde_json::to_value(&payment).unwrap(),
///     serde_json::json!({
///         "amount": {"value": "950.00", "currency": "EUR"},
///         "counterparty_alias": {"type": "IBAN", "value": "NL91ABNA0417164300", "name": "J. Landlord"},
///         "description": "Rent March",
///         "merchant_reference": "contract-17",
///     })
/// );
/// assert!(NewPayment::new(Amount::eur("0")?, Pointer::email("a@b.nl")?, "").is_err());
/// # Ok::<(), bunq_api::ValueError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewPayment {
    amount: Amount,
    counterparty_alias: Pointer,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    merchant_reference: Option<String>,
}

impl NewPayment {
    /// `amount` (above zero) to `to`, with `description` (may be empty; bunq takes up to
    /// 9,000 characters, 140 to external IBANs).
    pub fn new(
        amount: Amount,
        to: Pointer,
        description: impl Into<String>,
    ) -> Result<Self, ValueError> {
        Ok(Self {
            amount: amount.positive()?,
            counterparty_alias: to,
            description: check_description(description.into())?,
            merchant_reference: None,
        })
    }

    /// Adds the merchant's reference, kept with the payment.
    pub fn merchant_reference(mut self, reference: impl Into<String>) -> Self {
        self.merchant_reference = Some(reference.into());
        self
    }

    /// The amount.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// Who is paid.
    pub fn counterparty(&self) -> &Pointer {
        &self.counterparty_alias
    }
}

pub(crate) fn check_description(description: String) -> Result<String, ValueError> {
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(ValueError::Description(chars));
    }
    Ok(description)
}

impl<S: ContextStore> UserApi<S> {
    /// Pays from `account` (`POST .../monetary-account/{aid}/payment`): `.await` it for
    /// the new payment's id. A POST is never resent by the client; give it a request id
    /// ([`Create::request_id`]) to be able to ask, after a lost answer, whether it
    /// arrived (see `bunq_session`'s "Did bunq get it?").
    pub fn create_payment<'a>(
        &'a self,
        account: MonetaryAccountId,
        payment: &NewPayment,
    ) -> Create<'a, S, PaymentId> {
        Create::new(self, format!("monetary-account/{account}/payment"), payment)
    }

    /// The payments booked on `account`, made and received, newest first, `size` per
    /// call (`GET .../monetary-account/{aid}/payment`, then each `older_url`).
    pub fn payments(&self, account: MonetaryAccountId, size: PageSize) -> Pages<Payment> {
        pages(
            self.clone(),
            format!("monetary-account/{account}/payment"),
            size,
            |body| envelope::list(body, "Payment"),
        )
    }

    /// One payment booked on `account` (`GET .../monetary-account/{aid}/payment/{pid}`).
    pub async fn payment(
        &self,
        account: MonetaryAccountId,
        payment: PaymentId,
    ) -> Result<Payment, Error> {
        let body = self
            .get(&format!("monetary-account/{account}/payment/{payment}"))
            .await?;
        envelope::single(&body, "Payment")
    }
}
