#![doc = include_str!("../README.md")]
//!
//! # Speed
//! Signing and verifying are AWS-LC's RSA (through `aws-lc-rs`, which has ring's API),
//! not ring's: on CPUs with AVX-512 IFMA, AWS-LC (like OpenSSL 3) runs the RSA-2048
//! private-key exponentiation on 52-bit IFMA lanes, which ring has no code for. It is
//! chosen at run time, so other CPUs fall back to the usual assembly.
//!
//! Measured 2026-11-29 on the 2-core build machine (AVX-512 IFMA, load 3 to 5 from
//! other builds), RSA-2048 PKCS#1 v1.5 SHA-256, six interleaved one-second rounds of a
//! release probe and `openssl speed -seconds 1 rsa2048`, best round of each:
//!
//! | | sign/s | verify/s | ÷ OpenSSL |
//! |---|---:|---:|---|
//! | OpenSSL 3.0 | 4015 | 61330 | 1 |
//! | AWS-LC (parsed key, what we use) | 4081 | 62360 | sign 1.02, verify 1.02 |
//! | AWS-LC, key re-parsed per verify | | 50718 | verify 0.83 |
//! | ring 0.17 | 1763 | 47665 | sign 0.44, verify 0.78 |
//!
//! Medians tell the same (AWS-LC sign 3300 against OpenSSL 3080). Through this crate,
//! `cargo bench -p bunq-signing --bench signing -- --measurement-time 3` then
//! `openssl speed -seconds 3 rsa2048`, twice: sign 3687 and 4006/s against 4113 and
//! 4162 (0.90, 0.96), verify 63740 and 50845/s against 61559 and 56069 (1.04, 0.91);
//! criterion reported sign +164% over the ring build it had measured before. With IFMA masked
//! (`OPENSSL_ia32cap=":~0x200000"`) AWS-LC signs about 1000/s, ring's rate: the gain is
//! the IFMA path. Hence the public key is parsed once ([`PublicKey`] holds it parsed).
//! `cargo xtask bench` on the same machine with nothing else running (18:54 UTC): sign
//! 4139/s against OpenSSL's 3380 (1.22), verify 63630/s against 56071 (1.13).
//! Reproduce with `cargo xtask bench`, or `cargo bench -p bunq-signing` beside
//! `openssl speed -seconds 3 rsa2048` run at the same time; see `docs/PERFORMANCE.md`.
//! The signature of an empty body (every GET) is computed once per key and reused.
//!
//! Building AWS-LC needs only a C compiler (as ring does): no cmake, no clang.

mod certificate;
mod key_file;
mod keys;
mod parsed_keys;
mod verify;

pub use certificate::{
    Certificate, CertificateError, Psd2Certificate, public_key_signature_message, verify_chain,
};
pub use key_file::{KeyFileError, read_private_file, write_private_file};
pub use keys::{KeyError, PrivateKey, Signature};
pub use parsed_keys::{
    DEFAULT_PARSED_KEY_CAPACITY, interned_public_key_count, parsed_key_count,
    set_parsed_key_capacity,
};
pub use verify::{PublicKey, ServerPublicKey, VerificationError};

/// The header that carries a request's signature.
pub const CLIENT_SIGNATURE_HEADER: &str = "X-Bunq-Client-Signature";
/// The header that carries a response's signature.
pub const SERVER_SIGNATURE_HEADER: &str = "X-Bunq-Server-Signature";
