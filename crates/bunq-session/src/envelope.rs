//! bunq's JSON envelopes: `{"Response":[{"Type":{...}}, ...], "Pagination":{...}}` for
//! success and `{"Error":[{"error_description":...}]}` for failure.
//!
//! Unknown fields are ignored everywhere; a missing `Response`, a missing object type
//! or a missing required field is an [`Error::UnexpectedResponse`] naming what is missing.
//!
//! ```
//! use bunq_session::envelope;
//!
//! #[derive(serde::Deserialize)]
//! struct OauthClient { id: u64, status: String }
//!
//! let body = br#"{"Response":[{"OauthClient":{"id":7,"status":"ACTIVE","extra":1}}]}"#;
//! let client: OauthClient = envelope::single(body, "OauthClient")?;
//! assert_eq!((client.id, client.status.as_str()), (7, "ACTIVE"));
//! assert_eq!(envelope::id(br#"{"Response":[{"Id":{"id":42}}]}"#)?, 42);
//! # Ok::<(), bunq_session::Error>(())
//! ```

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// The links of a paginated list. bunq lists newest first: `older_url` leads to the
/// next page back, `newer_url` to newer items, `future_url` is where new items will
/// appear.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Pagination {
    /// Link to the items after the newest one shown (poll it for new items).
    #[serde(default)]
    pub future_url: Option<String>,
    /// Link to the previous, newer page.
    #[serde(default)]
    pub newer_url: Option<String>,
    /// Link to the next, older page.
    #[serde(default)]
    pub older_url: Option<String>,
}

/// One page of a list: its items and its links.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items of the requested type, in bunq's order.
    pub items: Vec<T>,
    /// The page's links, if bunq sent any.
    pub pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: Option<Vec<Map<String, Value>>>,
    #[serde(rename = "Pagination", default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    #[serde(rename = "Error", default)]
    error: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct IdObject {
    id: u64,
}

/// The `Response` items, each a one-key map from type name to object.
type Items = Vec<Map<String, Value>>;

fn parse(body: &[u8]) -> Result<(Items, Option<Pagination>), Error> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| Error::unexpected("bunq envelope", format!("not a bunq response: {e}")))?;
    let response = envelope
        .response
        .ok_or_else(|| Error::unexpected("bunq envelope", "missing \"Response\" array"))?;
    Ok((response, envelope.pagination))
}

/// Every object of the `Response` array as `(type, object)`, in order: e.g.
/// `("Id", {"id":1})`, `("Token", {...})`, `("UserPerson", {...})`.
pub fn decode_items(body: &[u8]) -> Result<Vec<(String, Value)>, Error> {
    let (response, _) = parse(body)?;
    Ok(response.into_iter().flat_map(Map::into_iter).collect())
}

/// Decodes one object of type `T`, reporting which type and field was wrong.
pub fn decode_object<T: DeserializeOwned>(type_name: &str, object: Value) -> Result<T, Error> {
    serde_json::from_value(object).map_err(|e| Error::unexpected(type_name, e.to_string()))
}

/// The first object of type `type_name` in the `Response` array.
pub fn single<T: DeserializeOwned>(body: &[u8], type_name: &str) -> Result<T, Error> {
    let (response, _) = parse(body)?;
    let object = response
        .into_iter()
        .find_map(|mut item| item.remove(type_name))
        .ok_or_else(|| {
            Error::unexpected(
                "bunq envelope",
                format!("no {type_name} object in \"Response\""),
            )
        })?;
    decode_object(type_name, object)
}

/// Every object of type `type_name` (others are skipped) and the `Pagination`.
pub fn list<T: DeserializeOwned>(body: &[u8], type_name: &str) -> Result<Page<T>, Error> {
    let (response, pagination) = parse(body)?;
    let items = response
        .into_iter()
        .filter_map(|mut item| item.remove(type_name))
        .map(|object| decode_object(type_name, object))
        .collect::<Result<_, _>>()?;
    Ok(Page { items, pagination })
}

/// The `id` of the `{"Id":{"id":N}}` object that bunq returns for a create.
pub fn id(body: &[u8]) -> Result<u64, Error> {
    single::<IdObject>(body, "Id").map(|o| o.id)
}

/// Every `error_description` of an error body, in order; empty if the body is not
/// bunq's error shape.
pub fn error_descriptions(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .map(|e| {
            e.error
                .into_iter()
                .filter_map(|item| item.error_description)
                .collect()
        })
        .unwrap_or_default()
}

/// Turns a pagination link (`/v1/user/1/payment?older_id=5`, or a full URL) into a
/// path relative to `api_base`, as [`ApiRequest`](crate::ApiRequest) takes it. `None` if
/// the link points outside the API base (it would carry our session token elsewhere).
pub fn relative_link(link: &str, api_base: &str) -> Option<String> {
    let base = api_base.trim_end_matches('/');
    if let Some(rest) = link.strip_prefix(base) {
        return rest.strip_prefix('/').map(str::to_owned);
    }
    if link.contains("://") {
        return None;
    }
    // A path link: strip the API base's own path (`/v1`).
    let base_path = base
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    link.strip_prefix(base_path)
        .and_then(|rest| rest.strip_prefix('/'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Account {
        id: u64,
        description: String,
    }

    #[test]
    fn list_decodes_items_and_pagination_ignoring_unknown_fields() {
        let body = br#"{"Response":[
            {"MonetaryAccountBank":{"id":1,"description":"a","unknown":true}},
            {"MonetaryAccountBank":{"id":2,"description":"b"}}],
            "Pagination":{"future_url":null,"newer_url":null,"older_url":"/v1/user/1/monetary-account-bank?older_id=2"}}"#;
        let page: Page<Account> = list(body, "MonetaryAccountBank").unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[1].description, "b");
        assert_eq!(
            page.pagination.unwrap().older_url.as_deref(),
            Some("/v1/user/1/monetary-account-bank?older_id=2")
        );
    }

    #[test]
    fn missing_field_names_type_and_field() {
        let body = br#"{"Response":[{"MonetaryAccountBank":{"id":1}}]}"#;
        let err = single::<Account>(body, "MonetaryAccountBank").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("MonetaryAccountBank") && text.contains("description"),
            "{text}"
        );
    }

    #[test]
    fn missing_type_and_missing_response_are_clear_errors() {
        let err = single::<Account>(br#"{"Response":[{"Id":{"id":1}}]}"#, "Token").unwrap_err();
        assert!(err.to_string().contains("no Token object"), "{err}");
        let err = decode_items(br#"{"Error":[]}"#).unwrap_err();
        assert!(err.to_string().contains("missing \"Response\""), "{err}");
        assert!(decode_items(b"<html>").is_err());
    }

    #[test]
    fn decodes_session_server_fixture_items_in_order() {
        let body = include_bytes!("../../../fixtures/session_server_user_person.json");
        let types: Vec<String> = decode_items(body)
            .unwrap()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(types, ["Id", "Token", "UserPerson"]);
        assert_eq!(id(body).unwrap(), 25536694);
    }

    #[test]
    fn error_descriptions_come_in_order_and_tolerate_other_bodies() {
        let body = br#"{"Error":[{"error_description":"One.","error_description_translated":"Een."},{"error_description":"Two."}]}"#;
        assert_eq!(error_descriptions(body), ["One.", "Two."]);
        assert!(error_descriptions(b"not json").is_empty());
    }

    #[test]
    fn relative_link_strips_the_api_base_and_refuses_foreign_hosts() {
        let base = "http://127.0.0.1:8080/v1";
        assert_eq!(
            relative_link("/v1/user/1/payment?older_id=3", base).as_deref(),
            Some("user/1/payment?older_id=3")
        );
        assert_eq!(
            relative_link("http://127.0.0.1:8080/v1/user/1", base).as_deref(),
            Some("user/1")
        );
        assert_eq!(relative_link("https://evil.example/v1/user/1", base), None);
    }
}
