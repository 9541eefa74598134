//! `tether serve` stopping on SIGTERM: with a live event stream open (as the
//! web UI always has) and a hook stuck inside a C function, it still closes
//! its clients with 1001, ends the stream, flushes the store and exits 0
//! within the grace period; a second signal exits at once.

use std::io::{Read, Write};

mod support;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "shutdown-test-token";

/// An echo server that records the close code of every connection.
async fn recording_server() -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let codes: Arc<Mutex<Vec<u16>>> = Arc::default();
    let seen = codes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Close(frame) => {
                            seen.lock()
                                .unwrap()
                                .push(frame.map_or(1005, |f| u16::from(f.code)));
                        }
                        m if m.is_text() && ws.send(m.clone()).await.is_err() => return,
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, codes)
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("modules")).unwrap();
    dir
}

/// A config with a plain predefined client and a predefined client whose
/// `on_message` gets stuck in one C call for a minute.
fn write_config(dir: &Path, echo: SocketAddr, grace: u64) {
    std::fs::write(
        dir.join("tether.toml"),
        format!(
            r#"[host]
listen = "127.0.0.1:0"
shutdown_grace_secs = {grace}

[[client_type]]
name = "plain"
predefined = true
[client_type.defaults]
url = "ws://{echo}/"
auto_connect = true

[[client_type]]
name = "stuck"
predefined = true
module = "modules/stuck.lua"
cpu_limit_ms = 60000
[client_type.defaults]
url = "ws://{echo}/"
auto_connect = true
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("modules/stuck.lua"),
        r#"
function on_open(conn) conn:send("go") end
function on_message(conn, msg)
  emit("stuck")
  string.find(string.rep("a", 20000), ".-.-.-.-.-b")
end
"#,
    )
    .unwrap();
}

fn serve(config: &Path) -> support::Serve {
    support::serve(config, TOKEN, &[])
}

fn get(api: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Opens `/api/events` and reads it on a thread until it ends; returns
/// what it read.
fn open_event_stream(api: SocketAddr) -> std::thread::JoinHandle<String> {
    let mut s = TcpStream::connect(api).unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

fn wait_exit(child: &mut Child, within: Duration) -> (std::process::ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(started.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_event_stream_and_a_stuck_hook_exits_cleanly() {
    let (echo, codes) = recording_server().await;
    let dir = tempdir("sigterm");
    write_config(&dir, echo, 5);
    let config = dir.join("tether.toml");
    tokio::task::spawn_blocking(move || {
        let mut s = serve(&config);
        let stream = open_event_stream(s.addr());
        wait_until("both clients open and the hook stuck", || {
            let body = get(s.addr(), "/api/clients/stuck/history");
            let plain = get(s.addr(), "/api/clients/plain");
            body.contains("\"data\":\"stuck\"") && plain.contains("\"state\":\"open\"")
        });
        // The API still answers while the hook is stuck.
        assert!(get(s.addr(), "/healthz").contains("ok"));
        signal(&s.child, "TERM");
        let (status, took) = wait_exit(&mut s.child, Duration::from_secs(9));
        assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
        assert!(took < Duration::from_secs(7), "took {took:?} (grace 5 s)");
        // The event stream ended instead of holding the server open.
        let seen = stream.join().unwrap();
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        // Both clients closed with 1001, the stuck one too (its hook still
        // runs, but the process did not wait for it).
        let codes = codes.lock().unwrap().clone();
        assert_eq!(codes, [1001, 1001], "close codes the server saw");
        // The store was checkpointed and closed: no write-ahead log left.
        let wal = dir.join("tether.db-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "WAL left behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (echo, _) = recording_server().await;
    let dir = tempdir("second-signal");
    write_config(&dir, echo, 60);
    let config = dir.join("tether.toml");
    tokio::task::spawn_blocking(move || {
        let mut s = serve(&config);
        wait_until("the hook stuck", || {
            get(s.addr(), "/api/clients/stuck/history").contains("\"data\":\"stuck\"")
        });
        signal(&s.child, "TERM");
        // The stuck client holds the graceful shutdown for seconds.
        std::thread::sleep(Duration::from_millis(500));
        assert!(s.child.try_wait().unwrap().is_none(), "exited too early");
        signal(&s.child, "INT");
        let (status, took) = wait_exit(&mut s.child, Duration::from_secs(3));
        assert_eq!(status.code(), Some(1));
        assert!(took < Duration::from_secs(1), "took {took:?}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .unwrap();
}
