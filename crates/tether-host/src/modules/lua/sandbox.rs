//! What a Lua module may reach, and the CPU budget every hook call runs under.
//!
//! The budget is one instruction-count hook installed as mlua's *global*
//! hook, so every Lua thread of the state has it: coroutines made with
//! `coroutine.create` or `coroutine.wrap` (nested too) inherit it. Once the
//! deadline of the current call passes, the hook raises the limit error every
//! 1000 instructions, and the protected-call functions (`pcall`, `xpcall`,
//! `coroutine.resume`, `coroutine.close`) re-raise it instead of returning
//! it, so no loop can swallow it.
//!
//! Not bounded by the hook: time inside one C function (`string.find` with a
//! pathological pattern, `table.concat` of a huge table, `string.rep` up to
//! the memory limit). The host's worker stops waiting for such a call after
//! its own deadline and fails the client (see `client::worker`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, Table, Value, VmState};

/// Instructions between two budget checks.
const CHECK_EVERY: u32 = 1000;

/// The CPU budget of the hook call in progress, shared with the Lua hook.
pub(super) struct Budget {
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the current call is over; 0 = no
    /// call in progress.
    deadline_ns: AtomicU64,
    /// The current call ran out of time.
    exhausted: AtomicBool,
    limit: Duration,
}

impl Budget {
    pub(super) fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Budget {
            epoch: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            exhausted: AtomicBool::new(false),
            limit,
        })
    }

    /// The limit error's text.
    pub(super) fn message(&self) -> String {
        format!(
            "CPU limit exceeded: a hook call may run for {} ms",
            self.limit.as_millis()
        )
    }

    /// Starts a call's budget.
    pub(super) fn start(&self) {
        let deadline = (self.epoch.elapsed() + self.limit).as_nanos() as u64;
        self.exhausted.store(false, Ordering::Relaxed);
        self.deadline_ns.store(deadline.max(1), Ordering::Relaxed);
    }

    /// Ends a call's budget: code outside a hook call (finalizers run by a
    /// later allocation) is not charged.
    pub(super) fn stop(&self) {
        self.deadline_ns.store(0, Ordering::Relaxed);
    }

    /// True once the current call's deadline has passed.
    fn over(&self) -> bool {
        if self.exhausted.load(Ordering::Relaxed) {
            return true;
        }
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        if deadline != 0 && self.epoch.elapsed().as_nanos() as u64 >= deadline {
            self.exhausted.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Installs the budget hook on every thread of `lua`.
pub(super) fn install_budget(lua: &Lua, budget: &Arc<Budget>) -> mlua::Result<()> {
    let hook_budget = budget.clone();
    lua.set_global_hook(
        HookTriggers::new().every_nth_instruction(CHECK_EVERY),
        move |_, _| {
            if hook_budget.over() {
                Err(mlua::Error::RuntimeError(hook_budget.message()))
            } else {
                Ok(VmState::Continue)
            }
        },
    )
}

/// Replaces the protected-call functions so a spent budget passes through
/// them, and refuses `__gc` metamethods (finalizers run with hooks off, so
/// the budget could not stop one).
///
/// `xpcall` calls its message handler after the failed call has unwound,
/// through `pcall`: Lua runs a handler with hooks off when the error came
/// from the hook, so a handler called in place could loop unchecked. The
/// sandbox has no `debug` library, so a handler cannot tell the difference.
const PROTECT: &str = r#"
local exhausted, limit = ...
local raw_pcall = pcall
local raw_resume, raw_close = coroutine.resume, coroutine.close
local raw_setmetatable, error, type, rawget = setmetatable, error, type, rawget
local function pass(ok, ...)
  if not ok and exhausted() then error(limit(), 0) end
  return ok, ...
end
pcall = function(f, ...) return pass(raw_pcall(f, ...)) end
local function handled(handler, ok, ...)
  if ok then return true, ... end
  if exhausted() then error(limit(), 0) end
  local handler_ok, result = raw_pcall(handler, (...))
  if not handler_ok and exhausted() then error(limit(), 0) end
  return false, result
end
xpcall = function(f, handler, ...) return handled(handler, raw_pcall(f, ...)) end
coroutine.resume = function(co, ...) return pass(raw_resume(co, ...)) end
coroutine.close = function(co) return pass(raw_close(co)) end
setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("setmetatable: __gc metamethods are not allowed in handler modules", 2)
  end
  return raw_setmetatable(t, mt)
end
"#;

/// The registry name of the compiled files `require` has loaded (name →
/// chunk taking the environment), shared by a state's instances.
const SOURCES: &str = "tether.sources";
/// The registry name of [`REQUIRE`], compiled once per state.
const REQUIRE_MAKER: &str = "tether.require";
/// The registry name of the function that gives a file's compiled chunk.
const CHUNK: &str = "tether.chunk";

/// An instance's `require`: its own table of loaded values, bound in Lua
/// (as upvalues, which the collector sees).
const REQUIRE: &str = r#"
local chunk, env = ...
local loaded = {}
return function(name)
  local v = loaded[name]
  if v ~= nil then return v end
  v = chunk(name)(env)
  if v == nil then v = true end
  loaded[name] = v
  return v
end
"#;

/// The prefix that makes a chunk take its environment as its argument:
/// `chunk(env)` runs it with `env` as its globals. On the first line, so
/// line numbers in errors stay those of the file.
pub(super) const TAKES_ENV: &str = "local _ENV = ...; ";

/// Removes what a module must not reach and installs the budget-aware
/// protected calls, in the state's globals (which every instance reads
/// through its environment).
pub(super) fn install(lua: &Lua, dir: PathBuf, budget: &Arc<Budget>) -> mlua::Result<()> {
    let g = lua.globals();
    for name in [
        "dofile",
        "loadfile",
        "load",
        "loadstring",
        "require",
        "package",
        "io",
        "debug",
    ] {
        g.set(name, Value::Nil)?;
    }
    // Keep only the harmless part of os.
    let os: Table = g.get("os")?;
    let safe = lua.create_table()?;
    for name in ["time", "clock", "date", "difftime"] {
        safe.set(name, os.get::<Value>(name)?)?;
    }
    g.set("os", safe)?;

    let b = budget.clone();
    let exhausted = lua.create_function(move |_, ()| Ok(b.over()))?;
    let b = budget.clone();
    let limit = lua.create_function(move |_, ()| Ok(b.message()))?;
    lua.load(PROTECT)
        .set_name("=sandbox")
        .call::<()>((exhausted, limit))?;

    lua.set_named_registry_value(SOURCES, lua.create_table()?)?;
    lua.set_named_registry_value(
        REQUIRE_MAKER,
        lua.load(REQUIRE).set_name("=require").into_function()?,
    )?;
    lua.set_named_registry_value(CHUNK, chunk_function(lua, dir)?)
}

/// An instance's `require(NAME)`, loading into its environment `env`.
pub(super) fn require(lua: &Lua, env: &Table) -> mlua::Result<Function> {
    let maker: Function = lua.named_registry_value(REQUIRE_MAKER)?;
    let chunk: Function = lua.named_registry_value(CHUNK)?;
    maker.call((chunk, env))
}

/// `NAME.lua` (dots are folders) from the module's own folder, compiled
/// once per state as a chunk that takes its environment.
fn chunk_function(lua: &Lua, dir: PathBuf) -> mlua::Result<Function> {
    lua.create_function(move |lua, name: String| {
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !valid {
            return Err(mlua::Error::RuntimeError(format!(
                "require({name:?}): module names are letters, digits, '_' and '.' only"
            )));
        }
        let sources: Table = lua.named_registry_value(SOURCES)?;
        if let Some(f) = sources.get::<Option<Function>>(name.as_str())? {
            return Ok(f);
        }
        let path = dir.join(format!("{}.lua", name.replace('.', "/")));
        let source = std::fs::read_to_string(&path).map_err(|e| {
            mlua::Error::RuntimeError(format!(
                "require({name:?}): cannot read {}: {e}",
                path.display()
            ))
        })?;
        let f = lua
            .load(format!("{TAKES_ENV}{source}"))
            .set_name(format!("@{}", path.display()))
            .into_function()?;
        sources.set(name.as_str(), f.clone())?;
        Ok(f)
    })
}

/// The folder `require` loads from: the module file's own.
pub(super) fn module_dir(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
