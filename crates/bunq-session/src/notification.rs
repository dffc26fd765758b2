//! Notification filters: where bunq sends callbacks for a user, at user level
//! (`/user/{id}/notification-filter-url`) or for one monetary account
//! (`/user/{id}/monetary-account/{aid}/notification-filter-url`).
//!
//! bunq keeps one list per place; a POST replaces it (an empty list removes every
//! filter), so [`SessionManager::set_notification_filters`] takes the whole list. bunq
//! allows at most 2 targets per category and wants HTTPS targets.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::ApiRequest;
use crate::envelope;
use crate::{ContextStore, CredentialId, Error, SessionManager};

/// One `{category, notification_target}`: bunq POSTs callbacks of `category` (e.g.
/// `PAYMENT`, `MUTATION`, `OAUTH`) to `notification_target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NotificationFilter {
    /// The category, in bunq's upper-case names.
    pub category: String,
    /// The URL bunq POSTs to.
    pub notification_target: String,
}

impl NotificationFilter {
    /// A filter for `category` to `target`.
    pub fn new(category: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            category: category.into(),
            notification_target: target.into(),
        }
    }
}

/// Where a list of filters lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterScope {
    /// Every event of the user.
    User,
    /// Events of one monetary account.
    MonetaryAccount(u64),
}

fn path(user_id: u64, scope: FilterScope) -> String {
    match scope {
        FilterScope::User => format!("user/{user_id}/notification-filter-url"),
        FilterScope::MonetaryAccount(a) => {
            format!("user/{user_id}/monetary-account/{a}/notification-filter-url")
        }
    }
}

/// The `NotificationFilterUrl` objects of an answer; other objects are skipped.
fn parse_filters(body: &[u8]) -> Result<Vec<NotificationFilter>, Error> {
    envelope::decode_items(body)?
        .into_iter()
        .filter(|(name, _)| name == "NotificationFilterUrl")
        .map(|(name, object)| envelope::decode_object(&name, object))
        .collect()
}

impl<S: ContextStore> SessionManager<S> {
    /// The filters of the credential's user at `scope`.
    pub async fn notification_filters(
        &self,
        credential: &CredentialId,
        scope: FilterScope,
    ) -> Result<Vec<NotificationFilter>, Error> {
        let session = self.session(credential).await?;
        let resp = self
            .request(credential, ApiRequest::get(path(session.user_id, scope)))
            .await?
            .into_result()?;
        parse_filters(&resp.body)
    }

    /// Replaces the filters of the credential's user at `scope` with `filters` (empty:
    /// removes them all); returns them as bunq stored them. A POST, so the client does
    /// not retry it; sending it again yourself is safe (it sets a whole list).
    pub async fn set_notification_filters(
        &self,
        credential: &CredentialId,
        scope: FilterScope,
        filters: &[NotificationFilter],
    ) -> Result<Vec<NotificationFilter>, Error> {
        let session = self.session(credential).await?;
        let body = json!({ "notification_filters": filters });
        let req = ApiRequest::post_json(path(session.user_id, scope), &body);
        let resp = self.request(credential, req).await?.into_result()?;
        parse_filters(&resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filters_and_skips_other_objects() {
        let body = br#"{"Response":[{"NotificationFilterUrl":{"id":1,"category":"PAYMENT","notification_target":"https://a/x"}},{"Id":{"id":3}}]}"#;
        assert_eq!(
            parse_filters(body).unwrap(),
            vec![NotificationFilter::new("PAYMENT", "https://a/x")]
        );
        assert!(parse_filters(br#"{"Response":[{"NotificationFilterUrl":{"id":1}}]}"#).is_err());
    }

    #[test]
    fn paths_for_user_and_account() {
        assert_eq!(path(5, FilterScope::User), "user/5/notification-filter-url");
        assert_eq!(
            path(5, FilterScope::MonetaryAccount(7)),
            "user/5/monetary-account/7/notification-filter-url"
        );
    }
}
