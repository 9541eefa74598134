//! What the running host reports into: a leaf that imports nothing of the
//! host, so the client workers can report without knowing who renders it.
//! `metrics.rs` reads it when `/metrics` is scraped.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the handler-duration buckets, in seconds.
const HANDLER_BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// How long handler hooks take, host-wide.
pub(crate) static HANDLER_DURATION: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(HANDLER_BUCKETS));

/// A handler hook ran for `d`.
pub(crate) fn handler_ran(d: Duration) {
    HANDLER_DURATION.observe(d.as_secs_f64());
}
