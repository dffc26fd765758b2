//! Property tests: state encoding survives the round trip through the authorize URL and
//! the callback, and callback parsing never panics.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use bunq_oauth::{Callback, OAuthConfig, OAuthEndpoints, STATE_BYTES, State, authorization_url};
use proptest::prelude::*;

fn config(redirect_uri: &str) -> OAuthConfig {
    OAuthConfig::new(
        "client id&=?",
        "secret",
        redirect_uri,
        OAuthEndpoints::sandbox(),
    )
}

/// The query parameters of `url`, decoded.
fn params(url: &str) -> Vec<(String, String)> {
    let parsed = url::Url::parse(url).unwrap();
    parsed.query_pairs().into_owned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_states_are_url_safe_with_at_least_128_bits(_round in 0u8..4) {
        let state = State::generate().unwrap();
        prop_assert!(state.secret().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(state.secret()).unwrap();
        prop_assert!(raw.len() * 8 >= 128);
        prop_assert_eq!(raw.len(), STATE_BYTES);
    }

    #[test]
    fn state_and_redirect_survive_authorize_url_and_callback(
        state in "\\PC{1,64}",
        redirect in "https://app\\.example/[a-z0-9 ?&=#+%/]{0,30}",
        code in "\\PC{1,64}",
    ) {
        let config = config(&redirect);
        let url = authorization_url(&config, &State::new(state.clone()));
        let params = params(&url);
        let names: Vec<_> = params.iter().map(|(k, _)| k.as_str()).collect();
        prop_assert_eq!(names, vec!["response_type", "client_id", "redirect_uri", "state"]);
        prop_assert_eq!(&params[1].1, "client id&=?");
        prop_assert_eq!(&params[2].1, &redirect);
        prop_assert_eq!(&params[3].1, &state);

        // What bunq would send back: our state, re-encoded, beside a code.
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &params[3].1)
            .finish();
        match Callback::from_query(&query).unwrap() {
            Callback::Code { code: c, state: s } => {
                prop_assert_eq!(c.secret(), code.as_str());
                prop_assert_eq!(s.secret(), state.as_str());
            }
            Callback::Denied { .. } => prop_assert!(false, "parsed as a denial"),
        }
    }

    #[test]
    fn callback_parsing_never_panics_on_arbitrary_input(query in "\\PC*") {
        let _ = Callback::from_query(&query);
        let _ = Callback::from_url(&query);
    }

    #[test]
    fn callback_parsing_never_panics_on_parameter_soup(
        parts in proptest::collection::vec(
            ("(code|state|error|error_description|x|)", "[a-zA-Z0-9%+&=]{0,8}"),
            0..8,
        )
    ) {
        let query = parts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        // Whatever parses is complete: a code always comes with a state.
        if let Ok(Callback::Code { state, code }) = Callback::from_query(&query) {
            prop_assert!(!state.secret().is_empty() && !code.secret().is_empty());
        }
    }

    #[test]
    fn callback_parsing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let query = String::from_utf8_lossy(&bytes);
        let _ = Callback::from_query(&query);
    }
}
