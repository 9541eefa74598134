//! An in-memory server for driving a `ClientConnection` in tests: it answers
//! the handshake, writes server frames, and decodes the client's masked frames.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_proto::mask::apply_mask;
use tether_proto::{accept_for_key, ClientConnection, Config, Event, Message, Request};

/// A frame the client sent, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// The test clock: starts at an arbitrary instant and only moves when told.
pub struct Clock(pub Instant);

impl Clock {
    pub fn new() -> Self {
        Clock(Instant::now())
    }
    pub fn advance(&mut self, d: Duration) -> Instant {
        self.0 += d;
        self.0
    }
}

/// A config without keepalive and without compression, unless a test sets them.
pub fn plain_config() -> Config {
    Config {
        deflate: None,
        ping_interval: None,
        ping_timeout: None,
        ..Config::default()
    }
}

/// The client's request, parsed: (request line, headers).
pub fn parse_request(bytes: &[u8]) -> (String, Vec<(String, String)>) {
    let text = std::str::from_utf8(bytes).expect("request is ASCII");
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap().to_string();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    (first, headers)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A 101 response for `request_bytes`, with `extra` header lines.
pub fn accept_response(request_bytes: &[u8], extra: &str) -> Vec<u8> {
    let (_, headers) = parse_request(request_bytes);
    let key = header(&headers, "Sec-WebSocket-Key").unwrap();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept_for_key(key)
    )
    .into_bytes()
}

/// A server frame (never masked).
pub fn server_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(fin as u8) << 7 | (rsv1 as u8) << 6 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Decodes every complete masked client frame in `bytes`.
pub fn decode_client_frames(mut bytes: &[u8]) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let b0 = bytes[0];
        let b1 = bytes[1];
        assert!(b1 & 0x80 != 0, "client frames must be masked");
        let (len, mut at) = match b1 & 0x7F {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        let key: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        at += 4;
        let mut payload = bytes[at..at + len].to_vec();
        apply_mask(&mut payload, key);
        frames.push(ClientFrame {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            opcode: b0 & 0x0F,
            payload,
        });
        bytes = &bytes[at + len..];
    }
    frames
}

/// A client and the bytes it has sent, past the handshake.
pub struct Pair {
    pub client: ClientConnection,
    pub clock: Clock,
}

impl Pair {
    /// A client opened against a server that answers with `extra` headers.
    pub fn open_with(config: Config, request: Request, extra: &str) -> Pair {
        let mut client = ClientConnection::new(Arc::new(config), &request).unwrap();
        let mut req = Vec::new();
        let _ = client.poll_transmit(&mut req);
        let clock = Clock::new();
        client.receive_data(clock.0, &accept_response(&req, extra));
        match client.poll_event() {
            Some(Event::Open(_)) => {}
            other => panic!("expected open, got {other:?}"),
        }
        Pair { client, clock }
    }

    pub fn open(config: Config) -> Pair {
        Self::open_with(config, Request::new("localhost", 9000, false, "/"), "")
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.client.receive_data(self.clock.0, bytes);
    }

    /// Frames the client has queued since the last call.
    pub fn sent(&mut self) -> Vec<ClientFrame> {
        let mut buf = Vec::new();
        let _ = self.client.poll_transmit(&mut buf);
        decode_client_frames(&buf)
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// The close code of the one close frame the client sent.
    pub fn sent_close_code(&mut self) -> Option<u16> {
        self.sent()
            .into_iter()
            .find(|f| f.opcode == 8)
            .map(|f| u16::from_be_bytes([f.payload[0], f.payload[1]]))
    }
}

/// Encodes `messages` as server frames, each split into `parts` fragments.
pub fn encode(messages: &[(bool, Vec<u8>)], parts: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    for (text, payload) in messages {
        let opcode = if *text { 1 } else { 2 };
        let n = parts.max(1);
        let step = payload.len().div_ceil(n).max(1);
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(step).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let fin = i == chunks.len() - 1;
            let op = if i == 0 { opcode } else { 0 };
            wire.extend(server_frame(fin, false, op, chunk));
        }
    }
    wire
}

pub fn expected(messages: &[(bool, Vec<u8>)]) -> Vec<Event> {
    messages
        .iter()
        .map(|(text, p)| {
            Event::Message(if *text {
                Message::Text(String::from_utf8(p.clone()).unwrap())
            } else {
                Message::Binary(p.clone())
            })
        })
        .collect()
}
