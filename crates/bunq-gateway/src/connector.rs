//! The background connector: turns consents (access tokens from OAuth callbacks, stored
//! encrypted) into connections, installation → device-server → session-server, through
//! the one session-server pacer.
//!
//! Why in the background: bunq allows one session-server call per 30 s per IP, so a
//! callback cannot count on a session within the time a browser waits. The code and
//! the state are single-use; once exchanged, the token is the only thing that stands
//! for the user's consent. So it is stored first, and a task per consent tries until the
//! connection exists, bunq refuses the token, or the user is deleted; a restart resumes
//! every consent from the store ([`Connector::resume`]). The callback waits a short,
//! bounded time for the outcome and otherwise tells the browser "connecting".

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bunq_session::{ApiContext, CredentialId, Error as SessionError};
use bunq_store::{ConsentCompletion, ConsentRefusal, PendingConsent};
use tokio::sync::oneshot;

use crate::app::Shared;

/// A consent still failing after this long is given up (`failed`): its token has
/// certainly expired by then.
const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Refusals that no retry changes (a 4xx other than 429, a malformed answer) are tried
/// this many times before the consent is `failed`.
const PERMANENT_ATTEMPTS: u32 = 3;
/// The longest pause between two attempts of one consent.
const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What became of a consent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConnectOutcome {
    /// The user is connected with it.
    Connected,
    /// It came from another bunq account than the user's, without `replace`.
    IdentityMismatch,
    /// bunq refused the token.
    Revoked,
    /// Connecting failed for good (the reason, no secrets).
    Failed(String),
    /// The user was deleted meanwhile.
    Gone,
}

/// The running consents and who waits for them.
#[derive(Default)]
pub(crate) struct Connector {
    running: Mutex<HashSet<String>>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<ConnectOutcome>>>>,
}

impl Connector {
    /// A receiver of the outcome of the consent `credential`; subscribe before
    /// [`start`](Self::start) so that a fast outcome is not missed.
    pub(crate) fn subscribe(&self, credential: &str) -> oneshot::Receiver<ConnectOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.entry(credential.to_owned()).or_default().push(tx);
        }
        rx
    }

    /// Starts connecting `consent` unless a task already does.
    pub(crate) fn start(state: &Shared, consent: PendingConsent) {
        let fresh = state
            .connector
            .running
            .lock()
            .is_ok_and(|mut running| running.insert(consent.credential.clone()));
        if !fresh {
            return;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let credential = consent.credential.clone();
            let outcome = connect(&state, consent).await;
            let connector = &state.connector;
            if let Ok(mut running) = connector.running.lock() {
                running.remove(&credential);
            }
            let waiting = connector
                .waiters
                .lock()
                .ok()
                .and_then(|mut w| w.remove(&credential))
                .unwrap_or_default();
            for waiter in waiting {
                let _ = waiter.send(outcome.clone());
            }
        });
    }

    /// Starts every consent the store holds (at start: those a stopped or killed
    /// gateway left). Returns how many.
    pub(crate) async fn resume(state: &Shared) -> Result<usize, bunq_store::StoreError> {
        let pending = state.store.pending_consents().await?;
        let n = pending.len();
        for consent in pending {
            Connector::start(state, consent);
        }
        Ok(n)
    }
}

/// Whether retrying `e` can help: bunq unavailable, a timeout, a cut connection, a
/// 429 or 5xx. A 4xx refusal or an answer bunq does not document will not change.
fn is_passing(e: &SessionError) -> bool {
    match e {
        SessionError::Api { status, .. } => *status == 429 || *status >= 500,
        SessionError::SignatureInvalid { .. }
        | SessionError::UnexpectedResponse { .. }
        | SessionError::Config(_)
        | SessionError::InvalidRequest { .. }
        | SessionError::Key(_) => false,
        _ => true,
    }
}

/// Tries until the consent is connected or given up; each attempt costs at most one
/// session-server slot, taken in turn with everyone else's.
async fn connect(state: &Shared, consent: PendingConsent) -> ConnectOutcome {
    let credential = CredentialId::new(consent.credential.as_str());
    let mut failures = 0u32;
    let mut permanent = 0u32;
    loop {
        let token = match state.store.consent_token(&consent.credential).await {
            Ok(Some(token)) => token,
            Ok(None) => return ConnectOutcome::Gone,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a consent");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let error = match state.sessions.connect(&credential, token).await {
            Ok(context) => return finish(state, &consent, &credential, &context).await,
            Err(e) => e,
        };
        match &error {
            SessionError::Revoked { .. } => {
                let reason = "bunq refused the access token of this consent";
                return refuse(state, &consent, ConsentRefusal::Revoked, reason).await;
            }
            // Waiting in line is not a failure: take a place again at once.
            SessionError::SessionCapacity { retry_after } => {
                tokio::time::sleep((*retry_after).min(Duration::from_secs(1))).await;
                continue;
            }
            _ => {}
        }
        failures += 1;
        if !is_passing(&error) {
            permanent += 1;
        }
        let reason = error.to_string();
        tracing::warn!(user_ref = consent.user_ref, failures, error = %error, "connecting a consent failed");
        if let Err(e) = state
            .store
            .record_consent_attempt(&consent.credential, &reason)
            .await
        {
            tracing::error!(error = %e, "cannot record a consent attempt");
        }
        let too_old = SystemTime::now()
            .duration_since(consent.created_at)
            .is_ok_and(|age| age > GIVE_UP_AFTER);
        if permanent >= PERMANENT_ATTEMPTS || too_old {
            return refuse(state, &consent, ConsentRefusal::Failed, &reason).await;
        }
        let pause = error
            .retry_after()
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1).saturating_mul(1 << failures.min(9)))
            .min(MAX_PAUSE);
        tokio::time::sleep(pause).await;
    }
}

async fn refuse(
    state: &Shared,
    consent: &PendingConsent,
    why: ConsentRefusal,
    reason: &str,
) -> ConnectOutcome {
    // Whatever bunq created for it (a session, if the refusal came late) is closed.
    let credential = CredentialId::new(consent.credential.as_str());
    let _ = drop_session(state, &credential).await;
    match state
        .store
        .refuse_consent(&consent.credential, why, reason)
        .await
    {
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot record a refused consent"),
    }
    tracing::info!(
        user_ref = consent.user_ref,
        ?why,
        reason,
        "consent not connected"
    );
    let event = match why {
        ConsentRefusal::Revoked => "user.revoked",
        _ => "user.connection_failed",
    };
    let data = serde_json::json!({ "user_ref": consent.user_ref, "reason": reason });
    crate::relay::record_own(state, &consent.user_ref, event, data).await;
    match why {
        ConsentRefusal::Revoked => ConnectOutcome::Revoked,
        _ => ConnectOutcome::Failed(reason.to_owned()),
    }
}

/// The session exists: make it the user's (or refuse it, or clean up after a deletion).
async fn finish(
    state: &Shared,
    consent: &PendingConsent,
    credential: &CredentialId,
    context: &ApiContext,
) -> ConnectOutcome {
    let Some(session) = &context.session else {
        return ConnectOutcome::Failed("bunq opened no session".to_owned());
    };
    let completion = loop {
        match state
            .store
            .complete_consent(
                &consent.credential,
                session.user_id,
                session.granted_by_user_id,
            )
            .await
        {
            Ok(completion) => break completion,
            Err(e) => {
                tracing::error!(error = %e, "cannot record a connection; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    match completion {
        ConsentCompletion::Connected { user, replaced } => {
            if let Ok(mut routes) = state.routes.write() {
                routes.insert(consent.user_ref.clone(), credential.clone());
            }
            if let Some(old) = replaced {
                // The old connection's session is closed at bunq and nothing of it is
                // cached or saved again (its context is already deleted).
                let old = CredentialId::new(old);
                if let Err(e) = drop_session(state, &old).await {
                    tracing::info!(user_ref = consent.user_ref, error = %e, "could not close the replaced session at bunq");
                }
            }
            tracing::info!(
                user_ref = consent.user_ref,
                bunq_user_id = user.bunq_user_id,
                "user connected"
            );
            let data = serde_json::json!({
                "user_ref": consent.user_ref,
                "bunq_user_id": user.bunq_user_id,
            });
            crate::relay::record_own(state, &consent.user_ref, "user.connected", data).await;
            crate::callbacks::subscribe_after_connect(state, &consent.user_ref, credential).await;
            ConnectOutcome::Connected
        }
        ConsentCompletion::IdentityMismatch { expected, got } => {
            tracing::warn!(
                user_ref = consent.user_ref,
                expected,
                got,
                "consent by another bunq account refused"
            );
            let _ = drop_session(state, credential).await;
            ConnectOutcome::IdentityMismatch
        }
        ConsentCompletion::Gone => {
            let _ = drop_session(state, credential).await;
            if let Err(e) = state.store.delete_context(&consent.credential).await {
                tracing::error!(error = %e, "cannot delete the context of a deleted user");
            }
            ConnectOutcome::Gone
        }
        _ => ConnectOutcome::Failed("unexpected completion".to_owned()),
    }
}

/// Closes `credential`'s session at bunq (its error is returned, for logging) and
/// forgets it, so that nothing serves, renews or saves it again.
async fn drop_session(state: &Shared, credential: &CredentialId) -> Result<(), SessionError> {
    let closed = state.sessions.disconnect(credential).await;
    state.sessions.forget(credential).await;
    closed
}
