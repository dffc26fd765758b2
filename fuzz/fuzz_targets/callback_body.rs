//! bunq callback bodies, as anyone on the internet can POST them to the callback route:
//! the NotificationUrl parse, the revocation test and the object `callbacks.confirm`
//! re-fetches.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_revocation, object) = bunq_gateway::fuzzing::callback_body(data);
    if let Some((type_name, _account, _id)) = object {
        assert!(!type_name.is_empty());
    }
});
