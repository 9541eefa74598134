//! Messages survive any fragmentation and any chunking of the byte stream,
//! compressed or not; sent messages decode back to what was sent.

mod support;

use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;
use support::{encode, expected, plain_config, server_frame, Pair};
use tether_proto::{CloseKind, Config, Event, Message, ProtocolError, Request};

fn message_strategy() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        ".{0,300}".prop_map(|s: String| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..3000).prop_map(|b| (false, b)),
    ]
}

proptest! {
    #[test]
    fn any_fragmentation_and_chunking_delivers_the_same_messages(
        messages in proptest::collection::vec(message_strategy(), 1..8),
        parts in 1usize..6,
        chunk in 1usize..200,
    ) {
        let wire = encode(&messages, parts);
        let mut pair = Pair::open(plain_config());
        for piece in wire.chunks(chunk) {
            pair.feed(piece);
        }
        prop_assert_eq!(pair.events(), expected(&messages));
        prop_assert!(pair.sent().is_empty());
    }

    #[test]
    fn sent_messages_decode_to_what_was_sent(messages in proptest::collection::vec(message_strategy(), 1..8)) {
        let mut pair = Pair::open(plain_config());
        for (text, payload) in &messages {
            if *text {
                pair.client.send_text(std::str::from_utf8(payload).unwrap()).unwrap();
            } else {
                pair.client.send_binary(payload).unwrap();
            }
        }
        let sent = pair.sent();
        prop_assert_eq!(sent.len(), messages.len());
        for (frame, (text, payload)) in sent.iter().zip(&messages) {
            prop_assert!(frame.fin);
            prop_assert_eq!(frame.opcode, if *text { 1 } else { 2 });
            prop_assert_eq!(&frame.payload, payload);
        }
    }
}

#[test]
fn one_byte_at_a_time_with_every_length_form() {
    let messages = vec![
        (false, vec![1u8; 10]),
        (false, vec![2u8; 300]),
        (false, vec![3u8; 70_000]),
    ];
    let wire = encode(&messages, 1);
    let mut pair = Pair::open(plain_config());
    for b in &wire {
        pair.feed(std::slice::from_ref(b));
    }
    assert_eq!(pair.events(), expected(&messages));
}

#[test]
fn each_frame_uses_a_fresh_mask() {
    let mut pair = Pair::open(plain_config());
    pair.client.send_binary(&[0u8; 8]).unwrap();
    pair.client.send_binary(&[0u8; 8]).unwrap();
    let mut raw = Vec::new();
    let _ = pair.client.poll_transmit(&mut raw);
    let key1 = &raw[2..6];
    let key2 = &raw[16..20];
    assert_ne!(key1, key2);
}

// ---- permessage-deflate through the connection ----

fn deflate_raw(compress: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .unwrap();
    while out.len() == out.capacity() {
        out.reserve(1024);
        compress
            .compress_vec(&[], &mut out, FlushCompress::Sync)
            .unwrap();
    }
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

fn compressed_pair(config: Config) -> Pair {
    Pair::open_with(
        Config {
            deflate: Some(Default::default()),
            ..config
        },
        Request::new("h", 80, false, "/"),
        "Sec-WebSocket-Extensions: permessage-deflate\r\n",
    )
}

#[test]
fn compressed_messages_with_context_takeover_and_fragments() {
    let mut pair = compressed_pair(plain_config());
    let mut server = Compress::new(Compression::default(), false);
    let first = "{\"price\": 101.25, \"symbol\": \"ACME\"}".repeat(20);
    let second = "{\"price\": 101.50, \"symbol\": \"ACME\"}".repeat(20);
    let wire1 = deflate_raw(&mut server, first.as_bytes());
    let wire2 = deflate_raw(&mut server, second.as_bytes());
    // The second message only decodes with the first one's context.
    pair.feed(&server_frame(true, true, 1, &wire1));
    let (a, b) = wire2.split_at(wire2.len() / 2);
    pair.feed(&server_frame(false, true, 1, a));
    pair.feed(&server_frame(true, false, 0, b));
    assert_eq!(
        pair.events(),
        vec![
            Event::Message(Message::Text(first)),
            Event::Message(Message::Text(second))
        ]
    );
}

#[test]
fn outgoing_messages_are_compressed_above_the_threshold_only() {
    let mut pair = compressed_pair(plain_config());
    pair.client.send_text("tiny").unwrap();
    let big = "abcdefgh".repeat(100);
    pair.client.send_text(&big).unwrap();
    let sent = pair.sent();
    assert!(!sent[0].rsv1, "below the threshold: not compressed");
    assert!(sent[1].rsv1);
    assert!(sent[1].payload.len() < big.len() / 10);
    let mut inflate = flate2::Decompress::new(false);
    let mut data = sent[1].payload.clone();
    data.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut out = Vec::with_capacity(2000);
    inflate
        .decompress_vec(&data, &mut out, flate2::FlushDecompress::Sync)
        .unwrap();
    assert_eq!(out, big.as_bytes());
    // Control frames are never compressed.
    let now = pair.clock.0;
    pair.client
        .close(now, tether_proto::CloseCode::NORMAL, &"r".repeat(100))
        .unwrap();
    assert!(!pair.sent()[0].rsv1);
}

#[test]
fn decompression_bomb_stops_at_the_limit_with_1009() {
    let limit = 1 << 20;
    let mut pair = compressed_pair(Config {
        max_message_size: limit,
        ..plain_config()
    });
    let mut server = Compress::new(Compression::best(), false);
    // 64 MiB of zeros compresses to about 64 KiB.
    let zeros = vec![0u8; 16 << 20]; // about 16 KiB compressed
    let bomb = deflate_raw(&mut server, &zeros);
    assert!(bomb.len() < 100_000, "bomb is {} bytes", bomb.len());
    pair.feed(&server_frame(true, true, 2, &bomb));
    assert_eq!(pair.sent_close_code(), Some(1009));
    let Some(Event::Closed(c)) = pair.events().pop() else {
        panic!()
    };
    assert!(
        matches!(c.kind, CloseKind::Protocol(ProtocolError::MessageTooBig { limit: l, .. }) if l == limit)
    );
}

#[test]
fn invalid_deflate_data_is_1002() {
    let mut pair = compressed_pair(plain_config());
    pair.feed(&server_frame(true, true, 2, &[0xFF; 16]));
    assert_eq!(pair.sent_close_code(), Some(1002));
}

#[test]
fn invalid_utf8_inside_compressed_text_is_1007() {
    let mut pair = compressed_pair(plain_config());
    let mut server = Compress::new(Compression::default(), false);
    let wire = deflate_raw(&mut server, &[b'a', 0xFF, b'b']);
    pair.feed(&server_frame(true, true, 1, &wire));
    assert_eq!(pair.sent_close_code(), Some(1007));
}
