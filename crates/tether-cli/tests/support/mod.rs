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

/// A running `tether serve`, killed and waited for when dropped.
pub struct Serve {
    pub child: std::process::Child,
    /// The API's base URL, `http://127.0.0.1:PORT`.
    pub api: String,
}

impl Serve {
    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.api.trim_start_matches("http://").parse().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tether serve --config CONFIG` with the admin token `token` and
/// these extra environment variables; returns once it listens. Its stderr
/// is drained on a thread so it never blocks.
// The child is waited for by `Serve`'s Drop, which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn serve(config: &std::path::Path, token: &str, env: &[(&str, &str)]) -> Serve {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("TETHER_ADMIN_TOKEN", token)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait();
            panic!("serve exited before listening: {status:?}");
        }
        if let Some(url) = line.trim().strip_prefix("tether: management API on ") {
            let api = url.to_string();
            std::thread::spawn(move || for _ in reader.lines() {});
            return Serve { child, api };
        }
    }
}
