//! The neutral servers every client talks to, in their own process:
//! a fastwebsockets WebSocket server and a length-prefixed raw TCP server.
//!
//! WebSocket paths: `/echo` echoes every frame; `/sink?n=N` reads N messages
//! then sends the text "done"; `/json?n=N&size=S` sends N JSON texts of
//! about S bytes; `/source?n=N&size=S` sends N binary messages
//! of S bytes, then waits for the client's close. Raw TCP takes a one-byte
//! mode first: `e` echo, `s` sink (then u32 N), `o` source (then u32 N, u32 S).

use std::net::SocketAddr;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

fn query(path: &str, key: &str) -> usize {
    path.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn ws_conn(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "eof in handshake");
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("/").to_string();
    let key = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tether_proto::accept_for_key(&key)
    );
    stream.write_all(resp.as_bytes()).await?;
    if query(&path, "coalesce") == 1 {
        return serve(Coalescing::new(stream), &path).await;
    }
    serve(stream, &path).await
}

/// One WebSocket connection after its handshake, on `path`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, path: &str) -> anyhow::Result<()> {
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(128 << 20);
    if path.starts_with("/sink") {
        let n = query(path, "n");
        let mut got = 0;
        while got < n {
            let f = ws.read_frame().await?;
            match f.opcode {
                OpCode::Close => return Ok(()),
                OpCode::Binary | OpCode::Text | OpCode::Continuation if f.fin => got += 1,
                _ => {}
            }
        }
        ws.write_frame(Frame::text(Payload::Borrowed(b"done")))
            .await?;
    } else if path.starts_with("/json") {
        // Text messages of about `size` bytes, each a JSON object.
        let (n, size) = (query(path, "n"), query(path, "size"));
        for i in 0..n {
            let head = format!(
                "{{\"type\":\"tick\",\"seq\":{i},\"symbol\":\"ABC\",\"price\":101.25,\"pad\":\""
            );
            let pad = size.saturating_sub(head.len() + 2);
            let text = format!("{head}{}\"}}", "x".repeat(pad));
            ws.write_frame(Frame::text(Payload::Owned(text.into_bytes())))
                .await?;
        }
    } else if path.starts_with("/source") {
        let (n, size) = (query(path, "n"), query(path, "size"));
        let data = vec![0x5Au8; size];
        for _ in 0..n {
            ws.write_frame(Frame::binary(Payload::Borrowed(&data)))
                .await?;
        }
    }
    loop {
        let f = ws.read_frame().await?;
        match f.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                ws.write_frame(Frame::new(true, f.opcode, None, f.payload))
                    .await?
            }
            _ => {}
        }
    }
}

/// A socket whose writes wait in a buffer until the server is about to wait
/// for input (or 64 KiB are waiting): the echoes of every frame that came in
/// one read go out in one write, as a server that batches its replies does.
/// With `/echo?coalesce=1`, so that a pipelined client, not the server's one
/// write per message, is what the scenario measures.
struct Coalescing {
    inner: TcpStream,
    out: Vec<u8>,
    written: usize,
}

const COALESCE_MAX: usize = 64 << 10;

impl Coalescing {
    fn new(inner: TcpStream) -> Self {
        Coalescing {
            inner,
            out: Vec::with_capacity(COALESCE_MAX),
            written: 0,
        }
    }

    /// Writes what waits; `Ready(Ok)` once all of it is on the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Coalescing {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => match this.poll_drain(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + data.len() > COALESCE_MAX {
            std::task::ready!(this.poll_drain(cx))?;
            if data.len() > COALESCE_MAX {
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
        }
        this.out.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

async fn raw_conn(s: TcpStream) -> anyhow::Result<()> {
    s.set_nodelay(true)?;
    // Reads go through a buffer (large payloads bypass it); each message
    // goes out in one vectored write, as the raw client does.
    let mut s = BufReader::with_capacity(crate::clients::RAW_READ_BUFFER, s);
    let mode = s.read_u8().await?;
    match mode {
        b'e' => {
            let mut buf = Vec::new();
            loop {
                let len = match s.read_u32().await {
                    Ok(l) => l as usize,
                    Err(_) => return Ok(()),
                };
                buf.resize(len, 0);
                s.read_exact(&mut buf).await?;
                write_message(s.get_mut(), &buf).await?;
            }
        }
        b's' => {
            let n = s.read_u32().await?;
            let mut buf = Vec::new();
            for _ in 0..n {
                let len = s.read_u32().await? as usize;
                buf.resize(len, 0);
                s.read_exact(&mut buf).await?;
            }
            s.get_mut().write_u8(b'd').await?;
        }
        b'o' => {
            let n = s.read_u32().await?;
            let size = s.read_u32().await? as usize;
            let data = vec![0x5Au8; size];
            for _ in 0..n {
                write_message(s.get_mut(), &data).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A 4-byte big-endian length, then the payload, in one vectored write.
pub async fn write_message(s: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let prefix = (data.len() as u32).to_be_bytes();
    let (mut head, mut body) = (&prefix[..], data);
    while !head.is_empty() || !body.is_empty() {
        let slices = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
        let mut n = s.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let h = n.min(head.len());
        head = &head[h..];
        n -= h;
        body = &body[n..];
    }
    Ok(())
}

/// Serves WebSocket on `ws` and raw TCP on `raw` until killed.
pub async fn run(ws: SocketAddr, raw: SocketAddr) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(65_536);
    let ws_listener = TcpListener::bind(ws).await?;
    let raw_listener = TcpListener::bind(raw).await?;
    tokio::spawn(async move {
        while let Ok((s, _)) = raw_listener.accept().await {
            tokio::spawn(raw_conn(s));
        }
    });
    println!("ready");
    loop {
        let (s, _) = ws_listener.accept().await?;
        tokio::spawn(ws_conn(s));
    }
}
