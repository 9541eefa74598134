//! The async client over real loopback sockets.
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{echo_server, frame, raw_accept, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use tether::{
    connect, open, BackpressurePolicy, ConnectOptions, Error, Event, Handlers, HandshakeError,
    Message, Registry, RegistryError, SendError, State,
};

const T: Duration = Duration::from_secs(10);

fn options() -> ConnectOptions {
    let mut o = ConnectOptions::new();
    o.close_timeout(Duration::from_secs(2));
    o
}

async fn closed(rx: &mut tether::Receiver) -> tether::Closed {
    loop {
        match timeout(T, rx.next()).await.expect("no hang") {
            Some(Event::Closed(c)) => return *c,
            Some(_) => continue,
            None => panic!("stream ended without Closed"),
        }
    }
}

#[tokio::test]
async fn echo_text_and_binary_then_clean_close() {
    let addr = echo_server().await;
    let (conn, mut rx) = connect(&format!("ws://{addr}/echo"), &options())
        .await
        .unwrap();
    assert_eq!(conn.state(), State::Open);
    conn.send_text("hello").await.unwrap();
    conn.send_binary([1u8, 2, 3]).await.unwrap();
    let big = "x".repeat(300_000);
    conn.send_text(&big).await.unwrap();
    assert_eq!(
        rx.next_message().await.unwrap(),
        Message::Text("hello".into())
    );
    assert_eq!(
        rx.next_message().await.unwrap(),
        Message::Binary(vec![1, 2, 3])
    );
    assert_eq!(rx.next_message().await.unwrap(), Message::Text(big));
    conn.close(1000, "done").unwrap();
    assert_eq!(conn.state(), State::Closing);
    let c = closed(&mut rx).await;
    assert!(c.clean, "{c:?}");
    assert_eq!(c.code, 1000);
    assert!(c.error.is_none());
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.send_text("late").await, Err(SendError::Closed));
    assert_eq!(conn.close(1000, ""), Err(SendError::Closed));
}

#[tokio::test]
async fn rejected_handshake_carries_the_status() {
    let addr = serve(|mut s| async move {
        let _ = support::read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 9\r\nWWW-Authenticate: Basic\r\n\r\nno token!")
            .await;
    })
    .await;
    let err = connect(&format!("ws://{addr}/"), &options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "handshake");
    assert_eq!(err.http_status(), Some(401));
    match err {
        Error::Handshake(HandshakeError::Rejected { body, .. }) => assert_eq!(body, b"no token!"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn abrupt_tcp_end_is_abnormal_1006() {
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        s.write_all(&frame(1, b"one")).await.unwrap();
        // dropped: FIN without a close frame
    })
    .await;
    let (_conn, mut rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    assert_eq!(
        rx.next_message().await.unwrap(),
        Message::Text("one".into())
    );
    let c = closed(&mut rx).await;
    assert_eq!((c.code, c.clean), (1006, false));
    assert!(matches!(c.error, Some(Error::Abnormal)), "{c:?}");
}

#[tokio::test]
async fn peer_reset_is_told_apart_from_a_clean_close() {
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        // Unread data plus linger 0 makes the kernel send RST.
        let _ = s.set_zero_linger();
        tokio::time::sleep(Duration::from_millis(100)).await;
    })
    .await;
    let (conn, mut rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    conn.send_text("unread").await.unwrap();
    let c = closed(&mut rx).await;
    assert_eq!(c.code, 1006);
    assert!(matches!(c.error, Some(Error::Reset)), "{c:?}");
}

#[tokio::test]
async fn close_handshake_times_out() {
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        let mut sink = [0u8; 1024];
        // Reads everything, never answers the close.
        while s.read(&mut sink).await.unwrap_or(0) > 0 {}
    })
    .await;
    let mut o = options();
    o.close_timeout(Duration::from_millis(300));
    let (conn, mut rx) = connect(&format!("ws://{addr}/"), &o).await.unwrap();
    let started = std::time::Instant::now();
    conn.close(1000, "").unwrap();
    let c = closed(&mut rx).await;
    assert!(matches!(c.error, Some(Error::CloseTimeout)), "{c:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn connect_timeout_covers_a_silent_server() {
    let addr = serve(|s| async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    })
    .await;
    let mut o = options();
    o.connect_timeout(Duration::from_millis(200));
    let err = connect(&format!("ws://{addr}/"), &o).await.unwrap_err();
    assert!(matches!(err, Error::ConnectTimeout(_)), "{err:?}");
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = connect(&format!("ws://{addr}/"), &options())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "connect", "{err:?}");
}

#[tokio::test]
async fn bad_urls_fail_before_any_io() {
    for url in ["http://127.0.0.1/", "ws://", "ws://h/#x", "nonsense"] {
        let err = open("k", url, &options()).unwrap_err();
        assert_eq!(err.kind(), "url", "{url}");
    }
    let mut o = options();
    o.header("Bad\r\nHeader", "x");
    assert_eq!(
        open("k", "ws://127.0.0.1:1/", &o).unwrap_err().kind(),
        "request"
    );
}

#[tokio::test]
async fn basic_auth_headers_and_protocol_are_sent() {
    let seen = Arc::new(Mutex::new(String::new()));
    let seen2 = seen.clone();
    let addr = serve(move |mut s| {
        let seen = seen2.clone();
        async move {
            let request = support::read_request(&mut s).await;
            *seen.lock().unwrap() = request.clone();
            let mut resp = support::accept_response(&request);
            resp.insert_str(resp.len() - 2, "Sec-WebSocket-Protocol: mqtt\r\n");
            s.write_all(resp.as_bytes()).await.unwrap();
            let mut sink = [0u8; 64];
            let _ = s.read(&mut sink).await;
        }
    })
    .await;
    let mut o = options();
    o.header("X-Source", "tether").protocol("mqtt");
    let (conn, _rx) = connect(&format!("ws://alice:s%40cret@{addr}/path?q=1"), &o)
        .await
        .unwrap();
    assert_eq!(conn.protocol(), Some("mqtt"));
    assert!(
        !conn.url().contains("s%40cret"),
        "password redacted: {}",
        conn.url()
    );
    let request = seen.lock().unwrap().clone();
    assert!(
        request.starts_with("GET /path?q=1 HTTP/1.1\r\n"),
        "{request}"
    );
    // alice:s@cret
    assert!(
        request.contains("Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
        "{request}"
    );
    assert!(request.contains("X-Source: tether\r\n"));
    assert!(request.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
}

#[tokio::test]
async fn first_frames_in_the_101_read_are_not_lost() {
    let addr = serve(|mut s| async move {
        let request = support::read_request(&mut s).await;
        let mut bytes = support::accept_response(&request).into_bytes();
        bytes.extend(frame(1, b"welcome"));
        bytes.extend(frame(8, &1000u16.to_be_bytes()));
        s.write_all(&bytes).await.unwrap();
        let mut sink = [0u8; 64];
        let _ = s.read(&mut sink).await;
    })
    .await;
    let (_conn, mut rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    assert_eq!(
        rx.next_message().await.unwrap(),
        Message::Text("welcome".into())
    );
    let c = closed(&mut rx).await;
    assert!(c.clean);
}

#[tokio::test]
async fn receiving_is_cancel_safe() {
    let addr = echo_server().await;
    let (conn, mut rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    for i in 0..200 {
        conn.send_text(format!("{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 200 {
        // A very short timeout cancels many next() calls mid-wait.
        if let Ok(Some(Event::Message(Message::Text(t)))) =
            timeout(Duration::from_micros(50), rx.next()).await
        {
            got.push(t.parse::<usize>().unwrap());
        }
    }
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn handlers_run_in_order() {
    let addr = echo_server().await;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    let (conn, rx) = open("h1", &format!("ws://{addr}/"), &options()).unwrap();
    assert_eq!(conn.state(), State::Connecting);
    let task = Handlers::new()
        .on_open(move |c| {
            l1.lock().unwrap().push("open".into());
            c.try_send_text("ping").unwrap();
        })
        .on_message(move |c, m| {
            l2.lock()
                .unwrap()
                .push(format!("message {}", String::from_utf8_lossy(m.as_bytes())));
            c.close(1000, "bye").unwrap();
        })
        .on_close(move |_, code, reason| l3.lock().unwrap().push(format!("close {code} {reason}")))
        .spawn(conn, rx);
    timeout(T, task).await.unwrap().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["open", "message ping", "close 1000 bye"]
    );
}

#[tokio::test]
async fn error_handler_gets_the_kind_before_close() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (l1, l2) = (log.clone(), log.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (conn, rx) = open("h2", &format!("ws://{addr}/"), &options()).unwrap();
    let task = Handlers::new()
        .on_error(move |_, e| l1.lock().unwrap().push(format!("error {}", e.kind())))
        .on_close(move |_, code, _| l2.lock().unwrap().push(format!("close {code}")))
        .spawn(conn, rx);
    timeout(T, task).await.unwrap().unwrap();
    assert_eq!(*log.lock().unwrap(), vec!["error connect", "close 1006"]);
}

#[tokio::test]
async fn registry_finds_lists_and_forgets_connections() {
    let addr = echo_server().await;
    let registry = Registry::new();
    let url = format!("ws://{addr}/");
    let (a, mut rx_a) = registry.open("a", &url, &options()).unwrap();
    let (_b, _rx_b) = registry.open("b", &url, &options()).unwrap();
    assert!(matches!(
        registry.open("a", &url, &options()),
        Err(RegistryError::KeyInUse(_))
    ));
    assert_eq!(
        registry
            .list()
            .iter()
            .map(|c| c.key().to_string())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(registry.get("a").unwrap().key(), "a");
    while !matches!(rx_a.next().await, Some(Event::Open { .. })) {}
    a.close(1000, "").unwrap();
    closed(&mut rx_a).await;
    // The driver removes it as it exits.
    timeout(T, async {
        while registry.get("a").is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(registry.list().len(), 1);
}

#[tokio::test]
async fn backpressure_error_policy_bounds_the_buffer() {
    // A server that completes the handshake and never reads again.
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let mut o = options();
    o.backpressure(256 << 10, BackpressurePolicy::Error);
    let (conn, _rx) = connect(&format!("ws://{addr}/"), &o).await.unwrap();
    let chunk = vec![0u8; 16 << 10];
    let mut refused = None;
    for _ in 0..10_000 {
        match conn.send_binary(&chunk).await {
            Ok(()) => tokio::task::yield_now().await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(SendError::BufferFull { .. })),
        "{refused:?}"
    );
    assert!(
        conn.buffered_amount() <= (256 << 10) + (16 << 10) + 64,
        "{}",
        conn.buffered_amount()
    );
}

#[tokio::test]
async fn wait_policy_keeps_async_senders_near_two_messages() {
    // A server that reads slowly: 64 KiB, then a pause.
    const SIZE: usize = 512 << 10;
    const COUNT: usize = 24;
    let (total_tx, mut total_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |mut s| {
        let total_tx = total_tx.clone();
        async move {
            raw_accept(&mut s).await;
            let expected = COUNT * (SIZE + 14);
            let (mut total, mut buf) = (0, vec![0u8; 64 << 10]);
            while total < expected {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let _ = total_tx.send(total);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
    .await;
    // The default policy is Wait, with a 16 MiB limit that all of it fits in.
    let (conn, _rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    let data = vec![0x5Au8; SIZE];
    let mut most = 0;
    for _ in 0..COUNT {
        timeout(T, conn.send_binary(&data)).await.unwrap().unwrap();
        most = most.max(conn.buffered_amount());
    }
    assert!(most <= 2 * (SIZE + 14), "{most} bytes were queued at once");
    // Nothing is lost on the way.
    assert_eq!(
        timeout(T, total_rx.recv()).await.unwrap(),
        Some(COUNT * (SIZE + 14))
    );
}

#[tokio::test]
async fn a_slow_reader_holds_about_one_receive_window_of_messages() {
    // A server that sends 64 messages of 256 KiB as fast as it can.
    const SIZE: usize = 256 << 10;
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        for i in 0..64u8 {
            if s.write_all(&frame(2, &vec![i; SIZE])).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let mut o = options();
    o.receive_window(600 << 10);
    let (_conn, mut rx) = connect(&format!("ws://{addr}/"), &o).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not 64 × 256 KiB (the event queue): the window and the message that
    // crossed it.
    let queued = rx.queued_bytes();
    assert!(queued <= (600 << 10) + SIZE, "{queued} bytes queued");
    assert!(queued >= 600 << 10, "{queued} bytes queued");
    for i in 0..64u8 {
        let m = timeout(T, rx.next_message()).await.unwrap().unwrap();
        assert_eq!(m, Message::Binary(vec![i; SIZE]));
    }
    assert_eq!(rx.queued_bytes(), 0);
}

#[tokio::test]
async fn a_burst_sent_before_reading_its_echoes_does_not_hang() {
    // Pacing waits for the socket, the receive window stops reading: neither
    // may stall a task that sends everything first and reads afterwards,
    // as long as it fits the send buffer limit.
    let addr = echo_server().await;
    let mut o = options();
    o.backpressure(64 << 20, BackpressurePolicy::Wait);
    let (conn, mut rx) = connect(&format!("ws://{addr}/"), &o).await.unwrap();
    // Large messages fill the receive window, small ones the event queue.
    for (size, count) in [(512 << 10, 64), (1 << 10, 32_000)] {
        let data = vec![7u8; size];
        timeout(T, async {
            for _ in 0..count {
                conn.send_binary(&data).await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("sending {size} B messages hung while the echoes waited"));
        for _ in 0..count {
            let m = timeout(T, rx.next_message()).await.unwrap().unwrap();
            assert_eq!(m.len(), size);
        }
    }
}

#[tokio::test]
async fn backpressure_close_policy_closes_with_1001() {
    let addr = serve(|mut s| async move {
        raw_accept(&mut s).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let mut o = options();
    o.backpressure(128 << 10, BackpressurePolicy::Close)
        .close_timeout(Duration::from_millis(200));
    let (conn, mut rx) = connect(&format!("ws://{addr}/"), &o).await.unwrap();
    let chunk = vec![0u8; 16 << 10];
    let mut result = Ok(());
    for _ in 0..10_000 {
        result = conn.send_binary(&chunk).await;
        if result.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(matches!(result, Err(SendError::BufferFull { .. })));
    assert!(matches!(conn.state(), State::Closing | State::Closed));
    let c = closed(&mut rx).await;
    assert!(!c.clean);
}

/// A TCP relay to `target` that can be frozen: it keeps both sockets open
/// but stops forwarding, like a peer that vanished without a FIN.
async fn freezable_relay(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let frozen = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(target).await.unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut to, flag) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    flag.clone(),
                ),
                (Box::new(sr), Box::new(cw), flag.clone()),
            ] {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if flag.load(Ordering::SeqCst) {
                            // Swallow everything, forever.
                            continue;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, frozen)
}

#[tokio::test]
async fn keepalive_measures_rtt_and_detects_a_silent_peer() {
    let echo = echo_server().await;
    let (relay, frozen) = freezable_relay(echo).await;
    let mut o = options();
    o.keepalive(
        Some(Duration::from_millis(100)),
        Some(Duration::from_millis(400)),
    );
    let (conn, mut rx) = connect(&format!("ws://{relay}/"), &o).await.unwrap();
    // Pongs come back through the live relay: the RTT is measured.
    let rtt = loop {
        match timeout(T, rx.next()).await.unwrap() {
            Some(Event::Pong { rtt: Some(rtt) }) => break rtt,
            Some(_) => {}
            None => panic!("closed early"),
        }
    };
    assert!(rtt < Duration::from_millis(100), "{rtt:?}");
    assert_eq!(conn.rtt(), Some(rtt));
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let c = closed(&mut rx).await;
    assert_eq!(c.code, 1006);
    assert!(matches!(c.error, Some(Error::PingTimeout)), "{c:?}");
    assert_eq!(c.error.as_ref().unwrap().kind(), "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    // The server reports how the connection ended.
    let (tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let addr = serve(move |stream| {
        let tx = tx.clone();
        async move {
            use futures_util::StreamExt;
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Close(Some(frame)) = msg {
                    let _ = tx.send(u16::from(frame.code));
                }
            }
        }
    })
    .await;
    let (conn, rx) = connect(&format!("ws://{addr}/"), &options()).await.unwrap();
    let second = conn.clone();
    drop(conn);
    drop(rx);
    // One handle is still alive: nothing happens.
    assert!(timeout(Duration::from_millis(200), ended.recv())
        .await
        .is_err());
    drop(second);
    let code = timeout(T, ended.recv()).await.unwrap().unwrap();
    assert_eq!(code, 1001);
}
