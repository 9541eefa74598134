//! A Lua state and what runs in it: the sandboxed globals, the compiled
//! module, the CPU budget, and the lock that lets one call in at a time.
//!
//! A state belongs to one instance (the default) or to every instance of
//! a type (`lua_state = "shared"`). Either way each instance runs the
//! module in an environment of its own (its globals: its hooks, `settings`,
//! `emit`, `timer`, …), which reads the state's globals (the libraries,
//! `json`, the codecs) through `__index`.

use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use mlua::{Function, Lua, LuaOptions, StdLib, Table};

use super::sandbox::{self, Budget, TAKES_ENV};
use super::LuaFactory;

/// One Lua state.
pub(super) struct Vm {
    pub(super) lua: Lua,
    pub(super) budget: Arc<Budget>,
    /// The module compiled once: `maker(env)` runs it in `env`.
    maker: Function,
    /// `{__index = the state's globals}`, every environment's metatable.
    env_meta: Table,
    /// Held by every call into the state, so that only one runs at a time
    /// under the one budget.
    calls: Mutex<()>,
    /// For a shared state: what the host's worker waits for, without
    /// holding a thread, before its call goes to the blocking pool.
    pub(super) gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Strings every message uses, made once: pushing a held string skips
    /// hashing and interning it again per message.
    pub(super) names: Names,
}

/// `"type"`, `"data"`, `"text"`, `"binary"` and `"on_message"`.
pub(super) struct Names {
    pub(super) type_: mlua::String,
    pub(super) data: mlua::String,
    pub(super) text: mlua::String,
    pub(super) binary: mlua::String,
    pub(super) on_message: mlua::String,
}

impl Vm {
    /// A state with the sandbox and the module compiled (not yet run).
    pub(super) fn new(factory: &LuaFactory, shared: bool) -> mlua::Result<Vm> {
        let libs = StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::OS;
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        lua.set_memory_limit(factory.limits.memory)?;
        let budget = Budget::new(factory.limits.cpu);
        sandbox::install_budget(&lua, &budget)?;
        sandbox::install(&lua, sandbox::module_dir(&factory.path), &budget)?;
        super::globals::install_shared(&lua)?;
        crate::brokers::lua::install(&lua)?;
        let maker = lua
            .load(format!("{TAKES_ENV}{}", factory.source))
            .set_name(format!("@{}", factory.path.display()))
            .into_function()?;
        let env_meta = lua.create_table()?;
        env_meta.set("__index", lua.globals())?;
        let names = Names {
            type_: lua.create_string("type")?,
            data: lua.create_string("data")?,
            text: lua.create_string("text")?,
            binary: lua.create_string("binary")?,
            on_message: lua.create_string("on_message")?,
        };
        Ok(Vm {
            names,
            lua,
            budget,
            maker,
            env_meta,
            calls: Mutex::new(()),
            gate: shared.then(|| Arc::new(tokio::sync::Mutex::new(()))),
        })
    }

    /// A fresh environment for an instance: `_G` is the environment itself.
    pub(super) fn environment(&self) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        env.set_metatable(Some(self.env_meta.clone()))?;
        env.set("_G", env.clone())?;
        Ok(env)
    }

    /// Runs the module's top level in `env` (inside a call).
    pub(super) fn run_module(&self, env: &Table) -> mlua::Result<()> {
        self.maker.call::<()>(env.clone())
    }

    /// Runs `f` alone in the state, under the CPU budget.
    pub(super) fn guarded<R>(&self, f: impl FnOnce(&Lua) -> mlua::Result<R>) -> mlua::Result<R> {
        let _alone = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        self.budgeted(f)
    }

    /// [`guarded`](Self::guarded) for setting up an instance, which runs
    /// outside the host's worker: waits for another instance's call to
    /// finish, but not for good (one stuck inside a C function).
    pub(super) fn guarded_within<R>(
        &self,
        patience: Duration,
        f: impl FnOnce(&Lua) -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        let until = Instant::now() + patience;
        let _alone = loop {
            match self.calls.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(mlua::Error::RuntimeError(format!(
                        "the type's shared Lua state stayed busy for {} ms with another instance's call",
                        patience.as_millis()
                    )))
                }
            }
        };
        self.budgeted(f)
    }

    fn budgeted<R>(&self, f: impl FnOnce(&Lua) -> mlua::Result<R>) -> mlua::Result<R> {
        self.budget.start();
        let result = f(&self.lua);
        self.budget.stop();
        result
    }
}
