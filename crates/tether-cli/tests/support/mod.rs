//! Shared by the CLI tests: a tungstenite echo server on loopback, and a
//! runner for the real binary.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

/// Echoes every text and binary message back; tungstenite answers closes.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Runs `tether ARGS`, writes `input` to its stdin after `wait` (time for
/// the connection to open), closes stdin and collects the output; off the
/// async runtime.
pub async fn run_tether(args: Vec<String>, input: &'static [u8], wait: Duration) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(wait);
        // The process may already have exited (a refused connection).
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}
