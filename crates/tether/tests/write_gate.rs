//! The write gate: once it says no, nothing more reaches the socket, not
//! even a close frame (what a fenced cluster node needs after a pause).
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tether::{ConnectOptions, Event, Message};

#[tokio::test]
async fn a_closed_gate_drops_the_connection_without_writing() {
    // The server reports every message, and how the connection ended.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    let addr = support::serve(move |stream| {
        let seen = seen_tx.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(m) = ws.next().await {
                match m {
                    Ok(m) if m.is_text() => {
                        let _ = seen.send(format!("text {}", m.into_text().unwrap()));
                    }
                    Ok(m) if m.is_close() => {
                        let _ = seen.send("close frame".into());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = seen.send("ended".into());
        }
    })
    .await;
    let open = Arc::new(AtomicBool::new(true));
    let gate = open.clone();
    let mut options = ConnectOptions::new();
    options.write_gate(Arc::new(move || gate.load(Ordering::Acquire)));
    let (conn, mut rx) = tether::connect(&format!("ws://{addr}/"), &options)
        .await
        .unwrap();
    conn.send_text("before").await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), "text before");
    open.store(false, Ordering::Release);
    let _ = conn.send_text("after").await;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .expect("the connection did not end")
        {
            Some(Event::Closed(c)) => break c,
            Some(Event::Message(Message::Text(t))) => panic!("unexpected message {t}"),
            Some(_) => {}
            None => panic!("no Closed event"),
        }
    };
    assert!(!closed.clean, "{closed:?}");
    assert!(
        closed
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("write gate")),
        "{closed:?}"
    );
    // The server saw the socket end: no "after", no close frame.
    assert_eq!(seen.recv().await.unwrap(), "ended");
    assert!(seen.try_recv().is_err());
}
