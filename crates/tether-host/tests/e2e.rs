//! The host against real echo servers: instances through the API, module
//! emits, restarts on the same SQLite file, reconnects, and handler failures
//! that must not take anything down.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use support::{call, start_host, wait_event, wait_state, EchoServer, Workspace};

fn config(echo_url: &str) -> String {
    format!(
        r#"
[[client_type]]
name = "relay"
module = "modules/relay.lua"
[client_type.defaults]
url = "{echo_url}"
[client_type.defaults.reconnect]
initial_delay_ms = 50
max_delay_ms = 200
[client_type.defaults.keepalive]
ping_interval_secs = 0

[[client_type]]
name = "pinned"
predefined = true
[client_type.defaults]
url = "{echo_url}"
auto_connect = true
[client_type.defaults.reconnect]
initial_delay_ms = 50
max_delay_ms = 200
"#
    )
}

const RELAY: &str = r#"
local lib = require("lib.shape")
function before_connect(client)
  client.headers["X-Attempt"] = "yes"
end
function on_open(conn)
  emit({ opened = conn.key, state = conn.state })
end
function on_message(conn, msg)
  if msg.data == "boom" then
    local t = nil
    return t.field            -- runtime error, line 12
  end
  if msg.data == "spin" then
    while true do end         -- runaway loop
  end
  if msg.data == "after" then
    timer.after(20, function() emit({ timer = "fired" }) end)
    return
  end
  emit(lib.shape(msg))
end
"#;

const SHAPE: &str = r#"
local M = {}
function M.shape(msg)
  local ok, value = pcall(json.decode, msg.data)
  return { kind = msg.type, body = ok and value or msg.data }
end
return M
"#;

fn workspace(echo: &EchoServer) -> Workspace {
    let ws = Workspace::new("e2e");
    std::fs::create_dir_all(ws.dir.join("modules/lib")).unwrap();
    ws.write("tether.toml", &config(&echo.url()))
        .write("modules/relay.lua", RELAY)
        .write("modules/lib/shape.lua", SHAPE);
    ws
}

#[tokio::test]
async fn instance_connects_and_module_emits_reach_the_event_stream() {
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut events = host.events().subscribe();

    let (s, v) = call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "relay", "key": "r1", "auto_connect": false})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = call(&app, "POST", "/api/clients/r1/connect", None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let opened = wait_event(&mut events, "r1", |b| b["event"] == "module").await;
    assert_eq!(opened["data"], json!({"opened": "r1", "state": "open"}));
    wait_state(&app, "r1", "open").await;

    let (s, _) = call(
        &app,
        "POST",
        "/api/clients/r1/send",
        Some(json!({"text": "{\"price\": 12.5}"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let emitted = wait_event(&mut events, "r1", |b| b["event"] == "module").await;
    assert_eq!(
        emitted["data"],
        json!({"kind": "text", "body": {"price": 12.5}})
    );

    let (_, v) = call(
        &app,
        "POST",
        "/api/clients/r1/send",
        Some(json!({"base64": "AAEC"})),
    )
    .await;
    assert_eq!(v["queued"], true);
    let echoed = wait_event(&mut events, "r1", |b| b["event"] == "message").await;
    assert_eq!(
        echoed,
        json!({"event": "message", "type": "binary", "base64": "AAEC"})
    );

    let v = wait_state(&app, "r1", "open").await;
    assert_eq!(
        (v["messages_out"].as_u64(), v["messages_in"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(v["connected_since"].is_string());

    call(&app, "POST", "/api/clients/r1/disconnect", None).await;
    wait_state(&app, "r1", "closed").await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients/r1/send",
        Some(json!({"text": "x"})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("not_open"))
    );
}

#[tokio::test]
async fn sse_endpoint_streams_events() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    wait_state(&app, "pinned", "open").await;
    let req = axum::http::Request::get("/api/clients/pinned/events")
        .header("authorization", format!("Bearer {}", support::TOKEN))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    call(
        &app,
        "POST",
        "/api/clients/pinned/send",
        Some(json!({"text": "over sse"})),
    )
    .await;
    let mut seen = String::new();
    while !seen.contains("over sse") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("event: message\ndata: {"), "{seen}");
    assert!(seen.contains("\"client\":\"pinned\""), "{seen}");
}

#[tokio::test]
async fn restart_on_the_same_store_keeps_instances_and_reconnects_auto_ones() {
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    {
        let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
        call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "relay", "key": "auto", "auto_connect": true})),
        )
        .await;
        call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "relay", "key": "manual", "auto_connect": false})),
        )
        .await;
        wait_state(&app, "auto", "open").await;
        host.shutdown().await;
    }
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    wait_state(&app, "auto", "open").await;
    wait_state(&app, "pinned", "open").await;
    let v = wait_state(&app, "manual", "closed").await;
    assert_eq!(v["type"], "relay");
    let (_, audit) = call(&app, "GET", "/api/audit", None).await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "create" && e["key"] == "auto"));
}

#[tokio::test]
async fn lost_link_reconnects_when_the_server_returns() {
    let echo = EchoServer::start().await;
    let addr = echo.addr;
    let ws = workspace(&echo);
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut events = host.events().subscribe();
    wait_state(&app, "pinned", "open").await;
    echo.stop();
    wait_event(&mut events, "pinned", |b| {
        b["event"] == "close" && b["code"] == 1006
    })
    .await;
    wait_event(&mut events, "pinned", |b| {
        b["event"] == "state" && b["state"] == "reconnecting"
    })
    .await;
    let _again = EchoServer::start_on(addr).await;
    let v = wait_state(&app, "pinned", "open").await;
    assert!(v["reconnects"].as_u64().unwrap() >= 1);
    assert!(v["last_error"].as_str().is_some());
}

#[tokio::test]
async fn lua_runtime_error_and_runaway_loop_leave_everything_running() {
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut events = host.events().subscribe();
    call(
        &app,
        "POST",
        "/api/clients",
        Some(json!({"type": "relay", "key": "r", "auto_connect": true})),
    )
    .await;
    wait_state(&app, "r", "open").await;

    call(
        &app,
        "POST",
        "/api/clients/r/send",
        Some(json!({"text": "boom"})),
    )
    .await;
    let err = wait_event(&mut events, "r", |b| b["event"] == "error").await;
    let message = err["message"].as_str().unwrap();
    assert_eq!(err["kind"], "module");
    assert!(
        message.contains("relay.lua:12:"),
        "names the line: {message}"
    );

    let started = std::time::Instant::now();
    call(
        &app,
        "POST",
        "/api/clients/r/send",
        Some(json!({"text": "spin"})),
    )
    .await;
    // Another client is served while r's handler spins.
    call(
        &app,
        "POST",
        "/api/clients/pinned/send",
        Some(json!({"text": "still here"})),
    )
    .await;
    let other = wait_event(&mut events, "pinned", |b| b["event"] == "message").await;
    assert_eq!(other["data"], "still here");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "a slow handler stalled another client"
    );
    let err = wait_event(&mut events, "r", |b| b["event"] == "error").await;
    assert!(
        err["message"].as_str().unwrap().contains("CPU limit"),
        "{err}"
    );

    // The same connection and module keep working.
    call(
        &app,
        "POST",
        "/api/clients/r/send",
        Some(json!({"text": "[1,2]"})),
    )
    .await;
    let ok = wait_event(&mut events, "r", |b| b["event"] == "module").await;
    assert_eq!(ok["data"]["body"], json!([1, 2]));
    call(
        &app,
        "POST",
        "/api/clients/r/send",
        Some(json!({"text": "after"})),
    )
    .await;
    let fired = wait_event(&mut events, "r", |b| {
        b["event"] == "module" && b["data"]["timer"].is_string()
    })
    .await;
    assert_eq!(fired["data"]["timer"], "fired");
    wait_state(&app, "r", "open").await;
}

#[tokio::test]
async fn removed_type_leaves_instances_disabled() {
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    {
        let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
        call(
            &app,
            "POST",
            "/api/clients",
            Some(json!({"type": "relay", "key": "old", "auto_connect": true})),
        )
        .await;
        host.shutdown().await;
    }
    // The same store, a config without "relay".
    ws.write(
        "tether.toml",
        &format!(
            "[[client_type]]\nname = \"other\"\n[client_type.defaults]\nurl = \"{}\"\n",
            echo.url()
        ),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let v = wait_state(&app, "old", "disabled").await;
    assert_eq!(v["orphaned"], true);
    let (s, _) = call(&app, "POST", "/api/clients/old/connect", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Kept, and deletable by hand.
    let (s, _) = call(&app, "DELETE", "/api/clients/old", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn dynamic_connections_live_until_closed() {
    let echo = EchoServer::start().await;
    let ws = workspace(&echo);
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut events = host.events().subscribe();
    let (s, v) = call(
        &app,
        "POST",
        "/api/connections",
        Some(json!({"key": "dyn", "url": echo.url(), "type": "relay"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_event(&mut events, "dyn", |b| b["event"] == "open").await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/connections",
        Some(json!({"key": "dyn", "url": echo.url()})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    call(
        &app,
        "POST",
        "/api/connections/dyn/send",
        Some(json!({"text": "{\"a\":1}"})),
    )
    .await;
    let m = wait_event(&mut events, "dyn", |b| {
        b["event"] == "module" && b["data"]["body"].is_object()
    })
    .await;
    assert_eq!(m["data"]["body"]["a"], 1);
    let (_, list) = call(&app, "GET", "/api/connections", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _) = call(&app, "DELETE", "/api/connections/dyn", None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = call(&app, "GET", "/api/connections/dyn", None).await;
        if s == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dynamic connection never went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Never stored.
    let (s, _) = call(&app, "GET", "/api/clients/dyn", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A predefined client `t` open to a server that completes the handshake
/// and then neither reads nor answers anything (for a minute).
async fn open_to_a_silent_server(
    name: &str,
) -> (tokio::task::JoinHandle<()>, Workspace, axum::Router) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(ws);
    });
    let ws = Workspace::new(name);
    ws.write(
        "tether.toml",
        &format!(
            "[[client_type]]\nname = \"t\"\npredefined = true\n[client_type.defaults]\nurl = \"{url}\"\nauto_connect = true\n[client_type.defaults.keepalive]\nping_interval_secs = 0\n"
        ),
    );
    let (_host, app) = start_host(&ws.config(), &ws.store_url()).await;
    wait_state(&app, "t", "open").await;
    (server, ws, app)
}

/// A server that completes the handshake and then never reads, so the
/// client's outgoing buffer fills: sends are accepted up to the 16 MiB
/// limit, then refused with 429 `buffer_full` (not `not_open`), and every
/// accepted one was counted.
#[tokio::test]
async fn a_send_the_buffer_cannot_take_is_429_buffer_full_not_409() {
    let (server, _ws, app) = open_to_a_silent_server("e2e-full").await;
    let chunk = "x".repeat(512 << 10);
    let mut accepted = 0u64;
    let refusal = loop {
        let (s, v) = call(
            &app,
            "POST",
            "/api/clients/t/send",
            Some(json!({ "text": chunk })),
        )
        .await;
        if s != StatusCode::ACCEPTED && s != StatusCode::OK {
            break (s, v);
        }
        accepted += 1;
        assert!(
            accepted < 400,
            "200 MiB accepted by a server that never reads"
        );
    };
    assert_eq!(refusal.0, StatusCode::TOO_MANY_REQUESTS, "{}", refusal.1);
    assert_eq!(refusal.1["error"], "buffer_full", "{}", refusal.1);
    assert_eq!(refusal.1["limit_bytes"], 16 << 20);
    // Refused only because this message no longer fits, and the buffer's
    // worth went in before the refusal, all counted.
    let buffered = refusal.1["buffered_bytes"].as_u64().unwrap();
    assert!(buffered + (512 << 10) > 16 << 20, "{}", refusal.1);
    assert!(accepted >= 31, "only {accepted} accepted");
    let v = wait_state(&app, "t", "open").await;
    assert_eq!(v["messages_out"], accepted, "{v}");
    server.abort();
}

/// An operator's disconnect to a server that never answers the close: the
/// client is closing for the close timeout, and a send meanwhile is 409
/// `closing` (not `not_open`: it was open a moment ago and will not be).
#[tokio::test]
async fn a_send_while_closing_is_409_closing() {
    let (server, _ws, app) = open_to_a_silent_server("e2e-closing").await;
    let (s, _) = call(&app, "POST", "/api/clients/t/disconnect", None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_state(&app, "t", "closing").await;
    let (s, v) = call(
        &app,
        "POST",
        "/api/clients/t/send",
        Some(json!({"text": "late"})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("closing")),
        "{v}"
    );
    server.abort();
}
