//! Memory per idle connection, measured in a process of its own so each
//! implementation starts from the same clean heap.

use std::time::Duration;

use crate::clients::{open, Conn, Imp, Servers};

/// Resident set size in bytes.
pub fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Opens `n` connections, then echoes one 64 KiB message on each; returns
/// heap and RSS per connection after the handshake and after the echo.
pub async fn per_connection(
    imp: Imp,
    s: Servers,
    n: usize,
    heap: impl Fn() -> usize,
) -> anyhow::Result<[f64; 4]> {
    let (heap0, rss0) = (heap(), rss());
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(open(imp, s, "/echo").await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The Vec holding the handles is not connection state.
    let vec_bytes = conns.capacity() * std::mem::size_of::<Conn>();
    let after_open = (
        (heap() - heap0 - vec_bytes) as f64 / n as f64,
        (rss().saturating_sub(rss0)) as f64 / n as f64,
    );
    let data = vec![0x42u8; 64 << 10];
    let mut scratch = Vec::new();
    for c in conns.iter_mut() {
        c.send(&data).await?;
        let got = c.recv(&mut scratch).await?;
        anyhow::ensure!(got == data.len(), "short echo");
    }
    drop(scratch);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_echo = (
        (heap() - heap0 - vec_bytes) as f64 / n as f64,
        (rss().saturating_sub(rss0)) as f64 / n as f64,
    );
    for c in conns {
        c.close().await;
    }
    Ok([after_open.0, after_open.1, after_echo.0, after_echo.1])
}
