//! `cargo xtask demo --psd2`: sandbox-setup `--psd2` against the demo's fake twice (the
//! second run making nothing new at bunq), then the demo's whole OAuth flow, accounts and
//! payment through the gateway binary configured with the provider's OAuth client.
//! Builds the gateway (as the demo does) with the cargo that runs the tests.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn demo_runs_through_a_gateway_with_the_providers_oauth_client() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["demo", "--psd2"])
        .env_remove("BUNQ_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "sandbox-setup --psd2",
        "self-signed test certificate made",
        "(UserPaymentServiceProvider), credential",
        "registered; context kept",
        "test certificate reused",
        "reused; context kept",
        "nothing new at bunq",
        "landed on /oauth/callback",
        "connected as bunq user",
        "requested by UserPaymentServiceProvider",
        "payment ",
        "Demo finished",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
