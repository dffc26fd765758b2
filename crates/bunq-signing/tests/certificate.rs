//! PSD2 certificates: a provider's certificate, chain and key are put together only when
//! they belong together, and the public-key signature verifies with the certificate's
//! key over exactly the installation key PEM, "\n" and the installation token.
//! Certificates come from bunq-testkit's `TestCertificate` (rcgen), made fresh per test.
#![allow(clippy::unwrap_used)]

use bunq_signing::{
    Certificate, CertificateError, PrivateKey, Psd2Certificate, public_key_signature_message,
    verify_chain,
};
use bunq_testkit::TestCertificate;
use secrecy::ExposeSecret as _;

#[test]
fn self_signed_certificate_is_its_own_chain_and_signs_the_installation_key() {
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let psd2 = provider.psd2(&[&provider]).unwrap();
    assert_eq!(psd2.certificate(), provider.certificate());
    assert_eq!(psd2.chain_pem(), provider.certificate_pem());
    assert!(psd2.certificate().subject().contains("CN=Test AISP B.V."));
    assert_eq!(psd2.certificate().sha256_fingerprint().len(), 64);

    let installation = PrivateKey::generate().unwrap();
    let signature = psd2.public_key_signature(&installation.public_key_pem(), "token-1");
    let public = provider.certificate().public_key().unwrap();
    let message = public_key_signature_message(&installation.public_key_pem(), "token-1");
    assert_eq!(
        message,
        format!("{}\ntoken-1", installation.public_key_pem())
    );
    public
        .verify_body(message.as_bytes(), signature.as_str())
        .unwrap();
    // Over another token it is another signature.
    let other = public_key_signature_message(&installation.public_key_pem(), "token-2");
    assert!(
        public
            .verify_body(other.as_bytes(), signature.as_str())
            .is_err()
    );
}

#[test]
fn chains_through_an_intermediate_to_a_root() {
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let intermediate = TestCertificate::issued_by("Test QTSP issuing CA", &root, true).unwrap();
    let provider = TestCertificate::issued_by("Test PISP B.V.", &intermediate, false).unwrap();
    let psd2 = provider.psd2(&[&intermediate, &root]).unwrap();
    // The chain's PEM reads back as the same two certificates, in order.
    let again = Certificate::chain_from_pem(&psd2.chain_pem()).unwrap();
    assert_eq!(
        again,
        vec![
            intermediate.certificate().clone(),
            root.certificate().clone()
        ]
    );
    assert_eq!(
        provider.certificate().issuer(),
        intermediate.certificate().subject()
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let other = PrivateKey::generate().unwrap();
    let err = Psd2Certificate::new(
        provider.certificate().clone(),
        vec![provider.certificate().clone()],
        other,
    )
    .unwrap_err();
    assert!(matches!(err, CertificateError::KeyMismatch { .. }), "{err}");
}

#[test]
fn broken_chains_are_refused() {
    let now = std::time::SystemTime::now();
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let intermediate = TestCertificate::issued_by("Test QTSP issuing CA", &root, true).unwrap();
    let provider = TestCertificate::issued_by("Test PISP B.V.", &intermediate, false).unwrap();
    let stranger = TestCertificate::self_signed("Someone else").unwrap();
    let cert = |t: &TestCertificate| t.certificate().clone();

    // Not issued by the chain's first certificate.
    let err = verify_chain(&cert(&provider), &[cert(&stranger)], now).unwrap_err();
    assert!(matches!(err, CertificateError::NotIssuedBy { .. }), "{err}");
    // The same name, another key: the signature, not only the name, is checked.
    let impostor = TestCertificate::self_signed("Test QTSP issuing CA").unwrap();
    let err = verify_chain(&cert(&provider), &[cert(&impostor)], now).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    // Out of order.
    let err = verify_chain(&cert(&provider), &[cert(&root), cert(&intermediate)], now).unwrap_err();
    assert!(matches!(err, CertificateError::NotIssuedBy { .. }), "{err}");
    // Linked, but not up to a self-signed root.
    let err = verify_chain(&cert(&provider), &[cert(&intermediate)], now).unwrap_err();
    assert!(matches!(err, CertificateError::NoRoot { .. }), "{err}");
    // Empty.
    let err = verify_chain(&cert(&provider), &[], now).unwrap_err();
    assert_eq!(err, CertificateError::Empty("certificate chain"));
    // Not valid at that time (rcgen's certificates start in 1975).
    let err = verify_chain(
        &cert(&provider),
        &[cert(&intermediate), cert(&root)],
        std::time::UNIX_EPOCH,
    )
    .unwrap_err();
    assert!(matches!(err, CertificateError::Expired { .. }), "{err}");
    // And Psd2Certificate::new checks the same.
    let err = Psd2Certificate::new(
        cert(&provider),
        vec![cert(&intermediate)],
        provider.key().clone(),
    )
    .unwrap_err();
    assert!(matches!(err, CertificateError::NoRoot { .. }), "{err}");
}

#[test]
fn malformed_pem_is_an_error_never_a_panic() {
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let pem = provider.certificate_pem();
    for input in [
        "",
        "   \n",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        &pem[..pem.len() / 2],
        &format!("{pem}garbage"),
        &format!("text before\n{pem}"),
    ] {
        assert!(
            Certificate::chain_from_pem(input).is_err(),
            "chain {input:?}"
        );
        // One certificate may follow explanatory text (RFC 7468 allows it); a chain
        // holds certificates only.
        if !input.starts_with(&pem) && !input.starts_with("text before") {
            assert!(
                Certificate::from_pem(input).is_err(),
                "certificate {input:?}"
            );
        }
    }
    assert!(matches!(
        Certificate::chain_from_pem(" \n"),
        Err(CertificateError::Empty(_))
    ));
    let two = Certificate::chain_from_pem(&format!("{pem}\n\n{pem}")).unwrap();
    assert_eq!(two.len(), 2);
}

#[test]
fn debug_shows_no_key_material() {
    let provider = TestCertificate::self_signed("Test AISP B.V.").unwrap();
    let psd2 = provider.psd2(&[&provider]).unwrap();
    let debug = format!("{psd2:?}");
    assert!(debug.contains("redacted"), "{debug}");
    let key_line = provider
        .key_pem()
        .expose_secret()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!debug.contains(&key_line));
}
