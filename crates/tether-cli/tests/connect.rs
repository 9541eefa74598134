//! `tether connect` as a user runs it: the real binary, stdin and stdout,
//! against a tungstenite echo server on loopback.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;
use support::echo_server;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Runs `tether ARGS` with `input` on stdin.
async fn tether(args: Vec<String>, input: &'static [u8]) -> Output {
    support::run_tether(args, input, Duration::from_millis(300)).await
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn lines_go_out_and_echoes_are_printed() {
    let addr = echo_server().await;
    let out = tether(
        vec!["connect".into(), format!("ws://{addr}/")],
        b"hello\nsecond line\r\n",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nsecond line\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn json_output_reports_every_event() {
    let addr = echo_server().await;
    let out = tether(
        vec!["connect".into(), "--json".into(), format!("ws://{addr}/")],
        b"hi\n",
    )
    .await;
    let events = lines(&out);
    assert_eq!(events[0]["event"], "open");
    assert_eq!(
        events[1],
        serde_json::json!({"event": "message", "type": "text", "data": "hi"})
    );
    assert_eq!(events[2]["event"], "close");
    assert_eq!(events[2]["code"], 1000);
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn binary_mode_prints_base64() {
    let addr = echo_server().await;
    let out = tether(
        vec![
            "connect".into(),
            "--binary".into(),
            "--json".into(),
            format!("ws://{addr}/"),
        ],
        b"abc\n",
    )
    .await;
    let events = lines(&out);
    assert_eq!(
        events[1],
        serde_json::json!({"event": "message", "type": "binary", "base64": "YWJj"})
    );
}

#[tokio::test]
async fn rejected_handshake_names_the_status_and_exits_1() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let out = tether(
        vec!["connect".into(), "--json".into(), format!("ws://{addr}/")],
        b"",
    )
    .await;
    let events = lines(&out);
    assert_eq!(events[0]["event"], "error");
    assert_eq!(events[0]["kind"], "handshake");
    assert_eq!(events[0]["status"], 403);
    assert!(events[0]["message"].as_str().unwrap().contains("403"));
    assert_eq!(
        events[1],
        serde_json::json!({"event": "close", "code": 1006, "reason": ""})
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn abnormal_closure_exits_1_with_1006() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            drop(ws); // TCP ends without a close frame
        }
    });
    let out = tether(
        vec!["connect".into(), "--json".into(), format!("ws://{addr}/")],
        b"",
    )
    .await;
    let events = lines(&out);
    let close = events.iter().find(|e| e["event"] == "close").unwrap();
    assert_eq!(close["code"], 1006);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn server_close_code_other_than_1000_exits_1() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "nope".into(),
                }))
                .await;
            while ws.next().await.is_some() {}
        }
    });
    let out = tether(
        vec!["connect".into(), "--json".into(), format!("ws://{addr}/")],
        b"",
    )
    .await;
    let events = lines(&out);
    let close = events.iter().find(|e| e["event"] == "close").unwrap();
    assert_eq!(
        (close["code"].as_u64(), close["reason"].as_str()),
        (Some(1008), Some("nope"))
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        vec!["connect"],
        vec!["connect", "http://127.0.0.1:1/"],
        vec!["connect", "ws://127.0.0.1:1/", "-H", "no colon"],
        vec!["connect", "ws://127.0.0.1:1/", "--timeout", "-1"],
        vec!["connect", "ws://127.0.0.1:1/", "--bogus"],
    ] {
        let out = tether(args.iter().map(|s| s.to_string()).collect(), b"").await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn connection_refused_exits_1_with_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = tether(
        vec!["connect".into(), "--json".into(), format!("ws://{addr}/")],
        b"",
    )
    .await;
    let events = lines(&out);
    assert_eq!(events[0]["event"], "error");
    assert_eq!(events[0]["kind"], "connect");
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn reconnect_flag_survives_a_dropped_connection() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                if n == 0 {
                    // The first connection is dropped without a close frame.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let url = format!("ws://{addr}/");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["connect", "--json", "--reconnect", &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The first connection is dropped at 100 ms; the retry comes within
        // the first backoff window (at most 1 s).
        std::thread::sleep(Duration::from_millis(2000));
        stdin.write_all(b"after the drop\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let events = lines(&out);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "open",
            "error",
            "close",
            "reconnecting",
            "open",
            "message",
            "close"
        ],
        "{events:?}"
    );
    assert_eq!(events[2]["code"], 1006);
    assert_eq!(events[5]["data"], "after the drop");
    assert_eq!(events[6]["code"], 1000);
    assert_eq!(out.status.code(), Some(0));
}

/// A server that answers each text message 400 ms later, from another task,
/// while its read loop answers a close at once: a reply that comes after
/// the end of stdin.
async fn slow_reply_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let (sink, mut read) = ws.split();
                let sink = std::sync::Arc::new(tokio::sync::Mutex::new(sink));
                while let Some(Ok(msg)) = read.next().await {
                    if msg.is_text() {
                        let sink = sink.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                            let reply = format!("reply to {}", msg.to_text().unwrap());
                            let _ = sink.lock().await.send(reply.into()).await;
                        });
                    } else if msg.is_close() {
                        let _ = sink.lock().await.flush().await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn wait_keeps_reading_after_the_end_of_input() {
    let addr = slow_reply_server().await;
    let url = format!("ws://{addr}/");
    let out = tether(
        vec!["connect".into(), "--wait".into(), "2".into(), url.clone()],
        b"{\"op\":\"ping\"}\n",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reply to {\"op\":\"ping\"}\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    // Without --wait the close goes out at once and the reply is never read.
    let out = tether(vec!["connect".into(), url], b"{\"op\":\"ping\"}\n").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    // A bad value is a usage error.
    let out = tether(
        vec![
            "connect".into(),
            "--wait".into(),
            "-1".into(),
            format!("ws://{addr}/"),
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
}
