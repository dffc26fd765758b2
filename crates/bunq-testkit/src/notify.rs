//! Notification filters (`notification-filter-url`) and the callbacks bunq sends to them.
//!
//! bunq keeps, per user (and per monetary account), a list of `{category,
//! notification_target}`; when something of a category happens it POSTs
//! `{"NotificationUrl":{"target_url","category","event_type","object"}}` to every target,
//! signed with `X-Bunq-Server-Signature` over the body like its API answers, and retries a
//! failed delivery 5 more times a minute apart before dropping it. The fake does the
//! same, with the interval from [`crate::FakeConfig::callback_retry_interval`] so that
//! tests need not wait minutes.
//!
//! First attempts to one target leave in the order the events happened (one queue per
//! target), so a receiver sees a user's callbacks in order unless one fails; retries run
//! beside the queue, as bunq's do, and may then arrive after newer callbacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::api::{Call, Caller, parse_body};
use crate::server::Shared;
use crate::wire::{self, ApiError, Signer};
use crate::world::{Subject, World, timestamp};

/// bunq's limit: at most this many targets per category.
pub(crate) const MAX_URLS_PER_CATEGORY: usize = 2;
/// How long one delivery attempt may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The signature header of a callback, as on bunq's answers.
const SIGNATURE_HEADER: &str = "X-Bunq-Server-Signature";

/// One registered `{category, notification_target}`.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    pub id: u64,
    pub category: String,
    pub target: String,
    pub created: SystemTime,
}

/// The filters one session subject set at user level (`account` None) or on an account.
#[derive(Clone, Debug)]
pub(crate) struct FilterSet {
    /// The user whose events they are about (for OAuth, the granting user).
    pub owner: u64,
    /// Who set them: an OAuth grant's filters die with the grant.
    pub subject: Subject,
    pub filters: Vec<Filter>,
}

/// Something that happened at the fake, to be told to the owner's targets.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub owner: u64,
    /// The account it happened on; account-level filters of other accounts skip it.
    pub account: Option<u64>,
    /// Only the filters set by this subject (an OAuth revocation is told to the grant).
    pub only: Option<Subject>,
    pub category: &'static str,
    pub event_type: &'static str,
    pub object: Value,
}

/// A callback the fake sent (or is still sending), for tests to compare with what a
/// receiver got.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentCallback {
    /// Where it was sent.
    pub target: String,
    /// Its category, e.g. `PAYMENT`.
    pub category: String,
    /// Its event type, e.g. `PAYMENT_CREATED`.
    pub event_type: String,
    /// The exact body.
    pub body: Vec<u8>,
    /// The `X-Bunq-Server-Signature` sent with it.
    pub signature: String,
    /// Attempts so far (1 + retries).
    pub attempts: u32,
    /// Whether a 2xx answered one of them.
    pub delivered: bool,
}

struct Job {
    index: usize,
    target: String,
    body: Vec<u8>,
    signature: String,
}

/// The sending side: one queue per target, the log of what was sent.
pub(crate) struct Callbacks {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    retry_interval: Duration,
    retries: u32,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    sent: Arc<Mutex<Vec<SentCallback>>>,
}

impl Callbacks {
    /// Must be called inside a tokio runtime (deliveries are spawned on it).
    pub fn new(retry_interval: Duration, retries: u32) -> Self {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            // A proxy from the environment must not see (or swallow) test callbacks.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            client,
            runtime: tokio::runtime::Handle::current(),
            retry_interval,
            retries,
            queues: Mutex::new(HashMap::new()),
            sent: Arc::default(),
        }
    }

    pub fn sent(&self) -> Vec<SentCallback> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends `event` to `targets`, each body signed by `signer`.
    pub fn send(&self, signer: &Signer, targets: Vec<String>, event: &Event) {
        for target in targets {
            let body = json!({"NotificationUrl": {
                "target_url": target,
                "category": event.category,
                "event_type": event.event_type,
                "object": event.object,
            }})
            .to_string()
            .into_bytes();
            let signature = signer.sign(&body);
            let index = match self.sent.lock() {
                Ok(mut sent) => {
                    sent.push(SentCallback {
                        target: target.clone(),
                        category: event.category.to_owned(),
                        event_type: event.event_type.to_owned(),
                        body: body.clone(),
                        signature: signature.clone(),
                        attempts: 0,
                        delivered: false,
                    });
                    sent.len() - 1
                }
                Err(_) => continue,
            };
            let job = Job {
                index,
                target: target.clone(),
                body,
                signature,
            };
            if let Ok(mut queues) = self.queues.lock() {
                let queue = queues.entry(target).or_insert_with(|| self.start_queue());
                let _ = queue.send(job);
            }
        }
    }

    fn start_queue(&self) -> mpsc::UnboundedSender<Job> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let client = self.client.clone();
        let sent = Arc::clone(&self.sent);
        let (interval, retries) = (self.retry_interval, self.retries);
        let runtime = self.runtime.clone();
        self.runtime.spawn(async move {
            while let Some(job) = rx.recv().await {
                if attempt(&client, &sent, &job).await {
                    continue;
                }
                let (client, sent) = (client.clone(), Arc::clone(&sent));
                runtime.spawn(async move {
                    for _ in 0..retries {
                        tokio::time::sleep(interval).await;
                        if attempt(&client, &sent, &job).await {
                            return;
                        }
                    }
                });
            }
        });
        tx
    }
}

/// One delivery attempt; true when a 2xx answered it.
async fn attempt(client: &reqwest::Client, sent: &Mutex<Vec<SentCallback>>, job: &Job) -> bool {
    let ok = client
        .post(&job.target)
        .header("Content-Type", "application/json")
        .header(SIGNATURE_HEADER, &job.signature)
        .body(job.body.clone())
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    if let Ok(mut sent) = sent.lock() {
        if let Some(s) = sent.get_mut(job.index) {
            s.attempts += 1;
            s.delivered |= ok;
        }
    }
    ok
}

impl World {
    /// The targets `event` goes to: filters of its category set by a live subject acting
    /// for its owner, at user level or on its account; each target once.
    pub fn callback_targets(&self, event: &Event) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut sets: Vec<(&(u64, Option<u64>), &FilterSet)> =
            self.notification_filters.iter().collect();
        // A stable order, whatever the map's.
        sets.sort_by_key(|(k, _)| **k);
        for ((_, account), set) in sets {
            let live = match set.subject {
                Subject::Person(_) => true,
                Subject::ApiKey(g) => self.grants.get(&g).is_some_and(|g| !g.revoked),
            };
            if set.owner != event.owner
                || event.only.is_some_and(|s| s != set.subject)
                || account.is_some_and(|a| Some(a) != event.account)
                || !(live || event.only.is_some())
            {
                continue;
            }
            for f in &set.filters {
                if f.category == event.category && !out.contains(&f.target) {
                    out.push(f.target.clone());
                }
            }
        }
        out
    }
}

/// Tells `events` to their targets. Call with the world unlocked.
pub(crate) fn emit(shared: &Shared, events: &[Event]) {
    for event in events {
        let targets = shared.world().callback_targets(event);
        if !targets.is_empty() {
            shared.callbacks.send(&shared.signer, targets, event);
        }
    }
}

fn filter_json(f: &Filter, account: Option<u64>) -> Value {
    let mut v = json!({
        "id": f.id,
        "created": timestamp(f.created),
        "updated": timestamp(f.created),
        "category": f.category,
        "notification_target": f.target,
    });
    if let Some(a) = account {
        v["monetary_account_id"] = json!(a);
    }
    json!({"NotificationFilterUrl": v})
}

fn check_account(world: &World, caller: Caller, account: Option<u64>) -> Result<(), ApiError> {
    match account {
        Some(a)
            if world
                .accounts
                .get(&a)
                .is_none_or(|a| a.user_id != caller.owner) =>
        {
            Err(ApiError::not_found("MonetaryAccount not found."))
        }
        _ => Ok(()),
    }
}

/// `POST .../notification-filter-url`: replaces the caller's filters (user level, or on
/// `account`) with the body's; an empty list removes them.
pub(crate) fn set_filters(
    shared: &Shared,
    caller: Caller,
    account: Option<u64>,
    call: &Call<'_>,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Item {
        category: String,
        notification_target: Option<String>,
    }
    #[derive(Deserialize)]
    struct Body {
        notification_filters: Vec<Item>,
    }
    let body: Body = parse_body(call.body)?;
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    for item in &body.notification_filters {
        if item.category.is_empty()
            || !item
                .category
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
        {
            return Err(ApiError::bad_request(format!(
                "The category {:?} is not a notification category.",
                item.category
            )));
        }
        let target = item.notification_target.as_deref().unwrap_or_default();
        // bunq wants HTTPS; the fake also takes http:// so that tests need no TLS.
        let valid = url::Url::parse(target)
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
        if !valid {
            return Err(ApiError::bad_request(format!(
                "The notification_target {target:?} is not a valid URL."
            )));
        }
        let n = per_category.entry(item.category.as_str()).or_insert(0);
        *n += 1;
        if *n > MAX_URLS_PER_CATEGORY {
            return Err(ApiError::bad_request(format!(
                "At most {MAX_URLS_PER_CATEGORY} notification URLs are allowed per category ({}).",
                item.category
            )));
        }
    }
    let mut world = shared.world();
    check_account(&world, caller, account)?;
    let now = SystemTime::now();
    let mut filters = Vec::new();
    for item in body.notification_filters {
        filters.push(Filter {
            id: world.next_id(),
            category: item.category,
            target: item.notification_target.unwrap_or_default(),
            created: now,
        });
    }
    let items: Vec<Value> = filters.iter().map(|f| filter_json(f, account)).collect();
    let key = (caller.path_user, account);
    if filters.is_empty() {
        world.notification_filters.remove(&key);
    } else {
        world.notification_filters.insert(
            key,
            FilterSet {
                owner: caller.owner,
                subject: caller.subject,
                filters,
            },
        );
    }
    drop(world);
    Ok(wire::ok(shared, items))
}

/// `GET .../notification-filter-url`: the caller's filters there.
pub(crate) fn list_filters(
    shared: &Shared,
    caller: Caller,
    account: Option<u64>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = shared.world();
        check_account(&world, caller, account)?;
        world
            .notification_filters
            .get(&(caller.path_user, account))
            .map(|set| {
                set.filters
                    .iter()
                    .map(|f| filter_json(f, account))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(wire::ok(shared, items))
}
