//! The OAuth flow from end to end: the developer's OAuth client registered (or found),
//! an end user sent to bunq's authorize URL and back, the code exchanged for their access
//! token, and a session opened with it to list their accounts.
//!
//! Offline, against the fake bunq of `bunq-testkit` started in this process, which plays
//! bunq's consent page and consents at once:
//!
//! ```sh
//! cargo run -p bunq-oauth --example authorize
//! ```
//!
//! Against bunq's sandbox the browser is a person's: print `authorization.url`, let them
//! consent, and hand the query of the request bunq redirects them to (your callback
//! route) to `Callback::from_query`.

use bunq_oauth::{Callback, MemoryStateStore, OAuthEndpoints, OAuthFlow, StateContext};
use bunq_session::{
    ApiRequest, BunqClient, ClientConfig, CredentialId, Environment, MemoryContextStore,
    RateLimitPolicy, SessionManager, SessionManagerConfig,
};
use secrecy::SecretString;

const REDIRECT_URI: &str = "https://app.example/oauth/callback";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = bunq_testkit::FakeBunq::start().await?;

    // The fake does not limit session-server calls; bunq allows one per 30 s per IP, and
    // against bunq the default policy waits for it. Off here so that the example's two
    // sessions (developer, end user) do not wait.
    let config = ClientConfig::new(Environment::Custom {
        api_base: fake.api_base(),
    })
    .rate_limits(RateLimitPolicy::disabled());
    let manager = SessionManager::new(
        BunqClient::new(config)?,
        MemoryContextStore::new(),
        SessionManagerConfig::default(),
    );

    // Once per application: the developer's bunq user and its OAuth client.
    let developer = CredentialId::new("developer");
    let api_key = SecretString::from(fake.create_sandbox_user().api_key);
    manager.connect(&developer, api_key).await?;
    let developer_id = manager.session(&developer).await?.user_id;
    let client =
        bunq_oauth::ensure_oauth_client(&manager, &developer, developer_id, REDIRECT_URI).await?;
    println!(
        "OAuth client {} (client_id {})",
        client.id, client.client_id
    );

    // Per end user: begin stores a single-use state and builds bunq's authorize URL.
    let endpoints = OAuthEndpoints::custom(fake.oauth_authorize_url(), fake.oauth_token_url());
    let flow = OAuthFlow::new(
        client.config(REDIRECT_URI, endpoints),
        MemoryStateStore::new(),
    )?;
    let authorization = flow
        .begin(StateContext {
            user_ref: "alice".into(),
            return_to: Some("/accounts".into()),
            replace: false,
        })
        .await?;
    println!("send the end user to bunq's authorize URL (it holds the state; not printed)");

    // The end user's browser: bunq redirects it to REDIRECT_URI with `code` and `state`.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let consent = browser.get(authorization.url.as_str()).send().await?;
    let location = consent
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or("bunq did not redirect")?
        .to_str()?
        .to_owned();
    let (_, query) = location.split_once('?').ok_or("no query in the redirect")?;

    // The callback: the state taken once, the code exchanged once.
    let done = flow.complete(&Callback::from_query(query)?).await?;
    println!(
        "callback for {} (return to {:?}): access token received",
        done.context.user_ref, done.context.return_to
    );

    // The token is the end user's credential for bunq-session.
    let alice = CredentialId::new(done.context.user_ref.as_str());
    manager.connect(&alice, done.token.access_token).await?;
    // An OAuth session acts as a `UserApiKey`: its own user id in the path, the granting
    // user's accounts behind it (`bunq-api` has typed calls for them).
    let user_id = manager.session(&alice).await?.user_id;
    let accounts = manager
        .request(
            &alice,
            ApiRequest::get(format!("user/{user_id}/monetary-account")),
        )
        .await?
        .into_result()?;
    for (kind, account) in accounts.items()? {
        println!("  alice's {kind} {}", account["id"]);
    }
    Ok(())
}
