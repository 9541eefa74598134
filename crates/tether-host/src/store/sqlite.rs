//! The SQLite store: sqlx, WAL journal, migrations embedded in the binary.
//! Every change to an instance and its audit row share one transaction;
//! secrets are sealed on the way in and opened on the way out.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{FromRow, Row, Sqlite, SqlitePool, Transaction};

use super::instance_row::{check_version, AuditRow, InstanceRow};
use super::secrets::Secrets;
use super::{now_ms, AuditEntry, Change, InstanceRecord, Store, StoreError};

/// Instances and audit log in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers.
    pool: SqlitePool,
    /// The one writer: writes queue here instead of meeting in SQLite's
    /// busy handler, which sleeps for milliseconds.
    pub(super) writer: SqlitePool,
    pub(super) secrets: Secrets,
}

fn database(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Database { context, source }
}

impl SqliteStore {
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Opens (creating when missing) and migrates `sqlite://PATH` or
    /// `sqlite::memory:`, storing secrets in plaintext. For tests and tools;
    /// the host uses [`open_with`](Self::open_with).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Secrets::Plaintext).await
    }

    /// Opens the store with this treatment of secrets. With a key, it checks
    /// that the key is the one the store was sealed with, and seals any
    /// secret still stored in plaintext (a store from before encryption).
    pub async fn open_with(url: &str, secrets: Secrets) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(database(format!("invalid store {url:?}")))?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .busy_timeout(std::time::Duration::from_secs(5))
            // Freed pages are zeroed: a secret sealed after the fact leaves
            // no plaintext copy behind in the file.
            .pragma("secure_delete", "ON");
        // The writer never checkpoints inside a commit (that would put a
        // large copy and a file sync in the path of a durable send).
        // No ping before each use: the database is a file in this process,
        // and a ping is a round trip to the driver's thread on every commit.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await
            .map_err(database(format!("cannot open store {url:?}")))?;
        sqlx::migrate!("./migrations")
            .run(&writer)
            .await
            .map_err(|e| StoreError::Corrupt(format!("cannot migrate store {url:?}: {e}")))?;
        // An in-memory database exists once per connection: one for all.
        let pool = if memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await
                .map_err(database(format!("cannot open store {url:?}")))?
        };
        if !memory {
            // Small, frequent checkpoints between commits keep the log short
            // (a long one slows every read) without one large pause.
            // On a connection of its own: a PASSIVE checkpoint runs beside
            // the writer's commits instead of between them.
            let checkpointer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(database(format!("cannot open store {url:?}")))?;
            let writer_alive = writer.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
                while !writer_alive.is_closed() {
                    tick.tick().await;
                    // PASSIVE: copies what it can without waiting for anyone.
                    let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .execute(&checkpointer)
                        .await;
                }
            });
        }
        let store = SqliteStore {
            pool,
            writer,
            secrets,
        };
        super::secrets::check_key(&store, &store.secrets).await?;
        if let Secrets::Sealed(key) = &store.secrets {
            let sealed = store.reseal(None, key).await?;
            if sealed > 0 {
                tracing::info!(
                    instances = sealed,
                    "sealed secrets that were stored in plaintext"
                );
            }
        }
        Ok(store)
    }

    fn record(&self, row: &SqliteRow) -> Result<InstanceRecord, StoreError> {
        InstanceRow::from_row(row)?.open(&self.secrets)
    }

    async fn current_version(
        tx: &mut Transaction<'_, Sqlite>,
        key: &str,
    ) -> Result<i64, StoreError> {
        sqlx::query("SELECT version FROM instances WHERE key = ?")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get::<i64, _>("version"))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
}

async fn audit_in(
    tx: &mut Transaction<'_, Sqlite>,
    key: &str,
    change: Change<'_>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at_ms, actor, action, key, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(now_ms())
        .bind(change.actor)
        .bind(change.action)
        .bind(key)
        .bind(change.detail.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.record(r)).collect()
    }

    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| self.record(r)).transpose()
    }

    async fn insert(&self, r: &InstanceRecord, change: Change<'_>) -> Result<(), StoreError> {
        let row = InstanceRow::sealed(r, &self.secrets)?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let result = sqlx::query(
            "INSERT INTO instances (key, type_name, predefined, url, user, password, headers, timeout_secs, \
             auto_connect, use_env_proxy, settings, created_ms, updated_ms, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        )
        .bind(row.key)
        .bind(row.type_name)
        .bind(row.predefined)
        .bind(row.url)
        .bind(row.user)
        .bind(row.password)
        .bind(row.headers)
        .bind(row.timeout_secs)
        .bind(row.auto_connect)
        .bind(row.use_env_proxy)
        .bind(row.settings)
        .bind(row.created_ms)
        .bind(row.updated_ms)
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(r.key.clone()))
            }
            Err(e) => return Err(e.into()),
        }
        audit_in(&mut tx, &r.key, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update(
        &self,
        r: &InstanceRecord,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<i64, StoreError> {
        let row = InstanceRow::sealed(r, &self.secrets)?;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current = Self::current_version(&mut tx, &r.key).await?;
        check_version(&r.key, expected, current)?;
        sqlx::query(
            "UPDATE instances SET type_name = ?, predefined = ?, url = ?, user = ?, password = ?, headers = ?, \
             timeout_secs = ?, auto_connect = ?, use_env_proxy = ?, settings = ?, updated_ms = ?, version = ? WHERE key = ?",
        )
        .bind(row.type_name)
        .bind(row.predefined)
        .bind(row.url)
        .bind(row.user)
        .bind(row.password)
        .bind(row.headers)
        .bind(row.timeout_secs)
        .bind(row.auto_connect)
        .bind(row.use_env_proxy)
        .bind(row.settings)
        .bind(row.updated_ms)
        .bind(current + 1)
        .bind(row.key)
        .execute(&mut *tx)
        .await?;
        audit_in(&mut tx, &r.key, change).await?;
        tx.commit().await?;
        Ok(current + 1)
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let current = Self::current_version(&mut tx, key).await?;
        check_version(key, expected, current)?;
        sqlx::query("DELETE FROM instances WHERE key = ?")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, key, change).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        key: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        audit_in(
            &mut tx,
            key,
            Change {
                actor,
                action,
                detail,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query_as::<_, AuditRow>("SELECT * FROM audit ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
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
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn outbox_commit(
        &self,
        commit: super::outbox::OutboxCommit<'_>,
    ) -> Result<Vec<super::outbox::Appended>, StoreError> {
        self.outbox_append_batch(commit).await
    }

    async fn outbox_in_flight(&self, client: &str) -> Result<u64, StoreError> {
        self.outbox_in_flight_count(client).await
    }

    async fn outbox_pending(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<super::outbox::OutboxMessage>, StoreError> {
        self.outbox_pending_for(client, limit).await
    }

    async fn outbox_mark(
        &self,
        seqs: &[i64],
        status: super::outbox::OutboxStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.outbox_mark_many(seqs, status, error).await
    }

    async fn outbox_requeue(&self, client: &str) -> Result<u64, StoreError> {
        self.outbox_requeue_client(client).await
    }

    async fn outbox_list(
        &self,
        client: &str,
        status: Option<super::outbox::OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<super::outbox::OutboxMessage>, StoreError> {
        self.outbox_messages(client, status, limit).await
    }

    async fn outbox_stats(&self, client: &str) -> Result<super::outbox::OutboxStats, StoreError> {
        self.outbox_stats_for(client).await
    }

    async fn outbox_stats_all(
        &self,
    ) -> Result<std::collections::HashMap<String, super::outbox::OutboxStats>, StoreError> {
        self.outbox_stats_every().await
    }

    async fn outbox_retry(&self, client: &str, seq: Option<i64>) -> Result<u64, StoreError> {
        self.outbox_retry_dead(client, seq).await
    }

    async fn outbox_prune_done(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.outbox_prune(before_ms).await
    }

    async fn outbox_purge(
        &self,
        client: &str,
        status: Option<super::outbox::OutboxStatus>,
    ) -> Result<u64, StoreError> {
        self.outbox_purge_client(client, status).await
    }

    async fn events_append(&self, batch: &[(String, i64, String)]) -> Result<Vec<i64>, StoreError> {
        self.events_append_batch(batch).await
    }

    async fn events_after(
        &self,
        after: i64,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<super::LoggedEvent>, StoreError> {
        self.events_read(after, client, limit).await
    }

    async fn events_bounds(&self) -> Result<(i64, i64), StoreError> {
        self.events_range().await
    }

    async fn events_trim(&self, keep: u64, before_ms: i64) -> Result<u64, StoreError> {
        self.events_trim_to(keep, before_ms).await
    }

    async fn webhook_dead_add(&self, batch: &super::DeadBatch) -> Result<(), StoreError> {
        self.dead_add(batch).await
    }

    async fn webhook_dead_list(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<super::DeadBatch>, StoreError> {
        self.dead_list(webhook, limit).await
    }

    async fn close(&self) {
        self.pool.close().await;
        let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await;
        self.writer.close().await;
    }
}
