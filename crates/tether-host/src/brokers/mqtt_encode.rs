//! MQTT packets to bytes (the encoding half of [`super::mqtt`]).

use super::mqtt::{MqttError, Packet, Version};
use super::mqtt_props::{write_props, Props};

/// Writes MQTT fields.
#[derive(Default)]
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(super) fn varint(&mut self, mut v: u32) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    pub(super) fn binary(&mut self, b: &[u8]) -> Result<(), MqttError> {
        let n = u16::try_from(b.len()).map_err(|_| {
            MqttError::Malformed(format!("a field of {} bytes (at most 65535)", b.len()))
        })?;
        self.u16(n);
        self.0.extend_from_slice(b);
        Ok(())
    }
    pub(super) fn string(&mut self, s: &str) -> Result<(), MqttError> {
        self.binary(s.as_bytes())
    }
}

/// The bytes of a packet for `version`.
pub fn encode(packet: &Packet, version: Version) -> Result<Vec<u8>, MqttError> {
    let v5 = version == Version::V5;
    let mut w = Writer::default();
    let props = |w: &mut Writer, p: &Props| -> Result<(), MqttError> {
        if v5 {
            write_props(w, p)?;
        }
        Ok(())
    };
    let first: u8 = match packet {
        Packet::Connect {
            client_id,
            clean,
            keepalive,
            username,
            password,
            will,
            props: p,
        } => {
            w.string("MQTT")?;
            w.u8(if v5 { 5 } else { 4 });
            let mut cf = 0u8;
            if *clean {
                cf |= 0x02;
            }
            if let Some(will) = will {
                if will.qos > 1 {
                    return Err(MqttError::Malformed(
                        "a will at QoS 2 is not supported".into(),
                    ));
                }
                cf |= 0x04 | (will.qos << 3) | if will.retain { 0x20 } else { 0 };
            }
            if password.is_some() {
                cf |= 0x40;
            }
            if username.is_some() {
                cf |= 0x80;
            }
            w.u8(cf);
            w.u16(*keepalive);
            props(&mut w, p)?;
            w.string(client_id)?;
            if let Some(will) = will {
                props(&mut w, &will.props)?;
                w.string(&will.topic)?;
                w.binary(&will.payload)?;
            }
            if let Some(u) = username {
                w.string(u)?;
            }
            if let Some(pw) = password {
                w.binary(pw)?;
            }
            0x10
        }
        Packet::Connack {
            session_present,
            code,
            props: p,
        } => {
            w.u8(u8::from(*session_present));
            w.u8(*code);
            props(&mut w, p)?;
            0x20
        }
        Packet::Publish {
            dup,
            qos,
            retain,
            topic,
            pid,
            props: p,
            payload,
        } => {
            if *qos > 1 {
                return Err(MqttError::Malformed(format!(
                    "PUBLISH at QoS {qos}: use 0 or 1"
                )));
            }
            w.string(topic)?;
            if *qos == 1 {
                let pid = pid.filter(|p| *p != 0).ok_or_else(|| {
                    MqttError::Malformed(
                        "PUBLISH at QoS 1 needs a packet id from 1 to 65535".into(),
                    )
                })?;
                w.u16(pid);
            }
            props(&mut w, p)?;
            w.0.extend_from_slice(payload);
            0x30 | (u8::from(*dup) << 3) | (qos << 1) | u8::from(*retain)
        }
        Packet::Puback {
            pid,
            code,
            props: p,
        } => {
            w.u16(*pid);
            if v5 && (*code != 0 || !p.is_empty()) {
                w.u8(*code);
                props(&mut w, p)?;
            }
            0x40
        }
        Packet::Subscribe {
            pid,
            filters,
            props: p,
        } => {
            w.u16(*pid);
            props(&mut w, p)?;
            for (f, q) in filters {
                w.string(f)?;
                w.u8(*q & 3);
            }
            0x82
        }
        Packet::Suback {
            pid,
            codes,
            props: p,
        }
        | Packet::Unsuback {
            pid,
            codes,
            props: p,
        } => {
            w.u16(*pid);
            props(&mut w, p)?;
            w.0.extend_from_slice(codes);
            if matches!(packet, Packet::Suback { .. }) {
                0x90
            } else {
                0xb0
            }
        }
        Packet::Unsubscribe {
            pid,
            filters,
            props: p,
        } => {
            w.u16(*pid);
            props(&mut w, p)?;
            for f in filters {
                w.string(f)?;
            }
            0xa2
        }
        Packet::Pingreq => 0xc0,
        Packet::Pingresp => 0xd0,
        Packet::Disconnect { code, props: p } => {
            if v5 && (*code != 0 || !p.is_empty()) {
                w.u8(*code);
                props(&mut w, p)?;
            }
            0xe0
        }
    };
    let body = w.0;
    if body.len() > 268_435_455 {
        return Err(MqttError::TooLarge(body.len(), 268_435_455));
    }
    let mut out = Writer(Vec::with_capacity(body.len() + 5));
    out.u8(first);
    out.varint(body.len() as u32);
    out.0.extend_from_slice(&body);
    Ok(out.0)
}
