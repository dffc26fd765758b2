//! Prometheus metrics: requests by route and status, bunq calls by endpoint and status,
//! session creations, and latency histograms.

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Past this many distinct bunq endpoints, new ones are counted as `other`, so that a
/// caller cannot grow the metrics without bound by inventing paths.
const MAX_ENDPOINT_SERIES: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// What came of one bunq call: bunq's status, or why there is none.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum BunqOutcome {
    /// bunq answered with this status (signature verified).
    Status(u16),
    /// No usable answer; the reason in one word (`timeout`, `signature_invalid`, ...).
    Failed(&'static str),
}

impl EncodeLabelValue for BunqOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        match self {
            BunqOutcome::Status(code) => write!(encoder, "{code}"),
            BunqOutcome::Failed(why) => encoder.write_str(why),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BunqLabels {
    endpoint: Arc<str>,
    status: BunqOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Arc<str>,
}

type Hist = Family<RouteLabels, Histogram, fn() -> Histogram>;
type EndpointHist = Family<EndpointLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s: from a cached proxy hop to a slow bunq call.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// What the session manager knows, read at scrape time.
pub struct SessionProbe {
    /// `POST /session-server` calls made by this process.
    pub creations: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Callers waiting for a turn at the session-server pacer.
    pub queue_len: Box<dyn Fn() -> usize + Send + Sync>,
}

impl fmt::Debug for SessionProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionProbe")
    }
}

impl Collector for SessionProbe {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let counter = ConstCounter::new((self.creations)());
        let metric = encoder.encode_descriptor(
            "bunq_gateway_session_creations",
            "Sessions opened at bunq (POST /session-server) by this process.",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)?;
        let queue = ConstGauge::new(i64::try_from((self.queue_len)()).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "bunq_gateway_session_queue",
            "Requests waiting for a turn at bunq's session-server limit (one per 30 s per \
             IP): a queue that stays long means more users need sessions than bunq lets \
             through.",
            None,
            queue.metric_type(),
        )?;
        queue.encode(metric)
    }
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Hist,
    bunq_calls: Family<BunqLabels, Counter>,
    bunq_latency: EndpointHist,
    grants_revoked: Counter,
    callbacks_received: Family<OutcomeLabels, Counter>,
    events_delivered: Counter,
    events_dead: Counter,
    events_unconfirmed: Counter,
    events_pending: Gauge,
    endpoints: RwLock<HashSet<Arc<str>>>,
    other_endpoint: Arc<str>,
}

impl Metrics {
    /// Registers every metric; `sessions` is read at each scrape.
    pub fn new(sessions: SessionProbe) -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "bunq_gateway_build_info",
            "The running gateway's version (always 1).",
            build_info,
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "bunq_gateway_http_requests",
            "HTTP requests served, by route, method and status.",
            http_requests.clone(),
        );
        let http_latency: Hist = Family::new_with_constructor(latency_histogram);
        registry.register(
            "bunq_gateway_http_request_duration_seconds",
            "Time to serve an HTTP request, by route.",
            http_latency.clone(),
        );
        let bunq_calls = Family::<BunqLabels, Counter>::default();
        registry.register(
            "bunq_gateway_bunq_calls",
            "Calls to bunq through the proxy, by endpoint and status.",
            bunq_calls.clone(),
        );
        let bunq_latency: EndpointHist = Family::new_with_constructor(latency_histogram);
        registry.register(
            "bunq_gateway_bunq_call_duration_seconds",
            "Time of a proxied bunq call (session renewal included), by endpoint.",
            bunq_latency.clone(),
        );
        registry.register_collector(Box::new(sessions));
        let grants_revoked = Counter::default();
        registry.register(
            "bunq_gateway_grants_revoked",
            "Users found revoked: bunq refused their access token (access withdrawn in the bunq app).",
            grants_revoked.clone(),
        );
        let callbacks_received = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bunq_gateway_callbacks_received",
            "Callbacks POSTed by bunq (or anyone) to /bunq/callbacks/{id}, by outcome: \
             accepted, duplicate, or why refused.",
            callbacks_received.clone(),
        );
        let events_delivered = Counter::default();
        registry.register(
            "bunq_gateway_events_delivered",
            "Events every webhook receiver accepted.",
            events_delivered.clone(),
        );
        let events_dead = Counter::default();
        registry.register(
            "bunq_gateway_events_dead",
            "Events given up after the retry period (redeliverable).",
            events_dead.clone(),
        );
        let events_unconfirmed = Counter::default();
        registry.register(
            "bunq_gateway_events_unconfirmed",
            "bunq callbacks whose object bunq did not confirm (callbacks.confirm): not relayed.",
            events_unconfirmed.clone(),
        );
        let events_pending = Gauge::default();
        registry.register(
            "bunq_gateway_events_pending",
            "Events waiting for delivery in the outbox (read at each scrape).",
            events_pending.clone(),
        );
        Self {
            registry,
            callbacks_received,
            events_delivered,
            events_dead,
            events_unconfirmed,
            events_pending,
            http_requests,
            http_latency,
            bunq_calls,
            bunq_latency,
            grants_revoked,
            endpoints: RwLock::new(HashSet::new()),
            other_endpoint: Arc::from("other"),
        }
    }

    /// Counts one user found revoked.
    pub fn grant_revoked(&self) {
        self.grants_revoked.inc();
    }

    /// Counts one callback received; `outcome` is `accepted`, `duplicate` or the reason
    /// it was refused (a fixed word, so the series stay few).
    pub fn callback_received(&self, outcome: &'static str) {
        self.callbacks_received
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one event delivered to every receiver.
    pub fn event_delivered(&self) {
        self.events_delivered.inc();
    }

    /// Counts one event given up.
    pub fn event_dead(&self) {
        self.events_dead.inc();
    }

    /// Counts one event bunq did not confirm.
    pub fn event_unconfirmed(&self) {
        self.events_unconfirmed.inc();
    }

    /// Sets the pending-events gauge (from the store, at scrape time: the outbox is
    /// shared with other processes' restarts, a counter kept here would drift).
    pub fn set_events_pending(&self, pending: u64) {
        self.events_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Counts one served HTTP request.
    pub fn observe_http(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        let labels = HttpLabels {
            route,
            method: method_label(method),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_latency
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Counts one call to bunq; `endpoint` is from [`endpoint_label`].
    pub fn observe_bunq(&self, endpoint: &str, status: BunqOutcome, took: Duration) {
        let endpoint = self.intern_endpoint(endpoint);
        self.bunq_calls
            .get_or_create(&BunqLabels {
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        self.bunq_latency
            .get_or_create(&EndpointLabels { endpoint })
            .observe(took.as_secs_f64());
    }

    /// The shared label value for `endpoint`: one allocation per distinct endpoint,
    /// none per call.
    fn intern_endpoint(&self, endpoint: &str) -> Arc<str> {
        if let Some(known) = self
            .endpoints
            .read()
            .ok()
            .and_then(|set| set.get(endpoint).cloned())
        {
            return known;
        }
        let Ok(mut set) = self.endpoints.write() else {
            return self.other_endpoint.clone();
        };
        if let Some(known) = set.get(endpoint) {
            return known.clone();
        }
        if set.len() >= MAX_ENDPOINT_SERIES {
            return self.other_endpoint.clone();
        }
        let interned: Arc<str> = Arc::from(endpoint);
        set.insert(interned.clone());
        interned
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// A low-cardinality name for a bunq call: the method and the path with numeric ids
/// replaced by `{id}` and the query dropped, e.g. `GET /user/{id}/monetary-account-bank`.
pub fn endpoint_label(method: &http::Method, path_and_query: &str) -> String {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let mut out = String::with_capacity(path.len() + 8);
    out.push_str(method_label(method));
    out.push(' ');
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    if !path.contains(|c| c != '/') {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_label_hides_ids_and_query() {
        assert_eq!(
            endpoint_label(
                &http::Method::GET,
                "/user/12/monetary-account-bank?count=10"
            ),
            "GET /user/{id}/monetary-account-bank"
        );
        assert_eq!(
            endpoint_label(&http::Method::POST, "/user/1/monetary-account/2/payment"),
            "POST /user/{id}/monetary-account/{id}/payment"
        );
        assert_eq!(endpoint_label(&http::Method::GET, "/"), "GET /");
    }

    fn probe(creations: u64, queue_len: usize) -> SessionProbe {
        SessionProbe {
            creations: Box::new(move || creations),
            queue_len: Box::new(move || queue_len),
        }
    }

    #[test]
    fn render_shows_every_family() {
        let m = Metrics::new(probe(3, 2));
        m.observe_http(
            "/healthz",
            &http::Method::GET,
            200,
            Duration::from_millis(2),
        );
        m.observe_bunq(
            "GET /user/{id}",
            BunqOutcome::Status(200),
            Duration::from_millis(5),
        );
        m.observe_bunq(
            "POST /user/{id}/payment",
            BunqOutcome::Failed("signature_invalid"),
            Duration::from_millis(5),
        );
        let text = m.render().expect("render");
        assert!(
            text.contains(
                r#"bunq_gateway_http_requests_total{route="/healthz",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"bunq_gateway_bunq_calls_total{endpoint="GET /user/{id}",status="200"} 1"#
        ));
        assert!(text.contains(r#"status="signature_invalid""#));
        assert!(text.contains("bunq_gateway_session_creations_total 3"));
        assert!(text.contains("bunq_gateway_session_queue 2"), "{text}");
        assert!(text.contains(concat!(
            "bunq_gateway_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        )));
        assert!(text.contains("bunq_gateway_http_request_duration_seconds_bucket"));
        assert!(text.contains("bunq_gateway_bunq_call_duration_seconds_count"));
    }

    #[test]
    fn endpoint_series_are_capped() {
        let m = Metrics::new(probe(0, 0));
        for i in 0..(MAX_ENDPOINT_SERIES + 10) {
            m.observe_bunq(
                &format!("GET /x{i}"),
                BunqOutcome::Status(200),
                Duration::ZERO,
            );
        }
        assert_eq!(m.endpoints.read().expect("lock").len(), MAX_ENDPOINT_SERIES);
        assert!(m.render().expect("render").contains(r#"endpoint="other""#));
    }
}
