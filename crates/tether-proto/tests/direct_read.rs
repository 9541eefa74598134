//! Message buffers: reading large payloads straight into them
//! (`lend_payload_buffer` / `receive_payload`) delivers exactly what
//! `receive_data` would, whatever the driver reads into the buffer; and a
//! buffer given back with `recycle` carries the next large message.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::{encode, expected, plain_config, server_frame, Pair};
use tether_proto::{CloseKind, Event, Message, ProtocolError};

/// A driver that reads `chunk` bytes at a time, into the lent buffer when
/// the engine offers one (and, with `overfill`, past its spare room, as a
/// careless reader might), otherwise through `receive_data`. Returns how
/// many bytes went in directly.
fn drive(pair: &mut Pair, mut wire: &[u8], chunk: usize, min: usize, overfill: bool) -> usize {
    let mut direct = 0;
    while !wire.is_empty() {
        match pair.client.lend_payload_buffer(min) {
            Some(mut payload) => {
                let room = if overfill {
                    payload.spare() + 7
                } else {
                    payload.spare()
                };
                let n = room.min(chunk).min(wire.len());
                payload.buffer().extend_from_slice(&wire[..n]);
                pair.client.receive_payload(pair.clock.0, payload);
                direct += n;
                wire = &wire[n..];
            }
            None => {
                let n = chunk.min(wire.len());
                pair.feed(&wire[..n]);
                wire = &wire[n..];
            }
        }
    }
    direct
}

fn message_strategy() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        ".{0,2000}".prop_map(|s: String| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..20_000).prop_map(|b| (false, b)),
    ]
}

proptest! {
    #[test]
    fn direct_reads_deliver_what_receive_data_delivers(
        messages in proptest::collection::vec(message_strategy(), 1..6),
        parts in 1usize..4,
        chunk in 1usize..5000,
        min in 1usize..3000,
        overfill: bool,
    ) {
        let wire = encode(&messages, parts);
        let mut pair = Pair::open(plain_config());
        drive(&mut pair, &wire, chunk, min, overfill);
        prop_assert_eq!(pair.events(), expected(&messages));
        prop_assert!(pair.sent().is_empty());
    }
}

#[test]
fn a_large_binary_message_is_read_mostly_in_place() {
    let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let wire = server_frame(true, false, 2, &payload);
    let mut pair = Pair::open(plain_config());
    let direct = drive(&mut pair, &wire, 4096, 1024, false);
    // Only the first read (header and the start of the payload) is copied.
    assert!(direct >= payload.len() - 4096, "direct {direct}");
    assert_eq!(
        pair.events(),
        vec![Event::Message(Message::Binary(payload))]
    );
}

#[test]
fn nothing_is_lent_between_frames_or_for_small_remainders() {
    let mut pair = Pair::open(plain_config());
    assert!(pair.client.lend_payload_buffer(1).is_none(), "no frame yet");
    let wire = server_frame(true, false, 2, &[7u8; 100]);
    pair.feed(&wire[..10]); // the header and 8 payload bytes: 92 left
    assert!(pair.client.lend_payload_buffer(93).is_none());
    let payload = pair.client.lend_payload_buffer(92).expect("lent");
    assert_eq!(payload.spare(), 92);
    pair.client.receive_payload(pair.clock.0, payload); // nothing read
    pair.feed(&wire[10..]);
    assert_eq!(
        pair.events(),
        vec![Event::Message(Message::Binary(vec![7u8; 100]))]
    );
}

#[test]
fn invalid_utf8_read_in_place_closes_with_1007() {
    let mut text = vec![b'a'; 10_000];
    text[9_000] = 0xFF;
    let wire = server_frame(true, false, 1, &text);
    let mut pair = Pair::open(plain_config());
    drive(&mut pair, &wire, 4096, 1024, false);
    assert_eq!(pair.sent_close_code(), Some(1007));
    let events = pair.events();
    assert!(
        matches!(
            events.last(),
            Some(Event::Closed(c)) if c.kind == CloseKind::Protocol(ProtocolError::InvalidUtf8)
        ),
        "{events:?}"
    );
}

#[test]
fn a_buffer_returned_after_a_timeout_closed_the_connection_is_dropped() {
    let mut config = plain_config();
    config.close_timeout = Duration::from_secs(1);
    let mut pair = Pair::open(config);
    let wire = server_frame(true, false, 2, &[1u8; 50_000]);
    pair.feed(&wire[..1000]);
    pair.client
        .close(pair.clock.0, tether_proto::CloseCode::NORMAL, "")
        .unwrap();
    let mut payload = pair.client.lend_payload_buffer(1).expect("lent");
    let now = pair.clock.advance(Duration::from_secs(2));
    pair.client.handle_timeout(now);
    payload.buffer().extend_from_slice(&wire[1000..2000]);
    pair.client.receive_payload(now, payload);
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], Event::Closed(c) if c.kind == CloseKind::CloseTimeout),
        "{events:?}"
    );
}

fn binary(event: Option<Event>) -> Vec<u8> {
    match event {
        Some(Event::Message(Message::Binary(b))) => b,
        other => panic!("expected a binary message, got {other:?}"),
    }
}

#[test]
fn a_recycled_buffer_carries_the_next_large_message() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(true, false, 2, &[1u8; 200_000]));
    let first = binary(pair.client.poll_event());
    let ptr = first.as_ptr();
    assert!(pair.client.recycle(first));
    pair.feed(&server_frame(true, false, 2, &[2u8; 150_000]));
    let second = binary(pair.client.poll_event());
    assert_eq!(second, vec![2u8; 150_000]);
    assert_eq!(second.as_ptr(), ptr, "the recycled buffer was reused");
    // A message under half its size gets a buffer of its own, and so does
    // one larger than it.
    assert!(pair.client.recycle(second));
    assert!(
        !pair.client.recycle(vec![0u8; 1000]),
        "small buffers are not kept"
    );
    pair.feed(&server_frame(true, false, 2, &[3u8; 70_000]));
    let small = binary(pair.client.poll_event());
    assert_ne!(small.as_ptr(), ptr);
    assert!(small.capacity() < 100_000);
    pair.feed(&server_frame(true, false, 2, &[4u8; 300_000]));
    assert_eq!(binary(pair.client.poll_event()), vec![4u8; 300_000]);
}
