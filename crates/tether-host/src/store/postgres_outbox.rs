//! The outbox in PostgreSQL: one transaction per group commit, the queue
//! counts locked per client (so two hosts appending to one client cannot
//! both pass its limit), FIFO reads per client, and status changes.

use std::collections::HashMap;

use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use super::outbox::{
    stats_by_client, AckId, Appended, FullPolicy, NewOutboxMessage, OutboxCommit, OutboxMessage,
    OutboxRow, OutboxStats, OutboxStatus, StatusCount,
};
use super::postgres::PgStore;
use super::{now_ms, StoreError};

/// The condition a fenced status change adds (`$F` is the node id, or
/// NULL without a fence): the row's client is leased to this node, live.
pub(super) const FENCE: &str = "($F::TEXT IS NULL OR EXISTS (SELECT 1 FROM leases l \
     WHERE l.key = outbox.client AND l.node_id = $F AND l.expires_at > now()))";

/// Moves the messages numbered `seqs` to `status` (an attempt, when they
/// go in flight or back to pending); with a fence, only those of clients
/// this node holds.
pub(super) async fn mark<'e>(
    db: impl sqlx::PgExecutor<'e>,
    seqs: &[i64],
    status: OutboxStatus,
    error: Option<&str>,
    fence: Option<&str>,
) -> Result<(), StoreError> {
    let attempt = matches!(status, OutboxStatus::InFlight | OutboxStatus::Pending);
    let sql = format!(
        "UPDATE outbox SET status = $1, attempts = attempts + $2, \
         done_ms = CASE WHEN $1 = 'done' THEN $3 ELSE done_ms END, \
         last_error = COALESCE($4, last_error) WHERE seq = ANY($5) AND {}",
        FENCE.replace("$F", "$6")
    );
    let changed = sqlx::query(&sql)
        .bind(status.as_str())
        .bind(i64::from(attempt))
        .bind(now_ms())
        .bind(error)
        .bind(seqs)
        .bind(fence)
        .execute(db)
        .await?
        .rows_affected();
    if fence.is_some() && changed < seqs.len() as u64 {
        tracing::warn!(
            refused = seqs.len() as u64 - changed,
            status = status.as_str(),
            "outbox status changes refused: this node no longer holds those clients' leases"
        );
    }
    Ok(())
}

/// Inserts `insert` (batch index, message) and adds them to their clients'
/// queue counts; records each one's number in `seq_of`.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    insert: &mut Vec<(usize, &NewOutboxMessage)>,
    seq_of: &mut HashMap<usize, i64>,
    now: i64,
) -> Result<(), StoreError> {
    if insert.is_empty() {
        return Ok(());
    }
    let mut added: HashMap<&str, (i64, i64)> = HashMap::new();
    for (_, m) in insert.iter() {
        let a = added.entry(m.client.as_str()).or_default();
        a.0 += 1;
        a.1 += m.payload.len() as i64;
    }
    for (client, (messages, bytes)) in added {
        sqlx::query(
            "INSERT INTO outbox_open (client, messages, bytes) VALUES ($1, $2, $3) ON CONFLICT (client) \
             DO UPDATE SET messages = outbox_open.messages + excluded.messages, bytes = outbox_open.bytes + excluded.bytes",
        )
        .bind(client)
        .bind(messages)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    }
    for chunk in insert.chunks(super::postgres::ROWS_PER_STATEMENT) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO outbox (client, msg_id, is_binary, payload, created_ms, expires_ms) ",
        );
        q.push_values(chunk, |mut row, (_, m)| {
            row.push_bind(&m.client)
                .push_bind(&m.msg_id)
                .push_bind(m.binary)
                .push_bind(&m.payload)
                .push_bind(now)
                .push_bind(m.expires_ms);
        });
        // The numbers by (client, id): unique within what is inserted.
        q.push(" RETURNING client, msg_id, seq");
        let mut seqs: HashMap<(String, String), i64> = HashMap::new();
        for row in q.build().fetch_all(&mut **tx).await? {
            seqs.insert(
                (row.try_get("client")?, row.try_get("msg_id")?),
                row.try_get("seq")?,
            );
        }
        for (i, m) in chunk {
            let seq = seqs
                .get(&(m.client.clone(), m.msg_id.clone()))
                .copied()
                .ok_or_else(|| {
                    StoreError::Corrupt("an inserted outbox row has no number".into())
                })?;
            seq_of.insert(*i, seq);
        }
    }
    insert.clear();
    Ok(())
}

impl PgStore {
    pub(super) async fn outbox_group_commit(
        &self,
        commit: OutboxCommit<'_>,
    ) -> Result<Vec<Appended>, StoreError> {
        let batch = commit.appends;
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        if !commit.done.is_empty() {
            mark(
                &mut *tx,
                commit.done,
                OutboxStatus::Done,
                None,
                self.fence(),
            )
            .await?;
        }
        let by_message = format!(
            "UPDATE outbox SET status = 'done', done_ms = $1 WHERE client = $2 AND msg_id = $3 \
             AND status = 'in-flight' AND {}",
            FENCE.replace("$F", "$4")
        );
        let by_packet = format!(
            "UPDATE outbox SET status = 'done', done_ms = $1 WHERE seq = (SELECT seq FROM outbox \
             WHERE client = $2 AND status = 'in-flight' AND seq % 65000 + 1 = $3 ORDER BY seq LIMIT 1) AND {}",
            FENCE.replace("$F", "$4")
        );
        for ack in commit.acks {
            let q = match &ack.id {
                AckId::Message(id) => sqlx::query(&by_message)
                    .bind(now)
                    .bind(&ack.client)
                    .bind(id),
                AckId::Packet(pid) => sqlx::query(&by_packet)
                    .bind(now)
                    .bind(&ack.client)
                    .bind(i64::from(*pid)),
            };
            q.bind(self.fence()).execute(&mut *tx).await?;
        }
        let mut clients: Vec<&str> = batch.iter().map(|m| m.client.as_str()).collect();
        clients.sort_unstable();
        clients.dedup();
        // Locked until commit: another host appending to these clients waits
        // (the rows made first, so that there is a row to lock).
        if !clients.is_empty() {
            sqlx::query(
                "INSERT INTO outbox_open (client) SELECT unnest($1::TEXT[]) ON CONFLICT (client) DO NOTHING",
            )
            .bind(&clients)
            .execute(&mut *tx)
            .await?;
        }
        let mut open: HashMap<String, (u64, u64)> = HashMap::new();
        for row in sqlx::query(
            "SELECT client, messages, bytes FROM outbox_open WHERE client = ANY($1) ORDER BY client FOR UPDATE",
        )
        .bind(&clients)
        .fetch_all(&mut *tx)
        .await?
        {
            open.insert(
                row.try_get("client")?,
                (
                    row.try_get::<i64, _>("messages")?.max(0) as u64,
                    row.try_get::<i64, _>("bytes")?.max(0) as u64,
                ),
            );
        }
        let given: Vec<&str> = batch
            .iter()
            .filter(|m| m.caller_id)
            .map(|m| m.msg_id.as_str())
            .collect();
        let mut known: HashMap<(String, String), i64> = HashMap::new();
        if !given.is_empty() {
            for row in sqlx::query("SELECT client, msg_id, seq FROM outbox WHERE msg_id = ANY($1)")
                .bind(&given)
                .fetch_all(&mut *tx)
                .await?
            {
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
                out.push(Appended::Duplicate {
                    seq: -(*first as i64) - 1,
                });
                continue;
            }
            let (mut n, mut bytes) = open.get(&m.client).copied().unwrap_or_default();
            let size = m.payload.len() as u64;
            let fits = |n: u64, bytes: u64| {
                n < m.limits.max_messages && bytes + size <= m.limits.max_bytes
            };
            if !fits(n, bytes) && m.limits.when_full == FullPolicy::DropOldest {
                insert_rows(&mut tx, &mut insert, &mut seq_of, now).await?;
                let oldest = sqlx::query(
                    "SELECT seq, octet_length(payload)::BIGINT AS len FROM outbox \
                     WHERE client = $1 AND status = 'pending' ORDER BY seq",
                )
                .bind(&m.client)
                .fetch_all(&mut *tx)
                .await?;
                for row in oldest {
                    if fits(n, bytes) {
                        break;
                    }
                    sqlx::query(
                        "UPDATE outbox SET status = 'dead', last_error = 'dropped: the outbox was full (drop-oldest)' WHERE seq = $1",
                    )
                    .bind(row.try_get::<i64, _>("seq")?)
                    .execute(&mut *tx)
                    .await?;
                    n -= 1;
                    bytes -= row.try_get::<i64, _>("len")?.max(0) as u64;
                }
            }
            if !fits(n, bytes) {
                open.insert(m.client.clone(), (n, bytes));
                out.push(Appended::Full { messages: n, bytes });
                continue;
            }
            open.insert(m.client.clone(), (n + 1, bytes + size));
            in_batch.insert((m.client.as_str(), m.msg_id.as_str()), i);
            insert.push((i, m));
            out.push(Appended::Stored { seq: 0 });
        }
        // The client's owner may be another host: tell it (at commit).
        let mut stored: Vec<&str> = batch
            .iter()
            .zip(&out)
            .filter(|(_, a)| matches!(a, Appended::Stored { .. }))
            .map(|(m, _)| m.client.as_str())
            .collect();
        stored.sort_unstable();
        stored.dedup();
        if !stored.is_empty() {
            sqlx::query("SELECT pg_notify($1, c) FROM unnest($2::TEXT[]) AS c")
                .bind(super::postgres::OUTBOX_CHANNEL)
                .bind(&stored)
                .execute(&mut *tx)
                .await?;
        }
        insert_rows(&mut tx, &mut insert, &mut seq_of, now).await?;
        tx.commit().await?;
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

    pub(super) async fn outbox_read(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        sqlx::query_as::<_, OutboxRow>(
            "SELECT * FROM outbox WHERE client = $1 AND ($2::TEXT IS NULL OR status = $2) ORDER BY seq LIMIT $3",
        )
        .bind(client)
        .bind(status.map(OutboxStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?
        .into_iter()
        .map(OutboxRow::message)
        .collect()
    }

    pub(super) async fn outbox_counts(
        &self,
        client: Option<&str>,
    ) -> Result<HashMap<String, OutboxStats>, StoreError> {
        let groups = sqlx::query_as::<_, StatusCount>(
            "SELECT client, status, COUNT(*) AS n, MIN(created_ms) AS oldest FROM outbox \
             WHERE ($1::TEXT IS NULL OR client = $1) GROUP BY client, status",
        )
        .bind(client)
        .fetch_all(self.pool())
        .await?;
        Ok(stats_by_client(groups))
    }
}
