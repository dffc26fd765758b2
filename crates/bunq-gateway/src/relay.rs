//! The relay: delivers the outbox's events to the application's webhook receivers,
//! signed per Standard Webhooks, and the pull API over the same outbox.
//!
//! At least once, in order per user: the store hands out only each user's oldest
//! pending event ([`bunq_store::Store::due_events`]), and an event is marked delivered
//! only after every receiver answered 2xx, so a crash (even SIGKILL) between sending and
//! marking sends it again after the restart. A failed event is retried with exponential
//! back-off and jitter until `callbacks.retry_period_seconds` after it was stored, then
//! parked as dead (listed by the pull API, revived by `POST /v1/events/{id}/redeliver`)
//! so that one bad event does not hold the user's later ones forever.
//!
//! With `callbacks.confirm`, a bunq event is first checked with bunq: the object its
//! callback names is fetched with the user's session and bunq's answer replaces the
//! callback's object ([`confirm`]). A callback is a hint from the internet; only what
//! bunq itself answers reaches the application as truth. An object bunq does not know
//! settles the event as `unconfirmed` (never sent); bunq not answering is a failed
//! attempt like a receiver not answering.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use base64::Engine as _;
use bunq_session::ApiRequest;
use bunq_store::{EventRecord, NewEvent, UserStatus};
use rand::Rng as _;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::app::Shared;
use crate::config::{CallbackSettings, WebhookSecret};
use crate::connect::rfc3339;
use crate::error::ApiError;

/// Events handed out per round (one per user at most).
const BATCH: usize = 64;
/// How often due retries are looked for when nothing wakes the relay.
const TICK: Duration = Duration::from_millis(250);

/// The pull API's page bounds.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The relay's handle: wakes it when an event was stored.
pub(crate) struct Relay {
    wake: Notify,
    http: reqwest::Client,
}

impl Relay {
    pub(crate) fn new(settings: &CallbackSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.delivery_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            wake: Notify::new(),
            http,
        }
    }

    /// Tells the relay an event is waiting (a permit is kept if it is busy, so the
    /// wake-up is not lost).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.
pub(crate) fn sign(secret: &WebhookSecret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(ctx.sign().as_ref())
    )
}

/// What a receiver gets: `{"id","type","user_ref","timestamp","data"}`, with `data`
/// spliced in byte for byte (for bunq's callbacks, the body bunq sent).
pub(crate) fn webhook_body(event: &EventRecord) -> Vec<u8> {
    envelope(
        &event.id,
        &event.event_type,
        &event.user_ref,
        event.received_at,
        &event.payload,
    )
}

pub(crate) fn envelope(
    id: &str,
    event_type: &str,
    user_ref: &str,
    received_at: SystemTime,
    payload: &[u8],
) -> Vec<u8> {
    let head = serde_json::json!({
        "id": id,
        "type": event_type,
        "user_ref": user_ref,
        "timestamp": rfc3339(received_at),
    })
    .to_string();
    // `head` is an object: replace its closing brace with `,"data":<payload>}`. The
    // payload was validated as JSON when stored.
    let mut body = head.into_bytes();
    body.pop();
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(payload);
    body.push(b'}');
    body
}

/// Stores one of the gateway's own events (`user.connected`, ...) and wakes the relay.
pub(crate) async fn record_own(state: &Shared, user_ref: &str, event_type: &str, data: Value) {
    let event = NewEvent {
        user_ref: user_ref.to_owned(),
        event_type: event_type.to_owned(),
        payload: data.to_string().into_bytes(),
        dedupe_key: None,
    };
    match state.store.record_event(event).await {
        Ok(_) => state.relay.wake(),
        Err(e) => tracing::error!(user_ref, event_type, error = %e, "cannot record an event"),
    }
}

/// Delivers until the task is aborted (at shutdown). Without receivers it still runs:
/// it confirms bunq's events (with `callbacks.confirm`) and settles each as delivered
/// once it is published to the pull API, so that retention applies to it.
pub(crate) async fn run(state: Shared) {
    let secret = state.callback_settings.webhook_secret.clone();
    loop {
        // Alone on its database a gateway reads what is due; in a fleet it claims it
        // with a lease, so that no two replicas deliver one event (or one user's
        // events) at once, and a dead replica's events are taken over.
        let claimed = match &state.fleet {
            Some(member) => {
                state
                    .store
                    .claim_due_events(
                        SystemTime::now(),
                        BATCH,
                        member.settings.event_lease,
                        Some(&state.egress),
                    )
                    .await
            }
            None => state.store.due_events(SystemTime::now(), BATCH).await,
        };
        let due = match claimed {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        let full = due.len() == BATCH;
        // At most one event per user: all of them can go at once.
        let deliveries = due.iter().map(|e| deliver(&state, secret.as_ref(), e));
        futures::future::join_all(deliveries).await;
        if !full {
            tokio::select! {
                () = state.relay.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }
}

/// Whether `event` is a bunq callback still waiting for bunq's confirmation: its `data`
/// is a claim from the internet, not yet bunq's word.
fn awaits_confirmation(settings: &CallbackSettings, event: &EventRecord) -> bool {
    settings.confirm && !event.confirmed && event.event_type.starts_with("bunq.")
}

async fn deliver(state: &Shared, secret: Option<&WebhookSecret>, event: &EventRecord) {
    let settings = &state.callback_settings;
    let confirmed;
    let event = if awaits_confirmation(settings, event) {
        match confirm(state, event).await {
            Confirmation::Confirmed(payload) => {
                if let Err(e) = state
                    .store
                    .event_confirmed(&event.id, payload.clone())
                    .await
                {
                    // Not sent unrecorded: the next round confirms again.
                    tracing::error!(error = %e, "cannot record a confirmation");
                    return;
                }
                let mut fetched = event.clone();
                fetched.payload = payload;
                fetched.confirmed = true;
                confirmed = fetched;
                &confirmed
            }
            Confirmation::Refuted(reason) => {
                tracing::warn!(
                    event_id = event.id,
                    user_ref = event.user_ref,
                    reason,
                    "bunq does not confirm a callback's object: not relayed"
                );
                match state.store.event_unconfirmed(&event.id, reason).await {
                    Ok(()) => state.metrics.event_unconfirmed(),
                    Err(e) => tracing::error!(error = %e, "cannot record an unconfirmed event"),
                }
                return;
            }
            Confirmation::Unavailable(error) => {
                failed(state, event, error).await;
                return;
            }
        }
    } else {
        event
    };
    let mut failure = None;
    // Without receivers (pull only), publishing is delivering. The config refuses
    // `webhook_urls` without a secret.
    if let Some(secret) = secret.filter(|_| !settings.webhook_urls.is_empty()) {
        let body = webhook_body(event);
        for url in &settings.webhook_urls {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sent = state
                .relay
                .http
                .post(url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &event.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    sign(secret, &event.id, timestamp, &body),
                )
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                // Only the status or the kind of failure: URLs may carry credentials.
                Ok(r) => failure = Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => failure = Some("timeout".to_owned()),
                Err(_) => failure = Some("connection failed".to_owned()),
            }
        }
    }
    match failure {
        None => match state.store.event_delivered(&event.id).await {
            Ok(()) => state.metrics.event_delivered(),
            Err(e) => tracing::error!(error = %e, "cannot record a delivery"),
        },
        Some(error) => failed(state, event, error).await,
    }
}

/// Records a failed attempt: retried after a back-off, or dead past the retry period.
async fn failed(state: &Shared, event: &EventRecord, error: String) {
    let settings = &state.callback_settings;
    let pause = backoff(settings, event.attempts);
    let next = SystemTime::now() + pause;
    let dead = next
        .duration_since(event.received_at)
        .is_ok_and(|age| age > settings.retry_period);
    if dead {
        tracing::warn!(
            event_id = event.id,
            user_ref = event.user_ref,
            "event dead after its retry period"
        );
    }
    match state
        .store
        .event_failed(&event.id, &error, next, dead)
        .await
    {
        Ok(()) if dead => state.metrics.event_dead(),
        Ok(()) => {}
        Err(e) => tracing::error!(error = %e, "cannot record a delivery"),
    }
}

/// What bunq said about the object a callback names.
enum Confirmation {
    /// The payload to relay: the callback's envelope with bunq's fetched object.
    Confirmed(Vec<u8>),
    /// bunq does not know it, or knows another one (the reason, stored and logged).
    Refuted(&'static str),
    /// bunq could not be asked now; retried like a failed delivery.
    Unavailable(String),
}

/// The path segment under `monetary-account/{id}/` of the objects bunq's callbacks
/// carry, by their type name; others (an OAUTH grant, a user) cannot be re-fetched
/// under an account and are not confirmed.
fn object_segment(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "Payment" => "payment",
        "RequestInquiry" => "request-inquiry",
        "RequestResponse" => "request-response",
        "DraftPayment" => "draft-payment",
        "MasterCardAction" => "mastercard-action",
        "BunqMeTab" => "bunqme-tab",
        "ScheduledPayment" | "SchedulePayment" => "schedule-payment",
        _ => return None,
    })
}

/// The object a stored callback names: `(type, account id, object id)`.
pub(crate) fn named_object(envelope: &Value) -> Option<(String, u64, u64)> {
    let object = envelope
        .get("NotificationUrl")?
        .get("object")?
        .as_object()?;
    let mut entries = object.iter();
    let (type_name, inner) = entries.next()?;
    if entries.next().is_some() {
        return None;
    }
    let id = inner.get("id")?.as_u64()?;
    let account = inner.get("monetary_account_id")?.as_u64()?;
    Some((type_name.clone(), account, id))
}

/// Asks bunq, with the user's session, for the object `event`'s callback names.
async fn confirm(state: &Shared, event: &EventRecord) -> Confirmation {
    let Ok(mut envelope) = serde_json::from_slice::<Value>(&event.payload) else {
        return Confirmation::Refuted("the stored callback is not JSON");
    };
    let Some((type_name, account, id)) = named_object(&envelope) else {
        return Confirmation::Refuted("the callback names no object bunq can be asked for");
    };
    let Some(segment) = object_segment(&type_name) else {
        return Confirmation::Refuted("the callback's object type cannot be re-fetched");
    };
    let user = match state.store.user(&event.user_ref).await {
        Ok(user) => user,
        Err(e) => return Confirmation::Unavailable(format!("confirming: {e}")),
    };
    let Some((bunq_user_id, credential)) = user.and_then(|u| {
        let credential = u.live_credential().to_owned();
        (u.status == UserStatus::Connected)
            .then_some(u.bunq_user_id)
            .flatten()
            .map(|id| (id, credential))
    }) else {
        // Nobody can ask bunq for this user any more.
        return Confirmation::Refuted("the user is no longer connected");
    };
    let request = ApiRequest::get(format!(
        "user/{bunq_user_id}/monetary-account/{account}/{segment}/{id}"
    ));
    let credential = bunq_session::CredentialId::new(credential);
    let response = match state.sessions.request(&credential, request).await {
        Ok(response) => response,
        // The kind only: errors can quote bunq's body.
        Err(_) => return Confirmation::Unavailable("confirming: the bunq call failed".to_owned()),
    };
    match response.status {
        200..=299 => {}
        // bunq's "no such object" (404) and refusals to show it to this user.
        400 | 403 | 404 | 410 => return Confirmation::Refuted("bunq: no such object"),
        status => return Confirmation::Unavailable(format!("confirming: bunq HTTP {status}")),
    }
    let fetched = match response.items() {
        Ok(items) => items.into_iter().next(),
        Err(_) => None,
    };
    match fetched {
        Some((fetched_type, object))
            if fetched_type == type_name
                && object.get("id").and_then(Value::as_u64) == Some(id) =>
        {
            envelope["NotificationUrl"]["object"] = serde_json::json!({ fetched_type: object });
            Confirmation::Confirmed(envelope.to_string().into_bytes())
        }
        _ => Confirmation::Refuted("bunq answered another object"),
    }
}

/// `min_backoff * 2^attempts`, at most `max_backoff`, with "equal jitter" (half fixed,
/// half random) so that receivers coming back are not hit by every event at once.
fn backoff(settings: &CallbackSettings, attempts: u64) -> Duration {
    let exp = u32::try_from(attempts.min(30)).unwrap_or(30);
    let full = settings
        .min_backoff
        .saturating_mul(1u32 << exp.min(30))
        .min(settings.max_backoff);
    let half = full / 2;
    half + half.mul_f64(rand::thread_rng().r#gen::<f64>())
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct EventView {
    id: String,
    cursor: String,
    #[serde(rename = "type")]
    event_type: String,
    user_ref: String,
    timestamp: String,
    data: Value,
    /// Whether `data` holds bunq's re-fetched object (`callbacks.confirm`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    confirmed: bool,
    delivery: Delivery,
}

#[derive(Serialize)]
struct Delivery {
    state: &'static str,
    attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// The pull API's form of an event. With `callbacks.confirm`, a bunq event's `data` is
/// withheld (`null`) until bunq confirmed it: pull-only applications get the same truth
/// as webhook receivers.
fn view(settings: &CallbackSettings, e: EventRecord) -> EventView {
    let pending = e.state == bunq_store::DeliveryState::Pending;
    let data = if awaits_confirmation(settings, &e) {
        Value::Null
    } else {
        serde_json::from_slice(&e.payload).unwrap_or(Value::Null)
    };
    EventView {
        cursor: e.seq.to_string(),
        data,
        timestamp: rfc3339(e.received_at),
        confirmed: e.confirmed,
        delivery: Delivery {
            state: e.state.as_str(),
            attempts: e.attempts,
            next_attempt_at: pending.then(|| rfc3339(e.next_attempt_at)),
            settled_at: e.settled_at.map(rfc3339),
            last_error: e.last_error,
        },
        id: e.id,
        event_type: e.event_type,
        user_ref: e.user_ref,
    }
}

/// `GET /v1/events?after=<cursor>&limit=N`: events after the cursor, oldest first;
/// `next_cursor` is where to continue (the same cursor when there is nothing new).
pub(crate) async fn list(
    State(state): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("after must be a cursor from this API"))?,
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(ApiError::bad_request("limit must be between 1 and 1000")),
        },
    };
    let mut events = state.store.events_after(after, limit).await?;
    // A page ends before the first event whose confirmation was not tried yet (it
    // normally is within milliseconds): a cursor past it would skip its confirmed form.
    // One bunq could not confirm stays listed without `data`; its final form is read by
    // id (`GET /v1/events/{id}`), so that one user's outage holds nobody's events.
    let settings = &state.callback_settings;
    if let Some(first_unsettled) = events.iter().position(|e| {
        e.state == bunq_store::DeliveryState::Pending
            && e.attempts == 0
            && awaits_confirmation(settings, e)
    }) {
        events.truncate(first_unsettled);
    }
    let next = events.last().map_or(after, |e| e.seq);
    let events: Vec<EventView> = events.into_iter().map(|e| view(settings, e)).collect();
    Ok(Json(serde_json::json!({
        "events": events,
        "next_cursor": next.to_string(),
    })))
}

/// `GET /v1/events/{id}`: one event as the pull API lists it.
pub(crate) async fn one(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    match state.store.event(&id).await? {
        Some(e) => Ok(Json(view(&state.callback_settings, e))),
        None => Err(no_such_event()),
    }
}

/// The 404 of the routes that name one event.
fn no_such_event() -> ApiError {
    ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "no such event")
}

/// `POST /v1/events/{id}/redeliver`: pending again, due now, a fresh retry period.
pub(crate) async fn redeliver(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<(http::StatusCode, Json<Value>), ApiError> {
    if !state.store.redeliver_event(&id).await? {
        return Err(no_such_event());
    }
    state.relay.wake();
    Ok((
        http::StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "state": "pending" })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks reference libraries.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut s = crate::callbacks::test_settings("");
        s.min_backoff = Duration::from_secs(1);
        s.max_backoff = Duration::from_secs(60);
        for (attempts, full) in [(0, 1), (1, 2), (3, 8), (20, 60)] {
            let d = backoff(&s, attempts);
            let full = Duration::from_secs(full);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
        }
    }

    #[test]
    fn webhook_bodies_splice_the_payload_verbatim() {
        let raw = br#"{"b": 1,"a":2}"#;
        let body = envelope("evt_1", "bunq.PAYMENT", "alice", UNIX_EPOCH, raw);
        let body = String::from_utf8(body).unwrap();
        assert!(body.ends_with(r#","data":{"b": 1,"a":2}}"#), "{body}");
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["id"], "evt_1");
        assert_eq!(parsed["type"], "bunq.PAYMENT");
    }
}
