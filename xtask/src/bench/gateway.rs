//! The real `bunq-gateway` binary (release build) in front of an in-process bunq-fake:
//! starting it with a timed `/readyz`, onboarding and connecting users through the real
//! OAuth redirects, and reading a user's session from the gateway's own store.

use std::path::Path;

use bunq_store::{MasterKey, Store};

pub use crate::gateway_process::{
    ConfigFacts, GatewayProcess, call, connect_user, consent, free_port, own_config, read_config,
};

/// Writes a copy of `facts`' config with another listen address and database.
pub fn write_variant(
    facts: &ConfigFacts,
    out: &Path,
    port: u16,
    database: &Path,
) -> Result<(), String> {
    let mut table = facts.table.clone();
    table.insert("listen".into(), format!("127.0.0.1:{port}").into());
    table.insert(
        "public_url".into(),
        format!("http://127.0.0.1:{port}").into(),
    );
    table.insert("database".into(), database.display().to_string().into());
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    bunq_signing::write_private_file(out, text.as_bytes()).map_err(|e| e.to_string())
}

/// The headers the gateway sends bunq for `user_ref`'s GETs, read from the gateway's
/// own store: its session token and its installation key's empty-body signature (plus
/// bunq's standard headers). Also returns the session's user id. nginx gets exactly
/// these, so both proxies use one session.
pub async fn session_headers(
    database: &Path,
    key: MasterKey,
    user_ref: &str,
) -> Result<(Vec<(String, String)>, u64), String> {
    use secrecy::ExposeSecret as _;
    let store = Store::open(database, key)
        .await
        .map_err(|e| e.to_string())?;
    // The user's live connection is stored under its credential (one per consent).
    let context = match store.user(user_ref).await {
        Ok(Some(user)) => {
            let credential = user.live_credential().to_owned();
            store
                .load_context(&credential)
                .await
                .map_err(|e| e.to_string())
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    };
    let _ = store.close().await;
    let context = context?.ok_or_else(|| format!("no context stored for {user_ref}"))?;
    let session = context
        .session
        .ok_or_else(|| format!("no session stored for {user_ref}"))?;
    let signature = context.installation.private_key.sign_body(b"");
    let headers = vec![
        ("User-Agent".to_owned(), "bunq-bench-nginx/1.0".to_owned()),
        ("Cache-Control".to_owned(), "no-cache".to_owned()),
        ("X-Bunq-Geolocation".to_owned(), "0 0 0 0 000".to_owned()),
        ("X-Bunq-Language".to_owned(), "en_US".to_owned()),
        ("X-Bunq-Region".to_owned(), "nl_NL".to_owned()),
        (
            "X-Bunq-Client-Authentication".to_owned(),
            session.token.expose_secret().to_owned(),
        ),
        (
            "X-Bunq-Client-Signature".to_owned(),
            signature.as_str().to_owned(),
        ),
    ];
    Ok((headers, session.user_id))
}

/// Reads one counter (summed over its series) from the gateway's `/metrics`.
pub async fn metric(http: &reqwest::Client, gateway: &str, name: &str) -> Result<f64, String> {
    let text = http
        .get(format!("{gateway}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    Ok(sum_metric(&text, name))
}

/// Sums the samples of `name` (exact, or with labels) in Prometheus text.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_counter_over_its_labels_only() {
        let text = "# HELP x\nbunq_session_creations_total 3\nbunq_calls_total{e=\"a\"} 2\nbunq_calls_total{e=\"b\"} 5\nbunq_calls_total_other 100\n";
        assert_eq!(sum_metric(text, "bunq_calls_total"), 7.0);
        assert_eq!(sum_metric(text, "bunq_session_creations_total"), 3.0);
        assert_eq!(sum_metric(text, "missing"), 0.0);
    }

    #[test]
    fn variant_config_changes_listen_and_database_only() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("a.toml");
        std::fs::write(
            &original,
            format!(
                "listen = \"127.0.0.1:1\"\ndatabase = \"a.db\"\n[security]\nencryption_key = \"{}\"\n[oauth]\nclient_id = \"c\"\n",
                secrecy::ExposeSecret::expose_secret(&MasterKey::generate().unwrap().to_base64())
            ),
        )
        .unwrap();
        let facts = read_config(&original).unwrap();
        let out = dir.path().join("b.toml");
        write_variant(&facts, &out, 2, Path::new("/x/b.db")).unwrap();
        let b: toml::Table = std::fs::read_to_string(&out).unwrap().parse().unwrap();
        assert_eq!(b["listen"].as_str(), Some("127.0.0.1:2"));
        assert_eq!(b["database"].as_str(), Some("/x/b.db"));
        assert_eq!(b["oauth"]["client_id"].as_str(), Some("c"));
    }
}
