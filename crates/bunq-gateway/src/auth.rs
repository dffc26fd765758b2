//! Bearer authentication of `/v1/*` callers.

use http::HeaderValue;
use ring::digest::{SHA256, digest};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

/// The accepted bearer tokens, kept as SHA-256 digests.
///
/// Comparing digests in constant time, against every key without stopping early, leaks
/// neither a key's content nor its length through timing.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
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
    /// Keeps the digests of `keys`.
    pub fn new(keys: &[SecretString]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|k| sha256(k.expose_secret().as_bytes()))
                .collect(),
        }
    }

    /// Whether an `Authorization` header carries one of the keys as a bearer token.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented = sha256(token);
        let mut ok = subtle::Choice::from(0);
        for known in &self.digests {
            ok |= known.ct_eq(&presented);
        }
        ok.into()
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

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            SecretString::from("first-key-0123456789"),
            SecretString::from("second-key-0123456789"),
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
    fn debug_shows_no_key() {
        assert_eq!(format!("{:?}", keys()), "ApiKeys(2 keys)");
    }
}
