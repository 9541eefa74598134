//! Every way a server can break RFC 6455 after the handshake gets the close
//! code the RFC asks for, and the connection ends.

mod support;

use support::{plain_config, server_frame, Pair};
use tether_proto::{CloseKind, Config, Event, ProtocolError, State};

/// Feeds `bytes` and returns the close code the client sent and the error.
fn violation(config: Config, bytes: &[u8]) -> (u16, ProtocolError) {
    let mut pair = Pair::open(config);
    pair.feed(bytes);
    assert_eq!(pair.client.state(), State::Closed);
    let code = pair.sent_close_code().expect("a close frame was sent");
    let events = pair.events();
    let Some(Event::Closed(closed)) = events.last() else {
        panic!("no Closed event: {events:?}")
    };
    assert_eq!(closed.code.0, code);
    let CloseKind::Protocol(err) = closed.kind.clone() else {
        panic!("not a protocol close: {closed:?}")
    };
    (code, err)
}

#[test]
fn masked_server_frame_is_1002() {
    let (code, err) = violation(plain_config(), &[0x81, 0x81, 1, 2, 3, 4, b'a' ^ 1]);
    assert_eq!((code, err), (1002, ProtocolError::MaskedFrame));
}

#[test]
fn rsv_bits_without_extension_are_1002() {
    for b0 in [0xC1u8, 0xA1, 0x91] {
        let (code, err) = violation(plain_config(), &[b0, 0]);
        assert_eq!(code, 1002);
        assert!(matches!(err, ProtocolError::ReservedBits(_)));
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let (code, err) = violation(plain_config(), &[0x80 | op, 0]);
        assert_eq!((code, err), (1002, ProtocolError::ReservedOpcode(op)));
    }
}

#[test]
fn fragmented_control_frame_is_1002() {
    let (code, err) = violation(plain_config(), &server_frame(false, false, 0x9, b"x"));
    assert_eq!((code, err), (1002, ProtocolError::FragmentedControl));
}

#[test]
fn control_frame_over_125_is_1002() {
    let (code, err) = violation(plain_config(), &server_frame(true, false, 0x9, &[0u8; 126]));
    assert_eq!((code, err), (1002, ProtocolError::ControlTooLong));
}

#[test]
fn orphan_continuation_is_1002() {
    let (code, err) = violation(plain_config(), &server_frame(true, false, 0x0, b"x"));
    assert_eq!((code, err), (1002, ProtocolError::OrphanContinuation));
}

#[test]
fn new_data_frame_inside_fragmented_message_is_1002() {
    let mut bytes = server_frame(false, false, 0x1, b"a");
    bytes.extend(server_frame(true, false, 0x1, b"b"));
    let (code, err) = violation(plain_config(), &bytes);
    assert_eq!((code, err), (1002, ProtocolError::ExpectedContinuation));
}

#[test]
fn length_with_top_bit_is_1002() {
    let (code, err) = violation(plain_config(), &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!((code, err), (1002, ProtocolError::LengthTopBit));
}

#[test]
fn invalid_close_codes_are_1002() {
    for bad in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        let (code, err) = violation(
            plain_config(),
            &server_frame(true, false, 0x8, &bad.to_be_bytes()),
        );
        assert_eq!(
            (code, err),
            (1002, ProtocolError::InvalidCloseCode(bad)),
            "code {bad}"
        );
    }
}

#[test]
fn one_byte_close_payload_is_1002() {
    let (code, err) = violation(plain_config(), &server_frame(true, false, 0x8, &[3]));
    assert_eq!((code, err), (1002, ProtocolError::CloseLengthOne));
}

#[test]
fn invalid_utf8_text_is_1007() {
    let (code, err) = violation(
        plain_config(),
        &server_frame(true, false, 0x1, &[b'o', b'k', 0xFF]),
    );
    assert_eq!((code, err), (1007, ProtocolError::InvalidUtf8));
}

#[test]
fn invalid_utf8_split_across_fragments_fails_fast() {
    // "κ" is CE BA. Split it across two fragments; the second fragment's
    // first byte is invalid. The connection fails on that fragment, before
    // the (never sent) final frame.
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(false, false, 0x1, &[b'a', 0xCE]));
    assert_eq!(
        pair.client.state(),
        State::Open,
        "a split code point is fine so far"
    );
    pair.feed(&server_frame(false, false, 0x0, &[0x41]));
    assert_eq!(pair.client.state(), State::Closed);
    assert_eq!(pair.sent_close_code(), Some(1007));
}

#[test]
fn valid_utf8_split_across_fragments_is_delivered() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(false, false, 0x1, &[b'a', 0xCE]));
    pair.feed(&server_frame(true, false, 0x0, &[0xBA]));
    assert_eq!(
        pair.events(),
        vec![Event::Message(tether_proto::Message::Text("aκ".into()))]
    );
}

#[test]
fn invalid_utf8_close_reason_is_1007() {
    let (code, err) = violation(
        plain_config(),
        &server_frame(true, false, 0x8, &[0x03, 0xE8, 0xC0, 0x80]),
    );
    assert_eq!((code, err), (1007, ProtocolError::InvalidUtf8));
}

#[test]
fn message_over_limit_is_1009_from_the_header_alone() {
    let config = Config {
        max_message_size: 1000,
        max_frame_size: 1000,
        ..plain_config()
    };
    // Only the header of a 1 MB frame arrives: it fails before any payload.
    let (code, err) = violation(config, &[0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0]);
    assert_eq!(code, 1009);
    assert!(matches!(err, ProtocolError::FrameTooBig { .. }));
}

#[test]
fn fragmented_message_over_limit_is_1009() {
    let config = Config {
        max_message_size: 100,
        ..plain_config()
    };
    let mut bytes = server_frame(false, false, 0x2, &[0u8; 60]);
    bytes.extend(server_frame(true, false, 0x0, &[0u8; 60]));
    let (code, err) = violation(config, &bytes);
    assert_eq!(code, 1009);
    assert_eq!(
        err,
        ProtocolError::MessageTooBig {
            size: 120,
            limit: 100
        }
    );
}

#[test]
fn rsv1_on_control_or_continuation_is_1002_with_deflate() {
    let config = Config {
        deflate: Some(Default::default()),
        ..plain_config()
    };
    let request = tether_proto::Request::new("h", 80, false, "/");
    let ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let mut pair = Pair::open_with(config.clone(), request.clone(), ext);
    pair.feed(&server_frame(true, true, 0x9, b""));
    assert_eq!(pair.sent_close_code(), Some(1002));

    let mut pair = Pair::open_with(config, request, ext);
    let mut bytes = server_frame(false, false, 0x2, b"a");
    bytes.extend(server_frame(true, true, 0x0, b"b"));
    pair.feed(&bytes);
    assert_eq!(pair.sent_close_code(), Some(1002));
}

#[test]
fn nothing_is_processed_after_a_violation() {
    let mut pair = Pair::open(plain_config());
    let mut bytes = vec![0x83, 0]; // reserved opcode
    bytes.extend(server_frame(true, false, 0x1, b"after"));
    pair.feed(&bytes);
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], Event::Closed(_)));
}
