//! The control endpoint under `/_fake`: knobs, counters and shortcuts over HTTP, for the
//! `bunq-fake` binary (documented in the crate docs). Never counted, never delayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::knobs::Knobs;
use crate::server::Shared;
use crate::world::AccountKind;

fn bad(text: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": text}))).into_response()
}

/// `GET /_fake/calls` → `{"total": n, "calls": {"POST /installation": 1, ...},
/// "rate_limited": {"POST /session-server": 0, ...}}` (429s of the limits per endpoint).
pub(crate) async fn calls(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({
        "total": shared.total_calls(),
        "calls": shared.all_calls(),
        "rate_limited": shared.all_rate_limited(),
    }))
    .into_response()
}

/// What `POST /_fake/knobs` takes; every field is optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobsBody {
    session_timeout_secs: Option<u64>,
    #[serde(default)]
    expire_all_sessions: bool,
    fail_next_with_insufficient_authorisation: Option<u32>,
    tamper_next_signatures: Option<u32>,
    latency_ms: Option<u64>,
    fail_next_with_status: Option<FailWith>,
    deny_consent: Option<bool>,
    rate_limits: Option<bool>,
    cut_after_execute: Option<u32>,
    delay_after_execute: Option<DelayAfter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailWith {
    status: u16,
    n: u32,
    retry_after_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelayAfter {
    delay_ms: u64,
    n: u32,
}

/// `POST /_fake/knobs`.
pub(crate) async fn knobs(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: KnobsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("invalid knobs: {e}")),
    };
    if let Some(f) = &body.fail_next_with_status {
        if StatusCode::from_u16(f.status).is_err() {
            return bad(format!("invalid status {}", f.status));
        }
    }
    let knobs = Knobs(shared);
    if let Some(s) = body.session_timeout_secs {
        knobs.set_session_timeout(Duration::from_secs(s));
    }
    if body.expire_all_sessions {
        knobs.expire_all_sessions();
    }
    if let Some(n) = body.fail_next_with_insufficient_authorisation {
        knobs.fail_next_with_insufficient_authorisation(n);
    }
    if let Some(n) = body.tamper_next_signatures {
        knobs.tamper_next_signatures(n);
    }
    if let Some(ms) = body.latency_ms {
        knobs.set_latency(Duration::from_millis(ms));
    }
    if let Some(f) = body.fail_next_with_status {
        match f.retry_after_secs {
            Some(secs) => knobs.fail_next_with_status_and_retry_after(f.status, f.n, secs),
            None => knobs.fail_next_with_status(f.status, f.n),
        }
    }
    if let Some(d) = body.deny_consent {
        knobs.deny_consent(d);
    }
    if let Some(on) = body.rate_limits {
        knobs.set_rate_limits(on);
    }
    if let Some(n) = body.cut_after_execute {
        knobs.cut_after_execute(n);
    }
    if let Some(d) = body.delay_after_execute {
        knobs.delay_after_execute(Duration::from_millis(d.delay_ms), d.n);
    }
    Json(json!({"ok": true})).into_response()
}

/// `POST /_fake/sandbox-user` → `{"user_id", "api_key", "monetary_account_ids"}`.
pub(crate) async fn sandbox_user(State(shared): State<Arc<Shared>>) -> Response {
    let (user_id, api_key, ids) = shared.world().create_sandbox_user();
    Json(json!({"user_id": user_id, "api_key": api_key, "monetary_account_ids": ids}))
        .into_response()
}

/// `POST /_fake/oauth-grant {"user_id"}` → `{"access_token"}`.
pub(crate) async fn oauth_grant(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Body {
        user_id: u64,
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("expected {{\"user_id\": n}}: {e}")),
    };
    match crate::grant_oauth_access(&shared, body.user_id) {
        Some(token) => Json(json!({"access_token": token})).into_response(),
        None => bad(format!("unknown user {}", body.user_id)),
    }
}

/// `POST /_fake/revoke-oauth-grants {"user_id"}` → `{"revoked": n}`: the user withdraws
/// every OAuth grant it gave. An unknown user has nothing to revoke: `{"revoked": 0}`.
pub(crate) async fn revoke_oauth_grants(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    struct Body {
        user_id: u64,
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad(format!("expected {{\"user_id\": n}}: {e}")),
    };
    let revoked = Knobs(shared).revoke_oauth_grants(body.user_id);
    Json(json!({"revoked": revoked})).into_response()
}

/// `POST /_fake/monetary-account {"user_id", "type", "description"?, "status"?}` →
/// `{"monetary_account_id"}`: a new account of the user.
pub(crate) async fn monetary_account(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        user_id: u64,
        #[serde(rename = "type")]
        kind: String,
        description: Option<String>,
        status: Option<String>,
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return bad(format!(
                "expected {{\"user_id\": n, \"type\": \"savings\"}}: {e}"
            ));
        }
    };
    let Some(kind) = AccountKind::from_name(&body.kind) else {
        return bad(format!(
            "unknown account type {:?} (bank, savings, joint, external)",
            body.kind
        ));
    };
    let description = body.description.as_deref().unwrap_or("bunq account");
    let Some(id) = shared
        .world()
        .create_account(body.user_id, kind, description)
    else {
        return bad(format!("unknown user {}", body.user_id));
    };
    if let Some(status) = &body.status {
        crate::set_account_status(&shared, id, status);
    }
    Json(json!({"monetary_account_id": id})).into_response()
}

/// `GET /_fake/payment-count` → `{"payment_count": n}`, payments executed since start.
pub(crate) async fn payment_count(State(shared): State<Arc<Shared>>) -> Response {
    let n = shared.world().payments.len();
    Json(json!({"payment_count": n})).into_response()
}

/// `GET /_fake/payments` → `{"payments": [{"id", "monetary_account_id", "amount",
/// "description", "counterparty_alias"}]}`: every payment executed since start, oldest
/// first, so that a client can count how often each of its payments executed.
pub(crate) async fn payments(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<serde_json::Value> = {
        let world = shared.world();
        world
            .payments
            .iter()
            .map(|p| {
                json!({
                    "id": p.id,
                    "monetary_account_id": p.account_id,
                    "amount": crate::world::format_cents(p.amount_cents),
                    "description": p.description,
                    "counterparty_alias": p.counterparty,
                })
            })
            .collect()
    };
    Json(json!({"payments": list})).into_response()
}

/// `GET /_fake/secrets` → `{"api_keys", "oauth_access_tokens", "oauth_client_secrets",
/// "installation_tokens", "session_tokens"}`: every credential the fake issued since
/// start (sessions ended or expired included), for a client's check that none of them
/// is stored or logged in clear. A test hook bunq has no equivalent of.
pub(crate) async fn secrets(State(shared): State<Arc<Shared>>) -> Response {
    let world = shared.world();
    let sorted = |mut v: Vec<String>| {
        v.sort_unstable();
        v
    };
    let body = json!({
        "api_keys": sorted(world.api_keys.keys().cloned().collect()),
        "oauth_access_tokens": sorted(world.access_tokens.keys().cloned().collect()),
        "oauth_client_secrets": sorted(world.oauth_clients.values().map(|c| c.secret.clone()).collect()),
        "installation_tokens": sorted(world.installations.keys().cloned().collect()),
        "session_tokens": world.issued_session_tokens.clone(),
    });
    drop(world);
    Json(body).into_response()
}

/// `GET /_fake/balance?user_id=..&account_id=..` → `{"balance": "500.00"}`.
pub(crate) async fn balance(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(account)) = (id("user_id"), id("account_id")) else {
        return bad("user_id and account_id are required numbers".to_owned());
    };
    match crate::balance_of(&shared, user, account) {
        Some(b) => Json(json!({"balance": b})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such account of that user"})),
        )
            .into_response(),
    }
}

/// `GET /_fake/callbacks` → `{"callbacks": [{"target", "category", "event_type", "body",
/// "signature", "attempts", "delivered"}]}`, every callback sent since start, oldest first.
pub(crate) async fn callbacks(State(shared): State<Arc<Shared>>) -> Response {
    let list: Vec<serde_json::Value> = shared
        .callbacks
        .sent()
        .into_iter()
        .map(|c| {
            json!({
                "target": c.target,
                "category": c.category,
                "event_type": c.event_type,
                "body": String::from_utf8_lossy(&c.body),
                "signature": c.signature,
                "attempts": c.attempts,
                "delivered": c.delivered,
            })
        })
        .collect();
    Json(json!({"callbacks": list})).into_response()
}
