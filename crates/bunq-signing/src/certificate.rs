//! X.509 certificates for PSD2 providers: a licensed provider (AISP/PISP) registers
//! with bunq by its eIDAS certificate instead of an API key, proving the installation
//! key is its own with a signature made by the certificate's key.
//!
//! Parsing is RustCrypto's `x509-cert` (strict DER); every signature, made or checked,
//! is AWS-LC's.

use std::fmt;
use std::time::SystemTime;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use pkcs8::der::{Decode as _, DecodePem as _, Encode as _};
use pkcs8::spki::ObjectIdentifier;

use crate::{PrivateKey, PublicKey, Signature};

/// Why a certificate, a chain or a certificate's key was not accepted. Never carries
/// key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateError {
    /// The text is not a PEM `CERTIFICATE`, or its DER is not an X.509 certificate.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// No certificate where at least one is needed (an empty chain).
    #[error("no certificate in the {0}")]
    Empty(&'static str),
    /// The certificate's key is not an RSA key of 2048 bits or more (bunq's
    /// `client_public_key_signature` is RSA PKCS#1 v1.5).
    #[error("the certificate's key is not usable: {0}")]
    UnsupportedKey(String),
    /// The private key given is not the certificate's.
    #[error("the private key does not belong to the certificate ({subject})")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate of the chain was not issued by the next one: names differ or the
    /// signature does not verify with the issuer's key.
    #[error("certificate {subject} is not issued by {issuer}: {reason}")]
    NotIssuedBy {
        /// The certificate checked.
        subject: String,
        /// The certificate that should have issued it.
        issuer: String,
        /// Which part failed.
        reason: String,
    },
    /// The chain does not end with a self-signed certificate (its root).
    #[error("the chain ends with {subject}, which is not self-signed")]
    NoRoot {
        /// The last certificate's subject.
        subject: String,
    },
    /// The certificate is not valid at the time checked.
    #[error("certificate {subject} is not valid now (valid {not_before:?} to {not_after:?})")]
    Expired {
        /// The certificate's subject.
        subject: String,
        /// Start of its validity.
        not_before: SystemTime,
        /// End of its validity.
        not_after: SystemTime,
    },
}

/// One parsed X.509 certificate.
#[derive(Clone)]
pub struct Certificate {
    parsed: x509_cert::Certificate,
    der: Vec<u8>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("sha256", &self.sha256_fingerprint())
            .finish()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Certificate {}

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");

impl Certificate {
    /// Reads one PEM `CERTIFICATE`.
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        let parsed = x509_cert::Certificate::from_pem(pem.trim())
            .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        Self::from_parsed(parsed)
    }

    /// Reads one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let parsed = x509_cert::Certificate::from_der(der)
            .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        Self::from_parsed(parsed)
    }

    /// Reads one or more concatenated PEM certificates (a chain as bunq takes it, and
    /// as CAs ship them), in order, with nothing but whitespace between them.
    ///
    /// Split here rather than by `x509_cert::Certificate::load_pem_chain`, which
    /// panics (an overflow) on empty input: this text comes from outside.
    pub fn chain_from_pem(pem: &str) -> Result<Vec<Self>, CertificateError> {
        const END: &str = "-----END CERTIFICATE-----";
        let mut chain = Vec::new();
        let mut rest = pem.trim();
        while !rest.is_empty() {
            if !rest.starts_with("-----BEGIN CERTIFICATE-----") {
                return Err(CertificateError::Malformed(
                    "a chain holds PEM CERTIFICATE blocks only".into(),
                ));
            }
            let end = rest
                .find(END)
                .map(|at| at + END.len())
                .ok_or_else(|| CertificateError::Malformed("unterminated PEM block".into()))?;
            chain.push(Self::from_pem(&rest[..end])?);
            rest = rest[end..].trim_start();
        }
        if chain.is_empty() {
            return Err(CertificateError::Empty("certificate chain"));
        }
        Ok(chain)
    }

    fn from_parsed(parsed: x509_cert::Certificate) -> Result<Self, CertificateError> {
        let der = parsed
            .to_der()
            .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        Ok(Self { parsed, der })
    }

    /// The certificate as DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as PEM (`-----BEGIN CERTIFICATE-----`, 64-column lines).
    pub fn to_pem(&self) -> String {
        crate::keys::pem_encode("CERTIFICATE", &self.der)
    }

    /// The subject's distinguished name (RFC 4514).
    pub fn subject(&self) -> String {
        self.parsed.tbs_certificate.subject.to_string()
    }

    /// The issuer's distinguished name (RFC 4514).
    pub fn issuer(&self) -> String {
        self.parsed.tbs_certificate.issuer.to_string()
    }

    /// Lowercase hex SHA-256 of the DER: the certificate's identity.
    pub fn sha256_fingerprint(&self) -> String {
        digest(&SHA256, &self.der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The certificate's RSA public key (2048 bits or more); other keys are refused,
    /// since bunq's `client_public_key_signature` is RSA PKCS#1 v1.5.
    pub fn public_key(&self) -> Result<PublicKey, CertificateError> {
        let spki = &self.parsed.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(CertificateError::UnsupportedKey(format!(
                "algorithm {} is not RSA",
                spki.algorithm.oid
            )));
        }
        let pkcs1 = spki.subject_public_key.raw_bytes();
        let bits = aws_lc_rs::rsa::PublicKey::from_der(pkcs1)
            .map_err(|e| CertificateError::UnsupportedKey(e.to_string()))
            .and_then(|key| {
                signature::RsaParameters::public_modulus_len(key.as_ref())
                    .map_err(|e| CertificateError::UnsupportedKey(e.to_string()))
            })?;
        if bits < 2048 {
            return Err(CertificateError::UnsupportedKey(format!(
                "RSA key of {bits} bits; at least 2048 needed"
            )));
        }
        PublicKey::from_pkcs1_der(pkcs1.to_vec())
            .map_err(|e| CertificateError::UnsupportedKey(e.to_string()))
    }

    /// Whether `at` lies within the certificate's validity.
    pub fn check_validity(&self, at: SystemTime) -> Result<(), CertificateError> {
        let validity = &self.parsed.tbs_certificate.validity;
        let not_before = validity.not_before.to_system_time();
        let not_after = validity.not_after.to_system_time();
        if at < not_before || at > not_after {
            return Err(CertificateError::Expired {
                subject: self.subject(),
                not_before,
                not_after,
            });
        }
        Ok(())
    }

    /// Checks that `issuer` issued this certificate: this certificate's issuer name is
    /// `issuer`'s subject name, and this certificate's signature verifies with
    /// `issuer`'s public key (RSA PKCS#1 v1.5 with SHA-256/384/512, or ECDSA P-256 with
    /// SHA-256 / P-384 with SHA-384; AWS-LC verifies).
    pub fn verify_issued_by(&self, issuer: &Certificate) -> Result<(), CertificateError> {
        let refused = |reason: String| CertificateError::NotIssuedBy {
            subject: self.subject(),
            issuer: issuer.subject(),
            reason,
        };
        if self.parsed.tbs_certificate.issuer != issuer.parsed.tbs_certificate.subject {
            return Err(refused(format!(
                "its issuer name is {}",
                self.parsed.tbs_certificate.issuer
            )));
        }
        let algorithm: &'static dyn VerificationAlgorithm =
            match self.parsed.signature_algorithm.oid {
                SHA256_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA256,
                SHA384_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA384,
                SHA512_WITH_RSA => &signature::RSA_PKCS1_2048_8192_SHA512,
                ECDSA_WITH_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
                ECDSA_WITH_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
                other => {
                    return Err(refused(format!(
                        "signature algorithm {other} not supported"
                    )));
                }
            };
        let tbs = self
            .parsed
            .tbs_certificate
            .to_der()
            .map_err(|e| refused(e.to_string()))?;
        let signature = self
            .parsed
            .signature
            .as_bytes()
            .ok_or_else(|| refused("the signature is not a whole number of bytes".into()))?;
        // The issuer's `subjectPublicKey` bits: PKCS#1 `RSAPublicKey` for RSA, the
        // uncompressed point for ECDSA, which is what AWS-LC takes for each.
        let issuer_key = issuer
            .parsed
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        UnparsedPublicKey::new(algorithm, issuer_key)
            .verify(&tbs, signature)
            .map_err(|_| refused("the signature does not verify with the issuer's key".into()))
    }

    fn is_self_signed(&self) -> bool {
        self.verify_issued_by(self).is_ok()
    }
}

/// Checks a certificate and its chain as bunq takes them: the certificate was issued by
/// the chain's first certificate, each chain certificate by the next one, and the last
/// one is self-signed (a root); every certificate is valid at `at`. A self-signed
/// certificate is its own chain (`chain` = itself), as in bunq's sandbox.
pub fn verify_chain(
    certificate: &Certificate,
    chain: &[Certificate],
    at: SystemTime,
) -> Result<(), CertificateError> {
    let root = chain
        .last()
        .ok_or(CertificateError::Empty("certificate chain"))?;
    certificate.check_validity(at)?;
    let mut current = certificate;
    for issuer in chain {
        issuer.check_validity(at)?;
        current.verify_issued_by(issuer)?;
        current = issuer;
    }
    if !root.is_self_signed() {
        return Err(CertificateError::NoRoot {
            subject: root.subject(),
        });
    }
    Ok(())
}

/// A PSD2 provider's certificate, its chain and its private key: what
/// `POST /payment-service-provider-credential` needs.
///
/// The private key never shows in `Debug` (see [`PrivateKey`]).
#[derive(Clone, Debug)]
pub struct Psd2Certificate {
    certificate: Certificate,
    chain: Vec<Certificate>,
    key: PrivateKey,
}

impl Psd2Certificate {
    /// Puts the three together, refusing before anything is sent what bunq would
    /// refuse: a key that is not the certificate's, or a chain that does not link the
    /// certificate to a root (checked at the current time).
    pub fn new(
        certificate: Certificate,
        chain: Vec<Certificate>,
        key: PrivateKey,
    ) -> Result<Self, CertificateError> {
        let public = certificate.public_key()?;
        if public.pkcs1_der() != key.public_key().pkcs1_der() {
            return Err(CertificateError::KeyMismatch {
                subject: certificate.subject(),
            });
        }
        verify_chain(&certificate, &chain, SystemTime::now())?;
        Ok(Self {
            certificate,
            chain,
            key,
        })
    }

    /// [`new`](Self::new) from PEM texts: the certificate, the chain (one or more
    /// certificates), and the key (read it from a 0600 file with
    /// [`PrivateKey::load`]).
    pub fn from_pem(
        certificate_pem: &str,
        chain_pem: &str,
        key: PrivateKey,
    ) -> Result<Self, CertificateError> {
        Self::new(
            Certificate::from_pem(certificate_pem)?,
            Certificate::chain_from_pem(chain_pem)?,
            key,
        )
    }

    /// The certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The chain, issuer first.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    /// `client_payment_service_provider_certificate`: the certificate's PEM.
    pub fn certificate_pem(&self) -> String {
        self.certificate.to_pem()
    }

    /// `client_payment_service_provider_certificate_chain`: the chain's PEMs, one
    /// after the other.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(Certificate::to_pem).collect()
    }

    /// `client_public_key_signature`: the certificate key's signature (RSA PKCS#1
    /// v1.5, SHA-256, base64) of the installation's public key PEM, exactly as sent
    /// in `POST /installation`, then `"\n"`, then the installation token. It proves to
    /// bunq that the holder of the certificate made this installation.
    pub fn public_key_signature(
        &self,
        installation_public_key_pem: &str,
        installation_token: &str,
    ) -> Signature {
        self.key.sign_body(
            public_key_signature_message(installation_public_key_pem, installation_token)
                .as_bytes(),
        )
    }
}

/// The bytes `client_public_key_signature` signs (the server side checks the same).
pub fn public_key_signature_message(
    installation_public_key_pem: &str,
    installation_token: &str,
) -> String {
    format!("{installation_public_key_pem}\n{installation_token}")
}
