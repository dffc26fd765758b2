//! `cargo xtask demo`: the whole flow on one machine with no bunq account and no network.
//!
//! Starts a fake bunq (in this process) and the real `bunq-gateway` binary (a child
//! process, SQLite file under `target/demo/`), runs sandbox-setup against the fake,
//! connects a demo end user through the real OAuth redirects, lists their accounts, tops
//! one up and pays from it through the gateway, then shuts everything down.

use std::time::{Duration, Instant};

use bunq_testkit::{FakeBunq, FakeConfig};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::gateway_process::{GatewayProcess, build_gateway, call, free_port, workspace_root};
use crate::progress::{Progress, StepError};
use crate::sandbox::{self, SandboxArgs};

/// The command line of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Leave the fake bunq and the gateway running, print their URLs, and wait for Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Onboard as a PSD2 provider (`sandbox-setup --psd2`, twice: the second run must
    /// make nothing new at bunq), so that the gateway's OAuth client is the provider's.
    #[arg(long)]
    pub psd2: bool,
}

/// What a second `sandbox-setup --psd2` must not call again.
const PSD2_ONCE: [&str; 5] = [
    "POST /installation",
    "POST /payment-service-provider-credential",
    "POST /device-server",
    "POST /session-server",
    "POST /user/{id}/oauth-client",
];

const DEMO_USER: &str = "demo-alice";

pub async fn run(args: &DemoArgs) -> Result<(), StepError> {
    let started = Instant::now();
    let workspace = workspace_root();
    let demo_dir = workspace.join("target/demo");
    // A fresh database each run: the demo shows a first connection.
    let _ = std::fs::remove_dir_all(&demo_dir);
    std::fs::create_dir_all(&demo_dir)
        .map_err(|e| fail("prepare target/demo", e, "check disk space"))?;

    let mut progress = Progress::new(9 + usize::from(args.psd2));
    let gateway_bin = progress
        .step(
            "build bunq-gateway",
            "run `cargo build -p bunq-gateway` to see the compiler's message",
            async {
                build_gateway(&workspace, false).map(|p| (p.clone(), p.display().to_string()))
            },
        )
        .await?;

    let fake = progress
        .step("start bunq-fake", "is 127.0.0.1 available?", async {
            let fake = FakeBunq::start_with(FakeConfig::default()).await?;
            let line = format!("API {}", fake.api_base());
            Ok::<_, bunq_testkit::FakeError>((fake, line))
        })
        .await?;

    let port = free_port().map_err(|e| fail("pick a port", e, "is 127.0.0.1 available?"))?;
    let gateway_url = format!("http://127.0.0.1:{port}");
    let mut setup = SandboxArgs::against_fake(
        &fake,
        &demo_dir,
        &gateway_url,
        &demo_dir.join("bunq-gateway.sqlite3"),
    );
    setup.psd2 = args.psd2;
    let flag = if args.psd2 { " --psd2" } else { "" };
    println!(
        "---- cargo xtask sandbox-setup{flag} --api-base-url {} ----",
        setup.api_base_url
    );
    let mut outcome = sandbox::run(&setup).await?;
    println!("---- sandbox-setup done ----");
    if args.psd2 {
        let before = PSD2_ONCE.map(|endpoint| fake.calls(endpoint));
        println!("---- cargo xtask sandbox-setup{flag} again: everything reused ----");
        outcome = sandbox::run(&setup).await?;
        let again = PSD2_ONCE.map(|endpoint| fake.calls(endpoint));
        if again != before {
            return Err(fail(
                "sandbox-setup --psd2, second run",
                format!("{PSD2_ONCE:?} went from {before:?} to {again:?} calls"),
                "the second run must reuse the stored provider context",
            ));
        }
        println!("---- sandbox-setup done; nothing new at bunq ----");
    }
    let bearer = format!("Bearer {}", outcome.gateway_api_key.expose_secret());

    let gateway = progress
        .step(
            "start bunq-gateway",
            "read target/demo/gateway.log",
            async {
                let log = demo_dir.join("gateway.log");
                let gateway =
                    GatewayProcess::start(&gateway_bin, &outcome.config_path, &gateway_url, &log)
                        .await?;
                let line = format!(
                    "{gateway_url} ready after {} ms (log: {})",
                    gateway.ready_after.as_millis(),
                    log.display()
                );
                Ok::<_, String>((gateway, line))
            },
        )
        .await?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail("HTTP client", e, "none"))?;

    let authorization_url = progress
        .step(
            "POST /v1/authorizations",
            "check target/demo/gateway.log",
            async {
                let body = call(
                    &http,
                    &bearer,
                    reqwest::Method::POST,
                    &format!("{gateway_url}/v1/authorizations"),
                    Some(json!({ "user_ref": DEMO_USER })),
                    201,
                )
                .await?;
                let url = body["authorization_url"]
                    .as_str()
                    .ok_or_else(|| format!("no authorization_url in {body}"))?
                    .to_owned();
                Ok::<_, String>((url.clone(), format!("send {DEMO_USER} to {url}")))
            },
        )
        .await?;

    progress
        .step(
            "the end user consents at bunq (redirects followed like a browser)",
            "check target/demo/gateway.log for the callback",
            async {
                // reqwest follows the fake's 302 to the gateway's /oauth/callback.
                let response = http
                    .get(&authorization_url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status();
                let landed = response.url().path().to_owned();
                if !status.is_success() {
                    return Err(format!(
                        "ended at {landed} with {status}: {}",
                        response.text().await.unwrap_or_default()
                    ));
                }
                Ok(((), format!("landed on {landed} with {status}")))
            },
        )
        .await?;

    let bunq_user_id = progress
        .step(
            "GET /v1/users/demo-alice",
            "the callback did not connect the user",
            async {
                let body = call(
                    &http,
                    &bearer,
                    reqwest::Method::GET,
                    &format!("{gateway_url}/v1/users/{DEMO_USER}"),
                    None,
                    200,
                )
                .await?;
                let id = body["bunq_user_id"].as_u64().ok_or("no bunq_user_id")?;
                Ok::<_, String>((id, format!("connected as bunq user {id}")))
            },
        )
        .await?;

    let proxy = format!("{gateway_url}/v1/users/{DEMO_USER}/bunq/user/{bunq_user_id}");
    if args.psd2 {
        progress
            .step(
                "the grant is the PSD2 provider's (GET user/{id} through the gateway)",
                "the gateway's OAuth client is not the provider's: check gateway.toml",
                async {
                    let body =
                        call(&http, &bearer, reqwest::Method::GET, &proxy, None, 200).await?;
                    let provider = body
                        .pointer("/Response/0/UserApiKey/requested_by_user/UserPaymentServiceProvider/id")
                        .and_then(Value::as_u64)
                        .ok_or_else(|| format!("no UserPaymentServiceProvider requested this grant: {body}"))?;
                    Ok::<_, String>((
                        (),
                        format!("UserApiKey {bunq_user_id} requested by UserPaymentServiceProvider {provider}"),
                    ))
                },
            )
            .await?;
    }
    let account_id = progress
        .step(
            "list monetary accounts through the gateway",
            "check target/demo/gateway.log",
            async {
                let body = call(
                    &http,
                    &bearer,
                    reqwest::Method::GET,
                    &format!("{proxy}/monetary-account-bank"),
                    None,
                    200,
                )
                .await?;
                let accounts = accounts(&body);
                let first = accounts.first().map(|a| a.0).ok_or("no accounts")?;
                let listed = accounts
                    .iter()
                    .map(|(id, balance)| format!("#{id} EUR {balance}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok::<_, String>((first, listed))
            },
        )
        .await?;

    progress
        .step("top up from sugardaddy@bunq.com, then pay EUR 12.50", "check target/demo/gateway.log", async {
            let inquiry = json!({
                "amount_inquired": { "value": "100.00", "currency": "EUR" },
                "counterparty_alias": { "type": "EMAIL", "value": "sugardaddy@bunq.com", "name": "Sugar Daddy" },
                "description": "demo top-up", "allow_bunqme": false,
            });
            call(&http, &bearer, reqwest::Method::POST, &format!("{proxy}/monetary-account/{account_id}/request-inquiry"), Some(inquiry), 200).await?;
            let payment = json!({
                "amount": { "value": "12.50", "currency": "EUR" },
                "counterparty_alias": { "type": "EMAIL", "value": "sugardaddy@bunq.com", "name": "Sugar Daddy" },
                "description": "demo payment",
            });
            let body = call(&http, &bearer, reqwest::Method::POST, &format!("{proxy}/monetary-account/{account_id}/payment"), Some(payment), 200).await?;
            let payment_id = body.pointer("/Response/0/Id/id").and_then(Value::as_u64).ok_or("no payment id")?;
            let after = call(&http, &bearer, reqwest::Method::GET, &format!("{proxy}/monetary-account-bank"), None, 200).await?;
            let balance = accounts(&after).into_iter().find(|a| a.0 == account_id).map(|a| a.1).unwrap_or_default();
            Ok::<_, String>(((), format!("payment {payment_id}; account #{account_id} now holds EUR {balance}")))
        })
        .await?;

    if args.keep_running {
        println!(
            "\nRunning. Try:\n  curl -H '{bearer}' {gateway_url}/v1/users/{DEMO_USER}\n  curl -H '{bearer}' {proxy}/monetary-account-bank\n  fake bunq: {}  (control: {})\nCtrl-C to stop.",
            fake.api_base(),
            fake.control_url()
        );
        let _ = tokio::signal::ctrl_c().await;
    }

    progress
        .step(
            "shut down",
            "a process may be left: check `pgrep bunq-gateway`",
            async {
                let code = gateway.terminate()?;
                fake.shutdown().await;
                Ok::<_, String>(((), format!("gateway exited with {code}; fake stopped")))
            },
        )
        .await?;
    println!(
        "\nDemo finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fail(step: &str, e: impl std::fmt::Display, hint: &str) -> StepError {
    StepError {
        step: step.into(),
        detail: e.to_string(),
        hint: hint.into(),
    }
}

/// (id, balance) of each account in a monetary-account-bank list.
fn accounts(body: &Value) -> Vec<(u64, String)> {
    body["Response"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("MonetaryAccountBank"))
        .filter_map(|a| {
            let id = a["id"].as_u64()?;
            let balance = a
                .pointer("/balance/value")
                .and_then(Value::as_str)
                .unwrap_or("?");
            Some((id, balance.to_owned()))
        })
        .collect()
}
