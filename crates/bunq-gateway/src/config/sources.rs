//! Raw config values by dotted key, from the file and the environment, before
//! validation; every accessor's error names the key and where its value came from.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use toml::{Table, Value};
use url::Url;

use super::{CONFIG_PATH_ENV, ConfigError, ENV_PREFIX};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    StrList,
}

struct KeySpec {
    section: Option<&'static str>,
    name: &'static str,
    kind: Kind,
}

const fn top(name: &'static str, kind: Kind) -> KeySpec {
    KeySpec {
        section: None,
        name,
        kind,
    }
}

const fn sec(section: &'static str, name: &'static str, kind: Kind) -> KeySpec {
    KeySpec {
        section: Some(section),
        name,
        kind,
    }
}

/// Every key the gateway knows; anything else is a typo and is refused.
const KEYS: &[KeySpec] = &[
    top("listen", Kind::Str),
    top("admin_listen", Kind::Str),
    top("public_url", Kind::Str),
    top("database", Kind::Str),
    top("log_format", Kind::Str),
    sec("bunq", "environment", Kind::Str),
    sec("bunq", "api_base_url", Kind::Str),
    sec("bunq", "oauth_authorize_url", Kind::Str),
    sec("bunq", "oauth_token_url", Kind::Str),
    sec("bunq", "user_agent", Kind::Str),
    sec("bunq", "rate_limits", Kind::Bool),
    sec("bunq", "session_window_ms", Kind::Int),
    sec("bunq", "rate_limit_window_ms", Kind::Int),
    sec("bunq", "rate_limit_scope", Kind::Str),
    sec("bunq", "session_wait_seconds", Kind::Int),
    sec("bunq", "permitted_ips", Kind::StrList),
    sec("bunq", "verify_cache", Kind::Bool),
    sec("bunq", "egress", Kind::Str),
    sec("bunq", "bind_address", Kind::Str),
    sec("oauth", "client_id", Kind::Str),
    sec("oauth", "client_secret", Kind::Str),
    sec("oauth", "client_secret_file", Kind::Str),
    sec("oauth", "redirect_uri", Kind::Str),
    sec("oauth", "callback_wait_ms", Kind::Int),
    sec("oauth", "state_ttl_seconds", Kind::Int),
    sec("security", "encryption_key", Kind::Str),
    sec("security", "encryption_key_file", Kind::Str),
    // Strings or {name, key | key_file, user_ref_prefixes} tables; from the
    // environment a comma-separated list of keys.
    sec("security", "api_keys", Kind::StrList),
    sec("security", "api_keys_file", Kind::Str),
    sec("http", "max_body_bytes", Kind::Int),
    sec("http", "request_timeout_seconds", Kind::Int),
    sec("http", "upstream_timeout_seconds", Kind::Int),
    sec("http", "shutdown_grace_seconds", Kind::Int),
    sec("http", "header_read_timeout_ms", Kind::Int),
    sec("http", "idle_timeout_seconds", Kind::Int),
    sec("http", "max_connections", Kind::Int),
    sec("http", "idempotency_retention_seconds", Kind::Int),
    sec("http", "workers", Kind::Int),
    sec("http", "log_user_ref", Kind::Bool),
    sec("callbacks", "categories", Kind::StrList),
    sec("callbacks", "allowed_sources", Kind::StrList),
    sec("callbacks", "trusted_proxies", Kind::StrList),
    sec("callbacks", "require_signature", Kind::Bool),
    sec("callbacks", "max_body_bytes", Kind::Int),
    sec("callbacks", "webhook_urls", Kind::StrList),
    sec("callbacks", "webhook_secret", Kind::Str),
    sec("callbacks", "webhook_secret_file", Kind::Str),
    sec("callbacks", "retry_period_seconds", Kind::Int),
    sec("callbacks", "min_backoff_ms", Kind::Int),
    sec("callbacks", "max_backoff_seconds", Kind::Int),
    sec("callbacks", "delivery_timeout_seconds", Kind::Int),
    sec("callbacks", "confirm", Kind::Bool),
    sec("callbacks", "retention_seconds", Kind::Int),
    sec("fleet", "heartbeat_ms", Kind::Int),
    sec("fleet", "stale_after_ms", Kind::Int),
    sec("fleet", "event_lease_ms", Kind::Int),
    sec("fleet", "advertise_url", Kind::Str),
];

const SECTIONS: &[&str] = &["bunq", "oauth", "security", "http", "callbacks", "fleet"];

impl KeySpec {
    fn dotted(&self) -> String {
        match self.section {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.to_owned(),
        }
    }

    fn env_name(&self) -> String {
        match self.section {
            Some(s) => format!("{ENV_PREFIX}{}_{}", s, self.name).to_ascii_uppercase(),
            None => format!("{ENV_PREFIX}{}", self.name).to_ascii_uppercase(),
        }
    }
}

/// One resolved raw value and where it came from.
struct Raw {
    value: Value,
    env: Option<String>,
}

/// The raw values by dotted key, before validation.
pub(super) struct Sources {
    values: HashMap<String, Raw>,
    /// `BUNQ_GATEWAY_*` variables naming no key (sorted).
    ignored_env: Vec<String>,
}

impl Sources {
    /// The `BUNQ_GATEWAY_*` variables that name no key, sorted.
    pub(super) fn ignored_environment(&self) -> Vec<String> {
        self.ignored_env.clone()
    }

    pub(super) fn err(&self, key: &str, reason: impl fmt::Display) -> ConfigError {
        let origin = match self.values.get(key).and_then(|r| r.env.as_deref()) {
            Some(env) => format!(" (from env {env})"),
            None => String::new(),
        };
        ConfigError::Key {
            key: key.to_owned(),
            origin,
            reason: reason.to_string(),
        }
    }

    pub(super) fn str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.values.get(key).map(|r| &r.value) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Err(self.err(key, "is empty")),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.err(key, "must be a string")),
        }
    }

    pub(super) fn required_str(&self, key: &str) -> Result<&str, ConfigError> {
        self.str(key)?.ok_or_else(|| self.err(key, "is missing"))
    }

    pub(super) fn int(
        &self,
        key: &str,
        default: u64,
        range: (u64, u64),
    ) -> Result<u64, ConfigError> {
        let n = match self.values.get(key).map(|r| &r.value) {
            None => return Ok(default),
            Some(Value::Integer(n)) => *n,
            Some(_) => return Err(self.err(key, "must be an integer")),
        };
        match u64::try_from(n) {
            Ok(n) if (range.0..=range.1).contains(&n) => Ok(n),
            _ => Err(self.err(
                key,
                format_args!("must be between {} and {}, got {n}", range.0, range.1),
            )),
        }
    }

    pub(super) fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.values.get(key).map(|r| &r.value) {
            None => Ok(default),
            Some(Value::Boolean(b)) => Ok(*b),
            Some(_) => Err(self.err(key, "must be true or false")),
        }
    }

    pub(super) fn url(&self, key: &str) -> Result<Option<Url>, ConfigError> {
        let Some(s) = self.str(key)? else {
            return Ok(None);
        };
        let url = Url::parse(s).map_err(|e| self.err(key, format_args!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(self.err(key, "must be an http:// or https:// URL"));
        }
        Ok(Some(url))
    }

    /// A URL the gateway sends bunq credentials to (the API base: access and session
    /// tokens; the token URL: the client secret and codes; the authorize URL: the
    /// state): `https`, or plain `http` only on loopback (a local fake), as bunq-oauth
    /// already demands of the token URL.
    pub(super) fn bunq_url(&self, key: &str) -> Result<Option<Url>, ConfigError> {
        let Some(url) = self.url(key)? else {
            return Ok(None);
        };
        if url.scheme() != "https" && !is_loopback(&url) {
            return Err(self.err(
                key,
                "must be https:// (plain http:// only on 127.0.0.0/8, ::1 or localhost)",
            ));
        }
        Ok(Some(url))
    }

    /// A list whatever its items are (the caller checks them).
    pub(super) fn raw_list(&self, key: &str) -> Result<Option<&[Value]>, ConfigError> {
        match self.values.get(key).map(|r| &r.value) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items.as_slice())),
            Some(_) => Err(self.err(key, "must be a list")),
        }
    }

    pub(super) fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(raw) = self.values.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = &raw.value else {
            return Err(self.err(key, "must be a list of strings"));
        };
        items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.err(key, "must be a list of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn parse_toml(text: &str, file: &Path) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError::Syntax {
            path: file.to_owned(),
            line,
            reason: e.message().trim().replace('\n', " "),
        }
    })
}

/// Flattens the file into dotted keys (refusing unknown ones) and applies the environment.
pub(super) fn collect(
    table: Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Sources, ConfigError> {
    let known: HashSet<String> = KEYS.iter().map(KeySpec::dotted).collect();
    let unknown = |key: String| ConfigError::Key {
        key,
        origin: String::new(),
        reason: "unknown key".into(),
    };
    let mut values = HashMap::new();
    for (k, v) in table {
        if SECTIONS.contains(&k.as_str()) {
            let Value::Table(inner) = v else {
                return Err(ConfigError::Key {
                    key: k,
                    origin: String::new(),
                    reason: "must be a [section]".into(),
                });
            };
            for (ik, iv) in inner {
                let dotted = format!("{k}.{ik}");
                if !known.contains(&dotted) {
                    return Err(unknown(dotted));
                }
                values.insert(
                    dotted,
                    Raw {
                        value: iv,
                        env: None,
                    },
                );
            }
        } else if known.contains(&k) {
            values.insert(
                k,
                Raw {
                    value: v,
                    env: None,
                },
            );
        } else {
            return Err(unknown(k));
        }
    }

    let by_env: HashMap<String, &KeySpec> = KEYS.iter().map(|s| (s.env_name(), s)).collect();
    let mut ignored_env = Vec::new();
    for (name, text) in env {
        if !name.starts_with(ENV_PREFIX) || name == CONFIG_PATH_ENV {
            continue;
        }
        // Unknown variables are ignored (the caller warns), unlike unknown keys in the
        // file: the environment is shared with orchestrators, which add their own
        // (Kubernetes injects `<SERVICE>_PORT`, `<SERVICE>_SERVICE_HOST`...).
        let Some(spec) = by_env.get(&name) else {
            ignored_env.push(name);
            continue;
        };
        let key = spec.dotted();
        let bad = |reason: &str| ConfigError::Key {
            key: key.clone(),
            origin: format!(" (from env {name})"),
            reason: reason.to_owned(),
        };
        let value = match spec.kind {
            Kind::Str => Value::String(text),
            Kind::Int => {
                Value::Integer(text.trim().parse().map_err(|_| bad("must be an integer"))?)
            }
            Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Value::Boolean(true),
                "false" | "0" | "no" => Value::Boolean(false),
                _ => return Err(bad("must be true or false")),
            },
            // A list travels in one variable, comma-separated.
            Kind::StrList => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        };
        values.insert(
            key,
            Raw {
                value,
                env: Some(name),
            },
        );
    }
    ignored_env.sort();
    Ok(Sources {
        values,
        ignored_env,
    })
}
