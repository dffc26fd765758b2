//! The Standard Webhooks side: the `webhook_secret` parser, the signature, and the body
//! the relay builds around a stored payload. A JSON payload must come out as valid JSON
//! whose `data` is that payload, whatever its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // secret \n id \n payload
    let mut parts = text.splitn(3, '\n');
    let (Some(secret), Some(id), Some(payload)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Some((signature, body)) =
        bunq_gateway::fuzzing::webhook(secret, id, 1_614_265_330, payload.as_bytes())
    else {
        return;
    };
    // "v1," and the base64 of a 32-byte HMAC-SHA256.
    assert!(signature.starts_with("v1,") && signature.len() == 3 + 44, "{signature}");
    if let Ok(want) = serde_json::from_str::<serde_json::Value>(payload) {
        let got: serde_json::Value = serde_json::from_slice(&body).expect("the body is JSON");
        assert_eq!(got["data"], want);
        assert_eq!(got["id"], id);
    }
});
