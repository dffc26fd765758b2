//! Private keys: generation, PKCS#8 and PKCS#1 import, PKCS#8 export, key files, body
//! signing.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pkcs8::der::{Decode as _, SecretDocument};
use secrecy::{ExposeSecret as _, SecretBox, SecretString};

use crate::KeyFileError;

/// Why a key could not be made, read or written. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not PEM, or its base64 or DER inside is broken.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    /// The PEM holds something other than what was asked for.
    #[error("expected a PEM of type {expected}, found {found:?}")]
    WrongPemLabel {
        /// The label(s) accepted here.
        expected: &'static str,
        /// The label found.
        found: String,
    },
    /// The key is an RSA key under 2048 bits.
    #[error("RSA key of {bits} bits refused: bunq needs at least 2048")]
    TooSmall {
        /// The key's modulus size.
        bits: usize,
    },
    /// The DER parsed but is not a usable RSA key.
    #[error("key rejected: {0}")]
    Rejected(String),
    /// Key generation failed (the system's random source).
    #[error("RSA key generation failed: {0}")]
    Generation(String),
}

/// A base64 `X-Bunq-Client-Signature` value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature(String);

impl Signature {
    /// The base64 text, as sent in the header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.0)
    }
}

struct Inner {
    /// The key's name in the cache of parsed keys (`parsed_keys`): AWS-LC's parse is
    /// kept there, bounded, not here, so that 10,000 sessions do not hold 10,000.
    cache_id: u64,
    /// What a parse is made from again after the cache let it go.
    pkcs8_der: SecretBox<[u8]>,
    modulus_len: usize,
    /// Our public key parsed, made on first use (tests verifying our own signatures;
    /// a gateway never needs it).
    public: OnceLock<crate::PublicKey>,
    /// PKCS#1 v1.5 is deterministic: every empty-body request (every GET) carries the
    /// same signature, so it costs one RSA operation per key, not one per request, and
    /// a GET never needs the parsed key.
    empty_body_signature: OnceLock<Signature>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        crate::parsed_keys::forget_private(self.cache_id);
    }
}

/// An RSA-2048 private key for signing bunq requests (the installation key).
///
/// Cheap to clone (the key is shared). Its `Debug` output never shows the key. It keeps
/// its PKCS#8 DER; AWS-LC's parsed form, ~10 KB once it has signed, is kept for the
/// most recently used keys only (see [`set_parsed_key_capacity`](crate::set_parsed_key_capacity)).
#[derive(Clone)]
pub struct PrivateKey(Arc<Inner>);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("bits", &(self.0.modulus_len * 8))
            .field("pkcs8", &"[redacted]")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh RSA-2048 key from the operating system's random source.
    ///
    /// AWS-LC generates it (about 0.1 s, against seconds in the pure-Rust `rsa`
    /// crate unoptimised) and hands it over as PKCS#8, the form we store.
    pub fn generate() -> Result<Self, KeyError> {
        let generation = |e: &dyn fmt::Display| KeyError::Generation(e.to_string());
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| generation(&e))?;
        let der: Pkcs8V1Der<'static> = pair.as_der().map_err(|e| generation(&e))?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Reads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            RsaKeyPair::from_pkcs8(der).map_err(|e| rejected(&e, || modulus_bits_of_pkcs8(der)))?;
        Self::from_pair(pair, der)
    }

    /// Reads a PKCS#1 `RSAPrivateKey` DER private key (what `BEGIN RSA PRIVATE KEY`
    /// holds). AWS-LC parses it and re-encodes it as PKCS#8, the form kept and written.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            RsaKeyPair::from_der(der).map_err(|e| rejected(&e, || modulus_bits_of_pkcs1(der)))?;
        let pkcs8: Pkcs8V1Der<'static> = pair
            .as_der()
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Self::from_pair(pair, pkcs8.as_ref())
    }

    fn from_pair(pair: RsaKeyPair, pkcs8_der: &[u8]) -> Result<Self, KeyError> {
        // Checked once here, so that `public_key_pem` and `public_key` cannot fail later.
        pair.public_key()
            .as_der()
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        crate::PublicKey::from_pkcs1_der(pair.public_key().as_ref().to_vec())?;
        let key = Self(Arc::new(Inner {
            cache_id: crate::parsed_keys::new_private_id(),
            pkcs8_der: SecretBox::new(pkcs8_der.into()),
            modulus_len: pair.public_modulus_len(),
            public: OnceLock::new(),
            empty_body_signature: OnceLock::new(),
        }));
        // A key just read is about to sign (an installation, a session's first call).
        crate::parsed_keys::keep_private(key.0.cache_id, Arc::new(pair));
        Ok(key)
    }

    /// AWS-LC's parse of the key: cached, or made again from the DER.
    fn pair(&self) -> Arc<RsaKeyPair> {
        if let Some(pair) = crate::parsed_keys::cached_private(self.0.cache_id) {
            return pair;
        }
        // The same bytes were accepted by the same parser when this key was made, so a
        // refusal now would be memory corruption, not a bad key.
        #[allow(clippy::expect_used)]
        let pair = Arc::new(
            RsaKeyPair::from_pkcs8(self.0.pkcs8_der.expose_secret())
                .expect("a PKCS#8 key accepted once parses again"),
        );
        crate::parsed_keys::keep_private(self.0.cache_id, pair.clone());
        pair
    }

    /// Reads a private key PEM: PKCS#8 (`BEGIN PRIVATE KEY`, what we write and what
    /// `openssl genpkey` writes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`, older tools).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, doc) =
            SecretDocument::from_pem(pem).map_err(|e| KeyError::MalformedPem(e.to_string()))?;
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(doc.as_bytes()),
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(doc.as_bytes()),
            other => Err(KeyError::WrongPemLabel {
                expected: "PRIVATE KEY or RSA PRIVATE KEY",
                found: other.to_owned(),
            }),
        }
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> SecretString {
        SecretString::from(pem_encode("PRIVATE KEY", self.0.pkcs8_der.expose_secret()))
    }

    /// The private key as PKCS#8 DER.
    pub fn pkcs8_der(&self) -> &SecretBox<[u8]> {
        &self.0.pkcs8_der
    }

    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the
    /// form `POST /installation` takes as `client_public_key`. Written on each call
    /// (it is needed once per installation), not kept: 10,000 keys in memory would
    /// hold 4.5 MB of it.
    pub fn public_key_pem(&self) -> String {
        // `from_pair` encoded this key's public half once already.
        #[allow(clippy::expect_used)]
        let spki: PublicKeyX509Der<'static> = self
            .pair()
            .public_key()
            .as_der()
            .expect("a public key that encoded once encodes again");
        pem_encode("PUBLIC KEY", spki.as_ref())
    }

    /// The matching public key, e.g. to verify our own signatures in tests.
    pub fn public_key(&self) -> crate::PublicKey {
        self.0
            .public
            .get_or_init(|| {
                // `from_pair` accepted this key's public half once already.
                #[allow(clippy::expect_used)]
                crate::PublicKey::from_pkcs1_der(self.pair().public_key().as_ref().to_vec())
                    .expect("a public key accepted once is accepted again")
            })
            .clone()
    }

    /// Signs a request body: RSA PKCS#1 v1.5 with SHA-256, base64-encoded for
    /// `X-Bunq-Client-Signature`. The empty body's signature is cached.
    pub fn sign_body(&self, body: &[u8]) -> Signature {
        if body.is_empty() {
            return self
                .0
                .empty_body_signature
                .get_or_init(|| self.sign_uncached(body))
                .clone();
        }
        self.sign_uncached(body)
    }

    fn sign_uncached(&self, body: &[u8]) -> Signature {
        let mut sig = vec![0; self.0.modulus_len];
        // AWS-LC fails here only on a wrong-sized output buffer, which we size from the
        // key itself, or an internal failure (its own RNG for blinding), fatal anyway.
        // The `SystemRandom` is for ring's API shape; AWS-LC ignores it.
        #[allow(clippy::expect_used)]
        self.pair()
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), body, &mut sig)
            .expect("RSA signing with a correctly sized buffer");
        Signature(BASE64.encode(sig))
    }

    /// Writes the key as PKCS#8 PEM to `path` with mode 0600, atomically (see
    /// [`write_private_file`](crate::write_private_file)): a crash leaves either the old
    /// file or the new one, never half a key.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        crate::write_private_file(path, self.to_pkcs8_pem().expose_secret().as_bytes())
    }

    /// Loads a key file written by [`PrivateKey::save`] (or any PKCS#8/PKCS#1 PEM).
    ///
    /// Refuses a file that group or others may read (see
    /// [`read_private_file`](crate::read_private_file)).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KeyFileError> {
        let path = path.as_ref();
        let bytes = crate::read_private_file(path, MAX_KEY_FILE_BYTES)?;
        let invalid = |source| KeyFileError::Key {
            path: path.to_owned(),
            source,
        };
        let pem = std::str::from_utf8(&bytes)
            .map_err(|_| invalid(KeyError::MalformedPem("not UTF-8 text".into())))?;
        Self::from_pem(pem).map_err(invalid)
    }
}

/// A PEM RSA key of up to 8192 bits is well under this; anything larger is not a key
/// file (a wrong path: a log, a device) and is refused without being read whole.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// RFC 7468 PEM with 64-column lines and LF endings, byte for byte what OpenSSL
/// writes. The base64 copy is zeroized, since for a private key it is the secret.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let mut pem = String::with_capacity(der.len() * 4 / 3 + 2 * label.len() + 40);
    pem.push_str("-----BEGIN ");
    pem.push_str(label);
    pem.push_str("-----\n");
    let b64 = zeroize::Zeroizing::new(BASE64.encode(der));
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END ");
    pem.push_str(label);
    pem.push_str("-----\n");
    pem
}

/// AWS-LC's refusal as a [`KeyError`]; `bits` is asked only for a key too small, to
/// name its size.
fn rejected(e: &aws_lc_rs::error::KeyRejected, bits: impl FnOnce() -> Option<usize>) -> KeyError {
    match e.to_string().as_str() {
        "TooSmall" => KeyError::TooSmall {
            bits: bits().unwrap_or(0),
        },
        other => KeyError::Rejected(other.to_owned()),
    }
}

/// Best effort, only to name the size in the "too small" error: the modulus read from
/// the DER structure (RustCrypto's `pkcs8` and `pkcs1` parsers; no RSA arithmetic).
fn modulus_bits_of_pkcs8(der: &[u8]) -> Option<usize> {
    modulus_bits_of_pkcs1(pkcs8::PrivateKeyInfo::from_der(der).ok()?.private_key)
}

fn modulus_bits_of_pkcs1(der: &[u8]) -> Option<usize> {
    let key = pkcs1::RsaPrivateKey::from_der(der).ok()?;
    let modulus = key.modulus.as_bytes();
    let first = modulus.first()?;
    Some(modulus.len() * 8 - first.leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_the_key() {
        let key = PrivateKey::generate().unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains("redacted"), "{debug}");
        let pem = key.to_pkcs8_pem();
        let body = pem.expose_secret().lines().nth(1).unwrap().to_owned();
        assert!(!debug.contains(&body));
    }

    #[test]
    fn generated_key_is_2048_bits_and_round_trips_through_pem() {
        let key = PrivateKey::generate().unwrap();
        assert_eq!(key.0.modulus_len, 256);
        let again = PrivateKey::from_pem(key.to_pkcs8_pem().expose_secret()).unwrap();
        assert_eq!(key.public_key_pem(), again.public_key_pem());
        assert_eq!(key.sign_body(b"x"), again.sign_body(b"x"));
    }
}
