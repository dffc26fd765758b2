//! bunq's API under `/v1`: routing, authentication (tokens and request signatures),
//! installation, device-server, session-server, sandbox users and user objects.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bunq_signing::{CLIENT_SIGNATURE_HEADER, PublicKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::{BODY_LIMIT, Peer, Shared};
use crate::wire::{self, ApiError};
use crate::world::{
    AccountKind, Device, Installation, PermittedIps, SessionRec, Subject, random_token, timestamp,
};

/// The header carrying the installation or session token.
pub(crate) const AUTH_HEADER: &str = "X-Bunq-Client-Authentication";
/// The header naming a request; a device may use each value for one non-GET call.
pub(crate) const REQUEST_ID_HEADER: &str = "X-Bunq-Client-Request-Id";

/// One API operation, with the ids from its path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Installation,
    DeviceServer,
    SessionServer,
    PaymentServiceProviderCredential,
    SandboxUserPerson,
    DeleteSession,
    ListUsers,
    GetUser(u64),
    ListAccountsBank(u64),
    GetAccountBank(u64, u64),
    ListAccounts(u64),
    GetAccount(u64, u64),
    CreatePayment(u64, u64),
    ListPayments(u64, u64),
    GetPayment(u64, u64, u64),
    CreateRequestInquiry(u64, u64),
    ListRequestInquiries(u64, u64),
    GetRequestInquiry(u64, u64, u64),
    CreateDraftPayment(u64, u64),
    ListDraftPayments(u64, u64),
    GetDraftPayment(u64, u64, u64),
    CreateOauthClient(u64),
    ListOauthClients(u64),
    GetOauthClient(u64, u64),
    UpdateOauthClient(u64, u64),
    CreateCallbackUrl(u64, u64),
    ListCallbackUrls(u64, u64),
    SetNotificationFilters(u64, Option<u64>),
    ListNotificationFilters(u64, Option<u64>),
}

enum Resolved {
    Found(Op, &'static str),
    MethodNotAllowed,
    NotFound,
}

fn pick(method: &str, choices: &[(&str, Op, &'static str)]) -> Resolved {
    choices
        .iter()
        .find(|(m, _, _)| *m == method)
        .map_or(Resolved::MethodNotAllowed, |(_, op, name)| {
            Resolved::Found(*op, name)
        })
}

/// Maps a method and the path segments after `/v1/` to an operation and the endpoint
/// name its calls are counted under.
fn resolve(method: &str, segs: &[&str]) -> Resolved {
    use Op::*;
    let ids: Vec<Option<u64>> = segs.iter().map(|s| s.parse().ok()).collect();
    let id = |i: usize| ids.get(i).copied().flatten();
    match (segs, id(1), id(3), id(4)) {
        (["installation"], ..) => pick(method, &[("POST", Installation, "POST /installation")]),
        (["device-server"], ..) => pick(method, &[("POST", DeviceServer, "POST /device-server")]),
        (["session-server"], ..) => {
            pick(method, &[("POST", SessionServer, "POST /session-server")])
        }
        (["payment-service-provider-credential"], ..) => pick(
            method,
            &[(
                "POST",
                PaymentServiceProviderCredential,
                "POST /payment-service-provider-credential",
            )],
        ),
        (["sandbox-user-person"], ..) => pick(
            method,
            &[("POST", SandboxUserPerson, "POST /sandbox-user-person")],
        ),
        (["session", _], Some(_), ..) => {
            pick(method, &[("DELETE", DeleteSession, "DELETE /session/{id}")])
        }
        (["user"], ..) => pick(method, &[("GET", ListUsers, "GET /user")]),
        (["user", _], Some(u), ..) => pick(method, &[("GET", GetUser(u), "GET /user/{id}")]),
        (["user", _, "monetary-account-bank"], Some(u), ..) => pick(
            method,
            &[(
                "GET",
                ListAccountsBank(u),
                "GET /user/{id}/monetary-account-bank",
            )],
        ),
        (["user", _, "monetary-account-bank", _], Some(u), Some(a), _) => pick(
            method,
            &[(
                "GET",
                GetAccountBank(u, a),
                "GET /user/{id}/monetary-account-bank/{aid}",
            )],
        ),
        (["user", _, "monetary-account"], Some(u), ..) => pick(
            method,
            &[("GET", ListAccounts(u), "GET /user/{id}/monetary-account")],
        ),
        (["user", _, "monetary-account", _], Some(u), Some(a), _) => pick(
            method,
            &[(
                "GET",
                GetAccount(u, a),
                "GET /user/{id}/monetary-account/{aid}",
            )],
        ),
        (["user", _, "monetary-account", _, "payment"], Some(u), Some(a), _) => pick(
            method,
            &[
                (
                    "POST",
                    CreatePayment(u, a),
                    "POST /user/{id}/monetary-account/{aid}/payment",
                ),
                (
                    "GET",
                    ListPayments(u, a),
                    "GET /user/{id}/monetary-account/{aid}/payment",
                ),
            ],
        ),
        (["user", _, "monetary-account", _, "payment", p], Some(u), Some(a), _)
            if p.parse::<u64>().is_ok() =>
        {
            pick(
                method,
                &[(
                    "GET",
                    GetPayment(u, a, p.parse().unwrap_or_default()),
                    "GET /user/{id}/monetary-account/{aid}/payment/{pid}",
                )],
            )
        }
        (["user", _, "monetary-account", _, "request-inquiry"], Some(u), Some(a), _) => pick(
            method,
            &[
                (
                    "POST",
                    CreateRequestInquiry(u, a),
                    "POST /user/{id}/monetary-account/{aid}/request-inquiry",
                ),
                (
                    "GET",
                    ListRequestInquiries(u, a),
                    "GET /user/{id}/monetary-account/{aid}/request-inquiry",
                ),
            ],
        ),
        (["user", _, "monetary-account", _, "request-inquiry", r], Some(u), Some(a), _)
            if r.parse::<u64>().is_ok() =>
        {
            pick(
                method,
                &[(
                    "GET",
                    GetRequestInquiry(u, a, r.parse().unwrap_or_default()),
                    "GET /user/{id}/monetary-account/{aid}/request-inquiry/{rid}",
                )],
            )
        }
        (["user", _, "monetary-account", _, "draft-payment"], Some(u), Some(a), _) => pick(
            method,
            &[
                (
                    "POST",
                    CreateDraftPayment(u, a),
                    "POST /user/{id}/monetary-account/{aid}/draft-payment",
                ),
                (
                    "GET",
                    ListDraftPayments(u, a),
                    "GET /user/{id}/monetary-account/{aid}/draft-payment",
                ),
            ],
        ),
        (["user", _, "monetary-account", _, "draft-payment", d], Some(u), Some(a), _)
            if d.parse::<u64>().is_ok() =>
        {
            pick(
                method,
                &[(
                    "GET",
                    GetDraftPayment(u, a, d.parse().unwrap_or_default()),
                    "GET /user/{id}/monetary-account/{aid}/draft-payment/{did}",
                )],
            )
        }
        (["user", _, "oauth-client"], Some(u), ..) => pick(
            method,
            &[
                ("POST", CreateOauthClient(u), "POST /user/{id}/oauth-client"),
                ("GET", ListOauthClients(u), "GET /user/{id}/oauth-client"),
            ],
        ),
        (["user", _, "oauth-client", _], Some(u), Some(c), _) => pick(
            method,
            &[
                (
                    "GET",
                    GetOauthClient(u, c),
                    "GET /user/{id}/oauth-client/{cid}",
                ),
                (
                    "PUT",
                    UpdateOauthClient(u, c),
                    "PUT /user/{id}/oauth-client/{cid}",
                ),
            ],
        ),
        (["user", _, "oauth-client", _, "callback-url"], Some(u), Some(c), _) => pick(
            method,
            &[
                (
                    "POST",
                    CreateCallbackUrl(u, c),
                    "POST /user/{id}/oauth-client/{cid}/callback-url",
                ),
                (
                    "GET",
                    ListCallbackUrls(u, c),
                    "GET /user/{id}/oauth-client/{cid}/callback-url",
                ),
            ],
        ),
        (["user", _, "notification-filter-url"], Some(u), ..) => pick(
            method,
            &[
                (
                    "POST",
                    SetNotificationFilters(u, None),
                    "POST /user/{id}/notification-filter-url",
                ),
                (
                    "GET",
                    ListNotificationFilters(u, None),
                    "GET /user/{id}/notification-filter-url",
                ),
            ],
        ),
        (["user", _, "monetary-account", _, "notification-filter-url"], Some(u), Some(a), _) => {
            pick(
                method,
                &[
                    (
                        "POST",
                        SetNotificationFilters(u, Some(a)),
                        "POST /user/{id}/monetary-account/{aid}/notification-filter-url",
                    ),
                    (
                        "GET",
                        ListNotificationFilters(u, Some(a)),
                        "GET /user/{id}/monetary-account/{aid}/notification-filter-url",
                    ),
                ],
            )
        }
        _ => Resolved::NotFound,
    }
}

/// Who made an authenticated call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller {
    /// The id this session uses in `/user/{id}` paths (UserPerson or UserApiKey id).
    pub path_user: u64,
    /// The user whose accounts the session acts on.
    pub owner: u64,
    pub subject: Subject,
}

enum Auth {
    Open,
    Installation(String),
    Session {
        token: String,
        installation: String,
        caller: Caller,
    },
}

/// Every `/v1` request except the OAuth token endpoint.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(rest) = path.strip_prefix("/v1/") else {
        shared.count_unrouted();
        return wire::error(&shared, StatusCode::NOT_FOUND, "Route not found.");
    };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let method = parts.method.as_str();
    let (op, endpoint) = match resolve(method, &segs) {
        Resolved::Found(op, endpoint) => (op, endpoint),
        Resolved::MethodNotAllowed => {
            shared.count_unrouted();
            return wire::error(
                &shared,
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed for this route.",
            );
        }
        Resolved::NotFound => {
            shared.count_unrouted();
            return wire::error(&shared, StatusCode::NOT_FOUND, "Route not found.");
        }
    };
    shared.count(endpoint);
    if let Some(response) = shared.gate(peer.addr, method, endpoint).await {
        return response;
    }
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return wire::error(
            &shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
        );
    };
    let auth = match authenticate(&shared, op, &parts.headers, &body, peer.ip()) {
        Ok(auth) => auth,
        Err(e) => return e.into_response(&shared),
    };
    // Session calls that change something (POST, PUT, PATCH, DELETE): bunq refuses their
    // request id a second time on the same device, and the after-execution knobs apply.
    let changes = matches!(auth, Auth::Session { .. }) && parts.method != Method::GET;
    if let (true, Auth::Session { installation, .. }) = (changes, &auth) {
        if let Some(request_id) = header(&parts.headers, REQUEST_ID_HEADER) {
            if !shared.world().remember_request_id(installation, request_id) {
                return ApiError::bad_request(crate::REUSED_REQUEST_ID_DESCRIPTION)
                    .into_response(&shared);
            }
        }
    }
    let query = parts.uri.query().unwrap_or("");
    let list_path = format!("/v1/{}", rest.trim_end_matches('/'));
    let call = Call {
        body: &body,
        query,
        list_path: &list_path,
        peer: peer.ip(),
    };
    let response = match execute(&shared, op, auth, call) {
        Ok(response) => response,
        Err(e) => e.into_response(&shared),
    };
    if changes {
        if shared.knobs.take_cut_after() {
            // Executed, never answered: hyper fails to write this response and drops
            // the connection.
            peer.cut_connection();
        } else if let Some(delay) = shared.knobs.take_delay_after() {
            tokio::time::sleep(delay).await;
        }
    }
    response
}

/// The parts of a request that operations read.
pub(crate) struct Call<'a> {
    pub body: &'a [u8],
    pub query: &'a str,
    /// The request path, for building `Pagination` URLs.
    pub list_path: &'a str,
    /// The calling IP (IPv4-mapped addresses as IPv4).
    pub peer: IpAddr,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Checks the signature the same way bunq does: over the raw body bytes.
fn verify_signature(key: &PublicKey, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let sig = header(headers, CLIENT_SIGNATURE_HEADER).ok_or_else(|| {
        ApiError::new(
            StatusCode::from_u16(466).unwrap_or(StatusCode::BAD_REQUEST),
            "Request signature is required.",
        )
    })?;
    key.verify_body(body, sig).map_err(|_| {
        ApiError::new(
            StatusCode::from_u16(466).unwrap_or(StatusCode::BAD_REQUEST),
            "Request signature verification failed.",
        )
    })
}

fn authenticate(
    shared: &Shared,
    op: Op,
    headers: &HeaderMap,
    body: &[u8],
    peer: IpAddr,
) -> Result<Auth, ApiError> {
    match op {
        Op::Installation | Op::SandboxUserPerson => return Ok(Auth::Open),
        _ => {}
    }
    let token = header(headers, AUTH_HEADER).ok_or_else(ApiError::unauthorised)?;
    if matches!(
        op,
        Op::DeviceServer | Op::SessionServer | Op::PaymentServiceProviderCredential
    ) {
        let key = shared
            .world()
            .installations
            .get(token)
            .map(|i| i.client_key.clone())
            .ok_or_else(ApiError::unauthorised)?;
        verify_signature(&key, headers, body)?;
        return Ok(Auth::Installation(token.to_owned()));
    }
    let (key, permitted, installation, caller) = {
        let mut world = shared.world();
        let (installation, subject, expired) = match world.sessions.get(token) {
            Some(s) => (
                s.installation_token.clone(),
                s.subject,
                Instant::now() >= s.expires_at,
            ),
            None => return Err(ApiError::unauthorised()),
        };
        if expired {
            world.sessions.remove(token);
            return Err(ApiError::unauthorised());
        }
        let (key, permitted) = world
            .installations
            .get(&installation)
            .map(|i| {
                let permitted = i.device.as_ref().map(|d| d.permitted.clone());
                (i.client_key.clone(), permitted)
            })
            .ok_or_else(ApiError::unauthorised)?;
        let owner = world.owner_of(subject).ok_or_else(ApiError::unauthorised)?;
        let path_user = match subject {
            Subject::Person(id) | Subject::ApiKey(id) => id,
        };
        (
            key,
            permitted,
            installation,
            Caller {
                path_user,
                owner,
                subject,
            },
        )
    };
    verify_signature(&key, headers, body)?;
    // A session exists only after device-server, so `None` cannot happen; refusing it
    // anyway keeps a session from ever outliving the device rules.
    if !permitted.is_some_and(|p| p.allows(peer)) {
        return Err(ApiError::bad_request(crate::BAD_CREDENTIALS_DESCRIPTION));
    }
    if shared.knobs.take_fail_auth() {
        return Err(ApiError::unauthorised());
    }
    Ok(Auth::Session {
        token: token.to_owned(),
        installation,
        caller,
    })
}

/// Parses a JSON body into `T`, answering bunq's 400 on malformed input.
pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Could not parse the request body: {e}")))
}

fn execute(shared: &Shared, op: Op, auth: Auth, call: Call<'_>) -> Result<Response, ApiError> {
    let caller = match auth {
        Auth::Open => {
            return match op {
                Op::Installation => installation(shared, call.body),
                _ => Ok(sandbox_user_person(shared)),
            };
        }
        Auth::Installation(token) => {
            return match op {
                Op::DeviceServer => device_server(shared, &token, &call),
                Op::PaymentServiceProviderCredential => {
                    crate::psd2::create_credential(shared, &token, &call)
                }
                _ => session_server(shared, &token, &call),
            };
        }
        Auth::Session { token, caller, .. } => {
            if let Op::DeleteSession = op {
                shared.world().sessions.remove(&token);
                return Ok(wire::ok(shared, Vec::new()));
            }
            caller
        }
    };
    let check_user = |user: u64| {
        if user == caller.path_user {
            Ok(())
        } else {
            Err(ApiError::not_found("User not found."))
        }
    };
    match op {
        Op::ListUsers => Ok(wire::ok(shared, vec![user_object(shared, caller)])),
        Op::GetUser(u) => {
            check_user(u)?;
            Ok(wire::ok(shared, vec![user_object(shared, caller)]))
        }
        Op::ListAccountsBank(u) => {
            check_user(u)?;
            crate::money::list_accounts(shared, caller, Some(AccountKind::Bank), &call)
        }
        Op::ListAccounts(u) => {
            check_user(u)?;
            crate::money::list_accounts(shared, caller, None, &call)
        }
        Op::GetAccountBank(u, a) => {
            check_user(u)?;
            crate::money::get_account(shared, caller, Some(AccountKind::Bank), a)
        }
        Op::GetAccount(u, a) => {
            check_user(u)?;
            crate::money::get_account(shared, caller, None, a)
        }
        Op::CreatePayment(u, a) => {
            check_user(u)?;
            crate::money::create_payment(shared, caller, a, &call)
        }
        Op::ListPayments(u, a) => {
            check_user(u)?;
            crate::money::list_payments(shared, caller, a, &call)
        }
        Op::GetPayment(u, a, p) => {
            check_user(u)?;
            crate::money::get_payment(shared, caller, a, p)
        }
        Op::CreateRequestInquiry(u, a) => {
            check_user(u)?;
            crate::money::create_request_inquiry(shared, caller, a, &call)
        }
        Op::ListRequestInquiries(u, a) => {
            check_user(u)?;
            crate::money::list_request_inquiries(shared, caller, a, &call)
        }
        Op::GetRequestInquiry(u, a, r) => {
            check_user(u)?;
            crate::money::get_request_inquiry(shared, caller, a, r)
        }
        Op::CreateDraftPayment(u, a) => {
            check_user(u)?;
            crate::money::create_draft_payment(shared, caller, a, &call)
        }
        Op::ListDraftPayments(u, a) => {
            check_user(u)?;
            crate::money::list_draft_payments(shared, caller, a, &call)
        }
        Op::GetDraftPayment(u, a, d) => {
            check_user(u)?;
            crate::money::get_draft_payment(shared, caller, a, d)
        }
        Op::CreateOauthClient(u) => {
            check_user(u)?;
            crate::oauth::create_client(shared, caller, call.body)
        }
        Op::ListOauthClients(u) => {
            check_user(u)?;
            crate::oauth::list_clients(shared, caller)
        }
        Op::GetOauthClient(u, c) => {
            check_user(u)?;
            crate::oauth::get_client(shared, caller, c)
        }
        Op::UpdateOauthClient(u, c) => {
            check_user(u)?;
            crate::oauth::update_client(shared, caller, c, call.body)
        }
        Op::CreateCallbackUrl(u, c) => {
            check_user(u)?;
            crate::oauth::create_callback_url(shared, caller, c, call.body)
        }
        Op::ListCallbackUrls(u, c) => {
            check_user(u)?;
            crate::oauth::list_callback_urls(shared, caller, c)
        }
        Op::SetNotificationFilters(u, a) => {
            check_user(u)?;
            crate::notify::set_filters(shared, caller, a, &call)
        }
        Op::ListNotificationFilters(u, a) => {
            check_user(u)?;
            crate::notify::list_filters(shared, caller, a)
        }
        Op::Installation
        | Op::SandboxUserPerson
        | Op::DeviceServer
        | Op::SessionServer
        | Op::PaymentServiceProviderCredential
        | Op::DeleteSession => Err(ApiError::not_found("Route not found.")),
    }
}

fn user_object(shared: &Shared, caller: Caller) -> Value {
    let world = shared.world();
    let timeout = shared.knobs.session_timeout();
    match caller.subject {
        Subject::Person(id) => world.user_json(id, timeout),
        Subject::ApiKey(id) => world.user_api_key_json(id, timeout),
    }
}

fn token_object(id: u64, token: &str) -> Value {
    let now = timestamp(SystemTime::now());
    json!({"Token": {"id": id, "created": now, "updated": now, "token": token}})
}

fn installation(shared: &Shared, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        client_public_key: String,
    }
    let body: Body = parse_body(body)?;
    let client_key = PublicKey::from_pem(&body.client_public_key).map_err(|e| {
        ApiError::bad_request(format!("The client_public_key is not a valid RSA key: {e}"))
    })?;
    let token = random_token();
    let id = {
        let mut world = shared.world();
        let id = world.next_id();
        world.installations.insert(
            token.clone(),
            Installation {
                client_key,
                client_key_pem: body.client_public_key,
                device: None,
                used_request_ids: Default::default(),
            },
        );
        id
    };
    Ok(wire::ok(
        shared,
        vec![
            json!({"Id": {"id": id}}),
            token_object(id, &token),
            json!({"ServerPublicKey": {"server_public_key": shared.signer.public_key_pem()}}),
        ],
    ))
}

use crate::BAD_CREDENTIALS_DESCRIPTION as BAD_CREDENTIALS;

fn device_server(shared: &Shared, token: &str, call: &Call<'_>) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        #[allow(dead_code)]
        description: Option<String>,
        secret: String,
        /// Absent and `null` (what some SDKs send) mean the same as `[]`.
        #[serde(default)]
        permitted_ips: Option<Vec<String>>,
    }
    let body: Body = parse_body(call.body)?;
    let mut world = shared.world();
    if !world.credential_valid(&body.secret) {
        return Err(ApiError::bad_request(BAD_CREDENTIALS));
    }
    let permitted =
        PermittedIps::from_request(body.permitted_ips.as_deref().unwrap_or_default(), call.peer)
            .map_err(|ip| {
                ApiError::bad_request(format!(
                    "The permitted IP {ip:?} is not an IPv4 address or \"*\"."
                ))
            })?;
    let id = world.next_id();
    let installation = world
        .installations
        .get_mut(token)
        .ok_or_else(ApiError::unauthorised)?;
    installation.device = Some(Device {
        secret: body.secret,
        permitted,
    });
    drop(world);
    Ok(wire::created_id(shared, id))
}

fn session_server(shared: &Shared, token: &str, call: &Call<'_>) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Body {
        secret: String,
    }
    let body: Body = parse_body(call.body)?;
    let timeout = shared.knobs.session_timeout();
    let mut world = shared.world();
    let Some(device) = world
        .installations
        .get(token)
        .and_then(|i| i.device.as_ref())
    else {
        return Err(ApiError::bad_request(
            "No device is registered for this installation; call device-server first.",
        ));
    };
    // bunq gives one answer for a call from an IP the device does not permit and for a
    // device whose credential was withdrawn since (a revoked OAuth grant).
    if !device.permitted.allows(call.peer) {
        return Err(ApiError::bad_request(BAD_CREDENTIALS));
    }
    let device_secret = device.secret.clone();
    if !world.credential_valid(&device_secret) {
        return Err(ApiError::bad_request(BAD_CREDENTIALS));
    }
    let subject = if let Some(user) = world.api_keys.get(&body.secret) {
        Subject::Person(*user)
    } else if let Some(grant) = world.live_grant(&body.secret) {
        Subject::ApiKey(grant)
    } else {
        return Err(ApiError::bad_request(BAD_CREDENTIALS));
    };
    let user = match subject {
        Subject::Person(id) => world.user_json(id, timeout),
        Subject::ApiKey(id) => world.user_api_key_json(id, timeout),
    };
    let id = world.next_id();
    let session_token = random_token();
    world.issued_session_tokens.push(session_token.clone());
    world.sessions.insert(
        session_token.clone(),
        SessionRec {
            installation_token: token.to_owned(),
            subject,
            expires_at: Instant::now() + timeout,
        },
    );
    drop(world);
    Ok(wire::ok(
        shared,
        vec![
            json!({"Id": {"id": id}}),
            token_object(id, &session_token),
            user,
        ],
    ))
}

fn sandbox_user_person(shared: &Shared) -> Response {
    let (_, api_key, _) = shared.world().create_sandbox_user();
    wire::ok(shared, vec![json!({"ApiKey": {"api_key": api_key}})])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(method: &str, path: &str) -> Option<&'static str> {
        let segs: Vec<&str> = path.split('/').collect();
        match resolve(method, &segs) {
            Resolved::Found(_, name) => Some(name),
            _ => None,
        }
    }

    #[test]
    fn resolves_paths_to_endpoint_patterns() {
        assert_eq!(
            endpoint("GET", "user/12/monetary-account-bank"),
            Some("GET /user/{id}/monetary-account-bank")
        );
        assert_eq!(
            endpoint("POST", "user/1/oauth-client/2/callback-url"),
            Some("POST /user/{id}/oauth-client/{cid}/callback-url")
        );
        assert_eq!(endpoint("GET", "user/abc"), None);
        assert!(matches!(
            resolve("GET", &["installation"]),
            Resolved::MethodNotAllowed
        ));
        assert!(matches!(resolve("GET", &["nope"]), Resolved::NotFound));
    }
}
