//! Conformance with bunq's official Python SDK: the SDK drives the fake through
//! installation, device-server, session-server (API key and OAuth token), account
//! listing and OAuth client registration, and a PSD2 provider through
//! `ApiContext.create_for_psd2` (`tests/sdk/psd2.py`), checking our response signatures
//! with its own code while we check its request signatures with ours.
//!
//! Uses `$BUNQ_SDK_PYTHON` (set by `.ci/run`), else `target/bunq-sdk-venv/bin/python`,
//! else `python3`, whichever can `import bunq`. Where none can, it prints why and
//! returns (the rest of the suite must not need Python), except under `CI=true`, where
//! `.ci/run` installs the SDK and its absence is a failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bunq_testkit::FakeBunq;
use serde_json::Value;

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("BUNQ_SDK_PYTHON") {
        out.push(PathBuf::from(p));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    out.push(workspace.join("target/bunq-sdk-venv/bin/python"));
    out.push(PathBuf::from("python3"));
    out
}

async fn python_with_sdk() -> Option<PathBuf> {
    for python in candidates() {
        let probe = tokio::process::Command::new(&python)
            .args(["-c", "import bunq.sdk.context.api_context"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(20), probe).await {
            if status.success() {
                return Some(python);
            }
        }
    }
    None
}

/// The SDK's Python, or `None` (after saying why) where the suite may go without it:
/// under `CI=true` its absence is a failure.
async fn python_or_skip() -> Option<PathBuf> {
    let python = python_with_sdk().await;
    if python.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true and no Python with bunq-sdk: .ci/run installs it into target/bunq-sdk-venv"
        );
        println!(
            "SKIPPED: no Python with the bunq-sdk package (set BUNQ_SDK_PYTHON, or run .ci/run to create target/bunq-sdk-venv)"
        );
    }
    python
}

/// Runs `tests/sdk/{script}` with `args`; the JSON line it printed last.
async fn run_script(python: &Path, script: &str, args: &[&std::ffi::OsStr]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let run = tokio::process::Command::new(python)
        .arg(&script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK script finishes within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn official_python_sdk_talks_to_the_fake() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let fake = FakeBunq::start().await.unwrap();
    let user = fake.create_sandbox_user();
    let end_user = fake.create_sandbox_user();
    let access_token = fake.grant_oauth_access(end_user.user_id);
    let (api_base, control_url) = (fake.api_base(), fake.control_url());
    let seen = run_script(
        &python,
        "conformance.py",
        &[
            api_base.as_ref(),
            user.api_key.as_ref(),
            access_token.as_ref(),
            control_url.as_ref(),
        ],
    )
    .await;

    assert_eq!(seen["user_id"].as_u64(), Some(user.user_id));
    assert_eq!(seen["user_kind"], "UserPersonApiObject");
    let ids: Vec<u64> = seen["account_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids, user.monetary_account_ids);
    assert_eq!(seen["balances"][0], "0.00");
    assert_eq!(seen["page_size"], 1);
    assert_eq!(seen["has_older_page"], true);
    assert_eq!(seen["tampered_signature_refused"], true);
    assert_eq!(seen["oauth_client_id"].as_str().unwrap().len(), 64);
    assert_eq!(seen["oauth_secret"].as_str().unwrap().len(), 64);
    assert_eq!(seen["callback_urls"][0], "http://127.0.0.1:9/callback");
    assert_eq!(seen["oauth_clients_listed"], 1);
    assert_eq!(seen["oauth_user_kind"], "UserApiKeyApiObject");
    let oauth_ids: Vec<u64> = seen["oauth_account_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(oauth_ids, end_user.monetary_account_ids);

    // What the SDK did, as the fake saw it.
    assert_eq!(fake.calls("POST /installation"), 2);
    assert_eq!(fake.calls("POST /session-server"), 2);
    assert_eq!(fake.calls("POST /user/{id}/oauth-client"), 1);
    assert_eq!(fake.calls("DELETE /session/{id}"), 1);
}

/// `ApiContext.create_for_psd2` of the official SDK against the fake, with a
/// certificate issued by a test CA, then the provider's OAuth client; a key that is not
/// the certificate's, a signature over the wrong bytes and a broken chain are refused.
#[tokio::test(flavor = "multi_thread")]
async fn official_python_sdk_onboards_a_psd2_provider() {
    use bunq_testkit::TestCertificate;
    use secrecy::ExposeSecret as _;

    let Some(python) = python_or_skip().await else {
        return;
    };
    let fake = FakeBunq::start().await.unwrap();
    let root = TestCertificate::self_signed("Test QTSP root").unwrap();
    let provider = TestCertificate::issued_by("Test AISP B.V.", &root, false).unwrap();
    let stranger = TestCertificate::self_signed("Test QTSP root").unwrap();
    let other_key = bunq_signing::PrivateKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("certificate.pem", provider.certificate_pem()),
        ("key.pem", provider.key_pem().expose_secret().to_owned()),
        ("chain.pem", root.certificate_pem()),
        (
            "other_key.pem",
            other_key.to_pkcs8_pem().expose_secret().to_owned(),
        ),
        ("stranger.pem", stranger.certificate_pem()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let api_base = fake.api_base();
    let seen = run_script(
        &python,
        "psd2.py",
        &[api_base.as_ref(), dir.path().as_os_str()],
    )
    .await;

    let provider_id = fake.psd2_provider(provider.certificate()).unwrap();
    assert_eq!(seen["user_id"].as_u64(), Some(provider_id));
    assert_eq!(seen["user_kind"], "UserPaymentServiceProviderApiObject");
    assert_eq!(seen["api_key_is_token_value"], 64);
    assert_eq!(seen["oauth_clients_listed"], 1);
    assert_eq!(seen["oauth_client_id"].as_str().unwrap().len(), 64);
    assert_eq!(seen["callback_urls"][0], "http://127.0.0.1:9/psd2-callback");

    for (case, words) in [
        ("other_key", "signature"),
        ("wrong_signature", "signature"),
        ("broken_chain", "chain"),
    ] {
        assert_eq!(seen[case]["status"], 400, "{case}: {}", seen[case]);
        let message = seen[case]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{case}: {message}");
    }
    // One credential made; the three refused ones made none.
    assert_eq!(fake.calls("POST /payment-service-provider-credential"), 4);
    assert_eq!(fake.psd2_provider(stranger.certificate()), None);
    assert_eq!(fake.calls("POST /session-server"), 1);
}
