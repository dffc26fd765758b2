//! OAuth: client registration under `/v1/user/{id}/oauth-client`, the consent page
//! `GET /auth`, and the token endpoint `POST /v1/token`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::api::{Caller, parse_body};
use crate::server::{BODY_LIMIT, Peer, Shared};
use crate::wire::{self, ApiError};
use crate::world::{CallbackUrl, Code, OauthClient, World, random_token};

fn client_of(world: &World, caller: Caller, client_id: u64) -> Result<&OauthClient, ApiError> {
    match world.oauth_clients.get(&client_id) {
        Some(c) if c.user_id == caller.owner => Ok(c),
        _ => Err(ApiError::not_found("OauthClient not found.")),
    }
}

#[derive(Deserialize)]
struct StatusBody {
    status: Option<String>,
}

fn check_status(status: Option<String>) -> Result<Option<String>, ApiError> {
    match status.as_deref() {
        None | Some("ACTIVE" | "CANCELLED") => Ok(status),
        Some(other) => Err(ApiError::bad_request(format!(
            "The status {other} is not valid; use ACTIVE or CANCELLED."
        ))),
    }
}

pub(crate) fn create_client(
    shared: &Shared,
    caller: Caller,
    body: &[u8],
) -> Result<Response, ApiError> {
    let body: StatusBody = parse_body(body)?;
    let status = check_status(body.status)?.unwrap_or_else(|| "ACTIVE".to_owned());
    let mut world = shared.world();
    let existing = world.users.get(&caller.owner).and_then(|u| u.oauth_client);
    if existing.is_some() {
        return Err(ApiError::bad_request(
            "This user already has an OAuth client; only one is allowed per user.",
        ));
    }
    let id = world.next_id();
    world.oauth_clients.insert(
        id,
        OauthClient {
            id,
            user_id: caller.owner,
            status,
            display_name: format!("OAuth client of user {}", caller.owner),
            client_id: random_token(),
            secret: random_token(),
            callback_urls: Vec::new(),
            created: SystemTime::now(),
        },
    );
    if let Some(user) = world.users.get_mut(&caller.owner) {
        user.oauth_client = Some(id);
    }
    drop(world);
    Ok(wire::created_id(shared, id))
}

pub(crate) fn list_clients(shared: &Shared, caller: Caller) -> Result<Response, ApiError> {
    let items: Vec<_> = {
        let world = shared.world();
        world
            .oauth_clients
            .values()
            .filter(|c| c.user_id == caller.owner)
            .map(World::oauth_client_json)
            .collect()
    };
    let body = json!({
        "Response": items,
        "Pagination": {"future_url": null, "newer_url": null, "older_url": null},
    });
    Ok(wire::signed(
        shared,
        StatusCode::OK,
        body.to_string().into_bytes(),
    ))
}

pub(crate) fn get_client(
    shared: &Shared,
    caller: Caller,
    client_id: u64,
) -> Result<Response, ApiError> {
    let item = {
        let world = shared.world();
        World::oauth_client_json(client_of(&world, caller, client_id)?)
    };
    Ok(wire::ok(shared, vec![item]))
}

pub(crate) fn update_client(
    shared: &Shared,
    caller: Caller,
    client_id: u64,
    body: &[u8],
) -> Result<Response, ApiError> {
    let body: StatusBody = parse_body(body)?;
    let status = check_status(body.status)?;
    {
        let mut world = shared.world();
        client_of(&world, caller, client_id)?;
        if let (Some(client), Some(status)) = (world.oauth_clients.get_mut(&client_id), status) {
            client.status = status;
        }
    }
    Ok(wire::created_id(shared, client_id))
}

pub(crate) fn create_callback_url(
    shared: &Shared,
    caller: Caller,
    client_id: u64,
    body: &[u8],
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        url: String,
    }
    let body: Body = parse_body(body)?;
    match url::Url::parse(&body.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "The callback URL {:?} is not a valid http(s) URL.",
                body.url
            )));
        }
    }
    let mut world = shared.world();
    client_of(&world, caller, client_id)?;
    let id = world.next_id();
    if let Some(client) = world.oauth_clients.get_mut(&client_id) {
        client.callback_urls.push(CallbackUrl {
            id,
            url: body.url,
            created: SystemTime::now(),
        });
    }
    drop(world);
    Ok(wire::created_id(shared, id))
}

pub(crate) fn list_callback_urls(
    shared: &Shared,
    caller: Caller,
    client_id: u64,
) -> Result<Response, ApiError> {
    let items: Vec<_> = {
        let world = shared.world();
        client_of(&world, caller, client_id)?
            .callback_urls
            .iter()
            .map(|c| json!({"OauthCallbackUrl": {"id": c.id, "url": c.url}}))
            .collect()
    };
    Ok(wire::ok(shared, items))
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn redirect(to: &str) -> Response {
    let mut response = plain(StatusCode::FOUND, "");
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// `GET /auth`: bunq's consent page, answered at once.
///
/// The consenting end user is `user_id` from the query when given (a test hook bunq
/// does not have), otherwise a fresh sandbox `UserPerson` with two accounts.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    RawQuery(query): RawQuery,
) -> Response {
    const ENDPOINT: &str = "GET /auth";
    shared.count(ENDPOINT);
    if let Some(response) = shared.gate(peer.addr, "GET", ENDPOINT).await {
        return response;
    }
    let params: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get("response_type") != Some("code") {
        return plain(StatusCode::BAD_REQUEST, "response_type must be \"code\".");
    }
    let (Some(client_id), Some(redirect_uri)) = (get("client_id"), get("redirect_uri")) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "client_id and redirect_uri are required.",
        );
    };
    let state = get("state").map(str::to_owned);
    let mut world = shared.world();
    let client = world
        .oauth_clients
        .values()
        .find(|c| c.client_id == client_id && c.status == "ACTIVE");
    // An unknown client or unregistered redirect_uri must never redirect: that would
    // make the consent page an open redirector.
    let Some(client) = client else {
        return plain(StatusCode::BAD_REQUEST, "Unknown or inactive client_id.");
    };
    if !client.callback_urls.iter().any(|c| c.url == redirect_uri) {
        return plain(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is not registered for this client.",
        );
    }
    let Ok(mut target) = url::Url::parse(redirect_uri) else {
        return plain(StatusCode::BAD_REQUEST, "The redirect_uri is not a URL.");
    };
    if shared.knobs.consent_denied() {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("error", "access_denied");
        if let Some(s) = &state {
            pairs.append_pair("state", s);
        }
        drop(pairs);
        return redirect(target.as_str());
    }
    let requested_user = get("user_id").and_then(|u| u.parse::<u64>().ok());
    let user_id = match requested_user {
        Some(id) if world.users.contains_key(&id) => id,
        Some(_) => return plain(StatusCode::BAD_REQUEST, "Unknown user_id."),
        None => world.create_sandbox_user().0,
    };
    let code = random_token();
    world.codes.insert(
        code.clone(),
        Code {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            user_id,
            state: state.clone(),
            expires_at: Instant::now() + shared.config.code_ttl,
        },
    );
    drop(world);
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("code", &code);
        if let Some(s) = &state {
            pairs.append_pair("state", s);
        }
    }
    redirect(target.as_str())
}

fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description}).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `POST /v1/token`: exchanges a code for an access token. Parameters come as query
/// string (what bunq's SDK sends) or form body (what one doc page shows); the body wins
/// where both are given. Answers plain JSON, not a signed bunq envelope.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    const ENDPOINT: &str = "POST /token";
    if method != Method::POST {
        shared.count_unrouted();
        return wire::error(
            &shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed for this route.",
        );
    }
    shared.count(ENDPOINT);
    if let Some(response) = shared.gate(peer.addr, "POST", ENDPOINT).await {
        return response;
    }
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return oauth_error("invalid_request", "The request body is too large.");
    };
    let mut params: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    params.extend(form_urlencoded::parse(&body).into_owned());
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if get("grant_type") != "authorization_code" {
        return oauth_error(
            "unsupported_grant_type",
            "Only grant_type=authorization_code is supported.",
        );
    }
    for required in ["code", "redirect_uri", "client_id", "client_secret"] {
        if get(required).is_empty() {
            return oauth_error(
                "invalid_request",
                &format!("The parameter {required} is missing."),
            );
        }
    }
    let mut world = shared.world();
    let Some(code) = world.codes.get(get("code")) else {
        return oauth_error(
            "invalid_grant",
            "The authorization code is invalid or expired.",
        );
    };
    if Instant::now() >= code.expires_at {
        world.codes.remove(get("code"));
        return oauth_error(
            "invalid_grant",
            "The authorization code is invalid or expired.",
        );
    }
    let client = world
        .oauth_clients
        .values()
        .find(|c| c.client_id == code.client_id);
    let client_ok =
        client.is_some_and(|c| c.client_id == get("client_id") && c.secret == get("client_secret"));
    if !client_ok {
        return oauth_error(
            "invalid_grant",
            "The client credentials do not match the authorization code.",
        );
    }
    if code.redirect_uri != get("redirect_uri") {
        return oauth_error(
            "invalid_grant",
            "The redirect_uri does not match the one of the authorization request.",
        );
    }
    let requested_by = client.map(|c| c.user_id).unwrap_or_default();
    let (granted_by, state) = (code.user_id, code.state.clone());
    // Single use: only a successful exchange consumes the code, so a request with a
    // wrong secret cannot burn a legitimate user's code.
    world.codes.remove(get("code"));
    let access_token = world.create_grant(granted_by, requested_by);
    drop(world);
    let body = json!({"access_token": access_token, "token_type": "bearer", "state": state});
    let mut response = Response::new(Body::from(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
