//! A loopback WebSocket echo endpoint, so a first `tether serve` with the
//! example config has a server to talk to (`[host] demo_echo`). It answers
//! every text and binary frame with the same frame, pings with pongs, and
//! closes with the code it is sent. No compression, messages up to 1 MiB.
//! It is a demo, not a server product: loopback addresses only.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8192;
const MAX_PAYLOAD: u64 = 1 << 20;

/// Binds `addr` (which must be loopback) and serves echoes until the
/// runtime stops.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("demo_echo must be a loopback address, not {addr}"),
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = echo(stream).await {
                    tracing::debug!(error = %e, "demo echo connection ended");
                }
            });
        }
    });
    Ok(bound)
}

fn bad(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string())
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let body_start = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request
        .parse(&head[..body_start])
        .map_err(|e| bad(&e.to_string()))?;
    let key = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim);
    let Some(key) = key else {
        stream
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return Ok(());
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        tether_proto::accept_for_key(key)
    );
    stream.write_all(response.as_bytes()).await?;
    let mut pending = head.split_off(body_start);
    loop {
        let Some(frame) = read_frame(&mut stream, &mut pending).await? else {
            return Ok(());
        };
        match frame.opcode {
            0x8 => {
                let code = frame.payload.get(..2).unwrap_or(&[0x03, 0xe8]).to_vec();
                write_frame(&mut stream, true, 0x8, &code).await?;
                return Ok(());
            }
            0x9 => write_frame(&mut stream, true, 0xA, &frame.payload).await?,
            0xA => {}
            op => write_frame(&mut stream, frame.fin, op, &frame.payload).await?,
        }
    }
}

struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

async fn take(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 8192];
    while pending.len() < n {
        let got = stream.read(&mut buf).await?;
        if got == 0 {
            return Ok(None);
        }
        pending.extend_from_slice(&buf[..got]);
    }
    let rest = pending.split_off(n);
    Ok(Some(std::mem::replace(pending, rest)))
}

async fn read_frame(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
) -> std::io::Result<Option<Frame>> {
    let Some(h) = take(stream, pending, 2).await? else {
        return Ok(None);
    };
    let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0f);
    if h[1] & 0x80 == 0 {
        return Err(bad("client frames must be masked"));
    }
    let len = match h[1] & 0x7f {
        126 => take(stream, pending, 2)
            .await?
            .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => take(stream, pending, 8).await?.map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b);
            u64::from_be_bytes(a)
        }),
        n => Some(u64::from(n)),
    };
    let Some(len) = len else { return Ok(None) };
    if len > MAX_PAYLOAD {
        write_frame(stream, true, 0x8, &1009u16.to_be_bytes()).await?;
        return Ok(None);
    }
    let Some(mask) = take(stream, pending, 4).await? else {
        return Ok(None);
    };
    let Some(mut payload) = take(stream, pending, len as usize).await? else {
        return Ok(None);
    };
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

async fn write_frame(
    stream: &mut TcpStream,
    fin: bool,
    opcode: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    stream.write_all(&out).await
}
