//! The STOMP and MQTT codecs: what they decode, how they stream across
//! message boundaries, and the errors bad input gets.

use proptest::prelude::*;
use tether_host::brokers::framing::{mqtt_packet_id, mqtt_prepare, Framing};
use tether_host::brokers::mqtt::{self, MqttError, Packet, Version};
use tether_host::brokers::mqtt_props::PropValue;
use tether_host::brokers::stomp::{self, Frame, StompError};

fn stomp_all(bytes: &[u8], step: usize) -> Result<Vec<Frame>, StompError> {
    let mut d = stomp::Decoder::default();
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        d.feed(piece);
        out.extend(d.frames()?);
    }
    Ok(out)
}

#[test]
fn stomp_frames_split_anywhere_and_packed_together_decode_the_same() {
    let a = Frame::new("MESSAGE")
        .header("destination", "/queue/a")
        .header("note", "a:b\nc\\d");
    let mut a = a;
    a.body = b"hello\0world".to_vec(); // a NUL inside: content-length carries it
    let b = Frame::new("RECEIPT").header("receipt-id", "77");
    let mut stream = stomp::encode(&a).unwrap();
    stream.extend_from_slice(b"\n\r\n"); // heart-beats between frames
    stream.extend(stomp::encode(&b).unwrap());
    stream.push(b'\n');
    for step in 1..stream.len() + 1 {
        let frames = stomp_all(&stream, step).unwrap();
        assert_eq!(frames.len(), 2, "step {step}");
        assert_eq!(frames[0].body, b"hello\0world");
        assert_eq!(frames[0].get("note"), Some("a:b\nc\\d"));
        assert_eq!(frames[0].get("content-length"), Some("11"));
        assert_eq!(frames[1].get("receipt-id"), Some("77"));
    }
}

#[test]
fn stomp_connected_headers_are_not_unescaped_and_the_first_repeat_wins() {
    let raw = b"CONNECTED\nversion:1.2\nserver:x\\cy\n\n\0MESSAGE\nk:first\nk:second\n\nbody\0";
    let frames = stomp_all(raw, 1000).unwrap();
    assert_eq!(frames[0].get("server"), Some("x\\cy"));
    assert_eq!(frames[1].get("k"), Some("first"));
    assert_eq!(frames[1].body, b"body");
}

#[test]
fn stomp_bad_input_gets_a_specific_error_that_sticks() {
    type Check = fn(&StompError) -> bool;
    let cases: [(&[u8], Check); 5] = [
        (b"message\n\n\0", |e| matches!(e, StompError::BadCommand(_))),
        (b"SEND\nno-colon\n\n\0", |e| {
            matches!(e, StompError::BadHeader(_))
        }),
        (b"SEND\na:\\t\n\n\0", |e| {
            matches!(e, StompError::BadEscape(_))
        }),
        (b"SEND\ncontent-length:x\n\n\0", |e| {
            matches!(e, StompError::BadContentLength(_))
        }),
        (b"SEND\ncontent-length:2\n\nabc\0", |e| {
            matches!(e, StompError::MissingNul(_))
        }),
    ];
    for (bytes, check) in cases {
        let mut d = stomp::Decoder::default();
        d.feed(bytes);
        let e = d.frames().unwrap_err();
        assert!(check(&e), "{:?} gave {e}", String::from_utf8_lossy(bytes));
        d.feed(b"RECEIPT\n\n\0");
        assert_eq!(d.frames().unwrap_err(), e, "the stream stays broken");
    }
    let mut d = stomp::Decoder::new(64);
    d.feed(&[b'A'; 100]);
    assert_eq!(d.frames().unwrap_err(), StompError::TooLarge(64));
    assert_eq!(d.buffered(), 100);
    d.feed(&[b'A'; 100]);
    assert_eq!(
        d.buffered(),
        100,
        "nothing more is buffered after the error"
    );
}

#[test]
fn stomp_heartbeats_negotiate_as_the_specification_says() {
    assert_eq!(
        stomp::heartbeats((1000, 1000), Some("5000,200")),
        (1000, 5000)
    );
    assert_eq!(stomp::heartbeats((0, 1000), Some("5000,200")), (0, 5000));
    assert_eq!(stomp::heartbeats((1000, 1000), Some("0,0")), (0, 0));
    assert_eq!(stomp::heartbeats((1000, 1000), None), (0, 0));
}

fn all_packets() -> Vec<Packet> {
    vec![
        Packet::Connect {
            client_id: "c1".into(),
            clean: false,
            keepalive: 30,
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            will: Some(mqtt::Will {
                topic: "w".into(),
                payload: b"gone".to_vec(),
                qos: 1,
                retain: true,
                props: vec![],
            }),
            props: vec![],
        },
        Packet::Connack {
            session_present: true,
            code: 0,
            props: vec![],
        },
        Packet::Publish {
            dup: true,
            qos: 1,
            retain: true,
            topic: "a/b".into(),
            pid: Some(9),
            props: vec![],
            payload: b"x".repeat(300),
        },
        Packet::Publish {
            dup: false,
            qos: 0,
            retain: false,
            topic: "a".into(),
            pid: None,
            props: vec![],
            payload: vec![],
        },
        Packet::Puback {
            pid: 9,
            code: 0,
            props: vec![],
        },
        Packet::Subscribe {
            pid: 3,
            filters: vec![("a/#".into(), 1), ("b/+".into(), 0)],
            props: vec![],
        },
        Packet::Suback {
            pid: 3,
            codes: vec![1, 0x80],
            props: vec![],
        },
        Packet::Unsubscribe {
            pid: 4,
            filters: vec!["a/#".into()],
            props: vec![],
        },
        Packet::Unsuback {
            pid: 4,
            codes: vec![],
            props: vec![],
        },
        Packet::Pingreq,
        Packet::Pingresp,
        Packet::Disconnect {
            code: 0,
            props: vec![],
        },
    ]
}

#[test]
fn mqtt_packets_round_trip_in_both_versions_split_anywhere() {
    for v in [Version::V311, Version::V5] {
        let packets = all_packets();
        let mut stream = Vec::new();
        for p in &packets {
            stream.extend(mqtt::encode(p, v).unwrap());
        }
        for step in [1, 2, 3, 7, 64, stream.len()] {
            let mut d = mqtt::Decoder::new(v, 1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                d.feed(piece);
                got.extend(d.packets().unwrap());
            }
            assert_eq!(got, packets, "{v:?} step {step}");
        }
    }
}

#[test]
fn mqtt5_properties_round_trip() {
    let p = Packet::Publish {
        dup: false,
        qos: 1,
        retain: false,
        topic: "t".into(),
        pid: Some(1),
        props: vec![
            (1, PropValue::Byte(1)),
            (3, PropValue::Str("application/json".into())),
            (9, PropValue::Bin(vec![0, 1, 2])),
            (38, PropValue::Pair("k".into(), "v".into())),
        ],
        payload: b"{}".to_vec(),
    };
    let bytes = mqtt::encode(&p, Version::V5).unwrap();
    let mut d = mqtt::Decoder::new(Version::V5, 1024);
    d.feed(&bytes);
    assert_eq!(d.packets().unwrap(), vec![p]);
}

#[test]
fn mqtt_bad_input_gets_a_specific_error() {
    let v = Version::V5;
    let check = |bytes: &[u8], want: fn(&MqttError) -> bool| {
        let mut d = mqtt::Decoder::new(v, 1024);
        d.feed(bytes);
        let e = d.packets().unwrap_err();
        assert!(want(&e), "{bytes:x?} gave {e}");
    };
    check(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], |e| {
        matches!(e, MqttError::BadLength)
    });
    check(&[0x50, 0x02, 0, 1], |e| {
        matches!(e, MqttError::Unsupported(5))
    }); // PUBREC
    check(&[0x34, 0x05, 0, 1, b'a', 0, 1], |e| {
        matches!(e, MqttError::Unsupported(3))
    }); // QoS 2
    check(&[0x41, 0x02, 0, 1], |e| {
        matches!(e, MqttError::Malformed(_))
    }); // reserved flags
    check(&[0x40, 0x01, 0], |e| {
        matches!(e, MqttError::Truncated("PUBACK"))
    });
    check(&[0x30, 0x04, 0, 2, 0xff, 0xfe], |e| {
        matches!(e, MqttError::NotUtf8)
    });
    check(&[0x30, 0xff, 0x7f], |e| {
        matches!(e, MqttError::TooLarge(16383, 1024))
    });
    // Nothing whole yet is not an error.
    let mut d = mqtt::Decoder::new(v, 1024);
    d.feed(&[0x30, 0x05, 0]);
    assert_eq!(d.packets().unwrap(), vec![]);
    // A client never sends QoS 2.
    let p = Packet::Publish {
        dup: false,
        qos: 2,
        retain: false,
        topic: "t".into(),
        pid: Some(1),
        props: vec![],
        payload: vec![],
    };
    assert!(mqtt::encode(&p, v).is_err());
}

#[test]
fn api_sends_become_frames_and_mqtt_packet_ids_come_from_the_sequence() {
    let stomp_send =
        serde_json::json!({"destination": "/queue/x", "body": {"a": 1}, "headers": {"h": "1"}});
    let framed = Framing::Stomp.frame(&stomp_send, Some("id-7")).unwrap();
    assert!(framed.acknowledged);
    let frames = stomp_all(&framed.bytes, 1000).unwrap();
    assert_eq!(frames[0].command, "SEND");
    assert_eq!(frames[0].get("receipt"), Some("id-7"));
    assert_eq!(frames[0].get("content-type"), Some("application/json"));
    assert_eq!(frames[0].get("h"), Some("1"));
    assert_eq!(frames[0].body, br#"{"a":1}"#);
    let missing = Framing::Stomp.frame(&serde_json::json!({"body": "x"}), None);
    assert!(missing.unwrap_err().to_string().contains("destination"));

    let m = Framing::Mqtt {
        version: Version::V5,
        qos: 1,
    };
    let framed = m
        .frame(
            &serde_json::json!({"topic": "a/b", "body": "hi"}),
            Some("id"),
        )
        .unwrap();
    assert!(framed.acknowledged);
    for (seq, resend) in [(1, false), (65_000, true), (130_001, false)] {
        let bytes = mqtt_prepare(&framed.bytes, seq, resend);
        let mut d = mqtt::Decoder::new(Version::V5, 1024);
        d.feed(&bytes);
        let Packet::Publish { pid, dup, qos, .. } = &d.packets().unwrap()[0] else {
            panic!("not a publish");
        };
        assert_eq!((*pid, *dup, *qos), (Some(mqtt_packet_id(seq)), resend, 1));
        assert!((1..=65_000).contains(&pid.unwrap()));
    }
    assert!(m
        .frame(&serde_json::json!({"topic": "a/#", "body": "x"}), None)
        .is_err());
    assert!(m
        .frame(&serde_json::json!({"topic": "a", "qos": 0}), Some("id"))
        .unwrap_err()
        .to_string()
        .contains("QoS 1"));
    // A plain send goes at QoS 0 (nothing keeps it for a resend).
    let plain = m
        .frame(&serde_json::json!({"topic": "a", "body": "x"}), None)
        .unwrap();
    assert!(!plain.acknowledged);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes in arbitrary pieces: frames or an error, no panic.
    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..40) {
        let mut s = stomp::Decoder::new(256);
        let mut m = mqtt::Decoder::new(Version::V5, 256);
        let mut m3 = mqtt::Decoder::new(Version::V311, 256);
        for piece in data.chunks(step) {
            s.feed(piece);
            m.feed(piece);
            m3.feed(piece);
            let _ = s.frames();
            let _ = m.packets();
            let _ = m3.packets();
            prop_assert!(s.buffered() <= 256 + step);
            prop_assert!(m.buffered() <= 256 + 5 + step);
        }
    }

    /// Any frame the encoder makes decodes to itself, however it is split.
    #[test]
    fn stomp_round_trips(
        command in "[A-Z]{1,10}",
        headers in proptest::collection::vec(("[a-z:\\\\\n-]{1,8}", "[ -~\n]{0,12}"), 0..5),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        step in 1usize..20,
    ) {
        prop_assume!(command != "CONNECT" && command != "CONNECTED" && command != "STOMP");
        let mut f = Frame::new(&command);
        for (k, v) in &headers {
            prop_assume!(k != "content-length");
            f = f.header(k, v);
        }
        f.body = body.clone();
        let bytes = stomp::encode(&f).unwrap();
        let got = stomp_all(&bytes, step).unwrap();
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(&got[0].body, &body);
        for (k, v) in &headers {
            prop_assert!(got[0].headers.contains(&(k.clone(), v.clone())));
        }
    }
}
