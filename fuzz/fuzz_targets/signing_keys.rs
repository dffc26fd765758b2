//! Key import (PEM and DER, private and public) and signature verification input: the
//! server key bunq returns at installation, key files, and `X-Bunq-Server-Signature`.
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
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = bunq_signing::PrivateKey::from_pem(text);
        let _ = bunq_signing::PublicKey::from_pem(text);
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
