//! The durable outbox: a send that is on disk before it is acknowledged to
//! the caller, delivered in order once the client's connection is open and
//! ready, and sent again after a lost link or a restart until it is done.
//!
//! Appends go through one writer task that commits whatever arrived
//! together in one transaction (group commit), so many concurrent sends
//! share one fsync and a 202 still means "on disk". Delivery is at least
//! once: a message written (or, in ack mode, sent but not acknowledged)
//! when the link drops is sent again, so the server may see it twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::store::outbox::{Appended, NewOutboxMessage, OutboxAck, OutboxCommit};
use crate::store::{Store, StoreError};

/// The most sends committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Why a durable send was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboxError {
    /// The client's outbox is full and its policy is `reject`.
    #[error("the outbox of {client:?} is full ({messages} messages, {bytes} bytes not yet delivered); retry later, or raise max_messages/max_bytes in [client_type.outbox]")]
    Full {
        /// The client.
        client: String,
        /// Messages not yet done.
        messages: u64,
        /// Their bytes.
        bytes: u64,
    },
    /// The store failed.
    #[error("the outbox could not be written: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The host is shutting down.
    #[error("the host is shutting down")]
    Closed,
}

impl From<StoreError> for OutboxError {
    fn from(e: StoreError) -> Self {
        OutboxError::Store(Arc::new(e))
    }
}

/// What a stored send came to: its sequence number, and whether the same
/// id was stored before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The message id (the caller's, or a generated UUID).
    pub id: String,
    /// The sequence number.
    pub seq: i64,
    /// The id was already stored; nothing new was added.
    pub duplicate: bool,
}

/// What the writer commits: a durable send, or delivered messages to mark
/// done. Both kinds share a batch's transaction and its one fsync.
enum Write {
    Append {
        message: NewOutboxMessage,
        reply: oneshot::Sender<Result<Appended, Arc<StoreError>>>,
    },
    Done {
        seqs: Vec<i64>,
        reply: oneshot::Sender<Result<(), Arc<StoreError>>>,
    },
    Acked {
        acks: Vec<OutboxAck>,
        reply: oneshot::Sender<Result<(), Arc<StoreError>>>,
    },
}

/// The host's outbox: appends and per-client wake-ups.
pub struct Outbox {
    store: Arc<dyn Store>,
    writes: mpsc::Sender<Write>,
    wake: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Outbox {
    /// Starts the group-commit writer, and the pruning of done messages
    /// older than `keep_done`.
    pub fn start(store: Arc<dyn Store>, keep_done: std::time::Duration) -> Arc<Outbox> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let outbox = Arc::new(Outbox {
            store: store.clone(),
            writes: tx,
            wake: Mutex::new(HashMap::new()),
        });
        tokio::spawn(write_batches(store.clone(), rx, Arc::downgrade(&outbox)));
        tokio::spawn(prune_done(store, keep_done, Arc::downgrade(&outbox)));
        outbox
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What a client's delivery waits on.
    pub fn waker(&self, client: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client.to_string())
            .or_default()
            .clone()
    }

    fn wake(&self, client: &str) {
        if let Some(n) = self
            .wake
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client)
        {
            n.notify_one();
        }
    }

    /// Stores a message; returns once it is committed.
    pub async fn append(&self, message: NewOutboxMessage) -> Result<Stored, OutboxError> {
        let (client, id) = (message.client.clone(), message.msg_id.clone());
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(Write::Append { message, reply })
            .await
            .map_err(|_| OutboxError::Closed)?;
        stored(&client, id, answer.await)
    }

    /// [`append`](Self::append) from a thread that may block (a module hook).
    pub fn append_blocking(&self, message: NewOutboxMessage) -> Result<Stored, OutboxError> {
        let (client, id) = (message.client.clone(), message.msg_id.clone());
        let (reply, answer) = oneshot::channel();
        self.writes
            .blocking_send(Write::Append { message, reply })
            .map_err(|_| OutboxError::Closed)?;
        stored(&client, id, answer.blocking_recv())
    }

    /// Marks delivered messages done, in the next group commit.
    pub async fn mark_done(&self, seqs: Vec<i64>) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.write(Write::Done { seqs, reply }, answer).await
    }

    /// Records acknowledgements of in-flight messages in the next group
    /// commit, without waiting for it: a client's acks arrive one per
    /// message, and waiting for each commit would cap them at one per
    /// fsync. An ack lost to a crash only means a resend (at least once).
    /// The commit wakes the clients' deliveries (their window moved).
    pub async fn ack(&self, acks: Vec<OutboxAck>) -> Result<(), OutboxError> {
        if acks.is_empty() {
            return Ok(());
        }
        let (reply, _) = oneshot::channel();
        self.writes
            .send(Write::Acked { acks, reply })
            .await
            .map_err(|_| OutboxError::Closed)
    }

    async fn write(
        &self,
        write: Write,
        answer: oneshot::Receiver<Result<(), Arc<StoreError>>>,
    ) -> Result<(), OutboxError> {
        self.writes
            .send(write)
            .await
            .map_err(|_| OutboxError::Closed)?;
        answer
            .await
            .map_err(|_| OutboxError::Closed)?
            .map_err(OutboxError::Store)
    }
}

/// The writer's answer as the caller's result.
fn stored(
    client: &str,
    id: String,
    answer: Result<Result<Appended, Arc<StoreError>>, oneshot::error::RecvError>,
) -> Result<Stored, OutboxError> {
    let appended = answer
        .map_err(|_| OutboxError::Closed)?
        .map_err(OutboxError::Store)?;
    match appended {
        Appended::Stored { seq } => Ok(Stored {
            id,
            seq,
            duplicate: false,
        }),
        Appended::Duplicate { seq } => Ok(Stored {
            id,
            seq,
            duplicate: true,
        }),
        Appended::Full { messages, bytes } => Err(OutboxError::Full {
            client: client.to_string(),
            messages,
            bytes,
        }),
    }
}

/// Deletes done messages once they are older than `keep`, now and then,
/// while the outbox exists: a busy client sends millions a day.
async fn prune_done(
    store: Arc<dyn Store>,
    keep: std::time::Duration,
    outbox: std::sync::Weak<Outbox>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
    while outbox.strong_count() > 0 {
        tick.tick().await;
        let before = crate::store::ms_ago(keep);
        if let Err(e) = store.outbox_prune_done(before).await {
            tracing::warn!(error = %e, "cannot prune done outbox messages");
        }
    }
}

/// The group-commit writer: takes what is waiting (up to [`MAX_BATCH`]),
/// commits it in one transaction, answers each caller, wakes the clients.
async fn write_batches(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Write>,
    outbox: std::sync::Weak<Outbox>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Senders answered a moment ago are sending again: let them join
        // this batch rather than pay for a transaction of their own.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (mut messages, mut replies, mut done, mut acks, mut done_replies) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for w in batch.drain(..) {
            match w {
                Write::Append { message, reply } => {
                    messages.push(message);
                    replies.push(reply);
                }
                Write::Done { seqs, reply } => {
                    done.extend(seqs);
                    done_replies.push(reply);
                }
                Write::Acked { acks: a, reply } => {
                    acks.extend(a);
                    done_replies.push(reply);
                }
            }
        }
        let commit = OutboxCommit {
            appends: &messages,
            done: &done,
            acks: &acks,
        };
        match store.outbox_commit(commit).await {
            Ok(results) => {
                let outbox = outbox.upgrade();
                if let Some(o) = &outbox {
                    for a in &acks {
                        o.wake(&a.client);
                    }
                }
                for ((message, reply), result) in messages.iter().zip(replies).zip(results) {
                    if let (Some(o), Appended::Stored { .. }) = (&outbox, &result) {
                        o.wake(&message.client);
                    }
                    let _ = reply.send(Ok(result));
                }
                for reply in done_replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, sends = messages.len(), "outbox batch not stored");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for reply in done_replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Durable sends for one client: what the API and the client's module use.
#[derive(Clone)]
pub struct DurableSender {
    outbox: Arc<Outbox>,
    client: String,
    config: crate::config::OutboxConfig,
    framing: Option<crate::brokers::framing::Framing>,
}

impl DurableSender {
    /// Durable sends to `client` with its type's outbox settings.
    pub fn new(outbox: Arc<Outbox>, client: String, config: crate::config::OutboxConfig) -> Self {
        DurableSender {
            outbox,
            client,
            config,
            framing: None,
        }
    }

    /// Sends to a broker type: its frames, and (MQTT) packet ids set at
    /// delivery.
    pub fn with_framing(mut self, framing: Option<crate::brokers::framing::Framing>) -> Self {
        self.framing = framing;
        self
    }

    /// The broker framing of the client's type, if any.
    pub fn framing(&self) -> Option<crate::brokers::framing::Framing> {
        self.framing
    }

    /// The host's outbox.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The type's outbox settings.
    pub fn config(&self) -> &crate::config::OutboxConfig {
        &self.config
    }

    /// Whether the type makes API sends durable by default.
    pub fn durable_by_default(&self) -> bool {
        self.config.durable
    }

    fn new_message(
        &self,
        message: &tether::Message,
        id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> NewOutboxMessage {
        let (binary, payload) = match message {
            tether::Message::Text(t) => (false, t.as_bytes().to_vec()),
            tether::Message::Binary(b) => (true, b.clone()),
        };
        let ttl = ttl_secs.or(self.config.ttl_secs);
        NewOutboxMessage {
            client: self.client.clone(),
            caller_id: id.is_some(),
            // Time-ordered (UUIDv7): generated ids land at the end of the
            // (client, msg_id) index instead of on a random page each.
            msg_id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            binary,
            payload,
            expires_ms: ttl
                .map(|t| crate::store::now_ms().saturating_add((t.min(1 << 40) * 1000) as i64)),
            limits: self.config.limits(),
        }
    }

    /// Stores a message for delivery; returns once it is on disk.
    pub async fn send(
        &self,
        message: &tether::Message,
        id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<Stored, OutboxError> {
        self.outbox
            .append(self.new_message(message, id, ttl_secs))
            .await
    }

    /// [`send`](Self::send) from a module hook's thread.
    pub fn send_blocking(
        &self,
        message: &tether::Message,
        id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<Stored, OutboxError> {
        self.outbox
            .append_blocking(self.new_message(message, id, ttl_secs))
    }
}
