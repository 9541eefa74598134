//! The globals a Lua module gets from the host: `json` (shared by every
//! instance of a state), and each instance's own `log`, `emit`, `clients`,
//! `env` and `timer`.
//!
//! An instance's functions hold no reference to a Lua value from Rust: a
//! reference from Rust is a root the collector cannot see through, so an
//! instance of a shared state would never be freed. What an instance's
//! functions need from Lua (its timers) is bound in Lua instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlua::{Function, Lua, LuaSerdeExt, Table, Value};

use super::{LuaConn, LuaLimits};
use crate::modules::{ModuleContext, TimerRequest};

/// Environment variables no module may read, whatever the config says.
pub const RESERVED_ENV_PREFIX: &str = "TETHER_";

fn runtime_error(message: String) -> mlua::Error {
    mlua::Error::RuntimeError(message)
}

/// Installs the globals every instance of a state shares.
pub(super) fn install_shared(lua: &Lua) -> mlua::Result<()> {
    lua.globals().set("json", super::json::table(lua)?)?;
    lua.set_named_registry_value(
        TIMER_MAKER,
        lua.load(TIMER).set_name("=timer").into_function()?,
    )
}

/// Installs one instance's globals into its environment `g`; returns the
/// instance's table of live timers (id → `{f, once}`).
pub(super) fn install(
    lua: &Lua,
    g: &Table,
    ctx: &ModuleContext,
    env_allowed: &[String],
    limits: &LuaLimits,
) -> mlua::Result<Table> {
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
    let (timer, timers) = timer(lua, ctx, limits)?;
    g.set("timer", timer)?;
    Ok(timers)
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

/// The registry name of [`TIMER`], compiled once per state.
const TIMER_MAKER: &str = "tether.timer";

/// Binds an instance's timer functions to its own table of live timers
/// (as an upvalue, which the collector sees).
const TIMER: &str = r#"
local schedule = ...
local timers = {}
local timer = {
  after = function(ms, f) return schedule(timers, "after", ms, f) end,
  every = function(ms, f) return schedule(timers, "every", ms, f) end,
  cancel = function(id) timers[id] = nil end,
}
return timer, timers
"#;

/// `timer.after(ms, f)`, `timer.every(ms, f)`, `timer.cancel(id)`, within
/// the per-client limits on live timers and on the shortest delay. Returns
/// the `timer` table and the instance's table of live timers.
fn timer(lua: &Lua, ctx: &ModuleContext, limits: &LuaLimits) -> mlua::Result<(Table, Table)> {
    let next_id = AtomicU64::new(1);
    let tx = ctx.timers.clone();
    let (max, min) = (limits.max_timers, limits.min_timer_interval);
    let schedule = lua.create_function(
        move |lua, (timers, name, ms, f): (Table, String, Value, Function)| {
            let repeat = name == "every";
            let ms = delay_ms(&name, &ms)?;
            let delay = Duration::from_millis(ms);
            if delay < min {
                return Err(runtime_error(format!(
                    "timer.{name}({ms}): the shortest delay is {} ms",
                    min.as_millis()
                )));
            }
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
        },
    )?;
    let maker: Function = lua.named_registry_value(TIMER_MAKER)?;
    maker.call(schedule)
}

/// A timer's delay as Lua gave it, in milliseconds: 0 or more, a fraction
/// rounded up (a timer never fires early), and a float such as `1e15` is
/// fine (it fires in some 30,000 years). NaN, infinities, negatives, values
/// past `u64` and non-numbers are refused, not cast.
fn delay_ms(name: &str, ms: &Value) -> mlua::Result<u64> {
    let whole = match ms {
        Value::Integer(i) => u64::try_from(*i).ok(),
        Value::Number(x) if x.is_finite() && *x >= 0.0 && *x < u64::MAX as f64 => {
            Some(x.ceil() as u64)
        }
        _ => None,
    };
    whole.ok_or_else(|| {
        let got = match ms {
            Value::Integer(i) => i.to_string(),
            Value::Number(x) if x.abs() < 1e15 => x.to_string(),
            Value::Number(x) => format!("{x:e}"),
            other => other.type_name().to_string(),
        };
        runtime_error(format!(
            "timer.{name}({got}): the delay is a number of milliseconds, 0 or more"
        ))
    })
}
