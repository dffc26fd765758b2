//! The soak's users: connected through the OAuth redirects (a fresh bunq person topped
//! up, or after a revocation the same person again), deleted, reconnected.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{Soak, bunq_url, error_code};
use crate::gateway_process::call;

/// Steady users: connected at the start, paid from all along (and reconnected when
/// their grant is revoked).
pub const STEADY_USERS: usize = 3;
/// Churn users come and go beside them: at most this many at once.
const MAX_CHURN_USERS: usize = 2;
const CHURN_EVERY: Duration = Duration::from_secs(6);
/// A connect is retried this often (faults hit the consent page and the token exchange).
const CONNECT_ATTEMPTS: usize = 8;
/// How long a consent may take to connect (its turn at session-server included).
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// One end user as the application knows it.
#[derive(Clone, Debug)]
pub struct User {
    pub user_ref: String,
    /// Paid from; never deleted.
    pub steady: bool,
    /// The id in bunq paths (a new one per consent).
    pub bunq_user_id: u64,
    /// The bunq person behind the connection (the same across consents).
    pub person: u64,
    pub account_id: u64,
    pub state: UserState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserState {
    Connected,
    /// bunq refused the grant; the churner reconnects the user.
    Revoked,
    Deleted,
}

/// Every few seconds: reconnects the users bunq revoked (as the same bunq person), then
/// connects a new churn user or deletes the oldest, in turn.
pub(super) async fn churner(soak: &Soak) {
    while !soak.stopped() {
        soak.pause(CHURN_EVERY).await;
        if soak.stopped() {
            break;
        }
        for user in soak.users() {
            if user.state == UserState::Connected
                && status_of(soak, &user.user_ref).await.as_deref() == Some("revoked")
            {
                soak.set_state(&user.user_ref, UserState::Revoked);
            }
        }
        for user in soak
            .users()
            .into_iter()
            .filter(|u| u.state == UserState::Revoked)
        {
            match connect(soak, &user.user_ref, Some(user.person), user.steady).await {
                Ok(again) => {
                    soak.count("reconnected after a revocation");
                    soak.add_user(again);
                }
                Err(e) => {
                    soak.count("reconnects failed");
                    println!("  reconnect of {} failed: {e}", user.user_ref);
                }
            }
        }
        let churn: Vec<User> = soak
            .users()
            .into_iter()
            .filter(|u| !u.steady && u.state != UserState::Deleted)
            .collect();
        if churn.len() < MAX_CHURN_USERS {
            let n = soak.next_user.fetch_add(1, Ordering::Relaxed);
            let user_ref = format!("soak-churn-{n}");
            match connect(soak, &user_ref, None, false).await {
                Ok(user) => {
                    soak.count("connected");
                    soak.add_user(user);
                }
                Err(e) => {
                    soak.count("connects failed");
                    println!("  connect of {user_ref} failed: {e}");
                }
            }
        } else if let Some(oldest) = churn.first() {
            soak.set_state(&oldest.user_ref, UserState::Deleted);
            if delete(soak, &oldest.user_ref).await {
                soak.count("deleted");
            } else {
                soak.count("deletes failed");
            }
        }
    }
}

/// The user's status at the gateway, if it answers.
async fn status_of(soak: &Soak, user_ref: &str) -> Option<String> {
    let user = call(
        &soak.http,
        &soak.bearer,
        reqwest::Method::GET,
        &format!("{}/v1/users/{user_ref}", soak.gateway),
        None,
        200,
    )
    .await
    .ok()?;
    user["status"].as_str().map(str::to_owned)
}

/// `DELETE /v1/users/{user_ref}` until 204 (bounded).
async fn delete(soak: &Soak, user_ref: &str) -> bool {
    let url = format!("{}/v1/users/{user_ref}", soak.gateway);
    for _ in 0..8 {
        let sent = soak
            .http
            .delete(&url)
            .header("Authorization", &soak.bearer)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let code = error_code(&r.text().await.unwrap_or_default());
                soak.answer("DELETE user", status, &code);
                if status == 204 {
                    return true;
                }
            }
            Err(_) => soak.answer("DELETE user", 0, "lost"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Connects `user_ref` through the consent flow, retried: a fresh bunq person (topped
/// up with 500.00) or, after a revocation, `person` again.
pub async fn connect(
    soak: &Soak,
    user_ref: &str,
    person: Option<u64>,
    steady: bool,
) -> Result<User, String> {
    let mut last = String::new();
    let mut consented = None;
    for _ in 0..CONNECT_ATTEMPTS {
        match consent(soak, user_ref, person).await {
            Ok(ids) => {
                consented = Some(ids);
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (bunq_user_id, granted_by) = consented.ok_or(last)?;
    let mut user = User {
        user_ref: user_ref.to_owned(),
        steady,
        bunq_user_id,
        person: granted_by,
        account_id: 0,
        state: UserState::Connected,
    };
    let mut last = String::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let accounts = call(
            &soak.http,
            &soak.bearer,
            reqwest::Method::GET,
            &bunq_url(soak, &user, "monetary-account-bank"),
            None,
            200,
        )
        .await;
        match accounts.map(|a| {
            a.pointer("/Response/0/MonetaryAccountBank/id")
                .and_then(Value::as_u64)
        }) {
            Ok(Some(id)) => {
                user.account_id = id;
                break;
            }
            Ok(None) => last = "no account listed".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if user.account_id == 0 {
        return Err(format!("accounts of {user_ref}: {last}"));
    }
    if person.is_none() {
        top_up(soak, &user).await?;
    }
    Ok(user)
}

/// One trip through the consent flow until the gateway reads `connected`: the bunq user
/// id and the person behind it.
async fn consent(soak: &Soak, user_ref: &str, person: Option<u64>) -> Result<(u64, u64), String> {
    let gateway = &soak.gateway;
    // A fresh person replaces whatever an earlier, seemingly failed attempt connected
    // (else the gateway would refuse the new identity); a returning one is the same.
    let body = call(
        &soak.http,
        &soak.bearer,
        reqwest::Method::POST,
        &format!("{gateway}/v1/authorizations"),
        Some(json!({ "user_ref": user_ref, "replace": person.is_none() })),
        201,
    )
    .await?;
    let mut url = body["authorization_url"]
        .as_str()
        .ok_or("no authorization_url")?
        .to_owned();
    // The fake's test hook: consent as this bunq person (bunq's page would ask them to
    // log in), so that the gateway sees the same identity come back.
    if let Some(person) = person {
        url.push_str(&format!("&user_id={person}"));
    }
    let response = soak
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("consent ended with {status}: {text}"));
    }
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        let user = call(
            &soak.http,
            &soak.bearer,
            reqwest::Method::GET,
            &format!("{gateway}/v1/users/{user_ref}"),
            None,
            200,
        )
        .await?;
        let pending = user["pending_consents"].as_u64().unwrap_or(0);
        match user["status"].as_str() {
            Some("connected") if pending == 0 => {
                let id = user["bunq_user_id"].as_u64().ok_or("no bunq_user_id")?;
                let person = user["granted_by_user_id"]
                    .as_u64()
                    .ok_or("no granted_by_user_id")?;
                return Ok((id, person));
            }
            Some(status) if pending > 0 || status == "connecting" => {}
            other => return Err(format!("consent ended {other:?}: {user}")),
        }
        if Instant::now() > deadline {
            return Err(format!("not connected within {CONNECT_WAIT:?}: {user}"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// 500.00 from the sugar daddy through the gateway, under an `Idempotency-Key`.
async fn top_up(soak: &Soak, user: &User) -> Result<(), String> {
    let url = bunq_url(
        soak,
        user,
        &format!("monetary-account/{}/request-inquiry", user.account_id),
    );
    let body = json!({
        "amount_inquired": {"value": "500.00", "currency": "EUR"},
        "counterparty_alias": {"type": "EMAIL", "value": "sugardaddy@bunq.com", "name": "Sugar Daddy"},
        "description": "soak top-up",
        "allow_bunqme": false,
    });
    let key = format!("top-up-{}-{}", user.user_ref, user.bunq_user_id);
    let mut last = String::new();
    for _ in 0..10 {
        let sent = soak
            .http
            .post(&url)
            .header("Authorization", &soak.bearer)
            .header("Idempotency-Key", &key)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                if status == 200 || error_code(&text) == "already_submitted" {
                    return Ok(());
                }
                last = format!("{status}: {text}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    Err(format!("top-up of {} failed: {last}", user.user_ref))
}

/// Connects the steady users one by one (each takes a session-server window).
pub async fn connect_steady(soak: &Soak) -> Result<(), String> {
    for i in 1..=STEADY_USERS {
        let user = connect(soak, &format!("soak-steady-{i}"), None, true).await?;
        println!(
            "  soak-steady-{i}: bunq person {}, account {}",
            user.person, user.account_id
        );
        soak.count("connected");
        soak.add_user(user);
    }
    Ok(())
}
