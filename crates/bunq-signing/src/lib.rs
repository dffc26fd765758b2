//! RSA-2048 keys, bunq request signing and response verification.
//!
//! bunq authenticates every API request after `POST /installation` by an RSA
//! PKCS#1 v1.5 SHA-256 signature of the raw request body, sent base64-encoded in
//! `X-Bunq-Client-Signature`, and signs every response body with the server key it
//! returned at installation (`X-Bunq-Server-Signature`). This crate does exactly
//! that and nothing else: no HTTP, no async, no I/O except the key-file helpers, so
//! it can sit under any HTTP client.
//!
//! ```
//! use bunq_signing::{PrivateKey, PublicKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = PrivateKey::generate()?;
//! // What `POST /installation` takes as `client_public_key`.
//! let pem = key.public_key_pem();
//! assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
//!
//! let body = br#"{"secret":"..."}"#;
//! let signature = key.sign_body(body);
//!
//! // The other side verifies with the public key.
//! let verifier = PublicKey::from_pem(pem)?;
//! verifier.verify_body(body, signature.as_str())?;
//! # Ok(())
//! # }
//! ```
//!
//! # Speed
//! Signing and verifying are ring's RSA (the same assembly as BoringSSL). Measured on
//! the 2-core build machine with `cargo bench -p bunq-signing` beside
//! `openssl speed -seconds 3 rsa2048`, in one run: see `docs/PERFORMANCE.md`.
//! The signature of an empty body (every GET) is computed once per key and reused.

mod keys;
mod verify;

pub use keys::{KeyError, KeyFileError, PrivateKey, Signature};
pub use verify::{PublicKey, ServerPublicKey, VerificationError};

/// The header that carries a request's signature.
pub const CLIENT_SIGNATURE_HEADER: &str = "X-Bunq-Client-Signature";
/// The header that carries a response's signature.
pub const SERVER_SIGNATURE_HEADER: &str = "X-Bunq-Server-Signature";
