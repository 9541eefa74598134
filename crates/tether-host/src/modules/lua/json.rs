//! The `json` global: `json.encode(value)` and `json.decode(text)`.
//!
//! `decode` builds Lua values straight from the parser, with no JSON tree
//! in between: `null` is `json.null` (mlua's null), and arrays carry the
//! array metatable, so that `json.encode(json.decode(s))` gives back `[]`
//! for an empty array, as `to_value` of a parsed tree did.

use std::fmt;

use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The `json` table.
pub(super) fn table(lua: &Lua) -> mlua::Result<Table> {
    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, v: Value| {
            let value: serde_json::Value = lua.from_value(v)?;
            serde_json::to_string(&value).map_err(mlua::Error::external)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, s: mlua::String| decode(lua, &s.as_bytes()))?,
    )?;
    json.set("null", lua.null())?;
    Ok(json)
}

/// Parses `text` into a Lua value.
fn decode(lua: &Lua, text: &[u8]) -> mlua::Result<Value> {
    let mut parser = serde_json::Deserializer::from_slice(text);
    let value = LuaSeed(lua)
        .deserialize(&mut parser)
        .and_then(|v| parser.end().map(|()| v))
        .map_err(|e| mlua::Error::RuntimeError(format!("json.decode: {e}")))?;
    Ok(value)
}

/// Builds one Lua value from the parser.
#[derive(Clone, Copy)]
struct LuaSeed<'a>(&'a Lua);

impl<'de> DeserializeSeed<'de> for LuaSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn lua_error<E: serde::de::Error>(e: mlua::Error) -> E {
    E::custom(e)
}

impl<'de> Visitor<'de> for LuaSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Number(v as f64),
        })
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Number(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0
            .create_string(v)
            .map(Value::String)
            .map_err(lua_error)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(self.0.null())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let t = self
            .0
            .create_table_with_capacity(seq.size_hint().unwrap_or(0), 0)
            .map_err(lua_error)?;
        let mut i = 1;
        while let Some(v) = seq.next_element_seed(self)? {
            t.raw_set(i, v).map_err(lua_error)?;
            i += 1;
        }
        t.set_metatable(Some(self.0.array_metatable()))
            .map_err(lua_error)?;
        Ok(Value::Table(t))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let t = self
            .0
            .create_table_with_capacity(0, map.size_hint().unwrap_or(0))
            .map_err(lua_error)?;
        while let Some(k) = map.next_key_seed(self)? {
            let v = map.next_value_seed(self)?;
            t.raw_set(k, v).map_err(lua_error)?;
        }
        Ok(Value::Table(t))
    }
}
