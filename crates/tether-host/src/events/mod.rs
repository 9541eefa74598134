//! The host's event stream: every client's open, message, error, close,
//! state change and module emit, as JSON, to SSE subscribers and the
//! per-client history.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::store::Store;

mod log_page;
mod memory;
mod shared;
pub use log_page::{gone_after, read_after, LogPage};
pub use memory::{Budget, EventMemory, Held};
pub use shared::SharedLog;

/// How many events each client keeps for late viewers (fewer when their
/// bytes pass `history_bytes_per_client`).
pub const HISTORY: usize = 200;

/// A client's recent events, bounded in count and in bytes.
#[derive(Debug, Default)]
pub struct History {
    events: VecDeque<Arc<HostEvent>>,
    bytes: usize,
}

impl History {
    fn push(&mut self, event: Arc<HostEvent>, max_bytes: usize) {
        self.bytes += event.bytes();
        self.events.push_back(event);
        while self.events.len() > HISTORY || self.bytes > max_bytes {
            match self.events.pop_front() {
                Some(old) => self.bytes -= old.bytes(),
                None => break,
            }
        }
    }

    /// The events, oldest first.
    pub fn events(&self) -> Vec<Arc<HostEvent>> {
        self.events.iter().cloned().collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

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
    /// Its number in the event log, set once it is logged (0 until then,
    /// and for an event its type does not log).
    #[serde(skip_serializing_if = "Seq::is_unset")]
    pub seq: Seq,
    /// The bytes it holds of the host's event memory (set when published).
    #[serde(skip)]
    pub held: Option<Arc<Held>>,
    /// Its JSON without `seq`, made once and shared by the log writer and
    /// every stream that sends it (not once per subscriber).
    #[serde(skip)]
    pub json: Serialized,
}

/// An event's JSON, made on first use.
#[derive(Debug, Default, Clone)]
pub struct Serialized(std::sync::OnceLock<String>);

/// What an event's JSON holds: everything but the log number.
#[derive(Serialize)]
struct Bare<'a> {
    client: &'a str,
    dynamic: bool,
    at: &'a str,
    #[serde(flatten)]
    body: &'a Value,
}

impl HostEvent {
    /// The bytes it counts against the event memory.
    pub fn bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.bytes())
    }
}

/// An event's log number, set once by the log writer while the same event
/// already sits in a client's history: one copy of each event, not two.
#[derive(Debug, Default)]
pub struct Seq(std::sync::atomic::AtomicI64);

impl Seq {
    /// The number, if the event was logged.
    pub fn get(&self) -> Option<i64> {
        match self.0.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    fn set(&self, n: i64) {
        self.0.store(n, std::sync::atomic::Ordering::Release);
    }

    fn is_unset(&self) -> bool {
        self.get().is_none()
    }
}

impl Clone for Seq {
    fn clone(&self) -> Self {
        Seq(std::sync::atomic::AtomicI64::new(self.get().unwrap_or(0)))
    }
}

impl Serialize for Seq {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.get().unwrap_or(0))
    }
}

impl HostEvent {
    /// Its JSON without `seq`, serialised on first use only.
    pub fn json(&self) -> &str {
        self.json.0.get_or_init(|| {
            let bare = Bare {
                client: &self.client,
                dynamic: self.dynamic,
                at: &self.at,
                body: &self.body,
            };
            serde_json::to_string(&bare).unwrap_or_default()
        })
    }

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

/// Publishes events: into the durable event log (which numbers them), then
/// to live subscribers, and into a short in-memory history per client.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<HostEvent>>,
    log: Option<mpsc::UnboundedSender<(Arc<HostEvent>, bool)>>,
    memory: EventMemory,
    budget: Arc<Budget>,
}

/// What every event counts besides its data (fields, the Arc, the JSON).
const EVENT_OVERHEAD: usize = 256;

impl EventBus {
    /// A bus without a log: events reach live subscribers only.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            tx: broadcast::channel(capacity.max(16)).0,
            log: None,
            memory: EventMemory::default(),
            budget: Arc::default(),
        }
    }

    /// Sets the memory limits.
    pub fn with_memory(mut self, memory: EventMemory) -> Self {
        self.memory = memory;
        self
    }

    /// The limits.
    pub fn memory(&self) -> EventMemory {
        self.memory
    }

    /// Bytes all events hold now.
    pub fn memory_held(&self) -> usize {
        self.budget.held()
    }

    /// A bus whose events are logged in `store` before they are broadcast,
    /// so that every event a subscriber sees has its sequence number.
    pub fn with_log(capacity: usize, store: Arc<dyn Store>, retention: Retention) -> Self {
        Self::logged(capacity, store, retention, None)
    }

    /// A bus on a log that other hosts append to as well (a cluster): its
    /// subscribers get every host's events, in the log's order. Poke
    /// `shared.appended` when another host says it appended.
    pub fn with_shared_log(
        capacity: usize,
        store: Arc<dyn Store>,
        retention: Retention,
        shared: Arc<SharedLog>,
    ) -> Self {
        Self::logged(capacity, store, retention, Some(shared))
    }

    fn logged(
        capacity: usize,
        store: Arc<dyn Store>,
        retention: Retention,
        shared: Option<Arc<SharedLog>>,
    ) -> Self {
        let tx = broadcast::channel(capacity.max(16)).0;
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        if let Some(shared) = &shared {
            tokio::spawn(shared::tail(store.clone(), shared.clone(), tx.downgrade()));
        }
        // The trimmer ends with the writer, which ends once the bus is gone
        // and what it was given is logged.
        let (writing, ended) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(write_log(
            store.clone(),
            log_rx,
            tx.clone(),
            shared,
            writing,
        ));
        tokio::spawn(trim_log(store, retention, ended));
        EventBus {
            tx,
            log: Some(log_tx),
            memory: EventMemory::default(),
            budget: Arc::default(),
        }
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<HostEvent>> {
        self.tx.subscribe()
    }

    /// Publishes `event` (logged unless `logged` is false), keeping it in
    /// `history` too.
    pub fn publish(&self, history: &std::sync::Mutex<History>, mut event: HostEvent, logged: bool) {
        let size = memory::data_bytes(&event.body) + EVENT_OVERHEAD;
        let held = match self.budget.take(size, self.memory.total) {
            Some(held) => held,
            None => {
                // Over the host's event memory: published without its data.
                event.body = memory::truncated(&event.body, "event_memory_bytes");
                self.budget.take_always(EVENT_OVERHEAD)
            }
        };
        event.held = Some(Arc::new(held));
        let event = Arc::new(event);
        history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone(), self.memory.history_per_client);
        match &self.log {
            // The log writer broadcasts once the event has its number.
            Some(log) => {
                if let Err(mpsc::error::SendError((event, _))) = log.send((event, logged)) {
                    let _ = self.tx.send(event);
                }
            }
            // No subscribers is fine.
            None => {
                let _ = self.tx.send(event);
            }
        }
    }
}

/// How long the event log keeps events.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// The newest this many events are kept.
    pub max_events: u64,
    /// Events older than this are dropped.
    pub max_age: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 1_000_000,
            max_age: std::time::Duration::from_secs(7 * 86_400),
        }
    }
}

/// Most events logged in one transaction.
const LOG_BATCH: usize = 4096;

/// Logs what arrived together in one transaction, then broadcasts it, in
/// order, with sequence numbers.
async fn write_log(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<(Arc<HostEvent>, bool)>,
    tx: broadcast::Sender<Arc<HostEvent>>,
    shared: Option<Arc<SharedLog>>,
    _writing: tokio::sync::oneshot::Sender<()>,
) {
    let mut batch = Vec::with_capacity(LOG_BATCH);
    while rx.recv_many(&mut batch, LOG_BATCH).await > 0 {
        let rows: Vec<(String, i64, String)> = batch
            .iter()
            .filter(|(_, logged)| *logged)
            .map(|(e, _)| {
                (
                    e.client.clone(),
                    crate::store::now_ms(),
                    e.json().to_string(),
                )
            })
            .collect();
        let seqs = if rows.is_empty() {
            Vec::new()
        } else {
            match store.events_append(&rows).await {
                Ok(seqs) => seqs,
                Err(e) => {
                    tracing::error!(error = %e, events = rows.len(), "events not logged; they reach live subscribers without a number");
                    Vec::new()
                }
            }
        };
        let mut seqs = seqs.into_iter();
        for (event, logged) in batch.drain(..) {
            if logged {
                if let Some(seq) = seqs.next() {
                    event.seq.set(seq);
                    // Shared log: the tailer broadcasts it in the log's order.
                    if let Some(shared) = &shared {
                        shared.keep(seq, event);
                        continue;
                    }
                }
            }
            let _ = tx.send(event);
        }
        if let Some(shared) = &shared {
            shared.appended.notify_one();
        }
    }
}

/// Trims the log to its retention now and then, until the writer ends.
async fn trim_log(
    store: Arc<dyn Store>,
    retention: Retention,
    mut writer_ended: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut writer_ended => return,
        }
        let before = crate::store::ms_ago(retention.max_age);
        if let Err(e) = store.events_trim(retention.max_events, before).await {
            tracing::warn!(error = %e, "cannot trim the event log");
        }
    }
}
