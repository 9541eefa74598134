//! Live events in a cluster: every node's subscribers see every node's
//! events, in the shared log's order. The log writer keeps its own events
//! aside instead of broadcasting them; one tailer per node reads the log
//! after the last number it broadcast, whenever this node appended or
//! another node said it did, and broadcasts each event in turn (its own
//! from memory, the others' rebuilt from their JSON).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, Notify};

use super::{HostEvent, Serialized};
use crate::store::{LoggedEvent, Store};

/// Events read from the log per round.
const READ: u32 = 1000;
/// Own events kept for the tailer.
const KEEP: usize = 16_384;

/// What the log writer and the tailer share.
#[derive(Default)]
pub struct SharedLog {
    /// This node's logged events not yet broadcast, by number (at most
    /// [`KEEP`]; past it the oldest are rebuilt from the log instead).
    own: Mutex<BTreeMap<i64, Arc<HostEvent>>>,
    /// New events in the log (from this node or another).
    pub appended: Notify,
}

impl SharedLog {
    /// Keeps a logged event of this node until the tailer reaches it.
    pub(super) fn keep(&self, seq: i64, event: Arc<HostEvent>) {
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.insert(seq, event);
        if own.len() > KEEP {
            own.pop_first();
        }
    }

    fn take(&self, seq: i64) -> Option<Arc<HostEvent>> {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq)
    }
}

/// An event another node logged, as this node's subscribers get it.
fn rebuilt(row: LoggedEvent) -> Option<HostEvent> {
    let Value::Object(mut fields) = serde_json::from_str::<Value>(&row.json).ok()? else {
        return None;
    };
    let dynamic = fields
        .remove("dynamic")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let at = match fields.remove("at") {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    fields.remove("client");
    let event = HostEvent {
        client: row.client,
        dynamic,
        at,
        body: Value::Object(fields),
        seq: Default::default(),
        held: None,
        json: Serialized::default(),
    };
    event.seq.set(row.seq);
    let _ = event.json.0.set(row.json);
    Some(event)
}

/// Broadcasts the log from its end at start, in order, for as long as the
/// bus lives.
pub(super) async fn tail(
    store: Arc<dyn Store>,
    shared: Arc<SharedLog>,
    tx: broadcast::WeakSender<Arc<HostEvent>>,
) {
    let mut last = loop {
        match store.events_bounds().await {
            Ok((_, newest)) => break newest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event log's end; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        // A missed wake-up costs at most this long.
        let _ = tokio::time::timeout(Duration::from_millis(500), shared.appended.notified()).await;
        let Some(tx) = tx.upgrade() else { return };
        loop {
            let rows = match store.events_after(last, None, READ).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the shared event log");
                    break;
                }
            };
            let n = rows.len();
            for row in rows {
                last = row.seq;
                let event = match shared.take(row.seq) {
                    Some(own) => own,
                    None => match rebuilt(row) {
                        Some(e) => Arc::new(e),
                        None => continue,
                    },
                };
                let _ = tx.send(event);
            }
            if n < READ as usize {
                break;
            }
        }
    }
}
