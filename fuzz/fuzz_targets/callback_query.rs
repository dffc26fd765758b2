//! The OAuth callback's query string, as the browser (anyone) sends it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The gateway hands the parser the raw query as text (axum's RawQuery).
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = bunq_oauth::Callback::from_query(query);
    }
});
