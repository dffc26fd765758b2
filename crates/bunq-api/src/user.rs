//! Who the credential acts as (`GET /user/{id}`).

use bunq_session::{ContextStore, Error, UserKind, envelope};
use serde_json::Value;

use crate::UserApi;

/// The user a session acts as (`GET /user/{id}`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct User {
    /// Which user object bunq returned.
    pub kind: UserKind,
    /// bunq's id (for OAuth sessions: the `UserApiKey` id, the one paths use).
    pub id: u64,
    /// The display name (for `UserApiKey`: the granting user's, the person behind it).
    pub display_name: Option<String>,
    /// The whole object as bunq sent it.
    pub object: Value,
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

/// The first user object of an answer (`GET /user/{id}`, or session-server's).
pub(crate) fn parse_user(body: &[u8]) -> Result<User, Error> {
    for (type_name, object) in envelope::decode_items(body)? {
        let Some((_, kind)) = USER_TYPES.iter().find(|(name, _)| *name == type_name) else {
            continue;
        };
        let id =
            object
                .get("id")
                .and_then(Value::as_u64)
                .ok_or_else(|| Error::UnexpectedResponse {
                    context: type_name.clone(),
                    detail: "missing field `id`".to_owned(),
                })?;
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
    Err(Error::UnexpectedResponse {
        context: "GET user".to_owned(),
        detail: "no user object in \"Response\"".to_owned(),
    })
}

impl<S: ContextStore> UserApi<S> {
    /// The user the credential's session acts as (`GET /user/{id}`).
    pub async fn user(&self) -> Result<User, Error> {
        parse_user(&self.get("").await?)
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
    fn no_user_object_and_no_id_are_errors() {
        assert!(parse_user(br#"{"Response":[{"Id":{"id":1}}]}"#).is_err());
        let err = parse_user(br#"{"Response":[{"UserPerson":{"display_name":"x"}}]}"#).unwrap_err();
        assert!(err.to_string().contains("UserPerson"), "{err}");
    }
}
