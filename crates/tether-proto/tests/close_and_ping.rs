//! The close handshake in both directions, pings, and the timers.

mod support;

use std::time::Duration;

use support::{plain_config, server_frame, Pair};
use tether_proto::{CloseCode, CloseKind, Config, Event, SendError, State};

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[test]
fn server_initiated_close_is_echoed() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(true, false, 8, &close_payload(1001, "bye")));
    let sent = pair.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].opcode, 8);
    assert_eq!(sent[0].payload, 1001u16.to_be_bytes());
    let events = pair.events();
    let Some(Event::Closed(c)) = events.last() else {
        panic!()
    };
    assert_eq!(
        (c.code, c.reason.as_str(), c.kind.clone()),
        (CloseCode(1001), "bye", CloseKind::Remote)
    );
    assert!(c.is_clean());
    assert_eq!(pair.client.state(), State::Closed);
}

#[test]
fn empty_close_is_echoed_empty_and_reported_as_1005() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(true, false, 8, b""));
    let sent = pair.sent();
    assert_eq!((sent[0].opcode, sent[0].payload.len()), (8, 0));
    let Some(Event::Closed(c)) = pair.events().pop() else {
        panic!()
    };
    assert_eq!(c.code, CloseCode::NO_STATUS);
}

#[test]
fn client_initiated_close_completes_on_the_servers_answer() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    pair.client
        .close(now, CloseCode(4000), "done here")
        .unwrap();
    assert_eq!(pair.client.state(), State::Closing);
    let sent = pair.sent();
    assert_eq!(sent[0].payload, close_payload(4000, "done here"));
    // Data may still arrive while closing.
    pair.feed(&server_frame(true, false, 1, b"late"));
    pair.feed(&server_frame(true, false, 8, &close_payload(4000, "")));
    assert!(pair.sent().is_empty(), "no second close frame");
    let events = pair.events();
    assert_eq!(
        events[0],
        Event::Message(tether_proto::Message::Text("late".into()))
    );
    let Event::Closed(c) = &events[1] else {
        panic!()
    };
    assert_eq!(c.kind, CloseKind::Local);
    assert_eq!(pair.client.state(), State::Closed);
}

#[test]
fn sending_after_close_is_an_error_not_a_panic() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    pair.client.close(now, CloseCode::NORMAL, "").unwrap();
    assert_eq!(pair.client.send_text("x"), Err(SendError::Closed));
    assert_eq!(pair.client.send_binary(b"x"), Err(SendError::Closed));
    assert_eq!(
        pair.client.close(now, CloseCode::NORMAL, ""),
        Err(SendError::Closed)
    );
}

#[test]
fn invalid_close_codes_cannot_be_sent() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    for code in [0, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            pair.client.close(now, CloseCode(code), ""),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    assert_eq!(pair.client.state(), State::Open);
}

#[test]
fn close_times_out_without_an_answer() {
    let config = Config {
        close_timeout: Duration::from_secs(5),
        ..plain_config()
    };
    let mut pair = Pair::open(config);
    let start = pair.clock.0;
    pair.client.close(start, CloseCode::NORMAL, "").unwrap();
    assert_eq!(
        pair.client.poll_timeout(),
        Some(start + Duration::from_secs(5))
    );
    pair.client.handle_timeout(start + Duration::from_secs(4));
    assert_eq!(pair.client.state(), State::Closing);
    pair.client.handle_timeout(start + Duration::from_secs(5));
    assert_eq!(pair.client.state(), State::Closed);
    let Some(Event::Closed(c)) = pair.events().pop() else {
        panic!()
    };
    assert_eq!(
        (c.code, c.kind),
        (CloseCode::ABNORMAL, CloseKind::CloseTimeout)
    );
}

#[test]
fn eof_without_close_is_abnormal_1006() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    pair.client.receive_eof(now);
    let Some(Event::Closed(c)) = pair.events().pop() else {
        panic!()
    };
    assert_eq!(
        (c.code, c.kind.clone()),
        (CloseCode::ABNORMAL, CloseKind::Abnormal)
    );
    assert!(!c.is_clean());
}

#[test]
fn ping_is_answered_with_the_same_payload() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(true, false, 9, b"are you there"));
    let sent = pair.sent();
    assert_eq!(
        (sent[0].opcode, sent[0].payload.as_slice()),
        (0xA, &b"are you there"[..])
    );
    assert_eq!(pair.events(), vec![Event::Ping(b"are you there".to_vec())]);
}

#[test]
fn ping_between_fragments_is_answered() {
    let mut pair = Pair::open(plain_config());
    let mut bytes = server_frame(false, false, 1, b"hel");
    bytes.extend(server_frame(true, false, 9, b"p"));
    bytes.extend(server_frame(true, false, 0, b"lo"));
    pair.feed(&bytes);
    assert_eq!(pair.sent()[0].opcode, 0xA);
    let events = pair.events();
    assert_eq!(
        events[1],
        Event::Message(tether_proto::Message::Text("hello".into()))
    );
}

#[test]
fn pongs_are_handed_to_the_caller() {
    let mut pair = Pair::open(plain_config());
    pair.feed(&server_frame(true, false, 0xA, b"unsolicited"));
    assert_eq!(
        pair.events(),
        vec![Event::Pong {
            payload: b"unsolicited".to_vec(),
            rtt: None
        }]
    );
}

#[test]
fn keepalive_pings_measure_rtt_and_detect_a_dead_peer() {
    let config = Config {
        ping_interval: Some(Duration::from_secs(20)),
        ping_timeout: Some(Duration::from_secs(10)),
        ..plain_config()
    };
    let mut pair = Pair::open(config);
    let start = pair.clock.0;
    assert_eq!(
        pair.client.poll_timeout(),
        Some(start + Duration::from_secs(20))
    );
    let t = pair.clock.advance(Duration::from_secs(20));
    pair.client.handle_timeout(t);
    let ping = pair.sent().pop().unwrap();
    assert_eq!(ping.opcode, 9);
    // The pong comes back 150 ms later.
    pair.clock.advance(Duration::from_millis(150));
    pair.feed(&server_frame(true, false, 0xA, &ping.payload));
    assert_eq!(pair.client.rtt(), Some(Duration::from_millis(150)));
    // Next ping gets no answer: dead after the ping timeout.
    let t = pair.clock.advance(Duration::from_secs(20));
    pair.client.handle_timeout(t);
    assert_eq!(pair.sent().pop().unwrap().opcode, 9);
    let t = pair.clock.advance(Duration::from_secs(10));
    pair.client.handle_timeout(t);
    let Some(Event::Closed(c)) = pair.events().pop() else {
        panic!()
    };
    assert_eq!(
        (c.code, c.kind),
        (CloseCode::ABNORMAL, CloseKind::PingTimeout)
    );
}

#[test]
fn long_close_reason_is_truncated_to_fit() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    pair.client
        .close(now, CloseCode::NORMAL, &"x".repeat(500))
        .unwrap();
    assert_eq!(pair.sent()[0].payload.len(), 125);
}

#[test]
fn shrinking_buffers_keeps_a_half_received_ping() {
    // A driver frees idle buffers (and the handshake's) between reads; a
    // ping whose first payload bytes already arrived must survive it.
    let mut pair = Pair::open(plain_config());
    let frame = server_frame(true, false, 9, b"payload-0");
    pair.feed(&frame[..5]);
    pair.client.shrink_buffers();
    pair.feed(&frame[5..]);
    let sent = pair.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].opcode, 10);
    assert_eq!(sent[0].payload, b"payload-0");
}

/// After the close handshake the engine owns the teardown: the server
/// should end the stream, and gets the close timeout to do so.
#[test]
fn after_the_close_the_server_gets_the_close_timeout_to_end_the_stream() {
    let mut config = plain_config();
    config.close_timeout = Duration::from_secs(3);
    let mut pair = Pair::open(config);
    let closed_at = pair.clock.advance(Duration::from_millis(10));
    pair.feed(&server_frame(true, false, 8, &close_payload(1000, "")));
    assert_eq!(pair.client.state(), State::Closed);
    assert!(
        !pair.client.is_finished(),
        "the server has not ended the stream yet"
    );
    assert_eq!(
        pair.client.poll_timeout(),
        Some(closed_at + Duration::from_secs(3)),
        "the teardown deadline"
    );
    // Before the deadline nothing changes; the server's FIN finishes it.
    pair.client
        .handle_timeout(closed_at + Duration::from_millis(2999));
    assert!(!pair.client.is_finished());
    pair.client.receive_eof(closed_at + Duration::from_secs(1));
    assert!(pair.client.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn a_server_that_never_ends_the_stream_is_dropped_at_the_deadline() {
    let mut pair = Pair::open(plain_config());
    let now = pair.clock.0;
    pair.client.close(now, CloseCode(1000), "").unwrap();
    pair.feed(&server_frame(true, false, 8, &close_payload(1000, "")));
    let deadline = pair.client.poll_timeout().expect("a teardown deadline");
    assert!(!pair.client.is_finished());
    pair.client.handle_timeout(deadline);
    assert!(pair.client.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn an_abnormal_end_is_finished_at_once() {
    let mut pair = Pair::open(plain_config());
    pair.client.receive_eof(pair.clock.0);
    assert_eq!(pair.client.state(), State::Closed);
    assert!(pair.client.is_finished());
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn timeouts_longer_than_the_clock_holds_never_fire_and_never_panic() {
    let config = Config {
        ping_interval: Some(Duration::MAX),
        ping_timeout: Some(Duration::MAX),
        close_timeout: Duration::MAX,
        ..plain_config()
    };
    let mut pair = Pair::open(config);
    let start = pair.clock.0;
    let far = start + Duration::from_secs(50 * 365 * 24 * 3600);
    assert!(pair.client.poll_timeout().is_some_and(|t| t > far));
    // A day later nothing has fired: no ping, no close.
    let t = pair.clock.advance(Duration::from_secs(86_400));
    pair.client.handle_timeout(t);
    assert!(pair.sent().is_empty());
    assert_eq!(pair.client.state(), State::Open);
    // Closing sets the close deadline the same way.
    pair.client.close(t, CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(pair.sent().pop().unwrap().opcode, 8);
    assert!(pair.client.poll_timeout().is_some_and(|d| d > far));
    pair.feed(&server_frame(true, false, 0x8, &1000u16.to_be_bytes()));
    assert!(matches!(pair.events().pop(), Some(Event::Closed(_))));
}
