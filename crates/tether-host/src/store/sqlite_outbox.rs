//! The outbox in SQLite: appends in batches (one transaction and one fsync
//! for many sends), FIFO reads per client, and status changes.

use std::collections::HashMap;

use sqlx::pool::PoolConnection;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

/// Rows per multi-row statement (six bound values each).
const ROWS_PER_STATEMENT: usize = 500;

use super::outbox::{
    stats_by_client, AckId, Appended, FullPolicy, NewOutboxMessage, OutboxCommit, OutboxMessage,
    OutboxRow, OutboxStats, OutboxStatus, StatusCount,
};
use super::sqlite::SqliteStore;
use super::{now_ms, StoreError};

/// The writer's connection inside a transaction begun by hand, so that
/// `BEGIN` and `COMMIT` travel to the driver's thread with the statements
/// beside them: a group commit is two round trips instead of seven. Dropped
/// before [`committed`](Self::committed) (an error, or the commit abandoned
/// halfway) it rolls the transaction back before the connection serves
/// anyone else, as sqlx's own transactions do.
struct WriteTx {
    /// Taken only when the guard is dropped.
    conn: Option<PoolConnection<Sqlite>>,
    open: bool,
}

impl WriteTx {
    fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        // Taken only by `drop`: always here while the guard is in use.
        self.conn
            .as_deref_mut()
            .ok_or_else(|| StoreError::Corrupt("the writer's connection is gone".into()))
    }

    /// The statements ended with `COMMIT`: the connection goes back to the
    /// pool as it is.
    fn committed(mut self) {
        self.open = false;
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take().filter(|_| self.open) else {
            return;
        };
        // The pool gets the connection back only after the rollback (it has
        // one connection, so every other writer waits for it).
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    // "no transaction is active" when BEGIN never ran: fine.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                });
            }
            // No runtime to roll back on: closing the connection rolls back.
            Err(_) => conn.close_on_drop(),
        }
    }
}

/// Inserts the messages waiting in `insert` (batch index, message), many
/// rows per statement, and records each one's number in `seq_of`; with
/// `commit`, the last statement ends the transaction. Inside the write
/// transaction the AUTOINCREMENT numbers of one statement's rows are
/// consecutive, in VALUES order, ending at last_insert_rowid. Adds them to
/// their clients' queue counts (`outbox_open`) first, once per client, so
/// that the last insert's row number is the last one reported.
async fn insert_rows(
    conn: &mut SqliteConnection,
    insert: &mut Vec<(usize, &NewOutboxMessage)>,
    seq_of: &mut HashMap<usize, i64>,
    now: i64,
    commit: bool,
) -> Result<(), StoreError> {
    let mut added: HashMap<&str, (i64, i64)> = HashMap::new();
    for (_, m) in insert.iter() {
        let a = added.entry(m.client.as_str()).or_default();
        a.0 += 1;
        a.1 += m.payload.len() as i64;
    }
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("");
    for (client, (messages, bytes)) in added {
        q.push("INSERT INTO outbox_open (client, messages, bytes) VALUES (")
            .push_bind(client)
            .push(", ")
            .push_bind(messages)
            .push(", ")
            .push_bind(bytes)
            .push(
                ") ON CONFLICT(client) DO UPDATE SET messages = messages + excluded.messages, \
                 bytes = bytes + excluded.bytes; ",
            );
    }
    let chunks = insert.chunks(ROWS_PER_STATEMENT).count();
    for (c, chunk) in insert.chunks(ROWS_PER_STATEMENT).enumerate() {
        q.push("INSERT INTO outbox (client, msg_id, is_binary, payload, created_ms, expires_ms) ");
        q.push_values(chunk, |mut row, (_, m)| {
            row.push_bind(&m.client)
                .push_bind(&m.msg_id)
                .push_bind(m.binary)
                .push_bind(&m.payload)
                .push_bind(now)
                .push_bind(m.expires_ms);
        });
        let last_chunk = c + 1 == chunks;
        if last_chunk && commit {
            q.push("; COMMIT");
        }
        let last = q.build().execute(&mut *conn).await?.last_insert_rowid();
        let first = last - chunk.len() as i64 + 1;
        for (k, (i, _)) in chunk.iter().enumerate() {
            seq_of.insert(*i, first + k as i64);
        }
        q.reset();
    }
    if chunks == 0 && commit {
        sqlx::query("COMMIT").execute(&mut *conn).await?;
    }
    insert.clear();
    Ok(())
}

/// `drop-oldest`: gives up on the oldest pending messages of `client` until
/// a message fits; returns the counts left.
async fn drop_oldest(
    conn: &mut SqliteConnection,
    client: &str,
    mut n: u64,
    mut bytes: u64,
    fits: impl Fn(u64, u64) -> bool,
) -> Result<(u64, u64), StoreError> {
    let oldest = sqlx::query(
        "SELECT seq, LENGTH(payload) AS len FROM outbox WHERE client = ? AND status = 'pending' ORDER BY seq",
    )
    .bind(client)
    .fetch_all(&mut *conn)
    .await?;
    for row in oldest {
        if fits(n, bytes) {
            break;
        }
        sqlx::query("UPDATE outbox SET status = 'dead', last_error = 'dropped: the outbox was full (drop-oldest)' WHERE seq = ?")
            .bind(row.try_get::<i64, _>("seq")?)
            .execute(&mut *conn)
            .await?;
        n -= 1;
        bytes -= row.try_get::<i64, _>("len")?.max(0) as u64;
    }
    Ok((n, bytes))
}

/// The first round trip of a group commit: `BEGIN IMMEDIATE`, the done
/// marks, the acks, and a read of the queue counts of the batch's clients.
fn begin_query<'a>(commit: &OutboxCommit<'a>, now: i64) -> QueryBuilder<'a, Sqlite> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("BEGIN IMMEDIATE; ");
    for chunk in commit.done.chunks(ROWS_PER_STATEMENT) {
        push_mark(&mut q, chunk, OutboxStatus::Done, None, now);
        q.push("; ");
    }
    for ack in commit.acks {
        match &ack.id {
            AckId::Message(id) => {
                q.push("UPDATE outbox SET status = 'done', done_ms = ")
                    .push_bind(now)
                    .push(" WHERE client = ")
                    .push_bind(ack.client.as_str())
                    .push(" AND msg_id = ")
                    .push_bind(id.as_str())
                    .push(" AND status = 'in-flight'; ");
            }
            // The oldest in-flight message whose number gives this id.
            AckId::Packet(pid) => {
                q.push("UPDATE outbox SET status = 'done', done_ms = ")
                    .push_bind(now)
                    .push(" WHERE seq = (SELECT seq FROM outbox WHERE client = ")
                    .push_bind(ack.client.as_str())
                    .push(" AND status = 'in-flight' AND seq % 65000 + 1 = ")
                    .push_bind(i64::from(*pid))
                    .push(" ORDER BY seq LIMIT 1); ");
            }
        }
    }
    let mut clients: Vec<&str> = commit.appends.iter().map(|m| m.client.as_str()).collect();
    clients.sort_unstable();
    clients.dedup();
    q.push("SELECT client, messages AS n, bytes FROM outbox_open WHERE client IN (");
    let mut list = q.separated(", ");
    for c in clients {
        list.push_bind(c);
    }
    q.push(")");
    q
}

impl SqliteStore {
    pub(super) async fn outbox_append_batch(
        &self,
        commit: OutboxCommit<'_>,
    ) -> Result<Vec<Appended>, StoreError> {
        let batch = commit.appends;
        let now = now_ms();
        let mut tx = WriteTx {
            conn: Some(self.writer().acquire().await?),
            open: true,
        };
        // Messages and bytes not yet done, per client, as of this batch.
        let mut open: HashMap<&str, (u64, u64)> = HashMap::new();
        for row in begin_query(&commit, now)
            .build()
            .fetch_all(tx.conn()?)
            .await?
        {
            let client: String = row.try_get("client")?;
            if let Some(m) = batch.iter().find(|m| m.client == client) {
                open.insert(
                    m.client.as_str(),
                    (
                        row.try_get::<i64, _>("n")?.max(0) as u64,
                        row.try_get::<i64, _>("bytes")?.max(0) as u64,
                    ),
                );
            }
        }
        // Ids stored before (one query for the batch).
        let mut known: HashMap<(String, String), i64> = HashMap::new();
        let given: Vec<&NewOutboxMessage> = batch.iter().filter(|m| m.caller_id).collect();
        for chunk in given.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT client, msg_id, seq FROM outbox WHERE msg_id IN (");
            let mut ids = q.separated(", ");
            for m in chunk {
                ids.push_bind(&m.msg_id);
            }
            q.push(")");
            for row in q.build().fetch_all(tx.conn()?).await? {
                known.insert(
                    (row.try_get("client")?, row.try_get("msg_id")?),
                    row.try_get("seq")?,
                );
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut insert: Vec<(usize, &NewOutboxMessage)> = Vec::new();
        let mut seq_of: HashMap<usize, i64> = HashMap::new();
        let mut in_batch: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, m) in batch.iter().enumerate() {
            if let Some(seq) = known.get(&(m.client.clone(), m.msg_id.clone())) {
                out.push(Appended::Duplicate { seq: *seq });
                continue;
            }
            if let Some(first) = in_batch.get(&(m.client.as_str(), m.msg_id.as_str())) {
                // The same id twice in one batch: the later one is a duplicate
                // of the earlier, whose number is known after the insert.
                out.push(Appended::Duplicate {
                    seq: -(*first as i64) - 1,
                });
                continue;
            }
            let (mut n, mut bytes) = open.get(m.client.as_str()).copied().unwrap_or_default();
            let size = m.payload.len() as u64;
            let fits = |n: u64, bytes: u64| {
                n < m.limits.max_messages && bytes + size <= m.limits.max_bytes
            };
            if !fits(n, bytes) && m.limits.when_full == FullPolicy::DropOldest {
                // What this batch added must be in the table to be dropped.
                insert_rows(tx.conn()?, &mut insert, &mut seq_of, now, false).await?;
                (n, bytes) = drop_oldest(tx.conn()?, &m.client, n, bytes, fits).await?;
            }
            if !fits(n, bytes) {
                open.insert(&m.client, (n, bytes));
                out.push(Appended::Full { messages: n, bytes });
                continue;
            }
            open.insert(&m.client, (n + 1, bytes + size));
            in_batch.insert((m.client.as_str(), m.msg_id.as_str()), i);
            insert.push((i, m));
            out.push(Appended::Stored { seq: 0 });
        }
        insert_rows(tx.conn()?, &mut insert, &mut seq_of, now, true).await?;
        tx.committed();
        for (i, a) in out.iter_mut().enumerate() {
            match a {
                Appended::Stored { seq } => *seq = seq_of.get(&i).copied().unwrap_or(0),
                Appended::Duplicate { seq } if *seq < 0 => {
                    *seq = seq_of.get(&((-*seq - 1) as usize)).copied().unwrap_or(0)
                }
                _ => {}
            }
        }
        Ok(out)
    }

    pub(super) async fn outbox_pending_for(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE client = ? AND status = 'pending' ORDER BY seq LIMIT ?",
        )
        .bind(client)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(OutboxRow::message).collect()
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
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await?;
        for chunk in seqs.chunks(ROWS_PER_STATEMENT) {
            mark_query(chunk, status, error)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn outbox_requeue_client(&self, client: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'pending' WHERE client = ? AND status = 'in-flight'",
        )
        .bind(client)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn outbox_in_flight_count(&self, client: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE client = ? AND status = 'in-flight'",
        )
        .bind(client)
        .fetch_one(self.pool())
        .await?;
        Ok(n.max(0) as u64)
    }

    pub(super) async fn outbox_messages(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE client = ? AND (? IS NULL OR status = ?) ORDER BY seq LIMIT ?",
        )
        .bind(client)
        .bind(status.map(OutboxStatus::as_str))
        .bind(status.map(OutboxStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter().map(OutboxRow::message).collect()
    }

    pub(super) async fn outbox_stats_for(&self, client: &str) -> Result<OutboxStats, StoreError> {
        let rows = sqlx::query_as::<_, StatusCount>(
            "SELECT client, status, COUNT(*) AS n, MIN(created_ms) AS oldest FROM outbox WHERE client = ? GROUP BY status",
        )
        .bind(client)
        .fetch_all(self.pool())
        .await?;
        Ok(stats_by_client(rows).remove(client).unwrap_or_default())
    }

    pub(super) async fn outbox_stats_every(
        &self,
    ) -> Result<std::collections::HashMap<String, OutboxStats>, StoreError> {
        let rows = sqlx::query_as::<_, StatusCount>(
            "SELECT client, status, COUNT(*) AS n, MIN(created_ms) AS oldest FROM outbox GROUP BY client, status",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(stats_by_client(rows))
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
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn outbox_prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM outbox WHERE status = 'done' AND done_ms < ?")
            .bind(before_ms)
            .execute(self.writer())
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
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }
}

/// `UPDATE` moving the messages numbered `seqs` (not empty) to `status`.
fn mark_query<'a>(
    seqs: &[i64],
    status: OutboxStatus,
    error: Option<&str>,
) -> QueryBuilder<'a, Sqlite> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("");
    push_mark(&mut q, seqs, status, error, now_ms());
    q
}

/// Appends that `UPDATE` to `q`.
fn push_mark(
    q: &mut QueryBuilder<'_, Sqlite>,
    seqs: &[i64],
    status: OutboxStatus,
    error: Option<&str>,
    now: i64,
) {
    q.push("UPDATE outbox SET status = ")
        .push_bind(status.as_str());
    // Handed to a connection, or back to pending after a failed attempt:
    // either way an attempt.
    if matches!(status, OutboxStatus::InFlight | OutboxStatus::Pending) {
        q.push(", attempts = attempts + 1");
    }
    if status == OutboxStatus::Done {
        q.push(", done_ms = ").push_bind(now);
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
}
