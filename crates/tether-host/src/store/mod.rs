//! Where client instances and the audit log live: one trait, with SQLite
//! behind it today and room for PostgreSQL (clusters) later.

use std::collections::BTreeMap;

use serde::Serialize;

mod sqlite;
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
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_ms: i64,
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
    /// The database failed.
    #[error("store error: {0}")]
    Database(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Persistence for instances, the audit log and host settings.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Every instance, ordered by key.
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError>;
    /// One instance.
    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError>;
    /// Adds an instance; [`StoreError::Duplicate`] when the key is taken.
    async fn insert(&self, record: &InstanceRecord) -> Result<(), StoreError>;
    /// Replaces an instance; false when there is none with that key.
    async fn update(&self, record: &InstanceRecord) -> Result<bool, StoreError>;
    /// Removes an instance; false when there was none.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
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
    /// Writes everything out and closes (the SQLite store checkpoints its
    /// write-ahead log).
    async fn close(&self);
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
