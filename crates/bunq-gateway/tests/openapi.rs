//! docs/openapi.yaml held to the real binary: every documented route and method is
//! routed, every method the file does not document on a path is 405, and every status
//! the gateway answers to a range of valid, unauthenticated and malformed requests is
//! one the file documents for that operation.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use reqwest::Method;
use support::{API_KEY, Env};
use yaml_rust2::{Yaml, YamlLoader};

struct Operation {
    path: String,
    method: Method,
    statuses: BTreeSet<u16>,
    public: bool,
}

fn documented() -> Vec<Operation> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_hash().unwrap() {
        for (method, op) in item.as_hash().unwrap() {
            let method = method.as_str().unwrap();
            if method == "parameters" {
                continue;
            }
            // `default` (the proxy's: bunq's own answers) is not a gateway status: no
            // request here reaches bunq, so the explicit ones must cover every answer.
            let statuses = op["responses"]
                .as_hash()
                .unwrap()
                .keys()
                .filter_map(|k| k.as_str().unwrap().parse().ok())
                .collect();
            let public = matches!(&op["security"], Yaml::Array(a) if a.is_empty());
            out.push(Operation {
                path: path.as_str().unwrap().to_owned(),
                method: method.to_uppercase().parse().unwrap(),
                statuses,
                public,
            });
        }
    }
    out
}

/// The path template with its parameters filled in with `value` (the bunq path with a
/// real-looking one).
fn concrete(template: &str, value: &str) -> String {
    template
        .replace("{path}", "user/1/monetary-account")
        .replace("{user_ref}", value)
        .replace("{id}", value)
        .replace("{callback_id}", value)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_file_matches_the_router() {
    let env = Env::new().await;
    let gw = env.start_gateway();
    let operations = documented();
    assert!(operations.len() >= 14, "{} operations", operations.len());
    let mut problems = Vec::new();
    for op in &operations {
        // Unknown ids, a user_ref over the length limit, no credentials, an empty JSON
        // body: the answers a careless or hostile caller meets.
        let variants: [(&str, bool, Option<&str>); 4] = [
            ("nobody", true, Some("{}")),
            ("nobody", false, None),
            (&"x".repeat(300), true, Some("{}")),
            ("nobody", true, Some("not json")),
        ];
        for (value, auth, body) in variants {
            let url = format!("{}{}", gw.base, concrete(&op.path, value));
            let mut request = env.http.request(op.method.clone(), &url);
            if auth {
                request = request.bearer_auth(API_KEY);
            }
            if let Some(body) = body.filter(|_| op.method != Method::GET) {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_owned());
            }
            let status = request.send().await.unwrap().status().as_u16();
            if !op.statuses.contains(&status) {
                problems.push(format!(
                    "{} {} (auth: {auth}, value: {}…) answered {status}, documented {:?}",
                    op.method,
                    op.path,
                    &value[..value.len().min(8)],
                    op.statuses
                ));
            }
            if !auth && !op.public && status != 401 {
                problems.push(format!(
                    "{} {} answered {status} without a key",
                    op.method, op.path
                ));
            }
        }
    }
    // Methods the file does not document on a documented path are not routed.
    let paths: BTreeSet<&str> = operations.iter().map(|o| o.path.as_str()).collect();
    for path in paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            if operations
                .iter()
                .any(|o| o.path == path && o.method == method)
            {
                continue;
            }
            // The proxy takes every method bunq has.
            if path.ends_with("/bunq/{path}") {
                continue;
            }
            let url = format!("{}{}", gw.base, concrete(path, "nobody"));
            let status = env
                .http
                .request(method.clone(), &url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status != 405 {
                problems.push(format!("undocumented {method} {path} answered {status}"));
            }
        }
    }
    // And a path the file does not have is not routed either.
    let stray = env
        .http
        .get(format!("{}/v1/admin", gw.base))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
