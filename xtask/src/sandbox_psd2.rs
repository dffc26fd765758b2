//! `cargo xtask sandbox-setup --psd2`: onboarding as a licensed PSD2 provider (AISP/PISP)
//! by its certificate, where the API-key path has a sandbox user and its API key.
//!
//! The certificate comes from `--certificate`, `--certificate-key` and `--chain`, or, for
//! bunq's sandbox or a local fake only, is a self-signed test certificate (bunq-testkit's
//! `TestCertificate`, made by rcgen) kept beside the context file, so that a second run
//! registers nothing new: the stored context records which certificate made it.

use std::path::{Path, PathBuf};

use bunq_session::{BunqClient, CredentialId, SessionManager, SessionManagerConfig, UserKind};
use bunq_signing::{PrivateKey, Psd2Certificate, write_private_file};
use bunq_testkit::TestCertificate;

use crate::progress::{Progress, StepError};
use crate::sandbox::{
    ContextFile, SANDBOX_API_BASE, SandboxArgs, create_private_dir, is_loopback, session_user,
};

/// The credential under which the provider's context is kept (beside the API-key path's
/// `sandbox-owner` in the same file).
pub(crate) fn provider_credential() -> CredentialId {
    CredentialId::new("sandbox-psd2-provider")
}

/// The subject's common name of the generated test certificate.
const TEST_CERTIFICATE_NAME: &str = "bunq-gateway sandbox PSD2 provider";
/// A certificate or chain file larger than this is not one.
const MAX_CERTIFICATE_FILE_BYTES: u64 = 64 * 1024;

/// The certificate, then the provider's installation, credential, device and session.
pub(crate) async fn provider(
    args: &SandboxArgs,
    api_base: &str,
    store: ContextFile,
    client: BunqClient,
    progress: &mut Progress,
) -> Result<(SessionManager<ContextFile>, CredentialId, u64), StepError> {
    let certificate = progress
        .step(
            "PSD2 certificate",
            "pass --certificate, --certificate-key (mode 0600) and --chain as PEM files; without them a test certificate is made for bunq's sandbox or a local fake only",
            async { certificate(args, api_base) },
        )
        .await?;
    // The credential kept from an earlier run, to say whether this one reused it.
    let kept = store
        .get(&provider_credential())
        .filter(|c| c.api_base == api_base)
        .and_then(|c| c.psd2)
        .map(|r| r.credential_id);
    let manager = SessionManager::new(client, store, SessionManagerConfig::default());
    let user_id = progress
        .step(
            "installation, payment-service-provider-credential, device-server and session-server",
            "bunq refused the certificate: check that the certificate, its key and its chain belong together, and that bunq knows the provider (production needs an eIDAS certificate)",
            async {
                let context = manager
                    .connect_psd2(&provider_credential(), &certificate)
                    .await?;
                let user_id = session_user(&context)?;
                let kind = context.session.as_ref().map(|s| s.kind);
                if kind != Some(UserKind::UserPaymentServiceProvider) {
                    return Err(bunq_session::Error::Config(format!(
                        "the session's user is a {kind:?}, not a UserPaymentServiceProvider"
                    )));
                }
                let credential = context.psd2.as_ref().map(|r| r.credential_id);
                let how = if credential == kept { "reused" } else { "registered" };
                let credential = credential.unwrap_or_default();
                Ok((
                    user_id,
                    format!(
                        "PSD2 provider {user_id} (UserPaymentServiceProvider), credential {credential} {how}; context kept in {}",
                        args.context_file.display()
                    ),
                ))
            },
        )
        .await?;
    Ok((manager, provider_credential(), user_id))
}

/// The certificate from the files given, else the test certificate kept from an earlier
/// run, else a new one (sandbox or local fake only).
fn certificate(args: &SandboxArgs, api_base: &str) -> Result<(Psd2Certificate, String), String> {
    if let (Some(cert), Some(key), Some(chain)) =
        (&args.certificate, &args.certificate_key, &args.chain)
    {
        let psd2 = load(cert, key, chain)?;
        return Ok((
            psd2.clone(),
            format!(
                "{} read from {}",
                psd2.certificate().subject(),
                cert.display()
            ),
        ));
    }
    if api_base != SANDBOX_API_BASE && !is_loopback(api_base) {
        return Err(format!(
            "no --certificate, --certificate-key and --chain for {api_base}: a self-signed test certificate is made only for bunq's sandbox or a local fake"
        ));
    }
    let (cert, key) = test_certificate_files(&args.context_file);
    if cert.exists() && key.exists() {
        let psd2 = load(&cert, &key, &cert)?;
        return Ok((
            psd2,
            format!(
                "self-signed test certificate reused from {}",
                cert.display()
            ),
        ));
    }
    let made = TestCertificate::self_signed(TEST_CERTIFICATE_NAME).map_err(|e| e.to_string())?;
    let psd2 = made.psd2(&[&made]).map_err(|e| e.to_string())?;
    create_private_dir(&cert)?;
    // The key first: a certificate file is only ever beside its key.
    made.key().save(&key).map_err(|e| e.to_string())?;
    write_private_file(&cert, made.certificate_pem().as_bytes()).map_err(|e| e.to_string())?;
    Ok((
        psd2,
        format!(
            "self-signed test certificate made (sha256 {}), kept in {} and {}",
            made.certificate().sha256_fingerprint(),
            cert.display(),
            key.display()
        ),
    ))
}

/// Where the test certificate and its key are kept: beside the context file.
fn test_certificate_files(context_file: &Path) -> (PathBuf, PathBuf) {
    let dir = context_file.parent().unwrap_or(Path::new(""));
    (
        dir.join("psd2-test-certificate.pem"),
        dir.join("psd2-test-certificate-key.pem"),
    )
}

/// Reads the three files: the key as a key file (refused if others may read it).
fn load(cert: &Path, key: &Path, chain: &Path) -> Result<Psd2Certificate, String> {
    let read = |path: &Path, what: &str| -> Result<String, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?
            .len();
        if size > MAX_CERTIFICATE_FILE_BYTES {
            return Err(format!(
                "{what} {} is {size} bytes: not a PEM certificate file",
                path.display()
            ));
        }
        std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
    };
    let key = PrivateKey::load(key).map_err(|e| format!("--certificate-key: {e}"))?;
    Psd2Certificate::from_pem(&read(cert, "--certificate")?, &read(chain, "--chain")?, key)
        .map_err(|e| format!("{}: {e}", cert.display()))
}
