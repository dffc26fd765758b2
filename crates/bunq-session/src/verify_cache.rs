//! A bounded memory of response signatures that already verified, so that an unchanged
//! response (a poll of the same list) costs a SHA-256 instead of an RSA verification.
//!
//! Why this is equivalent to verifying every time: bunq signs responses with RSA
//! PKCS#1 v1.5 over SHA-256 of the body. Verification is a pure function of (server
//! public key, body, signature): no nonce, no time, no state. A fingerprint is SHA-256
//! over the three, the key as its own SHA-256 (length-prefixed, so no two triples share
//! an encoding); an entry is
//! written only after RSA verified that exact triple over the body alone. A later
//! response is accepted from memory only if its own triple hashes to a stored
//! fingerprint, i.e. (barring a SHA-256 collision, which would also break the signature
//! scheme itself) it is byte for byte a triple that verified. A tampered body or
//! signature, or another server key, gives another fingerprint and goes to RSA.
//! Failures are never remembered, and neither are responses that only verify in bunq's
//! legacy form (which also covers the status and headers, not part of the fingerprint).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use bunq_signing::{PublicKey, VerificationError};
use ring::digest::{Context, SHA256};

type Fingerprint = [u8; 32];

/// Verified (server key, body, signature) fingerprints, first in first out.
pub(crate) struct VerifiedCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    known: HashSet<Fingerprint>,
    order: VecDeque<Fingerprint>,
}

impl VerifiedCache {
    /// A cache of at most `capacity` fingerprints (64 bytes each with the queue).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Same answer as [`PublicKey::verify_response`], from memory when this exact
    /// (key, body, signature) verified before.
    pub(crate) fn verify_response<'h>(
        &self,
        key: &PublicKey,
        status: u16,
        headers: impl IntoIterator<Item = (&'h str, &'h str)>,
        body: &[u8],
        signature_b64: &str,
    ) -> Result<(), VerificationError> {
        let fingerprint = fingerprint(key.sha256(), body, signature_b64);
        if self.contains(&fingerprint) {
            return Ok(());
        }
        // The body-only form first, as bunq signs today: only that form may be
        // remembered (the legacy form depends on the status and headers too).
        if key.verify_body(body, signature_b64).is_ok() {
            self.insert(fingerprint);
            return Ok(());
        }
        key.verify_response(status, headers, body, signature_b64)
    }

    fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.entries
            .lock()
            .map(|e| e.known.contains(fingerprint))
            .unwrap_or(false)
    }

    fn insert(&self, fingerprint: Fingerprint) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        if !e.known.insert(fingerprint) {
            return;
        }
        e.order.push_back(fingerprint);
        while e.order.len() > self.capacity {
            if let Some(oldest) = e.order.pop_front() {
                e.known.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.known.len()).unwrap_or(0)
    }
}

/// The key enters as its SHA-256 (computed once per key), not its 270-byte DER: the
/// same identity, four fewer SHA-256 blocks per response.
fn fingerprint(key_sha256: &[u8; 32], body: &[u8], signature_b64: &str) -> Fingerprint {
    let mut ctx = Context::new(&SHA256);
    for part in [key_sha256.as_slice(), signature_b64.as_bytes(), body] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunq_signing::PrivateKey;

    fn keys() -> (PrivateKey, PublicKey) {
        let private = PrivateKey::generate().expect("key");
        let public = private.public_key();
        (private, public)
    }

    fn verify(
        cache: &VerifiedCache,
        key: &PublicKey,
        body: &[u8],
        sig: &str,
    ) -> Result<(), VerificationError> {
        cache.verify_response(key, 200, [], body, sig)
    }

    #[test]
    fn tampered_body_or_signature_is_rejected_after_the_original_verified() {
        let (private, public) = keys();
        let cache = VerifiedCache::new(16);
        let body = br#"{"Response":[{"Id":{"id":1}}]}"#;
        let sig = private.sign_body(body);
        assert!(verify(&cache, &public, body, sig.as_str()).is_ok());
        assert_eq!(cache.len(), 1, "a verified triple is remembered");
        // The same again is a hit ...
        assert!(verify(&cache, &public, body, sig.as_str()).is_ok());
        // ... but one changed byte of the body, or of the signature, is not.
        let tampered_body = br#"{"Response":[{"Id":{"id":2}}]}"#;
        assert!(verify(&cache, &public, tampered_body, sig.as_str()).is_err());
        let mut other_sig = sig.as_str().as_bytes().to_vec();
        other_sig[10] = if other_sig[10] == b'A' { b'B' } else { b'A' };
        let other_sig = String::from_utf8(other_sig).expect("ascii");
        assert!(verify(&cache, &public, body, &other_sig).is_err());
        assert_eq!(cache.len(), 1, "failures are never remembered");
    }

    #[test]
    fn a_hit_needs_the_same_server_key() {
        let (private, public) = keys();
        let (_, stranger) = keys();
        let cache = VerifiedCache::new(16);
        let body = b"{}";
        let sig = private.sign_body(body);
        assert!(verify(&cache, &public, body, sig.as_str()).is_ok());
        assert!(verify(&cache, &stranger, body, sig.as_str()).is_err());
    }

    #[test]
    fn holds_at_most_its_capacity_oldest_out_first() {
        let (private, public) = keys();
        let cache = VerifiedCache::new(2);
        let bodies: [&[u8]; 3] = [b"1", b"2", b"3"];
        for body in bodies {
            let sig = private.sign_body(body);
            assert!(verify(&cache, &public, body, sig.as_str()).is_ok());
        }
        assert_eq!(cache.len(), 2);
        let first = fingerprint(public.sha256(), b"1", private.sign_body(b"1").as_str());
        assert!(!cache.contains(&first), "the oldest entry left first");
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let (private, public) = keys();
        let cache = VerifiedCache::new(0);
        let sig = private.sign_body(b"x");
        assert!(verify(&cache, &public, b"x", sig.as_str()).is_ok());
        assert_eq!(cache.len(), 0);
    }
}
