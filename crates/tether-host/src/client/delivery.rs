//! Delivering one client's outbox on one connection: waits until the
//! connection is ready, then sends pending messages in order, batch by
//! batch. A batch is done once the connection has written it; if the link
//! goes first, each of its messages has used an attempt and stays pending.
//! In ack mode a batch is in flight from before it is sent until the module
//! reports each message's ack; the worker puts what is still in flight back
//! to pending when the connection ends. A crash leaves messages pending (or
//! in flight), so they are sent again after a restart: at least once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::ClientRuntime;
use crate::config::OutboxConfig;
use crate::outbox::{Outbox, OutboxError};
use crate::store::outbox::{OutboxMessage, OutboxStatus};
use crate::store::{now_ms, Store, StoreError};

/// Messages read from the store per round.
const BATCH: u32 = 256;

pub(super) struct Delivery {
    /// Cancelled when the connection is gone. Checked only between store
    /// calls, never in the middle of one: a store write that was started
    /// lands before the worker requeues what is in flight.
    pub stop: tokio_util::sync::CancellationToken,
    pub rt: Arc<ClientRuntime>,
    pub conn: tether::Connection,
    pub store: Arc<dyn Store>,
    /// Done marks go through the outbox's group commit.
    pub outbox: Arc<Outbox>,
    pub wake: Arc<Notify>,
    pub config: OutboxConfig,
    pub acks: bool,
    /// A broker type's framing (MQTT packet ids are set here).
    pub framing: Option<crate::brokers::framing::Framing>,
}

impl Delivery {
    pub(super) async fn run(self) {
        // What a crashed process left in flight goes out again first.
        if let Err(e) = self.store.outbox_requeue(&self.rt.key).await {
            self.rt
                .publish_error("outbox", &format!("cannot requeue in-flight messages: {e}"));
            return;
        }
        let handle = self.rt.handle();
        tokio::select! {
            _ = handle.wait_ready() => {}
            _ = self.stop.cancelled() => return,
        }
        if let Err(e) = self.deliver().await {
            tracing::error!(client = %self.rt.key, error = %e, "outbox delivery stopped");
            self.rt
                .publish_error("outbox", &format!("outbox delivery stopped: {e}"));
        }
    }

    async fn deliver(&self) -> Result<(), OutboxError> {
        let handle = self.rt.handle();
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // In ack mode at most BATCH messages are unacknowledged: what a
            // crash can make the server see twice, and within a broker's
            // receive limit. Acks wake this loop.
            let room = if self.acks {
                let in_flight = self.store.outbox_in_flight(&self.rt.key).await?;
                u64::from(BATCH).saturating_sub(in_flight) as u32
            } else {
                BATCH
            };
            if room == 0 {
                tokio::select! {
                    _ = woken => continue,
                    _ = self.stop.cancelled() => return Ok(()),
                }
            }
            let batch = self.store.outbox_pending(&self.rt.key, room).await?;
            if batch.is_empty() {
                tokio::select! {
                    _ = woken => continue,
                    _ = self.stop.cancelled() => return Ok(()),
                }
            }
            if self.stop.is_cancelled() {
                return Ok(());
            }
            let to_send = self.settle_unsendable(batch).await?;
            if to_send.is_empty() {
                continue;
            }
            let seqs: Vec<i64> = to_send.iter().map(|m| m.seq).collect();
            if self.acks {
                // In flight until the module reports the server's ack.
                self.store
                    .outbox_mark(&seqs, OutboxStatus::InFlight, None)
                    .await?;
            }
            let mut sent = 0;
            for m in &to_send {
                let message = match self.framing {
                    // The packet id comes from the sequence number; DUP on a resend.
                    Some(crate::brokers::framing::Framing::Mqtt { .. }) => tether::Message::Binary(
                        crate::brokers::framing::mqtt_prepare(&m.payload, m.seq, m.attempts > 0),
                    ),
                    _ => m.message(),
                };
                if !handle.may_send() {
                    // Fenced (a cluster node that lost its lease): what is
                    // left stays for the next owner.
                    break;
                }
                let result = tokio::select! {
                    r = self.conn.send(&message) => r,
                    _ = self.stop.cancelled() => Err(tether::SendError::Closed),
                };
                if let Err(e) = result {
                    tracing::debug!(client = %self.rt.key, error = %e, "outbox send stopped");
                    break;
                }
                self.rt.count_sent(&message);
                sent += 1;
            }
            if self.acks {
                if sent < to_send.len() {
                    // The worker requeues what is in flight.
                    return Ok(());
                }
                continue;
            }
            if sent == to_send.len() && self.written().await {
                self.outbox.mark_done(seqs).await?;
                continue;
            }
            // The link went before these were written: an attempt each, and
            // they stay pending for the next connection.
            self.store
                .outbox_mark(
                    &seqs,
                    OutboxStatus::Pending,
                    Some("the connection was lost before the message was written"),
                )
                .await?;
            return Ok(());
        }
    }

    /// Marks expired and over-tried messages; returns the rest.
    async fn settle_unsendable(
        &self,
        batch: Vec<OutboxMessage>,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = now_ms();
        let (mut expired, mut dead, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for m in batch {
            if m.expires_ms.is_some_and(|e| e <= now) {
                expired.push(m.seq);
            } else if m.attempts >= self.config.max_attempts {
                dead.push(m.seq);
            } else {
                rest.push(m);
            }
        }
        self.store
            .outbox_mark(
                &expired,
                OutboxStatus::Expired,
                Some("its time to live ran out"),
            )
            .await?;
        let why = format!("gave up after {} attempts", self.config.max_attempts);
        self.store
            .outbox_mark(&dead, OutboxStatus::Dead, Some(&why))
            .await?;
        Ok(rest)
    }

    /// Waits until the connection has written everything queued; false if
    /// it stopped being open first.
    async fn written(&self) -> bool {
        loop {
            if self.conn.state() != tether::State::Open || self.stop.is_cancelled() {
                return false;
            }
            if self.conn.buffered_amount() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
