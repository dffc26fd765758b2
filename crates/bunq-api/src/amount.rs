//! Money as bunq writes it: `{"value": "12.50", "currency": "EUR"}`.
//!
//! The value is kept as a whole number of hundredths, so amounts compare and add
//! exactly (no floating point between a payment and its books), and written back with
//! two decimals. bunq's amounts have two decimals; a value with more is refused rather
//! than rounded, since rounding someone's money is not a parser's call.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValueError;

/// The most integer digits an amount may have: keeps every amount's hundredths inside
/// an `i64` with room to spare (bunq's largest are far below).
const MAX_INTEGER_DIGITS: usize = 15;

/// An ISO 4217 currency code, such as `EUR`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The euro, bunq's home currency.
    pub const EUR: Currency = Currency(*b"EUR");

    /// `code` if it is three upper-case ASCII letters.
    pub fn new(code: &str) -> Result<Self, ValueError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(ValueError::Currency(code.to_owned())),
        }
    }

    /// The code, e.g. `"EUR"`.
    pub fn as_str(&self) -> &str {
        // Always ASCII: `new` admits nothing else.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::new(&code).map_err(D::Error::custom)
    }
}

/// An amount of money in one currency. Negative for money leaving an account in
/// bunq's answers (a payment made reads `-12.50`); what we send (payments, requests,
/// drafts) must be above zero, which their constructors check.
///
/// ```
/// use bunq_api::{Amount, Currency};
///
/// let rent = Amount::eur("950")?;
/// assert_eq!(rent.value(), "950.00");
/// assert_eq!(rent.minor_units(), 95_000);
/// assert_eq!(Amount::new("-0.5", "EUR")?.to_string(), "-0.50 EUR");
/// assert_eq!(Amount::from_minor_units(1_250, Currency::EUR).value(), "12.50");
/// assert!(Amount::eur("12.345").is_err());
/// assert!(Amount::eur("1e3").is_err());
/// # Ok::<(), bunq_api::ValueError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Amount {
    /// Hundredths of the currency unit.
    minor: i64,
    currency: Currency,
}

impl Amount {
    /// Parses `value` (`"12.50"`, `"12.5"`, `"500"`, `"-3.10"`: digits, an optional
    /// minus, at most two decimals) in `currency`.
    pub fn new(value: &str, currency: &str) -> Result<Self, ValueError> {
        Ok(Self {
            minor: parse_minor(value)?,
            currency: Currency::new(currency)?,
        })
    }

    /// [`new`](Self::new) in euros.
    pub fn eur(value: &str) -> Result<Self, ValueError> {
        Ok(Self {
            minor: parse_minor(value)?,
            currency: Currency::EUR,
        })
    }

    /// `minor` hundredths of `currency` (cents of a euro).
    pub fn from_minor_units(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// The amount in hundredths of its currency unit.
    pub fn minor_units(&self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The value as bunq writes it: two decimals, `-` for negative (`"-0.05"`).
    pub fn value(&self) -> String {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }

    /// Whether the amount is above zero.
    pub fn is_positive(&self) -> bool {
        self.minor > 0
    }

    /// `Ok(self)` if above zero, for what we send.
    pub(crate) fn positive(self) -> Result<Self, ValueError> {
        if self.is_positive() {
            Ok(self)
        } else {
            Err(ValueError::NotPositive(self))
        }
    }
}

fn parse_minor(value: &str) -> Result<i64, ValueError> {
    let refuse = |reason| ValueError::Amount {
        value: value.to_owned(),
        reason,
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((_, "")) => return Err(refuse("no digits after the decimal point")),
        Some(parts) => parts,
        None => (digits, ""),
    };
    if whole.is_empty() {
        return Err(refuse("no digits before the decimal point"));
    }
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(refuse("only digits, one decimal point and a leading minus"));
    }
    if fraction.len() > 2 {
        return Err(refuse("more than two decimals"));
    }
    if whole.len() > MAX_INTEGER_DIGITS {
        return Err(refuse("too large"));
    }
    let parse = |digits: &str| digits.parse::<i64>().map_err(|_| refuse("too large"));
    let units = parse(whole)?;
    let hundredths = match fraction.len() {
        0 => 0,
        1 => parse(fraction)? * 10,
        _ => parse(fraction)?,
    };
    // Cannot overflow: at most 15 digits times 100.
    let minor = units * 100 + hundredths;
    Ok(if negative { -minor } else { minor })
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value(), self.currency)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

/// bunq's shape of an amount.
#[derive(Serialize, Deserialize)]
struct Wire<V> {
    value: V,
    currency: Currency,
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            value: self.value(),
            currency: self.currency,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::<String>::deserialize(d)?;
        Ok(Self {
            minor: parse_minor(&wire.value).map_err(D::Error::custom)?,
            currency: wire.currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bunqs_forms_into_hundredths() {
        for (text, minor) in [
            ("500", 50_000),
            ("12.5", 1_250),
            ("12.50", 1_250),
            ("0.01", 1),
            ("-24.95", -2_495),
            ("-0.05", -5),
            ("0", 0),
            ("007.10", 710),
        ] {
            assert_eq!(Amount::eur(text).unwrap().minor_units(), minor, "{text}");
        }
    }

    #[test]
    fn refuses_what_bunq_does_not_write() {
        for bad in [
            "", "-", ".5", "1.", "1.234", "1e3", "+1", "1,50", " 1", "1 ", "--1", "1.-5", "abc",
            "١٢",
        ] {
            assert!(
                matches!(Amount::eur(bad), Err(ValueError::Amount { .. })),
                "{bad}"
            );
        }
        assert!(Amount::eur("9999999999999999").is_err(), "16 digits");
        assert!(Amount::eur("999999999999999.99").is_ok(), "15 digits");
    }

    #[test]
    fn currency_is_three_upper_case_letters() {
        assert_eq!(Currency::new("USD").unwrap().as_str(), "USD");
        for bad in ["eur", "EU", "EURO", "E1R", "ÉUR", ""] {
            assert_eq!(
                Currency::new(bad),
                Err(ValueError::Currency(bad.to_owned()))
            );
        }
        assert!(matches!(
            Amount::new("1", "eur"),
            Err(ValueError::Currency(_))
        ));
    }

    #[test]
    fn writes_two_decimals_and_round_trips_through_json() {
        let amount = Amount::new("12.5", "EUR").unwrap();
        let json = serde_json::to_string(&amount).unwrap();
        assert_eq!(json, r#"{"value":"12.50","currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), amount);
        assert_eq!(Amount::eur("-0.05").unwrap().value(), "-0.05");
        assert!(serde_json::from_str::<Amount>(r#"{"value":"1.234","currency":"EUR"}"#).is_err());
        assert!(serde_json::from_str::<Amount>(r#"{"value":"1","currency":"eur"}"#).is_err());
    }

    #[test]
    fn only_amounts_above_zero_are_positive() {
        assert!(Amount::eur("0.01").unwrap().positive().is_ok());
        for text in ["0", "0.00", "-1"] {
            let amount = Amount::eur(text).unwrap();
            assert_eq!(amount.positive(), Err(ValueError::NotPositive(amount)));
        }
    }
}
