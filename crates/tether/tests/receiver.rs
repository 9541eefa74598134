//! The receiver and the driver task: the connection lives on while a
//! receiver waiting for an event is not polled (the driver answers pings
//! and the close by itself), and a receiver polled from another thread and
//! another runtime gets every message once and in order. Both hold for any
//! way of handing events over, including one where the receiver reads the
//! socket itself (tried, see BENCHMARKS.md), which is why they are here.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use support::{echo_server, frame, raw_accept, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use tether::{connect, ConnectOptions, Event, Message};

const T: Duration = Duration::from_secs(10);

/// Reads one client frame (masked, unfragmented, short): opcode and payload.
async fn client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    let mut len = (head[1] & 0x7F) as usize;
    if len == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await.unwrap();
        len = u16::from_be_bytes(l) as usize;
    }
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask).await.unwrap();
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (head[0] & 0x0F, payload)
}

#[tokio::test]
async fn a_waiting_receiver_nobody_polls_does_not_stall_the_connection() {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done_tx = std::sync::Mutex::new(Some(done_tx));
    let addr = serve(move |mut s| {
        let done = done_tx.lock().unwrap().take();
        async move {
            raw_accept(&mut s).await;
            // A ping, while the client's receiver sits unpolled: the
            // connection must answer it by itself.
            s.write_all(&frame(0x9, b"p1")).await.unwrap();
            let pong = client_frame(&mut s).await;
            s.write_all(&frame(0x1, b"after")).await.unwrap();
            let mut close = 1000u16.to_be_bytes().to_vec();
            close.extend_from_slice(b"bye");
            s.write_all(&frame(0x8, &close)).await.unwrap();
            let echoed = client_frame(&mut s).await;
            let _ = done.unwrap().send((pong, echoed));
        }
    })
    .await;
    let (_conn, mut rx) = connect(&format!("ws://{addr}/"), &ConnectOptions::new())
        .await
        .unwrap();
    // `connect` returned once open: the receiver waits for what comes next.
    let mut waiting = Box::pin(rx.next());
    // Polled once, so it is registered as waiting, then left alone.
    let first = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "nothing to receive yet: {first:?}");
    let (pong, echoed) = timeout(T, done_rx)
        .await
        .expect("the ping and the close were answered without the receiver")
        .unwrap();
    assert_eq!(pong, (0xA, b"p1".to_vec()));
    assert_eq!(echoed.0, 0x8);
    assert_eq!(&echoed.1[..2], &1000u16.to_be_bytes());
    // Nothing was lost meanwhile: the waiting future gets the message, and
    // the close follows it.
    let got = timeout(T, waiting).await.unwrap();
    assert!(
        matches!(&got, Some(Event::Message(Message::Text(t))) if t == "after"),
        "{got:?}"
    );
    match timeout(T, rx.next()).await.unwrap() {
        Some(Event::Closed(c)) => assert_eq!((c.code, c.reason.as_str()), (1000, "bye")),
        other => panic!("expected the close, got {other:?}"),
    }
}

/// The receiver is polled on a thread of its own while the driver task runs
/// on the runtime's: both drive the same connection, and contend for it.
#[test]
fn a_receiver_on_another_thread_gets_every_message_once_in_order() {
    const N: usize = 20_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (conn, rx) = rt.block_on(async {
        let addr = echo_server().await;
        connect(&format!("ws://{addr}/"), &ConnectOptions::new())
            .await
            .unwrap()
    });
    let reader = std::thread::spawn(move || {
        let mut rx = rx;
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        other.block_on(async move {
            let mut got = Vec::with_capacity(N);
            while got.len() < N {
                match timeout(T, rx.next()).await.expect("no hang") {
                    Some(Event::Message(Message::Text(t))) => got.push(t.parse::<usize>().unwrap()),
                    Some(Event::Open { .. }) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            (got, rx)
        })
    });
    rt.block_on(async {
        for i in 0..N {
            conn.send_text(i.to_string()).await.unwrap();
            if i % 64 == 0 {
                // Let the other thread's reads interleave with ours.
                tokio::task::yield_now().await;
            }
        }
        let deadline = tokio::time::Instant::now() + T * 3;
        while !reader.is_finished() {
            assert!(tokio::time::Instant::now() < deadline, "the reader hangs");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (got, mut rx) = reader.join().unwrap();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "every message once, in order"
    );
    rt.block_on(async {
        conn.close(1000, "done").unwrap();
        match timeout(T, rx.next()).await.unwrap() {
            Some(Event::Closed(c)) => assert_eq!(c.code, 1000),
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(timeout(T, rx.next()).await.unwrap().is_none());
    });
}
