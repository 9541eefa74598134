//! `kill -9` of `tether serve` while its outbox is delivering: after a
//! restart on the same store every message arrives at least once, in order,
//! with duplicates only among the ones that were in flight, and the SQLite
//! file passes `PRAGMA integrity_check`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "crash-test-token";

/// Records (connection number, text) of everything it reads, reading
/// slowly so that a delivery is still going on when the host is killed.
async fn slow_recorder() -> (SocketAddr, Arc<Mutex<Vec<(usize, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((stream, _)) = listener.accept().await {
            n += 1;
            let (seen, conn) = (seen.clone(), n);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if let Message::Text(t) = msg {
                        seen.lock().unwrap().push((conn, t.to_string()));
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            });
        }
    });
    (addr, got)
}

fn serve(config: &Path) -> (support::Serve, String) {
    let s = support::serve(config, TOKEN, &[]);
    let api = s.api.clone();
    (s, api)
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `POST /api/clients/feed/connect`, expecting 202.
fn connect(agent: &ureq::Agent, api: &str) {
    let r = agent
        .post(format!("{api}/api/clients/feed/connect"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 202);
}

fn number(text: &str) -> usize {
    text.trim_start_matches('m').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_nothing() {
    let (echo, got) = slow_recorder().await;
    let dir = tempdir("crash");
    std::fs::write(
        dir.join("tether.toml"),
        format!(
            "[host]\nlisten = \"127.0.0.1:0\"\n\n[[client_type]]\nname = \"feed\"\npredefined = true\n[client_type.outbox]\ndurable = true\n[client_type.defaults]\nurl = \"ws://{echo}/\"\nauto_connect = false\n"
        ),
    )
    .unwrap();
    let config = dir.join("tether.toml");
    let got2 = got.clone();
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || {
        let (mut first, api) = serve(&config);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        for i in 0..1000 {
            let r = agent
                .post(format!("{api}/api/clients/feed/send"))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .send_json(serde_json::json!({"text": format!("m{i}")}))
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        connect(&agent, &api);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got2.lock().unwrap().len() < 200 {
            assert!(Instant::now() < deadline, "delivery never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        first.child.kill().unwrap(); // SIGKILL
        first.child.wait().unwrap();
        let before = got2.lock().unwrap().len();
        assert!(before < 1000, "the kill came too late to test anything");

        // Restart on the same store; the predefined client must be
        // connected to resume (auto_connect is off), as an operator would.
        let (second, api) = serve(&config);
        connect(&agent, &api);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let all: std::collections::BTreeSet<usize> =
                got2.lock().unwrap().iter().map(|(_, t)| number(t)).collect();
            if all.len() == 1000 {
                break;
            }
            assert!(Instant::now() < deadline, "only {} distinct arrived", all.len());
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(second);
        // Integrity of the file the killed process was writing.
        let out = Command::new("python3")
            .arg("-c")
            .arg("import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])")
            .arg(dir2.join("tether.db"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    })
    .await
    .unwrap();

    let got = got.lock().unwrap().clone();
    let conns: std::collections::BTreeSet<usize> = got.iter().map(|(c, _)| *c).collect();
    // Each connection got an increasing run; the first ends at k, the
    // next ones start at or before k + 1 and end at 999.
    let mut last_end: Option<usize> = None;
    let mut duplicates = 0;
    for c in &conns {
        let run: Vec<usize> = got
            .iter()
            .filter(|(n, _)| n == c)
            .map(|(_, t)| number(t))
            .collect();
        for w in run.windows(2) {
            assert!(w[1] == w[0] + 1, "connection {c} is out of order: {run:?}");
        }
        if let (Some(end), Some(start)) = (last_end, run.first()) {
            assert!(
                *start <= end + 1,
                "a gap between connections: {end} then {start}"
            );
            duplicates += end + 1 - start;
        } else {
            assert_eq!(run.first(), Some(&0));
        }
        last_end = run.last().copied().max(last_end);
    }
    assert_eq!(last_end, Some(999));
    // Only what was in flight (one delivery batch of 256 at most) came twice.
    assert!(duplicates <= 256, "{duplicates} duplicates");
    let _ = std::fs::remove_dir_all(dir);
}
