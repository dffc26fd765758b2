//! Who money goes to or comes from. We name a party with a [`Pointer`] (an IBAN, an
//! email address or a phone number); bunq shows parties back as labels
//! ([`LabelMonetaryAccount`], [`LabelUser`]) with what it knows of them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ValueError;

/// The kind of a [`Pointer`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PointerType {
    /// `IBAN`.
    Iban,
    /// `EMAIL`.
    Email,
    /// `PHONE_NUMBER`.
    PhoneNumber,
    /// Another type bunq shows on an account (we never send one).
    Other(String),
}

impl PointerType {
    /// bunq's name, e.g. `"PHONE_NUMBER"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Iban => "IBAN",
            Self::Email => "EMAIL",
            Self::PhoneNumber => "PHONE_NUMBER",
            Self::Other(name) => name,
        }
    }

    fn from_name(name: String) -> Self {
        match name.as_str() {
            "IBAN" => Self::Iban,
            "EMAIL" => Self::Email,
            "PHONE_NUMBER" => Self::PhoneNumber,
            _ => Self::Other(name),
        }
    }
}

impl fmt::Display for PointerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for PointerType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PointerType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from_name)
    }
}

/// An alias of an account: `{"type": "IBAN", "value": "NL..", "name": ".."}`. Build one
/// with [`iban`](Self::iban), [`email`](Self::email) or
/// [`phone_number`](Self::phone_number), which check the value so that a typo fails
/// here rather than as a payment bunq refuses (or, worse, sends elsewhere). Pointers
/// read from bunq (an account's `alias`) are taken as bunq wrote them.
///
/// ```
/// use bunq_api::Pointer;
///
/// let landlord = Pointer::iban("NL91 ABNA 0417 1643 00", "J. Landlord")?;
/// assert_eq!(landlord.value(), "NL91ABNA0417164300");
/// let bob = Pointer::email("bob@example.com")?.with_name("Bob")?;
/// assert_eq!(bob.name(), Some("Bob"));
/// assert!(Pointer::iban("NL91ABNA0417164301", "J. Landlord").is_err()); // check digits
/// assert!(Pointer::phone_number("0612345678").is_err()); // needs the country code
/// # Ok::<(), bunq_api::ValueError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pointer {
    #[serde(rename = "type")]
    kind: PointerType,
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl Pointer {
    /// An IBAN and its holder's name (bunq requires the name for IBANs). Spaces are
    /// dropped and letters upper-cased; the check digits must verify (ISO 13616).
    pub fn iban(iban: &str, name: &str) -> Result<Self, ValueError> {
        Ok(Self {
            kind: PointerType::Iban,
            value: normalize_iban(iban)?,
            name: Some(check_name(name)?),
        })
    }

    /// An email address (of a bunq user, or for a request by email).
    pub fn email(address: &str) -> Result<Self, ValueError> {
        Ok(Self {
            kind: PointerType::Email,
            value: check_email(address)?,
            name: None,
        })
    }

    /// A phone number with its country code, as bunq wants it (E.123 without spaces:
    /// `+31612345678`); spaces are dropped.
    pub fn phone_number(number: &str) -> Result<Self, ValueError> {
        let number: String = number.chars().filter(|c| *c != ' ').collect();
        let digits = number.strip_prefix('+').ok_or(ValueError::PhoneNumber(
            "must start with + and the country code",
        ))?;
        // E.164: at most 15 digits; fewer than 7 is no phone number anywhere.
        if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::PhoneNumber(
                "expected + and 7 to 15 digits (E.164)",
            ));
        }
        Ok(Self {
            kind: PointerType::PhoneNumber,
            value: number,
            name: None,
        })
    }

    /// The same alias with the holder's name (shown to the counterparty).
    pub fn with_name(mut self, name: &str) -> Result<Self, ValueError> {
        self.name = Some(check_name(name)?);
        Ok(self)
    }

    /// The kind of alias.
    pub fn kind(&self) -> &PointerType {
        &self.kind
    }

    /// The IBAN, address or number.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The holder's name, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

fn check_name(name: &str) -> Result<String, ValueError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ValueError::Name("empty"));
    }
    if name.chars().any(char::is_control) {
        return Err(ValueError::Name("control characters"));
    }
    Ok(name.to_owned())
}

fn normalize_iban(iban: &str) -> Result<String, ValueError> {
    let iban: String = iban
        .chars()
        .filter(|c| *c != ' ')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if !(15..=34).contains(&iban.len()) {
        return Err(ValueError::Iban("not 15 to 34 characters"));
    }
    let bytes = iban.as_bytes();
    if !bytes[..2].iter().all(u8::is_ascii_uppercase) || !bytes[2..4].iter().all(u8::is_ascii_digit)
    {
        return Err(ValueError::Iban(
            "must start with a country code and two check digits",
        ));
    }
    if !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return Err(ValueError::Iban("only letters and digits"));
    }
    // ISO 13616: the first four characters moved to the end, letters as 10..=35, the
    // whole number mod 97 is 1. Folded digit by digit, so no big integers.
    let remainder = bytes[4..].iter().chain(&bytes[..4]).fold(0u32, |r, b| {
        let value = u32::from(if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'A' + 10
        });
        let scale = if value >= 10 { 100 } else { 10 };
        (r * scale + value) % 97
    });
    if remainder != 1 {
        return Err(ValueError::Iban("the check digits do not match"));
    }
    Ok(iban)
}

fn check_email(address: &str) -> Result<String, ValueError> {
    let address = address.trim();
    if address.len() > 254 {
        return Err(ValueError::Email("longer than 254 characters"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValueError::Email("spaces or control characters"));
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(ValueError::Email("no @"));
    };
    if local.is_empty() || local.contains('@') {
        return Err(ValueError::Email("expected one @ after a local part"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(ValueError::Email("the domain is not a host name"));
    }
    Ok(address.to_owned())
}

/// A user as bunq shows it to others (`LabelUser`). Every field may be missing or `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct LabelUser {
    /// bunq's public id of the user.
    #[serde(default)]
    pub uuid: Option<String>,
    /// The name bunq shows.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The user's nickname.
    #[serde(default)]
    pub public_nick_name: Option<String>,
    /// ISO 3166-1 alpha-2 country (bunq also writes `"000"` for none).
    #[serde(default)]
    pub country: Option<String>,
}

/// A party to a payment as bunq shows it (`LabelMonetaryAccount`): the `alias` and
/// `counterparty_alias` of payments, requests and draft entries. Every field may be
/// missing or `null` (a card payment's merchant has no IBAN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct LabelMonetaryAccount {
    /// The account's IBAN.
    #[serde(default)]
    pub iban: Option<String>,
    /// The name to show for the account.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The user who holds the account.
    #[serde(default)]
    pub label_user: Option<LabelUser>,
    /// ISO 3166-1 alpha-2 country of the holder.
    #[serde(default)]
    pub country: Option<String>,
    /// Whether it is a bunq light account.
    #[serde(default)]
    pub is_light: Option<bool>,
    /// The BIC of a SWIFT payment.
    #[serde(default)]
    pub swift_bic: Option<String>,
    /// The merchant category code of a card payment.
    #[serde(default)]
    pub merchant_category_code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_are_normalized_and_their_check_digits_verified() {
        let p = Pointer::iban(" nl91 abna 0417 1643 00 ", " Jan ").unwrap();
        assert_eq!(
            (p.kind(), p.value(), p.name()),
            (&PointerType::Iban, "NL91ABNA0417164300", Some("Jan"))
        );
        assert!(Pointer::iban("GB82WEST12345698765432", "x").is_ok());
        for (bad, why) in [
            ("NL91ABNA0417164301", "the check digits do not match"),
            ("NL91ABNA04171", "not 15 to 34 characters"),
            (
                "1291ABNA0417164300",
                "must start with a country code and two check digits",
            ),
            ("NL91ABNA04171643-0", "only letters and digits"),
            ("NL91ÄBNA041716430", "only letters and digits"),
        ] {
            assert_eq!(Pointer::iban(bad, "x"), Err(ValueError::Iban(why)), "{bad}");
        }
        assert_eq!(
            Pointer::iban("NL91ABNA0417164300", "  "),
            Err(ValueError::Name("empty"))
        );
        assert_eq!(
            Pointer::iban("NL91ABNA0417164300", "a\nb"),
            Err(ValueError::Name("control characters"))
        );
    }

    #[test]
    fn emails_need_a_local_part_and_a_host() {
        assert_eq!(
            Pointer::email(" sugardaddy@bunq.com ").unwrap().value(),
            "sugardaddy@bunq.com"
        );
        assert!(Pointer::email("a.b+c@mail.example.co.uk").is_ok());
        for bad in [
            "",
            "bob",
            "@bunq.com",
            "bob@",
            "bob@localhost",
            "bob@@bunq.com",
            "bob@bunq..com",
            "bob smith@bunq.com",
            "bob@-bunq.com",
            "bob@bunq_.com",
        ] {
            assert!(
                matches!(Pointer::email(bad), Err(ValueError::Email(_))),
                "{bad}"
            );
        }
        assert!(Pointer::email(&format!("{}@bunq.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn phone_numbers_are_e164_without_spaces() {
        assert_eq!(
            Pointer::phone_number("+31 6 1234 5678").unwrap().value(),
            "+31612345678"
        );
        for bad in [
            "0612345678",
            "+31",
            "+3161234567890123",
            "+31-6-12345678",
            "+",
        ] {
            assert!(
                matches!(Pointer::phone_number(bad), Err(ValueError::PhoneNumber(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn serializes_as_bunq_reads_it_and_reads_unknown_types() {
        let p = Pointer::email("bob@example.com").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"type":"EMAIL","value":"bob@example.com"}"#
        );
        let p = Pointer::iban("NL91ABNA0417164300", "Jan").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"type":"IBAN","value":"NL91ABNA0417164300","name":"Jan"}"#
        );
        let read: Pointer =
            serde_json::from_str(r#"{"type":"URL","value":"https://bunq.me/x"}"#).unwrap();
        assert_eq!(read.kind(), &PointerType::Other("URL".to_owned()));
        assert_eq!(read.name(), None);
    }
}
