//! The opening handshake: the request we send, and every check on the answer.

mod support;

use std::sync::Arc;

use support::{accept_response, header, parse_request, plain_config, Clock};
use tether_proto::{
    ClientConnection, CloseKind, Config, Event, HandshakeError, Message, Request, State,
};

fn start(config: Config, request: &Request) -> (ClientConnection, Vec<u8>) {
    let mut client = ClientConnection::new(Arc::new(config), request).unwrap();
    let mut req = Vec::new();
    assert!(client.poll_transmit(&mut req) > 0);
    (client, req)
}

fn handshake_error(response: &[u8]) -> HandshakeError {
    let (mut client, _) = start(plain_config(), &Request::new("h", 80, false, "/"));
    client.receive_data(Clock::new().0, response);
    failed(&mut client)
}

fn failed(client: &mut ClientConnection) -> HandshakeError {
    assert_eq!(client.state(), State::Closed);
    match client.poll_event() {
        Some(Event::Closed(c)) => match c.kind {
            CloseKind::Handshake(e) => e,
            other => panic!("not a handshake failure: {other:?}"),
        },
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn request_has_every_required_header() {
    let mut request = Request::new("example.com", 8080, false, "/chat?room=1");
    request
        .origin("https://app.example")
        .header("X-Token", "t")
        .protocol("v12.stomp")
        .protocol("mqtt");
    let config = Config {
        deflate: Some(Default::default()),
        ..plain_config()
    };
    let (_, req) = start(config, &request);
    let (line, headers) = parse_request(&req);
    assert_eq!(line, "GET /chat?room=1 HTTP/1.1");
    assert_eq!(header(&headers, "Host"), Some("example.com:8080"));
    assert_eq!(header(&headers, "Upgrade"), Some("websocket"));
    assert_eq!(header(&headers, "Connection"), Some("Upgrade"));
    assert_eq!(header(&headers, "Sec-WebSocket-Version"), Some("13"));
    assert_eq!(header(&headers, "Origin"), Some("https://app.example"));
    assert_eq!(header(&headers, "X-Token"), Some("t"));
    assert_eq!(
        header(&headers, "Sec-WebSocket-Protocol"),
        Some("v12.stomp, mqtt")
    );
    assert_eq!(
        header(&headers, "Sec-WebSocket-Extensions"),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(header(&headers, "Sec-WebSocket-Key").unwrap().len(), 24);
}

#[test]
fn tokens_match_case_insensitively_and_in_lists() {
    let (mut client, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let ok = accept_response(&req, "");
    let text = String::from_utf8(ok)
        .unwrap()
        .replace("Upgrade: websocket", "upgrade: WebSocket")
        .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
    client.receive_data(Clock::new().0, text.as_bytes());
    assert_eq!(client.state(), State::Open);
}

#[test]
fn non_101_is_rejected_with_status_headers_and_body() {
    let err = handshake_error(
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 12\r\nX-Why: token\r\n\r\nno entry for",
    );
    match err {
        HandshakeError::Rejected {
            status,
            reason,
            headers,
            body,
        } => {
            assert_eq!((status, reason.as_str()), (403, "Forbidden"));
            assert!(headers.iter().any(|(n, v)| n == "X-Why" && v == "token"));
            assert_eq!(body, b"no entry for");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejection_body_is_collected_across_reads_and_capped() {
    let (mut client, _) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let now = Clock::new().0;
    client.receive_data(
        now,
        b"HTTP/1.1 500 Oops\r\nContent-Length: 10000\r\n\r\nfirst",
    );
    assert_eq!(client.state(), State::Connecting, "waits for more body");
    client.receive_data(now, &vec![b'x'; 9000]);
    match failed(&mut client) {
        HandshakeError::Rejected { status, body, .. } => {
            assert_eq!(status, 500);
            assert_eq!(body.len(), 4096);
            assert!(body.starts_with(b"firstxxx"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejection_without_length_completes_at_eof() {
    let (mut client, _) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let now = Clock::new().0;
    client.receive_data(now, b"HTTP/1.1 404 Not Found\r\n\r\npartial");
    // Without Content-Length the body is what came with the head.
    let err = failed(&mut client);
    assert!(
        matches!(err, HandshakeError::Rejected { status: 404, ref body, .. } if body == b"partial")
    );
}

#[test]
fn missing_or_wrong_headers_are_rejected() {
    let (_, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let good = String::from_utf8(accept_response(&req, "")).unwrap();
    // A response for another request has a different accept value.
    assert_eq!(handshake_error(good.as_bytes()), HandshakeError::BadAccept);
    assert!(matches!(
        handshake_error(
            b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"
        ),
        HandshakeError::NotUpgraded(_)
    ));
    assert!(matches!(
        handshake_error(
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n"
        ),
        HandshakeError::NotUpgraded(_)
    ));
    assert!(matches!(
        handshake_error(b"HTTP/1.1 abc\r\n\r\n"),
        HandshakeError::InvalidHttp(_)
    ));
    assert!(matches!(
        handshake_error(b"garbage\r\n\r\n"),
        HandshakeError::InvalidHttp(_)
    ));
}

#[test]
fn subprotocol_must_be_one_offered() {
    let mut request = Request::new("h", 80, false, "/");
    request.protocol("mqtt");
    for (extra, expect_ok) in [
        ("Sec-WebSocket-Protocol: mqtt\r\n", true),
        ("", true),
        ("Sec-WebSocket-Protocol: stomp\r\n", false),
        ("Sec-WebSocket-Protocol: mqtt, stomp\r\n", false),
    ] {
        let (mut client, req) = start(plain_config(), &request);
        client.receive_data(Clock::new().0, &accept_response(&req, extra));
        if expect_ok {
            match client.poll_event() {
                Some(Event::Open(o)) => assert_eq!(o.protocol.is_some(), !extra.is_empty()),
                other => panic!("{extra}: {other:?}"),
            }
        } else {
            assert!(
                matches!(failed(&mut client), HandshakeError::UnexpectedProtocol(_)),
                "{extra}"
            );
        }
    }
}

#[test]
fn unoffered_extension_is_rejected() {
    let (mut client, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    client.receive_data(
        Clock::new().0,
        &accept_response(&req, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    );
    assert!(matches!(
        failed(&mut client),
        HandshakeError::UnexpectedExtension(_)
    ));
    let config = Config {
        deflate: Some(Default::default()),
        ..plain_config()
    };
    let (mut client, req) = start(config, &Request::new("h", 80, false, "/"));
    client.receive_data(
        Clock::new().0,
        &accept_response(&req, "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
    );
    assert!(matches!(
        failed(&mut client),
        HandshakeError::UnexpectedExtension(_)
    ));
}

#[test]
fn bad_deflate_parameters_fail_the_handshake() {
    for ext in [
        "permessage-deflate; bogus",
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate, permessage-deflate",
    ] {
        let config = Config {
            deflate: Some(Default::default()),
            ..plain_config()
        };
        let (mut client, req) = start(config, &Request::new("h", 80, false, "/"));
        client.receive_data(
            Clock::new().0,
            &accept_response(&req, &format!("Sec-WebSocket-Extensions: {ext}\r\n")),
        );
        assert!(
            matches!(failed(&mut client), HandshakeError::InvalidExtension(_)),
            "{ext}"
        );
    }
}

#[test]
fn oversized_response_head_is_rejected() {
    let config = Config {
        max_handshake_size: 1024,
        ..plain_config()
    };
    let (mut client, _) = start(config, &Request::new("h", 80, false, "/"));
    let mut big = b"HTTP/1.1 101 OK\r\n".to_vec();
    for i in 0..40 {
        big.extend(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).bytes());
    }
    client.receive_data(Clock::new().0, &big);
    assert_eq!(
        failed(&mut client),
        HandshakeError::ResponseTooLarge { limit: 1024 }
    );
}

#[test]
fn frames_in_the_same_read_as_the_101_are_kept() {
    let (mut client, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let mut bytes = accept_response(&req, "");
    bytes.extend(support::server_frame(true, false, 1, b"first"));
    bytes.extend(support::server_frame(true, false, 2, b"second"));
    client.receive_data(Clock::new().0, &bytes);
    assert!(matches!(client.poll_event(), Some(Event::Open(_))));
    assert_eq!(
        client.poll_event(),
        Some(Event::Message(Message::Text("first".into())))
    );
    assert_eq!(
        client.poll_event(),
        Some(Event::Message(Message::Binary(b"second".to_vec())))
    );
}

#[test]
fn response_one_byte_at_a_time() {
    let (mut client, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    let mut bytes = accept_response(&req, "");
    bytes.extend(support::server_frame(true, false, 1, b"hi"));
    let now = Clock::new().0;
    for b in &bytes {
        client.receive_data(now, std::slice::from_ref(b));
    }
    assert!(matches!(client.poll_event(), Some(Event::Open(_))));
    assert_eq!(
        client.poll_event(),
        Some(Event::Message(Message::Text("hi".into())))
    );
}

#[test]
fn eof_during_handshake_is_reported() {
    let (mut client, _) = start(plain_config(), &Request::new("h", 80, false, "/"));
    client.receive_data(Clock::new().0, b"HTTP/1.1 101 Swi");
    client.receive_eof(Clock::new().0);
    assert_eq!(failed(&mut client), HandshakeError::Eof);
}

#[test]
fn sending_before_open_is_an_error() {
    let (mut client, _) = start(plain_config(), &Request::new("h", 80, false, "/"));
    assert_eq!(client.send_text("x"), Err(tether_proto::SendError::NotOpen));
}

/// Runs one connection on a generator seeded with `seed`: the handshake,
/// then a text message, a ping and a close. Returns every byte it wrote.
fn seeded_run(seed: u64) -> Vec<u8> {
    use rand::SeedableRng;
    let request = Request::new("h", 80, false, "/");
    let entropy = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
    let mut client =
        ClientConnection::with_entropy(Arc::new(plain_config()), &request, entropy).unwrap();
    let mut wire = Vec::new();
    let _ = client.poll_transmit(&mut wire);
    let clock = Clock::new();
    client.receive_data(clock.0, &accept_response(&wire, ""));
    assert!(matches!(client.poll_event(), Some(Event::Open(_))));
    client.send_text("same bytes every run").unwrap();
    client.send_ping(b"p").unwrap();
    client.close(clock.0, 1000.into(), "bye").unwrap();
    let _ = client.poll_transmit(&mut wire);
    wire
}

#[test]
fn a_seeded_generator_reproduces_every_byte_on_the_wire() {
    let first = seeded_run(7);
    assert_eq!(first, seeded_run(7), "same seed, different bytes");
    let other = seeded_run(8);
    assert_ne!(first, other, "the seed does not reach the engine");
    // The seed changes the key and the masks, nothing else: same lengths.
    assert_eq!(first.len(), other.len());
    let head = |wire: &[u8]| {
        let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        parse_request(&wire[..end]).1
    };
    let (h1, h2) = (head(&first), head(&other));
    assert_ne!(
        header(&h1, "sec-websocket-key"),
        header(&h2, "sec-websocket-key")
    );
}

#[test]
fn every_frame_gets_a_fresh_mask() {
    let (mut client, req) = start(plain_config(), &Request::new("h", 80, false, "/"));
    client.receive_data(Clock::new().0, &accept_response(&req, ""));
    assert!(matches!(client.poll_event(), Some(Event::Open(_))));
    let mut masks = std::collections::HashSet::new();
    for _ in 0..64 {
        client.send_text("x").unwrap();
        let mut out = Vec::new();
        let _ = client.poll_transmit(&mut out);
        // 2 header bytes, then the 4-byte masking key.
        masks.insert(<[u8; 4]>::try_from(&out[2..6]).unwrap());
    }
    assert!(
        masks.len() >= 63,
        "only {} distinct masks in 64 frames",
        masks.len()
    );
}
