//! Named API keys through the real binary: a key limited to `user_ref` prefixes is
//! refused (403 `forbidden_user_ref`) on every route about another user, the key's
//! name (never the key) is logged, and a deletion's audit row names the key.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;

use reqwest::Method;
use serde_json::{Value, json};
use support::{API_KEY, Env};

const TENANT_KEY: &str = "tenant-a-key-0123456789";

#[tokio::test]
async fn a_key_with_prefixes_acts_only_on_its_users_and_is_named_in_logs_and_audit() {
    let env = Env::new().await;
    let key_file = env.dir.path().join("tenant-a.key");
    std::fs::write(&key_file, format!("{TENANT_KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys = format!(
        "api_keys = [\"{API_KEY}\", {{ name = \"tenant-a\", key_file = \"{}\", user_ref_prefixes = [\"tenant-a-\"] }}]",
        key_file.display()
    );
    let gw = env.start_gateway_edited(|c| c.replace(&format!("api_keys = [\"{API_KEY}\"]"), &keys));

    // The unlimited key (the plain string form, `key-1`) connects one user per tenant.
    let end_user = env.end_user();
    for user_ref in ["tenant-a-alice", "tenant-b-bob"] {
        let person = if user_ref == "tenant-a-alice" {
            end_user.user_id
        } else {
            env.end_user().user_id
        };
        let response = env.connect(&gw, user_ref, person).await;
        assert_eq!(
            response.status(),
            302,
            "{user_ref}: redirected to return_to"
        );
    }

    let call = |method: Method, path: String, body: Option<Value>| {
        let mut request = env
            .http
            .request(method, format!("{}{path}", gw.base))
            .bearer_auth(TENANT_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    // Its own users: allowed.
    let (status, _) = call(Method::GET, "/v1/users/tenant-a-alice".into(), None).await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::POST,
        "/v1/authorizations".into(),
        Some(json!({ "user_ref": "tenant-a-carol" })),
    )
    .await;
    assert_eq!(status, 201);

    // Everyone else's: 403 on every route about a user, percent-escaped or not.
    let bunq_user = format!("user/{}", end_user.user_id);
    for (method, path, body) in [
        (Method::GET, "/v1/users/tenant-b-bob".to_owned(), None),
        (Method::GET, "/v1/users/%74enant-b-bob".to_owned(), None),
        (Method::DELETE, "/v1/users/tenant-b-bob".to_owned(), None),
        (
            Method::GET,
            format!("/v1/users/tenant-b-bob/bunq/{bunq_user}"),
            None,
        ),
        (
            Method::GET,
            "/v1/users/tenant-b-bob/callbacks".to_owned(),
            None,
        ),
        (
            Method::PUT,
            "/v1/users/tenant-b-bob/callbacks".to_owned(),
            Some(json!({ "categories": [] })),
        ),
        (
            Method::POST,
            "/v1/authorizations".to_owned(),
            Some(json!({ "user_ref": "tenant-b-dave" })),
        ),
        // The event routes span every user.
        (Method::GET, "/v1/events".to_owned(), None),
    ] {
        let (status, body) = call(method.clone(), path.clone(), body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(
            body["error"], "forbidden_user_ref",
            "{method} {path}: {body}"
        );
    }
    // The other tenant's user is untouched.
    assert_eq!(env.user(&gw, "tenant-b-bob").await.0, 200);

    let (status, _) = call(Method::DELETE, "/v1/users/tenant-a-alice".into(), None).await;
    assert_eq!(status, 204);

    let logs = gw.logs();
    assert!(logs.contains("tenant-a"), "the key's name is logged");
    assert!(
        logs.contains("key-1"),
        "the plain key is logged by position"
    );
    assert!(!logs.contains(TENANT_KEY), "a key is never logged");
    assert!(!logs.contains(API_KEY), "a key is never logged");
    drop(gw);

    let details: Vec<String> = env
        .open_store()
        .await
        .audit_log(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == bunq_store::AuditEvent::Disconnect)
        .map(|e| e.detail)
        .collect();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].ends_with(" actor=tenant-a"), "{details:?}");
}
