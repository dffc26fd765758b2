//! bunq's callbacks: the subscriptions (notification filters) the gateway keeps for
//! each connected user, and the public route bunq POSTs them to.
//!
//! A callback is a hint from the internet, so the route checks before it stores, in
//! order and cheapest first where the order allows: the opaque id names a connected
//! user (404), the body is within `callbacks.max_body_bytes` (413) and a NotificationUrl
//! (400), the source address is allowed (403), and `X-Bunq-Server-Signature` verifies
//! with the user's bunq server key (401). Nothing refused is stored. An accepted
//! callback is committed to the outbox before the 200, so bunq never needs to retry
//! one we took; bunq's retries of it (the same body) are stored once.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use bunq_session::{CredentialId, FilterScope, NotificationFilter};
use bunq_store::{NewEvent, Recorded, UserStatus, callback_dedupe_key};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::Shared;
use crate::config::CallbackSettings;
use crate::connect::valid_user_ref;
use crate::error::ApiError;
use crate::proxy;

/// The path prefix bunq is given; the opaque id follows.
pub(crate) const CALLBACK_PATH: &str = "/bunq/callbacks";

/// What bunq POSTs: `{"NotificationUrl": {...}}`.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "NotificationUrl")]
    notification: Notification,
}

#[derive(Deserialize)]
struct Notification {
    category: String,
    event_type: String,
    #[serde(default)]
    object: Value,
}

impl Notification {
    /// An `OAUTH` callback about a withdrawn grant. bunq documents the category as
    /// "notifications for revoked OAuth connections" without naming its event types,
    /// so a `REVOKED` in the event type or as the status of the object counts.
    fn is_revocation(&self) -> bool {
        let status_revoked = self.object.as_object().is_some_and(|m| {
            m.values()
                .any(|inner| inner.get("status").and_then(Value::as_str) == Some("REVOKED"))
        });
        self.category == "OAUTH" && (self.event_type.contains("REVOKED") || status_revoked)
    }
}

/// Whether `body` is a NotificationUrl (`None`: it is not) that revokes the grant.
pub(crate) fn is_revocation_body(body: &[u8]) -> Option<bool> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.notification.is_revocation())
}

fn refused(status: StatusCode, code: &'static str, message: &'static str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The client address: the peer, or, when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy. `None` when a forwarded
/// entry is not an address (refused: we cannot tell who sent it).
fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    settings: &CallbackSettings,
) -> Option<IpAddr> {
    let trusted = |ip: &IpAddr| settings.trusted_proxies.iter().any(|n| n.contains(ip));
    let peer = peer.to_canonical();
    if !trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    // Rightmost first: each hop appends, and only hops we trust are believed.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("?").rsplit(','));
    for hop in hops {
        let ip: IpAddr = hop.trim().parse().ok()?;
        client = ip.to_canonical();
        if !trusted(&client) {
            break;
        }
    }
    Some(client)
}

/// `POST /bunq/callbacks/{id}`: public (bunq has no bearer), see the module docs.
/// Counted by outcome in `bunq_gateway_callbacks_received_total`.
pub(crate) async fn receive(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(callback_id): Path<String>,
    request: Request,
) -> Response {
    let (outcome, response) = check_and_store(&state, peer, &callback_id, request).await;
    state.metrics.callback_received(outcome);
    response
}

/// [`receive`]'s work: the outcome's metric label and the answer.
async fn check_and_store(
    state: &Shared,
    peer: SocketAddr,
    callback_id: &str,
    request: Request,
) -> (&'static str, Response) {
    let settings = &state.callback_settings;
    // 1. A connected user's id.
    let user_ref = match state.store.user_of_callback(callback_id).await {
        Ok(Some(user_ref)) => user_ref,
        Ok(None) => return (UNKNOWN, not_found()),
        Err(e) => return (ERROR, ApiError::from(e).into_response()),
    };
    let user = match state.store.user(&user_ref).await {
        Ok(Some(u)) if u.status == UserStatus::Connected => u,
        Ok(_) => return (UNKNOWN, not_found()),
        Err(e) => return (ERROR, ApiError::from(e).into_response()),
    };
    // 2. Size and shape.
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, settings.max_body_bytes).await else {
        return (
            "too_large",
            ApiError::too_large(settings.max_body_bytes).into_response(),
        );
    };
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return (
            "malformed",
            refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body is not a bunq NotificationUrl",
            ),
        );
    };
    // 3. Source.
    if !settings.allowed_sources.is_empty() {
        let allowed = client_address(peer.ip(), &parts.headers, settings)
            .is_some_and(|ip| settings.allowed_sources.iter().any(|n| n.contains(&ip)));
        if !allowed {
            tracing::warn!(
                user_ref,
                "callback from outside callbacks.allowed_sources refused"
            );
            return (
                "source_not_allowed",
                refused(StatusCode::FORBIDDEN, "forbidden", "source not allowed"),
            );
        }
    }
    // 4. bunq's signature, with the server key of the user's installation.
    let credential = user.live_credential().to_owned();
    let signature = parts
        .headers
        .get(bunq_signing::SERVER_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    match signature {
        Some(signature) => {
            let context = match state.store.load_context(&credential).await {
                Ok(Some(context)) => context,
                Ok(None) => return (UNKNOWN, not_found()),
                Err(e) => return (ERROR, ApiError::from(e).into_response()),
            };
            if context
                .installation
                .server_public_key
                .verify_body(&body, signature)
                .is_err()
            {
                tracing::warn!(user_ref, "callback with a bad bunq signature refused");
                return (
                    "signature_invalid",
                    refused(
                        StatusCode::UNAUTHORIZED,
                        "signature_invalid",
                        "X-Bunq-Server-Signature does not verify",
                    ),
                );
            }
        }
        None if settings.require_signature => {
            return (
                "signature_missing",
                refused(
                    StatusCode::UNAUTHORIZED,
                    "signature_required",
                    "X-Bunq-Server-Signature is required",
                ),
            );
        }
        None => {}
    }
    let notification = envelope.notification;
    let event = NewEvent {
        user_ref: user_ref.clone(),
        event_type: format!("bunq.{}", notification.category),
        payload: body.to_vec(),
        dedupe_key: Some(callback_dedupe_key(&body)),
    };
    let recorded = match state.store.record_event(event).await {
        Ok(recorded) => recorded,
        Err(e) => return (ERROR, ApiError::from(e).into_response()),
    };
    state.relay.wake();
    let (id, duplicate) = match recorded {
        Recorded::New(id) => (id, false),
        Recorded::Duplicate(id) => (id, true),
        _ => {
            return (
                ERROR,
                ApiError::internal("unexpected outcome").into_response(),
            );
        }
    };
    if !duplicate && notification.is_revocation() {
        let credential = CredentialId::new(credential);
        proxy::revoke_user(
            state,
            &user_ref,
            &credential,
            "bunq called back: the OAuth grant was revoked",
        )
        .await;
    }
    let outcome = if duplicate { "duplicate" } else { "accepted" };
    (
        outcome,
        Json(serde_json::json!({ "event_id": id, "duplicate": duplicate })).into_response(),
    )
}

/// Outcome labels used more than once.
const UNKNOWN: &str = "unknown_id";
const ERROR: &str = "error";

fn not_found() -> Response {
    refused(StatusCode::NOT_FOUND, "not_found", "no such callback")
}

/// The callback URL of `user_ref` (creating its opaque id on first use).
async fn callback_url(state: &Shared, user_ref: &str) -> Result<String, ApiError> {
    let id = state.store.callback_id(user_ref).await?;
    Ok(format!(
        "{}{CALLBACK_PATH}/{id}",
        state.public_url.trim_end_matches('/')
    ))
}

/// Our subscriptions and every filter at the user's level.
#[derive(Serialize)]
pub(crate) struct Subscriptions {
    callback_url: String,
    categories: Vec<String>,
    notification_filters: Vec<NotificationFilter>,
}

fn ours(url: &str, filters: Vec<NotificationFilter>) -> Subscriptions {
    let categories = filters
        .iter()
        .filter(|f| f.notification_target == url)
        .map(|f| f.category.clone())
        .collect();
    Subscriptions {
        callback_url: url.to_owned(),
        categories,
        notification_filters: filters,
    }
}

/// Points `categories` of `user_ref` at the gateway: bunq keeps one list per user and
/// a POST replaces it, so the list is read first and filters of other targets (the
/// application's own) are kept.
pub(crate) async fn subscribe(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
    categories: &[String],
) -> Result<Subscriptions, ApiError> {
    let url = callback_url(state, user_ref).await?;
    let current = state
        .sessions
        .notification_filters(credential, FilterScope::User)
        .await
        .map_err(|e| proxy::session_error(&e))?;
    let mut wanted: Vec<NotificationFilter> = current
        .into_iter()
        .filter(|f| f.notification_target != url)
        .collect();
    wanted.extend(categories.iter().map(|c| NotificationFilter::new(c, &url)));
    let stored = state
        .sessions
        .set_notification_filters(credential, FilterScope::User, &wanted)
        .await
        .map_err(|e| proxy::session_error(&e))?;
    Ok(ours(&url, stored))
}

/// Removes the gateway's filters of `user_ref` at bunq, keeping the application's own
/// (at deletion). Nothing to do when the user never had a callback URL.
pub(crate) async fn unsubscribe(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
) -> Result<(), ApiError> {
    if !state.store.has_callback_id(user_ref).await? {
        return Ok(());
    }
    subscribe(state, user_ref, credential, &[])
        .await
        .map(|_| ())
}

/// After a connection: subscribes the configured categories before the connection is
/// announced (so that a user reads `connected` with callbacks in place, and no event of
/// the first minutes is missed), then, if bunq did not answer, a few more times in the
/// background (the user is connected either way; `PUT .../callbacks` can retry).
pub(crate) async fn subscribe_after_connect(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
) {
    let categories = &state.callback_settings.categories;
    if categories.is_empty() {
        return;
    }
    if subscribe_logged(state, user_ref, credential, 0).await {
        return;
    }
    let (state, user_ref, credential) = (state.clone(), user_ref.to_owned(), credential.clone());
    tokio::spawn(async move {
        for attempt in 1..3u32 {
            tokio::time::sleep(std::time::Duration::from_secs(2 << attempt)).await;
            if subscribe_logged(&state, &user_ref, &credential, attempt).await {
                return;
            }
        }
    });
}

/// One attempt of [`subscribe_after_connect`], logged either way; whether it succeeded.
async fn subscribe_logged(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
    attempt: u32,
) -> bool {
    let categories = &state.callback_settings.categories;
    match subscribe(state, user_ref, credential, categories).await {
        Ok(_) => {
            tracing::info!(user_ref, "bunq callbacks subscribed");
            true
        }
        Err(e) => {
            tracing::warn!(
                user_ref,
                attempt,
                error = e.message(),
                "subscribing bunq callbacks failed"
            );
            false
        }
    }
}

/// `GET /v1/users/{user_ref}/callbacks`.
pub(crate) async fn get_callbacks(
    State(state): State<Shared>,
    Path(user_ref): Path<String>,
) -> Result<Json<Subscriptions>, ApiError> {
    valid_user_ref(&user_ref)?;
    let credential = proxy::route(&state, &user_ref).await?;
    let url = callback_url(&state, &user_ref).await?;
    let filters = state
        .sessions
        .notification_filters(&credential, FilterScope::User)
        .await
        .map_err(|e| proxy::session_error(&e))?;
    Ok(Json(ours(&url, filters)))
}

#[derive(Deserialize)]
pub(crate) struct PutCallbacks {
    categories: Vec<String>,
}

/// `PUT /v1/users/{user_ref}/callbacks {"categories": [...]}` (empty: unsubscribe).
pub(crate) async fn put_callbacks(
    State(state): State<Shared>,
    Path(user_ref): Path<String>,
    body: Result<Json<PutCallbacks>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Subscriptions>, ApiError> {
    valid_user_ref(&user_ref)?;
    let Json(body) =
        body.map_err(|_| ApiError::bad_request("expected {\"categories\": [\"PAYMENT\", ...]}"))?;
    if body
        .categories
        .iter()
        .any(|c| c.is_empty() || !c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
    {
        return Err(ApiError::bad_request(
            "categories are bunq's upper-case names, e.g. PAYMENT",
        ));
    }
    let credential = proxy::route(&state, &user_ref).await?;
    Ok(Json(
        subscribe(&state, &user_ref, &credential, &body.categories).await?,
    ))
}

/// The `[callbacks]` of a minimal config with `extra` lines in the section.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_settings(extra: &str) -> CallbackSettings {
    let text = format!(
        "public_url = \"http://x\"\n[bunq]\nenvironment = \"sandbox\"\n[oauth]\nclient_id = \"c\"\nclient_secret = \"s\"\n[security]\nencryption_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\napi_keys = [\"0123456789abcdef\"]\n[callbacks]\n{extra}\n"
    );
    crate::Config::from_sources(Some(&text), std::path::Path::new("t"), Vec::new())
        .unwrap()
        .callbacks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &[&str]) -> CallbackSettings {
        test_settings(&format!("trusted_proxies = {trusted:?}"))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let s = settings(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "1.2.3.4, 185.40.108.7, 10.0.0.2".parse().unwrap(),
        );
        let from = |peer: &str, h: &HeaderMap| client_address(peer.parse().unwrap(), h, &s);
        // Through a trusted proxy: the rightmost untrusted hop.
        assert_eq!(from("10.0.0.1", &h), Some("185.40.108.7".parse().unwrap()));
        // Straight from the internet: the header is the sender's own claim.
        assert_eq!(from("8.8.8.8", &h), Some("8.8.8.8".parse().unwrap()));
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(from("10.0.0.1", &h), None);
    }

    #[test]
    fn revocations_are_oauth_callbacks_that_say_revoked() {
        let n = |category: &str, event_type: &str, object: Value| Notification {
            category: category.into(),
            event_type: event_type.into(),
            object,
        };
        assert!(n("OAUTH", "OAUTH_REVOKED", Value::Null).is_revocation());
        assert!(
            n(
                "OAUTH",
                "X",
                serde_json::json!({"G": {"status": "REVOKED"}})
            )
            .is_revocation()
        );
        assert!(!n("PAYMENT", "OAUTH_REVOKED", Value::Null).is_revocation());
        assert!(!n("OAUTH", "OAUTH_CREATED", Value::Null).is_revocation());
    }
}
