//! Lists a bunq user's accounts, tops one up and lists them again, through a
//! `SessionManager`: installation, device-server and session-server once, then the same
//! session for every call.
//!
//! Offline, against the fake bunq of `bunq-testkit` started in this process:
//!
//! ```sh
//! cargo run -p bunq-session --example list_accounts
//! ```
//!
//! Against bunq's sandbox, put `Environment::Sandbox` in the `ClientConfig` and a sandbox
//! API key (`cargo xtask sandbox-setup` makes one) in place of the fake's.

use bunq_session::{
    ApiRequest, BunqClient, ClientConfig, CredentialId, Environment, MemoryContextStore,
    SessionManager, SessionManagerConfig,
};
use secrecy::SecretString;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = bunq_testkit::FakeBunq::start().await?;
    let user = fake.create_sandbox_user();
    println!("fake bunq at {}", fake.api_base());

    let config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .user_agent("bunq-session-example/1.0");
    let manager = SessionManager::new(
        BunqClient::new(config)?,
        MemoryContextStore::new(),
        SessionManagerConfig::default(),
    );

    let alice = CredentialId::new("alice");
    let context = manager
        .connect(&alice, SecretString::from(user.api_key))
        .await?;
    let user_id = context.session.as_ref().map_or(user.user_id, |s| s.user_id);
    println!("connected: user {user_id}");

    print_accounts(&manager, &alice, user_id).await?;

    // The sandbox's way to get money: a request to sugardaddy@bunq.com, paid at once.
    let account_id = user.monetary_account_ids[0];
    let top_up = serde_json::json!({
        "amount_inquired": { "value": "100.00", "currency": "EUR" },
        "counterparty_alias": { "type": "EMAIL", "value": "sugardaddy@bunq.com" },
        "description": "example top-up",
        "allow_bunqme": false,
    });
    let path = format!("user/{user_id}/monetary-account/{account_id}/request-inquiry");
    let answer = manager
        .request(&alice, ApiRequest::post_json(path, &top_up))
        .await?
        .into_result()?;
    println!(
        "topped up account {account_id}: request-inquiry {}",
        bunq_session::envelope::id(&answer.body)?
    );

    print_accounts(&manager, &alice, user_id).await?;
    println!(
        "bunq calls: {} installation, {} device-server, {} session-server",
        fake.calls("POST /installation"),
        fake.calls("POST /device-server"),
        fake.calls("POST /session-server"),
    );
    Ok(())
}

/// Lists the user's accounts from bunq's envelope as it comes (`bunq-api` has them typed).
async fn print_accounts(
    manager: &SessionManager<MemoryContextStore>,
    who: &CredentialId,
    user_id: u64,
) -> Result<(), bunq_session::Error> {
    let answer = manager
        .request(
            who,
            ApiRequest::get(format!("user/{user_id}/monetary-account")),
        )
        .await?
        .into_result()?;
    for (kind, account) in answer.items()? {
        let iban = account["alias"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|alias| alias["type"] == "IBAN")
            .and_then(|alias| alias["value"].as_str())
            .unwrap_or("(no IBAN)");
        let balance = &account["balance"];
        println!(
            "  {kind} {} {iban} {} {}",
            account["id"],
            balance["value"].as_str().unwrap_or("?"),
            balance["currency"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
