//! Key import (PEM and DER, private and public) and signature verification input: the
//! server key bunq returns at installation, key files, and `X-Bunq-Server-Signature`;
//! and PSD2 certificates and chains (PEM and DER), as the fake reads them from clients
//! (x509-cert's own chain reader panicked on empty input: bunq-signing splits chains
//! itself).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One real key, so that verification runs its whole path (RSA generation is slow).
fn server_key() -> &'static bunq_signing::PublicKey {
    static KEY: OnceLock<bunq_signing::PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        bunq_signing::PrivateKey::generate()
            .expect("key generation")
            .public_key()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = bunq_signing::PrivateKey::from_pkcs8_der(data);
    if let Ok(certificate) = bunq_signing::Certificate::from_der(data) {
        let _ = certificate.public_key();
        let _ = certificate.verify_issued_by(&certificate);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bunq_signing::PrivateKey::from_pem(text);
        let _ = bunq_signing::PublicKey::from_pem(text);
        if let Ok(chain) = bunq_signing::Certificate::chain_from_pem(text) {
            if let Some(first) = chain.first() {
                let _ = bunq_signing::verify_chain(first, &chain, std::time::SystemTime::now());
            }
        }
    }
    // The first byte splits the rest into a body and a signature header value.
    if let Some((&split, rest)) = data.split_first() {
        let at = usize::from(split).min(rest.len());
        let (body, signature) = rest.split_at(at);
        if let Ok(signature) = std::str::from_utf8(signature) {
            let _ = server_key().verify_body(body, signature);
        }
    }
});
