//! The built-in client types, `module = "builtin:stomp"` and
//! `module = "builtin:mqtt"`: Lua modules that ship in the binary (read
//! them in `crates/tether-host/src/brokers/builtin/`, copy and change
//! them), configured by `[client_type.settings]`.

use std::path::PathBuf;

use super::framing::Framing;
use super::mqtt::Version;

/// What names a built-in module.
pub const PREFIX: &str = "builtin:";

/// A built-in type's module and framing.
pub struct Builtin {
    /// `stomp` or `mqtt`.
    pub name: &'static str,
    /// The Lua source.
    pub source: &'static str,
    /// The subprotocol offered unless the type names its own.
    pub protocol: &'static str,
    /// How API sends become frames.
    pub framing: Framing,
}

impl Builtin {
    /// The built-in module `builtin:NAME`, with its settings checked.
    pub fn load(module: &str, settings: &serde_json::Value) -> Result<Builtin, String> {
        let name = module.strip_prefix(PREFIX).unwrap_or(module);
        check_settings(name, settings)?;
        match name {
            "stomp" => Ok(Builtin {
                name: "stomp",
                source: include_str!("builtin/stomp.lua"),
                protocol: "v12.stomp",
                framing: Framing::Stomp,
            }),
            "mqtt" => {
                let version = match settings.get("version") {
                    None => Version::V5,
                    Some(v) => v.as_str().and_then(Version::parse).ok_or_else(|| {
                        format!("settings.version = {v}: use \"3.1.1\" or \"5\"")
                    })?,
                };
                let qos = settings.get("qos").and_then(|q| q.as_u64()).unwrap_or(1) as u8;
                Ok(Builtin {
                    name: "mqtt",
                    source: include_str!("builtin/mqtt.lua"),
                    protocol: "mqtt",
                    framing: Framing::Mqtt { version, qos },
                })
            }
            other => Err(format!(
                "module \"builtin:{other}\": there is no such built-in type; use builtin:stomp or builtin:mqtt"
            )),
        }
    }

    /// The name the module's errors and tracebacks carry.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("builtin/{}.lua", self.name))
    }
}

/// The framing of one instance of a type: a built-in broker type's, from
/// its merged settings (an instance may choose its MQTT version or QoS).
pub fn framing_for(t: &crate::config::ClientType, settings: &serde_json::Value) -> Option<Framing> {
    t.framing?;
    let name = t.module.as_ref()?.file_stem()?.to_str()?;
    Builtin::load(name, settings)
        .ok()
        .map(|b| b.framing)
        .or(t.framing)
}

/// The type's settings with an instance's on top (key by key).
pub fn merge(
    type_settings: &serde_json::Value,
    instance: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut out = type_settings.as_object().cloned().unwrap_or_default();
    for (k, v) in instance {
        out.insert(k.clone(), v.clone());
    }
    serde_json::Value::Object(out)
}

/// The settings each built-in type takes, with their JSON kinds.
fn check_settings(name: &str, settings: &serde_json::Value) -> Result<(), String> {
    let known: &[(&str, &str)] = match name {
        "stomp" => &[
            ("subscribe", "list"),
            ("heartbeat_ms", "number"),
            ("host", "string"),
            ("ack", "string"),
        ],
        "mqtt" => &[
            ("subscribe", "list"),
            ("qos", "number"),
            ("version", "string"),
            ("client_id", "string"),
            ("clean_start", "bool"),
            ("keepalive_secs", "number"),
            ("session_expiry_secs", "number"),
            ("will", "table"),
        ],
        _ => return Ok(()),
    };
    let Some(map) = settings.as_object() else {
        return Ok(());
    };
    for (k, v) in map {
        let Some((_, kind)) = known.iter().find(|(n, _)| n == k) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "settings.{k}: builtin:{name} has no such setting; it takes {}",
                names.join(", ")
            ));
        };
        let ok = match *kind {
            "list" => v
                .as_array()
                .is_some_and(|a| a.iter().all(|s| s.is_string())),
            "number" => v.is_u64(),
            "string" => v.is_string(),
            "bool" => v.is_boolean(),
            _ => v.is_object(),
        };
        if !ok {
            let what = match *kind {
                "list" => "a list of strings",
                "number" => "a whole number",
                "string" => "a string",
                "bool" => "true or false",
                _ => "a table",
            };
            return Err(format!("settings.{k} must be {what}"));
        }
    }
    if name == "mqtt" {
        if let Some(q) = map.get("qos").and_then(|q| q.as_u64()) {
            if q > 1 {
                return Err(format!("settings.qos = {q}: use 0 or 1"));
            }
        }
    }
    Ok(())
}
