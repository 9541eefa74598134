//! Persistent connections: a real server killed and restarted, a reconnect
//! storm of 200 connections, sends while disconnected, and close.
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tether::{
    ConnectOptions, Message, Persistent, PersistentEvent, PersistentOptions, PersistentState,
    ReconnectPolicy, SendError,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(15);

fn options() -> ConnectOptions {
    let mut o = ConnectOptions::new();
    o.close_timeout(Duration::from_secs(1))
        .keepalive(None, None);
    o
}

fn fast_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
        ..Default::default()
    }
}

/// Waits for an event matching `pred`, returning it.
async fn wait(
    rx: &mut tether::PersistentReceiver,
    pred: impl Fn(&PersistentEvent) -> bool,
) -> PersistentEvent {
    loop {
        let e = timeout(T, rx.next())
            .await
            .expect("event timed out")
            .expect("stream ended");
        if pred(&e) {
            return e;
        }
    }
}

struct Python(Child);
impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python_echo(port: u16) -> Python {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let py = root.join("target/peers/venv/bin/python");
    assert!(py.exists(), "run scripts/install-peers.sh first");
    let mut child = Command::new(py)
        .arg(root.join("scripts/peers/echo_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("ready"), "{line}");
    Python(child)
}

#[tokio::test]
async fn a_killed_and_restarted_server_is_reconnected() {
    let port = support::peers::free_port();
    let server = python_echo(port);
    let (conn, mut rx) = Persistent::open(
        "p",
        &format!("ws://127.0.0.1:{port}/"),
        &options(),
        PersistentOptions {
            policy: fast_policy(),
            queue_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    conn.send_text("before").await.unwrap();
    assert!(
        matches!(wait(&mut rx, |e| matches!(e, PersistentEvent::Message(_))).await, PersistentEvent::Message(Message::Text(t)) if t == "before")
    );

    drop(server); // SIGKILL
    let lost = wait(&mut rx, |e| matches!(e, PersistentEvent::Disconnected(_))).await;
    let PersistentEvent::Disconnected(c) = lost else {
        unreachable!()
    };
    assert!(!c.clean);
    assert!(matches!(
        wait(&mut rx, |e| matches!(
            e,
            PersistentEvent::Reconnecting { .. }
        ))
        .await,
        PersistentEvent::Reconnecting { attempt: 1, .. }
    ));
    assert_eq!(conn.state(), PersistentState::Reconnecting);
    // While it is down, sends fail fast.
    assert_eq!(conn.send_text("lost").await, Err(SendError::NotOpen));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = python_echo(port);
    wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    assert_eq!(conn.state(), PersistentState::Open);
    conn.send_text("after").await.unwrap();
    assert!(
        matches!(wait(&mut rx, |e| matches!(e, PersistentEvent::Message(_))).await, PersistentEvent::Message(Message::Text(t)) if t == "after")
    );

    conn.close(1000, "done").unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Closed)).await;
    assert_eq!(conn.state(), PersistentState::Closed);
    assert_eq!(conn.send_text("x").await, Err(SendError::Closed));
}

/// A tungstenite echo server that can be stopped (dropping every
/// connection) and started again on the same address.
struct Restartable {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Restartable {
    async fn start(addr: SocketAddr) -> Restartable {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let inner = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                inner.lock().unwrap().push(tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                }));
            }
        });
        tasks.lock().unwrap().push(accept);
        Restartable { addr, tasks }
    }

    fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_of_200_comes_back_spread_out() {
    let server = Restartable::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let policy = ReconnectPolicy {
        initial_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(4),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for i in 0..200 {
        let (conn, rx) = Persistent::open(
            format!("c{i}"),
            &format!("ws://{addr}/"),
            &options(),
            PersistentOptions {
                policy: policy.clone(),
                queue_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap();
        clients.push((conn, rx));
    }
    for (_, rx) in clients.iter_mut() {
        wait(rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    }
    server.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _restarted = Restartable::start(addr).await;
    // Each client's reconnect time after the outage.
    let mut waits = Vec::new();
    for (_, mut rx) in clients.drain(..) {
        waits.push(tokio::spawn(async move {
            wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
            (stopped.elapsed(), rx)
        }));
    }
    let mut times = Vec::new();
    for w in waits {
        times.push(
            timeout(Duration::from_secs(20), w)
                .await
                .expect("a client never came back")
                .unwrap()
                .0,
        );
    }
    times.sort();
    assert_eq!(times.len(), 200, "all 200 came back");
    let p10 = times[20];
    let p90 = times[179];
    // Full jitter over a 2 s window: the returns are spread, not one wave.
    assert!(
        p90 - p10 > Duration::from_millis(800),
        "p10 {p10:?}, p90 {p90:?}"
    );
    assert!(
        *times.last().unwrap() < Duration::from_secs(5),
        "slowest {:?}",
        times.last()
    );
}

#[tokio::test]
async fn queued_sends_are_delivered_after_the_reconnect() {
    let server = Restartable::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let (conn, mut rx) = Persistent::open(
        "q",
        &format!("ws://{addr}/"),
        &options(),
        PersistentOptions {
            policy: fast_policy(),
            queue_bytes: 10,
            ..Default::default()
        },
    )
    .unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    server.stop();
    wait(&mut rx, |e| {
        matches!(e, PersistentEvent::Reconnecting { .. })
    })
    .await;
    conn.send_text("one").await.unwrap();
    conn.send_text("two").await.unwrap();
    assert!(matches!(
        conn.send_text("overflowing").await,
        Err(SendError::BufferFull { limit: 10, .. })
    ));
    let _again = Restartable::start(addr).await;
    wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        if let PersistentEvent::Message(Message::Text(t)) =
            wait(&mut rx, |e| matches!(e, PersistentEvent::Message(_))).await
        {
            got.push(t);
        }
    }
    assert_eq!(got, ["one", "two"], "in order");
}

/// A persistent connection to a port nobody listens on.
fn open_to_nothing(policy: ReconnectPolicy) -> (Persistent, tether::PersistentReceiver) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let persistent = PersistentOptions {
        policy,
        queue_bytes: 0,
        ..Default::default()
    };
    Persistent::open("nothing", &format!("ws://{addr}/"), &options(), persistent).unwrap()
}

#[tokio::test]
async fn close_during_the_backoff_stops_reconnecting() {
    let (conn, mut rx) = open_to_nothing(ReconnectPolicy {
        initial_delay: Duration::from_secs(5),
        ..Default::default()
    });
    wait(&mut rx, |e| {
        matches!(e, PersistentEvent::Reconnecting { .. })
    })
    .await;
    let started = Instant::now();
    conn.close(1000, "").unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Closed)).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "close did not wait for the backoff"
    );
    assert!(
        timeout(Duration::from_millis(200), rx.next())
            .await
            .unwrap()
            .is_none(),
        "nothing after Closed"
    );
}

#[tokio::test]
async fn a_policy_with_max_attempts_gives_up() {
    let (_conn, mut rx) = open_to_nothing(ReconnectPolicy {
        initial_delay: Duration::from_millis(20),
        max_attempts: Some(3),
        ..Default::default()
    });
    let mut attempts = 0;
    loop {
        match timeout(T, rx.next()).await.unwrap() {
            Some(PersistentEvent::Reconnecting { attempt, .. }) => attempts = attempt,
            Some(PersistentEvent::GaveUp { attempts: n }) => {
                assert_eq!((n, attempts), (3, 3));
                break;
            }
            Some(_) => {}
            None => panic!("ended without GaveUp"),
        }
    }
}

#[tokio::test]
async fn dropping_the_handles_and_the_receiver_closes_with_1001() {
    let (tx, mut codes) = tokio::sync::mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(m)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = m {
                        let _ = tx.send(u16::from(f.code));
                    }
                }
            });
        }
    });
    let (conn, mut rx) = Persistent::open(
        "d",
        &format!("ws://{addr}/"),
        &options(),
        PersistentOptions::default(),
    )
    .unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Open { .. })).await;
    let other = conn.clone();
    drop(conn);
    drop(rx);
    assert!(
        timeout(Duration::from_millis(200), codes.recv())
            .await
            .is_err(),
        "a handle is still alive"
    );
    drop(other);
    assert_eq!(timeout(T, codes.recv()).await.unwrap(), Some(1001));
}

#[tokio::test]
async fn a_setting_that_fails_every_attempt_is_reported_not_retried() {
    // The URL is fine; the CA file is not: every attempt would fail the same
    // way before reaching the network.
    let mut o = options();
    o.tls(tether::TlsOptions {
        ca_files: vec!["/nonexistent/ca.pem".into()],
        ..Default::default()
    });
    let (p, mut rx) = Persistent::open(
        "k",
        "wss://127.0.0.1:9/",
        &o,
        PersistentOptions {
            policy: fast_policy(),
            ..Default::default()
        },
    )
    .unwrap();
    let event = timeout(T, rx.next()).await.unwrap();
    let Some(PersistentEvent::Failed(e)) = event else {
        panic!("expected Failed, got {event:?}");
    };
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    assert_eq!(
        timeout(T, rx.next()).await.unwrap().map(|_| ()),
        None,
        "nothing follows"
    );
    assert_eq!(p.state(), PersistentState::Closed);
}

#[tokio::test]
async fn before_attempt_runs_before_each_attempt_and_can_change_the_url() {
    let port = support::peers::free_port();
    let _server = python_echo(port);
    let live = format!("ws://127.0.0.1:{port}/");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook: tether::BeforeAttempt = {
        let (seen, live) = (seen.clone(), live.clone());
        Arc::new(move |mut attempt: tether::Attempt| {
            let mut seen = seen.lock().unwrap();
            seen.push(attempt.url.clone());
            let n = seen.len();
            let live = live.clone();
            Box::pin(async move {
                match n {
                    // The first attempt cannot be made; the second goes to
                    // the live server instead of the URL given.
                    1 => Err("credentials not ready".to_string()),
                    _ => {
                        attempt.url = live;
                        Ok(attempt)
                    }
                }
            })
        })
    };
    let (conn, mut rx) = Persistent::open(
        "hooked",
        "ws://127.0.0.1:9/never-used",
        &options(),
        PersistentOptions {
            policy: fast_policy(),
            before_attempt: Some(hook),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        timeout(T, rx.next()).await.unwrap(),
        Some(PersistentEvent::Reconnecting { attempt: 1, .. })
    ));
    assert!(matches!(
        timeout(T, rx.next()).await.unwrap(),
        Some(PersistentEvent::Open { .. })
    ));
    assert_eq!(
        *seen.lock().unwrap(),
        ["ws://127.0.0.1:9/never-used", "ws://127.0.0.1:9/never-used"],
        "the hook gets the URL given at open each time"
    );
    conn.send_text("hooked").await.unwrap();
    assert!(matches!(
        timeout(T, rx.next()).await.unwrap(),
        Some(PersistentEvent::Message(Message::Text(t))) if t == "hooked"
    ));
    conn.close(1000, "").unwrap();
    wait(&mut rx, |e| matches!(e, PersistentEvent::Closed)).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "no attempt after close");
}

#[tokio::test]
async fn reconnect_now_cuts_the_wait_short_and_keeps_the_count() {
    let port = support::peers::free_port(); // nobody listens
    let (conn, mut rx) = Persistent::open(
        "now",
        &format!("ws://127.0.0.1:{port}/"),
        &options(),
        PersistentOptions {
            policy: ReconnectPolicy {
                initial_delay: Duration::from_secs(60),
                max_delay: Duration::from_secs(60),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    // A wait long enough to tell a cut from a natural end (the jitter can
    // make one short: take the next).
    let attempt = loop {
        if let PersistentEvent::Reconnecting { attempt, delay } = wait(&mut rx, |e| {
            matches!(e, PersistentEvent::Reconnecting { .. })
        })
        .await
        {
            if delay >= Duration::from_secs(5) {
                break attempt;
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(50)).await; // it is waiting now
    let asked = Instant::now();
    conn.reconnect_now();
    let next = wait(&mut rx, |e| {
        matches!(e, PersistentEvent::Reconnecting { .. })
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the wait was not cut: {:?}",
        asked.elapsed()
    );
    assert!(
        matches!(next, PersistentEvent::Reconnecting { attempt: a, .. } if a == attempt + 1),
        "the count goes on: {next:?} after attempt {attempt}"
    );
    conn.close(1000, "").unwrap();
}
