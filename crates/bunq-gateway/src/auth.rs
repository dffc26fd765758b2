//! Bearer authentication of `/v1/*` callers.

use std::sync::Arc;

use http::HeaderValue;
use ring::digest::{SHA256, digest};
use secrecy::ExposeSecret as _;
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use crate::config::ApiKey;

/// The accepted bearer tokens, kept as SHA-256 digests, with who each one is.
///
/// Comparing digests in constant time, against every key without stopping early, leaks
/// neither a key's content nor its length through timing.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
    callers: Vec<Caller>,
}

/// The key a `/v1` request was accepted with: its name (for logs and the audit log)
/// and the `user_ref`s it may act on. Put in the request's extensions by the bearer
/// check.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    name: Arc<str>,
    prefixes: Arc<[String]>,
}

impl Caller {
    /// The key's configured name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name, shared (no copy per request).
    pub(crate) fn shared_name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// Whether the key is limited to some `user_ref` prefixes.
    pub(crate) fn is_restricted(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Whether the key may act on `user_ref`: always without prefixes, otherwise when it
    /// starts with one of them.
    pub(crate) fn may_act_on(&self, user_ref: &str) -> bool {
        self.prefixes.is_empty()
            || self
                .prefixes
                .iter()
                .any(|p| user_ref.starts_with(p.as_str()))
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

impl ApiKeys {
    /// Keeps the digests of `keys`, their names and prefixes.
    pub(crate) fn new(keys: &[ApiKey]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|k| sha256(k.key.expose_secret().as_bytes()))
                .collect(),
            callers: keys
                .iter()
                .map(|k| Caller {
                    name: k.name.as_str().into(),
                    prefixes: k.user_ref_prefixes.clone().into(),
                })
                .collect(),
        }
    }

    /// The key an `Authorization` header carries as a bearer token, if it is one of them.
    pub(crate) fn caller(&self, authorization: Option<&HeaderValue>) -> Option<&Caller> {
        let token = authorization.and_then(bearer_token)?;
        let presented = sha256(token);
        // Every digest is compared and the match's index selected without a branch, so
        // the time taken does not tell which key (or how many) matched.
        let mut found = u32::MAX;
        for (i, known) in self.digests.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            found.conditional_assign(&index, known.ct_eq(&presented));
        }
        self.callers.get(usize::try_from(found).ok()?)
    }

    /// Whether an `Authorization` header carries one of the keys as a bearer token.
    #[cfg(test)]
    pub(crate) fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        self.caller(authorization).is_some()
    }
}

/// Who calls, for scoping its `Idempotency-Key`s: the hex SHA-256 of its bearer token
/// (already accepted by the time this runs), never the token itself.
pub(crate) fn caller_id(authorization: Option<&HeaderValue>) -> String {
    let digest = sha256(authorization.and_then(bearer_token).unwrap_or_default());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 7235).
fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let bytes = value.as_bytes();
    let (scheme, rest) = bytes.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, key: &str, prefixes: &[&str]) -> ApiKey {
        ApiKey {
            name: name.to_owned(),
            key: key.to_owned().into(),
            user_ref_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            key("first", "first-key-0123456789", &[]),
            key("second", "second-key-0123456789", &["tenant-b-"]),
        ])
    }

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    #[test]
    fn accepts_any_configured_key() {
        assert!(keys().accepts(Some(&header("Bearer first-key-0123456789"))));
        assert!(keys().accepts(Some(&header("bearer second-key-0123456789"))));
    }

    #[test]
    fn rejects_missing_wrong_or_malformed_tokens() {
        let k = keys();
        assert!(!k.accepts(None));
        assert!(!k.accepts(Some(&header("Bearer first-key-012345678"))));
        assert!(!k.accepts(Some(&header("Basic first-key-0123456789"))));
        assert!(!k.accepts(Some(&header("first-key-0123456789"))));
        assert!(!k.accepts(Some(&header("Bearer "))));
        assert!(!k.accepts(Some(&header("Bearer"))));
    }

    #[test]
    fn names_the_matching_key_and_its_prefixes() {
        let k = keys();
        let first = k
            .caller(Some(&header("Bearer first-key-0123456789")))
            .expect("first");
        assert_eq!(first.name(), "first");
        assert!(!first.is_restricted());
        assert!(first.may_act_on("anyone"));
        let second = k
            .caller(Some(&header("Bearer second-key-0123456789")))
            .expect("second");
        assert_eq!(second.name(), "second");
        assert!(second.may_act_on("tenant-b-42"));
        assert!(!second.may_act_on("tenant-a-42"));
        assert!(!second.may_act_on("tenant-b"));
        assert!(
            k.caller(Some(&header("Bearer third-key-0123456789")))
                .is_none()
        );
    }

    #[test]
    fn debug_shows_no_key() {
        assert_eq!(format!("{:?}", keys()), "ApiKeys(2 keys)");
    }
}
