//! The code exchange: `POST` to the token endpoint, an [`AccessToken`] back.

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::callback::AuthorizationCode;
use crate::config::{OAuthConfig, TokenRequestStyle, push_query};
use crate::error::OAuthError;

/// The most of a token response we read. bunq's is under 200 bytes; the cap keeps a
/// misbehaving endpoint from making us buffer without bound.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// An end user's access token: what `POST /device-server` and `POST /session-server`
/// take as `secret` to act for them. `Debug` redacts the token.
#[derive(Clone)]
pub struct AccessToken {
    /// The token.
    pub access_token: SecretString,
    /// Always `bearer` (compared case-insensitively, as RFC 6749 says); kept as sent.
    pub token_type: String,
    /// The `state` field of bunq's answer, if any (informational: the callback's state
    /// has already been checked against the store).
    pub state: Option<String>,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("state", &self.state.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Exchanges an authorization code for an access token.
///
/// Sends `grant_type=authorization_code`, `code`, `redirect_uri`, `client_id` (the
/// client's `client_id` string) and `client_secret`, as query parameters of a `POST` with
/// an empty body or as a form body, per [`OAuthConfig::token_request_style`]. The request
/// is bounded by [`OAuthConfig::timeout`] and never retried: a code is single use, and a
/// retry after a lost answer would only earn `invalid_grant`.
///
/// The `http` client should not follow redirects (a redirect would carry the secret to
/// wherever it points); [`crate::OAuthFlow`] builds one that does not.
pub async fn exchange_code(
    http: &reqwest::Client,
    config: &OAuthConfig,
    code: &AuthorizationCode,
) -> Result<AccessToken, OAuthError> {
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.secret()),
        ("redirect_uri", config.redirect_uri.as_str()),
        ("client_id", config.client_id.as_str()),
        ("client_secret", config.client_secret.expose_secret()),
    ];
    let mut encoded = String::with_capacity(256);
    push_query(&mut encoded, &params);

    let token_url = &config.endpoints.token_url;
    let request = match config.token_request_style {
        TokenRequestStyle::Query => {
            let separator = if token_url.contains('?') { '&' } else { '?' };
            http.post(format!("{token_url}{separator}{encoded}"))
                .header(reqwest::header::CONTENT_LENGTH, "0")
        }
        TokenRequestStyle::Form => http
            .post(token_url.as_str())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(encoded),
    };
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(config.timeout)
        .send()
        .await
        .map_err(OAuthError::from_reqwest)?;

    let status = response.status();
    let body = read_capped(response).await?;
    tracing::debug!(status = status.as_u16(), "token endpoint answered");
    if status.is_success() {
        parse_token(&body, status.as_u16())
    } else {
        Err(token_endpoint_error(status.as_u16(), &body))
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, OAuthError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(OAuthError::from_reqwest)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(OAuthError::InvalidTokenResponse(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a 2xx body. It is parsed into a `Value` first and picked apart by hand so that
/// no serde error message can quote the token.
fn parse_token(body: &[u8], status: u16) -> Result<AccessToken, OAuthError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| OAuthError::InvalidTokenResponse(format!("not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(OAuthError::InvalidTokenResponse(
            "not a JSON object".to_owned(),
        ));
    };
    let field = |name: &str| object.get(name).and_then(Value::as_str);
    let access_token = match object.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => SecretString::from(t.clone()),
        Some(_) => {
            return Err(OAuthError::InvalidTokenResponse(
                "access_token is not a non-empty string".to_owned(),
            ));
        }
        // Some servers answer an error with 200.
        None if field("error").is_some() => return Err(rfc6749_error(status, &object)),
        None => {
            return Err(OAuthError::InvalidTokenResponse(
                "no access_token".to_owned(),
            ));
        }
    };
    let token_type = match field("token_type") {
        Some(t) if t.eq_ignore_ascii_case("bearer") => t.to_owned(),
        Some(t) => {
            return Err(OAuthError::InvalidTokenResponse(format!(
                "token_type {:?} is not bearer",
                t.chars().take(32).collect::<String>()
            )));
        }
        None => {
            return Err(OAuthError::InvalidTokenResponse("no token_type".to_owned()));
        }
    };
    Ok(AccessToken {
        access_token,
        token_type,
        state: field("state").map(str::to_owned),
    })
}

/// A non-2xx answer: RFC 6749 `{"error","error_description"}`, bunq's API error
/// envelope `{"Error":[{"error_description"}]}`, or anything else (status only).
fn token_endpoint_error(status: u16, body: &[u8]) -> OAuthError {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => rfc6749_error(status, &object),
        _ => OAuthError::TokenEndpoint {
            status,
            error: None,
            description: None,
        },
    }
}

fn rfc6749_error(status: u16, object: &serde_json::Map<String, Value>) -> OAuthError {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(bounded);
    let bunq_description = || {
        object
            .get("Error")
            .and_then(Value::as_array)
            .and_then(|errors| errors.first())
            .and_then(|e| text(e.get("error_description")))
    };
    OAuthError::TokenEndpoint {
        status,
        error: text(object.get("error")),
        description: text(object.get("error_description")).or_else(bunq_description),
    }
}

/// Server text goes into error messages and logs: keep it short.
fn bounded(s: &str) -> String {
    s.chars().take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bunq_token_response() {
        let t = parse_token(
            br#"{"access_token":"tok","token_type":"bearer","state":"st"}"#,
            200,
        )
        .unwrap();
        assert_eq!(t.access_token.expose_secret(), "tok");
        assert_eq!(t.token_type, "bearer");
        assert_eq!(t.state.as_deref(), Some("st"));
    }

    #[test]
    fn accepts_bearer_in_any_case() {
        assert!(parse_token(br#"{"access_token":"t","token_type":"Bearer"}"#, 200).is_ok());
    }

    #[test]
    fn rejects_non_bearer_missing_or_malformed_tokens() {
        for body in [
            &br#"{"access_token":"t","token_type":"mac"}"#[..],
            br#"{"access_token":"t"}"#,
            br#"{"token_type":"bearer"}"#,
            br#"{"access_token":"","token_type":"bearer"}"#,
            br#"{"access_token":12345,"token_type":"bearer"}"#,
            br#"["access_token"]"#,
            b"not json",
        ] {
            assert!(
                matches!(
                    parse_token(body, 200),
                    Err(OAuthError::InvalidTokenResponse(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn malformed_token_error_does_not_quote_the_token() {
        let err =
            parse_token(br#"{"access_token":["s3cr3t"],"token_type":"bearer"}"#, 200).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t"));
    }

    #[test]
    fn reads_bunq_error_envelope_on_non_2xx() {
        let err = token_endpoint_error(
            400,
            br#"{"Error":[{"error_description":"Bad code","error_description_translated":"x"}]}"#,
        );
        let OAuthError::TokenEndpoint {
            status,
            error,
            description,
        } = err
        else {
            panic!("expected TokenEndpoint")
        };
        assert_eq!(
            (status, error, description.as_deref()),
            (400, None, Some("Bad code"))
        );
    }

    #[test]
    fn error_with_200_is_a_token_endpoint_error() {
        let err = parse_token(br#"{"error":"invalid_grant"}"#, 200).unwrap_err();
        assert!(matches!(
            err,
            OAuthError::TokenEndpoint { status: 200, error: Some(ref e), .. } if e == "invalid_grant"
        ));
    }
}
