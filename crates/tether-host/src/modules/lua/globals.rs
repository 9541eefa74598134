//! The globals a Lua module gets from the host: `json`, `log`, `emit`,
//! `clients`, `env` and `timer`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaSerdeExt, Table, Value};

use super::{LuaConn, LuaLimits};
use crate::modules::{ModuleContext, TimerRequest};

pub(super) const TIMERS: &str = "tether.timers";

/// Environment variables no module may read, whatever the config says.
pub const RESERVED_ENV_PREFIX: &str = "TETHER_";

fn runtime_error(message: String) -> mlua::Error {
    mlua::Error::RuntimeError(message)
}

pub(super) fn install(
    lua: &Lua,
    ctx: &ModuleContext,
    env_allowed: &[String],
    limits: &LuaLimits,
) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("json", json(lua)?)?;
    g.set("log", log(lua, &ctx.key)?)?;

    let emit = ctx.emit.clone();
    g.set(
        "emit",
        lua.create_function(move |lua, v: Value| {
            emit(lua.from_value(v)?);
            Ok(())
        })?,
    )?;

    let clients = lua.create_table()?;
    let find = ctx.clients.clone();
    clients.set(
        "get",
        lua.create_function(move |lua, key: String| match find(&key) {
            Some(handle) => Ok(Value::UserData(lua.create_userdata(LuaConn(handle))?)),
            None => Ok(Value::Nil),
        })?,
    )?;
    g.set("clients", clients)?;

    let allowed = env_allowed.to_vec();
    g.set(
        "env",
        lua.create_function(move |_, name: String| read_env(&allowed, &name))?,
    )?;
    g.set("timer", timer(lua, ctx, limits)?)?;
    Ok(())
}

/// `env(NAME)`: the variable's value (nil when unset) if the type's config
/// lists it; an error otherwise. `TETHER_*` is never readable.
fn read_env(allowed: &[String], name: &str) -> mlua::Result<Option<String>> {
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(runtime_error(format!(
            "env({name:?}): variables named {RESERVED_ENV_PREFIX}* belong to the host and are never readable by modules"
        )));
    }
    if !allowed.iter().any(|a| a == name) {
        return Err(runtime_error(format!(
            "env({name:?}): not allowed; list it in the client type's env = [...] in the config"
        )));
    }
    Ok(std::env::var(name).ok())
}

fn json(lua: &Lua) -> mlua::Result<Table> {
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
        lua.create_function(|lua, s: mlua::String| {
            let value: serde_json::Value = serde_json::from_slice(&s.as_bytes())
                .map_err(|e| runtime_error(format!("json.decode: {e}")))?;
            lua.to_value(&value)
        })?,
    )?;
    Ok(json)
}

fn log(lua: &Lua, key: &str) -> mlua::Result<Table> {
    let log = lua.create_table()?;
    for level in ["info", "warn", "error"] {
        let key = key.to_string();
        log.set(
            level,
            lua.create_function(move |_, m: String| {
                match level {
                    "info" => tracing::info!(target: "tether::module", client = %key, "{m}"),
                    "warn" => tracing::warn!(target: "tether::module", client = %key, "{m}"),
                    _ => tracing::error!(target: "tether::module", client = %key, "{m}"),
                }
                Ok(())
            })?,
        )?;
    }
    Ok(log)
}

/// `timer.after(ms, f)`, `timer.every(ms, f)`, `timer.cancel(id)`, within
/// the per-client limits on live timers and on the shortest delay.
fn timer(lua: &Lua, ctx: &ModuleContext, limits: &LuaLimits) -> mlua::Result<Table> {
    lua.set_named_registry_value(TIMERS, lua.create_table()?)?;
    let next_id = Arc::new(AtomicU64::new(1));
    let timer = lua.create_table()?;
    for (name, repeat) in [("after", false), ("every", true)] {
        let tx = ctx.timers.clone();
        let next_id = next_id.clone();
        let (max, min) = (limits.max_timers, limits.min_timer_interval);
        timer.set(
            name,
            lua.create_function(move |lua, (ms, f): (u64, Function)| {
                let delay = Duration::from_millis(ms);
                if delay < min {
                    return Err(runtime_error(format!(
                        "timer.{name}({ms}): the shortest delay is {} ms",
                        min.as_millis()
                    )));
                }
                let timers: Table = lua.named_registry_value(TIMERS)?;
                let live = timers.pairs::<Value, Value>().count();
                if live >= max {
                    return Err(runtime_error(format!(
                        "timer.{name}: this client already has {live} timers, the most allowed; cancel one first"
                    )));
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let entry = lua.create_table()?;
                entry.set("f", f)?;
                entry.set("once", !repeat)?;
                timers.set(id, entry)?;
                let _ = tx.send(TimerRequest {
                    id,
                    delay,
                    every: repeat.then_some(delay),
                });
                Ok(id)
            })?,
        )?;
    }
    timer.set(
        "cancel",
        lua.create_function(|lua, id: u64| {
            let timers: Table = lua.named_registry_value(TIMERS)?;
            timers.set(id, Value::Nil)
        })?,
    )?;
    Ok(timer)
}
