//! The gateway's config loader on arbitrary TOML text (no environment).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // Paths in the text (key files) may be read: the loader only reads, and refuses
        // files others may read or that are longer than a key.
        let _ = bunq_gateway::Config::from_sources(
            Some(text),
            std::path::Path::new("fuzz.toml"),
            std::iter::empty(),
        );
    }
});
