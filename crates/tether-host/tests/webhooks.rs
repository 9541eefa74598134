//! Webhooks against a receiver that goes away: everything arrives, in
//! order, signed; what cannot be delivered is dead-lettered and replayable.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::{call, start_host, wait_state, EchoServer, Workspace};
use tether_host::webhooks::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "whsec-test-secret";

/// An HTTP receiver that checks each POST's signature, records its events,
/// and answers `status`.
struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    bad_signatures: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr, status: u16) -> Receiver {
        // The previous receiver on this port may still be letting go of it.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let bad: Arc<Mutex<usize>> = Arc::default();
        let (seen, bad2) = (events.clone(), bad.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Head, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break (0, 0);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (end + 4, len);
                    }
                };
                if head_end == 0 {
                    continue;
                }
                while buf.len() < head_end + length {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
                let sig = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Tether-Signature: "))
                    .unwrap_or("")
                    .to_string();
                let t: u64 = sig
                    .split(',')
                    .find_map(|p| p.strip_prefix("t="))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if Webhook::signature(SECRET.as_bytes(), t, &body) != sig {
                    *bad2.lock().unwrap() += 1;
                }
                if status == 200 {
                    let v: Value = serde_json::from_str(&body).unwrap();
                    seen.lock()
                        .unwrap()
                        .extend(v["events"].as_array().unwrap().iter().cloned());
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        Receiver {
            events,
            bad_signatures: bad,
            task,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn scene(name: &str, hook: SocketAddr, extra: &str) -> (EchoServer, Workspace, axum::Router) {
    std::env::set_var("WEBHOOK_TEST_SECRET", SECRET);
    let echo = EchoServer::start().await;
    let ws = Workspace::new(name);
    ws.write(
        "tether.toml",
        &format!(
            r#"
[[client_type]]
name = "feed"
[client_type.defaults]
url = "{}"
auto_connect = true
[client_type.defaults.keepalive]
ping_interval_secs = 0

[[webhook]]
name = "crm"
url = "http://{hook}/hooks/tether"
events = ["message"]
secret_env = "WEBHOOK_TEST_SECRET"
batch = 50
retry_initial_ms = 200
retry_max_ms = 2000
{extra}
"#,
            echo.url()
        ),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "c1"})),
    )
    .await;
    wait_state(&app, "c1", "open").await;
    (echo, ws, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_30_s_gets_all_500_events_in_order_signed() {
    let addr = free_addr();
    let (_echo, _ws, app) = scene("hook-down", addr, "max_attempts = 1000").await;
    let started = tokio::time::Instant::now();
    for i in 0..500 {
        let (s, _) = call(
            &app,
            "POST",
            "/api/clients/c1/send",
            Some(json!({"text": format!("e{i}")})),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // The WebSocket side is not held up by the dead receiver.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = call(&app, "GET", "/api/clients/c1", None).await;
        if v["messages_in"] == 500 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "echoes stalled: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, hooks) = call(&app, "GET", "/api/webhooks", None).await;
    assert!(
        hooks[0]["status"]["last_error"].as_str().is_some(),
        "{hooks}"
    );
    tokio::time::sleep_until(started + Duration::from_secs(30)).await;
    let receiver = Receiver::start(addr, 200).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while receiver.events.lock().unwrap().len() < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} delivered",
            receiver.events.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = receiver.events.lock().unwrap().clone();
    let texts: Vec<&str> = events.iter().map(|e| e["data"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..500).map(|i| format!("e{i}")).collect();
    assert_eq!(texts, expected, "all 500, in order, once");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        *receiver.bad_signatures.lock().unwrap(),
        0,
        "every signature verifies"
    );
    let (_, hooks) = call(&app, "GET", "/api/webhooks", None).await;
    assert_eq!(hooks[0]["lag"], 0, "{hooks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_batches_are_dead_lettered_and_replayable() {
    let addr = free_addr();
    let failing = Receiver::start(addr, 500).await;
    let (_echo, _ws, app) = scene("hook-dead", addr, "max_attempts = 2").await;
    for i in 0..3 {
        call(
            &app,
            "POST",
            "/api/clients/c1/send",
            Some(json!({"text": format!("d{i}")})),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let (s, v) = call(&app, "GET", "/api/webhooks/crm/dead", None).await;
        assert_eq!(s, StatusCode::OK);
        let n: i64 = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["events"].as_i64().unwrap())
            .sum();
        if n == 3 {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("answered 500"),
        "{dead}"
    );
    assert_eq!(dead[0]["attempts"], 2);
    assert_eq!(*failing.bad_signatures.lock().unwrap(), 0);
    drop(failing);
    // The receiver is fixed: replay from before the first dead batch.
    let good = Receiver::start(addr, 200).await;
    let from = dead
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["from_seq"].as_i64().unwrap())
        .min()
        .unwrap();
    let (s, v) = call(
        &app,
        "POST",
        "/api/webhooks/crm/replay",
        Some(json!({"after": from - 1})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while good.events.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let texts: Vec<String> = good
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["d0", "d1", "d2"]);
    let (s, _) = call(
        &app,
        "POST",
        "/api/webhooks/nope/replay",
        Some(json!({"after": 0})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[test]
fn a_webhook_without_its_secret_stops_the_config() {
    std::env::remove_var("WEBHOOK_MISSING_SECRET");
    let e = tether_host::Loaded::parse(
        "[[webhook]]\nname = \"x\"\nurl = \"http://127.0.0.1:1/\"\nsecret_env = \"WEBHOOK_MISSING_SECRET\"\n",
        "t.toml",
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.toml:2") && e.contains("WEBHOOK_MISSING_SECRET"),
        "{e}"
    );
}
