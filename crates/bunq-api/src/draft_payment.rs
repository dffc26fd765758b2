//! Draft-payments: payments proposed to the account holder, made only once they accept
//! them in the bunq app. What an OAuth application may do without the holder present.

use bunq_session::envelope;
use bunq_session::{ContextStore, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::create::Create;
use crate::pages::{PageSize, Pages, pages};
use crate::{
    Amount, DraftPaymentId, DraftPaymentStatus, LabelMonetaryAccount, LabelUser, MonetaryAccountId,
    NewPayment, UserApi, ValueError,
};

/// One payment of a draft, as bunq shows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct DraftPaymentEntry {
    /// bunq's id of the entry.
    #[serde(default)]
    pub id: Option<u64>,
    /// The amount to pay.
    pub amount: Amount,
    /// This side: the account paying.
    #[serde(default)]
    pub alias: Option<LabelMonetaryAccount>,
    /// Who is paid.
    #[serde(default)]
    pub counterparty_alias: Option<LabelMonetaryAccount>,
    /// The description.
    #[serde(default)]
    pub description: Option<String>,
    /// The merchant's reference.
    #[serde(default)]
    pub merchant_reference: Option<String>,
    /// `BUNQ`, `IDEAL`, ...
    #[serde(default, rename = "type")]
    pub entry_type: Option<String>,
}

/// A payment proposed to the holder of an account. Fields bunq may omit are optional;
/// unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct DraftPayment {
    /// bunq's id of the draft.
    pub id: DraftPaymentId,
    /// When it was made.
    #[serde(default)]
    pub created: Option<String>,
    /// When it last changed.
    #[serde(default)]
    pub updated: Option<String>,
    /// The account it would pay from.
    pub monetary_account_id: MonetaryAccountId,
    /// Whether the holder accepted it.
    #[serde(default)]
    pub status: Option<DraftPaymentStatus>,
    /// bunq's type of the draft.
    #[serde(default, rename = "type")]
    pub draft_type: Option<String>,
    /// Who proposed it.
    #[serde(default)]
    pub user_alias_created: Option<LabelUser>,
    /// The payments it makes once accepted.
    #[serde(default)]
    pub entries: Vec<DraftPaymentEntry>,
    /// The `Payment` or `PaymentBatch` made, once accepted, as bunq sent it.
    #[serde(default)]
    pub object: Option<Value>,
}

/// The body of a draft to propose
/// (`POST /user/{id}/monetary-account/{aid}/draft-payment`): one or more payments, each
/// a [`NewPayment`].
///
/// ```
/// use bunq_api::{Amount, NewDraftPayment, NewPayment, Pointer};
///
/// let landlord = Pointer::iban("NL91ABNA0417164300", "J. Landlord")?;
/// let draft = NewDraftPayment::new(vec![
///     NewPayment::new(Amount::eur("950")?, landlord.clone(), "Rent")?,
///     NewPayment::new(Amount::eur("45.10")?, landlord, "Water")?,
/// ])?;
/// let json = serde_json::to_value(&draft).unwrap();
/// assert_eq!(json["number_of_required_accepts"], 1);
/// assert_eq!(json["entries"][1]["amount"]["value"], "45.10");
/// assert!(NewDraftPayment::new(Vec::new()).is_err());
/// # Ok::<(), bunq_api::ValueError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewDraftPayment {
    entries: Vec<NewPayment>,
    // bunq: "Currently only 1 is valid", and it is required.
    number_of_required_accepts: u32,
}

impl NewDraftPayment {
    /// A draft of `entries` (at least one), each made as a payment once accepted.
    pub fn new(entries: Vec<NewPayment>) -> Result<Self, ValueError> {
        if entries.is_empty() {
            return Err(ValueError::NoEntries);
        }
        Ok(Self {
            entries,
            number_of_required_accepts: 1,
        })
    }

    /// The entries.
    pub fn entries(&self) -> &[NewPayment] {
        &self.entries
    }
}

impl<S: ContextStore> UserApi<S> {
    /// Proposes a draft to the holder of `account`
    /// (`POST .../monetary-account/{aid}/draft-payment`): `.await` it for the new
    /// draft's id. Nothing is paid until the holder accepts it in the bunq app; read it
    /// back ([`draft_payment`](Self::draft_payment)) or subscribe to `DRAFT_PAYMENT`
    /// callbacks to learn when.
    pub fn create_draft_payment<'a>(
        &'a self,
        account: MonetaryAccountId,
        draft: &NewDraftPayment,
    ) -> Create<'a, S, DraftPaymentId> {
        Create::new(
            self,
            format!("monetary-account/{account}/draft-payment"),
            draft,
        )
    }

    /// The drafts of `account`, newest first, `size` per call
    /// (`GET .../monetary-account/{aid}/draft-payment`, then each `older_url`).
    pub fn draft_payments(
        &self,
        account: MonetaryAccountId,
        size: PageSize,
    ) -> Pages<DraftPayment> {
        pages(
            self.clone(),
            format!("monetary-account/{account}/draft-payment"),
            size,
            |body| envelope::list(body, "DraftPayment"),
        )
    }

    /// One draft of `account` (`GET .../monetary-account/{aid}/draft-payment/{did}`).
    pub async fn draft_payment(
        &self,
        account: MonetaryAccountId,
        draft: DraftPaymentId,
    ) -> Result<DraftPayment, Error> {
        let body = self
            .get(&format!("monetary-account/{account}/draft-payment/{draft}"))
            .await?;
        envelope::single(&body, "DraftPayment")
    }
}
