//! The service's own metrics, served by `GET /metrics` in the Prometheus text format (0.0.4).
//!
//! Counted as they happen: HTTP requests and their latency per matched route pattern (never the
//! raw path, whose ids would explode the series), webhook calls per outcome, and API errors per
//! code. Read at scrape time: journal appends, resident actors and live objects.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse};
use flotilla_actors::clock::Clock;
use flotilla_actors::supervisor::Supervisor;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, DescriptorEncoder, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::ApiError;
use crate::cluster::{LeaseCounts, Ownership};
use crate::converger::Converger;
use crate::index::Index;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The route label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The label of a method or a status outside the closed sets below.
pub const OTHER: &str = "other";

/// A method's label: one of the standard methods, else [`OTHER`]. Anyone can send any method
/// name, unauthenticated: each new one must not make new series.
fn method_label(method: &str) -> &'static str {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or(OTHER)
}

/// A status's label: the statuses the service answers with, else [`OTHER`].
fn status_label(status: u16) -> &'static str {
    const STATUSES: [(u16, &str); 17] = [
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (429, "429"),
        (500, "500"),
        (501, "501"),
        (503, "503"),
    ];
    STATUSES
        .into_iter()
        .find(|(known, _)| *known == status)
        .map_or(OTHER, |(_, label)| label)
}

// Labels are static strings where the set is closed (methods, statuses, outcomes, codes), so
// that counting a request allocates only its route's pattern.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: Cow<'static, str>,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Where the service's recovery stands: what its last start replayed, and where its checkpoint
/// is now (see `service::Checkpointer`).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records the last start replayed after its checkpoint.
    pub replayed_at_start: AtomicU64,
    /// The sequence number of the latest checkpoint saved.
    pub checkpoint_seq: AtomicU64,
}

/// Journal records by event type, as the projector sees them appended (from this start on).
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl EventCounts {
    /// Counts one record of `event_type` (the projector's entry).
    pub fn count(&self, event_type: &str) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match counts.get_mut(event_type) {
            Some(count) => *count += 1,
            None => {
                counts.insert(event_type.to_owned(), 1);
            }
        }
    }

    /// Every type counted, with its count.
    pub fn all(&self) -> Vec<(String, u64)> {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The registry and the metrics recorded into it. Shared by the handlers and the middleware.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    webhooks: Family<OutcomeLabels, Counter>,
    rejections: Family<CodeLabels, Counter>,
    remote_write: Family<OutcomeLabels, Counter>,
    truncated_alerts: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to 16 s, doubling.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Telemetry {
    /// Metrics of a service whose objects live in `supervisor` and `index`.
    pub fn new(
        supervisor: Supervisor,
        index: Arc<Index>,
        recovery: Arc<Recovery>,
        converger: Arc<Converger>,
        events: Arc<EventCounts>,
        (ownership, leases, clock): (Arc<Ownership>, Arc<LeaseCounts>, Arc<dyn Clock>),
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "flotilla_http_requests",
            "HTTP requests answered, by method, matched route pattern and status",
            requests.clone(),
        );
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "flotilla_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and matched route pattern",
            latency.clone(),
        );
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "flotilla_webhooks",
            "Webhook calls, by outcome: the execution's outcome or the rejection's code",
            webhooks.clone(),
        );
        let rejections = Family::<CodeLabels, Counter>::default();
        registry.register(
            "flotilla_rejections",
            "API errors answered, by error code",
            rejections.clone(),
        );
        let remote_write = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "flotilla_remote_write_samples",
            "Remote-write samples, by outcome: accepted, unwatched, too_old, too_new, stale \
             (NaN markers), invalid, not_writable (a group the token may not write), or \
             skipped with their series (no_name, no_group)",
            remote_write.clone(),
        );
        let truncated_alerts = Counter::default();
        registry.register(
            "flotilla_alertmanager_truncated_alerts",
            "Alerts Alertmanager left out of notifications (truncatedAlerts, by max_alerts)",
            truncated_alerts.clone(),
        );
        registry.register_collector(Box::new(Live {
            supervisor,
            index,
            recovery,
            converger,
            events,
            ownership,
            leases,
            clock,
        }));
        Telemetry {
            registry,
            requests,
            latency,
            webhooks,
            rejections,
            remote_write,
            truncated_alerts,
        }
    }

    /// Records `n` alerts Alertmanager left out of a notification.
    pub fn truncated_alerts(&self, n: u64) {
        self.truncated_alerts.inc_by(n);
    }

    /// Records `n` remote-write samples with `outcome`.
    pub fn remote_write(&self, outcome: &'static str, n: usize) {
        self.remote_write
            .get_or_create(&OutcomeLabels {
                outcome: Cow::Borrowed(outcome),
            })
            .inc_by(n as u64);
    }

    /// Records an answered request; `route` is the matched pattern ([`UNMATCHED`] for none).
    pub fn request(&self, method: &str, route: String, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let latency = RouteLabels { method, route };
        self.latency
            .get_or_create(&latency)
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: latency.route,
                status: status_label(status),
            })
            .inc();
    }

    /// Records an API error answered with `code`.
    pub fn rejection(&self, code: Cow<'static, str>) {
        self.rejections.get_or_create(&CodeLabels { code }).inc();
    }

    /// Records a webhook call's outcome (`executed`, ...) or rejection code (`replayed`, ...).
    pub fn webhook(&self, outcome: Cow<'static, str>) {
        self.webhooks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The exposition of every metric, as of now.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The values read at scrape time.
struct Live {
    supervisor: Supervisor,
    index: Arc<Index>,
    recovery: Arc<Recovery>,
    converger: Arc<Converger>,
    events: Arc<EventCounts>,
    ownership: Arc<Ownership>,
    leases: Arc<LeaseCounts>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let node = ConstGauge::new(1);
        node.encode(
            encoder
                .encode_descriptor(
                    "flotilla_node_info",
                    "This node's id (--node-id), as a label",
                    None,
                    MetricType::Gauge,
                )?
                .encode_family(&[("node", self.ownership.node())])?,
        )?;
        let now = self.clock.now();
        let shards = ConstGauge::new(self.ownership.shards_at(now) as i64);
        shards.encode(encoder.encode_descriptor(
            "flotilla_shards_owned",
            "Shards of the groups this node holds the lease of and acts for (all of them on sled)",
            None,
            shards.metric_type(),
        )?)?;
        // Which shards, each with its lease's fencing token (on a shared database only: alone
        // on sled every shard is this node's, token 1).
        if self.ownership.is_shared() {
            let mut held = encoder.encode_descriptor(
                "flotilla_shard_fencing_token",
                "Each shard whose lease this node holds, with the lease's fencing token",
                None,
                MetricType::Gauge,
            )?;
            for (shard, lease) in self.ownership.held() {
                if !lease.valid_at(now) {
                    continue;
                }
                let shard = shard.to_string();
                let token = i64::try_from(lease.token).unwrap_or(i64::MAX);
                ConstGauge::new(token).encode(held.encode_family(&[("shard", shard.as_str())])?)?;
            }
        }
        let owned = self
            .index
            .all_groups()
            .iter()
            .filter(|id| self.ownership.acts_for(id.as_str(), now))
            .count();
        let groups = ConstGauge::new(owned as i64);
        groups.encode(encoder.encode_descriptor(
            "flotilla_groups_owned",
            "Groups this node acts for: converges, evaluates and runs schedules of",
            None,
            groups.metric_type(),
        )?)?;
        for (name, help, count) in [
            (
                "flotilla_lease_renewals",
                "Shard leases renewed",
                &self.leases.renewals,
            ),
            (
                "flotilla_lease_acquisitions",
                "Shard leases acquired (new to this node)",
                &self.leases.acquisitions,
            ),
            (
                "flotilla_lease_takeovers",
                "Shard leases acquired from another node, or after an expiry",
                &self.leases.takeovers,
            ),
            (
                "flotilla_lease_losses",
                "Shards this node stopped acting for: refused, run out or let go",
                &self.leases.losses,
            ),
            (
                "flotilla_owner_work_refused",
                "A group's owner's work refused on this node, which did not hold its lease",
                &self.leases.refused,
            ),
        ] {
            let count = ConstCounter::new(count.load(Ordering::Relaxed));
            count.encode(encoder.encode_descriptor(name, help, None, count.metric_type())?)?;
        }

        let appends = ConstCounter::new(self.supervisor.journal().appends());
        appends.encode(encoder.encode_descriptor(
            "flotilla_journal_appends",
            "Appends acknowledged by the journal since the service started",
            None,
            appends.metric_type(),
        )?)?;

        let mut events = encoder.encode_descriptor(
            "flotilla_journal_events",
            "Records appended to the journal since the service started, by event type",
            None,
            MetricType::Counter,
        )?;
        for (event_type, count) in self.events.all() {
            let labels = [("type", event_type.as_str())];
            ConstCounter::new(count).encode(events.encode_family(&labels)?)?;
        }

        let checkpoint =
            ConstGauge::new(self.recovery.checkpoint_seq.load(Ordering::Relaxed) as i64);
        checkpoint.encode(encoder.encode_descriptor(
            "flotilla_checkpoint_seq",
            "Sequence number of the latest checkpoint of the index and the alarms",
            None,
            checkpoint.metric_type(),
        )?)?;
        let replayed =
            ConstGauge::new(self.recovery.replayed_at_start.load(Ordering::Relaxed) as i64);
        replayed.encode(encoder.encode_descriptor(
            "flotilla_start_replayed_records",
            "Records the last start replayed after its checkpoint",
            None,
            replayed.metric_type(),
        )?)?;

        let idle = ConstGauge::new(self.converger.idle() as i64);
        idle.encode(encoder.encode_descriptor(
            "flotilla_converger_idle_groups",
            "Groups the converger skips until they change (no servers, a target of 0)",
            None,
            idle.metric_type(),
        )?)?;

        let resident = ConstGauge::new(self.supervisor.resident() as i64);
        resident.encode(encoder.encode_descriptor(
            "flotilla_actors_resident",
            "Object actors in memory",
            None,
            resident.metric_type(),
        )?)?;

        let mut objects = encoder.encode_descriptor(
            "flotilla_objects",
            "Live objects, by kind",
            None,
            MetricType::Gauge,
        )?;
        for (kind, count) in self.index.counts() {
            let labels = [("kind", kind)];
            ConstGauge::new(count as i64).encode(objects.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Telemetry {
    /// Records the answer to `request`: its route's counter and latency, and the error's code
    /// when it is an error. Called by the middleware that wraps the app (see `service::start`).
    ///
    /// The code is read from the error the answer carries (actix-web keeps it on the response),
    /// so every error of the API is counted here, once, whichever handler or extractor raised it.
    pub fn answered<B>(
        &self,
        request: &HttpRequest,
        response: &HttpResponse<B>,
        elapsed: Duration,
    ) {
        let status = response.status();
        let route = request
            .match_pattern()
            .unwrap_or_else(|| UNMATCHED.to_owned());
        self.request(request.method().as_str(), route, status.as_u16(), elapsed);
        if let Some(error) = response.error() {
            match error.as_error::<ApiError>() {
                Some(api) => self.rejection(api.code_label()),
                None => self.rejection(format!("http_{}", status_label(status.as_u16())).into()),
            }
        }
    }
}
