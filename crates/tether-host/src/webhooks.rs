//! Webhook sinks: each follows the durable event log from its own cursor
//! and POSTs JSON batches, in log order, signed with HMAC-SHA256. A slow or
//! dead receiver only makes its cursor lag; the WebSocket side never waits
//! for it. Failed batches are retried with exponential backoff and full
//! jitter, and dead-lettered after `max_attempts` or `max_age_secs`.
//!
//! The POST body is `{"webhook": NAME, "events": [EVENT, …]}`, each event
//! with its `seq` (use it to drop duplicates: delivery is at least once).
//! `Tether-Signature: t=UNIX_SECONDS,v1=HEX` where HEX is
//! HMAC-SHA256(secret, "UNIX_SECONDS." + body): recompute it over the raw
//! body, compare in constant time, and refuse timestamps more than a few
//! minutes old.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::Mac as _;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::WebhookConfig;
use crate::events::{read_after, LogPage};
use crate::store::{now_ms, DeadBatch, LoggedEvent, Store};

/// What the API shows of a webhook.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    /// The name.
    pub name: String,
    /// Where it posts (credentials redacted).
    pub url: String,
    /// The last sequence number delivered (or dead-lettered).
    pub cursor: i64,
    /// Attempts made on the current batch.
    pub attempts: u32,
    /// The last failure, if the current batch has failed.
    pub last_error: Option<String>,
    /// Batches delivered since start.
    pub delivered_batches: u64,
}

/// A running webhook sink.
pub struct Webhook {
    config: WebhookConfig,
    secret: Vec<u8>,
    store: Arc<dyn Store>,
    status: Mutex<WebhookStatus>,
    wake: tokio::sync::Notify,
    /// In a cluster: whether this node delivers this webhook now (it holds
    /// the webhook's lease). Then the cursor is read from the store before
    /// each batch, since another node may have moved it.
    gate: std::sync::OnceLock<Arc<dyn Fn() -> bool + Send + Sync>>,
}

fn cursor_setting(name: &str) -> String {
    format!("webhook.{name}.cursor")
}

impl Webhook {
    /// Starts following the log from the webhook's stored cursor (a new
    /// webhook starts at the log's current end).
    pub async fn start(
        config: WebhookConfig,
        store: Arc<dyn Store>,
        events: &crate::events::EventBus,
    ) -> Result<Arc<Webhook>, crate::store::StoreError> {
        let secret = std::env::var(&config.secret_env)
            .unwrap_or_default()
            .into_bytes();
        let cursor = match store.setting(&cursor_setting(&config.name)).await? {
            Some(c) => c.parse().unwrap_or(0),
            None => {
                let end = store.events_bounds().await?.1;
                store
                    .set_setting(&cursor_setting(&config.name), &end.to_string())
                    .await?;
                end
            }
        };
        let hook = Arc::new(Webhook {
            status: Mutex::new(WebhookStatus {
                name: config.name.clone(),
                url: tether::redact(&config.url),
                cursor,
                ..Default::default()
            }),
            config,
            secret,
            store,
            wake: tokio::sync::Notify::new(),
            gate: std::sync::OnceLock::new(),
        });
        // New events wake the sender; the log itself is the queue.
        let mut live = events.subscribe();
        let weak = Arc::downgrade(&hook);
        tokio::spawn(async move {
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
                live.recv().await
            {
                match weak.upgrade() {
                    Some(h) => h.wake.notify_one(),
                    None => return,
                }
            }
        });
        tokio::spawn(hook.clone().run());
        Ok(hook)
    }

    /// Delivers only while `gate` says so (once; a cluster's lease).
    pub fn set_gate(&self, gate: Arc<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.gate.set(gate);
        self.wake.notify_one();
    }

    /// Checks the gate now (the lease was just won).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// The webhook's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the API shows.
    pub fn status(&self) -> WebhookStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivers again from just after `after`.
    pub async fn replay(&self, after: i64) -> Result<(), crate::store::StoreError> {
        self.set_cursor(after).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Takes the stored cursor (another node may have moved it).
    async fn reload_cursor(&self) -> Result<(), crate::store::StoreError> {
        if let Some(c) = self
            .store
            .setting(&cursor_setting(&self.config.name))
            .await?
            .and_then(|c| c.parse().ok())
        {
            self.status.lock().unwrap_or_else(|e| e.into_inner()).cursor = c;
        }
        Ok(())
    }

    async fn set_cursor(&self, seq: i64) -> Result<(), crate::store::StoreError> {
        self.store
            .set_setting(&cursor_setting(&self.config.name), &seq.to_string())
            .await?;
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.cursor = seq;
        s.attempts = 0;
        s.last_error = None;
        Ok(())
    }

    fn wanted(&self, e: &LoggedEvent, v: &Value) -> bool {
        let client_ok = self
            .config
            .clients
            .as_ref()
            .is_none_or(|c| c.contains(&e.client));
        let event_ok = self.config.events.as_ref().is_none_or(|names| {
            v.get("event")
                .and_then(Value::as_str)
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
        client_ok && event_ok
    }

    async fn run(self: Arc<Self>) {
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(gate) = self.gate.get() {
                if !gate() {
                    // Another node delivers it.
                    let _ = tokio::time::timeout(Duration::from_secs(1), woken).await;
                    continue;
                }
                if let Err(e) = self.reload_cursor().await {
                    tracing::warn!(webhook = %self.config.name, error = %e, "cannot read the webhook's cursor");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            match self.deliver_one_batch().await {
                Ok(true) => continue,
                Ok(false) => {
                    // Nothing new: wait for an event (or check again soon).
                    let _ = tokio::time::timeout(Duration::from_secs(5), woken).await;
                }
                Err(e) => {
                    tracing::error!(webhook = %self.config.name, error = %e, "webhook cannot read the log");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Delivers (or dead-letters) the next batch; false when there is none.
    async fn deliver_one_batch(&self) -> Result<bool, crate::store::StoreError> {
        let cursor = self.status().cursor;
        let page =
            match read_after(self.store.as_ref(), cursor, None, self.config.batch * 4).await? {
                LogPage::Events(page) => page,
                // Trimmed before delivery: say so, never skip silently.
                LogPage::Gone { oldest } => {
                    self.dead_letter(
                        cursor + 1,
                        oldest - 1,
                        0,
                        0,
                        "trimmed from the event log before delivery",
                    )
                    .await?;
                    return Ok(true);
                }
            };
        let Some(last_read) = page.last().map(|e| e.seq) else {
            return Ok(false);
        };
        let mut events = Vec::new();
        let mut last = cursor;
        for e in &page {
            let mut v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
            last = e.seq;
            if !self.wanted(e, &v) {
                continue;
            }
            if let Some(o) = v.as_object_mut() {
                o.insert("seq".into(), json!(e.seq));
            }
            events.push((e.seq, v));
            if events.len() == self.config.batch as usize {
                break;
            }
        }
        if events.is_empty() {
            self.set_cursor(last_read).await?;
            return Ok(true);
        }
        let first_seq = events[0].0;
        let body = json!({
            "webhook": self.config.name,
            "events": events.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        })
        .to_string();
        let mut delay = Duration::from_millis(self.config.retry_initial_ms.max(1));
        let started = std::time::Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.post(&body).await {
                Ok(()) => {
                    self.set_cursor(last).await?;
                    self.status
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .delivered_batches += 1;
                    return Ok(true);
                }
                Err(why) => {
                    tracing::warn!(webhook = %self.config.name, attempt = attempts, error = %why, "webhook POST failed");
                    {
                        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
                        s.attempts = attempts;
                        s.last_error = Some(why.clone());
                    }
                    let too_old =
                        started.elapsed() >= Duration::from_secs(self.config.max_age_secs);
                    if attempts >= self.config.max_attempts || too_old {
                        let n = events.len() as i64;
                        self.dead_letter(first_seq, last, n, attempts, &why).await?;
                        return Ok(true);
                    }
                    // Full jitter: anywhere between 0 and the current window.
                    let wait = delay.mul_f64(rand::random::<f64>());
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_millis(self.config.retry_max_ms.max(1)));
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        from_seq: i64,
        to_seq: i64,
        events: i64,
        attempts: u32,
        why: &str,
    ) -> Result<(), crate::store::StoreError> {
        tracing::error!(webhook = %self.config.name, from_seq, to_seq, error = %why, "webhook batch dead-lettered");
        self.store
            .webhook_dead_add(&DeadBatch {
                id: 0,
                webhook: self.config.name.clone(),
                from_seq,
                to_seq,
                events,
                attempts: i64::from(attempts),
                last_error: why.to_string(),
                at_ms: now_ms(),
            })
            .await?;
        self.set_cursor(to_seq).await
    }

    /// The signature header value for `body` at `unix_secs`.
    pub fn signature(secret: &[u8], unix_secs: u64, body: &str) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret)
            .expect("HMAC takes any key length");
        mac.update(unix_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={unix_secs},v1={hex}")
    }

    async fn post(&self, body: &str) -> Result<(), String> {
        let timeout = Duration::from_secs(self.config.timeout_secs.max(1));
        let secs = (now_ms() / 1000).max(0) as u64;
        let signature = Self::signature(&self.secret, secs, body);
        let answer = crate::http_client::post_json(
            &self.config.url,
            &[("Tether-Signature", &signature)],
            body.as_bytes(),
            timeout,
        )
        .await?;
        match answer.status {
            c if (200..300).contains(&c) => Ok(()),
            c => Err(format!("the receiver answered {c}")),
        }
    }
}
