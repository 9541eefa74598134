//! Prometheus metrics: per-client state, traffic, reconnects, errors by
//! kind, round-trip time, outbox depth and age, the event log and webhook
//! lag, and a histogram of handler durations.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::client::ClientState;
use crate::host::Host;

/// Upper bounds of the handler-duration buckets, in seconds.
const BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A fixed-bucket histogram, lock-free.
pub struct Histogram {
    buckets: [AtomicU64; 9],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 9],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// A counter's name, help text, and how to read it from a client's status.
type Counter = (
    &'static str,
    &'static str,
    fn(&crate::client::Status) -> u64,
);

/// How long handler hooks take, host-wide.
pub static HANDLER_DURATION: Histogram = Histogram::new();

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition of the host's metrics.
pub async fn render(host: &Host) -> String {
    let mut out = String::with_capacity(4096);
    let clients = host.list_clients().await.unwrap_or_default();
    let states = [
        ClientState::Closed,
        ClientState::Connecting,
        ClientState::Open,
        ClientState::Closing,
        ClientState::Reconnecting,
        ClientState::Disabled,
        ClientState::Failed,
    ];
    let _ = writeln!(
        out,
        "# HELP tether_client_state Current state of each client (1 for the state it is in)."
    );
    let _ = writeln!(out, "# TYPE tether_client_state gauge");
    for c in &clients {
        for s in states {
            let _ = writeln!(
                out,
                "tether_client_state{{client=\"{}\",type=\"{}\",state=\"{}\"}} {}",
                escape(&c.key),
                escape(c.type_name.as_deref().unwrap_or("")),
                s.as_str(),
                u8::from(c.status.state == s)
            );
        }
    }
    let counters: [Counter; 5] = [
        (
            "tether_messages_received_total",
            "Messages received.",
            |s| s.messages_in,
        ),
        ("tether_messages_sent_total", "Messages sent.", |s| {
            s.messages_out
        }),
        (
            "tether_bytes_received_total",
            "Payload bytes received.",
            |s| s.bytes_in,
        ),
        ("tether_bytes_sent_total", "Payload bytes sent.", |s| {
            s.bytes_out
        }),
        ("tether_reconnects_total", "Reconnect attempts.", |s| {
            s.reconnects
        }),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for c in &clients {
            let _ = writeln!(
                out,
                "{name}{{client=\"{}\"}} {}",
                escape(&c.key),
                get(&c.status)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tether_errors_total Errors by kind.\n# TYPE tether_errors_total counter"
    );
    for c in &clients {
        for (kind, n) in &c.status.errors {
            let _ = writeln!(
                out,
                "tether_errors_total{{client=\"{}\",kind=\"{}\"}} {n}",
                escape(&c.key),
                escape(kind)
            );
        }
    }
    let _ = writeln!(out, "# HELP tether_rtt_seconds Last keepalive round-trip time.\n# TYPE tether_rtt_seconds gauge");
    for c in &clients {
        if let Some(ms) = c.status.rtt_ms {
            let _ = writeln!(
                out,
                "tether_rtt_seconds{{client=\"{}\"}} {}",
                escape(&c.key),
                ms / 1000.0
            );
        }
    }
    outbox_and_log(host, &clients, &mut out).await;
    let h = &HANDLER_DURATION;
    let _ = writeln!(out, "# HELP tether_handler_duration_seconds Time spent in handler hooks.\n# TYPE tether_handler_duration_seconds histogram");
    for (bound, bucket) in BUCKETS.iter().zip(&h.buckets) {
        let _ = writeln!(
            out,
            "tether_handler_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            bucket.load(Ordering::Relaxed)
        );
    }
    let count = h.count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "tether_handler_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "tether_handler_duration_seconds_sum {}",
        h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "tether_handler_duration_seconds_count {count}");
    out
}

/// The outbox of each client, the event log, and each webhook's lag.
async fn outbox_and_log(host: &Host, clients: &[crate::host::ClientView], out: &mut String) {
    let store = host.store();
    let now = crate::store::now_ms();
    let _ = writeln!(
        out,
        "# HELP tether_event_memory_bytes Bytes the host's events hold in memory (histories, live streams, the log queue).\n# TYPE tether_event_memory_bytes gauge\ntether_event_memory_bytes {}",
        host.events().memory_held()
    );
    let _ = writeln!(out, "# HELP tether_outbox_depth Durable messages not yet delivered (pending and in flight).\n# TYPE tether_outbox_depth gauge");
    let mut rows = Vec::new();
    for c in clients {
        if let Ok(stats) = store.outbox_stats(&c.key).await {
            let _ = writeln!(
                out,
                "tether_outbox_depth{{client=\"{}\"}} {}",
                escape(&c.key),
                stats.pending + stats.in_flight
            );
            rows.push((c.key.clone(), stats));
        }
    }
    let _ = writeln!(out, "# HELP tether_outbox_oldest_age_seconds Age of the oldest message not yet delivered.\n# TYPE tether_outbox_oldest_age_seconds gauge");
    for (key, stats) in &rows {
        let age = stats
            .oldest_ms
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        let _ = writeln!(
            out,
            "tether_outbox_oldest_age_seconds{{client=\"{}\"}} {age}",
            escape(key)
        );
    }
    let _ = writeln!(out, "# HELP tether_outbox_messages Durable messages kept, by status (done, expired and dead only grow until purged).\n# TYPE tether_outbox_messages gauge");
    for (key, stats) in &rows {
        for (status, n) in [
            ("pending", stats.pending),
            ("in-flight", stats.in_flight),
            ("done", stats.done),
            ("expired", stats.expired),
            ("dead", stats.dead),
        ] {
            let _ = writeln!(
                out,
                "tether_outbox_messages{{client=\"{}\",status=\"{status}\"}} {n}",
                escape(key)
            );
        }
    }
    let newest = store.events_bounds().await.map_or(0, |(_, n)| n);
    let _ = writeln!(out, "# HELP tether_event_log_sequence The newest event's sequence number.\n# TYPE tether_event_log_sequence gauge\ntether_event_log_sequence {newest}");
    let _ = writeln!(out, "# HELP tether_webhook_lag_events Logged events a webhook has not delivered yet.\n# TYPE tether_webhook_lag_events gauge");
    for w in host.webhooks() {
        let st = w.status();
        let _ = writeln!(
            out,
            "tether_webhook_lag_events{{webhook=\"{}\"}} {}",
            escape(&st.name),
            (newest - st.cursor).max(0)
        );
    }
}
