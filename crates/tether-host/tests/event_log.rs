//! The durable event log from a consumer's side: SSE that resumes with
//! Last-Event-ID without gaps or repeats, polling pages, and a clear error
//! for what the log no longer keeps.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{call, start_host, wait_state, EchoServer, Workspace, TOKEN};
use tower::ServiceExt;

/// One SSE event: its id, name and JSON data.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<i64>,
    name: String,
    data: Value,
}

/// An open SSE response body, read event by event.
struct SseReader {
    body: Body,
    buf: String,
}

impl SseReader {
    async fn open(app: &axum::Router, path: &str, last_event_id: Option<i64>) -> SseReader {
        let mut req = Request::get(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        SseReader {
            body: response.into_body(),
            buf: String::new(),
        }
    }

    /// The next event, or None if none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut name, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(SseEvent {
                    id,
                    name,
                    data: serde_json::from_str(&data).unwrap(),
                });
            }
            let frame = tokio::time::timeout(wait, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}

const CONFIG: &str = r#"
[[client_type]]
name = "feed"
[client_type.defaults]
url = "URL"
auto_connect = true
[client_type.defaults.keepalive]
ping_interval_secs = 0
"#;

async fn scene(name: &str) -> (EchoServer, Workspace, axum::Router) {
    let echo = EchoServer::start().await;
    let ws = Workspace::new(name);
    ws.write("tether.toml", &CONFIG.replace("URL", &echo.url()));
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "c1"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_state(&app, "c1", "open").await;
    (echo, ws, app)
}

async fn send(app: &axum::Router, text: &str) {
    let (s, v) = call(
        app,
        "POST",
        "/api/clients/c1/send",
        Some(json!({"text": text})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

async fn next_message(sse: &mut SseReader) -> SseEvent {
    loop {
        let e = sse.next(Duration::from_secs(10)).await.expect("an event");
        if e.name == "message" {
            return e;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_comes_back_gets_exactly_what_it_missed() {
    let (_echo, _ws, app) = scene("log-resume").await;
    let mut sse = SseReader::open(&app, "/api/clients/c1/events", None).await;
    send(&app, "m0").await;
    let first = next_message(&mut sse).await;
    assert_eq!(first.data["data"], "m0");
    let last_seen = first.id.expect("every logged event has an id");
    assert_eq!(first.data["seq"], last_seen);
    drop(sse); // the consumer goes away

    for i in 1..=200 {
        send(&app, &format!("m{i}")).await;
    }
    // Wait until the log has the 200 echoes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, page) = call(
            &app,
            "GET",
            &format!("/api/clients/c1/events?after={last_seen}&limit=1000"),
            None,
        )
        .await;
        let n = page["events"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["event"] == "message").count());
        if n == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {n} logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut sse = SseReader::open(&app, "/api/clients/c1/events", Some(last_seen)).await;
    let mut got = Vec::new();
    while got.len() < 200 {
        let e = sse
            .next(Duration::from_secs(10))
            .await
            .expect("a missed event");
        got.push(e);
    }
    let texts: Vec<&str> = got
        .iter()
        .map(|e| e.data["data"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=200).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected, "exactly the missed messages, in order");
    let ids: Vec<i64> = got.iter().map(|e| e.id.unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free numbers: {ids:?}"
    );
    assert_eq!(ids[0], last_seen + 1);
    // Nothing repeated after the catch-up; then live events follow.
    assert!(sse.next(Duration::from_millis(300)).await.is_none());
    send(&app, "live").await;
    let live = next_message(&mut sse).await;
    assert_eq!(
        (live.data["data"].as_str(), live.id),
        (Some("live"), Some(ids[199] + 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_pages_and_what_the_log_no_longer_keeps() {
    let (_echo, _ws, app) = scene("log-poll").await;
    for i in 0..5 {
        send(&app, &format!("p{i}")).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let all = loop {
        let (s, v) = call(&app, "GET", "/api/events?after=0&limit=1000", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let events = v["events"].as_array().unwrap().clone();
        if events.iter().filter(|e| e["event"] == "message").count() == 5 {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Open, state changes and the messages, numbered 1, 2, 3, … without gaps.
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(all.iter().any(|e| e["event"] == "open"));
    // Pages follow one another.
    let (_, p1) = call(&app, "GET", "/api/events?after=0&limit=2", None).await;
    assert_eq!(p1["next_after"], 2);
    let (_, p2) = call(&app, "GET", "/api/events?after=2&limit=2", None).await;
    assert_eq!(p2["events"][0]["seq"], 3);
    // Nothing was trimmed yet: any point before the start is fine.
    let (s, v) = call(&app, "GET", "/api/events?after=-5&limit=1", None).await;
    assert_eq!(
        (s, &v["events"][0]["seq"]),
        (StatusCode::OK, &json!(1)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_trimmed_events_is_gone() {
    let echo = EchoServer::start().await;
    let ws = Workspace::new("log-gone");
    ws.write("tether.toml", &CONFIG.replace("URL", &echo.url()));
    let store = tether_host::SqliteStore::open(&ws.store_url())
        .await
        .unwrap();
    use tether_host::Store;
    let rows: Vec<(String, i64, String)> = (0..10)
        .map(|i| {
            (
                "c1".to_string(),
                tether_host::store::now_ms(),
                json!({"client": "c1", "event": "module", "data": i}).to_string(),
            )
        })
        .collect();
    store.events_append(&rows).await.unwrap();
    assert_eq!(store.events_trim(4, -1).await.unwrap(), 6);
    store.close().await;
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let (s, v) = call(&app, "GET", "/api/events?after=2", None).await;
    assert_eq!(s, StatusCode::GONE, "{v}");
    assert_eq!(
        (v["error"].as_str(), v["oldest"].as_i64()),
        (Some("events_gone"), Some(7))
    );
    assert!(
        v["detail"].as_str().unwrap().contains("resume from 6"),
        "{v}"
    );
    let (s, v) = call(&app, "GET", "/api/events?after=6&limit=10", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["events"][0]["seq"], 7);
    let req = Request::get("/api/events")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
}

/// A quiet stream gets a comment line every keep-alive interval (so a proxy
/// does not close it), and the events that come later still arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_keep_alives_and_then_its_events() {
    let echo = EchoServer::start().await;
    let ws = Workspace::new("keepalive");
    ws.write("tether.toml", &CONFIG.replace("URL", &echo.url()));
    let store: std::sync::Arc<dyn tether_host::Store> = std::sync::Arc::new(
        tether_host::SqliteStore::open(&ws.store_url())
            .await
            .unwrap(),
    );
    let host = tether_host::Host::start(&ws.config(), store).await.unwrap();
    let mut state =
        tether_host::api::AppState::new(host.clone(), tether_host::api::TokenCheck::new(TOKEN));
    state.sse_keep_alive = Duration::from_millis(100);
    let app = tether_host::api::router(state);
    let response = app
        .clone()
        .oneshot(
            Request::get("/api/events")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("accept", "text/event-stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(550);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, body.frame()).await {
        if let Ok(bytes) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    let keep_alives = seen.matches(": keep-alive\n\n").count();
    assert!((3..=6).contains(&keep_alives), "{keep_alives} in {seen:?}");
    assert!(!seen.contains("event:"), "{seen:?}");
    // Then an event: a client is created and opens.
    let (s, _) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "feed", "key": "late"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut sse = SseReader {
        body,
        buf: String::new(),
    };
    let e = sse.next(Duration::from_secs(10)).await.expect("an event");
    assert_eq!(e.data["client"], "late", "{e:?}");
    assert!(e.id.is_some());
}

/// A host that shut down inside a longer-lived process leaves no task
/// behind holding its store: the log's writer and trimmer end with the bus.
#[tokio::test]
async fn a_dropped_event_bus_lets_go_of_the_store() {
    use std::sync::Arc;
    use tether_host::events::{EventBus, Retention};
    let ws = Workspace::new("log-drop");
    let store: Arc<dyn tether_host::Store> = Arc::new(
        tether_host::SqliteStore::open(&ws.store_url())
            .await
            .unwrap(),
    );
    let bus = EventBus::with_log(16, store.clone(), Retention::default());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        Arc::strong_count(&store) > 1,
        "the bus's tasks hold the store"
    );
    drop(bus);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} holders of the store remain after the bus was dropped",
            Arc::strong_count(&store) - 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bounds of an empty log read while its first event is appended:
/// `(1, 0)` before and `(1, 1)` after, never "trimmed past 1" (which made
/// `GET /api/events?after=0` answer 410 at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_read_during_the_first_append_never_look_trimmed() {
    use tether_host::Store;
    for round in 0..40 {
        let ws = Workspace::new(&format!("log-bounds-{round}"));
        let store = std::sync::Arc::new(
            tether_host::SqliteStore::open(&ws.store_url())
                .await
                .unwrap(),
        );
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let row = ("c1".to_string(), 1, "{}".to_string());
                store.events_append(&[row]).await.unwrap()
            })
        };
        let mut reads = 0;
        loop {
            let (lo, hi) = store.events_bounds().await.unwrap();
            reads += 1;
            assert_eq!(
                lo, 1,
                "round {round}, read {reads}: bounds ({lo}, {hi}) with nothing trimmed"
            );
            if hi == 1 {
                break;
            }
            assert_eq!(hi, 0);
        }
        assert_eq!(writer.await.unwrap(), [1]);
        store.close().await;
    }
}
