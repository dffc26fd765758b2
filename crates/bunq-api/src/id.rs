//! Newtypes for bunq's ids, so that a payment id cannot be passed where an account id
//! belongs (both are plain numbers on the wire).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

id!(
    /// bunq's id of a monetary account (of any kind).
    MonetaryAccountId
);
id!(
    /// bunq's id of a payment.
    PaymentId
);
id!(
    /// bunq's id of a request-inquiry.
    RequestInquiryId
);
id!(
    /// bunq's id of a draft-payment.
    DraftPaymentId
);
