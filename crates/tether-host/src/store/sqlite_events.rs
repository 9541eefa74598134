//! The event log in SQLite: batched appends that return gap-free sequence
//! numbers, reads after a sequence number, and trimming by count and age.

use sqlx::{QueryBuilder, Row, Sqlite};

/// Rows per multi-row INSERT (three bound values each).
const ROWS_PER_INSERT: usize = 1000;

use super::sqlite::SqliteStore;
use super::{DeadBatch, LoggedEvent, StoreError};

impl SqliteStore {
    pub(super) async fn events_append_batch(
        &self,
        batch: &[(String, i64, String)],
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        let mut seqs = Vec::with_capacity(batch.len());
        // Many rows per statement. Inside this write transaction the
        // AUTOINCREMENT numbers of one statement's rows are consecutive, in
        // VALUES order, ending at last_insert_rowid.
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO events (client, at_ms, event) ");
            q.push_values(chunk, |mut row, (client, at_ms, event)| {
                row.push_bind(client).push_bind(at_ms).push_bind(event);
            });
            let last = q.build().execute(&mut *tx).await?.last_insert_rowid();
            let first = last - chunk.len() as i64 + 1;
            seqs.extend(first..=last);
        }
        tx.commit().await?;
        Ok(seqs)
    }

    pub(super) async fn events_read(
        &self,
        after: i64,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(sqlx::query_as::<_, LoggedEvent>(
            "SELECT seq, client, event FROM events WHERE seq > ? AND (? IS NULL OR client = ?) ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(client)
        .bind(client)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?)
    }

    /// The oldest and newest numbers kept. With nothing kept, the next
    /// event's number tells where the log is: `(next, next - 1)`. One
    /// statement, so one snapshot: read apart, an append committed between
    /// the two reads made an empty log look trimmed past its first event.
    pub(super) async fn events_range(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(seq) FROM events) AS lo, (SELECT MAX(seq) FROM events) AS hi, \
             (SELECT seq FROM sqlite_sequence WHERE name = 'events') AS last",
        )
        .fetch_one(self.pool())
        .await?;
        let lo: Option<i64> = row.try_get("lo")?;
        let hi: Option<i64> = row.try_get("hi")?;
        match (lo, hi) {
            (Some(lo), Some(hi)) => Ok((lo, hi)),
            _ => {
                let last = row.try_get::<Option<i64>, _>("last")?.unwrap_or(0);
                Ok((last + 1, last))
            }
        }
    }

    pub(super) async fn events_trim_to(
        &self,
        keep: u64,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM events WHERE seq <= (SELECT COALESCE(MAX(seq), 0) FROM events) - ? OR at_ms < ?",
        )
        .bind(keep as i64)
        .bind(before_ms)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn dead_add(&self, b: &DeadBatch) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_dead (webhook, from_seq, to_seq, events, attempts, last_error, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.webhook)
        .bind(b.from_seq)
        .bind(b.to_seq)
        .bind(b.events)
        .bind(b.attempts)
        .bind(&b.last_error)
        .bind(b.at_ms)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    pub(super) async fn dead_list(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeadBatch>, StoreError> {
        Ok(sqlx::query_as::<_, DeadBatch>(
            "SELECT * FROM webhook_dead WHERE webhook = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?)
    }
}
