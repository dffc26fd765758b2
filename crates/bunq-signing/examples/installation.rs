//! bunq's handshake by hand: installation, device-server and session-server with a plain
//! HTTP client (`reqwest`) and this crate for the keys and signatures, then one signed
//! GET. What `bunq-session` does for you, shown under a client of your choice.
//!
//! Offline, against the fake bunq of `bunq-testkit` started in this process:
//!
//! ```sh
//! cargo run -p bunq-signing --example installation
//! ```

use bunq_signing::{CLIENT_SIGNATURE_HEADER, PrivateKey, SERVER_SIGNATURE_HEADER, ServerPublicKey};
use serde_json::{Value, json};

/// The header that carries the installation token, then the session token.
const AUTHENTICATION_HEADER: &str = "X-Bunq-Client-Authentication";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = bunq_testkit::FakeBunq::start().await?;
    let api_key = fake.create_sandbox_user().api_key;
    let api = fake.api_base();
    let http = reqwest::Client::new();

    // 1. Installation: our public key in, bunq's server key and a token out. Unsigned.
    let key = PrivateKey::generate()?;
    let body = json!({ "client_public_key": key.public_key_pem() }).to_string();
    let answer: Value = http
        .post(format!("{api}/installation"))
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let installation_token = find(&answer, "Token", "token")?;
    let server_key =
        ServerPublicKey::from_pem(&find(&answer, "ServerPublicKey", "server_public_key")?)?;
    println!("installation: token received, server key read");

    // 2. device-server and 3. session-server: bodies signed with our key, answers
    // verified with bunq's before they are read.
    let device = json!({ "description": "bunq-signing example", "secret": api_key });
    signed_post(
        &http,
        &key,
        &server_key,
        &format!("{api}/device-server"),
        &installation_token,
        &device,
    )
    .await?;
    println!("device-server: answer verified");

    let session = json!({ "secret": api_key });
    let answer = signed_post(
        &http,
        &key,
        &server_key,
        &format!("{api}/session-server"),
        &installation_token,
        &session,
    )
    .await?;
    let session_token = find(&answer, "Token", "token")?;
    println!("session-server: answer verified, session open");

    // 4. Any call with the session: a GET signs the empty body.
    let response = http
        .get(format!("{api}/user"))
        .header(AUTHENTICATION_HEADER, &session_token)
        .header(CLIENT_SIGNATURE_HEADER, key.sign_body(b"").as_str())
        .send()
        .await?;
    let signature = header(&response, SERVER_SIGNATURE_HEADER)?;
    let body = response.bytes().await?;
    server_key.verify_body(&body, &signature)?;
    println!("GET /user: answer verified, {} bytes", body.len());
    Ok(())
}

/// POSTs `body` signed with `key`, and returns the answer once `server_key` verified it.
async fn signed_post(
    http: &reqwest::Client,
    key: &PrivateKey,
    server_key: &ServerPublicKey,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<Value, Box<dyn std::error::Error>> {
    // Sign the exact bytes sent: serialise once, sign and send the same buffer.
    let bytes = body.to_string().into_bytes();
    let response = http
        .post(url)
        .header(AUTHENTICATION_HEADER, token)
        .header(CLIENT_SIGNATURE_HEADER, key.sign_body(&bytes).as_str())
        .body(bytes)
        .send()
        .await?
        .error_for_status()?;
    let signature = header(&response, SERVER_SIGNATURE_HEADER)?;
    let answer = response.bytes().await?;
    server_key.verify_body(&answer, &signature)?;
    Ok(serde_json::from_slice(&answer)?)
}

fn header(response: &reqwest::Response, name: &str) -> Result<String, String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| format!("no {name} header"))
}

/// `Response[].{object}.{field}` of a bunq answer.
fn find(answer: &Value, object: &str, field: &str) -> Result<String, String> {
    answer["Response"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|item| item[object][field].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("no {object}.{field} in the answer"))
}
