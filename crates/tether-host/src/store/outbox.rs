//! The durable outbox's records: what the store keeps for each message a
//! caller asked to be delivered, and the limits it enforces on the way in.

use serde::Serialize;

/// Where a message is on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxStatus {
    /// Stored, not yet written to a connection (after a failed attempt too).
    Pending,
    /// Sent and waiting for the server's acknowledgement (ack mode). Sent
    /// again after a reconnect or a restart.
    InFlight,
    /// Written (or acknowledged).
    Done,
    /// Its time to live ran out before it could be sent.
    Expired,
    /// Given up on: too many attempts, or dropped by `drop-oldest`.
    Dead,
}

impl OutboxStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::InFlight => "in-flight",
            OutboxStatus::Done => "done",
            OutboxStatus::Expired => "expired",
            OutboxStatus::Dead => "dead",
        }
    }

    /// The status named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => OutboxStatus::Pending,
            "in-flight" => OutboxStatus::InFlight,
            "done" => OutboxStatus::Done,
            "expired" => OutboxStatus::Expired,
            "dead" => OutboxStatus::Dead,
            _ => return None,
        })
    }
}

/// What to do when a client's outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Refuse the new message (the API answers 429).
    #[default]
    Reject,
    /// Make room by giving up on the oldest pending message (it becomes dead).
    DropOldest,
}

/// A client's outbox limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages not yet done (pending and in flight).
    pub max_messages: u64,
    /// Their payload bytes.
    pub max_bytes: u64,
    /// What happens past either limit.
    pub when_full: FullPolicy,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_messages: 100_000,
            max_bytes: 256 << 20,
            when_full: FullPolicy::Reject,
        }
    }
}

/// One group commit of the outbox writer.
#[derive(Debug, Default, Clone, Copy)]
pub struct OutboxCommit<'a> {
    /// Messages to store, in order.
    pub appends: &'a [NewOutboxMessage],
    /// Delivered messages (by sequence number) now done.
    pub done: &'a [i64],
    /// Acknowledgements of in-flight messages.
    pub acks: &'a [OutboxAck],
}

/// An acknowledgement of an in-flight message of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxAck {
    /// The client.
    pub client: String,
    /// What the ack names.
    pub id: AckId,
}

/// What an acknowledgement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckId {
    /// The message id (a JSON-RPC id, a STOMP receipt).
    Message(String),
    /// An MQTT packet id, which the outbox derived from the sequence number
    /// (`brokers::framing::mqtt_packet_id`).
    Packet(u16),
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewOutboxMessage {
    /// The client it is for.
    pub client: String,
    /// The idempotency key: the same id twice is stored once.
    pub msg_id: String,
    /// The caller chose the id (else it is a fresh UUID, never stored before).
    pub caller_id: bool,
    /// Binary (else text).
    pub binary: bool,
    /// The payload.
    pub payload: Vec<u8>,
    /// Unix milliseconds after which it is not sent.
    pub expires_ms: Option<i64>,
    /// The client's limits.
    pub limits: OutboxLimits,
}

/// What storing one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored with this sequence number.
    Stored {
        /// Its sequence number.
        seq: i64,
    },
    /// A message with this id was stored before, with this number.
    Duplicate {
        /// The earlier message's sequence number.
        seq: i64,
    },
    /// The outbox is full and its policy is `reject`.
    Full {
        /// Messages not yet done.
        messages: u64,
        /// Their bytes.
        bytes: u64,
    },
}

/// A stored message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxMessage {
    /// Sequence number (delivery order).
    pub seq: i64,
    /// The client.
    pub client: String,
    /// The idempotency key.
    pub id: String,
    /// `text` or `binary`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The payload.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// Payload bytes.
    pub bytes: usize,
    /// Where it is.
    pub status: OutboxStatus,
    /// Times handed to a connection.
    pub attempts: u32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it was stored, Unix milliseconds.
    pub created_ms: i64,
    /// When it expires, Unix milliseconds.
    pub expires_ms: Option<i64>,
}

impl OutboxMessage {
    /// The message to send.
    pub fn message(&self) -> tether::Message {
        if self.kind == "binary" {
            tether::Message::Binary(self.payload.clone())
        } else {
            tether::Message::Text(String::from_utf8_lossy(&self.payload).into_owned())
        }
    }
}

/// A client's outbox in numbers.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct OutboxStats {
    /// Pending messages.
    pub pending: u64,
    /// In-flight messages.
    pub in_flight: u64,
    /// Done messages still kept.
    pub done: u64,
    /// Expired messages.
    pub expired: u64,
    /// Dead messages.
    pub dead: u64,
    /// When the oldest message not yet done was stored, Unix milliseconds.
    pub oldest_ms: Option<i64>,
}

/// An `outbox` row as both stores read it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OutboxRow {
    seq: i64,
    client: String,
    msg_id: String,
    is_binary: bool,
    payload: Vec<u8>,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    created_ms: i64,
    expires_ms: Option<i64>,
}

impl OutboxRow {
    pub(super) fn message(self) -> Result<OutboxMessage, super::StoreError> {
        Ok(OutboxMessage {
            status: OutboxStatus::parse(&self.status).ok_or_else(|| {
                super::StoreError::Corrupt(format!("outbox status {:?}", self.status))
            })?,
            seq: self.seq,
            client: self.client,
            id: self.msg_id,
            kind: if self.is_binary { "binary" } else { "text" },
            bytes: self.payload.len(),
            payload: self.payload,
            attempts: self.attempts.clamp(0, i64::from(u32::MAX)) as u32,
            last_error: self.last_error,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        })
    }
}

/// One `(client, status)` group of the outbox, as both stores count it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct StatusCount {
    client: String,
    status: String,
    n: i64,
    oldest: Option<i64>,
}

/// Each client's numbers from its status groups.
pub(super) fn stats_by_client(
    groups: Vec<StatusCount>,
) -> std::collections::HashMap<String, OutboxStats> {
    let mut all: std::collections::HashMap<String, OutboxStats> = Default::default();
    for g in groups {
        let stats = all.entry(g.client).or_default();
        let n = g.n.max(0) as u64;
        match OutboxStatus::parse(&g.status) {
            Some(OutboxStatus::Pending) => stats.pending = n,
            Some(OutboxStatus::InFlight) => stats.in_flight = n,
            Some(OutboxStatus::Done) => stats.done = n,
            Some(OutboxStatus::Expired) => stats.expired = n,
            Some(OutboxStatus::Dead) => stats.dead = n,
            None => {}
        }
        if matches!(g.status.as_str(), "pending" | "in-flight") {
            stats.oldest_ms = match (stats.oldest_ms, g.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    all
}
