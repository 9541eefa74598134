//! `before_close`: a module's protocol goodbye on an operator's close.

mod support;

use std::time::{Duration, Instant};

use support::{call, start_host, wait_event, EchoServer, Workspace};

async fn run(module: &str) -> (serde_json::Value, Duration, Vec<serde_json::Value>) {
    let echo = EchoServer::start().await;
    let ws = Workspace::with_module("goodbye", module, &echo.url());
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let mut rx = host.events().subscribe();
    call(&app, "POST", "/api/clients/t/connect", None).await;
    wait_event(&mut rx, "t", |b| b["event"] == "open").await;
    let asked = Instant::now();
    let (status, _) = call(&app, "POST", "/api/clients/t/disconnect", None).await;
    assert_eq!(status, 202);
    let mut seen = Vec::new();
    let closed = loop {
        let e = wait_event(&mut rx, "t", |_| true).await;
        if e["event"] == "close" {
            break e;
        }
        seen.push(e);
    };
    let took = asked.elapsed();
    // Closed means closed: no reconnect follows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = call(&app, "GET", "/api/clients/t", None).await;
    assert_eq!(v["state"], "closed", "{v}");
    host.shutdown().await;
    (closed, took, seen)
}

#[tokio::test]
async fn the_module_says_goodbye_and_closes_when_answered() {
    let (closed, took, seen) = run(
        "function before_close(conn) conn:send('bye') return true end\n\
         function on_message(conn, msg) if msg.data == 'bye' then conn:close(1000, 'goodbye answered') end end\n",
    )
    .await;
    assert_eq!(closed["code"], 1000);
    assert_eq!(closed["reason"], "goodbye answered", "{closed}");
    assert!(
        seen.iter()
            .any(|e| e["event"] == "message" && e["data"] == "bye"),
        "{seen:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_goodbye_never_answered_ends_after_the_grace() {
    let (closed, took, _) = run("function before_close(conn) return true end\n").await;
    assert_eq!(closed["code"], 1000);
    assert_eq!(closed["reason"], "disconnected by operator", "{closed}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn without_before_close_the_close_is_immediate() {
    let (closed, took, _) = run("function on_open(conn) end\n").await;
    assert_eq!(closed["reason"], "disconnected by operator", "{closed}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
