//! Vectors made by OpenSSL (see `fixtures/signing/README.md`): our signatures must equal
//! OpenSSL's byte for byte, and our verifier must accept OpenSSL's.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;

use bunq_signing::{KeyError, KeyFileError, PrivateKey, PublicKey, VerificationError};
use secrecy::ExposeSecret as _;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/signing")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_key() -> PrivateKey {
    PrivateKey::from_pem(&fixture("private_key.pem")).unwrap()
}

#[test]
fn signature_equals_openssl_byte_for_byte() {
    let sig = fixture_key().sign_body(fixture("body.json").as_bytes());
    assert_eq!(sig.as_str(), fixture("body.sig.b64").trim());
}

#[test]
fn empty_body_signature_equals_openssl_and_is_reused() {
    let key = fixture_key();
    let first = key.sign_body(b"");
    assert_eq!(first.as_str(), fixture("empty_body.sig.b64").trim());
    assert_eq!(key.sign_body(b""), first);
}

#[test]
fn verifier_accepts_openssl_signature() {
    let public = PublicKey::from_pem(&fixture("public_key.pem")).unwrap();
    public
        .verify_body(fixture("body.json").as_bytes(), &fixture("body.sig.b64"))
        .unwrap();
}

#[test]
fn public_key_pem_matches_openssl_spki() {
    assert_eq!(
        fixture_key().public_key_pem().trim(),
        fixture("public_key.pem").trim()
    );
}

#[test]
fn accepts_legacy_head_and_body_form() {
    let public = PublicKey::from_pem(&fixture("public_key.pem")).unwrap();
    let headers = [
        (
            "x-bunq-client-response-id",
            "9d1c2b3a-0000-4000-8000-000000000002",
        ),
        ("Content-Type", "application/json"),
        (
            "X-Bunq-Client-Request-Id",
            "5e7b4f1a-0000-4000-8000-000000000001",
        ),
        ("X-Bunq-Server-Signature", "ignored"),
    ];
    public
        .verify_response(
            200,
            headers,
            fixture("body.json").as_bytes(),
            &fixture("legacy.sig.b64"),
        )
        .unwrap();
    // The same signature does not cover another status.
    assert_eq!(
        public.verify_response(
            201,
            headers,
            fixture("body.json").as_bytes(),
            &fixture("legacy.sig.b64")
        ),
        Err(VerificationError::Mismatch)
    );
}

#[test]
fn body_form_is_accepted_by_verify_response() {
    let public = PublicKey::from_pem(&fixture("public_key.pem")).unwrap();
    public
        .verify_response(
            200,
            [],
            fixture("body.json").as_bytes(),
            &fixture("body.sig.b64"),
        )
        .unwrap();
}

#[test]
fn rejects_tampered_body() {
    let public = PublicKey::from_pem(&fixture("public_key.pem")).unwrap();
    let mut body = fixture("body.json").into_bytes();
    body[10] ^= 1;
    assert_eq!(
        public.verify_body(&body, &fixture("body.sig.b64")),
        Err(VerificationError::Mismatch)
    );
}

#[test]
fn rejects_tampered_signature() {
    let public = PublicKey::from_pem(&fixture("public_key.pem")).unwrap();
    let mut sig = fixture("body.sig.b64").trim().to_owned();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    assert_eq!(
        public.verify_body(fixture("body.json").as_bytes(), &sig),
        Err(VerificationError::Mismatch)
    );
}

#[test]
fn rejects_signature_by_another_key() {
    let other = PublicKey::from_pem(&fixture("other_public_key.pem")).unwrap();
    assert_eq!(
        other.verify_body(fixture("body.json").as_bytes(), &fixture("body.sig.b64")),
        Err(VerificationError::Mismatch)
    );
}

#[test]
fn refuses_keys_under_2048_bits() {
    assert!(matches!(
        PublicKey::from_pem(&fixture("weak_1024_public_key.pem")),
        Err(KeyError::TooSmall { bits: 1024 })
    ));
    assert!(matches!(
        PrivateKey::from_pem(&fixture("weak_1024_private_key.pem")),
        Err(KeyError::TooSmall { bits: 1024 })
    ));
}

#[test]
fn malformed_and_mislabelled_pem_are_typed_errors() {
    assert!(matches!(
        PrivateKey::from_pem("not a pem"),
        Err(KeyError::MalformedPem(_))
    ));
    assert!(matches!(
        PrivateKey::from_pem(&fixture("public_key.pem")),
        Err(KeyError::WrongPemLabel { .. })
    ));
    assert!(matches!(
        PublicKey::from_pem(&fixture("private_key.pem")),
        Err(KeyError::WrongPemLabel { .. })
    ));
    let broken = fixture("public_key.pem").replace('M', "*");
    assert!(matches!(
        PublicKey::from_pem(&broken),
        Err(KeyError::MalformedPem(_))
    ));
}

#[test]
fn generated_key_signs_and_verifies() {
    let key = PrivateKey::generate().unwrap();
    let public = PublicKey::from_pem(&key.public_key_pem()).unwrap();
    let sig = key.sign_body(b"{\"a\":1}");
    public.verify_body(b"{\"a\":1}", sig.as_str()).unwrap();
    assert_eq!(
        public.verify_body(b"{\"a\":2}", sig.as_str()),
        Err(VerificationError::Mismatch)
    );
    // Public key PEM round trip.
    let again = PublicKey::from_pem(&public.to_pem().unwrap()).unwrap();
    again.verify_body(b"{\"a\":1}", sig.as_str()).unwrap();
}

#[cfg(unix)]
#[test]
fn key_file_is_written_0600_and_loads_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("installation.pem");
    let key = fixture_key();
    key.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = PrivateKey::load(&path).unwrap();
    assert_eq!(loaded.public_key_pem(), key.public_key_pem());
    assert_eq!(
        loaded.to_pkcs8_pem().expose_secret(),
        key.to_pkcs8_pem().expose_secret()
    );
    // Saving again replaces the file atomically and leaves no temporary behind.
    key.save(&path).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn refuses_key_file_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    fixture_key().save(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = PrivateKey::load(&path).unwrap_err();
    assert!(
        matches!(err, KeyFileError::TooOpen { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn missing_key_file_is_an_io_error() {
    assert!(matches!(
        PrivateKey::load("/nonexistent/key.pem"),
        Err(KeyFileError::Io { .. })
    ));
}

#[test]
fn pkcs1_private_key_pem_is_the_same_key_as_pkcs8() {
    // `openssl pkey -traditional` of private_key.pem.
    let key = PrivateKey::from_pem(&fixture("private_key_pkcs1.pem")).unwrap();
    assert_eq!(
        key.sign_body(b"").as_str(),
        fixture("empty_body.sig.b64").trim()
    );
    // Kept and written as PKCS#8, byte for byte what `openssl genpkey` wrote.
    assert_eq!(
        key.to_pkcs8_pem().expose_secret(),
        &fixture("private_key.pem")
    );
    assert_eq!(key.public_key_pem(), fixture("public_key.pem"));
}

#[test]
fn pkcs8_private_key_pem_round_trips_byte_for_byte() {
    let pem = fixture("private_key.pem");
    let key = PrivateKey::from_pem(&pem).unwrap();
    assert_eq!(key.to_pkcs8_pem().expose_secret(), &pem);
    let again = PrivateKey::from_pem(key.to_pkcs8_pem().expose_secret()).unwrap();
    assert_eq!(again.sign_body(b"x"), key.sign_body(b"x"));
    let der = PrivateKey::from_pkcs8_der(key.pkcs8_der().expose_secret()).unwrap();
    assert_eq!(der.public_key_pem(), key.public_key_pem());
}

#[test]
fn spki_public_key_pem_round_trips_byte_for_byte() {
    let pem = fixture("public_key.pem");
    let public = PublicKey::from_pem(&pem).unwrap();
    assert_eq!(public.to_pem().unwrap(), pem);
    assert_eq!(public.to_pkcs1_pem(), fixture("public_key_pkcs1.pem"));
}

#[test]
fn pkcs1_public_key_pem_round_trips_and_verifies() {
    // `openssl rsa -RSAPublicKey_out` of private_key.pem.
    let pem = fixture("public_key_pkcs1.pem");
    let public = PublicKey::from_pem(&pem).unwrap();
    assert_eq!(public.to_pkcs1_pem(), pem);
    assert_eq!(public.to_pem().unwrap(), fixture("public_key.pem"));
    public
        .verify_body(fixture("body.json").as_bytes(), &fixture("body.sig.b64"))
        .unwrap();
    assert_eq!(
        public.pkcs1_der(),
        PublicKey::from_pem(&fixture("public_key.pem"))
            .unwrap()
            .pkcs1_der()
    );
}

#[test]
fn refuses_pkcs1_private_keys_under_2048_bits() {
    assert!(matches!(
        PrivateKey::from_pem(&fixture("weak_1024_private_key_pkcs1.pem")),
        Err(KeyError::TooSmall { bits: 1024 })
    ));
}

#[test]
fn a_private_key_is_not_a_public_key_in_either_form() {
    assert!(matches!(
        PublicKey::from_pem(&fixture("private_key_pkcs1.pem")),
        Err(KeyError::WrongPemLabel { .. })
    ));
    assert!(matches!(
        PrivateKey::from_pem(&fixture("public_key_pkcs1.pem")),
        Err(KeyError::WrongPemLabel { .. })
    ));
}
