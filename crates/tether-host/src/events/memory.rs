//! What the host's events may hold in memory, in bytes.
//!
//! Every event counts its bytes against one budget for the whole host from
//! the moment it is published until its last holder lets it go: the
//! client's history, the live fan-out ring, an SSE stream's queue, the log
//! writer's queue. An event that would pass the budget, or whose data is
//! larger than `data_limit`, is published without its data, marked
//! `"truncated": true` with its `"size"`; the module still got the whole
//! message. Each client's history is bounded in bytes too, so one client
//! cannot keep the budget to itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The limits, from `[host]`.
#[derive(Debug, Clone, Copy)]
pub struct EventMemory {
    /// The largest message data an event carries (`event_data_limit_bytes`).
    pub data_limit: usize,
    /// Bytes of events one client keeps for late viewers
    /// (`history_bytes_per_client`).
    pub history_per_client: usize,
    /// Bytes all events together may hold (`event_memory_bytes`).
    pub total: usize,
}

impl Default for EventMemory {
    fn default() -> Self {
        EventMemory {
            data_limit: 1 << 20,
            history_per_client: 4 << 20,
            total: 256 << 20,
        }
    }
}

/// The host's count of bytes its events hold.
#[derive(Debug, Default)]
pub struct Budget {
    held: AtomicUsize,
}

impl Budget {
    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` whatever the limit (what every event needs at least).
    pub(super) fn take_always(self: &Arc<Self>, bytes: usize) -> Held {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Held {
            bytes,
            budget: self.clone(),
        }
    }

    /// Takes `bytes` if they fit under `limit`.
    pub(super) fn take(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<Held> {
        let mut now = self.held.load(Ordering::Relaxed);
        loop {
            if now.saturating_add(bytes) > limit {
                return None;
            }
            match self.held.compare_exchange_weak(
                now,
                now + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Held {
                        bytes,
                        budget: self.clone(),
                    })
                }
                Err(actual) => now = actual,
            }
        }
    }
}

/// Bytes an event holds; given back when the event is dropped.
#[derive(Debug)]
pub struct Held {
    bytes: usize,
    budget: Arc<Budget>,
}

impl Held {
    /// The bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The bytes of an event body's message data (0 for other events).
pub(super) fn data_bytes(body: &serde_json::Value) -> usize {
    ["data", "base64"]
        .iter()
        .filter_map(|k| body.get(*k))
        .map(value_bytes)
        .sum()
}

/// About the bytes a JSON value holds, counted without serialising it
/// (this runs for every event): strings by length, everything else small.
fn value_bytes(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(value_bytes).sum::<usize>() + 8,
        Value::Object(map) => {
            map.iter()
                .map(|(k, v)| k.len() + value_bytes(v))
                .sum::<usize>()
                + 8
        }
        _ => 8,
    }
}

/// The body without its data: `size` says how large it was.
pub(super) fn truncated(body: &serde_json::Value, why: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(map) = body.as_object() {
        for (k, v) in map {
            if k != "data" && k != "base64" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert("size".into(), data_bytes(body).into());
    out.insert("truncated".into(), why.into());
    serde_json::Value::Object(out)
}
