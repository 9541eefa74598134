//! The codecs as Lua globals `stomp` and `mqtt`:
//!
//! - `stomp.encode{command = "SEND", headers = {...}, body = "..."}` → bytes;
//!   `stomp.decoder()` → `d:feed(bytes)` → a list of
//!   `{command, headers = {name = value}, body}`; `stomp.heartbeats(cx, cy,
//!   header)` → the negotiated send and receive intervals.
//! - `mqtt.encode(packet, version)` → bytes; `mqtt.decoder(version)` →
//!   `d:feed(bytes)` → a list of packets. A packet is a table with `type`
//!   (`connect`, `connack`, `publish`, `puback`, `subscribe`, `suback`,
//!   `unsubscribe`, `unsuback`, `pingreq`, `pingresp`, `disconnect`) and
//!   the packet's fields by name; version 5 properties are `properties =
//!   {content_type = ..., user_property = {{name, value}, ...}}`.
//!
//! Bad input raises a Lua error that says what was wrong.

use mlua::{Lua, Table, UserData, Value};

use super::mqtt::{self, Packet, Version, Will};
use super::mqtt_props::{self, PropValue, Props};
use super::stomp;

fn err(m: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::RuntimeError(m.to_string())
}

/// Installs `stomp` and `mqtt`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let g = lua.globals();
    let s = lua.create_table()?;
    s.set(
        "encode",
        lua.create_function(|lua, t: Table| stomp_encode(lua, &t))?,
    )?;
    s.set(
        "decoder",
        lua.create_function(|_, max: Option<usize>| {
            Ok(StompDecoder(stomp::Decoder::new(
                max.unwrap_or(stomp::DEFAULT_MAX_FRAME),
            )))
        })?,
    )?;
    s.set(
        "heartbeats",
        lua.create_function(|_, (cx, cy, theirs): (u64, u64, Option<String>)| {
            Ok(stomp::heartbeats((cx, cy), theirs.as_deref()))
        })?,
    )?;
    g.set("stomp", s)?;
    let m = lua.create_table()?;
    m.set(
        "encode",
        lua.create_function(|lua, (t, v): (Table, Option<String>)| {
            let packet = packet_from(&t)?;
            let bytes = mqtt::encode(&packet, version(v.as_deref())?).map_err(err)?;
            lua.create_string(bytes)
        })?,
    )?;
    m.set(
        "decoder",
        lua.create_function(|_, (v, max): (Option<String>, Option<usize>)| {
            Ok(MqttDecoder(mqtt::Decoder::new(
                version(v.as_deref())?,
                max.unwrap_or(mqtt::DEFAULT_MAX_PACKET),
            )))
        })?,
    )?;
    g.set("mqtt", m)?;
    Ok(())
}

fn version(v: Option<&str>) -> mlua::Result<Version> {
    match v {
        None => Ok(Version::V5),
        Some(s) => Version::parse(s)
            .ok_or_else(|| err(format!("MQTT version {s:?}: use \"3.1.1\" or \"5\""))),
    }
}

fn stomp_encode(lua: &Lua, t: &Table) -> mlua::Result<mlua::String> {
    let command: String = t
        .get::<Option<String>>("command")?
        .ok_or_else(|| err("stomp.encode: the frame needs a command"))?;
    let mut frame = stomp::Frame::new(&command);
    if let Some(h) = t.get::<Option<Table>>("headers")? {
        let mut headers: Vec<(String, String)> = Vec::new();
        for pair in h.pairs::<String, Value>() {
            let (k, v) = pair?;
            let v = match v {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(err(format!(
                        "stomp.encode: header {k:?} is a {}; use a string or a number",
                        other.type_name()
                    )))
                }
            };
            headers.push((k, v));
        }
        headers.sort();
        frame.headers = headers;
    }
    if let Some(b) = t.get::<Option<mlua::String>>("body")? {
        frame.body = b.as_bytes().to_vec();
    }
    let bytes = stomp::encode(&frame).map_err(err)?;
    lua.create_string(bytes)
}

struct StompDecoder(stomp::Decoder);

impl UserData for StompDecoder {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("feed", |lua, this, data: mlua::String| {
            this.0.feed(&data.as_bytes());
            let frames = this.0.frames().map_err(err)?;
            let list = lua.create_table()?;
            for f in frames {
                let t = lua.create_table()?;
                t.set("command", f.command)?;
                let h = lua.create_table()?;
                for (k, v) in f.headers.into_iter().rev() {
                    // The first of a repeated header wins: set it last.
                    h.set(k, v)?;
                }
                t.set("headers", h)?;
                t.set("body", lua.create_string(&f.body)?)?;
                list.push(t)?;
            }
            Ok(list)
        });
        methods.add_method("buffered", |_, this, ()| Ok(this.0.buffered()));
    }
}

struct MqttDecoder(mqtt::Decoder);

impl UserData for MqttDecoder {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method_mut("feed", |lua, this, data: mlua::String| {
            this.0.feed(&data.as_bytes());
            let packets = this.0.packets().map_err(err)?;
            let list = lua.create_table()?;
            for p in packets {
                list.push(packet_to(lua, p)?)?;
            }
            Ok(list)
        });
        methods.add_method("buffered", |_, this, ()| Ok(this.0.buffered()));
    }
}

fn props_to(lua: &Lua, props: Props) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let users = lua.create_table()?;
    for (id, v) in props {
        let name = mqtt_props::name(id).unwrap_or("unknown");
        match v {
            PropValue::Byte(n) => t.set(name, n)?,
            PropValue::U16(n) => t.set(name, n)?,
            PropValue::U32(n) | PropValue::Varint(n) => t.set(name, n)?,
            PropValue::Str(s) => t.set(name, s)?,
            PropValue::Bin(b) => t.set(name, lua.create_string(b)?)?,
            PropValue::Pair(k, v) => users.push(lua.create_sequence_from([k, v])?)?,
        }
    }
    if users.raw_len() > 0 {
        t.set("user_property", users)?;
    }
    Ok(t)
}

fn props_from(t: Option<Table>) -> mlua::Result<Props> {
    let mut out = Vec::new();
    let Some(t) = t else { return Ok(out) };
    for pair in t.pairs::<String, Value>() {
        let (name, v) = pair?;
        let id =
            mqtt_props::id(&name).ok_or_else(|| err(format!("unknown MQTT property {name:?}")))?;
        if name == "user_property" {
            let Value::Table(list) = v else {
                return Err(err("user_property is a list of {name, value} pairs"));
            };
            for p in list.sequence_values::<Table>() {
                let p = p?;
                out.push((id, PropValue::Pair(p.get(1)?, p.get(2)?)));
            }
            continue;
        }
        let value = match &v {
            Value::Integer(i) => mqtt_props::value_for(id, u64::try_from(*i).ok(), None),
            Value::String(s) => mqtt_props::value_for(id, None, Some(&s.as_bytes())),
            other => Err(format!("property {name} is a {}", other.type_name())),
        }
        .map_err(err)?;
        out.push((id, value));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

fn bytes(t: &Table, k: &str) -> mlua::Result<Option<Vec<u8>>> {
    Ok(t.get::<Option<mlua::String>>(k)?
        .map(|s| s.as_bytes().to_vec()))
}

fn need<T: mlua::FromLua>(t: &Table, k: &str, what: &str) -> mlua::Result<T> {
    t.get::<Option<T>>(k)?
        .ok_or_else(|| err(format!("mqtt.encode: {what} needs {k}")))
}

fn packet_from(t: &Table) -> mlua::Result<Packet> {
    let kind: String = need(t, "type", "a packet")?;
    let props = props_from(t.get("properties")?)?;
    let pid = |t: &Table| -> mlua::Result<u16> { need(t, "pid", &kind) };
    Ok(match kind.as_str() {
        "connect" => Packet::Connect {
            client_id: t.get::<Option<String>>("client_id")?.unwrap_or_default(),
            clean: t.get::<Option<bool>>("clean")?.unwrap_or(true),
            keepalive: t.get::<Option<u16>>("keepalive")?.unwrap_or(60),
            username: t.get("username")?,
            password: bytes(t, "password")?,
            will: match t.get::<Option<Table>>("will")? {
                None => None,
                Some(w) => Some(Will {
                    topic: need(&w, "topic", "a will")?,
                    payload: bytes(&w, "payload")?.unwrap_or_default(),
                    qos: w.get::<Option<u8>>("qos")?.unwrap_or(0),
                    retain: w.get::<Option<bool>>("retain")?.unwrap_or(false),
                    props: props_from(w.get("properties")?)?,
                }),
            },
            props,
        },
        "publish" => {
            let qos = t.get::<Option<u8>>("qos")?.unwrap_or(0);
            Packet::Publish {
                dup: t.get::<Option<bool>>("dup")?.unwrap_or(false),
                qos,
                retain: t.get::<Option<bool>>("retain")?.unwrap_or(false),
                topic: need(t, "topic", "publish")?,
                pid: if qos > 0 { Some(pid(t)?) } else { None },
                props,
                payload: bytes(t, "payload")?.unwrap_or_default(),
            }
        }
        "puback" => Packet::Puback {
            pid: pid(t)?,
            code: t.get::<Option<u8>>("code")?.unwrap_or(0),
            props,
        },
        "subscribe" => {
            let mut filters = Vec::new();
            let list: Table = need(t, "filters", "subscribe")?;
            for f in list.sequence_values::<Table>() {
                let f = f?;
                filters.push((f.get::<String>(1)?, f.get::<Option<u8>>(2)?.unwrap_or(0)));
            }
            Packet::Subscribe {
                pid: pid(t)?,
                filters,
                props,
            }
        }
        "unsubscribe" => {
            let list: Table = need(t, "filters", "unsubscribe")?;
            Packet::Unsubscribe {
                pid: pid(t)?,
                filters: list.sequence_values::<String>().collect::<mlua::Result<_>>()?,
                props,
            }
        }
        "pingreq" => Packet::Pingreq,
        "pingresp" => Packet::Pingresp,
        "disconnect" => Packet::Disconnect {
            code: t.get::<Option<u8>>("code")?.unwrap_or(0),
            props,
        },
        other => {
            return Err(err(format!(
                "mqtt.encode: a client does not send {other:?} (use connect, publish, puback, subscribe, unsubscribe, pingreq or disconnect)"
            )))
        }
    })
}

fn packet_to(lua: &Lua, p: Packet) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let kind = if matches!(p, Packet::Unsuback { .. }) {
        "unsuback"
    } else {
        "suback"
    };
    let set_props = |t: &Table, props: Props| -> mlua::Result<()> {
        if !props.is_empty() {
            t.set("properties", props_to(lua, props)?)?;
        }
        Ok(())
    };
    match p {
        Packet::Connack {
            session_present,
            code,
            props,
        } => {
            t.set("type", "connack")?;
            t.set("session_present", session_present)?;
            t.set("code", code)?;
            set_props(&t, props)?;
        }
        Packet::Publish {
            dup,
            qos,
            retain,
            topic,
            pid,
            props,
            payload,
        } => {
            t.set("type", "publish")?;
            t.set("dup", dup)?;
            t.set("qos", qos)?;
            t.set("retain", retain)?;
            t.set("topic", topic)?;
            t.set("pid", pid)?;
            t.set("payload", lua.create_string(payload)?)?;
            set_props(&t, props)?;
        }
        Packet::Puback { pid, code, props } => {
            t.set("type", "puback")?;
            t.set("pid", pid)?;
            t.set("code", code)?;
            set_props(&t, props)?;
        }
        Packet::Suback { pid, codes, props } | Packet::Unsuback { pid, codes, props } => {
            t.set("type", kind)?;
            t.set("pid", pid)?;
            t.set("codes", lua.create_sequence_from(codes)?)?;
            set_props(&t, props)?;
        }
        Packet::Pingreq => t.set("type", "pingreq")?,
        Packet::Pingresp => t.set("type", "pingresp")?,
        Packet::Disconnect { code, props } => {
            t.set("type", "disconnect")?;
            t.set("code", code)?;
            set_props(&t, props)?;
        }
        // What a server sends a client is above; these come only from a
        // client, and are shown by type for completeness.
        Packet::Connect { client_id, .. } => {
            t.set("type", "connect")?;
            t.set("client_id", client_id)?;
        }
        Packet::Subscribe { pid, .. } => {
            t.set("type", "subscribe")?;
            t.set("pid", pid)?;
        }
        Packet::Unsubscribe { pid, .. } => {
            t.set("type", "unsubscribe")?;
            t.set("pid", pid)?;
        }
    }
    Ok(t)
}
