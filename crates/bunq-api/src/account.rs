//! Monetary accounts of every kind, through bunq's generic endpoint
//! (`GET /user/{id}/monetary-account`), where each item is wrapped in its kind's name:
//! `MonetaryAccountBank`, `MonetaryAccountSavings`, `MonetaryAccountJoint`,
//! `MonetaryAccountExternal`, and kinds this crate does not model (kept as
//! [`MonetaryAccount::Other`]). The typed endpoints (`monetary-account-bank`, ...) each
//! show one kind only: an application listing them would miss savings and joint
//! accounts.

use bunq_session::envelope::{self, Page, Pagination};
use bunq_session::{ContextStore, Error};
use futures::TryStreamExt as _;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::pages::{PageSize, pages};
use crate::{AccountStatus, Amount, Currency, LabelUser, MonetaryAccountId, Pointer, UserApi};

/// At most this many accounts are collected by [`UserApi::monetary_accounts`] (100 full
/// pages): past it, a server that keeps sending `older_url` is answered with an error.
const MAX_ACCOUNTS: usize = 100 * 200;

/// What every kind of account has. Fields bunq may omit are optional; unknown fields are
/// ignored.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AccountInfo {
    /// bunq's id of the account.
    pub id: MonetaryAccountId,
    /// When it was created (bunq's `YYYY-MM-DD hh:mm:ss.ffffff`, UTC).
    #[serde(default)]
    pub created: Option<String>,
    /// When it last changed.
    #[serde(default)]
    pub updated: Option<String>,
    /// The account's name.
    #[serde(default)]
    pub description: Option<String>,
    /// Its currency.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// `ACTIVE`, `BLOCKED`, `CANCELLED`, `PENDING_REOPEN`, ...
    #[serde(default)]
    pub status: Option<AccountStatus>,
    /// More on the status (`NONE`, `COMPLETELY`, `ONLY_ACCEPTING_INCOMING`, ...).
    #[serde(default)]
    pub sub_status: Option<String>,
    /// The available balance.
    #[serde(default)]
    pub balance: Option<Amount>,
    /// The daily spending limit.
    #[serde(default)]
    pub daily_limit: Option<Amount>,
    /// Its aliases (the IBAN among them).
    #[serde(default)]
    pub alias: Vec<Pointer>,
    /// bunq's public id of the account.
    #[serde(default)]
    pub public_uuid: Option<String>,
    /// The id of the user who owns it.
    #[serde(default)]
    pub user_id: Option<u64>,
    /// The legal name of its holder.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl AccountInfo {
    /// The account's IBAN, if it has one.
    pub fn iban(&self) -> Option<&str> {
        self.alias
            .iter()
            .find(|p| *p.kind() == crate::PointerType::Iban)
            .map(Pointer::value)
    }

    /// Whether bunq reports the account `ACTIVE`.
    pub fn is_active(&self) -> bool {
        self.status == Some(AccountStatus::Active)
    }
}

/// A current account (`MonetaryAccountBank`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MonetaryAccountBank {
    /// What every account has.
    #[serde(flatten)]
    pub info: AccountInfo,
}

/// A savings account (`MonetaryAccountSavings`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MonetaryAccountSavings {
    /// What every account has.
    #[serde(flatten)]
    pub info: AccountInfo,
    /// The amount being saved towards.
    #[serde(default)]
    pub savings_goal: Option<Amount>,
    /// The share of the goal reached, as bunq reports it.
    #[serde(default)]
    pub savings_goal_progress: Option<f64>,
}

/// A co-owner of a joint account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct CoOwner {
    /// Who.
    #[serde(default)]
    pub alias: Option<LabelUser>,
    /// `ACCEPTED`, `REJECTED`, `PENDING` or `REVOKED`.
    #[serde(default)]
    pub status: Option<String>,
}

/// An account shared by several users (`MonetaryAccountJoint`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MonetaryAccountJoint {
    /// What every account has.
    #[serde(flatten)]
    pub info: AccountInfo,
    /// The users who share it.
    #[serde(default, rename = "all_co_owner")]
    pub co_owners: Vec<CoOwner>,
    /// How far the balance may go below zero.
    #[serde(default)]
    pub overdraft_limit: Option<Amount>,
}

/// Another bank's account connected to bunq (`MonetaryAccountExternal`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MonetaryAccountExternal {
    /// What every account has.
    #[serde(flatten)]
    pub info: AccountInfo,
    /// The service it is connected through.
    #[serde(default)]
    pub service: Option<String>,
}

/// One monetary account of any kind, as the generic endpoint lists it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MonetaryAccount {
    /// `MonetaryAccountBank`.
    Bank(MonetaryAccountBank),
    /// `MonetaryAccountSavings`.
    Savings(MonetaryAccountSavings),
    /// `MonetaryAccountJoint`.
    Joint(MonetaryAccountJoint),
    /// `MonetaryAccountExternal`.
    External(MonetaryAccountExternal),
    /// A kind this crate does not model (`MonetaryAccountLight`, `MonetaryAccountCard`,
    /// ...): its common fields, and the whole object as bunq sent it.
    Other {
        /// bunq's name of the kind.
        type_name: String,
        /// What every account has.
        info: AccountInfo,
        /// The object as bunq sent it.
        object: Value,
    },
}

impl MonetaryAccount {
    /// What every kind has.
    pub fn info(&self) -> &AccountInfo {
        match self {
            Self::Bank(a) => &a.info,
            Self::Savings(a) => &a.info,
            Self::Joint(a) => &a.info,
            Self::External(a) => &a.info,
            Self::Other { info, .. } => info,
        }
    }

    /// bunq's id of the account.
    pub fn id(&self) -> MonetaryAccountId {
        self.info().id
    }

    /// bunq's name of its kind, e.g. `"MonetaryAccountSavings"`.
    pub fn type_name(&self) -> &str {
        match self {
            Self::Bank(_) => "MonetaryAccountBank",
            Self::Savings(_) => "MonetaryAccountSavings",
            Self::Joint(_) => "MonetaryAccountJoint",
            Self::External(_) => "MonetaryAccountExternal",
            Self::Other { type_name, .. } => type_name,
        }
    }

    /// Whether bunq reports the account `ACTIVE`.
    pub fn is_active(&self) -> bool {
        self.info().is_active()
    }

    /// Decodes one item of the generic list, `(type name, object)`.
    fn decode(type_name: String, object: Value) -> Result<Self, Error> {
        use envelope::decode_object as decode;
        Ok(match type_name.as_str() {
            "MonetaryAccountBank" => Self::Bank(decode(&type_name, object)?),
            "MonetaryAccountSavings" => Self::Savings(decode(&type_name, object)?),
            "MonetaryAccountJoint" => Self::Joint(decode(&type_name, object)?),
            "MonetaryAccountExternal" => Self::External(decode(&type_name, object)?),
            _ => Self::Other {
                info: decode(&type_name, object.clone())?,
                type_name,
                object,
            },
        })
    }
}

/// An item of bunq's `Response` array, or a callback's `object`: one account wrapped in
/// its kind's name, `{"MonetaryAccountSavings": {...}}`.
impl<'de> Deserialize<'de> for MonetaryAccount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut entries = Map::<String, Value>::deserialize(d)?.into_iter();
        match (entries.next(), entries.next()) {
            (Some((type_name, object)), None) => {
                Self::decode(type_name, object).map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom(
                "a monetary account is one object wrapped in its kind's name",
            )),
        }
    }
}

/// Every account of a generic-endpoint answer, with the `Pagination`.
pub(crate) fn decode_page(body: &[u8]) -> Result<Page<MonetaryAccount>, Error> {
    #[derive(Deserialize)]
    struct Links {
        #[serde(rename = "Pagination", default)]
        pagination: Option<Pagination>,
    }
    let items = envelope::decode_items(body)?
        .into_iter()
        .map(|(type_name, object)| MonetaryAccount::decode(type_name, object))
        .collect::<Result<_, _>>()?;
    // `decode_items` has read the body as a bunq envelope already.
    let pagination = serde_json::from_slice::<Links>(body)
        .ok()
        .and_then(|l| l.pagination);
    Ok(Page { items, pagination })
}

/// Active accounts first, the rest after; bunq's order kept within each group.
pub(crate) fn active_first(accounts: &mut [MonetaryAccount]) {
    accounts.sort_by_key(|a| !a.is_active());
}

impl<S: ContextStore> UserApi<S> {
    /// Every monetary account of the user, of every kind (bank, savings, joint,
    /// external, and kinds this crate does not model), active ones first; all pages of
    /// `GET /user/{id}/monetary-account`.
    pub async fn monetary_accounts(&self) -> Result<Vec<MonetaryAccount>, Error> {
        let mut stream = pages(
            self.clone(),
            "monetary-account".to_owned(),
            PageSize::MAX,
            decode_page,
        );
        let mut accounts = Vec::new();
        while let Some(account) = stream.try_next().await? {
            if accounts.len() == MAX_ACCOUNTS {
                return Err(Error::UnexpectedResponse {
                    context: "GET monetary-account".to_owned(),
                    detail: format!("more than {MAX_ACCOUNTS} accounts"),
                });
            }
            accounts.push(account);
        }
        active_first(&mut accounts);
        Ok(accounts)
    }

    /// One monetary account of the user, of any kind
    /// (`GET /user/{id}/monetary-account/{aid}`).
    pub async fn monetary_account(&self, id: MonetaryAccountId) -> Result<MonetaryAccount, Error> {
        let body = self.get(&format!("monetary-account/{id}")).await?;
        decode_page(&body)?
            .items
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnexpectedResponse {
                context: "GET monetary-account".to_owned(),
                detail: "no monetary account in \"Response\"".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_decodes_into_its_variant_and_unknown_kinds_are_kept() {
        let body = br#"{"Response":[
            {"MonetaryAccountBank":{"id":1,"status":"ACTIVE","alias":[{"type":"EMAIL","value":"a@b.nl"},{"type":"IBAN","value":"NL01BUNQ","name":"J"}]}},
            {"MonetaryAccountSavings":{"id":2,"savings_goal":{"value":"10.00","currency":"EUR"},"savings_goal_progress":0.5}},
            {"MonetaryAccountJoint":{"id":3,"all_co_owner":[{"alias":{"display_name":"Co"},"status":"ACCEPTED"}]}},
            {"MonetaryAccountExternal":{"id":4,"service":"OPEN_BANKING"}},
            {"MonetaryAccountLight":{"id":5,"status":"CANCELLED","extra":true}}],
            "Pagination":{"older_url":"/v1/user/1/monetary-account?older_id=1"}}"#;
        let page = decode_page(body).unwrap();
        let kinds: Vec<&str> = page.items.iter().map(MonetaryAccount::type_name).collect();
        assert_eq!(
            kinds,
            [
                "MonetaryAccountBank",
                "MonetaryAccountSavings",
                "MonetaryAccountJoint",
                "MonetaryAccountExternal",
                "MonetaryAccountLight"
            ]
        );
        assert_eq!(page.items[0].info().iban(), Some("NL01BUNQ"));
        let MonetaryAccount::Savings(savings) = &page.items[1] else {
            panic!("{:?}", page.items[1]);
        };
        assert_eq!(savings.savings_goal.map(|a| a.minor_units()), Some(1_000));
        let MonetaryAccount::Joint(joint) = &page.items[2] else {
            panic!("{:?}", page.items[2]);
        };
        assert_eq!(joint.co_owners[0].status.as_deref(), Some("ACCEPTED"));
        let MonetaryAccount::Other { object, info, .. } = &page.items[4] else {
            panic!("{:?}", page.items[4]);
        };
        assert_eq!((object["extra"].as_bool(), info.id), (Some(true), 5.into()));
        assert!(page.pagination.unwrap().older_url.is_some());
    }

    #[test]
    fn an_account_without_an_id_is_an_error_naming_its_kind() {
        let err = decode_page(br#"{"Response":[{"MonetaryAccountSavings":{"status":"ACTIVE"}}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("MonetaryAccountSavings"), "{err}");
    }

    #[test]
    fn active_accounts_come_first_in_bunqs_order() {
        let body = br#"{"Response":[
            {"MonetaryAccountBank":{"id":1,"status":"CANCELLED"}},
            {"MonetaryAccountSavings":{"id":2,"status":"ACTIVE"}},
            {"MonetaryAccountJoint":{"id":3}},
            {"MonetaryAccountBank":{"id":4,"status":"ACTIVE"}}]}"#;
        let mut accounts = decode_page(body).unwrap().items;
        active_first(&mut accounts);
        let ids: Vec<u64> = accounts.iter().map(|a| a.id().0).collect();
        assert_eq!(ids, [2, 4, 1, 3]);
    }
}
