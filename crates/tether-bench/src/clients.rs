//! The four clients under test, each doing the same work the same way:
//! Tether, tokio-tungstenite, fastwebsockets, and raw length-prefixed TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite_bench as tt;

/// Whether the Tether client gives each message's buffer back
/// (`Receiver::recycle`), as an application receiving large messages at a
/// high rate would.
pub static TETHER_RECYCLES: AtomicBool = AtomicBool::new(true);

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imp {
    Tether,
    Tungstenite,
    Fastws,
    Raw,
}

impl Imp {
    pub fn name(self) -> &'static str {
        match self {
            Imp::Tether => "tether",
            Imp::Tungstenite => "tokio-tungstenite",
            Imp::Fastws => "fastwebsockets",
            Imp::Raw => "raw-tcp",
        }
    }
}

/// Addresses of the server process.
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    pub ws: SocketAddr,
    pub raw: SocketAddr,
}

fn tether_options() -> tether::ConnectOptions {
    let mut o = tether::ConnectOptions::new();
    o.compression(false)
        .keepalive(None, None)
        .max_message_size(128 << 20)
        .backpressure(64 << 20, tether::BackpressurePolicy::Wait);
    o
}

/// One open connection of any kind.
pub enum Conn {
    Tether(tether::Connection, tether::Receiver),
    Tungstenite(tt::WebSocketStream<TcpStream>),
    Fastws(WebSocket<TcpStream>),
    Raw(RawConn),
}

/// Raw TCP reads through a buffer of this size; the rest of a larger
/// payload goes straight into the destination. (4 KiB measured the same
/// for 64 KiB echoes, within the noise, in client CPU and wall time.)
pub const RAW_READ_BUFFER: usize = 64 << 10;

/// Raw TCP gathers queued messages up to this many bytes per write.
const RAW_GATHER: usize = 64 << 10;

/// Raw TCP done as well as it can be: one write per message (length prefix
/// and payload together, vectored), reads through a small buffer (the rest of
/// a large payload bypasses it), and small queued messages gathered into one write.
pub struct RawConn {
    pub stream: BufReader<TcpStream>,
    queued: Vec<u8>,
}

impl RawConn {
    async fn write_message(&mut self, data: &[u8]) -> std::io::Result<()> {
        crate::server::write_message(self.stream.get_mut(), data).await
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.get_mut().write_all(&self.queued).await?;
        self.queued.clear();
        Ok(())
    }

    pub async fn write_u8(&mut self, b: u8) -> std::io::Result<()> {
        self.stream.get_mut().write_u8(b).await
    }
}

pub async fn open(imp: Imp, s: Servers, path: &str) -> anyhow::Result<Conn> {
    Ok(match imp {
        Imp::Tether => {
            let (c, rx) =
                tether::connect(&format!("ws://{}{path}", s.ws), &tether_options()).await?;
            Conn::Tether(c, rx)
        }
        Imp::Tungstenite => {
            let tcp = TcpStream::connect(s.ws).await?;
            tcp.set_nodelay(true)?;
            let (ws, _) = tt::client_async(format!("ws://{}{path}", s.ws), tcp).await?;
            Conn::Tungstenite(ws)
        }
        Imp::Fastws => {
            let mut tcp = TcpStream::connect(s.ws).await?;
            tcp.set_nodelay(true)?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                s.ws
            );
            tcp.write_all(req.as_bytes()).await?;
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                anyhow::ensure!(tcp.read(&mut b).await? == 1, "eof in handshake");
                head.push(b[0]);
            }
            let mut ws = WebSocket::after_handshake(tcp, Role::Client);
            ws.set_auto_close(true);
            ws.set_auto_pong(true);
            ws.set_max_message_size(128 << 20);
            Conn::Fastws(ws)
        }
        Imp::Raw => {
            let tcp = TcpStream::connect(s.raw).await?;
            tcp.set_nodelay(true)?;
            Conn::Raw(RawConn {
                stream: BufReader::with_capacity(RAW_READ_BUFFER, tcp),
                queued: Vec::new(),
            })
        }
    })
}

impl Conn {
    pub async fn send(&mut self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Tether(c, _) => c.send_binary(data).await?,
            Conn::Tungstenite(ws) => {
                ws.send(tt::tungstenite::Message::binary(
                    bytes::Bytes::copy_from_slice(data),
                ))
                .await?
            }
            Conn::Fastws(ws) => {
                ws.write_frame(Frame::binary(Payload::Owned(data.to_vec())))
                    .await?
            }
            Conn::Raw(r) => r.write_message(data).await?,
        }
        Ok(())
    }

    /// Queues without waiting for the socket where the API allows it.
    pub async fn feed(&mut self, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Tungstenite(ws) => {
                ws.feed(tt::tungstenite::Message::binary(
                    bytes::Bytes::copy_from_slice(data),
                ))
                .await?
            }
            // Small messages are gathered for one write; a large one is
            // written from where it is.
            Conn::Raw(r) if data.len() < RAW_GATHER => {
                r.queued
                    .extend_from_slice(&(data.len() as u32).to_be_bytes());
                r.queued.extend_from_slice(data);
                if r.queued.len() >= RAW_GATHER {
                    r.flush().await?;
                }
            }
            Conn::Raw(r) => {
                r.flush().await?;
                r.write_message(data).await?;
            }
            other => other.send(data).await?,
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Conn::Tungstenite(ws) => ws.flush().await?,
            Conn::Raw(r) => r.flush().await?,
            _ => {}
        }
        Ok(())
    }

    /// Receives one message; returns its length.
    pub async fn recv(&mut self, scratch: &mut Vec<u8>) -> anyhow::Result<usize> {
        match self {
            Conn::Tether(_, rx) => match rx.next_message().await {
                Ok(m) => {
                    let n = m.len();
                    if TETHER_RECYCLES.load(Ordering::Relaxed) {
                        rx.recycle(m);
                    }
                    Ok(n)
                }
                Err(c) => anyhow::bail!("closed: {c:?}"),
            },
            Conn::Tungstenite(ws) => loop {
                match ws.next().await {
                    Some(Ok(m)) if m.is_binary() || m.is_text() => return Ok(m.len()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("closed"),
                }
            },
            Conn::Fastws(ws) => loop {
                let f = ws.read_frame().await?;
                match f.opcode {
                    OpCode::Binary | OpCode::Text => return Ok(f.payload.len()),
                    OpCode::Close => anyhow::bail!("closed"),
                    _ => continue,
                }
            },
            Conn::Raw(r) => {
                let len = r.stream.read_u32().await? as usize;
                scratch.resize(len, 0);
                r.stream.read_exact(scratch).await?;
                Ok(len)
            }
        }
    }

    pub async fn close(self) {
        match self {
            Conn::Tether(c, mut rx) => {
                let _ = c.close(1000, "");
                while let Some(e) = rx.next().await {
                    if matches!(e, tether::Event::Closed(_)) {
                        break;
                    }
                }
            }
            Conn::Tungstenite(mut ws) => {
                let _ = ws.close(None).await;
            }
            Conn::Fastws(mut ws) => {
                let _ = ws.write_frame(Frame::close(1000, b"")).await;
            }
            Conn::Raw(mut r) => {
                let _ = r.stream.get_mut().shutdown().await;
            }
        }
    }
}

/// Sequential request-response: one message out, its echo back, `n` times.
/// Returns each round trip.
pub async fn sequential(
    imp: Imp,
    s: Servers,
    size: usize,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut conn = open(imp, s, if imp == Imp::Raw { "" } else { "/echo" }).await?;
    if let Conn::Raw(t) = &mut conn {
        t.write_u8(b'e').await?;
    }
    let data = vec![0x42u8; size];
    let mut scratch = Vec::new();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        conn.send(&data).await?;
        let got = conn.recv(&mut scratch).await?;
        anyhow::ensure!(got == size, "echo of {got} bytes, sent {size}");
        times.push(t.elapsed());
    }
    conn.close().await;
    Ok(times)
}

/// Pipelined echo with `window` messages in flight; returns the total time.
/// With `coalesce` the server writes the echoes of what it read at once in
/// one write (see `server::Coalescing`), instead of one write per message.
pub async fn pipelined(
    imp: Imp,
    s: Servers,
    size: usize,
    n: usize,
    window: usize,
    coalesce: bool,
) -> anyhow::Result<Duration> {
    let path = match (imp, coalesce) {
        (Imp::Raw, _) => "",
        (_, false) => "/echo",
        (_, true) => "/echo?coalesce=1",
    };
    let mut conn = open(imp, s, path).await?;
    if let Conn::Raw(t) = &mut conn {
        t.write_u8(b'e').await?;
    }
    let data = vec![0x42u8; size];
    let mut scratch = Vec::new();
    let start = Instant::now();
    let (mut sent, mut received) = (0, 0);
    while received < n {
        let burst = (window - (sent - received)).min(n - sent);
        for _ in 0..burst {
            conn.feed(&data).await?;
            sent += 1;
        }
        conn.flush().await?;
        conn.recv(&mut scratch).await?;
        received += 1;
    }
    let elapsed = start.elapsed();
    conn.close().await;
    Ok(elapsed)
}

/// Client sends `n` messages of `size`; time until the server confirms all.
pub async fn send_oneway(imp: Imp, s: Servers, size: usize, n: usize) -> anyhow::Result<Duration> {
    let mut conn = open(imp, s, &format!("/sink?n={n}")).await?;
    let data = vec![0x42u8; size];
    let start = Instant::now();
    if let Conn::Raw(t) = &mut conn {
        t.write_u8(b's').await?;
        t.stream.get_mut().write_u32(n as u32).await?;
    }
    for _ in 0..n {
        conn.feed(&data).await?;
    }
    conn.flush().await?;
    if let Conn::Raw(t) = &mut conn {
        anyhow::ensure!(t.stream.read_u8().await? == b'd', "bad sink answer");
    } else {
        let mut scratch = Vec::new();
        conn.recv(&mut scratch).await?;
    }
    let elapsed = start.elapsed();
    conn.close().await;
    Ok(elapsed)
}

/// Server sends `n` messages of `size`; time until all arrived.
pub async fn recv_oneway(imp: Imp, s: Servers, size: usize, n: usize) -> anyhow::Result<Duration> {
    let mut conn = open(imp, s, &format!("/source?n={n}&size={size}")).await?;
    let start = Instant::now();
    if let Conn::Raw(t) = &mut conn {
        t.write_u8(b'o').await?;
        t.stream.get_mut().write_u32(n as u32).await?;
        t.stream.get_mut().write_u32(size as u32).await?;
    }
    let mut scratch = Vec::new();
    for _ in 0..n {
        let got = conn.recv(&mut scratch).await?;
        anyhow::ensure!(got == size, "got {got} bytes, expected {size}");
    }
    let elapsed = start.elapsed();
    conn.close().await;
    Ok(elapsed)
}

/// Opens and closes `n` connections one after another.
pub async fn setup(imp: Imp, s: Servers, n: usize) -> anyhow::Result<Duration> {
    // Connections are held until the clock stops, so that no implementation
    // pays for closing earlier ones (Tether closes with a close handshake
    // when a connection is dropped) inside the measurement.
    let mut open_conns = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        open_conns.push(open(imp, s, "/echo").await?);
    }
    let elapsed = start.elapsed();
    for c in open_conns {
        c.close().await;
    }
    Ok(elapsed)
}
