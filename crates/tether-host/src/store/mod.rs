//! Where client instances and the audit log live: one trait, with SQLite
//! behind it today and room for PostgreSQL (clusters) later.

use std::collections::BTreeMap;

use serde::Serialize;

mod instance_row;
pub mod outbox;
pub mod postgres;
mod postgres_outbox;
pub mod secrets;
mod sqlite;
mod sqlite_events;
mod sqlite_outbox;
mod sqlite_secrets;
pub use postgres::PgStore;
pub use secrets::{SecretError, SecretKey, Secrets};
pub use sqlite::SqliteStore;

/// A stored client instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Unique key.
    pub key: String,
    /// The client type's name.
    pub type_name: String,
    /// Made from a predefined type.
    pub predefined: bool,
    /// Server URL.
    pub url: String,
    /// Basic-auth user.
    pub user: Option<String>,
    /// Basic-auth password. Write-only: never leaves the host.
    pub password: Option<String>,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Connect timeout in seconds.
    pub timeout_secs: u64,
    /// Connect at start and reconnect.
    pub auto_connect: bool,
    /// Honour the proxy environment variables.
    pub use_env_proxy: bool,
    /// Settings for the module that override the type's (a JSON object).
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_ms: i64,
    /// Bumped by every change; the API's ETag.
    pub version: i64,
}

/// One event from the log: its sequence number, client and JSON.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoggedEvent {
    /// Sequence number, gap-free in the order events were logged.
    pub seq: i64,
    /// The client.
    pub client: String,
    /// The event as JSON (without its `seq`).
    #[sqlx(rename = "event")]
    pub json: String,
}

/// A webhook batch given up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct DeadBatch {
    /// Its number.
    pub id: i64,
    /// The webhook.
    pub webhook: String,
    /// The first event's sequence number.
    pub from_seq: i64,
    /// The last event's sequence number.
    pub to_seq: i64,
    /// Events in it.
    pub events: i64,
    /// Attempts made.
    pub attempts: i64,
    /// Why it failed last.
    pub last_error: String,
    /// When it was given up on, Unix milliseconds.
    pub at_ms: i64,
}

/// The audit row written in the same transaction as a change.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Who: `api`, `cli`, `host` (start-up), …
    pub actor: &'a str,
    /// What: `create`, `update`, `delete`.
    pub action: &'a str,
    /// The change, secrets redacted.
    pub detail: serde_json::Value,
}

/// One audit log entry. `detail` never holds secrets.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who: `api`, `cli`, `host` (start-up), …
    pub actor: String,
    /// What: `create`, `update`, `delete`, `connect`, `disconnect`, `orphaned`.
    pub action: String,
    /// Which instance.
    pub key: String,
    /// The change, secrets redacted.
    pub detail: serde_json::Value,
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An instance with this key exists already.
    #[error("an instance with key {0:?} already exists")]
    Duplicate(String),
    /// No instance with this key.
    #[error("no instance with key {0:?}")]
    NotFound(String),
    /// The instance changed since the version the caller read.
    #[error("instance {key:?} is at version {current}, not {expected}: it was changed meanwhile; read it again and reapply your change")]
    Conflict {
        /// The key.
        key: String,
        /// The version the caller expected.
        expected: i64,
        /// The version stored.
        current: i64,
    },
    /// A secret could not be sealed or opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The database failed.
    #[error("{context}: {source}")]
    Database {
        /// What the store was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A stored value is not what the schema says.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(source: sqlx::Error) -> Self {
        StoreError::Database {
            context: "the store failed".into(),
            source,
        }
    }
}

/// Persistence for instances, the audit log and host settings.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Every instance, ordered by key.
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError>;
    /// One instance.
    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError>;
    /// Adds an instance (at version 1) and its audit row, in one
    /// transaction; [`StoreError::Duplicate`] when the key is taken.
    async fn insert(&self, record: &InstanceRecord, change: Change<'_>) -> Result<(), StoreError>;
    /// Replaces an instance and writes its audit row, in one transaction;
    /// returns the new version. With `expected`, the stored version must be
    /// that one ([`StoreError::Conflict`] otherwise).
    async fn update(
        &self,
        record: &InstanceRecord,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<i64, StoreError>;
    /// Removes an instance and writes its audit row, in one transaction.
    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<(), StoreError>;
    /// Appends to the audit log.
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        key: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// A host setting.
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets a host setting.
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// One group commit of the outbox writer, in one transaction: stores
    /// the appends in order (one result each), marks the delivered messages
    /// done, and marks done the in-flight messages the acks name.
    async fn outbox_commit(
        &self,
        commit: outbox::OutboxCommit<'_>,
    ) -> Result<Vec<outbox::Appended>, StoreError>;
    /// Stores outbox messages in one transaction, in order; one result each.
    async fn outbox_append(
        &self,
        batch: &[outbox::NewOutboxMessage],
    ) -> Result<Vec<outbox::Appended>, StoreError> {
        self.outbox_commit(outbox::OutboxCommit {
            appends: batch,
            ..Default::default()
        })
        .await
    }
    /// How many of a client's messages are in flight (sent, not acked).
    async fn outbox_in_flight(&self, client: &str) -> Result<u64, StoreError>;
    /// The oldest pending messages of a client, in delivery order.
    async fn outbox_pending(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<outbox::OutboxMessage>, StoreError>;
    /// Moves messages to `status` (in flight, or back to pending after a
    /// failed attempt, counts an attempt).
    async fn outbox_mark(
        &self,
        seqs: &[i64],
        status: outbox::OutboxStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Puts a client's in-flight messages back to pending (after a lost
    /// link or a restart); returns how many.
    async fn outbox_requeue(&self, client: &str) -> Result<u64, StoreError>;
    /// A client's messages, optionally of one status, in order.
    async fn outbox_list(
        &self,
        client: &str,
        status: Option<outbox::OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<outbox::OutboxMessage>, StoreError>;
    /// A client's outbox in numbers.
    async fn outbox_stats(&self, client: &str) -> Result<outbox::OutboxStats, StoreError>;
    /// Every client's outbox in numbers (clients with messages only).
    async fn outbox_stats_all(
        &self,
    ) -> Result<std::collections::HashMap<String, outbox::OutboxStats>, StoreError>;
    /// Dead and expired messages (or one of them) back to pending.
    async fn outbox_retry(&self, client: &str, seq: Option<i64>) -> Result<u64, StoreError>;
    /// Deletes done messages (of every client) done before `before_ms`;
    /// returns how many.
    async fn outbox_prune_done(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Deletes a client's messages that are not in flight (optionally of
    /// one status).
    async fn outbox_purge(
        &self,
        client: &str,
        status: Option<outbox::OutboxStatus>,
    ) -> Result<u64, StoreError>;
    /// Appends events `(client, at_ms, json)` in one transaction; returns
    /// their sequence numbers, in order.
    async fn events_append(&self, batch: &[(String, i64, String)]) -> Result<Vec<i64>, StoreError>;
    /// Up to `limit` events after `after`, optionally of one client.
    async fn events_after(
        &self,
        after: i64,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError>;
    /// The oldest and newest sequence numbers kept (oldest = newest + 1 when
    /// none are).
    async fn events_bounds(&self) -> Result<(i64, i64), StoreError>;
    /// Deletes events beyond the newest `keep`, and those logged before
    /// `before_ms`; returns how many.
    async fn events_trim(&self, keep: u64, before_ms: i64) -> Result<u64, StoreError>;
    /// Records a dead webhook batch.
    async fn webhook_dead_add(&self, batch: &DeadBatch) -> Result<(), StoreError>;
    /// A webhook's dead batches, newest first.
    async fn webhook_dead_list(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeadBatch>, StoreError>;
    /// Writes everything out and closes (the SQLite store checkpoints its
    /// write-ahead log).
    async fn close(&self);
}

/// Opens the store a URL names: SQLite (`sqlite://PATH`, `sqlite::memory:`)
/// or PostgreSQL (`postgres://…`).
pub async fn open(url: &str, secrets: Secrets) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if is_postgres(url) {
        Ok(std::sync::Arc::new(PgStore::open_with(url, secrets).await?))
    } else {
        Ok(std::sync::Arc::new(
            SqliteStore::open_with(url, secrets).await?,
        ))
    }
}

/// Whether a store URL names PostgreSQL.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The Unix milliseconds `age` ago, for "older than" cut-offs; an age
/// longer than the clock's past gives the earliest time, never an overflow.
pub fn ms_ago(age: std::time::Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_762_800_123),
            "2026-11-27T07:00:00.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
