//! Feeds an arbitrary handshake response. It must never panic, and it must
//! end Open or Closed once the stream ends.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tether_proto::{ClientConnection, Config, Request, State};

fuzz_target!(|data: &[u8]| {
    let mut request = Request::new("h", 80, false, "/");
    request.protocol("mqtt");
    let config = Config { max_handshake_size: 4096, ..Config::default() };
    let mut client = ClientConnection::new(Arc::new(config), &request).unwrap();
    let mut req = Vec::new();
    let _ = client.poll_transmit(&mut req);
    let now = Instant::now();
    for piece in data.chunks(97) {
        client.receive_data(now, piece);
    }
    client.receive_eof(now);
    assert_ne!(client.state(), State::Connecting);
    while client.poll_event().is_some() {}
});
