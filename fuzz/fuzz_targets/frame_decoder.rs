//! Feeds arbitrary bytes, in arbitrary chunks, to an open connection (with
//! permessage-deflate negotiated). It must never panic, and once closed it
//! must stay closed.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tether_proto::{accept_for_key, ClientConnection, Config, Event, Request, State};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    let config = Config { max_message_size: 1 << 20, max_frame_size: 1 << 20, ..Config::default() };
    let mut client = ClientConnection::new(Arc::new(config), &Request::new("h", 80, false, "/")).unwrap();
    let mut req = Vec::new();
    let _ = client.poll_transmit(&mut req);
    let text = String::from_utf8(req).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
    let response = format!(
        "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        accept_for_key(key)
    );
    let now = Instant::now();
    client.receive_data(now, response.as_bytes());
    assert!(matches!(client.poll_event(), Some(Event::Open(_))));
    let step = (chunk as usize % 64) + 1;
    let mut out = Vec::new();
    for piece in data.chunks(step) {
        client.receive_data(now, piece);
        let _ = client.poll_transmit(&mut out);
        out.clear();
        while let Some(event) = client.poll_event() {
            if matches!(event, Event::Closed(_)) {
                assert_eq!(client.state(), State::Closed);
            }
        }
    }
    client.receive_eof(now);
    assert_eq!(client.state(), State::Closed);
});
