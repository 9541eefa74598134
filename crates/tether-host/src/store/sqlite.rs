//! The SQLite store: sqlx, WAL journal, migrations embedded in the binary.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlitePool};

use super::{now_ms, AuditEntry, InstanceRecord, Store, StoreError};

/// Instances and audit log in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates `sqlite://PATH` or
    /// `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid store {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .busy_timeout(std::time::Duration::from_secs(5));
        // One connection for an in-memory database: each would be a new one.
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Database(format!("cannot open store {url:?}: {e}")))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("cannot migrate store {url:?}: {e}")))?;
        Ok(SqliteStore { pool })
    }
}

fn record(row: &SqliteRow) -> Result<InstanceRecord, StoreError> {
    let headers: String = row.try_get("headers")?;
    Ok(InstanceRecord {
        key: row.try_get("key")?,
        type_name: row.try_get("type_name")?,
        predefined: row.try_get("predefined")?,
        url: row.try_get("url")?,
        user: row.try_get("user")?,
        password: row.try_get("password")?,
        headers: serde_json::from_str(&headers)
            .map_err(|e| StoreError::Database(format!("bad headers column: {e}")))?,
        timeout_secs: row.try_get::<i64, _>("timeout_secs")?.max(0) as u64,
        auto_connect: row.try_get("auto_connect")?,
        use_env_proxy: row.try_get("use_env_proxy")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn headers_json(r: &InstanceRecord) -> String {
    serde_json::to_string(&r.headers).unwrap_or_else(|_| "{}".into())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn insert(&self, r: &InstanceRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO instances (key, type_name, predefined, url, user, password, headers, timeout_secs, \
             auto_connect, use_env_proxy, created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.key)
        .bind(&r.type_name)
        .bind(r.predefined)
        .bind(&r.url)
        .bind(&r.user)
        .bind(&r.password)
        .bind(headers_json(r))
        .bind(r.timeout_secs as i64)
        .bind(r.auto_connect)
        .bind(r.use_env_proxy)
        .bind(r.created_ms)
        .bind(r.updated_ms)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Duplicate(r.key.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn update(&self, r: &InstanceRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE instances SET type_name = ?, predefined = ?, url = ?, user = ?, password = ?, headers = ?, \
             timeout_secs = ?, auto_connect = ?, use_env_proxy = ?, updated_ms = ? WHERE key = ?",
        )
        .bind(&r.type_name)
        .bind(r.predefined)
        .bind(&r.url)
        .bind(&r.user)
        .bind(&r.password)
        .bind(headers_json(r))
        .bind(r.timeout_secs as i64)
        .bind(r.auto_connect)
        .bind(r.use_env_proxy)
        .bind(r.updated_ms)
        .bind(&r.key)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM instances WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        key: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (at_ms, actor, action, key, detail) VALUES (?, ?, ?, ?, ?)")
            .bind(now_ms())
            .bind(actor)
            .bind(action)
            .bind(key)
            .bind(detail.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    key: row.try_get("key")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn close(&self) {
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await;
        self.pool.close().await;
    }
}
