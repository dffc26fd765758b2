//! The hot path: `ANY /v1/users/{user_ref}/bunq/{path...}` → bunq, with the user's
//! session, signed; bunq's status and verified body back.

use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bunq_session::{ApiRequest, CredentialId, Error as SessionError, RawResponse};
use bunq_store::UserStatus;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use crate::app::{Shared, body_or_error};
use crate::connect::valid_user_ref;
use crate::error::ApiError;
use crate::idempotent;
use crate::metrics::{BunqOutcome, endpoint_label};

/// The installation → device → session lifecycle belongs to the gateway: a caller who
/// could reach these endpoints could burn the one session-server call per 30 s that all
/// users share, or replace a user's installation (a PSD2 provider's credential is part
/// of that lifecycle too).
const LIFECYCLE_ENDPOINTS: &[&str] = &[
    "installation",
    "device-server",
    "session-server",
    "session",
    "payment-service-provider-credential",
];

const RESPONSE_ID_HEADER: &str = "x-bunq-client-response-id";

/// A caller's word that its PUT or DELETE may be sent twice: with it, a call that bunq
/// refuses for a dead session is retried once after the renewal, as GETs always are.
/// POSTs are never retried, whatever the caller says (a payment must not run twice).
pub(crate) const IDEMPOTENT_HEADER: &str = "x-gateway-idempotent";

/// The caller's key that makes its retries of a write safe (see `idempotent.rs`).
pub(crate) const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Forwards one call.
pub(crate) async fn forward(
    State(state): State<Shared>,
    Path((user_ref, _)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    valid_user_ref(&user_ref)?;
    let body = body_or_error(body, state.max_body_bytes)?;
    let path_and_query = upstream_path(&uri)?;
    let key = idempotency_key(&method, &headers)?;
    let credential = match route(&state, &user_ref).await {
        Ok(credential) => credential,
        Err(Routed::Elsewhere(egress)) => {
            return Box::pin(crate::fleet::forward_to_egress(
                &state, &egress, method, &uri, &headers, body,
            ))
            .await;
        }
        Err(Routed::Refused(e)) => return Err(e),
    };

    let endpoint = endpoint_label(&method, &path_and_query);
    let writes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // Nothing is sent once the caller's time is up; a call that was sent is not cut
    // short by it (the outer timeout leaves room for one upstream exchange).
    let request = api_request(method, path_and_query, body, &headers)
        .with_deadline(started + state.request_timeout);
    let result = if let Some(key) = key {
        let caller = crate::auth::caller_id(headers.get(http::header::AUTHORIZATION));
        match Box::pin(idempotent::send(
            &state,
            &caller,
            &user_ref,
            &key,
            credential.clone(),
            request,
        ))
        .await?
        {
            idempotent::Sent::Bunq(result) => result,
            idempotent::Sent::Answer(response) => return Ok(response),
        }
    } else if writes {
        // A write in flight must not be dropped halfway by a caller that hangs up: its
        // outcome is then unknown to everyone. Spawned, it runs to its end.
        let sessions = std::sync::Arc::clone(&state.sessions);
        let credential = credential.clone();
        tokio::spawn(async move { sessions.request(&credential, request).await })
            .await
            .map_err(|_| ApiError::internal("the bunq call failed inside the gateway"))?
    } else {
        // Boxed, like the rarer paths above: this future holds the whole upstream
        // exchange (~9 KB), and carried by value it made the handler's future that big,
        // which axum's router then copies into its own box on every request.
        Box::pin(state.sessions.request(&credential, request)).await
    };
    answer(
        &state,
        &user_ref,
        &credential,
        &endpoint,
        started.elapsed(),
        result,
    )
    .await
}

/// The caller's answer for bunq's answer (or the failure to get one).
async fn answer(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
    endpoint: &str,
    took: std::time::Duration,
    result: Result<RawResponse, SessionError>,
) -> Result<Response, ApiError> {
    match result {
        Ok(raw) => {
            state
                .metrics
                .observe_bunq(endpoint, BunqOutcome::Status(raw.status), took);
            let status = StatusCode::from_u16(raw.status).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "unexpected_response",
                    "bunq answered with an invalid status",
                )
            })?;
            let mut response = (status, raw.body).into_response();
            let headers = response.headers_mut();
            if let Some(ct) = raw.headers.get(http::header::CONTENT_TYPE) {
                headers.insert(http::header::CONTENT_TYPE, ct.clone());
            }
            if let Some(id) = raw
                .response_id
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                headers.insert(RESPONSE_ID_HEADER, id);
            }
            Ok(response)
        }
        Err(e) => {
            state
                .metrics
                .observe_bunq(endpoint, BunqOutcome::Failed(outcome_word(&e)), took);
            match &e {
                // The store no longer knows the credential (the user was deleted, or a
                // new consent replaced it meanwhile): stop trusting the cache for it.
                SessionError::NotConnected(_) => forget_route(state, user_ref, credential),
                SessionError::Revoked { descriptions, .. } => {
                    return Err(revoked(state, user_ref, credential, descriptions).await);
                }
                SessionError::SessionBackoff { retry_after, .. } => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "bunq_unavailable",
                        "bunq failed to open a session for this user recently; the gateway \
                         waits before trying again",
                    )
                    .with_retry_after(*retry_after));
                }
                _ => {}
            }
            Err(session_error(&e))
        }
    }
}

/// `Idempotency-Key` of a write: 1 to 255 visible ASCII characters (the IETF draft
/// leaves the format to the server; Stripe allows 255). Ignored on reads, which are
/// idempotent by themselves.
fn idempotency_key(method: &Method, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(None);
    }
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The bunq request, marked idempotent (retried once after a session renewal) for a
/// PUT or DELETE whose caller sent `X-Gateway-Idempotent: true`.
fn api_request(
    method: Method,
    path_and_query: String,
    body: Bytes,
    headers: &HeaderMap,
) -> ApiRequest {
    let caller_says_idempotent = headers
        .get(IDEMPOTENT_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let may_retry = caller_says_idempotent && matches!(method, Method::PUT | Method::DELETE);
    let request = ApiRequest::new(method, path_and_query, body);
    if may_retry {
        request.idempotent()
    } else {
        request
    }
}

/// The longest bunq path segment accepted: bunq's longest words are a few dozen
/// characters and a UUID is 36.
const MAX_SEGMENT_LEN: usize = 64;

/// `/v1/users/{u}/bunq/{path}?{query}` → `/{path}?{query}`, forwarded exactly as checked.
///
/// An allow-list, not a deny-list: every segment must be a lowercase bunq word
/// (`monetary-account-bank`, `notification-filter-url`), a numeric id, or a UUID, so
/// that nothing reaches bunq that some other parser (bunq's edge, a proxy) could read as
/// another path. Percent-escapes are refused rather than decoded: bunq's paths need
/// none, and a decoded form is a second parse of the same string (`%2F`, `%2E`, `%5C`
/// and `%3B` smuggled `/`, `.`, `\` and `;` past the old check). Empty segments are
/// refused too: `//` is collapsed by some servers.
fn upstream_path(uri: &Uri) -> Result<String, ApiError> {
    upstream_target(uri.path(), uri.query())
}

/// [`upstream_path`] on the raw path and query: the http crate already refuses some
/// bytes (`\`, `#`, controls) in a request target, but this check does not rely on it.
pub(crate) fn upstream_target(path: &str, query: Option<&str>) -> Result<String, ApiError> {
    let rest = path
        .strip_prefix("/v1/users/")
        .and_then(|p| p.split_once('/'))
        .and_then(|(_, p)| p.strip_prefix("bunq"))
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| ApiError::bad_request("expected /v1/users/{user_ref}/bunq/{path}"))?;
    let mut segments = rest.split('/').skip(1).peekable();
    if segments.peek().is_none_or(|s| s.is_empty()) {
        return Err(ApiError::bad_request("missing the bunq path"));
    }
    for (i, segment) in segments.enumerate() {
        if !valid_segment(segment) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_path",
                "each bunq path segment must be a lowercase word of a-z 0-9 - _, a \
                 number or a UUID (no percent-escapes, dots, `\\`, `;` or empty segments)",
            ));
        }
        if i == 0 && LIFECYCLE_ENDPOINTS.contains(&segment) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "lifecycle_endpoint",
                "installation, device-server, session-server and the PSD2 credential are \
                 managed by the gateway",
            ));
        }
    }
    if let Some(query) = query {
        // Passed through as sent (bunq reads `count`, `older_id`, ...), but a control
        // character or a `#` could end or split the request line at another parser.
        if query.bytes().any(|b| b.is_ascii_control() || b == b'#') {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "the query string must not hold control characters or `#`",
            ));
        }
    }
    let mut out = String::with_capacity(rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(rest);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// A bunq path segment: 1 to [`MAX_SEGMENT_LEN`] of `a-z 0-9 - _` (words, numeric ids
/// and lowercase UUIDs), or a UUID in upper case. Never `.`, `..`, `%`, `\` or `;`.
fn valid_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SEGMENT_LEN {
        return false;
    }
    bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        || is_uuid(bytes)
}

/// `8-4-4-4-12` hex digits, either case.
fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Why a user has no route here.
pub(crate) enum Routed {
    /// The user is pinned to another egress (fleet mode): its gateways serve them.
    Elsewhere(String),
    /// What to answer the application.
    Refused(ApiError),
}

impl From<ApiError> for Routed {
    fn from(e: ApiError) -> Self {
        Routed::Refused(e)
    }
}

impl From<bunq_store::StoreError> for Routed {
    fn from(e: bunq_store::StoreError) -> Self {
        Routed::Refused(e.into())
    }
}

/// A user pinned to another egress, for a caller that cannot hand the request on.
impl From<Routed> for ApiError {
    fn from(routed: Routed) -> Self {
        match routed {
            Routed::Elsewhere(egress) => crate::fleet::wrong_egress(&egress),
            Routed::Refused(e) => e,
        }
    }
}

/// The credential of a connected user; the cache spares the database on the hot path.
/// Any other status answers what the application should do.
pub(crate) async fn route(state: &Shared, user_ref: &str) -> Result<CredentialId, Routed> {
    let cached = state
        .routes
        .read()
        .ok()
        .and_then(|routes| routes.get(user_ref).cloned());
    if let Some(credential) = cached {
        return Ok(credential);
    }
    let record = state.store.user(user_ref).await?;
    match record {
        Some(r) if r.status == UserStatus::Connected => {
            if let Some(egress) = r.egress.as_deref().filter(|e| *e != state.egress) {
                // bunq accepts the user's device from its egress's IP only: a call from
                // here would be refused, and could spend this egress's session turn.
                return Err(Routed::Elsewhere(egress.to_owned()));
            }
            let credential = CredentialId::new(r.live_credential());
            if let Ok(mut routes) = state.routes.write() {
                routes.insert(user_ref.to_owned(), credential.clone());
            }
            Ok(credential)
        }
        Some(r) if r.status == UserStatus::Revoked => Err(grant_revoked().into()),
        Some(r) if r.status == UserStatus::Connecting => Err(Routed::Refused(
            ApiError::new(
                StatusCode::CONFLICT,
                "user_connecting",
                "the user's consent is being connected (bunq allows one new session per 30 s); \
             retry shortly, or watch GET /v1/users/{user_ref}",
            )
            .with_retry_after(std::time::Duration::from_secs(5)),
        )),
        Some(r) if r.status == UserStatus::Failed => Err(Routed::Refused(ApiError::new(
            StatusCode::CONFLICT,
            "grant_failed",
            "the user's bunq account could not be connected; send them through \
             POST /v1/authorizations again",
        ))),
        _ => Err(ApiError::unknown_user().into()),
    }
}

fn grant_revoked() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "grant_revoked",
        "the user withdrew access in bunq; send them through POST /v1/authorizations again",
    )
}

/// Removes the cached route of `user_ref` if it still is `credential` (a new consent
/// may have replaced it meanwhile).
fn forget_route(state: &Shared, user_ref: &str, credential: &CredentialId) {
    if let Ok(mut routes) = state.routes.write() {
        if routes.get(user_ref) == Some(credential) {
            routes.remove(user_ref);
        }
    }
}

/// bunq refused the user's credential: recorded for good (no call for the user reaches
/// bunq until a new consent), counted, answered 409.
async fn revoked(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
    descriptions: &[String],
) -> ApiError {
    let reason = format!("bunq refused the access token: {}", descriptions.join(" "));
    revoke_user(state, user_ref, credential, &reason).await;
    grant_revoked()
}

/// Marks `user_ref` revoked if `credential` is still its live one: no call for the user
/// reaches bunq from now on (the route is dropped, the store says `revoked`). Counted,
/// and told to the application as `user.revoked`. Used when bunq refuses the
/// credential and when bunq calls back that the grant was revoked.
pub(crate) async fn revoke_user(
    state: &Shared,
    user_ref: &str,
    credential: &CredentialId,
    reason: &str,
) {
    forget_route(state, user_ref, credential);
    match state
        .store
        .mark_revoked(user_ref, credential.as_str(), reason)
        .await
    {
        Ok(true) => {
            state.metrics.grant_revoked();
            tracing::warn!(user_ref, "access withdrawn in bunq; user marked revoked");
            let data = serde_json::json!({ "user_ref": user_ref, "reason": reason });
            crate::relay::record_own(state, user_ref, "user.revoked", data).await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot record a revocation"),
    }
}

fn outcome_word(e: &SessionError) -> &'static str {
    match e {
        SessionError::SignatureInvalid { .. } => "signature_invalid",
        SessionError::SessionCapacity { .. } => "session_capacity",
        SessionError::RateLimited { .. } => "rate_limited",
        SessionError::NotConnected(_) => "not_connected",
        SessionError::NotSent { reason, .. } if reason.is_timeout() => "timeout",
        SessionError::NotSent { .. } => "transport",
        SessionError::OutcomeUnknown { .. } => "outcome_unknown",
        SessionError::Unavailable { .. } => "unavailable",
        SessionError::Api { .. } => "bunq_error",
        SessionError::UnexpectedResponse { .. } => "unexpected_response",
        _ => "internal",
    }
}

/// The answer to a caller when bunq-session fails.
pub(crate) fn session_error(e: &SessionError) -> ApiError {
    match e {
        SessionError::SignatureInvalid { response_id, .. } => {
            tracing::warn!(error = %e, "bunq response failed signature verification");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_signature",
                "bunq's response failed signature verification and was dropped",
            )
            .with_response_id(response_id.as_deref())
        }
        SessionError::SessionCapacity { retry_after } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_capacity",
            "no bunq session could be opened in time (bunq allows one per 30 s); retry later",
        )
        .with_retry_after(*retry_after),
        SessionError::RateLimited { retry_after } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "bunq's rate limit was reached; retry later",
        )
        .with_retry_after(*retry_after),
        SessionError::NotConnected(_) => ApiError::unknown_user(),
        // Nothing was sent in either case: the caller may simply retry.
        SessionError::NotSent { reason, .. } if reason.is_timeout() => {
            tracing::warn!(error = %e, "bunq not reached in time");
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "bunq could not be reached in time; nothing was sent",
            )
        }
        SessionError::NotSent { .. } => {
            tracing::warn!(error = %e, "bunq unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "bunq could not be reached; nothing was sent",
            )
        }
        // A blind retry of a payment could pay twice: the caller must know.
        SessionError::OutcomeUnknown { request_id, .. } => {
            tracing::warn!(error = %e, "bunq's answer was lost");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "outcome_unknown",
                "the request was sent to bunq but its answer was lost; it may have been \
                 executed. Reconcile before retrying, or retry with the same Idempotency-Key",
            )
            .with_request_id(Some(request_id))
        }
        SessionError::Unavailable {
            status,
            retry_after,
            response_id,
        } => {
            tracing::warn!(status, "bunq unavailable");
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "bunq_unavailable",
                format!("bunq is unavailable (status {status}); retry later"),
            )
            .with_response_id(response_id.as_deref());
            match retry_after {
                Some(after) => error.with_retry_after(*after),
                None => error,
            }
        }
        SessionError::Api {
            status,
            descriptions,
            response_id,
        } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bunq_error",
            format!("bunq answered {status}: {}", descriptions.join(" ")),
        )
        .with_response_id(response_id.as_deref()),
        SessionError::UnexpectedResponse { .. } => {
            tracing::warn!(error = %e, "unexpected bunq response");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unexpected_response",
                "bunq's response was not what bunq documents",
            )
        }
        other => {
            tracing::error!(error = %other, "bunq call failed");
            ApiError::internal("the bunq call failed inside the gateway")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(uri: &str) -> Result<String, StatusCode> {
        upstream_path(&uri.parse::<Uri>().expect("uri")).map_err(|e| e.status())
    }

    #[test]
    fn only_put_and_delete_with_the_callers_word_are_retryable() {
        let said = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                IDEMPOTENT_HEADER,
                HeaderValue::from_str(value).expect("value"),
            );
            headers
        };
        let retryable = |method: Method, headers: &HeaderMap| {
            api_request(method, "/x".into(), Bytes::new(), headers).is_retryable()
        };
        assert!(retryable(Method::GET, &HeaderMap::new()));
        assert!(!retryable(Method::PUT, &HeaderMap::new()));
        assert!(!retryable(Method::DELETE, &said("false")));
        assert!(retryable(Method::PUT, &said("true")));
        assert!(retryable(Method::DELETE, &said("TRUE")));
        assert!(
            !retryable(Method::POST, &said("true")),
            "a POST is never retried"
        );
    }

    #[test]
    fn upstream_path_keeps_path_and_query_as_sent() {
        assert_eq!(
            path("/v1/users/alice/bunq/user/1/monetary-account-bank?count=10"),
            Ok("/user/1/monetary-account-bank?count=10".into())
        );
        // The paths of the tests, the demo and bunq's docs.
        for ok in [
            "/v1/users/a/bunq/user",
            "/v1/users/a/bunq/user/12/monetary-account/3/payment",
            "/v1/users/a/bunq/user/12/monetary-account/3/request-inquiry",
            "/v1/users/a/bunq/user/12/notification-filter-url",
            "/v1/users/a/bunq/user/12/monetary-account/3/notification-filter-url",
            "/v1/users/a/bunq/user/12/oauth-client/5/callback-url",
            "/v1/users/a/bunq/sandbox-user-person",
            "/v1/users/a/bunq/attachment-public/0a1b2c3d-0000-4a4a-8b8b-0123456789ab",
            "/v1/users/a/bunq/attachment-public/0A1B2C3D-0000-4A4A-8B8B-0123456789AB",
            "/v1/users/a/bunq/user/1/some_word",
        ] {
            let forwarded = path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(
                Some(forwarded.as_str()),
                ok.strip_prefix("/v1/users/a/bunq")
            );
        }
        assert_eq!(
            path("/v1/users/a/bunq/user/1/payment?count=10&older_id=5"),
            Ok("/user/1/payment?count=10&older_id=5".into())
        );
    }

    #[test]
    fn upstream_path_refuses_dot_segments() {
        for p in [
            "/v1/users/a/bunq/user/../installation",
            "/v1/users/a/bunq/%2E%2e/x",
            "/v1/users/a/bunq/./x",
            "/v1/users/a/bunq/user/1/..",
            "/v1/users/a/bunq/user/.hidden",
        ] {
            assert_eq!(path(p), Err(StatusCode::BAD_REQUEST), "{p}");
        }
    }

    #[test]
    fn upstream_path_refuses_lifecycle_endpoints() {
        for p in [
            "/v1/users/a/bunq/session-server",
            "/v1/users/a/bunq/installation",
            "/v1/users/a/bunq/device-server",
            "/v1/users/a/bunq/session/1",
            "/v1/users/a/bunq/payment-service-provider-credential",
        ] {
            assert_eq!(path(p), Err(StatusCode::FORBIDDEN), "{p}");
        }
        // Not a lowercase word: refused before it is even compared.
        assert_eq!(
            path("/v1/users/a/bunq/Installation"),
            Err(StatusCode::BAD_REQUEST)
        );
        assert!(path("/v1/users/a/bunq/user/1/session-server").is_ok());
    }

    #[test]
    fn upstream_path_refuses_every_escape() {
        for p in [
            "/v1/users/a/bunq/%73ession-server",
            "/v1/users/a/bunq/session%2Dserver",
            "/v1/users/a/bunq/%69nstallation",
            "/v1/users/a/bunq/device%2dserver",
            "/v1/users/a/bunq/user/1/x%2",
            "/v1/users/a/bunq/user/1/x%20y",
            // The bypasses of the old deny-list (issue 17).
            "/v1/users/a/bunq/%2Fsession-server",
            "/v1/users/a/bunq/x%2F..%2F..%2Fsession-server",
            "/v1/users/a/bunq/%5Csession-server",
            "/v1/users/a/bunq/session-server%3Bx",
        ] {
            assert_eq!(path(p), Err(StatusCode::BAD_REQUEST), "{p}");
        }
    }

    #[test]
    fn upstream_path_refuses_backslashes_semicolons_and_empty_segments() {
        for p in [
            "/v1/users/a/bunq/session-server;x",
            "/v1/users/a/bunq/user;x/1",
            "/v1/users/a/bunq//session-server",
            "/v1/users/a/bunq/user//1",
            "/v1/users/a/bunq/user/1/",
            "/v1/users/a/bunq/",
            "/v1/users/a/bunq/user/1:x",
            "/v1/users/a/bunq/user/1@x",
            "/v1/users/a/bunq/user/x~y",
            &format!("/v1/users/a/bunq/user/{}", "a".repeat(65)),
        ] {
            assert_eq!(path(p), Err(StatusCode::BAD_REQUEST), "{p}");
        }
        // Whether or not a URI parser lets `\` through, the segment check refuses it.
        for p in [
            "/v1/users/a/bunq/\\session-server",
            "/v1/users/a/bunq/x\\..\\session-server",
        ] {
            if let Ok(uri) = p.parse::<Uri>() {
                assert_eq!(
                    upstream_path(&uri).map_err(|e| e.status()),
                    Err(StatusCode::BAD_REQUEST),
                    "{p}"
                );
            }
        }
        assert!(!valid_segment("\\session-server"));
        assert!(!valid_segment("0A1B2C3D-0000-4A4A-8B8B-0123456789AG"));
    }

    #[test]
    fn upstream_target_refuses_what_the_uri_parser_might_let_through() {
        let target = |p: &str, q: Option<&str>| upstream_target(p, q).map_err(|e| e.status());
        for p in [
            "/v1/users/a/bunq/\\session-server",
            "/v1/users/a/bunq/x\\..\\session-server",
            "/v1/users/a/bunq/user/1\t",
            "/v1/users/a/bunq/user/é",
        ] {
            assert_eq!(target(p, None), Err(StatusCode::BAD_REQUEST), "{p}");
        }
        for q in ["a=1\r\nHost: x", "a=1#frag", "a=\u{7f}", "a=\t"] {
            assert_eq!(
                target("/v1/users/a/bunq/user", Some(q)),
                Err(StatusCode::BAD_REQUEST),
                "{q:?}"
            );
        }
        assert_eq!(
            target("/v1/users/a/bunq/user", Some("count=1%0d%0a&x=%23")),
            Ok("/user?count=1%0d%0a&x=%23".into()),
            "escapes in the query are bunq's to decode, as values"
        );
        assert_eq!(
            target("/v1/users/a/bunq/user", Some("")),
            Ok("/user?".into())
        );
    }
}
