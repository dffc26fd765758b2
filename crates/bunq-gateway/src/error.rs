//! Errors: [`GatewayError`] for starting and running the gateway, and the JSON error
//! answers of the HTTP surface.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde::Serialize;

use crate::config::ConfigError;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or failed its check.
    #[error("database: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A crate refused the configuration built from ours (a URL, a header value, ...).
    #[error("setup: {0}")]
    Setup(String),
    /// The HTTP server failed.
    #[error("server: {0}")]
    Serve(#[source] std::io::Error),
}

impl From<bunq_store::StoreError> for GatewayError {
    fn from(e: bunq_store::StoreError) -> Self {
        GatewayError::Store(Box::new(e))
    }
}

/// A database failure while answering: logged in full, answered as a bare 500.
impl From<bunq_store::StoreError> for ApiError {
    fn from(e: bunq_store::StoreError) -> Self {
        tracing::error!(error = %e, "database");
        ApiError::internal("the gateway's database failed")
    }
}

/// A JSON error answer: `{"error": "<code>", "message": "<text>"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    bunq_response_id: Option<String>,
    bunq_request_id: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bunq_response_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bunq_request_id: Option<&'a str>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            bunq_response_id: None,
            bunq_request_id: None,
        }
    }

    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub(crate) fn with_response_id(mut self, id: Option<&str>) -> Self {
        self.bunq_response_id = id.map(str::to_owned);
        self
    }

    /// The `X-Bunq-Client-Request-Id` of a call whose answer was lost or never came: the
    /// caller needs it to reconcile with bunq.
    pub(crate) fn with_request_id(mut self, id: Option<&str>) -> Self {
        self.bunq_request_id = id.map(str::to_owned);
        self
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <api key>",
        )
    }

    /// The API key is limited to some `user_ref` prefixes and this one is not among them.
    pub(crate) fn forbidden_user_ref() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden_user_ref",
            "this API key may not act on this user_ref (see its user_ref_prefixes)",
        )
    }

    pub(crate) fn unknown_user() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            "no connected bunq user with this user_ref",
        )
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over {limit} bytes"),
        )
    }

    pub(crate) fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
            bunq_response_id: self.bunq_response_id.as_deref(),
            bunq_request_id: self.bunq_request_id.as_deref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(id) = self
            .bunq_request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            response.headers_mut().insert(
                http::HeaderName::from_static("x-bunq-client-request-id"),
                id,
            );
        }
        if let Some(after) = self.retry_after {
            // Round up: "retry after 0 s" would invite an immediate retry.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_body_is_json_with_error_and_message() {
        let response = ApiError::unknown_user().into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "unknown_user");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(json.get("bunq_response_id").is_none());
    }

    #[tokio::test]
    async fn a_request_id_goes_in_the_body_and_the_header() {
        let response = ApiError::new(StatusCode::BAD_GATEWAY, "outcome_unknown", "lost")
            .with_request_id(Some("req-1"))
            .into_response();
        assert_eq!(response.headers()["x-bunq-client-request-id"], "req-1");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["bunq_request_id"], "req-1");
    }

    /// How `proxy::session_error` answers the failures that say whether bunq saw the
    /// call (their faults are produced for real in bunq-session's tests).
    #[tokio::test]
    async fn session_errors_say_whether_bunq_may_have_seen_the_call() {
        use bunq_session::{Error as SessionError, SendFailure, TimeoutKind};
        let answer = |e: SessionError| crate::proxy::session_error(&e).into_response();
        let endpoint = || "POST user/1/x".to_owned();

        let refused = answer(SessionError::NotSent {
            endpoint: endpoint(),
            request_id: "r1".into(),
            reason: SendFailure::DeadlinePassed,
        });
        assert_eq!(refused.status(), StatusCode::GATEWAY_TIMEOUT);
        let connect = answer(SessionError::NotSent {
            endpoint: endpoint(),
            request_id: "r1".into(),
            reason: SendFailure::Timeout {
                kind: TimeoutKind::Connect,
                after: Duration::from_secs(10),
            },
        });
        assert_eq!(connect.status(), StatusCode::GATEWAY_TIMEOUT);

        let lost = answer(SessionError::OutcomeUnknown {
            endpoint: endpoint(),
            request_id: "pay-1".into(),
            reason: SendFailure::Timeout {
                kind: TimeoutKind::Total,
                after: Duration::from_secs(30),
            },
        });
        assert_eq!(lost.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(lost.headers()["x-bunq-client-request-id"], "pay-1");
        let body = axum::body::to_bytes(lost.into_body(), 4096)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "outcome_unknown");
        assert_eq!(json["bunq_request_id"], "pay-1");
        assert!(
            json["message"]
                .as_str()
                .is_some_and(|m| m.contains("may have been executed"))
        );

        let down = answer(SessionError::Unavailable {
            status: 491,
            retry_after: Some(Duration::from_secs(60)),
            response_id: Some("resp-9".into()),
        });
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.headers()[http::header::RETRY_AFTER], "60");
        let body = axum::body::to_bytes(down.into_body(), 4096)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["error"], "bunq_unavailable");
        assert_eq!(json["bunq_response_id"], "resp-9");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response = ApiError::unavailable("busy")
            .with_retry_after(Duration::from_millis(1500))
            .into_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
    }
}
