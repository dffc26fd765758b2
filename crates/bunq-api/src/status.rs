//! The statuses bunq reports, as enums that keep any status bunq adds later (`Other`)
//! instead of failing to read the object.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! status {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A status this crate does not know, as bunq wrote it.
            Other(String),
        }

        impl $name {
            /// bunq's name of the status.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(text) => text,
                }
            }

            fn from_name(name: String) -> Self {
                match name.as_str() {
                    $($text => Self::$variant,)*
                    _ => Self::Other(name),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::from_name)
            }
        }
    };
}

status!(
    /// A monetary account's `status`.
    AccountStatus {
        /// `ACTIVE`: in use.
        Active = "ACTIVE",
        /// `BLOCKED` (see its `sub_status`).
        Blocked = "BLOCKED",
        /// `CANCELLED`: closed.
        Cancelled = "CANCELLED",
        /// `PENDING_REOPEN`: closed, being reopened.
        PendingReopen = "PENDING_REOPEN",
    }
);

status!(
    /// A request-inquiry's `status`.
    RequestInquiryStatus {
        /// `PENDING`: not answered yet.
        Pending = "PENDING",
        /// `ACCEPTED`: paid.
        Accepted = "ACCEPTED",
        /// `REJECTED` by the counterparty.
        Rejected = "REJECTED",
        /// `REVOKED` by us.
        Revoked = "REVOKED",
        /// `EXPIRED` unanswered.
        Expired = "EXPIRED",
    }
);

status!(
    /// A draft-payment's `status`.
    DraftPaymentStatus {
        /// `PENDING`: waiting for the account holder in the bunq app.
        Pending = "PENDING",
        /// `ACCEPTED`: the payments were made.
        Accepted = "ACCEPTED",
        /// `REJECTED` by the account holder.
        Rejected = "REJECTED",
        /// `CANCELLED`.
        Cancelled = "CANCELLED",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_map_and_unknown_ones_are_kept() {
        let read = |s: &str| serde_json::from_str::<AccountStatus>(s).unwrap();
        assert_eq!(read(r#""ACTIVE""#), AccountStatus::Active);
        assert_eq!(
            read(r#""PENDING_ACCEPTANCE""#),
            AccountStatus::Other("PENDING_ACCEPTANCE".to_owned())
        );
        assert_eq!(
            read(r#""PENDING_ACCEPTANCE""#).as_str(),
            "PENDING_ACCEPTANCE"
        );
        assert_eq!(
            serde_json::to_string(&RequestInquiryStatus::Revoked).unwrap(),
            r#""REVOKED""#
        );
        assert_eq!(DraftPaymentStatus::Pending.to_string(), "PENDING");
    }
}
