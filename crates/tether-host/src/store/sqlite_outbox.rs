//! The outbox in SQLite: appends in batches (one transaction and one fsync
//! for many sends), FIFO reads per client, and status changes.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::outbox::{
    Appended, FullPolicy, NewOutboxMessage, OutboxMessage, OutboxStats, OutboxStatus,
};
use super::sqlite::SqliteStore;
use super::{now_ms, StoreError};

fn message(row: &SqliteRow) -> Result<OutboxMessage, StoreError> {
    let status: String = row.try_get("status")?;
    let payload: Vec<u8> = row.try_get("payload")?;
    Ok(OutboxMessage {
        seq: row.try_get("seq")?,
        client: row.try_get("client")?,
        id: row.try_get("msg_id")?,
        kind: if row.try_get::<bool, _>("is_binary")? {
            "binary"
        } else {
            "text"
        },
        bytes: payload.len(),
        payload,
        status: OutboxStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox status {status:?}")))?,
        attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
        last_error: row.try_get("last_error")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
    })
}

const OPEN: &str = "status IN ('pending', 'in-flight')";

impl SqliteStore {
    pub(super) async fn outbox_append_batch(
        &self,
        batch: &[NewOutboxMessage],
    ) -> Result<Vec<Appended>, StoreError> {
        let mut tx = self.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(batch.len());
        let now = now_ms();
        // Messages and bytes not yet done, per client, counted once a batch.
        let mut open: std::collections::HashMap<&str, (u64, u64)> = Default::default();
        for m in batch {
            if let Some(row) = sqlx::query("SELECT seq FROM outbox WHERE client = ? AND msg_id = ?")
                .bind(&m.client)
                .bind(&m.msg_id)
                .fetch_optional(&mut *tx)
                .await?
            {
                out.push(Appended::Duplicate {
                    seq: row.try_get("seq")?,
                });
                continue;
            }
            let (mut n, mut bytes) = match open.get(m.client.as_str()) {
                Some(counts) => *counts,
                None => {
                    let row = sqlx::query(&format!(
                        "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(payload)), 0) AS bytes FROM outbox WHERE client = ? AND {OPEN}"
                    ))
                    .bind(&m.client)
                    .fetch_one(&mut *tx)
                    .await?;
                    (
                        row.try_get::<i64, _>("n")?.max(0) as u64,
                        row.try_get::<i64, _>("bytes")?.max(0) as u64,
                    )
                }
            };
            let size = m.payload.len() as u64;
            let fits = |n: u64, bytes: u64| {
                n < m.limits.max_messages && bytes + size <= m.limits.max_bytes
            };
            if !fits(n, bytes) && m.limits.when_full == FullPolicy::DropOldest {
                // Give up on the oldest pending messages until this one fits.
                let oldest = sqlx::query(
                    "SELECT seq, LENGTH(payload) AS len FROM outbox WHERE client = ? AND status = 'pending' ORDER BY seq",
                )
                .bind(&m.client)
                .fetch_all(&mut *tx)
                .await?;
                for row in oldest {
                    if fits(n, bytes) {
                        break;
                    }
                    sqlx::query("UPDATE outbox SET status = 'dead', last_error = 'dropped: the outbox was full (drop-oldest)' WHERE seq = ?")
                        .bind(row.try_get::<i64, _>("seq")?)
                        .execute(&mut *tx)
                        .await?;
                    n -= 1;
                    bytes -= row.try_get::<i64, _>("len")?.max(0) as u64;
                }
            }
            if !fits(n, bytes) {
                open.insert(&m.client, (n, bytes));
                out.push(Appended::Full { messages: n, bytes });
                continue;
            }
            open.insert(&m.client, (n + 1, bytes + size));
            let seq = sqlx::query(
                "INSERT INTO outbox (client, msg_id, is_binary, payload, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&m.client)
            .bind(&m.msg_id)
            .bind(m.binary)
            .bind(&m.payload)
            .bind(now)
            .bind(m.expires_ms)
            .execute(&mut *tx)
            .await?
            .last_insert_rowid();
            out.push(Appended::Stored { seq });
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn outbox_pending_for(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE client = ? AND status = 'pending' ORDER BY seq LIMIT ?",
        )
        .bind(client)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(message).collect()
    }

    pub(super) async fn outbox_mark_many(
        &self,
        seqs: &[i64],
        status: OutboxStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE outbox SET status = ");
        q.push_bind(status.as_str());
        if status == OutboxStatus::InFlight {
            q.push(", attempts = attempts + 1");
        }
        if status == OutboxStatus::Done {
            q.push(", done_ms = ").push_bind(now_ms());
        }
        if let Some(e) = error {
            q.push(", last_error = ").push_bind(e.to_string());
        }
        q.push(" WHERE seq IN (");
        let mut list = q.separated(", ");
        for s in seqs {
            list.push_bind(*s);
        }
        q.push(")");
        q.build().execute(self.pool()).await?;
        Ok(())
    }

    pub(super) async fn outbox_requeue_client(&self, client: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending' WHERE client = ? AND status = 'in-flight'",
        )
        .bind(client)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn outbox_ack_id(
        &self,
        client: &str,
        msg_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'done', done_ms = ? WHERE client = ? AND msg_id = ? AND status = 'in-flight'",
        )
        .bind(now_ms())
        .bind(client)
        .bind(msg_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn outbox_messages(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE client = ? AND (? IS NULL OR status = ?) ORDER BY seq LIMIT ?",
        )
        .bind(client)
        .bind(status.map(OutboxStatus::as_str))
        .bind(status.map(OutboxStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(message).collect()
    }

    pub(super) async fn outbox_stats_for(&self, client: &str) -> Result<OutboxStats, StoreError> {
        let rows = sqlx::query(
            "SELECT client, status, COUNT(*) AS n, MIN(created_ms) AS oldest FROM outbox WHERE client = ? GROUP BY status",
        )
        .bind(client)
        .fetch_all(self.pool())
        .await?;
        Ok(stats_by_client(&rows)?.remove(client).unwrap_or_default())
    }

    pub(super) async fn outbox_stats_every(
        &self,
    ) -> Result<std::collections::HashMap<String, OutboxStats>, StoreError> {
        let rows = sqlx::query(
            "SELECT client, status, COUNT(*) AS n, MIN(created_ms) AS oldest FROM outbox GROUP BY client, status",
        )
        .fetch_all(self.pool())
        .await?;
        stats_by_client(&rows)
    }

    pub(super) async fn outbox_retry_dead(
        &self,
        client: &str,
        seq: Option<i64>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, last_error = NULL, expires_ms = NULL \
             WHERE client = ? AND status IN ('dead', 'expired') AND (? IS NULL OR seq = ?)",
        )
        .bind(client)
        .bind(seq)
        .bind(seq)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn outbox_purge_client(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM outbox WHERE client = ? AND (? IS NULL OR status = ?) AND status != 'in-flight'",
        )
        .bind(client)
        .bind(status.map(OutboxStatus::as_str))
        .bind(status.map(OutboxStatus::as_str))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}

fn stats_by_client(
    rows: &[SqliteRow],
) -> Result<std::collections::HashMap<String, OutboxStats>, StoreError> {
    let mut all: std::collections::HashMap<String, OutboxStats> = Default::default();
    for row in rows {
        let client: String = row.try_get("client")?;
        let stats = all.entry(client).or_default();
        let status: String = row.try_get("status")?;
        let n = row.try_get::<i64, _>("n")?.max(0) as u64;
        let oldest: Option<i64> = row.try_get("oldest")?;
        match OutboxStatus::parse(&status) {
            Some(OutboxStatus::Pending) => stats.pending = n,
            Some(OutboxStatus::InFlight) => stats.in_flight = n,
            Some(OutboxStatus::Done) => stats.done = n,
            Some(OutboxStatus::Expired) => stats.expired = n,
            Some(OutboxStatus::Dead) => stats.dead = n,
            None => {}
        }
        if matches!(status.as_str(), "pending" | "in-flight") {
            stats.oldest_ms = match (stats.oldest_ms, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    Ok(all)
}
