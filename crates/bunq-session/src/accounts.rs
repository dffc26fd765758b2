//! Typed conveniences for what applications do first: who is the user, which accounts.

use serde::Deserialize;
use serde_json::Value;

use crate::client::ApiRequest;
use crate::envelope::{self, relative_link};
use crate::{ContextStore, CredentialId, Error, SessionManager, UserKind};

/// Upper bound on pages followed, so a server that keeps sending `older_url` cannot
/// keep us looping.
const MAX_PAGES: usize = 100;
/// bunq's largest page size.
const PAGE_SIZE: u32 = 200;

/// The user a session acts as (`GET /user/{id}`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct User {
    /// Which user object bunq returned.
    pub kind: UserKind,
    /// bunq's id (for OAuth sessions: the `UserApiKey` id).
    pub id: u64,
    /// The display name (for `UserApiKey`: the granting user's).
    pub display_name: Option<String>,
    /// The whole object as bunq sent it.
    pub object: Value,
}

/// An amount of money, as bunq writes it (a decimal string and an ISO currency).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Amount {
    /// E.g. `"12.50"`.
    pub value: String,
    /// E.g. `"EUR"`.
    pub currency: String,
}

/// An alias of an account (IBAN, email, phone).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Pointer {
    /// `IBAN`, `EMAIL`, `PHONE_NUMBER`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The IBAN, address or number.
    pub value: String,
    /// The holder's name, when bunq gives one.
    #[serde(default)]
    pub name: Option<String>,
}

/// A bank account (`MonetaryAccountBank`). Fields bunq may omit are optional; unknown
/// fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MonetaryAccountBank {
    /// bunq's id of the account.
    pub id: u64,
    /// The account's name.
    #[serde(default)]
    pub description: Option<String>,
    /// Its currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// `ACTIVE`, `BLOCKED`, `CANCELLED`, `PENDING_REOPEN`.
    #[serde(default)]
    pub status: Option<String>,
    /// The balance.
    #[serde(default)]
    pub balance: Option<Amount>,
    /// Its aliases (the IBAN among them).
    #[serde(default)]
    pub alias: Vec<Pointer>,
}

impl MonetaryAccountBank {
    /// The account's IBAN, if it has one.
    pub fn iban(&self) -> Option<&str> {
        self.alias
            .iter()
            .find(|p| p.kind == "IBAN")
            .map(|p| p.value.as_str())
    }
}

const USER_TYPES: [(&str, UserKind); 4] = [
    ("UserPerson", UserKind::UserPerson),
    ("UserCompany", UserKind::UserCompany),
    ("UserApiKey", UserKind::UserApiKey),
    (
        "UserPaymentServiceProvider",
        UserKind::UserPaymentServiceProvider,
    ),
];

pub(crate) fn parse_user(body: &[u8]) -> Result<User, Error> {
    for (type_name, object) in envelope::decode_items(body)? {
        let Some((_, kind)) = USER_TYPES.iter().find(|(name, _)| *name == type_name) else {
            continue;
        };
        let id = object
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::unexpected(type_name.as_str(), "missing field `id`"))?;
        let display_name = match kind {
            UserKind::UserApiKey => object
                .get("granted_by_user")
                .and_then(Value::as_object)
                .and_then(|m| m.values().next())
                .and_then(|u| u.get("display_name")),
            _ => object.get("display_name"),
        }
        .and_then(Value::as_str)
        .map(str::to_owned);
        return Ok(User {
            kind: *kind,
            id,
            display_name,
            object,
        });
    }
    Err(Error::unexpected(
        "GET user",
        "no user object in \"Response\"",
    ))
}

impl<S: ContextStore> SessionManager<S> {
    /// The user the credential's session acts as.
    pub async fn user(&self, credential: &CredentialId) -> Result<User, Error> {
        let session = self.session(credential).await?;
        let resp = self
            .request(
                credential,
                ApiRequest::get(format!("user/{}", session.user_id)),
            )
            .await?
            .into_result()?;
        parse_user(&resp.body)
    }

    /// Every bank account of the credential's user, following `older_url` pagination
    /// (at most 100 pages of 200).
    pub async fn monetary_accounts(
        &self,
        credential: &CredentialId,
    ) -> Result<Vec<MonetaryAccountBank>, Error> {
        let session = self.session(credential).await?;
        let mut path = format!(
            "user/{}/monetary-account-bank?count={PAGE_SIZE}",
            session.user_id
        );
        let mut accounts = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self
                .request(credential, ApiRequest::get(path))
                .await?
                .into_result()?;
            let page = envelope::list::<MonetaryAccountBank>(&resp.body, "MonetaryAccountBank")?;
            let empty = page.items.is_empty();
            accounts.extend(page.items);
            let next = page
                .pagination
                .and_then(|p| p.older_url)
                .and_then(|link| relative_link(&link, self.client().api_base()));
            match next {
                Some(next) if !empty => path = next,
                _ => return Ok(accounts),
            }
        }
        Err(Error::unexpected(
            "GET monetary-account-bank",
            format!("more than {MAX_PAGES} pages"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_api_key_takes_the_granting_users_display_name() {
        let body = br#"{"Response":[{"UserApiKey":{"id":5,"granted_by_user":{"UserPerson":{"id":9,"display_name":"Jodi"}}}}]}"#;
        let user = parse_user(body).unwrap();
        assert_eq!((user.kind, user.id), (UserKind::UserApiKey, 5));
        assert_eq!(user.display_name.as_deref(), Some("Jodi"));
    }

    #[test]
    fn account_decodes_with_optional_fields_missing_and_finds_iban() {
        let body = br#"{"Response":[{"MonetaryAccountBank":{"id":3,"alias":[{"type":"EMAIL","value":"a@b"},{"type":"IBAN","value":"NL01BUNQ","name":"J"}],"balance":{"value":"1.00","currency":"EUR"}}}]}"#;
        let acc: MonetaryAccountBank = envelope::single(body, "MonetaryAccountBank").unwrap();
        assert_eq!(acc.iban(), Some("NL01BUNQ"));
        assert_eq!(acc.description, None);
        assert_eq!(acc.balance.unwrap().value, "1.00");
    }
}
