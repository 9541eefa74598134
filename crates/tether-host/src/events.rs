//! The host's event stream: every client's open, message, error, close,
//! state change and module emit, as JSON, to SSE subscribers and the
//! per-client history.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many events each client keeps for late viewers.
pub const HISTORY: usize = 200;

/// One event of one client.
#[derive(Debug, Clone, Serialize)]
pub struct HostEvent {
    /// The client's key.
    pub client: String,
    /// True for a dynamic (not stored) connection.
    pub dynamic: bool,
    /// When, RFC 3339.
    pub at: String,
    /// `{"event": "open" | "message" | "error" | "close" | "state" | "module" | "reconnecting", …}`.
    #[serde(flatten)]
    pub body: Value,
}

impl HostEvent {
    /// The event name (`open`, `message`, …).
    pub fn name(&self) -> &str {
        self.body
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("event")
    }
}

/// Builders for the event bodies, so every producer writes the same shape.
pub mod body {
    use super::*;

    /// `{"event":"state","state":S}`
    pub fn state(state: &str) -> Value {
        json!({"event": "state", "state": state})
    }
    /// `{"event":"open","protocol":P}`
    pub fn open(protocol: Option<&str>) -> Value {
        json!({"event": "open", "protocol": protocol})
    }
    /// `{"event":"message","type":"text","data":…}` or `…"binary","base64":…`
    pub fn message(m: &tether::Message) -> Value {
        match m {
            tether::Message::Text(t) => json!({"event": "message", "type": "text", "data": t}),
            tether::Message::Binary(b) => json!({
                "event": "message", "type": "binary",
                "base64": base64::engine::general_purpose::STANDARD.encode(b),
            }),
        }
    }
    /// `{"event":"error","kind":K,"message":M}`
    pub fn error(kind: &str, message: &str) -> Value {
        json!({"event": "error", "kind": kind, "message": message})
    }
    /// `{"event":"close","code":C,"reason":R}`
    pub fn close(code: u16, reason: &str) -> Value {
        json!({"event": "close", "code": code, "reason": reason})
    }
    /// `{"event":"module","data":V}`
    pub fn module(data: Value) -> Value {
        json!({"event": "module", "data": data})
    }
    /// `{"event":"reconnecting","attempt":N,"delay_ms":D}`
    pub fn reconnecting(attempt: u32, delay_ms: u128) -> Value {
        json!({"event": "reconnecting", "attempt": attempt, "delay_ms": delay_ms as u64})
    }
}

/// Publishes events to live subscribers and keeps a short history per client.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<HostEvent>>,
}

impl EventBus {
    /// A bus whose slow subscribers lose the oldest events past `capacity`.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            tx: broadcast::channel(capacity.max(16)).0,
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HostEvent>> {
        self.tx.subscribe()
    }

    pub(crate) fn publish(
        &self,
        history: &std::sync::Mutex<VecDeque<Arc<HostEvent>>>,
        event: HostEvent,
    ) {
        let event = Arc::new(event);
        {
            let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(event.clone());
        }
        // No subscribers is fine.
        let _ = self.tx.send(event);
    }
}
