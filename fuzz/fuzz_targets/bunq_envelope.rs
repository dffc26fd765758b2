//! bunq's response envelopes (`{"Response": [...]}`, `{"Error": [...]}`, pagination) and
//! the session-server answer, as a (possibly hostile or broken) server sends them.
#![no_main]

use bunq_session::envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = envelope::decode_items(data);
    let _ = envelope::id(data);
    let _ = envelope::error_descriptions(data);
    let _ = envelope::list::<serde_json::Value>(data, "MonetaryAccountBank");
    let _ = envelope::single::<serde_json::Value>(data, "UserPerson");
    let _ = bunq_session::fuzzing::parse_session_server(data);
    if let Ok(link) = std::str::from_utf8(data) {
        let _ = envelope::relative_link(link, "https://public-api.sandbox.bunq.com/v1");
    }
});
