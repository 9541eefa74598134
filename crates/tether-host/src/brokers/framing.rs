//! Sends to a broker type through the API and the outbox.
//!
//! The API takes `{"destination": …, "body": …, "headers": {…}}` for STOMP
//! and `{"topic": …, "body": …, "qos": 0|1, "retain": bool}` for MQTT, and
//! the host turns it into the protocol's frame here:
//! - STOMP: a `SEND`; a durable one carries `receipt: <message id>`, and
//!   the module reports the `RECEIPT` as the outbox acknowledgement.
//! - MQTT: a `PUBLISH`. A durable one at QoS 1 is stored with packet id 0;
//!   the outbox gives it the id derived from its sequence number when it
//!   is sent ([`mqtt_packet_id`]), with DUP set on a resend, so the id
//!   survives a restart and `PUBACK` names the message.
//!
//! A body that is not a string is sent as JSON, with `content-type:
//! application/json`.

use super::mqtt::{self, Packet, Version};
use super::stomp;

/// How a type's API sends become frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// STOMP `SEND`.
    Stomp,
    /// MQTT `PUBLISH` of this version, at this default QoS.
    Mqtt {
        /// The protocol version.
        version: Version,
        /// The QoS of a send that names none.
        qos: u8,
    },
}

/// Why an API send cannot become a frame.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FramingError {
    /// The body is not the shape the type takes.
    #[error("{0}")]
    Shape(String),
    /// The frame cannot be encoded.
    #[error(transparent)]
    Stomp(#[from] stomp::EncodeError),
    /// The packet cannot be encoded.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
}

#[derive(Debug)]
/// A frame ready to store or send, and whether the broker will acknowledge
/// it (a receipt, or a PUBACK).
pub struct Framed {
    /// The frame.
    pub bytes: Vec<u8>,
    /// The broker acknowledges it (a receipt was asked for, or QoS 1).
    pub acknowledged: bool,
}

fn body_bytes(body: Option<&serde_json::Value>) -> (Vec<u8>, bool) {
    match body {
        None | Some(serde_json::Value::Null) => (Vec::new(), false),
        Some(serde_json::Value::String(s)) => (s.as_bytes().to_vec(), false),
        Some(other) => (other.to_string().into_bytes(), true),
    }
}

impl Framing {
    /// The frame for an API send. `receipt` is the outbox message id of a
    /// durable send (`None` for a plain one).
    pub fn frame(
        &self,
        send: &serde_json::Value,
        receipt: Option<&str>,
    ) -> Result<Framed, FramingError> {
        let shape = |m: &str| FramingError::Shape(m.to_string());
        let obj = send
            .as_object()
            .ok_or_else(|| shape("the send must be a JSON object"))?;
        let (body, json) = body_bytes(obj.get("body"));
        match self {
            Framing::Stomp => {
                let destination =
                    obj.get("destination")
                        .and_then(|d| d.as_str())
                        .ok_or_else(|| {
                            shape(
                                "a STOMP send needs \"destination\": \"/queue/…\" or \"/topic/…\"",
                            )
                        })?;
                let mut frame = stomp::Frame::new("SEND").header("destination", destination);
                if let Some(h) = obj.get("headers") {
                    let h = h
                        .as_object()
                        .ok_or_else(|| shape("\"headers\" must be an object of strings"))?;
                    for (k, v) in h {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        frame = frame.header(k, &v);
                    }
                }
                if json && frame.get("content-type").is_none() {
                    frame = frame.header("content-type", "application/json");
                }
                if let Some(r) = receipt {
                    frame = frame.header("receipt", r);
                }
                frame.body = body;
                Ok(Framed {
                    bytes: stomp::encode(&frame)?,
                    acknowledged: receipt.is_some(),
                })
            }
            Framing::Mqtt { version, qos } => {
                let topic = obj
                    .get("topic")
                    .and_then(|d| d.as_str())
                    .ok_or_else(|| shape("an MQTT send needs \"topic\""))?;
                if topic.is_empty() || topic.contains(['+', '#']) {
                    return Err(shape(
                        "an MQTT topic to publish to may not be empty or hold + or #",
                    ));
                }
                let qos = match obj.get("qos") {
                    None => *qos,
                    Some(q) => match q.as_u64() {
                        Some(q @ 0..=1) => q as u8,
                        _ => return Err(shape("\"qos\" must be 0 or 1")),
                    },
                };
                // A durable send waits for its PUBACK; a plain one is not
                // kept for a resend, so it goes at QoS 0.
                let qos = match (receipt.is_some(), qos) {
                    (true, 0) if obj.contains_key("qos") => {
                        return Err(shape("a durable MQTT send is QoS 1 (its PUBACK completes it); send \"qos\": 0 without \"durable\""))
                    }
                    (true, _) => 1,
                    (false, _) => 0,
                };
                let retain = obj.get("retain").and_then(|r| r.as_bool()).unwrap_or(false);
                let mut props = Vec::new();
                if json && *version == Version::V5 {
                    props.push((
                        3,
                        super::mqtt_props::PropValue::Str("application/json".into()),
                    ));
                }
                let packet = Packet::Publish {
                    dup: false,
                    qos,
                    retain,
                    topic: topic.to_string(),
                    // The outbox sets the real id when it sends.
                    pid: (qos == 1).then_some(u16::MAX),
                    props,
                    payload: body,
                };
                Ok(Framed {
                    bytes: mqtt::encode(&packet, *version)?,
                    acknowledged: qos == 1,
                })
            }
        }
    }
}

/// The packet id of the outbox message numbered `seq`: stable across
/// restarts, and distinct among the messages in flight (far fewer than
/// 65,000 at once; the ids above 65,000 are left to the module).
pub fn mqtt_packet_id(seq: i64) -> u16 {
    (seq.rem_euclid(65_000) + 1) as u16
}

/// Sets the packet id (and DUP on a resend) of a stored QoS 1 `PUBLISH`.
/// Anything else is returned as it is.
pub fn mqtt_prepare(stored: &[u8], seq: i64, resend: bool) -> Vec<u8> {
    let mut out = stored.to_vec();
    if out.first().is_none_or(|b| b >> 4 != 3 || (b >> 1) & 3 != 1) {
        return out;
    }
    // Fixed header: type byte, 1–4 bytes of remaining length.
    let mut pos = 1;
    while pos < out.len() && pos < 5 && out[pos] & 0x80 != 0 {
        pos += 1;
    }
    pos += 1;
    if out.len() < pos + 2 {
        return out;
    }
    let topic_len = u16::from_be_bytes([out[pos], out[pos + 1]]) as usize;
    let at = pos + 2 + topic_len;
    if out.len() < at + 2 {
        return out;
    }
    out[at..at + 2].copy_from_slice(&mqtt_packet_id(seq).to_be_bytes());
    if resend {
        out[0] |= 0x08;
    }
    out
}
