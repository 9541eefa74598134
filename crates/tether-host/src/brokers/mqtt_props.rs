//! MQTT 5 properties: each identifier has one type (MQTT 5.0 §2.2.2.2).

use super::mqtt::{MqttError, Reader, Writer};

/// A property's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    Byte(u8),
    U16(u16),
    U32(u32),
    Varint(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

/// Properties in the order they came.
pub type Props = Vec<(u8, PropValue)>;

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    U16,
    U32,
    Varint,
    Str,
    Bin,
    Pair,
}

/// Identifier, name, type.
const TABLE: &[(u8, &str, Kind)] = &[
    (1, "payload_format", Kind::Byte),
    (2, "message_expiry", Kind::U32),
    (3, "content_type", Kind::Str),
    (8, "response_topic", Kind::Str),
    (9, "correlation_data", Kind::Bin),
    (11, "subscription_id", Kind::Varint),
    (17, "session_expiry", Kind::U32),
    (18, "assigned_client_id", Kind::Str),
    (19, "server_keep_alive", Kind::U16),
    (21, "authentication_method", Kind::Str),
    (22, "authentication_data", Kind::Bin),
    (23, "request_problem_info", Kind::Byte),
    (24, "will_delay", Kind::U32),
    (25, "request_response_info", Kind::Byte),
    (26, "response_info", Kind::Str),
    (28, "server_reference", Kind::Str),
    (31, "reason_string", Kind::Str),
    (33, "receive_maximum", Kind::U16),
    (34, "topic_alias_maximum", Kind::U16),
    (35, "topic_alias", Kind::U16),
    (36, "maximum_qos", Kind::Byte),
    (37, "retain_available", Kind::Byte),
    (38, "user_property", Kind::Pair),
    (39, "maximum_packet_size", Kind::U32),
    (40, "wildcard_subscription_available", Kind::Byte),
    (41, "subscription_id_available", Kind::Byte),
    (42, "shared_subscription_available", Kind::Byte),
];

fn kind(id: u8) -> Option<(&'static str, Kind)> {
    TABLE
        .iter()
        .find(|(i, _, _)| *i == id)
        .map(|(_, n, k)| (*n, *k))
}

/// The property's name (`content_type`, `user_property`, …).
pub fn name(id: u8) -> Option<&'static str> {
    kind(id).map(|(n, _)| n)
}

/// The identifier of a property name.
pub fn id(name: &str) -> Option<u8> {
    TABLE
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(i, _, _)| *i)
}

/// Whether the property holds a number (byte, two- or four-byte integer,
/// variable integer), a string, binary data or a string pair.
pub fn value_for(id: u8, number: Option<u64>, text: Option<&[u8]>) -> Result<PropValue, String> {
    let (name, k) = kind(id).ok_or_else(|| format!("unknown MQTT property {id}"))?;
    let num = |max: u64| {
        number
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("property {name} needs a number from 0 to {max}"))
    };
    let txt = || text.ok_or_else(|| format!("property {name} needs a string"));
    Ok(match k {
        Kind::Byte => PropValue::Byte(num(255)? as u8),
        Kind::U16 => PropValue::U16(num(65535)? as u16),
        Kind::U32 => PropValue::U32(num(u32::MAX as u64)? as u32),
        Kind::Varint => PropValue::Varint(num(268_435_455)? as u32),
        Kind::Str => PropValue::Str(
            String::from_utf8(txt()?.to_vec())
                .map_err(|_| format!("property {name} is not UTF-8"))?,
        ),
        Kind::Bin => PropValue::Bin(txt()?.to_vec()),
        Kind::Pair => return Err("user_property takes a name and a value".into()),
    })
}

pub(super) fn read_props(r: &mut Reader) -> Result<Props, MqttError> {
    let len = r.varint()? as usize;
    let what = r.what;
    let block = r.take(len)?;
    let mut p = Reader {
        buf: block,
        pos: 0,
        what,
    };
    let mut out = Vec::new();
    while p.pos < block.len() {
        let id = p.varint()?;
        let id = u8::try_from(id)
            .ok()
            .filter(|i| kind(*i).is_some())
            .ok_or_else(|| MqttError::Malformed(format!("{what} has unknown property {id}")))?;
        let (_, k) = kind(id).ok_or(MqttError::Truncated(what))?;
        let v = match k {
            Kind::Byte => PropValue::Byte(p.u8()?),
            Kind::U16 => PropValue::U16(p.u16()?),
            Kind::U32 => PropValue::U32(p.u32()?),
            Kind::Varint => PropValue::Varint(p.varint()?),
            Kind::Str => PropValue::Str(p.string()?),
            Kind::Bin => PropValue::Bin(p.binary()?),
            Kind::Pair => PropValue::Pair(p.string()?, p.string()?),
        };
        out.push((id, v));
    }
    Ok(out)
}

pub(super) fn write_props(w: &mut Writer, props: &Props) -> Result<(), MqttError> {
    let mut body = Writer::default();
    for (id, v) in props {
        body.varint(u32::from(*id));
        match v {
            PropValue::Byte(b) => body.u8(*b),
            PropValue::U16(n) => body.u16(*n),
            PropValue::U32(n) => body.u32(*n),
            PropValue::Varint(n) => body.varint(*n),
            PropValue::Str(s) => body.string(s)?,
            PropValue::Bin(b) => body.binary(b)?,
            PropValue::Pair(k, v) => {
                body.string(k)?;
                body.string(v)?;
            }
        }
    }
    w.varint(body.0.len() as u32);
    w.0.extend_from_slice(&body.0);
    Ok(())
}
