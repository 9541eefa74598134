//! permessage-deflate interop with servers nobody here wrote: Python
//! websockets and Node ws, each with and without context takeover.
//! The peers are installed by `scripts/install-peers.sh`.
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tether::{connect, ConnectOptions, Event, Message};

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts a peer echo server on a free port; returns it and its port.
fn start(program: &str, script: &str, extra: &[&str]) -> (Peer, u16) {
    let program = root().join(program);
    assert!(
        program.exists() || !program.to_string_lossy().contains('/'),
        "{} is missing: run scripts/install-peers.sh first",
        program.display()
    );
    let mut child = Command::new(&program)
        .arg(root().join(script))
        .arg("0")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run scripts/install-peers.sh",
                program.display()
            )
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("peer did not start: {line:?}"));
    (Peer(child), port)
}

fn python(extra: &[&str]) -> (Peer, u16) {
    start(
        "target/peers/venv/bin/python",
        "scripts/peers/echo_server.py",
        extra,
    )
}

fn node(extra: &[&str]) -> (Peer, u16) {
    assert!(
        root().join("target/peers/node_modules/ws").exists(),
        "node ws is missing: run scripts/install-peers.sh first"
    );
    start("/usr/bin/node", "scripts/peers/echo_server.js", extra)
}

fn payloads() -> Vec<Message> {
    let json = |i: usize| {
        format!("{{\"seq\":{i},\"symbol\":\"ACME\",\"bid\":101.{i},\"ask\":102.{i},\"venue\":\"XNAS\"}}")
    };
    let mut v: Vec<Message> = (0..50).map(|i| Message::Text(json(i))).collect();
    v.push(Message::Text(String::new()));
    v.push(Message::Text("short".into()));
    v.push(Message::Text("ünïcödé ✓ ".repeat(500)));
    // Incompressible bytes.
    let mut x: u32 = 12345;
    v.push(Message::Binary(
        (0..200_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect(),
    ));
    v.push(Message::Binary(vec![7u8; 3 << 20]));
    v
}

async fn exchange(port: u16, options: &ConnectOptions) {
    let url = format!("ws://127.0.0.1:{port}/");
    let (conn, mut rx) = tokio::time::timeout(Duration::from_secs(10), connect(&url, options))
        .await
        .expect("connect timed out")
        .expect("connect");
    for m in payloads() {
        match &m {
            Message::Text(t) => conn.send_text(t).await.unwrap(),
            Message::Binary(b) => conn.send_binary(b).await.unwrap(),
        }
        let echoed = tokio::time::timeout(Duration::from_secs(10), rx.next_message())
            .await
            .expect("echo timed out")
            .unwrap_or_else(|c| panic!("closed: {c:?}"));
        assert_eq!(echoed, m);
    }
    conn.close(1000, "").unwrap();
    loop {
        match rx.next().await {
            Some(Event::Closed(c)) => {
                assert!(c.clean, "{c:?}");
                break;
            }
            Some(_) => {}
            None => panic!("no close"),
        }
    }
}

async fn check(peer: (Peer, u16), options: ConnectOptions, compression: bool) {
    let (_peer, port) = peer;
    // Whether compression was negotiated is visible on the Open event.
    let (conn, mut rx) =
        tether::open("probe", &format!("ws://127.0.0.1:{port}/"), &options).unwrap();
    match rx.next().await {
        Some(Event::Open { compression: c, .. }) => assert_eq!(c, compression),
        other => panic!("{other:?}"),
    }
    conn.close(1000, "").unwrap();
    exchange(port, &options).await;
}

fn no_ctx_options() -> ConnectOptions {
    let mut o = ConnectOptions::new();
    o.deflate(tether::DeflateConfig {
        client_no_context_takeover: true,
        server_no_context_takeover: true,
        ..Default::default()
    });
    o
}

#[tokio::test]
async fn python_websockets_with_context_takeover() {
    check(python(&[]), ConnectOptions::new(), true).await;
}

#[tokio::test]
async fn python_websockets_without_context_takeover() {
    check(python(&["--no-context-takeover"]), no_ctx_options(), true).await;
}

#[tokio::test]
async fn python_websockets_with_a_small_window() {
    check(
        python(&["--max-window-bits", "9"]),
        ConnectOptions::new(),
        true,
    )
    .await;
}

#[tokio::test]
async fn python_websockets_uncompressed() {
    let mut o = ConnectOptions::new();
    o.compression(false);
    check(python(&[]), o, false).await;
}

#[tokio::test]
async fn node_ws_with_context_takeover() {
    check(node(&[]), ConnectOptions::new(), true).await;
}

#[tokio::test]
async fn node_ws_without_context_takeover() {
    check(node(&["--no-context-takeover"]), no_ctx_options(), true).await;
}
