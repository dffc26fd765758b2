//! The `state` parameter: what is kept while the end user is at bunq, and where.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

/// How many random bytes a fresh state carries: 256 bits, twice the 128 the issue asks.
pub const STATE_BYTES: usize = 32;

/// The length of a state [`State::generate`] issues: [`STATE_BYTES`] in base64url
/// without padding.
pub const STATE_LEN: usize = (STATE_BYTES * 4).div_ceil(3);

/// The OAuth `state` value: an unguessable, single-use token that ties a callback to the
/// authorization request it answers (and so defeats login CSRF).
///
/// A state is a bearer secret until it is consumed, so `Debug` redacts it and there is no
/// `Display`; [`State::secret`] hands it out where it must go on the wire.
#[derive(Clone)]
pub struct State(SecretString);

impl State {
    /// A fresh state: [`STATE_BYTES`] bytes from the operating system's CSPRNG (ring's
    /// `SystemRandom`), base64url without padding, so it is URL-safe as is.
    pub fn generate() -> Result<Self, crate::OAuthError> {
        let mut bytes = [0u8; STATE_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| crate::OAuthError::Random)?;
        Ok(Self(SecretString::from(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        )))
    }

    /// Wraps a state received in a callback (or one made elsewhere).
    pub fn new(state: impl Into<String>) -> Self {
        Self(SecretString::from(state.into()))
    }

    /// The state itself, for the authorize URL.
    pub fn secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether this state has the shape [`State::generate`] gives every state it issues:
    /// [`STATE_LEN`] characters of base64url (`A-Z a-z 0-9 - _`). A callback's state
    /// without it cannot be one of ours, and is refused before the store is asked (a
    /// lookup takes a write transaction, and anyone can send a callback).
    pub fn has_issued_shape(&self) -> bool {
        let s = self.secret().as_bytes();
        s.len() == STATE_LEN
            && s.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    }

    /// The key this state is stored under.
    pub fn key(&self) -> StateKey {
        StateKey::for_state(self)
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("State([redacted])")
    }
}

impl From<String> for State {
    fn from(state: String) -> Self {
        Self::new(state)
    }
}

impl From<&str> for State {
    fn from(state: &str) -> Self {
        Self::new(state)
    }
}

/// The storage key of a state: the lowercase hex SHA-256 of the state string.
///
/// Stores never see the state itself, only this digest, so a leaked table of pending
/// states cannot be replayed, and a lookup by digest leaks nothing useful through timing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateKey(pub String);

impl StateKey {
    /// The key of `state`: lowercase hex SHA-256 of its bytes.
    pub fn for_state(state: &State) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, state.secret().as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
        }
        Self(hex)
    }

    /// The digest as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares two keys in constant time. A store finds a state by its key, which may
    /// go through an index or a collation; checking the key it returns against the one
    /// recomputed from the callback, without an early exit, makes sure what was found is
    /// exactly what was asked for and leaks no prefix length through timing.
    pub fn ct_eq(&self, other: &StateKey) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

/// What the application attached to a state when it sent the user to bunq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateContext {
    /// The application's reference of the end user (e.g. the gateway's `user_ref`).
    pub user_ref: String,
    /// Where to send the end user after the callback, if anywhere.
    pub return_to: Option<String>,
    /// Whether the consent may come from another bunq account than the one the user is
    /// connected with (replacing it); without it such a consent is refused.
    #[serde(default)]
    pub replace: bool,
}

/// A state waiting for its callback.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingState {
    /// The digest the state is stored under.
    pub key: StateKey,
    /// The application's context.
    pub context: StateContext,
    /// When it was issued.
    pub created_at: SystemTime,
    /// After this instant the callback is refused.
    pub expires_at: SystemTime,
}

/// What [`StateStore::take`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The state was pending and is now consumed; this caller is the only one to see it.
    Taken(PendingState),
    /// The state was consumed before (a replay). Stores remember consumed states at least
    /// until they expire, so that a replay is told apart from a forgery.
    AlreadyTaken,
    /// No such state (never issued, or expired and swept).
    Unknown,
}

/// A failure of the storage behind a [`StateStore`]; the source says what.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StateStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Storage of pending states with atomic take-once semantics.
pub trait StateStore: Send + Sync + 'static {
    /// Records a freshly issued state.
    fn insert(
        &self,
        state: &PendingState,
    ) -> impl Future<Output = Result<(), StateStoreError>> + Send;

    /// Atomically consumes the state stored under `key`: of any number of concurrent
    /// callers, exactly one gets [`TakeOutcome::Taken`]. Expiry is the caller's to check
    /// (it returns the state's `expires_at`).
    fn take(
        &self,
        key: &StateKey,
    ) -> impl Future<Output = Result<TakeOutcome, StateStoreError>> + Send;

    /// Forgets states (pending or consumed) that expired before `now`; returns how many.
    fn sweep_expired(
        &self,
        now: SystemTime,
    ) -> impl Future<Output = Result<u64, StateStoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_state_is_url_safe_and_carries_256_bits() {
        let state = State::generate().unwrap();
        assert_eq!(state.secret().len(), 43);
        assert!(
            state
                .secret()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(state.secret())
            .unwrap();
        assert_eq!(raw.len(), STATE_BYTES);
    }

    #[test]
    fn only_the_shape_of_an_issued_state_passes() {
        assert_eq!(STATE_LEN, 43);
        for _ in 0..64 {
            assert!(State::generate().unwrap().has_issued_shape());
        }
        let ok = "A".repeat(42);
        for bad in [
            String::new(),
            ok.clone(),
            format!("{ok}AA"),
            format!("{ok}="),
            format!("{ok}+"),
            format!("{ok}/"),
            format!("{ok}\u{0}"),
            format!("{ok}\n"),
            format!("{}é", "A".repeat(41)),
            "A".repeat(100_000),
        ] {
            assert!(!State::new(bad.clone()).has_issued_shape(), "{bad:?}");
        }
        assert!(State::new(format!("{ok}_")).has_issued_shape());
    }

    #[test]
    fn generated_states_differ() {
        let a = State::generate().unwrap();
        let b = State::generate().unwrap();
        assert_ne!(a.secret(), b.secret());
    }

    #[test]
    fn state_key_is_hex_sha256() {
        assert_eq!(
            StateKey::for_state(&State::new("abc")).as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn state_key_ct_eq_tells_keys_apart() {
        let a = State::new("a").key();
        assert!(a.ct_eq(&State::new("a").key()));
        assert!(!a.ct_eq(&State::new("b").key()));
        assert!(!a.ct_eq(&StateKey(a.as_str().to_uppercase())));
        assert!(!a.ct_eq(&StateKey(String::new())));
    }

    #[test]
    fn state_debug_is_redacted() {
        let state = State::new("very-secret-state");
        assert!(!format!("{state:?}").contains("very-secret-state"));
    }
}
