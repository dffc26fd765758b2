//! `cargo xtask sandbox-setup --psd2` against bunq-testkit: a PSD2 provider onboarded by
//! a generated test certificate, twice (the second run registers nothing new), or by
//! certificate files given; the gateway config's OAuth client is the provider's.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use bunq_signing::{Certificate, PrivateKey, write_private_file};
use bunq_testkit::{FakeBunq, TestCertificate};
use secrecy::ExposeSecret as _;

async fn sandbox_setup(fake: &FakeBunq, dir: &Path, extra: &[&str]) -> Output {
    let mut args = common::against(fake);
    args.push("--psd2".into());
    common::xtask(common::in_dir(args, dir, extra)).await
}

fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn context(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("bunq-sandbox.json")).unwrap()).unwrap()
}

fn config(dir: &Path) -> toml::Table {
    std::fs::read_to_string(dir.join("gateway.toml"))
        .unwrap()
        .parse()
        .unwrap()
}

const ONCE: [&str; 5] = [
    "POST /installation",
    "POST /payment-service-provider-credential",
    "POST /device-server",
    "POST /session-server",
    "POST /user/{id}/oauth-client",
];

#[tokio::test(flavor = "multi_thread")]
async fn provider_is_onboarded_with_a_test_certificate_once_and_reused_after() {
    let fake = FakeBunq::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let stdout = succeeded(&sandbox_setup(&fake, dir.path(), &[]).await);
    for line in [
        "[1/4] PSD2 certificate",
        "self-signed test certificate made",
        "UserPaymentServiceProvider",
        "registered",
        "[4/4] gateway config",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    for endpoint in ONCE {
        assert_eq!(fake.calls(endpoint), 1, "{endpoint}");
    }
    // No sandbox user, no top-up: a provider has no accounts.
    assert_eq!(fake.calls("POST /sandbox-user-person"), 0);
    assert_eq!(
        fake.calls("POST /user/{id}/monetary-account/{aid}/request-inquiry"),
        0
    );

    // The certificate and its key are kept with the state, 0600.
    let cert_file = dir.path().join("psd2-test-certificate.pem");
    let key_file = dir.path().join("psd2-test-certificate-key.pem");
    {
        use std::os::unix::fs::PermissionsExt as _;
        for file in [&cert_file, &key_file, &dir.path().join("gateway.toml")] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
    let certificate = Certificate::from_pem(&std::fs::read_to_string(&cert_file).unwrap()).unwrap();
    let provider = fake.psd2_provider(&certificate).unwrap();
    let state = context(dir.path());
    let stored = &state["sandbox-psd2-provider"];
    assert_eq!(stored["session"]["user_id"].as_u64(), Some(provider));
    assert_eq!(stored["session"]["kind"], "UserPaymentServiceProvider");
    assert_eq!(
        stored["psd2"]["certificate_sha256"].as_str(),
        Some(certificate.sha256_fingerprint().as_str())
    );
    // The token value is a secret: never printed.
    let secret = stored["secret"].as_str().unwrap();
    assert!(!stdout.contains(secret));

    let written = config(dir.path());
    let client_id = written["oauth"]["client_id"].as_str().unwrap().to_owned();
    assert_eq!(client_id.len(), 64);

    // Second run: everything reused.
    let stdout = succeeded(&sandbox_setup(&fake, dir.path(), &[]).await);
    assert!(stdout.contains("test certificate reused"), "{stdout}");
    assert!(stdout.contains("reused; context kept"), "{stdout}");
    for endpoint in ONCE {
        assert_eq!(fake.calls(endpoint), 1, "{endpoint} after the second run");
    }
    let again = config(dir.path());
    assert_eq!(
        again["oauth"]["client_id"].as_str(),
        Some(client_id.as_str())
    );
    assert_eq!(again["security"], written["security"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_files_are_used_and_a_wrong_key_is_refused_with_its_step() {
    let fake = FakeBunq::start().await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let provider = TestCertificate::issued_by("Test PISP B.V.", &root, false).unwrap();
    let cert = files.path().join("provider.pem");
    let key = files.path().join("provider-key.pem");
    let chain = files.path().join("chain.pem");
    std::fs::write(&cert, provider.certificate_pem()).unwrap();
    std::fs::write(&chain, root.certificate_pem()).unwrap();
    provider.key().save(&key).unwrap();
    let given = [
        "--certificate",
        cert.to_str().unwrap(),
        "--certificate-key",
        key.to_str().unwrap(),
        "--chain",
        chain.to_str().unwrap(),
    ];

    let dir = tempfile::tempdir().unwrap();
    let stdout = succeeded(&sandbox_setup(&fake, dir.path(), &given).await);
    assert!(stdout.contains("CN=Test PISP B.V."), "{stdout}");
    let provider_id = fake.psd2_provider(provider.certificate()).unwrap();
    assert_eq!(
        context(dir.path())["sandbox-psd2-provider"]["session"]["user_id"].as_u64(),
        Some(provider_id)
    );
    assert!(!dir.path().join("psd2-test-certificate.pem").exists());

    // Another key than the certificate's: refused before anything reaches bunq.
    let other = tempfile::tempdir().unwrap();
    let wrong_key = files.path().join("other-key.pem");
    PrivateKey::generate().unwrap().save(&wrong_key).unwrap();
    let mut wrong = given;
    wrong[3] = wrong_key.to_str().unwrap();
    let calls = fake.calls("POST /installation");
    let out = sandbox_setup(&fake, other.path(), &wrong).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PSD2 certificate"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");
    assert!(stderr.contains("what to do"), "{stderr}");
    assert_eq!(fake.calls("POST /installation"), calls);
    assert!(!other.path().join("gateway.toml").exists());

    // A key file others may read is refused as every key file is.
    let open_key = files.path().join("open-key.pem");
    write_private_file(&open_key, provider.key_pem().expose_secret().as_bytes()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut open = given;
    open[3] = open_key.to_str().unwrap();
    let out = sandbox_setup(&fake, other.path(), &open).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_test_certificate_is_made_for_a_production_base() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "sandbox-setup".to_owned(),
        "--psd2".into(),
        "--api-base-url".into(),
        "https://api.bunq.com/v1".into(),
    ];
    let out = common::xtask(common::in_dir(args, dir.path(), &[])).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only for bunq's sandbox"), "{stderr}");
    assert!(!dir.path().join("psd2-test-certificate.pem").exists());
}
