//! Where bunq is and how to talk to it: [`Environment`] and [`ClientConfig`].

use std::time::Duration;

use crate::RateLimitPolicy;

/// Which bunq to talk to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Environment {
    /// `https://api.bunq.com/v1`: real money.
    Production,
    /// `https://public-api.sandbox.bunq.com/v1`: bunq's sandbox.
    Sandbox,
    /// Any other API base, such as a local fake (`http://127.0.0.1:PORT/v1`).
    Custom {
        /// The base URL every path is relative to, without a trailing slash.
        api_base: String,
    },
}

impl Environment {
    /// The API base URL, without a trailing slash.
    pub fn api_base(&self) -> &str {
        match self {
            Environment::Production => "https://api.bunq.com/v1",
            Environment::Sandbox => "https://public-api.sandbox.bunq.com/v1",
            Environment::Custom { api_base } => api_base.trim_end_matches('/'),
        }
    }
}

/// How a [`BunqClient`](crate::BunqClient) behaves. Start from [`ClientConfig::new`] and
/// change fields.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Which bunq.
    pub environment: Environment,
    /// `User-Agent` of every request (bunq asks for a name that identifies the app).
    pub user_agent: String,
    /// Upper bound for one HTTP exchange, connect to last body byte.
    pub request_timeout: Duration,
    /// Upper bound for establishing a connection.
    pub connect_timeout: Duration,
    /// Client-side limits (on by default, matching bunq's).
    pub rate_limits: RateLimitPolicy,
    /// `X-Bunq-Language`.
    pub language: String,
    /// `X-Bunq-Region`.
    pub region: String,
    /// `X-Bunq-Geolocation`.
    pub geolocation: String,
    /// How many times a GET or HEAD is retried after a 429, a 502/503/504 or a
    /// transport failure. A PUT/DELETE marked idempotent is resent at most once
    /// whatever this says ([`ApiRequest::retry_limit`](crate::ApiRequest::retry_limit));
    /// a POST or an unmarked PUT/DELETE never.
    pub max_retries: u32,
    /// First back-off delay; doubles per retry, plus up to the same again of jitter.
    pub retry_backoff: Duration,
    /// How many verified (server key, body, signature) fingerprints the client keeps,
    /// so that a response identical to one already verified costs a SHA-256 instead of
    /// an RSA verification (the same answer: the verification is deterministic). `0`
    /// verifies every response with RSA.
    pub verify_cache_entries: usize,
    /// The largest response body read from bunq (default 32 MiB); a larger one is an
    /// [`Error::UnexpectedResponse`](crate::Error::UnexpectedResponse), not a memory
    /// hazard. bunq's lists are at most 200 objects.
    pub max_response_bytes: usize,
    /// The local address connections to bunq leave from (`None`: the system's choice).
    /// bunq counts its limits, and binds devices, per IP: a host with several egress
    /// addresses picks one here.
    pub local_address: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// bunq's defaults for `environment`: 30 s timeout, bunq's rate limits, 3 retries
    /// from 1 s back-off, `en_US`, `nl_NL`, geolocation `0 0 0 0 000`, 1,024 remembered
    /// response verifications.
    pub fn new(environment: Environment) -> Self {
        Self {
            environment,
            user_agent: concat!("bunq-session/", env!("CARGO_PKG_VERSION")).to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            rate_limits: RateLimitPolicy::bunq(),
            language: "en_US".to_owned(),
            region: "nl_NL".to_owned(),
            geolocation: "0 0 0 0 000".to_owned(),
            max_retries: 3,
            retry_backoff: Duration::from_secs(1),
            verify_cache_entries: 1024,
            max_response_bytes: 32 * 1024 * 1024,
            local_address: None,
        }
    }

    /// Sets the `User-Agent`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Sets the rate-limit policy.
    pub fn rate_limits(mut self, policy: RateLimitPolicy) -> Self {
        self.rate_limits = policy;
        self
    }

    /// Sets how many verified response fingerprints are kept (`0`: none, every response
    /// is verified with RSA).
    pub fn verify_cache_entries(mut self, entries: usize) -> Self {
        self.verify_cache_entries = entries;
        self
    }

    /// Sets the local address connections leave from.
    pub fn local_address(mut self, address: std::net::IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    /// Sets the per-request timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_have_bunqs_base_urls_and_custom_drops_trailing_slash() {
        assert_eq!(
            Environment::Production.api_base(),
            "https://api.bunq.com/v1"
        );
        assert_eq!(
            Environment::Sandbox.api_base(),
            "https://public-api.sandbox.bunq.com/v1"
        );
        let custom = Environment::Custom {
            api_base: "http://127.0.0.1:9/v1/".into(),
        };
        assert_eq!(custom.api_base(), "http://127.0.0.1:9/v1");
    }
}
