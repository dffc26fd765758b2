//! A minimal bunq client for the tests: signs requests with bunq-signing and verifies
//! every response signature the fake sends.
#![allow(clippy::unwrap_used, dead_code)]

use bunq_signing::{PrivateKey, PublicKey};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Response {
    /// The first item of `Response` wrapped in `name`.
    pub fn item(&self, name: &str) -> &Value {
        self.body["Response"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|i| i.get(name))
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
    }

    pub fn id(&self) -> u64 {
        self.item("Id")["id"].as_u64().unwrap()
    }

    pub fn error(&self) -> &str {
        self.body["Error"][0]["error_description"].as_str().unwrap()
    }
}

/// The statuses bunq answers without `X-Bunq-Server-Signature`.
pub fn unsigned_status(status: u16) -> bool {
    status == 429 || status == 491 || (500..600).contains(&status)
}

/// An HTTP client whose connections leave from `ip` (another loopback address such as
/// 127.0.0.2 stands for another egress IP).
pub fn http_from(ip: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(ip)
        .build()
        .unwrap()
}

pub struct Client {
    pub http: reqwest::Client,
    pub api_base: String,
    pub key: PrivateKey,
    pub server_key: Option<PublicKey>,
    pub token: Option<String>,
    /// Sign requests (tests turn it off to check refusals).
    pub sign: bool,
    /// Verify response signatures (tests turn it off to inspect tampered ones).
    pub verify: bool,
}

impl Client {
    pub fn new(api_base: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            api_base,
            key: PrivateKey::generate().unwrap(),
            server_key: None,
            token: None,
            sign: true,
            verify: true,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        request_id: Option<&str>,
    ) -> Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_base))
            .header("User-Agent", "bunq-testkit-tests")
            .header("Cache-Control", "no-cache")
            .header(
                "X-Bunq-Client-Request-Id",
                request_id
                    .map(str::to_owned)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            )
            .header("X-Bunq-Geolocation", "0 0 0 0 000")
            .header("X-Bunq-Language", "en_US")
            .header("X-Bunq-Region", "nl_NL");
        if let Some(token) = &self.token {
            req = req.header("X-Bunq-Client-Authentication", token);
            if self.sign {
                req = req.header(
                    "X-Bunq-Client-Signature",
                    self.key.sign_body(&body).as_str().to_owned(),
                );
            }
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.bytes().await.unwrap().to_vec();
        assert!(
            headers.contains_key("x-bunq-client-response-id"),
            "every response carries a response id"
        );
        if unsigned_status(status) {
            // bunq does not sign 429, 491 and 5xx answers; neither does the fake.
            assert!(
                !headers.contains_key("x-bunq-server-signature"),
                "a {status} answer must not be signed"
            );
        } else if let (Some(server_key), true) = (&self.server_key, self.verify) {
            let sig = headers
                .get("x-bunq-server-signature")
                .expect("every other response is signed")
                .to_str()
                .unwrap();
            server_key
                .verify_body(&raw, sig)
                .expect("the response signature verifies");
        }
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Response {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(reqwest::Method::GET, path, Vec::new(), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(
            reqwest::Method::POST,
            path,
            body.to_string().into_bytes(),
            None,
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Response {
        self.send(
            reqwest::Method::PUT,
            path,
            body.to_string().into_bytes(),
            None,
        )
        .await
    }

    /// `POST /installation`; keeps the token and the server key.
    pub async fn install(&mut self) -> Response {
        let r = self
            .post(
                "/installation",
                json!({"client_public_key": self.key.public_key_pem()}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        self.token = Some(r.item("Token")["token"].as_str().unwrap().to_owned());
        self.server_key = Some(
            PublicKey::from_pem(
                r.item("ServerPublicKey")["server_public_key"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap(),
        );
        r
    }

    pub async fn device(&self, secret: &str) -> Response {
        self.post(
            "/device-server",
            json!({"description": "tests", "secret": secret, "permitted_ips": []}),
        )
        .await
    }

    pub async fn session(&self, secret: &str) -> Response {
        self.post("/session-server", json!({"secret": secret}))
            .await
    }

    /// Installation, device and session; returns the session-server response and
    /// switches to the session token.
    pub async fn login(api_base: String, secret: &str) -> (Self, Response) {
        let mut client = Self::new(api_base);
        client.install().await;
        let d = client.device(secret).await;
        assert_eq!(d.status, 200, "{}", d.body);
        let s = client.session(secret).await;
        assert_eq!(s.status, 200, "{}", s.body);
        client.token = Some(s.item("Token")["token"].as_str().unwrap().to_owned());
        (client, s)
    }
}
