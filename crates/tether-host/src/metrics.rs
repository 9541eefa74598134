//! Prometheus metrics, encoded by `prometheus-client`: per-client state,
//! traffic, reconnects, errors by kind, round-trip time, outbox depth and
//! age, event memory, the event log and webhook lag (read from the host at
//! each scrape), and the handler-duration histogram the workers report into
//! ([`crate::telemetry`]).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::client::ClientState;
use crate::host::{ClientView, Host};
use crate::store::outbox::OutboxStats;

/// What one scrape reads from the host, before encoding.
#[derive(Debug)]
struct Snapshot {
    clients: Vec<ClientView>,
    outbox: Vec<(String, OutboxStats)>,
    event_memory: i64,
    newest_event: i64,
    webhook_lag: Vec<(String, i64)>,
    now_ms: i64,
}

const STATES: [ClientState; 7] = [
    ClientState::Closed,
    ClientState::Connecting,
    ClientState::Open,
    ClientState::Closing,
    ClientState::Reconnecting,
    ClientState::Disabled,
    ClientState::Failed,
];

/// A client's counter: its name (without `_total`), help, and reader.
type ClientCounter = (
    &'static str,
    &'static str,
    fn(&crate::client::Status) -> u64,
);

const COUNTERS: [ClientCounter; 5] = [
    ("tether_messages_received", "Messages received.", |s| {
        s.messages_in
    }),
    ("tether_messages_sent", "Messages sent.", |s| s.messages_out),
    ("tether_bytes_received", "Payload bytes received.", |s| {
        s.bytes_in
    }),
    ("tether_bytes_sent", "Payload bytes sent.", |s| s.bytes_out),
    ("tether_reconnects", "Reconnect attempts.", |s| s.reconnects),
];

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "tether_client_state",
            "Current state of each client (1 for the state it is in).",
            None,
            MetricType::Gauge,
        )?;
        for c in &self.clients {
            let type_name = c.type_name.as_deref().unwrap_or("");
            for s in STATES {
                let labels = [
                    ("client", c.key.as_str()),
                    ("type", type_name),
                    ("state", s.as_str()),
                ];
                let value = i64::from(c.status.state == s);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, get) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in &self.clients {
                let labels = [("client", c.key.as_str())];
                ConstCounter::new(get(&c.status)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "tether_errors",
            "Errors by kind.",
            None,
            MetricType::Counter,
        )?;
        for c in &self.clients {
            for (kind, n) in &c.status.errors {
                let labels = [("client", c.key.as_str()), ("kind", kind.as_str())];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "tether_rtt_seconds",
            "Last keepalive round-trip time.",
            None,
            MetricType::Gauge,
        )?;
        for c in &self.clients {
            if let Some(ms) = c.status.rtt_ms {
                let labels = [("client", c.key.as_str())];
                ConstGauge::new(ms / 1000.0).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_outbox_and_log(&mut encoder)
    }
}

impl Snapshot {
    fn encode_outbox_and_log(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(family)
        };
        gauge(
            encoder,
            "tether_event_memory_bytes",
            "Bytes the host's events hold in memory (histories, live streams, the log queue).",
            self.event_memory,
        )?;
        let mut family = encoder.encode_descriptor(
            "tether_outbox_depth",
            "Durable messages not yet delivered (pending and in flight).",
            None,
            MetricType::Gauge,
        )?;
        for (key, stats) in &self.outbox {
            let depth = stats.pending + stats.in_flight;
            ConstGauge::new(depth).encode(family.encode_family(&[("client", key.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "tether_outbox_oldest_age_seconds",
            "Age of the oldest message not yet delivered.",
            None,
            MetricType::Gauge,
        )?;
        for (key, stats) in &self.outbox {
            let age = stats
                .oldest_ms
                .map_or(0.0, |t| (self.now_ms - t).max(0) as f64 / 1000.0);
            ConstGauge::new(age).encode(family.encode_family(&[("client", key.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "tether_outbox_messages",
            "Durable messages kept, by status (done, expired and dead only grow until purged).",
            None,
            MetricType::Gauge,
        )?;
        for (key, stats) in &self.outbox {
            for (status, n) in [
                ("pending", stats.pending),
                ("in-flight", stats.in_flight),
                ("done", stats.done),
                ("expired", stats.expired),
                ("dead", stats.dead),
            ] {
                let labels = [("client", key.as_str()), ("status", status)];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            encoder,
            "tether_event_log_sequence",
            "The newest event's sequence number.",
            self.newest_event,
        )?;
        let mut family = encoder.encode_descriptor(
            "tether_webhook_lag_events",
            "Logged events a webhook has not delivered yet.",
            None,
            MetricType::Gauge,
        )?;
        for (name, lag) in &self.webhook_lag {
            ConstGauge::new(*lag).encode(family.encode_family(&[("webhook", name.as_str())])?)?;
        }
        Ok(())
    }
}

/// Reads what a scrape shows from the host and the store.
async fn snapshot(host: &Host) -> Snapshot {
    let store = host.store();
    // The list carries each client's outbox counts, from one grouped query
    // (not one query per client: a host may have 10,000).
    let clients = host.list_clients().await.unwrap_or_default();
    let outbox = clients
        .iter()
        .map(|c| (c.key.clone(), c.outbox.clone()))
        .collect();
    let newest_event = store.events_bounds().await.map_or(0, |(_, n)| n);
    let webhook_lag = host
        .webhooks()
        .iter()
        .map(|w| {
            let st = w.status();
            (st.name.clone(), (newest_event - st.cursor).max(0))
        })
        .collect();
    Snapshot {
        clients,
        outbox,
        event_memory: i64::try_from(host.events().memory_held()).unwrap_or(i64::MAX),
        newest_event,
        webhook_lag,
        now_ms: crate::store::now_ms(),
    }
}

/// The OpenMetrics text exposition of the host's metrics.
pub async fn render(host: &Host) -> String {
    let mut registry = Registry::default();
    registry.register(
        "tether_handler_duration_seconds",
        "Time spent in handler hooks.",
        crate::telemetry::HANDLER_DURATION.clone(),
    );
    registry.register_collector(Box::new(snapshot(host).await));
    let mut out = String::with_capacity(4096);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}
