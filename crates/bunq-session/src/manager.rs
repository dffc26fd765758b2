//! [`SessionManager`]: one live session per credential, for many credentials at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bunq_signing::Psd2Certificate;
use secrecy::{ExposeSecret as _, SecretString};

use crate::client::{ApiRequest, Auth, RawResponse};
use crate::error::is_credential_refusal;
use crate::{ApiContext, BunqClient, ContextStore, CredentialId, Error, Installation, Session};

/// How a [`SessionManager`] manages sessions.
#[derive(Clone, Debug)]
pub struct SessionManagerConfig {
    /// Renew a session this long before bunq's expiry (default 30 s, like bunq's SDKs).
    pub renew_margin: Duration,
    /// Longest a caller waits for its turn at the session-server pacer before
    /// [`Error::SessionCapacity`] (default 35 s: one bunq window and some slack).
    pub session_wait_timeout: Duration,
    /// `description` of `POST /device-server`.
    pub device_description: String,
    /// `permitted_ips` of `POST /device-server` (empty: the calling IP).
    pub permitted_ips: Vec<String>,
    /// After opening a session for a credential failed for a passing reason (bunq
    /// unavailable, a 429, a timeout), further attempts for it fail fast with
    /// [`Error::SessionBackoff`] for this long, doubled at each consecutive failure up to
    /// [`max_backoff`](Self::max_backoff), instead of spending the session-server slots
    /// every credential shares (default 30 s: one bunq window).
    pub refusal_backoff: Duration,
    /// The longest back-off (default 10 min).
    pub max_backoff: Duration,
}

impl Default for SessionManagerConfig {
    fn default() -> Self {
        Self {
            renew_margin: Duration::from_secs(30),
            session_wait_timeout: Duration::from_secs(35),
            device_description: "bunq-session".to_owned(),
            permitted_ips: Vec::new(),
            refusal_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// What a request needs, published for lock-free-ish reads on the hot path.
struct Live {
    installation: Installation,
    session: Session,
    /// `expires_at - renew_margin`.
    renew_at: SystemTime,
}

/// Consecutive passing failures to open a session for a credential.
struct Backoff {
    until: Instant,
    failures: u32,
    last: String,
}

/// bunq's refusal of the credential itself (see [`Error::Revoked`]).
#[derive(Clone)]
struct Refusal {
    status: u16,
    descriptions: Vec<String>,
    response_id: Option<String>,
}

impl Refusal {
    fn of(error: &Error) -> Option<Self> {
        match error {
            Error::Api {
                status,
                descriptions,
                response_id,
            } if is_credential_refusal(error) => Some(Self {
                status: *status,
                descriptions: descriptions.clone(),
                response_id: response_id.clone(),
            }),
            _ => None,
        }
    }

    fn error(&self, credential: &CredentialId) -> Error {
        Error::Revoked {
            credential: credential.clone(),
            status: self.status,
            descriptions: self.descriptions.clone(),
            response_id: self.response_id.clone(),
        }
    }
}

#[derive(Default)]
struct SlotState {
    /// The full context (with the secret), loaded lazily from the store.
    context: Option<ApiContext>,
    backoff: Option<Backoff>,
    /// Set when bunq refused the credential itself: nothing is sent for it until
    /// [`SessionManager::connect`] is called again.
    revoked: Option<Refusal>,
    /// Set by [`SessionManager::disconnect`]: no session is created, saved or served for
    /// this credential until [`SessionManager::connect`] is called again.
    disconnected: bool,
}

/// Per-credential state: the published session, and the lock that makes session
/// creation single-flight.
#[derive(Default)]
struct Slot {
    live: RwLock<Option<Arc<Live>>>,
    renew: tokio::sync::Mutex<SlotState>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Live>> {
        self.live.read().ok().and_then(|l| l.clone())
    }

    fn fresh(&self) -> Option<Arc<Live>> {
        self.current()
            .filter(|live| SystemTime::now() < live.renew_at)
    }
}

struct Inner<S> {
    client: BunqClient,
    store: S,
    config: SessionManagerConfig,
    slots: RwLock<HashMap<CredentialId, Arc<Slot>>>,
    creations: AtomicU64,
}

/// Keeps one live session per credential (API key or OAuth access token) for any
/// number of credentials: caches sessions, renews them before expiry and after bunq
/// declares one dead, and opens at most one session per credential at a time however
/// many tasks ask. Contexts are persisted through the [`ContextStore`] after every
/// lifecycle step, and a stored unexpired session is reused, so a restart opens none.
///
/// Cheap to clone; clones share everything.
pub struct SessionManager<S: ContextStore> {
    inner: Arc<Inner<S>>,
}

impl<S: ContextStore> Clone for SessionManager<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: ContextStore> fmt::Debug for SessionManager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("client", &self.inner.client)
            .field("session_creations", &self.session_creations())
            .finish_non_exhaustive()
    }
}

impl<S: ContextStore> SessionManager<S> {
    /// A manager over `client` (share one client per process) and `store`.
    pub fn new(client: BunqClient, store: S, config: SessionManagerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                store,
                config,
                slots: RwLock::new(HashMap::new()),
                creations: AtomicU64::new(0),
            }),
        }
    }

    /// The client.
    pub fn client(&self) -> &BunqClient {
        &self.inner.client
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &SessionManagerConfig {
        &self.inner.config
    }

    /// How many `POST /session-server` calls this manager made (a metric: bunq allows
    /// two a minute per IP).
    pub fn session_creations(&self) -> u64 {
        self.inner.creations.load(Ordering::Relaxed)
    }

    /// How many credentials have a slot (a cached session, a renewal lock, or a
    /// disconnection to remember). For tests of the map's bounds.
    #[doc(hidden)]
    pub fn slot_count(&self) -> usize {
        self.inner.slots.read().map_or(0, |slots| slots.len())
    }

    /// The slot of `credential`, if it has one; unlike [`slot`](Self::slot), never makes
    /// one.
    fn existing_slot(&self, credential: &CredentialId) -> Option<Arc<Slot>> {
        self.inner
            .slots
            .read()
            .ok()
            .and_then(|slots| slots.get(credential).cloned())
    }

    /// Removes `credential`'s slot if it is still `slot` and no task but the caller
    /// holds it: under the map's write lock no task can take a new reference, so the
    /// count says nobody is waiting on its lock or about to publish into it.
    fn drop_slot_if_unused(&self, credential: &CredentialId, slot: &Arc<Slot>) {
        if let Ok(mut slots) = self.inner.slots.write() {
            let ours = slots
                .get(credential)
                .is_some_and(|held| Arc::ptr_eq(held, slot));
            // The map's reference and the caller's.
            if ours && Arc::strong_count(slot) <= 2 {
                slots.remove(credential);
            }
        }
    }

    /// A request found nothing for `credential` (no stored context): its slot, made
    /// for the request, holds nothing worth keeping unless it remembers something
    /// (a disconnection, a revocation, a back-off). Without this, calls for random
    /// credentials would grow the map for good.
    fn forget_if_unknown(&self, credential: &CredentialId, slot: &Arc<Slot>) {
        let empty = slot.current().is_none()
            && slot.renew.try_lock().is_ok_and(|state| {
                state.context.is_none()
                    && state.backoff.is_none()
                    && state.revoked.is_none()
                    && !state.disconnected
            });
        if empty {
            self.drop_slot_if_unused(credential, slot);
        }
    }

    /// Drops the slots that only remember a disconnection once the store has forgotten
    /// their credential too: the disconnection stops a renewal from saving a context
    /// back after the application deleted it, and once it is deleted, a fresh slot
    /// finds nothing to renew from.
    async fn prune_disconnected(&self) {
        let candidates: Vec<(CredentialId, Arc<Slot>)> = match self.inner.slots.read() {
            Ok(slots) => slots
                .iter()
                .filter(|(_, slot)| {
                    Arc::strong_count(slot) == 1
                        && slot.renew.try_lock().is_ok_and(|state| state.disconnected)
                })
                .map(|(credential, slot)| (credential.clone(), Arc::clone(slot)))
                .collect(),
            Err(_) => return,
        };
        for (credential, slot) in candidates {
            if let Ok(None) = self.inner.store.load(&credential).await {
                if slot.renew.try_lock().is_ok_and(|state| state.disconnected) {
                    self.drop_slot_if_unused(&credential, &slot);
                }
            }
        }
    }

    fn slot(&self, credential: &CredentialId) -> Arc<Slot> {
        if let Some(slot) = self
            .inner
            .slots
            .read()
            .ok()
            .and_then(|slots| slots.get(credential).cloned())
        {
            return slot;
        }
        match self.inner.slots.write() {
            Ok(mut slots) => Arc::clone(slots.entry(credential.clone()).or_default()),
            // A poisoned map only means another thread panicked mid-insert; a fresh,
            // unshared slot still gives correct (if not single-flight) behaviour.
            Err(_) => Arc::new(Slot::default()),
        }
    }

    fn publish(&self, slot: &Slot, installation: &Installation, session: &Session) -> Arc<Live> {
        let live = Arc::new(Live {
            installation: installation.clone(),
            session: session.clone(),
            renew_at: session
                .expires_at
                .checked_sub(self.inner.config.renew_margin)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        });
        if let Ok(mut current) = slot.live.write() {
            *current = Some(Arc::clone(&live));
        }
        live
    }

    fn is_fresh(&self, session: &Session) -> bool {
        SystemTime::now() + self.inner.config.renew_margin < session.expires_at
    }

    /// Connects a credential: installation → device-server → session-server (through
    /// the pacer), saving the context to the store after each step. A stored context
    /// for the same secret and API base is reused as far as it goes (an unexpired
    /// session included), so connecting again costs nothing, and an attempt that failed
    /// midway resumes with its installation and device instead of orphaning new ones.
    ///
    /// Clears a revocation or back-off recorded for the credential: a call to `connect`
    /// is the caller's word that the credential is worth trying (a new consent).
    /// bunq refusing the credential itself is [`Error::Revoked`].
    pub async fn connect(
        &self,
        credential: &CredentialId,
        secret: SecretString,
    ) -> Result<ApiContext, Error> {
        let client = &self.inner.client;
        let store = &self.inner.store;
        let slot = self.slot(credential);
        let mut state = slot.renew.lock().await;
        state.disconnected = false;
        state.revoked = None;
        state.backoff = None;
        let stored = store.load(credential).await?.filter(|ctx| {
            // Both secrets are ours (not attacker-timed input), so a plain comparison
            // is fine here.
            ctx.api_base == client.api_base()
                && ctx.secret.expose_secret() == secret.expose_secret()
        });
        let mut context = match stored {
            Some(context) => context,
            None => {
                let context = ApiContext {
                    api_base: client.api_base().to_owned(),
                    secret,
                    installation: client.installation().await?,
                    device: None,
                    session: None,
                    psd2: None,
                };
                store.save(credential, &context).await?;
                context
            }
        };
        let session = match context.session.clone().filter(|s| self.is_fresh(s)) {
            Some(session) => session,
            None => match self.open_session(credential, &mut context, None).await {
                Ok(session) => session,
                Err(e) => {
                    if let Some(refusal) = Refusal::of(&e) {
                        state.revoked = Some(refusal.clone());
                        return Err(refusal.error(credential));
                    }
                    return Err(e);
                }
            },
        };
        self.publish(&slot, &context.installation, &session);
        state.context = Some(context.clone());
        Ok(context)
    }

    /// Connects a licensed PSD2 provider by its certificate: installation →
    /// `payment-service-provider-credential` → device-server → session-server, whose
    /// user is the provider's `UserPaymentServiceProvider`. The credential's
    /// `token_value` becomes the context's secret, and from then on the credential
    /// lives as an API key does ([`connect`](Self::connect), renewals, the refusal
    /// rules); the context records the certificate ([`ApiContext::psd2`]).
    ///
    /// A stored context registered with the same certificate on the same API base is
    /// reused as far as it goes (no new credential, and no session-server call while
    /// its session lasts). Only if bunq refuses that credential ([`Error::Revoked`],
    /// after connect's one try from a fresh installation) is the certificate
    /// registered again, once, from a fresh installation: the certificate can make a
    /// credential where an API key could not. Not meant to run concurrently with
    /// another `connect` of the same credential id.
    pub async fn connect_psd2(
        &self,
        credential: &CredentialId,
        certificate: &Psd2Certificate,
    ) -> Result<ApiContext, Error> {
        let client = &self.inner.client;
        let fingerprint = certificate.certificate().sha256_fingerprint();
        let stored = self.inner.store.load(credential).await?.filter(|ctx| {
            ctx.api_base == client.api_base()
                && ctx
                    .psd2
                    .as_ref()
                    .is_some_and(|r| r.certificate_sha256 == fingerprint)
        });
        if let Some(context) = stored {
            match self.connect(credential, context.secret).await {
                Err(Error::Revoked { .. }) => {
                    tracing::info!(%credential, "bunq refused the PSD2 credential; registering the certificate again");
                }
                other => return other,
            }
        }
        let installation = client.installation().await?;
        let registered = client
            .payment_service_provider_credential(&installation, certificate)
            .await?;
        let context = ApiContext {
            api_base: client.api_base().to_owned(),
            secret: registered.token_value,
            installation,
            device: None,
            session: None,
            psd2: Some(crate::Psd2Registration {
                credential_id: registered.id,
                certificate_sha256: fingerprint,
            }),
        };
        self.inner.store.save(credential, &context).await?;
        self.connect(credential, context.secret).await
    }

    /// Registers the device (`POST /device-server`) unless the context has one, and saves
    /// the context: a session can only be opened from a registered device.
    async fn ensure_device(
        &self,
        credential: &CredentialId,
        context: &mut ApiContext,
    ) -> Result<(), Error> {
        if context.device.is_none() {
            let device = self
                .inner
                .client
                .device_server(
                    &context.installation,
                    &context.secret,
                    &self.inner.config.device_description,
                    &self.inner.config.permitted_ips,
                )
                .await?;
            context.device = Some(device);
            self.inner.store.save(credential, context).await?;
        }
        Ok(())
    }

    /// Device (if needed) and session-server for `context`, saving what bunq created.
    ///
    /// bunq answers "User credentials are incorrect. Incorrect API key or IP address."
    /// both for a withdrawn grant and for a device bound to another IP (an egress
    /// change). A fresh installation and device tell them apart: bunq refuses the
    /// credential at device-server (before any session-server slot is spent) only if it
    /// is dead. So one such refusal leads to one try from a fresh installation, whose
    /// refusal in turn is final (the error returned is that refusal; see
    /// [`Refusal::of`]).
    async fn open_session(
        &self,
        credential: &CredentialId,
        context: &mut ApiContext,
        deadline: Option<Instant>,
    ) -> Result<Session, Error> {
        let had_device = context.device.is_some();
        let first = match self.ensure_device(credential, context).await {
            Ok(()) => self.create_session(context, deadline).await,
            Err(e) => Err(e),
        };
        let session = match first {
            Err(e) if is_credential_refusal(&e) && had_device => {
                tracing::info!(%credential, "bunq refused the credential; trying once from a fresh installation");
                context.installation = self.inner.client.installation().await?;
                context.device = None;
                context.session = None;
                self.inner.store.save(credential, context).await?;
                self.ensure_device(credential, context).await?;
                self.create_session(context, deadline).await?
            }
            other => other?,
        };
        context.session = Some(session.clone());
        // The session exists at bunq whether or not it can be stored: serve with it,
        // and only report the store's failure (a restart would then open a new one).
        if let Err(e) = self.inner.store.save(credential, context).await {
            tracing::error!(%credential, error = %e, "could not persist the new session");
        }
        Ok(session)
    }

    /// session-server through the pacer, waiting for a turn at most
    /// `session_wait_timeout`, and never past the caller's `deadline`.
    async fn create_session(
        &self,
        context: &ApiContext,
        deadline: Option<Instant>,
    ) -> Result<Session, Error> {
        let waited =
            crate::rate_limit::after(Instant::now(), self.inner.config.session_wait_timeout);
        let until = deadline.map_or(waited, |d| d.min(waited));
        let session = self
            .inner
            .client
            .session_server_until(&context.installation, &context.secret, until)
            .await;
        // Counted whatever the outcome: bunq counts the call, not the session.
        if !matches!(session, Err(Error::SessionCapacity { .. })) {
            self.inner.creations.fetch_add(1, Ordering::Relaxed);
        }
        session
    }

    /// A live session for `credential`: the cached one, else the stored one if still
    /// good, else a new one (single-flight: concurrent callers share one creation).
    pub async fn session(&self, credential: &CredentialId) -> Result<Session, Error> {
        let live = self.live(credential).await?;
        Ok(live.session.clone())
    }

    /// [`session`](Self::session), waiting for a renewal's turn at the pacer no later
    /// than `deadline` (then [`Error::SessionCapacity`]): for a caller that looks the
    /// session up before a call with a deadline of its own.
    pub async fn session_until(
        &self,
        credential: &CredentialId,
        deadline: Instant,
    ) -> Result<Session, Error> {
        let slot = self.slot(credential);
        let live = match slot.fresh() {
            Some(live) => live,
            None => {
                self.renew_or_forget(credential, &slot, Some(deadline))
                    .await?
            }
        };
        Ok(live.session.clone())
    }

    async fn live(&self, credential: &CredentialId) -> Result<Arc<Live>, Error> {
        let slot = self.slot(credential);
        match slot.fresh() {
            Some(live) => Ok(live),
            None => self.renew_or_forget(credential, &slot, None).await,
        }
    }

    /// [`renew`](Self::renew) without a rejected session, dropping the slot again if the
    /// credential turns out to be unknown.
    async fn renew_or_forget(
        &self,
        credential: &CredentialId,
        slot: &Arc<Slot>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Live>, Error> {
        let renewed = self.renew(credential, slot, None, deadline).await;
        if matches!(renewed, Err(Error::NotConnected(_))) {
            self.forget_if_unknown(credential, slot);
        }
        renewed
    }

    /// Gets a usable session, creating one if needed. With `rejected`, bunq declared
    /// that session dead: renew unless another task already replaced it.
    async fn renew(
        &self,
        credential: &CredentialId,
        slot: &Slot,
        rejected: Option<&Session>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Live>, Error> {
        let mut guard = slot.renew.lock().await;
        let state = &mut *guard;
        if state.disconnected {
            return Err(Error::NotConnected(credential.clone()));
        }
        if let Some(refusal) = &state.revoked {
            return Err(refusal.error(credential));
        }
        // Whoever held the lock before us may have done the work.
        if let Some(live) = slot.fresh() {
            let replaced = rejected.is_none_or(|dead| {
                dead.token.expose_secret() != live.session.token.expose_secret()
            });
            if replaced {
                return Ok(live);
            }
        }
        if state.context.is_none() {
            state.context = self
                .inner
                .store
                .load(credential)
                .await?
                .filter(|ctx| ctx.api_base == self.inner.client.api_base());
        }
        let Some(context) = state.context.as_mut() else {
            return Err(Error::NotConnected(credential.clone()));
        };
        // After a restart the store may hold a session that is still good.
        if rejected.is_none() {
            if let Some(session) = context.session.as_ref().filter(|s| self.is_fresh(s)) {
                return Ok(self.publish(slot, &context.installation, session));
            }
        }
        if let Some(backoff) = &state.backoff {
            let now = Instant::now();
            if now < backoff.until {
                return Err(Error::SessionBackoff {
                    credential: credential.clone(),
                    retry_after: backoff.until - now,
                    failures: backoff.failures,
                    last: backoff.last.clone(),
                });
            }
        }
        // Another process sharing the store may be creating (or have created) a
        // session for the same credential: wait for it, then take what it stored.
        let fleet_lock = self.inner.store.lock_creation(credential).await?;
        if fleet_lock.is_some() {
            let stored = self
                .inner
                .store
                .load(credential)
                .await?
                .filter(|ctx| ctx.api_base == self.inner.client.api_base());
            let Some(stored) = stored else {
                state.context = None;
                return Err(Error::NotConnected(credential.clone()));
            };
            let taken = stored.session.as_ref().filter(|s| {
                self.is_fresh(s)
                    && rejected
                        .is_none_or(|dead| dead.token.expose_secret() != s.token.expose_secret())
            });
            if let Some(session) = taken {
                let live = self.publish(slot, &stored.installation, session);
                state.context = Some(stored);
                state.backoff = None;
                return Ok(live);
            }
            state.context = Some(stored);
        }
        let Some(context) = state.context.as_mut() else {
            return Err(Error::NotConnected(credential.clone()));
        };
        match self.open_session(credential, context, deadline).await {
            Ok(session) => {
                state.backoff = None;
                Ok(self.publish(slot, &context.installation, &session))
            }
            Err(e) => {
                if let Some(refusal) = Refusal::of(&e) {
                    tracing::warn!(%credential, "bunq refused the credential: access withdrawn");
                    state.revoked = Some(refusal.clone());
                    // The published session died with the grant: nothing may use it.
                    if let Ok(mut live) = slot.live.write() {
                        *live = None;
                    }
                    return Err(refusal.error(credential));
                }
                // Waiting for a turn is not the credential's failure; everything else
                // bunq (or the way to it) answered is, and backs off.
                if !matches!(
                    e,
                    Error::SessionCapacity { .. } | Error::NotConnected(_) | Error::Store(_)
                ) {
                    let failures = state.backoff.as_ref().map_or(0, |b| b.failures) + 1;
                    let delay = self
                        .inner
                        .config
                        .refusal_backoff
                        .saturating_mul(1u32 << (failures - 1).min(16))
                        .min(self.inner.config.max_backoff);
                    tracing::info!(%credential, failures, ?delay, error = %e, "session creation failed; backing off");
                    state.backoff = Some(Backoff {
                        until: Instant::now() + delay,
                        failures,
                        last: e.to_string(),
                    });
                }
                Err(e)
            }
        }
    }

    /// Sends `req` for `credential` with its live session. If bunq answers that the
    /// session is dead (401/403 "Insufficient authorisation."), the session is renewed
    /// once for all concurrent callers, and the call is retried once if it is
    /// idempotent; a POST is never sent twice: its 401 response is returned as is.
    ///
    /// The request's [`deadline`](ApiRequest::deadline) bounds every wait before the
    /// call is sent, a session renewal's turn at the pacer included.
    pub async fn request(
        &self,
        credential: &CredentialId,
        req: ApiRequest,
    ) -> Result<RawResponse, Error> {
        let slot = self.slot(credential);
        let live = match slot.fresh() {
            Some(live) => live,
            None => {
                self.renew_or_forget(credential, &slot, req.deadline)
                    .await?
            }
        };
        let client = &self.inner.client;
        let limit = req.retry_limit(client.max_retries());
        let (resp, resent) = client
            .send_within(
                Auth::Session(&live.installation, &live.session),
                &req,
                limit,
            )
            .await;
        let resp = resp?;
        if !resp.is_insufficient_authorisation() {
            return Ok(resp);
        }
        tracing::debug!(%credential, "session rejected by bunq; renewing");
        // A PUT or DELETE is resent at most `limit` times in all (once): a resend spent
        // on a 503 leaves none for after the renewal. A GET's resend after a renewal is
        // on top of its transport retries, as always.
        let reads = matches!(req.method, http::Method::GET | http::Method::HEAD);
        let left = if reads {
            Some(limit)
        } else {
            limit
                .checked_sub(resent)
                .and_then(|left| left.checked_sub(1))
        };
        let Some(left) = left.filter(|_| req.is_retryable()) else {
            // Renew for the next call, but answer this one with bunq's refusal.
            if let Err(e) = self
                .renew(credential, &slot, Some(&live.session), req.deadline)
                .await
            {
                tracing::warn!(%credential, error = %e, "session renewal failed");
            }
            return Ok(resp);
        };
        let renewed = self
            .renew(credential, &slot, Some(&live.session), req.deadline)
            .await?;
        client
            .send_within(
                Auth::Session(&renewed.installation, &renewed.session),
                &req,
                left,
            )
            .await
            .0
    }

    /// Drops everything cached for `credential` (e.g. after the application deleted
    /// the user); the store is the application's to clean.
    pub async fn forget(&self, credential: &CredentialId) {
        if let Ok(mut slots) = self.inner.slots.write() {
            slots.remove(credential);
        }
    }

    /// Disconnects a credential for good (until [`connect`](Self::connect) is called
    /// again): waits for a session creation in flight for it to finish, then makes sure
    /// no task, in flight or later, creates, saves or uses a session for it, and closes
    /// its session at bunq (`DELETE /session/{id}`; its error is returned, the
    /// disconnection stands either way).
    ///
    /// Call it *before* deleting the credential from the store: a renewal that loaded the
    /// context before the deletion would otherwise save it back after.
    ///
    /// A credential with neither a slot nor a stored context leaves nothing behind (a
    /// loop of disconnects of made-up credentials must not grow memory); the slot that
    /// remembers a disconnection is dropped once the store no longer has the credential
    /// and no task holds the slot (checked on later disconnects).
    pub async fn disconnect(&self, credential: &CredentialId) -> Result<(), Error> {
        self.prune_disconnected().await;
        let slot = match self.existing_slot(credential) {
            Some(slot) => slot,
            // No slot: nothing cached and no creation in flight (creations hold one).
            // Something to stop only if the store can hand the credential to a later
            // renewal.
            None => match self.inner.store.load(credential).await? {
                None => return Ok(()),
                Some(_) => self.slot(credential),
            },
        };
        let cached = {
            let mut state = slot.renew.lock().await;
            state.disconnected = true;
            state.context = None;
            match slot.live.write() {
                Ok(mut live) => live.take(),
                Err(_) => None,
            }
        };
        let stored = match cached {
            Some(_) => None,
            None => self.inner.store.load(credential).await?,
        };
        self.close_at_bunq(cached, stored.as_ref()).await?;
        Ok(())
    }

    /// Closes the credential's session at bunq (`DELETE /session/{id}`), forgets it,
    /// and clears it from the store so that a restart does not try to reuse it.
    pub async fn close(&self, credential: &CredentialId) -> Result<(), Error> {
        let cached = self
            .existing_slot(credential)
            .and_then(|slot| slot.current());
        self.forget(credential).await;
        let mut stored = self.inner.store.load(credential).await?;
        let closed = self.close_at_bunq(cached, stored.as_ref()).await?;
        if let Some(context) = stored
            .as_mut()
            .filter(|c| closed.is_some() && c.session.as_ref().map(|s| s.id) == closed)
        {
            context.session = None;
            self.inner.store.save(credential, context).await?;
        }
        Ok(())
    }

    /// Closes at bunq the cached session, else the stored one; returns the closed
    /// session's id, if there was one to close.
    async fn close_at_bunq(
        &self,
        cached: Option<Arc<Live>>,
        stored: Option<&ApiContext>,
    ) -> Result<Option<u64>, Error> {
        let (installation, session) = match (&cached, stored) {
            (Some(live), _) => (&live.installation, &live.session),
            (
                None,
                Some(ApiContext {
                    installation,
                    session: Some(session),
                    ..
                }),
            ) => (installation, session),
            _ => return Ok(None),
        };
        self.inner
            .client
            .close_session(installation, session)
            .await?;
        Ok(Some(session.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientConfig, Environment, MemoryContextStore, RateLimitPolicy};

    fn manager() -> SessionManager<MemoryContextStore> {
        // Nothing is sent: the store knows no credential.
        let client = BunqClient::new(
            ClientConfig::new(Environment::Custom {
                api_base: "http://127.0.0.1:9/v1".to_owned(),
            })
            .rate_limits(RateLimitPolicy::disabled()),
        )
        .expect("client");
        SessionManager::new(
            client,
            MemoryContextStore::new(),
            SessionManagerConfig::default(),
        )
    }

    #[tokio::test]
    async fn unknown_credentials_leave_no_slot_behind() {
        let m = manager();
        for i in 0..1_000 {
            let credential = CredentialId::new(format!("random-{i}"));
            m.disconnect(&credential).await.expect("disconnect");
            m.close(&credential).await.expect("close");
            assert!(matches!(
                m.request(&credential, ApiRequest::get("user")).await,
                Err(Error::NotConnected(_))
            ));
            assert!(matches!(
                m.session(&credential).await,
                Err(Error::NotConnected(_))
            ));
        }
        assert_eq!(m.slot_count(), 0);
    }
}
