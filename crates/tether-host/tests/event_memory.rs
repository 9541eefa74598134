//! A server that floods a client with large binary messages cannot make
//! the host hold them: events carry at most `event_data_limit_bytes` of
//! data, each client's history stays under its byte bound, and all events
//! together under `event_memory_bytes`. (It once held 1.06 GB after 40
//! messages of 16 MiB to a client without hooks.)

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{call, start_host, Workspace};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Sends `count` binary messages of `size` bytes to each client, then a
/// text "done".
async fn flooder(count: usize, size: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let big = vec![7u8; size];
                for _ in 0..count {
                    if ws.send(Message::binary(big.clone())).await.is_err() {
                        return;
                    }
                }
                let _ = ws.send(Message::text("done")).await;
                while ws.next().await.is_some() {}
            });
        }
    });
    addr
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_large_messages_is_not_kept_in_memory() {
    let addr = flooder(40, 16 << 20).await;
    let small = flooder(300, 64 << 10).await;
    let ws = Workspace::new("memory");
    ws.write(
        "tether.toml",
        &format!(
            "[host]\nevent_data_limit_bytes = 1048576\nhistory_bytes_per_client = 2097152\nevent_memory_bytes = 8388608\n\n\
             [[client_type]]\nname = \"big\"\npredefined = true\n[client_type.defaults]\nurl = \"ws://{addr}/\"\n\n\
             [[client_type]]\nname = \"small\"\npredefined = true\n[client_type.defaults]\nurl = \"ws://{small}/\"\n"
        ),
    );
    let (host, app) = start_host(&ws.config(), &ws.store_url()).await;
    let before = rss_bytes();
    let mut rx = host.events().subscribe();
    let mut peak = 0usize;
    call(&app, "POST", "/api/clients/big/connect", None).await;
    call(&app, "POST", "/api/clients/small/connect", None).await;
    let mut truncated = 0;
    let mut small_with_data = 0;
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done < 2 {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the flood never ended");
        let Ok(e) = e else { continue };
        peak = peak.max(host.events().memory_held());
        if e.body["event"] != "message" {
            continue;
        }
        if e.body["data"] == "done" {
            done += 1;
        } else if e.client == "big" {
            assert_eq!(
                e.body["truncated"], "event_data_limit_bytes",
                "{}",
                e.body["truncated"]
            );
            assert_eq!(e.body["size"], 16 << 20);
            assert!(e.body.get("base64").is_none());
            truncated += 1;
        } else if e.body.get("base64").is_some() {
            small_with_data += 1;
        }
    }
    assert_eq!(
        truncated, 40,
        "every large message is an event, without its data"
    );
    assert!(small_with_data > 0, "small messages keep their data");
    assert!(
        peak <= 8 << 20,
        "events held {peak} bytes, over the 8 MiB budget"
    );
    // Histories: within their bound, counted in bytes.
    let (_, history) = call(&app, "GET", "/api/clients/small/history", None).await;
    let kept = history.to_string().len();
    assert!(
        kept <= (2 << 20) + 200 * 512,
        "the history of small holds {kept} bytes"
    );
    let with_data = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("base64").is_some())
        .count();
    assert!(
        with_data <= 33,
        "{with_data} events of 64 KiB in a 2 MiB history"
    );
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 300 << 20, "the host grew by {} MiB", grown >> 20);
    host.shutdown().await;
}
