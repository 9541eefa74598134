//! The durable outbox against real servers that go away: counts, order and
//! the absence of loss, not just "no error".

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{call, start_host, wait_state, Workspace};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How the recording server treats what it receives.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Records every text message.
    Record,
    /// Records, answers `{"ack": id}` for every other message (by JSON
    /// `id`) on the first connection, then drops that connection after
    /// `drop_after` messages; on later connections it acks everything.
    AckEveryOtherThenDrop { drop_after: usize },
    /// Drops the connection as soon as a message arrives (never records).
    DropOnMessage,
}

/// A WebSocket server that records the text messages it gets, in order.
struct Recorder {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<String>>>,
    accept: JoinHandle<()>,
}

impl Recorder {
    async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Recorder {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = got.clone();
        let accept = tokio::spawn(async move {
            let mut connections = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                connections += 1;
                let first = connections == 1;
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    let mut n = 0usize;
                    while let Some(Ok(msg)) = ws.next().await {
                        let Message::Text(text) = msg else { continue };
                        n += 1;
                        match behaviour {
                            Behaviour::Record => seen.lock().unwrap().push(text.to_string()),
                            Behaviour::DropOnMessage => return,
                            Behaviour::AckEveryOtherThenDrop { drop_after } => {
                                seen.lock().unwrap().push(text.to_string());
                                let id = serde_json::from_str::<Value>(&text).unwrap()["id"]
                                    .as_u64()
                                    .unwrap();
                                if !first || id.is_multiple_of(2) {
                                    let ack = json!({"ack": id}).to_string();
                                    if ws.send(ack.into()).await.is_err() {
                                        return;
                                    }
                                }
                                if first && n == drop_after {
                                    return; // drop the link without a close
                                }
                            }
                        }
                    }
                });
            }
        });
        Recorder { addr, got, accept }
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(url: &str, outbox: &str, module: Option<&str>) -> String {
    let module = module.map_or(String::new(), |m| format!("module = \"modules/{m}\"\n"));
    format!(
        r#"
[[client_type]]
name = "feed"
{module}[client_type.outbox]
{outbox}
[client_type.defaults]
url = "{url}"
auto_connect = true
[client_type.defaults.reconnect]
initial_delay_ms = 50
max_delay_ms = 200
[client_type.defaults.keepalive]
ping_interval_secs = 0
"#
    )
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `key`'s outbox counts until `done` holds; returns them.
async fn wait_stats(
    app: &axum::Router,
    key: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let stats = outbox(app, key).await["stats"].clone();
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox of {key}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox(app: &axum::Router, key: &str) -> Value {
    call(
        app,
        "GET",
        &format!("/api/clients/{key}/outbox?limit=10000"),
        None,
    )
    .await
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_down_server_all_arrive_in_order_once_it_is_up() {
    let addr = free_addr();
    let ws = Workspace::new("outbox-down");
    ws.write(
        "tether.toml",
        &config(&format!("ws://{addr}/"), "durable = true", None),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for i in 0..1000 {
        let (s, v) = call(
            &app,
            "POST",
            "/api/clients/f1/send",
            Some(json!({"text": format!("m{i}")})),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(
            (v["durable"].as_bool(), v["seq"].is_i64()),
            (Some(true), true)
        );
    }
    assert_eq!(outbox(&app, "f1").await["stats"]["pending"], 1000);
    let metrics = call(&app, "GET", "/metrics", None).await.1;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tether_outbox_depth{client=\"f1\"} 1000"),
        "{metrics}"
    );
    let age: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_outbox_oldest_age_seconds{client=\"f1\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the oldest message's age");
    assert!(age > 0.0, "{metrics}");
    let server = Recorder::start_on(addr, Behaviour::Record).await;
    wait_for("1000 messages", 30, || server.got().len() >= 1000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(server.got(), expected, "every message once, in order");
    let stats = wait_stats(&app, "f1", 10, |s| s["done"] == 1000).await;
    assert_eq!(
        (stats["pending"].as_u64(), stats["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
    let metrics = call(&app, "GET", "/metrics", None).await.1;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tether_outbox_depth{client=\"f1\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_outbox_messages{client=\"f1\",status=\"done\"} 1000"),
        "{metrics}"
    );
    let status = call(&app, "GET", "/api/clients/f1", None).await.1;
    assert_eq!(status["messages_out"], 1000, "durable sends are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_mode_resends_what_was_not_acknowledged_before_the_link_dropped() {
    let server = Recorder::start_on(
        "127.0.0.1:0".parse().unwrap(),
        Behaviour::AckEveryOtherThenDrop { drop_after: 10 },
    )
    .await;
    let ws = Workspace::new("outbox-ack");
    ws.write(
        "tether.toml",
        &config(
            &format!("ws://{}/", server.addr),
            "durable = true",
            Some("acks.lua"),
        ),
    )
    .write(
        "modules/acks.lua",
        r#"
function outbox_ack(msg)
  local ok, v = pcall(json.decode, msg.data)
  if ok and type(v) == "table" then return v.ack end
end
"#,
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f1"})),
    )
    .await;
    for i in 0..20 {
        let (s, v) = call(
            &app,
            "POST",
            "/api/clients/f1/send",
            Some(json!({"text": json!({"id": i}).to_string(), "id": i.to_string()})),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let last = wait_stats(&app, "f1", 30, |s| s["done"] == 20).await;
    assert_eq!(
        last,
        json!({"pending": 0, "in_flight": 0, "done": 20, "expired": 0, "dead": 0, "oldest_ms": null})
    );
    // Every id reached the server; the odd ones of the first ten twice (sent,
    // not acknowledged, link dropped, sent again).
    let ids: Vec<u64> = server
        .got()
        .iter()
        .map(|t| {
            serde_json::from_str::<Value>(t).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    for i in 0..20 {
        assert!(ids.contains(&i), "id {i} never arrived: {ids:?}");
    }
    let resent = ids.len() - 20;
    assert!(
        resent >= 5,
        "the unacknowledged odd ids were not resent: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_ids_ttl_and_attempts() {
    let down = free_addr();
    let ws = Workspace::new("outbox-limits");
    // Ack mode with acks that never come: every delivery is an attempt
    // however fast the socket takes the bytes (done-once-written would race
    // the server's drop).
    ws.write(
        "modules/never_acks.lua",
        "function outbox_ack(msg) return nil end\n",
    );
    ws.write(
        "tether.toml",
        &config(
            &format!("ws://{down}/"),
            "max_messages = 3\nmax_attempts = 2",
            Some("never_acks.lua"),
        ),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f1", "auto_connect": false})),
    )
    .await;
    // Not durable unless asked (the type says durable = false).
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients/f1/send",
        Some(json!({"text": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let send = |body: Value| {
        let app = app.clone();
        async move { call(&app, "POST", "/api/clients/f1/send", Some(body)).await }
    };
    let (s, first) = send(json!({"text": "a", "durable": true, "id": "order-1"})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, again) = send(json!({"text": "a", "durable": true, "id": "order-1"})).await;
    assert_eq!(
        (again["duplicate"].as_bool(), &again["seq"]),
        (Some(true), &first["seq"])
    );
    send(json!({"text": "b", "durable": true, "ttl_secs": 0})).await;
    send(json!({"text": "c", "durable": true})).await;
    let (s, v) = send(json!({"text": "d", "durable": true})).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"], "outbox_full");
    assert!(
        v["detail"].as_str().unwrap().contains("max_messages"),
        "{v}"
    );
    let (s, v) = send(json!({"text": "e", "id": "x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // A server that drops the link on every message: attempts run out.
    let _server = Recorder::start_on(down, Behaviour::DropOnMessage).await;
    call(
        &app,
        "PATCH",
        "/api/clients/f1",
        Some(json!({"auto_connect": true})),
    )
    .await;
    call(&app, "POST", "/api/clients/f1/connect", None).await;
    let stats = wait_stats(&app, "f1", 20, |s| s["dead"] == 2 && s["expired"] == 1).await;
    assert_eq!(
        (stats["pending"].as_u64(), stats["done"].as_u64()),
        (Some(0), Some(0))
    );
    let dead = call(&app, "GET", "/api/clients/f1/outbox?status=dead", None)
        .await
        .1;
    let dead = dead["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["id"], "order-1");
    assert_eq!(dead[0]["attempts"], 2);
    assert!(dead[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("gave up after 2 attempts"));
    // Retry puts them back; purge removes what is not in flight.
    let (s, v) = call(&app, "POST", "/api/clients/f1/outbox/retry", None).await;
    assert_eq!((s, v["retried"].as_u64()), (StatusCode::ACCEPTED, Some(3)));
    call(&app, "POST", "/api/clients/f1/disconnect", None).await;
    wait_state(&app, "f1", "closed").await;
    let (s, v) = call(
        &app,
        "DELETE",
        "/api/clients/f1/outbox?status=nonsense",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = call(&app, "DELETE", "/api/clients/f1/outbox", None).await;
    assert_eq!(
        v["purged"], 3,
        "what was in flight went back to pending at the disconnect"
    );
    assert_eq!(outbox(&app, "f1").await["messages"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_sends_durably_and_says_when_it_is_ready() {
    let server = Recorder::start_on("127.0.0.1:0".parse().unwrap(), Behaviour::Record).await;
    let ws = Workspace::new("outbox-lua");
    ws.write(
        "tether.toml",
        &config(
            &format!("ws://{}/", server.addr),
            "ready = \"module\"",
            Some("login.lua"),
        ),
    )
    .write(
        "modules/login.lua",
        r#"
function on_open(conn)
  conn:send("login")                                  -- plain, goes first
  local seq = conn:send("from-module", { durable = true, id = "m1" })
  emit({ seq = seq })
  timer.after(200, function() conn:ready() end)        -- after the "login reply"
end
"#,
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "f1", "auto_connect": false})),
    )
    .await;
    let (s, _) = call(
        &app,
        "POST",
        "/api/clients/f1/send",
        Some(json!({"text": "queued-before", "durable": true})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    call(&app, "POST", "/api/clients/f1/connect", None).await;
    wait_for("three messages", 10, || server.got().len() >= 3).await;
    assert_eq!(server.got(), ["login", "queued-before", "from-module"]);
    // Every send is counted, the module's own plain one too.
    let v = call(&app, "GET", "/api/clients/f1", None).await.1;
    assert_eq!(
        (v["messages_out"].as_u64(), v["bytes_out"].as_u64()),
        (Some(3), Some(5 + 13 + 11))
    );
}
