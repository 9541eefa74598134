//! Options at the ends of their ranges: a timeout no clock can hold means
//! "never", and a connection built with it works and closes normally.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::time::Duration;

use support::echo_server;
use tokio::time::timeout;

use tether::{connect, ConnectOptions, Event, Message};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn timeouts_of_duration_max_mean_never_and_the_connection_works() {
    let addr = echo_server().await;
    let mut options = ConnectOptions::new();
    options
        .keepalive(Some(Duration::MAX), Some(Duration::MAX))
        .close_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX);
    let (conn, mut rx) = timeout(T, connect(&format!("ws://{addr}/"), &options))
        .await
        .unwrap()
        .unwrap();
    conn.send_text("hello").await.unwrap();
    match timeout(T, rx.next()).await.unwrap() {
        Some(Event::Message(Message::Text(t))) => assert_eq!(t, "hello"),
        other => panic!("expected the echo, got {other:?}"),
    }
    conn.close(1000, "done").unwrap();
    match timeout(T, rx.next()).await.unwrap() {
        Some(Event::Closed(c)) => assert_eq!((c.code, c.clean), (1000, true)),
        other => panic!("expected the close, got {other:?}"),
    }
    assert!(timeout(T, rx.next()).await.unwrap().is_none());
}
