//! The PostgreSQL store, for several hosts sharing one database: the same
//! contract as the SQLite store (instances, audit log, settings, outbox,
//! event log, dead webhook batches), plus the cluster's tables.

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{FromRow, Postgres, QueryBuilder, Row, Transaction};

use super::instance_row::{check_version, AuditRow, InstanceRow};
use super::secrets::Secrets;
use super::{
    now_ms, AuditEntry, Change, DeadBatch, InstanceRecord, LoggedEvent, Store, StoreError,
};

/// Rows per multi-row statement.
pub(super) const ROWS_PER_STATEMENT: usize = 1000;

/// Instances, audit log, outbox and event log in PostgreSQL.
pub struct PgStore {
    pool: PgPool,
    secrets: Secrets,
    /// In a cluster: this node's id. Outbox status changes (delivered,
    /// in flight, acknowledged, back to pending) then apply only to clients
    /// whose lease this node holds: a node that lost a lease cannot change
    /// what the new owner is doing.
    fence: std::sync::OnceLock<String>,
}

fn database(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Database { context, source }
}

impl PgStore {
    /// Connects to `postgres://…` and migrates the schema.
    pub async fn open_with(url: &str, secrets: Secrets) -> Result<Self, StoreError> {
        let shown = tether::redact(url);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(database(format!("cannot connect to the store {shown}")))?;
        sqlx::migrate!("./migrations_pg")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Corrupt(format!("cannot migrate the store {shown}: {e}")))?;
        let store = PgStore {
            pool,
            secrets,
            fence: std::sync::OnceLock::new(),
        };
        super::secrets::check_key(&store, &store.secrets).await?;
        Ok(store)
    }

    /// Fences outbox status changes with this node's leases (once).
    pub fn fence_with(&self, node_id: &str) {
        let _ = self.fence.set(node_id.to_string());
    }

    pub(super) fn fence(&self) -> Option<&str> {
        self.fence.get().map(String::as_str)
    }

    /// The connection pool (the cluster's leases use it too).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn record(&self, row: &PgRow) -> Result<InstanceRecord, StoreError> {
        InstanceRow::from_row(row)?.open(&self.secrets)
    }

    async fn current_version(
        tx: &mut Transaction<'_, Postgres>,
        key: &str,
    ) -> Result<i64, StoreError> {
        sqlx::query("SELECT version FROM instances WHERE key = $1 FOR UPDATE")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get::<i64, _>("version"))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(key.to_string()))
    }
}

/// Tells the other hosts (at commit) that an instance changed.
async fn announce(tx: &mut Transaction<'_, Postgres>, key: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(INSTANCES_CHANNEL)
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The channel instance changes are announced on (payload: the key).
pub const INSTANCES_CHANNEL: &str = "tether_instances";
/// The channel outbox appends are announced on (payload: the client).
pub const OUTBOX_CHANNEL: &str = "tether_outbox";
/// The channel event log appends are announced on (payload: the last number).
pub const EVENTS_CHANNEL: &str = "tether_events";

async fn audit_in(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
    change: Change<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (at_ms, actor, action, key, detail) VALUES ($1, $2, $3, $4, $5)",
    )
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
impl Store for PgStore {
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.record(r)).collect()
    }

    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| self.record(r)).transpose()
    }

    async fn insert(&self, r: &InstanceRecord, change: Change<'_>) -> Result<(), StoreError> {
        let row = InstanceRow::sealed(r, &self.secrets)?;
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "INSERT INTO instances (key, type_name, predefined, url, \"user\", password, headers, timeout_secs, \
             auto_connect, use_env_proxy, settings, created_ms, updated_ms, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1)",
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
        announce(&mut tx, &r.key).await?;
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
        let mut tx = self.pool.begin().await?;
        let current = Self::current_version(&mut tx, &r.key).await?;
        check_version(&r.key, expected, current)?;
        sqlx::query(
            "UPDATE instances SET type_name = $1, predefined = $2, url = $3, \"user\" = $4, password = $5, headers = $6, \
             timeout_secs = $7, auto_connect = $8, use_env_proxy = $9, settings = $10, updated_ms = $11, version = $12 WHERE key = $13",
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
        announce(&mut tx, &r.key).await?;
        tx.commit().await?;
        Ok(current + 1)
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = Self::current_version(&mut tx, key).await?;
        check_version(key, expected, current)?;
        sqlx::query("DELETE FROM instances WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, key, change).await?;
        announce(&mut tx, key).await?;
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
        let mut tx = self.pool.begin().await?;
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
        let rows = sqlx::query_as::<_, AuditRow>("SELECT * FROM audit ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn outbox_commit(
        &self,
        commit: super::outbox::OutboxCommit<'_>,
    ) -> Result<Vec<super::outbox::Appended>, StoreError> {
        self.outbox_group_commit(commit).await
    }

    async fn outbox_in_flight(&self, client: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE client = $1 AND status = 'in-flight'",
        )
        .bind(client)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn outbox_pending(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<super::outbox::OutboxMessage>, StoreError> {
        self.outbox_read(client, Some(super::outbox::OutboxStatus::Pending), limit)
            .await
    }

    async fn outbox_mark(
        &self,
        seqs: &[i64],
        status: super::outbox::OutboxStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        super::postgres_outbox::mark(&self.pool, seqs, status, error, self.fence()).await
    }

    async fn outbox_requeue(&self, client: &str) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE outbox SET status = 'pending' WHERE client = $1 AND status = 'in-flight' AND {}",
            super::postgres_outbox::FENCE.replace("$F", "$2")
        );
        let done = sqlx::query(&sql)
            .bind(client)
            .bind(self.fence())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn outbox_list(
        &self,
        client: &str,
        status: Option<super::outbox::OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<super::outbox::OutboxMessage>, StoreError> {
        self.outbox_read(client, status, limit).await
    }

    async fn outbox_stats(&self, client: &str) -> Result<super::outbox::OutboxStats, StoreError> {
        Ok(self
            .outbox_counts(Some(client))
            .await?
            .remove(client)
            .unwrap_or_default())
    }

    async fn outbox_stats_all(
        &self,
    ) -> Result<std::collections::HashMap<String, super::outbox::OutboxStats>, StoreError> {
        self.outbox_counts(None).await
    }

    async fn outbox_retry(&self, client: &str, seq: Option<i64>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, last_error = NULL, expires_ms = NULL \
             WHERE client = $1 AND status IN ('dead', 'expired') AND ($2::BIGINT IS NULL OR seq = $2)",
        )
        .bind(client)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn outbox_prune_done(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM outbox WHERE status = 'done' AND done_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn outbox_purge(
        &self,
        client: &str,
        status: Option<super::outbox::OutboxStatus>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE client = $1 AND ($2::TEXT IS NULL OR status = $2) AND status != 'in-flight'",
        )
        .bind(client)
        .bind(status.map(super::outbox::OutboxStatus::as_str))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn events_append(&self, batch: &[(String, i64, String)]) -> Result<Vec<i64>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        // The counter row stays locked until this transaction commits: the
        // numbers are gap-free and in commit order across hosts.
        let last: i64 =
            sqlx::query_scalar("UPDATE event_seq SET last = last + $1 WHERE id = 1 RETURNING last")
                .bind(batch.len() as i64)
                .fetch_one(&mut *tx)
                .await?;
        let first = last - batch.len() as i64 + 1;
        for (c, chunk) in batch.chunks(ROWS_PER_STATEMENT).enumerate() {
            let base = first + (c * ROWS_PER_STATEMENT) as i64;
            let mut q: QueryBuilder<Postgres> =
                QueryBuilder::new("INSERT INTO events (seq, client, at_ms, event) ");
            q.push_values(
                chunk.iter().enumerate(),
                |mut row, (i, (client, at_ms, event))| {
                    row.push_bind(base + i as i64)
                        .push_bind(client)
                        .push_bind(at_ms)
                        .push_bind(event);
                },
            );
            q.build().execute(&mut *tx).await?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(last.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((first..=last).collect())
    }

    async fn events_after(
        &self,
        after: i64,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(sqlx::query_as::<_, LoggedEvent>(
            "SELECT seq, client, event FROM events WHERE seq > $1 AND ($2::TEXT IS NULL OR client = $2) ORDER BY seq LIMIT $3",
        )
        .bind(after)
        .bind(client)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn events_bounds(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(seq) FROM events) AS lo, (SELECT last FROM event_seq WHERE id = 1) AS hi",
        )
        .fetch_one(&self.pool)
        .await?;
        let hi: i64 = row.try_get("hi")?;
        let lo: Option<i64> = row.try_get("lo")?;
        Ok((lo.unwrap_or(hi + 1), hi))
    }

    async fn events_trim(&self, keep: u64, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM events WHERE seq <= (SELECT last FROM event_seq WHERE id = 1) - $1 OR at_ms < $2",
        )
        .bind(keep.min(i64::MAX as u64) as i64)
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn webhook_dead_add(&self, b: &DeadBatch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_dead (webhook, from_seq, to_seq, events, attempts, last_error, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&b.webhook)
        .bind(b.from_seq)
        .bind(b.to_seq)
        .bind(b.events)
        .bind(b.attempts)
        .bind(&b.last_error)
        .bind(b.at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn webhook_dead_list(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeadBatch>, StoreError> {
        Ok(sqlx::query_as::<_, DeadBatch>(
            "SELECT * FROM webhook_dead WHERE webhook = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
