//! bunq's response format: the `Response`/`Error` envelopes, `X-Bunq-Server-Signature`
//! over the body and `X-Bunq-Client-Response-Id`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bunq_signing::PrivateKey;
use serde_json::{Value, json};

use crate::server::Shared;

/// Bodies up to this size have their signature cached.
const CACHEABLE_BODY_BYTES: usize = 64 * 1024;
/// The cache is cleared when it holds this many signatures: crude, but it bounds memory
/// and the bodies worth caching (repeated GETs of the same list) come back at once.
const CACHE_ENTRIES: usize = 4096;

/// The server's signing key plus a cache of body → signature.
///
/// RSA PKCS#1 v1.5 is deterministic, so an identical body always has the same
/// signature; caching it keeps the fake from spending ~1 ms of CPU per repeated GET,
/// which would otherwise make it the bottleneck of load tests.
pub(crate) struct Signer {
    key: PrivateKey,
    cache: Mutex<HashMap<Vec<u8>, String>>,
}

impl Signer {
    pub fn new(key: PrivateKey) -> Self {
        Self {
            key,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The PEM returned as `server_public_key` at installation.
    pub fn public_key_pem(&self) -> String {
        self.key.public_key_pem()
    }

    /// The base64 signature of `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        if body.len() > CACHEABLE_BODY_BYTES {
            return self.key.sign_body(body).as_str().to_owned();
        }
        if let Ok(cache) = self.cache.lock() {
            if let Some(sig) = cache.get(body) {
                return sig.clone();
            }
        }
        // Sign outside the lock so concurrent requests for different bodies do not queue.
        let sig = self.key.sign_body(body).as_str().to_owned();
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(body.to_vec(), sig.clone());
        }
        sig
    }
}

/// A wrong but well-formed signature: the real one with its first byte flipped.
fn tampered(signature: &str) -> String {
    match BASE64.decode(signature) {
        Ok(mut raw) if !raw.is_empty() => {
            raw[0] ^= 0xff;
            BASE64.encode(raw)
        }
        _ => BASE64.encode(b"tampered"),
    }
}

/// Whether bunq leaves an answer with this status unsigned: 429 (rate limit), 491
/// (maintenance) and 5xx come from in front of the signing API, so they carry no
/// `X-Bunq-Server-Signature`; clients must take them as unavailability, not forgery.
pub(crate) fn unsigned_status(status: StatusCode) -> bool {
    status.as_u16() == 429 || status.as_u16() == 491 || status.is_server_error()
}

/// A bunq response with `body` as is, signed unless [`unsigned_status`].
pub(crate) fn signed(shared: &Shared, status: StatusCode, body: Vec<u8>) -> Response {
    let signature = (!unsigned_status(status)).then(|| {
        let signature = shared.signer.sign(&body);
        if shared.knobs.take_tamper() {
            tampered(&signature)
        } else {
            signature
        }
    });
    let response_id = uuid::Uuid::new_v4().to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&response_id) {
        headers.insert("X-Bunq-Client-Response-Id", v);
    }
    if let Some(Ok(v)) = signature.map(|s| HeaderValue::from_str(&s)) {
        headers.insert(bunq_signing::SERVER_SIGNATURE_HEADER, v);
    }
    response
}

/// `200 {"Response":[...items]}`.
pub(crate) fn ok(shared: &Shared, items: Vec<Value>) -> Response {
    let body = json!({ "Response": items });
    signed(shared, StatusCode::OK, body.to_string().into_bytes())
}

/// `200 {"Response":[{"Id":{"id":id}}]}`, what bunq answers to a create.
pub(crate) fn created_id(shared: &Shared, id: u64) -> Response {
    ok(shared, vec![json!({"Id": {"id": id}})])
}

/// A bunq error: `{"Error":[{"error_description","error_description_translated"}]}`.
pub(crate) fn error(shared: &Shared, status: StatusCode, description: &str) -> Response {
    signed(shared, status, error_body(description))
}

pub(crate) fn error_body(description: &str) -> Vec<u8> {
    json!({"Error": [{
        "error_description": description,
        "error_description_translated": description,
    }]})
    .to_string()
    .into_bytes()
}

/// bunq's wording for a missing, unknown or expired token.
pub(crate) const INSUFFICIENT_AUTHORISATION: &str = "Insufficient authorisation.";

/// A failure answered as a bunq error.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub description: String,
}

impl ApiError {
    pub fn new(status: StatusCode, description: impl Into<String>) -> Self {
        Self {
            status,
            description: description.into(),
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, description)
    }

    pub fn unauthorised() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INSUFFICIENT_AUTHORISATION)
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, description)
    }

    pub fn into_response(self, shared: &Shared) -> Response {
        error(shared, self.status, &self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampered_signature_differs_but_stays_base64() {
        let sig = BASE64.encode([1u8, 2, 3]);
        let bad = tampered(&sig);
        assert_ne!(sig, bad);
        assert!(BASE64.decode(bad).is_ok());
    }

    #[test]
    fn only_429_491_and_5xx_are_unsigned() {
        for unsigned in [429, 491, 500, 502, 503, 599] {
            assert!(unsigned_status(StatusCode::from_u16(unsigned).unwrap()));
        }
        for signed in [200, 400, 401, 404, 405, 413, 466, 490] {
            assert!(!unsigned_status(StatusCode::from_u16(signed).unwrap()));
        }
    }
}
