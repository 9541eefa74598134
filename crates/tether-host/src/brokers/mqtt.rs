//! MQTT 3.1.1 and 5.0 packets, sans-IO: bytes in, packets out; packets in,
//! bytes out.
//!
//! The decoder streams: MQTT over WebSocket guarantees neither that a
//! message holds a whole packet nor that it holds only one. QoS 0 and 1 are
//! supported; QoS 2 packets and AUTH are refused with a clear error.
//! Version 5 properties are decoded by their identifier's type and kept in
//! order, so a packet re-encodes as it came.

pub use super::mqtt_encode::encode;
pub(super) use super::mqtt_encode::Writer;
use super::mqtt_props::{read_props, Props};

/// The protocol version, as the CONNECT packet's level byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.1.1 (level 4).
    V311,
    /// 5.0 (level 5).
    V5,
}

impl Version {
    /// `"3.1.1"` or `"5"`.
    pub fn parse(s: &str) -> Option<Version> {
        match s {
            "3.1.1" | "4" => Some(Version::V311),
            "5" | "5.0" => Some(Version::V5),
            _ => None,
        }
    }
}

/// A will message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub props: Props,
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect {
        client_id: String,
        clean: bool,
        keepalive: u16,
        username: Option<String>,
        password: Option<Vec<u8>>,
        will: Option<Will>,
        props: Props,
    },
    Connack {
        session_present: bool,
        /// The return code (3.1.1) or reason code (5); 0 is success.
        code: u8,
        props: Props,
    },
    Publish {
        dup: bool,
        qos: u8,
        retain: bool,
        topic: String,
        /// Present at QoS 1.
        pid: Option<u16>,
        props: Props,
        payload: Vec<u8>,
    },
    Puback {
        pid: u16,
        code: u8,
        props: Props,
    },
    Subscribe {
        pid: u16,
        /// Topic filters with their maximum QoS.
        filters: Vec<(String, u8)>,
        props: Props,
    },
    Suback {
        pid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    Unsubscribe {
        pid: u16,
        filters: Vec<String>,
        props: Props,
    },
    Unsuback {
        pid: u16,
        codes: Vec<u8>,
        props: Props,
    },
    Pingreq,
    Pingresp,
    Disconnect {
        code: u8,
        props: Props,
    },
}

/// Why bytes are not an MQTT packet we take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttError {
    /// The packet type is reserved or not one a client receives here.
    #[error("MQTT: packet type {0} is not supported (QoS 2 and AUTH are not; use QoS 0 or 1)")]
    Unsupported(u8),
    /// The remaining length is malformed (more than 4 bytes).
    #[error("MQTT: malformed remaining length")]
    BadLength,
    /// The packet ends before its fields do.
    #[error("MQTT: {0} packet is shorter than its fields")]
    Truncated(&'static str),
    /// Reserved flags or values are wrong.
    #[error("MQTT: {0}")]
    Malformed(String),
    /// A string is not UTF-8.
    #[error("MQTT: a string field is not UTF-8")]
    NotUtf8,
    /// The packet passes the size limit.
    #[error(
        "MQTT: a packet of {0} bytes passes the limit of {1}; raise the limit or check the server"
    )]
    TooLarge(usize, usize),
}

/// The largest packet a decoder takes by default.
pub const DEFAULT_MAX_PACKET: usize = 16 << 20;

/// A streaming MQTT decoder.
#[derive(Debug)]
pub struct Decoder {
    version: Version,
    buf: Vec<u8>,
    max_packet: usize,
    failed: Option<MqttError>,
}

impl Decoder {
    /// A decoder for `version` that refuses packets over `max_packet` bytes.
    pub fn new(version: Version, max_packet: usize) -> Self {
        Decoder {
            version,
            buf: Vec::new(),
            max_packet,
            failed: None,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        // A broken stream is not buffered any further.
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held that are not a whole packet yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole packet, if one is buffered. After an error every call
    /// returns it again: the stream is broken.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, MqttError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.parse();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Every whole packet buffered.
    pub fn packets(&mut self) -> Result<Vec<Packet>, MqttError> {
        let mut out = Vec::new();
        while let Some(p) = self.next_packet()? {
            out.push(p);
        }
        Ok(out)
    }

    fn parse(&mut self) -> Result<Option<Packet>, MqttError> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let mut len = 0usize;
        let mut header = 1;
        loop {
            let Some(&b) = self.buf.get(header) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7f) << (7 * (header - 1));
            header += 1;
            if b & 0x80 == 0 {
                break;
            }
            if header > 4 {
                return Err(MqttError::BadLength);
            }
        }
        if len > self.max_packet {
            return Err(MqttError::TooLarge(len, self.max_packet));
        }
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let body: Vec<u8> = self.buf.drain(..header + len).skip(header).collect();
        decode_body(first, &body, self.version).map(Some)
    }
}

/// A cursor over a packet's body.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], MqttError> {
        if self.buf.len() - self.pos < n {
            return Err(MqttError::Truncated(self.what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub(super) fn u8(&mut self) -> Result<u8, MqttError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u16(&mut self) -> Result<u16, MqttError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Result<u32, MqttError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn varint(&mut self) -> Result<u32, MqttError> {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(MqttError::BadLength)
    }
    pub(super) fn binary(&mut self) -> Result<Vec<u8>, MqttError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(super) fn string(&mut self) -> Result<String, MqttError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| MqttError::NotUtf8)
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

fn decode_body(first: u8, body: &[u8], v: Version) -> Result<Packet, MqttError> {
    let kind = first >> 4;
    let flags = first & 0x0f;
    let v5 = v == Version::V5;
    let name = match kind {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        k => return Err(MqttError::Unsupported(k)),
    };
    let expected = match kind {
        3 => flags,
        8 | 10 => 2,
        _ => 0,
    };
    if flags != expected {
        return Err(MqttError::Malformed(format!(
            "{name} has reserved flags {flags:#x}"
        )));
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        what: name,
    };
    let props = |r: &mut Reader| -> Result<Props, MqttError> {
        if v5 {
            read_props(r)
        } else {
            Ok(Props::default())
        }
    };
    Ok(match kind {
        1 => {
            let proto = r.string()?;
            let level = r.u8()?;
            if proto != "MQTT" || !(level == 4 || level == 5) {
                return Err(MqttError::Malformed(format!(
                    "CONNECT for {proto:?} level {level}"
                )));
            }
            let cf = r.u8()?;
            let keepalive = r.u16()?;
            let props = props(&mut r)?;
            let client_id = r.string()?;
            let will = if cf & 0x04 != 0 {
                let wprops = props_if(v5, &mut r)?;
                Some(Will {
                    topic: r.string()?,
                    payload: r.binary()?,
                    qos: (cf >> 3) & 3,
                    retain: cf & 0x20 != 0,
                    props: wprops,
                })
            } else {
                None
            };
            let username = if cf & 0x80 != 0 {
                Some(r.string()?)
            } else {
                None
            };
            let password = if cf & 0x40 != 0 {
                Some(r.binary()?)
            } else {
                None
            };
            Packet::Connect {
                client_id,
                clean: cf & 0x02 != 0,
                keepalive,
                username,
                password,
                will,
                props,
            }
        }
        2 => {
            let session_present = r.u8()? & 1 != 0;
            let code = r.u8()?;
            let props = if v5 && !r.done() {
                read_props(&mut r)?
            } else {
                Props::default()
            };
            Packet::Connack {
                session_present,
                code,
                props,
            }
        }
        3 => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return Err(MqttError::Malformed("PUBLISH with QoS 3".into()));
            }
            if qos == 2 {
                return Err(MqttError::Unsupported(kind));
            }
            let topic = r.string()?;
            let pid = if qos > 0 { Some(r.u16()?) } else { None };
            let props = props(&mut r)?;
            Packet::Publish {
                dup: flags & 0x08 != 0,
                qos,
                retain: flags & 1 != 0,
                topic,
                pid,
                props,
                payload: r.rest().to_vec(),
            }
        }
        4 => {
            let pid = r.u16()?;
            let (code, props) = reason_and_props(v5, &mut r)?;
            Packet::Puback { pid, code, props }
        }
        8 => {
            let pid = r.u16()?;
            let props = props(&mut r)?;
            let mut filters = Vec::new();
            while !r.done() {
                filters.push((r.string()?, r.u8()? & 3));
            }
            Packet::Subscribe {
                pid,
                filters,
                props,
            }
        }
        9 | 11 => {
            let pid = r.u16()?;
            let props = props(&mut r)?;
            let codes = r.rest().to_vec();
            if kind == 9 {
                Packet::Suback { pid, codes, props }
            } else {
                Packet::Unsuback { pid, codes, props }
            }
        }
        10 => {
            let pid = r.u16()?;
            let props = props(&mut r)?;
            let mut filters = Vec::new();
            while !r.done() {
                filters.push(r.string()?);
            }
            Packet::Unsubscribe {
                pid,
                filters,
                props,
            }
        }
        12 => Packet::Pingreq,
        13 => Packet::Pingresp,
        _ => {
            let (code, props) = reason_and_props(v5, &mut r)?;
            Packet::Disconnect { code, props }
        }
    })
}

fn props_if(v5: bool, r: &mut Reader) -> Result<Props, MqttError> {
    if v5 {
        read_props(r)
    } else {
        Ok(Props::default())
    }
}

/// A v5 reason code and properties, both optional at the end of a packet.
fn reason_and_props(v5: bool, r: &mut Reader) -> Result<(u8, Props), MqttError> {
    if !v5 || r.done() {
        return Ok((0, Props::default()));
    }
    let code = r.u8()?;
    let props = if r.done() {
        Props::default()
    } else {
        read_props(r)?
    };
    Ok((code, props))
}
