//! CPU-bound measurements without sockets: masking, UTF-8 validation, and
//! permessage-deflate against raw zlib-rs on a JSON stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tether_proto::mask::{apply_mask, apply_mask_naive, extend_masked};
use tether_proto::utf8::Utf8Validator;
use tether_proto::{accept_for_key, ClientConnection, Config, Event, Request};

/// Runs `f` over `bytes` bytes repeatedly for about `budget`; returns GB/s.
fn throughput(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget {
        f();
        rounds += 1;
    }
    (bytes as f64 * rounds as f64) / start.elapsed().as_secs_f64() / 1e9
}

pub fn masking(budget: Duration) -> (f64, f64) {
    let mut buf = vec![0xA5u8; 1 << 20];
    let key = [0x12, 0x34, 0x56, 0x78];
    let fast = throughput(buf.len(), budget, || {
        apply_mask(std::hint::black_box(&mut buf), key)
    });
    let naive = throughput(buf.len(), budget, || {
        apply_mask_naive(std::hint::black_box(&mut buf), key)
    });
    (fast, naive)
}

/// Copying a 1 MiB payload into a send buffer while masking it (what
/// `send_binary` does), against a plain copy of the same bytes.
pub fn masked_copy(budget: Duration) -> (f64, f64) {
    let src = vec![0xA5u8; 1 << 20];
    let mut dst: Vec<u8> = Vec::with_capacity(src.len());
    let key = [0x12, 0x34, 0x56, 0x78];
    let masked = throughput(src.len(), budget, || {
        dst.clear();
        extend_masked(std::hint::black_box(&mut dst), &src, key);
    });
    let plain = throughput(src.len(), budget, || {
        dst.clear();
        std::hint::black_box(&mut dst).extend_from_slice(&src);
    });
    (masked, plain)
}

pub fn utf8(budget: Duration) -> (f64, f64) {
    let ascii = "The quick brown fox jumps over the lazy dog. "
        .repeat(1 << 20 >> 6)
        .into_bytes();
    let mixed = "Grüße aus Köln — 東京 📈 κόσμε; "
        .repeat(1 << 20 >> 6)
        .into_bytes();
    let run = |data: &[u8]| {
        throughput(data.len(), budget, || {
            let mut v = Utf8Validator::new();
            // Feed in 4 KiB pieces, as a socket would.
            for piece in data.chunks(4096) {
                v.feed(std::hint::black_box(piece)).unwrap();
            }
            v.finish().unwrap();
        })
    };
    (run(&ascii), run(&mixed))
}

/// A JSON market-data stream: `n` messages of about 150 bytes.
pub fn json_stream(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"quote\",\"seq\":{i},\"symbol\":\"{}\",\"bid\":{:.2},\"ask\":{:.2},\"size\":{},\"venue\":\"XNAS\",\"ts\":{}}}",
                ["ACME", "GLOBEX", "INITECH", "UMBRELLA"][i % 4],
                100.0 + (i % 97) as f64 * 0.01,
                100.05 + (i % 89) as f64 * 0.01,
                (i * 37) % 1000,
                1_795_762_800_000u64 + i as u64 * 3
            )
        })
        .collect()
}

fn open_compressed() -> ClientConnection {
    open_compressed_with(false)
}

/// MB/s of JSON text compressed: Tether's send path (deflate + framing +
/// masking) against raw zlib-rs deflate with a sync flush per message.
pub fn deflate(messages: &[String], budget: Duration) -> (f64, f64) {
    let total: usize = messages.iter().map(String::len).sum();
    let mut conn = open_compressed();
    let mut out = Vec::new();
    let tether = throughput(total, budget, || {
        for m in messages {
            conn.send_text(m).unwrap();
        }
        out.clear();
        let _ = conn.poll_transmit(&mut out);
    }) * 1000.0;
    let mut z = Compress::new(Compression::new(6), false);
    let mut buf = Vec::with_capacity(4096);
    let raw = throughput(total, budget, || {
        for m in messages {
            buf.clear();
            z.compress_vec(m.as_bytes(), &mut buf, FlushCompress::Sync)
                .unwrap();
        }
    }) * 1000.0;
    (tether, raw)
}

/// MB/s of JSON text inflated: Tether's receive path (framing + inflate +
/// UTF-8 + events) against raw zlib-rs inflate.
pub fn inflate(messages: &[String], budget: Duration) -> (f64, f64) {
    let total: usize = messages.iter().map(String::len).sum();
    // Compress the stream once, as a server with context takeover would.
    let mut z = Compress::new(Compression::new(6), false);
    let mut compressed: Vec<Vec<u8>> = Vec::new();
    for m in messages {
        let mut out = Vec::with_capacity(m.len() + 64);
        z.compress_vec(m.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        compressed.push(out);
    }
    let mut wire = Vec::new();
    for c in &compressed {
        wire.push(0xC1); // FIN + RSV1 + text
        if c.len() < 126 {
            wire.push(c.len() as u8);
        } else {
            wire.push(126);
            wire.extend_from_slice(&(c.len() as u16).to_be_bytes());
        }
        wire.extend_from_slice(c);
    }
    // Each round needs a fresh inflate context: the stream starts over.
    let tether = throughput(total, budget, || {
        let mut conn = open_compressed();
        for piece in wire.chunks(16 << 10) {
            conn.receive_data(Instant::now(), piece);
            while let Some(e) = conn.poll_event() {
                std::hint::black_box(e);
            }
        }
    }) * 1000.0;
    let raw = throughput(total, budget, || {
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(1024);
        for c in &compressed {
            out.clear();
            d.decompress_vec(c, &mut out, FlushDecompress::Sync)
                .unwrap();
            d.decompress_vec(&[0, 0, 0xFF, 0xFF], &mut out, FlushDecompress::Sync)
                .unwrap();
            std::hint::black_box(&out);
        }
    }) * 1000.0;
    (tether, raw)
}

/// Heap bytes per compressed connection (engine only, no socket) after one
/// compressed message each way, so both zlib streams exist; with context
/// takeover (the default) and without it.
pub fn compressed_connection_heap(heap: impl Fn() -> usize) -> (f64, f64, f64) {
    let measure = |no_context: bool, send: bool| {
        let n = 500;
        let mut z = Compress::new(Compression::new(6), false);
        let text =
            "{\"symbol\":\"ACME\",\"bid\":101.25,\"ask\":101.30,\"venue\":\"XNAS\"}".repeat(4);
        let mut payload = Vec::with_capacity(1024);
        z.compress_vec(text.as_bytes(), &mut payload, FlushCompress::Sync)
            .unwrap();
        payload.truncate(payload.len() - 4);
        let mut frame = vec![0xC1, payload.len() as u8];
        frame.extend_from_slice(&payload);
        let before = heap();
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut c = open_compressed_with(no_context);
            if send {
                c.send_text(&text).unwrap();
            }
            let mut out = Vec::new();
            let _ = c.poll_transmit(&mut out);
            c.receive_data(Instant::now(), &frame);
            while c.poll_event().is_some() {}
            c.shrink_buffers();
            conns.push(c);
        }
        let per = (heap() - before - conns.capacity() * std::mem::size_of::<ClientConnection>())
            as f64
            / n as f64;
        drop(conns);
        per + std::mem::size_of::<ClientConnection>() as f64
    };
    (
        measure(false, true),
        measure(false, false),
        measure(true, true),
    )
}

fn open_compressed_with(no_context: bool) -> ClientConnection {
    let deflate = tether_proto::DeflateConfig {
        compression_threshold: 0,
        client_no_context_takeover: no_context,
        server_no_context_takeover: no_context,
        ..Default::default()
    };
    let config = Config {
        deflate: Some(deflate),
        ping_interval: None,
        ping_timeout: None,
        ..Config::default()
    };
    let mut c =
        ClientConnection::new(Arc::new(config), &Request::new("h", 80, false, "/")).unwrap();
    let mut req = Vec::new();
    let _ = c.poll_transmit(&mut req);
    let text = String::from_utf8(req).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let ext = if no_context {
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    } else {
        "permessage-deflate"
    };
    let resp = format!(
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {ext}\r\n\r\n",
        accept_for_key(key)
    );
    c.receive_data(Instant::now(), resp.as_bytes());
    assert!(matches!(c.poll_event(), Some(Event::Open(o)) if o.compression));
    c
}
