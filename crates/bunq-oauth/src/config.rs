//! Who we are to bunq's OAuth server and where it lives: [`OAuthConfig`], and the
//! authorize URL built from it.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::state::State;

/// The OAuth client's `client_id`: the string bunq shows as "client ID" (not the
/// client's numeric `id`, which bunq's own SDK wrongly sends). It is public: it appears
/// in every authorize URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The client id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for ClientId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for ClientId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// How the code exchange sends its parameters to the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenRequestStyle {
    /// As query-string parameters of a `POST` with an empty body, as bunq's official SDK
    /// does (and one page of bunq's docs shows).
    #[default]
    Query,
    /// As an `application/x-www-form-urlencoded` body, as RFC 6749 and another page of
    /// bunq's docs describe. Keeps the client secret out of URLs (and out of any proxy's
    /// access log).
    Form,
}

/// The two URLs of an OAuth environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OAuthEndpoints {
    /// Where the end user is sent to grant access (`.../auth`).
    pub authorize_url: String,
    /// Where the code is exchanged for an access token (`.../v1/token`).
    pub token_url: String,
}

impl OAuthEndpoints {
    /// bunq production.
    pub fn production() -> Self {
        Self::custom(
            "https://oauth.bunq.com/auth",
            "https://api.oauth.bunq.com/v1/token",
        )
    }

    /// bunq's sandbox.
    pub fn sandbox() -> Self {
        Self::custom(
            "https://oauth.sandbox.bunq.com/auth",
            "https://api-oauth.sandbox.bunq.com/v1/token",
        )
    }

    /// Explicit URLs: a fake bunq in tests, or a proxy.
    pub fn custom(authorize_url: impl Into<String>, token_url: impl Into<String>) -> Self {
        Self {
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
        }
    }
}

/// Everything the authorization flow needs to know about our OAuth client.
///
/// `Debug` redacts the client secret (it is a [`SecretString`]).
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// The client's `client_id` string.
    pub client_id: ClientId,
    /// The client's secret, sent only to the token endpoint.
    pub client_secret: SecretString,
    /// Where bunq sends the end user back; must be registered as one of the client's
    /// callback URLs, and is sent again, identical, in the code exchange. bunq compares it
    /// as a string, so it is sent byte for byte as given: keep it a `String` end to end
    /// (a round trip through `url::Url` turns `https://host` into `https://host/`, which
    /// bunq then refuses as a different URI).
    pub redirect_uri: String,
    /// The environment.
    pub endpoints: OAuthEndpoints,
    /// Query parameters (default) or a form body for the code exchange.
    pub token_request_style: TokenRequestStyle,
    /// How long an issued state waits for its callback (default 10 minutes).
    pub state_ttl: Duration,
    /// The whole code exchange, connect to last byte (default 30 seconds).
    pub timeout: Duration,
}

impl OAuthConfig {
    /// The default for [`OAuthConfig::state_ttl`]: 10 minutes.
    pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(600);
    /// The default for [`OAuthConfig::timeout`]: 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A config with the defaults: query-parameter code exchange, a 10-minute state TTL
    /// and a 30-second exchange timeout.
    pub fn new(
        client_id: impl Into<ClientId>,
        client_secret: impl Into<SecretString>,
        redirect_uri: impl Into<String>,
        endpoints: OAuthEndpoints,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
            endpoints,
            token_request_style: TokenRequestStyle::default(),
            state_ttl: Self::DEFAULT_STATE_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Sets how the code exchange sends its parameters.
    pub fn with_token_request_style(mut self, style: TokenRequestStyle) -> Self {
        self.token_request_style = style;
        self
    }

    /// Sets how long a state waits for its callback.
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl;
        self
    }

    /// Sets the code-exchange timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks what can be checked before the first request: the URLs parse, the token
    /// endpoint is `https` (or a loopback address, for fakes), because the client secret
    /// travels to it, and the authorize URL has no fragment, which would swallow the
    /// query we append.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let authorize = url::Url::parse(&self.endpoints.authorize_url)
            .map_err(|e| format!("authorize_url is not a URL: {e}"))?;
        if authorize.fragment().is_some() {
            return Err("authorize_url must not have a fragment".to_owned());
        }
        let token = url::Url::parse(&self.endpoints.token_url)
            .map_err(|e| format!("token_url is not a URL: {e}"))?;
        if token.scheme() != "https" && !is_loopback(&token) {
            return Err("token_url must be https (plain http only on loopback)".to_owned());
        }
        // Parsed only to check it; what is sent is the string itself.
        url::Url::parse(&self.redirect_uri)
            .map_err(|e| format!("redirect_uri is not a URL: {e}"))?;
        if self.client_id.as_str().is_empty() {
            return Err("client_id is empty".to_owned());
        }
        Ok(())
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// The URL to send the end user to: the authorize endpoint with `response_type=code`,
/// `client_id`, `redirect_uri` and `state`, each percent-encoded (RFC 3986: everything
/// but unreserved characters, so no `+` that a strict parser would read literally).
///
/// ```
/// use bunq_oauth::{authorization_url, OAuthConfig, OAuthEndpoints, State};
///
/// let config = OAuthConfig::new("my-client", "s3cret", "https://app.example/cb?x=1",
///     OAuthEndpoints::sandbox());
/// let url = authorization_url(&config, &State::new("abc"));
/// assert_eq!(url, "https://oauth.sandbox.bunq.com/auth?response_type=code\
///     &client_id=my-client&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1&state=abc");
/// ```
pub fn authorization_url(config: &OAuthConfig, state: &State) -> String {
    let base = &config.endpoints.authorize_url;
    let separator = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut url = String::with_capacity(base.len() + 128);
    url.push_str(base);
    url.push_str(separator);
    push_query(
        &mut url,
        &[
            ("response_type", "code"),
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", &config.redirect_uri),
            ("state", state.secret()),
        ],
    );
    url
}

/// Appends `k=v&k=v...` to `out`, percent-encoding keys and values.
pub(crate) fn push_query(out: &mut String, pairs: &[(&str, &str)]) {
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(out, key);
        out.push('=');
        percent_encode_into(out, value);
    }
}

/// RFC 3986 percent-encoding of everything but the unreserved set.
fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(authorize: &str) -> OAuthConfig {
        OAuthConfig::new(
            "client id/ü",
            "secret",
            "https://app.example/cb?a=1&b=2 3",
            OAuthEndpoints::custom(authorize, "https://token.example/v1/token"),
        )
    }

    #[test]
    fn authorization_url_percent_encodes_every_parameter() {
        let url = authorization_url(
            &config("https://oauth.example/auth"),
            &State::new("a+b/c=d"),
        );
        assert_eq!(
            url,
            "https://oauth.example/auth?response_type=code&client_id=client%20id%2F%C3%BC\
             &redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fa%3D1%26b%3D2%203&state=a%2Bb%2Fc%3Dd"
        );
    }

    #[test]
    fn authorization_url_appends_to_an_existing_query() {
        let url = authorization_url(
            &config("https://proxy.example/auth?tenant=x"),
            &State::new("s"),
        );
        assert!(url.starts_with("https://proxy.example/auth?tenant=x&response_type=code&"));
        let url = authorization_url(&config("https://proxy.example/auth?"), &State::new("s"));
        assert!(url.starts_with("https://proxy.example/auth?response_type=code&"));
    }

    #[test]
    fn a_redirect_uri_without_a_path_goes_out_without_a_slash_added() {
        let c = OAuthConfig::new(
            "c",
            "secret",
            "https://app.example",
            OAuthEndpoints::custom("https://oauth.example/auth", "https://token.example/t"),
        );
        assert!(c.validate().is_ok());
        let url = authorization_url(&c, &State::new("s"));
        assert!(
            url.contains("&redirect_uri=https%3A%2F%2Fapp.example&state=s"),
            "{url}"
        );
    }

    #[test]
    fn endpoints_match_bunq_docs() {
        let p = OAuthEndpoints::production();
        assert_eq!(p.authorize_url, "https://oauth.bunq.com/auth");
        assert_eq!(p.token_url, "https://api.oauth.bunq.com/v1/token");
        let s = OAuthEndpoints::sandbox();
        assert_eq!(s.authorize_url, "https://oauth.sandbox.bunq.com/auth");
        assert_eq!(s.token_url, "https://api-oauth.sandbox.bunq.com/v1/token");
    }

    #[test]
    fn new_sets_documented_defaults() {
        let c = config("https://oauth.example/auth");
        assert_eq!(c.state_ttl, Duration::from_secs(600));
        assert_eq!(c.token_request_style, TokenRequestStyle::Query);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_refuses_plain_http_token_endpoint_off_loopback() {
        let mut c = config("https://oauth.example/auth");
        c.endpoints.token_url = "http://token.example/v1/token".to_owned();
        assert!(c.validate().is_err());
        c.endpoints.token_url = "http://127.0.0.1:8080/v1/token".to_owned();
        assert!(c.validate().is_ok());
        c.endpoints.token_url = "http://localhost:8080/v1/token".to_owned();
        assert!(c.validate().is_ok());
        c.endpoints.token_url = "http://[::1]:8080/v1/token".to_owned();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_refuses_fragment_and_garbage() {
        assert!(config("https://oauth.example/auth#x").validate().is_err());
        assert!(config("not a url").validate().is_err());
        let mut c = config("https://oauth.example/auth");
        c.redirect_uri = "/relative".to_owned();
        assert!(c.validate().is_err());
    }
}
