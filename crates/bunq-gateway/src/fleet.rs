//! Fleet mode: several gateways on one PostgreSQL database, behind one or more egress
//! IPs (docs/DEPLOYMENT.md). Each gateway is a replica with a random id that joins the
//! fleet at start and beats every `fleet.heartbeat_ms`; what the replicas share goes
//! through the database (bunq-store's `Fleet`):
//!
//! - the session-server turn of their egress ([`StoreWindow`]), so that bunq never sees
//!   two `session-server` calls within its window from one IP, whichever replica sends;
//! - the per-endpoint limits of their egress, split evenly between the live replicas
//!   behind it (recomputed at each heartbeat);
//! - one session creation per credential across replicas (bunq-store implements
//!   bunq-session's `ContextStore::lock_creation`);
//! - user changes: a deletion, revocation or new connection on one replica drops the
//!   user's cached route and session on every other (LISTEN/NOTIFY, [`listen`]);
//! - the in-flight `Idempotency-Key`s of a replica that stopped beating settle as
//!   unknown (the same rule a restarted single gateway applies to its own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bunq_session::{BoxFuture, CredentialId, Error as SessionError, SharedSessionWindow};
use bunq_store::{Fleet, Replica, UserChange};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use crate::app::Shared;
use crate::config::FleetSettings;
use crate::error::ApiError;

/// Set on a request one replica hands to another: the receiver serves it or refuses
/// it, never hands it on again (no loops between replicas that disagree).
pub(crate) const FORWARDED_HEADER: &str = "x-gateway-forwarded-by";

/// This gateway as a member of the fleet.
pub(crate) struct Member {
    pub(crate) fleet: Fleet,
    pub(crate) replica: String,
    pub(crate) settings: FleetSettings,
    /// The live replicas as of the last heartbeat.
    pub(crate) peers: RwLock<Vec<Replica>>,
    /// Spreads hand-offs over an egress's replicas.
    next_peer: AtomicUsize,
    /// The client requests are handed to peers with.
    http: reqwest::Client,
    /// Held from the join to the end of the process: the database's proof that this
    /// replica is alive.
    membership: tokio::sync::Mutex<Option<bunq_store::Membership>>,
}

impl Member {
    pub(crate) fn new(
        fleet: Fleet,
        replica: String,
        settings: FleetSettings,
        timeout: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            fleet,
            replica,
            settings,
            peers: RwLock::new(Vec::new()),
            next_peer: AtomicUsize::new(0),
            http,
            membership: tokio::sync::Mutex::new(None),
        }
    }

    /// A live replica of `egress` that said where it is reached, in turn.
    fn peer_of(&self, egress: &str) -> Option<String> {
        let peers = self.peers.read().ok()?;
        let urls: Vec<&str> = peers
            .iter()
            .filter(|r| r.egress == egress && r.id != self.replica)
            .filter_map(|r| r.url.as_deref())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let turn = self.next_peer.fetch_add(1, Ordering::Relaxed);
        Some(urls[turn % urls.len()].trim_end_matches('/').to_owned())
    }
}

/// The answer for a user pinned to another egress when no replica of it can be
/// handed the request.
pub(crate) fn wrong_egress(egress: &str) -> ApiError {
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "wrong_egress",
        format!(
            "this user is served by the gateways of egress {egress:?}, and none of them \
             could be reached from here; send the request to one of them"
        ),
    )
}

/// Hands a proxied request for a user pinned to `egress` to a live replica of that
/// egress (its `fleet.advertise_url`), and returns its answer as it is. Refused with
/// 421 `wrong_egress` when the request was handed on already or no such replica is
/// known.
pub(crate) async fn forward_to_egress(
    state: &Shared,
    egress: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(member) = &state.fleet else {
        return Err(wrong_egress(egress));
    };
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(wrong_egress(egress));
    }
    let Some(peer) = member.peer_of(egress) else {
        let known = member.peers.read().map(|p| p.len()).unwrap_or(0);
        tracing::warn!(
            egress,
            known,
            "no live gateway of the user's egress said where it is reached (fleet.advertise_url)"
        );
        return Err(wrong_egress(egress));
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outgoing = HeaderMap::new();
    for (name, value) in headers {
        // Hop-by-hop and length headers are the client's to set again.
        if !matches!(
            name.as_str(),
            "host"
                | "connection"
                | "content-length"
                | "transfer-encoding"
                | "keep-alive"
                | "te"
                | "upgrade"
                | "proxy-connection"
        ) {
            outgoing.append(name.clone(), value.clone());
        }
    }
    if let Ok(replica) = HeaderValue::from_str(&member.replica) {
        outgoing.insert(FORWARDED_HEADER, replica);
    }
    let sent = member
        .http
        .request(method, format!("{peer}{path}"))
        .headers(outgoing)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(egress, peer, error = %e, "cannot hand a request to a replica of its egress");
            // Nothing reached the peer: the caller may retry as it is.
            return Err(if e.is_connect() {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the gateway serving this user could not be reached; nothing was sent",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "outcome_unknown",
                    "the gateway serving this user did not answer; the request may have \
                     been sent to bunq: retry with the same Idempotency-Key",
                )
            });
        }
    };
    let status = answer.status();
    let mut response_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "date"
        ) {
            response_headers.append(name.clone(), value.clone());
        }
    }
    let body = answer.bytes().await.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "outcome_unknown",
            "the gateway serving this user did not finish its answer; retry with the same \
             Idempotency-Key",
        )
    })?;
    let mut response = (status, body).into_response();
    response.headers_mut().extend(response_headers);
    Ok(response)
}

/// A fresh replica id: random, so that a restarted gateway is a new replica and its
/// predecessor's in-flight keys are recognised as a dead replica's.
pub(crate) fn replica_id() -> String {
    format!("r-{}", uuid::Uuid::new_v4().simple())
}

/// The egress's session-server turn, taken in the database.
pub(crate) struct StoreWindow {
    pub(crate) fleet: Fleet,
    pub(crate) egress: String,
    pub(crate) holder: String,
    pub(crate) window: Duration,
}

fn store_error(e: bunq_store::StoreError) -> SessionError {
    SessionError::Store(bunq_session::ContextStoreError(Box::new(e)))
}

impl SharedSessionWindow for StoreWindow {
    fn try_take(&self, hold: Duration) -> BoxFuture<'_, Result<Option<Duration>, SessionError>> {
        Box::pin(async move {
            self.fleet
                .try_take_session_window(&self.egress, &self.holder, hold, self.window)
                .await
                .map_err(store_error)
        })
    }

    fn release(&self) -> BoxFuture<'_, Result<(), SessionError>> {
        Box::pin(async move {
            self.fleet
                .release_session_window(&self.egress, &self.holder, self.window)
                .await
                .map_err(store_error)
        })
    }
}

/// Joins the fleet (before anything else touches shared state: the idempotency
/// recovery that follows spares the keys of live replicas only).
pub(crate) async fn join(state: &Shared) -> Result<(), bunq_store::StoreError> {
    let Some(member) = &state.fleet else {
        return Ok(());
    };
    let url = member.settings.advertise_url.as_ref().map(url::Url::as_str);
    let membership = member
        .fleet
        .join(&member.replica, &state.egress, url)
        .await?;
    *member.membership.lock().await = Some(membership);
    beat(state, member).await?;
    tracing::info!(
        replica = member.replica,
        egress = state.egress,
        "joined the fleet"
    );
    Ok(())
}

/// One heartbeat: alive, the dead forgotten, this egress's limits split anew, a dead
/// replica's in-flight keys settled.
async fn beat(state: &Shared, member: &Member) -> Result<(), bunq_store::StoreError> {
    let live = member
        .fleet
        .heartbeat(&member.replica, member.settings.stale_after)
        .await?;
    let behind_egress = live.iter().filter(|r| r.egress == state.egress).count();
    let share = u32::try_from(behind_egress.max(1)).unwrap_or(u32::MAX);
    state.sessions.client().set_limit_share(share);
    if let Ok(mut peers) = member.peers.write() {
        *peers = live;
    }
    let settled = member.fleet.settle_orphaned_idempotency().await?;
    if settled > 0 {
        tracing::warn!(
            settled,
            "a gateway of the fleet stopped with requests in flight; a retry with their \
             Idempotency-Key resends them with the same request id"
        );
    }
    Ok(())
}

/// Beats and listens until aborted (at shutdown).
pub(crate) async fn run(state: Shared) {
    let Some(member) = &state.fleet else {
        return;
    };
    let mut changes = member.fleet.listen_users();
    let mut every = tokio::time::interval(member.settings.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(e) = beat(&state, member).await {
                    tracing::warn!(error = %e, "fleet heartbeat failed");
                }
            }
            change = changes.recv() => match change {
                Some(change) => forget(&state, change).await,
                None => return,
            },
        }
    }
}

/// Drops what this gateway cached about a user another replica changed.
async fn forget(state: &Shared, change: UserChange) {
    let dropped: Vec<CredentialId> = match state.routes.write() {
        Ok(mut routes) => match &change {
            UserChange::User(user_ref) => routes.remove(user_ref).into_iter().collect(),
            _ => routes.drain().map(|(_, credential)| credential).collect(),
        },
        Err(_) => Vec::new(),
    };
    for credential in &dropped {
        state.sessions.forget(credential).await;
    }
    if let UserChange::User(user_ref) = &change {
        tracing::debug!(user_ref, "a user changed on another gateway: cache dropped");
    }
}

/// Leaves the fleet at shutdown, so that peers split the limits among fewer at once.
pub(crate) async fn leave(state: &Shared) {
    if let Some(member) = &state.fleet {
        if let Err(e) = member.fleet.leave(&member.replica).await {
            tracing::warn!(error = %e, "could not leave the fleet");
        }
        member.membership.lock().await.take();
    }
}

/// The session-server window shared through the database, for `client`.
pub(crate) fn shared_window(
    fleet: &Fleet,
    egress: &str,
    replica: &str,
    window: Duration,
) -> Arc<StoreWindow> {
    Arc::new(StoreWindow {
        fleet: fleet.clone(),
        egress: egress.to_owned(),
        holder: replica.to_owned(),
        window,
    })
}
