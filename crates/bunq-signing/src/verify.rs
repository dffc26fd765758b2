//! Public keys and signature verification (bunq's server key, or a client's key on the
//! server side).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer as _, PublicKeyX509Der};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaParameters};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use pkcs8::der::Document;

use crate::KeyError;
use crate::SERVER_SIGNATURE_HEADER;

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerificationError {
    /// The signature header was absent or empty.
    #[error("signature missing")]
    Missing,
    /// The signature is not valid base64.
    #[error("signature is not valid base64")]
    Base64,
    /// The signature does not match the signed bytes under this key.
    #[error("signature does not match")]
    Mismatch,
}

/// An RSA public key that verifies bunq signatures: the `server_public_key` bunq
/// returns at installation, or (for a server such as the fake) a client's
/// `client_public_key`.
///
/// Cheap to clone, and every `PublicKey` of the same key shares one parse, however it
/// was read (see the crate's memory notes): 10,000 stored contexts holding bunq's one
/// server key hold it once.
#[derive(Clone)]
pub struct PublicKey(Arc<Parsed>);

/// One parse of one public key, shared by every [`PublicKey`] of it.
pub(crate) struct Parsed {
    /// PKCS#1 `RSAPublicKey` DER, kept for [`PublicKey::to_pem`] and as the key's name.
    pkcs1_der: Vec<u8>,
    /// SHA-256 of `pkcs1_der`, for [`PublicKey::sha256`].
    sha256: [u8; 32],
    /// The key parsed once into AWS-LC's form: re-parsing it per verification (as
    /// `UnparsedPublicKey` does) cost about a fifth of the verify rate here.
    parsed: ParsedPublicKey,
}

impl Parsed {
    pub(crate) fn pkcs1_der(&self) -> &[u8] {
        &self.pkcs1_der
    }
}

impl Drop for Parsed {
    fn drop(&mut self) {
        crate::parsed_keys::forget_public(&self.pkcs1_der);
    }
}

/// bunq's server key, as returned by `POST /installation`.
pub type ServerPublicKey = PublicKey;

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("pkcs1_der_len", &self.0.pkcs1_der.len())
            .finish()
    }
}

impl PublicKey {
    /// Reads a public key PEM: SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`, what
    /// bunq sends and `openssl pkey -pubout` writes) or PKCS#1 (`-----BEGIN RSA PUBLIC
    /// KEY-----`). Refuses RSA keys under 2048 bits.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let label = pem
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-----BEGIN "))
            .and_then(|l| l.strip_suffix("-----"))
            .unwrap_or("no PEM header");
        if !matches!(label, "PUBLIC KEY" | "RSA PUBLIC KEY") {
            return Err(KeyError::WrongPemLabel {
                expected: "PUBLIC KEY or RSA PUBLIC KEY",
                found: label.to_owned(),
            });
        }
        let (_, doc) =
            Document::from_pem(pem).map_err(|e| KeyError::MalformedPem(e.to_string()))?;
        // AWS-LC reads both forms (RFC 8017 `RSAPublicKey` and RFC 5280
        // `SubjectPublicKeyInfo`) and gives the key back as PKCS#1, which is what we keep.
        let key = aws_lc_rs::rsa::PublicKey::from_der(doc.as_bytes())
            .map_err(|e| KeyError::MalformedPem(e.to_string()))?;
        let bits = RsaParameters::public_modulus_len(key.as_ref())
            .map_err(|e| KeyError::Rejected(e.to_string()))? as usize;
        if bits < 2048 {
            return Err(KeyError::TooSmall { bits });
        }
        Self::from_pkcs1_der(key.as_ref().to_vec())
    }

    /// Refuses what AWS-LC will not verify with (a modulus over 8192 bits, say), so
    /// such a key fails here with a reason rather than at every verification.
    pub(crate) fn from_pkcs1_der(pkcs1_der: Vec<u8>) -> Result<Self, KeyError> {
        crate::parsed_keys::intern_public(pkcs1_der, |pkcs1_der| {
            let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &pkcs1_der)
                .map_err(|e| KeyError::Rejected(e.to_string()))?;
            let mut sha256 = [0; 32];
            sha256.copy_from_slice(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &pkcs1_der).as_ref(),
            );
            Ok(Parsed {
                pkcs1_der,
                sha256,
                parsed,
            })
        })
        .map(Self)
    }

    /// The key as PKCS#1 `RSAPublicKey` DER: its identity in bytes, free to read (no
    /// conversion), e.g. to key a cache by server key.
    pub fn pkcs1_der(&self) -> &[u8] {
        &self.0.pkcs1_der
    }

    /// SHA-256 of [`pkcs1_der`](Self::pkcs1_der), computed once per key: the key's
    /// identity in 32 bytes, e.g. to key a cache by server key without hashing the
    /// whole key on every use.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.0.sha256
    }

    /// The key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> Result<String, KeyError> {
        let spki: PublicKeyX509Der<'static> = self
            .0
            .parsed
            .as_der()
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        Ok(crate::keys::pem_encode("PUBLIC KEY", spki.as_ref()))
    }

    /// The key as PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`), for tools that want
    /// that form.
    pub fn to_pkcs1_pem(&self) -> String {
        crate::keys::pem_encode("RSA PUBLIC KEY", &self.0.pkcs1_der)
    }

    /// Verifies a base64 signature over `body` (how requests are signed, and how bunq
    /// signs responses today).
    pub fn verify_body(&self, body: &[u8], signature_b64: &str) -> Result<(), VerificationError> {
        let signature = decode_signature(signature_b64)?;
        self.verify_raw(body, &signature)
    }

    /// Verifies a response's `X-Bunq-Server-Signature`.
    ///
    /// Accepts a signature over the body alone (current bunq) or over the legacy form:
    /// `"{status}\n"`, then each `X-Bunq-*` header except the signature itself as
    /// `"Name: value\n"` sorted by name, then `"\n"`, then the body. Header names are
    /// compared case-insensitively and written in bunq's canonical capitalisation
    /// (`X-Bunq-Client-Response-Id`), since HTTP/2 and many clients lowercase them.
    pub fn verify_response<'h>(
        &self,
        status: u16,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: &[u8],
        signature_b64: &str,
    ) -> Result<(), VerificationError> {
        let signature = decode_signature(signature_b64)?;
        if self.verify_raw(body, &signature).is_ok() {
            return Ok(());
        }
        let signed = legacy_response_bytes(status, headers, body);
        self.verify_raw(&signed, &signature)
    }

    fn verify_raw(&self, message: &[u8], signature: &[u8]) -> Result<(), VerificationError> {
        self.0
            .parsed
            .verify_sig(message, signature)
            .map_err(|_| VerificationError::Mismatch)
    }
}

fn decode_signature(signature_b64: &str) -> Result<Vec<u8>, VerificationError> {
    let trimmed = signature_b64.trim();
    if trimmed.is_empty() {
        return Err(VerificationError::Missing);
    }
    BASE64
        .decode(trimmed)
        .map_err(|_| VerificationError::Base64)
}

/// The bytes of bunq's legacy response-signing form.
fn legacy_response_bytes<'h>(
    status: u16,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    body: &[u8],
) -> Vec<u8> {
    let mut signed_headers: Vec<(String, &str)> = headers
        .into_iter()
        .filter(|(name, _)| {
            name.len() > 7
                && name[..7].eq_ignore_ascii_case("x-bunq-")
                && !name.eq_ignore_ascii_case(SERVER_SIGNATURE_HEADER)
        })
        .map(|(name, value)| (canonical_header_name(name), value))
        .collect();
    signed_headers.sort();
    let mut out = format!("{status}\n").into_bytes();
    for (name, value) in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// `x-bunq-client-response-id` → `X-Bunq-Client-Response-Id`.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_header_names() {
        assert_eq!(
            canonical_header_name("x-bunq-client-response-id"),
            "X-Bunq-Client-Response-Id"
        );
    }

    #[test]
    fn legacy_form_sorts_and_skips_the_signature_header() {
        let bytes = legacy_response_bytes(
            200,
            [
                ("x-bunq-server-signature", "sig"),
                ("X-Bunq-Client-Response-Id", "b"),
                ("content-type", "application/json"),
                ("x-bunq-client-request-id", "a"),
            ],
            b"{}",
        );
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "200\nX-Bunq-Client-Request-Id: a\nX-Bunq-Client-Response-Id: b\n\n{}"
        );
    }

    #[test]
    fn empty_and_non_base64_signatures_are_typed_errors() {
        let key = crate::PrivateKey::generate().unwrap().public_key();
        assert_eq!(key.verify_body(b"", " "), Err(VerificationError::Missing));
        assert_eq!(key.verify_body(b"", "!!!"), Err(VerificationError::Base64));
    }
}
