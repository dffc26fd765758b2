//! Connecting end users: `POST /v1/authorizations`, `GET /oauth/callback`, and
//! `GET`/`DELETE /v1/users/{user_ref}`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use bunq_oauth::{Callback, OAuthError, StateContext};
use bunq_session::CredentialId;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::app::{Shared, body_or_error};
use crate::auth::Caller;
use crate::connector::{ConnectOutcome, Connector};
use crate::error::ApiError;

/// The longest `user_ref` accepted.
const MAX_USER_REF_LEN: usize = 128;

/// A `user_ref` is the application's name for an end user: 1 to 128 characters of
/// `A-Z a-z 0-9 . _ ~ @ : + -`, so that it is one URL path segment as is and cannot
/// smuggle a path or a query into the routes that carry it.
pub(crate) fn valid_user_ref(user_ref: &str) -> Result<(), ApiError> {
    let ok = !user_ref.is_empty()
        && user_ref != "."
        && user_ref != ".."
        && user_ref.len() <= MAX_USER_REF_LEN
        && user_ref
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~@:+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_user_ref",
            "user_ref must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ @ : + -",
        ))
    }
}

/// The longest `return_to` accepted: it travels in a `Location` header.
const MAX_RETURN_TO_LEN: usize = 2048;

/// `return_to` as it will be stored and redirected to: parsed and re-serialized, so that
/// what was checked is what is used (the URL parser drops tabs and newlines and
/// percent-encodes other bytes, so the raw string is not what it validated). Control
/// characters are refused outright rather than dropped: they have no place in a URL
/// and a caller sending them is sending something else than it thinks.
fn valid_return_to(raw: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_return_to",
            "return_to must be an absolute http:// or https:// URL of at most 2048 \
             characters, without control characters",
        )
    };
    if raw.len() > MAX_RETURN_TO_LEN || raw.chars().any(char::is_control) {
        return Err(invalid());
    }
    let url = url::Url::parse(raw).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(invalid());
    }
    let normalized = String::from(url);
    if normalized.len() > MAX_RETURN_TO_LEN {
        return Err(invalid());
    }
    Ok(normalized)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationRequest {
    user_ref: String,
    return_to: Option<String>,
    /// Allows the consent to come from another bunq account than the one the user is
    /// connected with (the old connection is then closed); refused without it.
    #[serde(default)]
    replace: bool,
}

#[derive(Serialize)]
struct AuthorizationResponse<'a> {
    authorization_url: &'a str,
    state: &'a str,
    expires_at: String,
}

/// `POST /v1/authorizations`: a fresh authorize URL and single-use state for a user.
pub(crate) async fn authorize(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body, state.max_body_bytes)?;
    let request: AuthorizationRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    valid_user_ref(&request.user_ref)?;
    if !caller.may_act_on(&request.user_ref) {
        return Err(ApiError::forbidden_user_ref());
    }
    let return_to = request
        .return_to
        .as_deref()
        .map(valid_return_to)
        .transpose()?;
    let authorization = state
        .flow
        .begin(StateContext {
            user_ref: request.user_ref,
            return_to,
            replace: request.replace,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot issue an OAuth state");
            ApiError::internal("cannot issue an OAuth state")
        })?;
    let body = AuthorizationResponse {
        authorization_url: &authorization.url,
        state: authorization.state.secret(),
        expires_at: rfc3339(authorization.expires_at),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// What the callback tells a browser (an HTML page) or a program (JSON).
struct CallbackOutcome {
    error: ApiError,
    html: bool,
}

impl IntoResponse for CallbackOutcome {
    fn into_response(self) -> Response {
        if !self.html {
            return self.error.into_response();
        }
        let status = self.error.status();
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>bunq</title>\
             <h1>Your bunq account was not connected</h1><p>{}</p>",
            html_escape(self.error.message())
        );
        (status, Html(page)).into_response()
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /oauth/callback`: bunq sends the end user back here.
///
/// The state is checked (and consumed) before anything else, so an unknown, expired,
/// replayed or missing state, or a refusal, leaves no trace but the consumed state.
/// Then the code is exchanged and the token stored as a consent, which the background
/// connector turns into a connection; the callback waits `oauth.callback_wait_ms` for
/// it and otherwise answers "connecting" (the connection goes on).
pub(crate) async fn callback(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let html = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match complete(&state, query.as_deref().unwrap_or("")).await {
        Ok((status, Some(return_to))) => {
            let mut url = return_to;
            url.query_pairs_mut().append_pair("status", status);
            (
                StatusCode::FOUND,
                [(http::header::LOCATION, url.to_string())],
            )
                .into_response()
        }
        Ok((status, None)) if html => {
            let page = if status == "connected" {
                "<!doctype html><meta charset=utf-8><title>bunq</title>\
                 <h1>Your bunq account is connected</h1><p>You can close this window.</p>"
            } else {
                "<!doctype html><meta charset=utf-8><title>bunq</title>\
                 <h1>Your bunq account is being connected</h1>\
                 <p>This takes up to a minute. You can close this window.</p>"
            };
            Html(page).into_response()
        }
        Ok((status, None)) => Json(serde_json::json!({ "status": status })).into_response(),
        Err(error) => CallbackOutcome { error, html }.into_response(),
    }
}

/// The callback's work: the final or current status (`connected` or `connecting`),
/// and where to send the browser, if anywhere.
async fn complete(
    state: &Shared,
    query: &str,
) -> Result<(&'static str, Option<url::Url>), ApiError> {
    let bad_state =
        |message: &'static str| ApiError::new(StatusCode::BAD_REQUEST, "invalid_state", message);
    let callback = Callback::from_query(query)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_callback", e.to_string()))?;
    let completed = state.flow.complete(&callback).await.map_err(|e| match e {
        OAuthError::UnknownState => bad_state("unknown or missing state; start again"),
        OAuthError::MalformedState => bad_state("malformed state; start again"),
        OAuthError::ReplayedState => bad_state("this state was already used; start again"),
        OAuthError::ExpiredState => bad_state("this state has expired; start again"),
        OAuthError::Callback(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_callback", e.to_string())
        }
        OAuthError::Denied { error, .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            format!("the authorization was refused ({error})"),
        ),
        OAuthError::TokenEndpoint { status, error, .. } if (400..500).contains(&status) => {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "code_rejected",
                format!(
                    "bunq refused the authorization code ({}); start again",
                    error.as_deref().unwrap_or("no error code")
                ),
            )
        }
        OAuthError::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "bunq's token endpoint did not answer in time; start again",
        ),
        other => {
            tracing::warn!(error = %other, "OAuth code exchange failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "token_exchange_failed",
                "the code exchange with bunq failed; start again",
            )
        }
    })?;
    let context = completed.context;
    // Validated and stored normalized when the authorization was created; a stored
    // value that no longer parses (a row from before that) is dropped rather than
    // breaking the redirect after the consent.
    let return_to = context
        .return_to
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok());
    let consent = state
        .store
        .add_consent(
            &completed.state,
            &context.user_ref,
            &completed.token.access_token,
            context.replace,
        )
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::GONE,
                "user_deleted",
                "the user was deleted while this authorization was in progress",
            )
        })?;
    tracing::info!(user_ref = context.user_ref, "consent received");
    let outcome = state.connector.subscribe(&consent.credential);
    Connector::start(state, consent);
    let status = match tokio::time::timeout(state.callback_wait, outcome).await {
        Ok(Ok(ConnectOutcome::Connected)) => "connected",
        Ok(Ok(ConnectOutcome::IdentityMismatch)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "identity_mismatch",
                "this consent came from another bunq account than the connected one; \
                 nothing was changed",
            ));
        }
        Ok(Ok(ConnectOutcome::Revoked)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "grant_revoked",
                "bunq refused the new access token; start again",
            ));
        }
        Ok(Ok(ConnectOutcome::Failed(_))) => {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "connect_failed",
                "the bunq account could not be connected; start again",
            ));
        }
        Ok(Ok(ConnectOutcome::Gone)) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "user_deleted",
                "the user was deleted while this authorization was in progress",
            ));
        }
        // Not yet (or the connector stopped with the process): it goes on, resumed
        // from the store after a restart.
        Ok(Err(_)) | Err(_) => "connecting",
    };
    Ok((status, return_to))
}

#[derive(Serialize)]
pub(crate) struct UserResponse {
    user_ref: String,
    bunq_user_id: Option<u64>,
    granted_by_user_id: Option<u64>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    status_since: String,
    connected_at: Option<String>,
    updated_at: String,
    pending_consents: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_consent: Option<LastConsent>,
    /// Fleet mode: the egress whose gateways serve the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    egress: Option<String>,
}

#[derive(Serialize)]
struct LastConsent {
    outcome: String,
    at: String,
}

/// `GET /v1/users/{user_ref}`.
pub(crate) async fn get_user(
    State(state): State<Shared>,
    Path(user_ref): Path<String>,
) -> Result<Json<UserResponse>, ApiError> {
    valid_user_ref(&user_ref)?;
    let record = state
        .store
        .user(&user_ref)
        .await?
        .ok_or_else(ApiError::unknown_user)?;
    Ok(Json(UserResponse {
        user_ref: record.user_ref,
        bunq_user_id: record.bunq_user_id,
        granted_by_user_id: record.granted_by_user_id,
        status: record.status.as_str(),
        status_reason: record.status_reason,
        status_since: rfc3339(record.status_since),
        connected_at: record.connected_at.map(rfc3339),
        updated_at: rfc3339(record.updated_at),
        pending_consents: record.pending_consents,
        last_consent: record.last_consent.map(|(outcome, at)| LastConsent {
            outcome,
            at: rfc3339(at),
        }),
        egress: record.egress,
    }))
}

/// `DELETE /v1/users/{user_ref}`: forgets the token, installation and session, and
/// every consent in progress. Idempotent: 204 whether or not the user existed.
/// How long deleting a user waits for bunq to drop the user's callbacks.
const UNSUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn delete_user(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(user_ref): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_user_ref(&user_ref)?;
    let forget_route = || {
        if let Ok(mut routes) = state.routes.write() {
            routes.remove(&user_ref);
        }
    };
    forget_route();
    // The session manager before the store: `disconnect` waits for a session creation
    // in flight for a credential and stops any later one, so nothing saves a context
    // back after the store forgot it. Closing the sessions at bunq (part of it) is
    // hygiene, not a condition: a session dies on its own, and the gateway no longer
    // holds its token either way.
    let mut credentials = state.store.consent_credentials(&user_ref).await?;
    if let Some(user) = state.store.user(&user_ref).await? {
        // bunq would otherwise keep calling a URL that no longer names anyone (404s
        // until bunq gives up on each event): remove our filters while the session
        // still works. Best effort and bounded, like closing the sessions below: the
        // user is deleted either way, and the URL dies with them.
        if user.status == bunq_store::UserStatus::Connected {
            let credential = CredentialId::new(user.live_credential());
            match tokio::time::timeout(
                UNSUBSCRIBE_TIMEOUT,
                crate::callbacks::unsubscribe(&state, &user_ref, &credential),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::info!(
                    user_ref,
                    error = e.message(),
                    "could not remove the callbacks at bunq"
                ),
                Err(_) => tracing::info!(user_ref, "removing the callbacks at bunq timed out"),
            }
        }
        credentials.extend(user.credential);
    }
    for credential in credentials {
        if let Err(e) = state
            .sessions
            .disconnect(&CredentialId::new(credential))
            .await
        {
            tracing::info!(user_ref, error = %e, "could not close a session at bunq");
        }
    }
    state
        .store
        .delete_user_by(&user_ref, Some(caller.name()))
        .await?;
    // A connection that completed while we were closing sessions routed the user again.
    forget_route();
    tracing::info!(user_ref, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `2024-05-01T12:00:00Z` (UTC, whole seconds).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_564_800 + 3_723)),
            "2024-05-01T13:02:03Z"
        );
    }

    #[test]
    fn user_refs_are_one_safe_path_segment() {
        for ok in ["alice", "user-1", "a.b_c~d@e:f+g", &"x".repeat(128)] {
            assert!(valid_user_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a?b",
            "é",
            "..%2f",
            &"x".repeat(129),
        ] {
            assert!(valid_user_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn return_to_is_normalized_and_control_characters_refused() {
        assert_eq!(
            valid_return_to("HTTPS://App.Example/a/../b?x=é").ok(),
            Some("https://app.example/b?x=%C3%A9".to_owned())
        );
        assert_eq!(
            valid_return_to("https://app.example").ok(),
            Some("https://app.example/".to_owned())
        );
        for bad in [
            "https://app.example/\t",
            "https://app.example/\n",
            "https://app.example/\r\nX: y",
            "https://app.example/\u{0}",
            "https://app.example/\u{7f}",
            "https://app.example/\u{85}",
            "javascript:alert(1)",
            "/relative",
            "mailto:a@b",
        ] {
            assert!(valid_return_to(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://app.example/{}", "a".repeat(2048));
        assert!(valid_return_to(&long).is_err());
    }

    #[test]
    fn html_escape_neutralises_markup() {
        assert_eq!(
            html_escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
