//! The one error type of this crate: a value refused before anything is sent. Calls
//! to bunq fail with [`bunq_session::Error`], which says whether bunq may have seen them.

/// A value bunq would refuse (or misread), caught where it is built: an amount, a
/// currency, an alias, a name, a page size. Carries the reason, never the alias itself
/// (an IBAN, address or phone number is personal data that error logs should not hold).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a decimal amount as bunq writes them (`"12.50"`, `"-0.05"`, `"500"`).
    #[error("invalid amount {value:?}: {reason}")]
    Amount {
        /// The refused value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not an ISO 4217 code (three upper-case letters).
    #[error("invalid currency {0:?}: expected three upper-case letters (ISO 4217)")]
    Currency(String),
    /// A payment, request or draft needs an amount above zero.
    #[error("the amount {0} is not above zero")]
    NotPositive(crate::Amount),
    /// Not an IBAN (ISO 13616: country, check digits that verify, 15 to 34 characters).
    #[error("invalid IBAN: {0}")]
    Iban(&'static str),
    /// Not an email address.
    #[error("invalid email address: {0}")]
    Email(&'static str),
    /// Not a phone number in bunq's form (E.123 without spaces: `+31612345678`).
    #[error("invalid phone number: {0}")]
    PhoneNumber(&'static str),
    /// An empty name or one with control characters.
    #[error("invalid name: {0}")]
    Name(&'static str),
    /// A description longer than bunq takes (9,000 characters; 140 to external IBANs,
    /// which bunq checks itself).
    #[error("the description has {0} characters; bunq takes at most 9000")]
    Description(usize),
    /// A draft-payment without entries.
    #[error("a draft payment needs at least one entry")]
    NoEntries,
    /// A page size outside bunq's 1 to 200.
    #[error("page size {0} is outside 1..=200")]
    PageSize(u32),
}
