//! The proxy's check of the bunq path and query, as any API caller sends them. Beyond
//! not panicking, what passes must be what the check promises: no escape, dot, `\`,
//! `;`, empty segment or lifecycle endpoint reaches bunq.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LIFECYCLE: [&str; 4] = [
    "installation",
    "device-server",
    "session-server",
    "payment-service-provider-credential",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (text, None),
    };
    let Some(target) = bunq_gateway::fuzzing::proxy_target(path, query) else {
        return;
    };
    let forwarded_path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    assert!(forwarded_path.starts_with('/'), "{target:?}");
    for bad in ["%", "\\", ";", "//", "/.", "#"] {
        assert!(!forwarded_path.contains(bad), "{bad:?} forwarded in {target:?}");
    }
    let first = forwarded_path[1..].split('/').next().unwrap_or("");
    assert!(!LIFECYCLE.contains(&first), "lifecycle endpoint forwarded: {target:?}");
    assert!(
        !target.bytes().any(|b| b.is_ascii_control()),
        "control character forwarded: {target:?}"
    );
});
