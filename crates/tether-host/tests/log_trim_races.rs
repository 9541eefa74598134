//! The event log trimmed between a reader's check of its bounds and its
//! read: a consumer at the edge of what the log keeps is told (410, the end
//! of its stream, a dead-lettered webhook batch), never handed a page that
//! silently starts later.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::{call, Workspace, TOKEN};
use tether_host::api::{router, AppState, TokenCheck};
use tether_host::store::outbox::{
    Appended, NewOutboxMessage, OutboxCommit, OutboxMessage, OutboxStats, OutboxStatus,
};
use tether_host::store::{AuditEntry, Change, DeadBatch, InstanceRecord, LoggedEvent, StoreError};
use tether_host::{Host, SqliteStore, Store};
use tower::ServiceExt;

const OFF: u64 = u64::MAX;

/// A store that, when armed, trims its event log to the newest `keep`
/// events right before the next read of it: what the trimmer does when it
/// runs between the API's check of the bounds and its read.
struct TrimBeforeRead {
    inner: Arc<dyn Store>,
    keep: AtomicU64,
}

#[async_trait::async_trait]
impl Store for TrimBeforeRead {
    async fn events_after(
        &self,
        after: i64,
        client: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let keep = self.keep.swap(OFF, Ordering::SeqCst);
        if keep != OFF {
            self.inner.events_trim(keep, i64::MIN).await?;
        }
        self.inner.events_after(after, client, limit).await
    }

    // Everything else as the inner store.
    async fn list(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.inner.list().await
    }
    async fn get(&self, key: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.inner.get(key).await
    }
    async fn insert(&self, record: &InstanceRecord, change: Change<'_>) -> Result<(), StoreError> {
        self.inner.insert(record, change).await
    }
    async fn update(
        &self,
        record: &InstanceRecord,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<i64, StoreError> {
        self.inner.update(record, expected, change).await
    }
    async fn delete(
        &self,
        key: &str,
        expected: Option<i64>,
        change: Change<'_>,
    ) -> Result<(), StoreError> {
        self.inner.delete(key, expected, change).await
    }
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        key: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        self.inner.audit(actor, action, key, detail).await
    }
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(limit).await
    }
    async fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(name).await
    }
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set_setting(name, value).await
    }
    async fn outbox_commit(&self, commit: OutboxCommit<'_>) -> Result<Vec<Appended>, StoreError> {
        self.inner.outbox_commit(commit).await
    }
    async fn outbox_append(&self, batch: &[NewOutboxMessage]) -> Result<Vec<Appended>, StoreError> {
        self.inner.outbox_append(batch).await
    }
    async fn outbox_in_flight(&self, client: &str) -> Result<u64, StoreError> {
        self.inner.outbox_in_flight(client).await
    }
    async fn outbox_pending(
        &self,
        client: &str,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.inner.outbox_pending(client, limit).await
    }
    async fn outbox_mark(
        &self,
        seqs: &[i64],
        status: OutboxStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.outbox_mark(seqs, status, error).await
    }
    async fn outbox_requeue(&self, client: &str) -> Result<u64, StoreError> {
        self.inner.outbox_requeue(client).await
    }
    async fn outbox_list(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.inner.outbox_list(client, status, limit).await
    }
    async fn outbox_stats(&self, client: &str) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats(client).await
    }
    async fn outbox_stats_all(&self) -> Result<HashMap<String, OutboxStats>, StoreError> {
        self.inner.outbox_stats_all().await
    }
    async fn outbox_retry(&self, client: &str, seq: Option<i64>) -> Result<u64, StoreError> {
        self.inner.outbox_retry(client, seq).await
    }
    async fn outbox_prune_done(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.inner.outbox_prune_done(before_ms).await
    }
    async fn outbox_purge(
        &self,
        client: &str,
        status: Option<OutboxStatus>,
    ) -> Result<u64, StoreError> {
        self.inner.outbox_purge(client, status).await
    }
    async fn events_append(&self, batch: &[(String, i64, String)]) -> Result<Vec<i64>, StoreError> {
        self.inner.events_append(batch).await
    }
    async fn events_bounds(&self) -> Result<(i64, i64), StoreError> {
        self.inner.events_bounds().await
    }
    async fn events_trim(&self, keep: u64, before_ms: i64) -> Result<u64, StoreError> {
        self.inner.events_trim(keep, before_ms).await
    }
    async fn webhook_dead_add(&self, batch: &DeadBatch) -> Result<(), StoreError> {
        self.inner.webhook_dead_add(batch).await
    }
    async fn webhook_dead_list(
        &self,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeadBatch>, StoreError> {
        self.inner.webhook_dead_list(webhook, limit).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

const CONFIG: &str = r#"
[[client_type]]
name = "feed"
[client_type.defaults]
url = "ws://127.0.0.1:9/"
auto_connect = false
"#;

/// A host over a log of 10 events (numbers 1 to 10) with `extra` config,
/// its store armed to trim to `keep` (OFF: not), and its router.
async fn scene(
    name: &str,
    extra: &str,
    keep: u64,
) -> (Workspace, Arc<Host>, Arc<TrimBeforeRead>, axum::Router) {
    let ws = Workspace::new(name);
    ws.write("tether.toml", &format!("{CONFIG}{extra}"));
    let inner = Arc::new(SqliteStore::open(&ws.store_url()).await.unwrap());
    // A webhook follows from the start of the log, not from its end.
    inner.set_setting("webhook.crm.cursor", "0").await.unwrap();
    let rows: Vec<(String, i64, String)> = (1..=10)
        .map(|i| {
            let event = format!(r#"{{"client":"c1","event":"module","data":{i}}}"#);
            ("c1".to_string(), tether_host::store::now_ms(), event)
        })
        .collect();
    assert_eq!(
        inner.events_append(&rows).await.unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    let store = Arc::new(TrimBeforeRead {
        inner,
        keep: AtomicU64::new(keep),
    });
    let host = Host::start(&ws.config(), store.clone() as Arc<dyn Store>)
        .await
        .unwrap();
    let app = router(AppState::new(host.clone(), TokenCheck::new(TOKEN)));
    (ws, host, store, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_trimmed_under_the_poller_is_gone_not_shortened() {
    let (_ws, host, store, app) = scene("trim-race-poll", "", OFF).await;
    let (_, before) = store.events_bounds().await.unwrap();
    // Untouched, a page after 2 starts at 3.
    let (s, v) = call(&app, "GET", "/api/events?after=2&limit=3", None).await;
    assert_eq!(
        (s, &v["events"][0]["seq"]),
        (StatusCode::OK, &serde_json::json!(3)),
        "{v}"
    );
    // The log keeps only its newest 4 by the time the page is read.
    store.keep.store(4, Ordering::SeqCst);
    let (s, v) = call(&app, "GET", "/api/events?after=2&limit=100", None).await;
    assert_eq!(
        s,
        StatusCode::GONE,
        "a page that skips 3..{}: {v}",
        before - 4
    );
    assert_eq!(
        (v["error"].as_str(), v["oldest"].as_i64()),
        (Some("events_gone"), Some(before - 3)),
        "{v}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_catch_up_was_trimmed_ends_instead_of_skipping() {
    let (_ws, host, _store, app) = scene("trim-race-sse", "", 4).await;
    let req = Request::get("/api/events")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "2")
        .body(Body::empty())
        .unwrap();
    // Checked before the trim: the stream opens.
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Its catch-up finds 3.. gone: it ends, so that the consumer resumes
    // and is told (410), instead of being handed 7.. as if nothing was missed.
    let mut body = response.into_body();
    let mut text = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            if let Ok(bytes) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream went on: {text}");
    assert!(!text.contains("id:"), "events after a gap: {text}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_batch_trimmed_under_its_reader_is_dead_lettered_not_skipped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let received = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let seen = received.clone();
    let receiver = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Head, then Content-Length bytes of body.
            let body = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break Some(buf[end + 4..end + 4 + len].to_vec());
                }
            };
            if let Some(body) = body {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let events = v["events"].as_array().unwrap().clone();
                seen.lock().unwrap().extend(events);
            }
            let reply = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    std::env::set_var("TRIM_RACE_WEBHOOK_SECRET", "whsec-trim-race");
    let webhook = format!(
        r#"
[[webhook]]
name = "crm"
url = "http://{hook}/hooks"
events = ["module"]
secret_env = "TRIM_RACE_WEBHOOK_SECRET"
batch = 50
"#
    );
    // Its first read finds the log trimmed to the newest 4 (7 to 10).
    let (_ws, host, _store, app) = scene("trim-race-hook", &webhook, 4).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let (s, v) = call(&app, "GET", "/api/webhooks/crm/dead", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if received.lock().unwrap().len() >= 4 && !v.as_array().unwrap().is_empty() {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead: {v}; received: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 1 to 6 reported as lost, 7 to 10 delivered, in order.
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(
        (dead[0]["from_seq"].as_i64(), dead[0]["to_seq"].as_i64()),
        (Some(1), Some(6)),
        "{dead}"
    );
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("trimmed"),
        "{dead}"
    );
    let data: Vec<i64> = received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_i64().unwrap())
        .collect();
    assert_eq!(data, [7, 8, 9, 10]);
    host.shutdown().await;
    receiver.abort();
}
