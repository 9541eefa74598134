//! A server that writes its frames one byte per TCP write, with pauses,
//! from right after its 101 (as Autobahn case 2.11 does): every ping gets
//! a pong with exactly its payload, whatever the read boundaries. Autobahn
//! once saw the first pong of 2.11 lose its first payload byte.
// Native: these tests run their own servers on tokio sockets.
#![cfg(not(target_arch = "wasm32"))]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads one masked client frame: (opcode, payload).
async fn read_frame(s: &mut tokio::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    let mut len = u64::from(h[1] & 0x7f);
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await?;
        len = u64::from(u16::from_be_bytes(b));
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok((h[0] & 0x0f, payload))
}

/// One connection: 101, then ten pings written byte by byte; returns the
/// pong payloads in order.
async fn serve_once(listener: &TcpListener, seed: u64) -> Vec<Vec<u8>> {
    let (mut s, _) = listener.accept().await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "the client went away during its request");
        req.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap();
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tether_proto::accept_for_key(&key)
    );
    let mut frames = Vec::new();
    for i in 0..10 {
        let payload = format!("payload-{i}");
        frames.push(0x89);
        frames.push(payload.len() as u8);
        frames.extend_from_slice(payload.as_bytes());
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Some runs send the first frame bytes in the 101's own write.
    let with_101 = (rng.next() % 4) as usize;
    let mut first = response.into_bytes();
    first.extend_from_slice(&frames[..with_101]);
    s.write_all(&first).await.unwrap();
    for byte in &frames[with_101..] {
        s.write_all(&[*byte]).await.unwrap();
        match rng.next() % 8 {
            0 => tokio::time::sleep(Duration::from_millis(1)).await,
            1 | 2 => tokio::task::yield_now().await,
            _ => {}
        }
    }
    let mut pongs = Vec::new();
    while pongs.len() < 10 {
        let frame = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s))
            .await
            .expect("the pongs never came")
            .unwrap();
        if frame.0 == 0x0a {
            pongs.push(frame.1);
        }
    }
    pongs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_written_byte_by_byte_get_exact_pongs() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let want: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload-{i}").into_bytes())
        .collect();
    let runs = std::env::var("TETHER_STRESS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40u64);
    for seed in 1..=runs {
        let client = tokio::spawn(async move {
            let (conn, mut rx) = tether::connect(&format!("ws://{addr}/"), &Default::default())
                .await
                .unwrap();
            // Keep reading (pongs are sent by the engine as pings arrive).
            let reader = tokio::spawn(async move { while rx.next().await.is_some() {} });
            (conn, reader)
        });
        let pongs = serve_once(&listener, seed).await;
        let (conn, reader) = client.await.unwrap();
        assert_eq!(
            pongs
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>(),
            want.iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>(),
            "seed {seed}"
        );
        drop(conn);
        reader.abort();
    }
}
