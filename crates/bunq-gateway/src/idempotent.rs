//! Writes with an `Idempotency-Key`: retries an application can make safely.
//!
//! The key, scoped to the caller's API key and the user, fixes the
//! `X-Bunq-Client-Request-Id` sent to bunq, and its record in the store holds a
//! fingerprint of the request and, once known, the final answer:
//!
//! | record                      | a request with the key gets                          |
//! |-----------------------------|------------------------------------------------------|
//! | none (or expired)           | sent, with a new request id                          |
//! | same request, answer known  | the stored answer, `Idempotent-Replayed: true`       |
//! | another request             | 422 `idempotency_key_reused`                         |
//! | same request, in flight     | 409 `request_in_progress`                            |
//! | same request, outcome lost  | sent again with the **same** request id; if bunq says |
//! |                             | the id was used, 409 `already_submitted`             |
//!
//! bunq refuses a request id used before on the same device, so resending with the
//! first attempt's id can execute the request only if the first attempt never arrived:
//! no sequence of retries with one key executes a payment twice.

use axum::response::{IntoResponse, Response};
use bunq_session::{ApiRequest, CredentialId, Error as SessionError, RawResponse};
use bunq_store::{IdempotencyBegin, IdempotencyScope, StoredAnswer, request_fingerprint};
use http::{HeaderValue, StatusCode};

use crate::app::Shared;
use crate::error::ApiError;

/// Set on a replayed answer.
const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Our answers are small JSON errors; bunq's are bounded by the client's body limit.
const MAX_OWN_ANSWER: usize = 64 * 1024;

/// What became of a keyed request.
pub(crate) enum Sent {
    /// It went to bunq (or failed trying): answer as for any call.
    Bunq(Result<RawResponse, SessionError>),
    /// The answer is the gateway's own: a replay, or `already_submitted`.
    Answer(Response),
}

/// Who owns one record, owned (the spawned task outlives the handler's borrows).
struct Owner {
    caller: String,
    user_ref: String,
    key: String,
}

impl Owner {
    fn scope(&self) -> IdempotencyScope<'_> {
        IdempotencyScope {
            caller: &self.caller,
            user_ref: &self.user_ref,
            key: &self.key,
        }
    }
}

/// Sends `request` under the caller's `key`, or answers from its record.
pub(crate) async fn send(
    state: &Shared,
    caller: &str,
    user_ref: &str,
    key: &str,
    credential: CredentialId,
    request: ApiRequest,
) -> Result<Sent, ApiError> {
    let owner = Owner {
        caller: caller.to_owned(),
        user_ref: user_ref.to_owned(),
        key: key.to_owned(),
    };
    let fingerprint = request_fingerprint(
        request.method.as_str(),
        request.path_and_query.trim_start_matches('/'),
        &request.body,
    );
    let fresh_id = uuid::Uuid::new_v4().to_string();
    let begun = state
        .store
        .begin_idempotent(
            owner.scope(),
            fingerprint,
            &fresh_id,
            state.idempotency_retention,
        )
        .await?;
    let (request_id, resend) = match begun {
        IdempotencyBegin::Send { request_id } => (request_id, false),
        IdempotencyBegin::Resend { request_id } => (request_id, true),
        IdempotencyBegin::Replay(answer) => return Ok(Sent::Answer(replayed(answer))),
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request; use a new key",
            ));
        }
        IdempotencyBegin::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "request_in_progress",
                "a request with this Idempotency-Key is in flight; retry once it has answered",
            )
            .with_retry_after(std::time::Duration::from_secs(1)));
        }
        _ => return Err(ApiError::internal("unexpected idempotency record")),
    };
    let request = request.with_request_id(request_id.clone());
    let state = state.clone();
    // Spawned: the outcome is recorded even if the caller hangs up or times out, so the
    // record never stays "in flight" behind a call that ended.
    tokio::spawn(async move {
        let result = state.sessions.request(&credential, request).await;
        record(&state, &owner, resend, &request_id, result).await
    })
    .await
    .map_err(|_| ApiError::internal("the bunq call failed inside the gateway"))
}

/// Records what the attempt tells, and turns "the id was used" into `already_submitted`.
async fn record(
    state: &Shared,
    owner: &Owner,
    resend: bool,
    request_id: &str,
    result: Result<RawResponse, SessionError>,
) -> Sent {
    let scope = owner.scope();
    let store = &state.store;
    // Not executed: forgotten, so that a retry starts afresh; but a resend stays
    // "unknown", since the first attempt may still have executed.
    let not_executed = || async {
        if resend {
            store.unknown_idempotent(scope).await
        } else {
            store.abandon_idempotent(scope).await
        }
    };
    let recorded = match &result {
        Ok(raw) if resend && raw.is_reused_request_id() => {
            let response = already_submitted(request_id);
            let (answer, response) = stored(response).await;
            if let Err(e) = store.finish_idempotent(scope, &answer).await {
                tracing::error!(error = %e, "cannot record an idempotent answer");
            }
            return Sent::Answer(response);
        }
        // A dead session refuses the call before it executes; the renewal is done.
        Ok(raw) if raw.is_insufficient_authorisation() => not_executed().await,
        // bunq's own failure says nothing of whether it executed: resend to find out.
        Ok(raw) if raw.status >= 500 => store.unknown_idempotent(scope).await,
        Ok(raw) => {
            let answer = StoredAnswer {
                status: raw.status,
                content_type: raw
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: raw.body.to_vec(),
            };
            store.finish_idempotent(scope, &answer).await
        }
        Err(e) if !e.may_have_reached_bunq() => not_executed().await,
        Err(_) => store.unknown_idempotent(scope).await,
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot record an idempotent request's outcome");
    }
    Sent::Bunq(result)
}

fn already_submitted(request_id: &str) -> Response {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_submitted",
        "an earlier attempt with this Idempotency-Key reached bunq (bunq refused its request \
         id as used); it may have executed: reconcile with the payment list, do not pay again",
    )
    .with_request_id(Some(request_id))
    .into_response()
}

/// The answer as stored, and the response rebuilt from it.
async fn stored(response: Response) -> (StoredAnswer, Response) {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, MAX_OWN_ANSWER)
        .await
        .unwrap_or_default();
    let answer = StoredAnswer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    };
    (answer, Response::from_parts(parts, body.into()))
}

fn replayed(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = answer
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
