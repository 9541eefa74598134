//! Lua 5.4 handler modules, sandboxed.
//!
//! Each instance gets its own Lua state, or, for a type with
//! `lua_state = "shared"`, shares its type's (see [`vm`]). The state has the `string`, `table`,
//! `math`, `utf8` and `coroutine` libraries, an `os` with only `time`,
//! `clock`, `date` and `difftime`, and no `io`, `debug`, `load`, `dofile` or
//! `loadfile`. `require` loads `NAME.lua` from the module's own folder only;
//! `env` reads only the variables the type's config lists. Every hook call
//! runs under a CPU budget that covers coroutines and cannot be swallowed by
//! `pcall` (see [`sandbox`]), and the state under a memory limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mlua::{Function, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, UserData, Value};

use super::{
    ClientModule, ConnHandle, ConnectRequest, Message, ModuleContext, ModuleError, ModuleFactory,
};

mod globals;
mod json;
mod sandbox;
mod vm;

pub use globals::RESERVED_ENV_PREFIX;
use vm::Vm;

/// CPU time one hook call may take.
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_millis(1000);
/// Memory one Lua state may use.
pub const MEMORY_LIMIT: usize = 64 << 20;

/// What one Lua module may use.
#[derive(Debug, Clone)]
pub struct LuaLimits {
    /// CPU time per hook call (Lua code; see [`sandbox`] for C functions).
    pub cpu: Duration,
    /// Memory of the whole state.
    pub memory: usize,
    /// Timers alive at once (`timer.after` not yet fired, `timer.every` not cancelled).
    pub max_timers: usize,
    /// The shortest `timer.after` delay and `timer.every` interval.
    pub min_timer_interval: Duration,
}

impl Default for LuaLimits {
    fn default() -> Self {
        LuaLimits {
            cpu: DEFAULT_CPU_LIMIT,
            memory: MEMORY_LIMIT,
            max_timers: 32,
            min_timer_interval: Duration::from_millis(10),
        }
    }
}

/// Checks that `source` compiles; the error names the file and line.
pub fn check_syntax(source: &str, path: &Path) -> Result<(), String> {
    let lua = Lua::new_with(StdLib::NONE, LuaOptions::new()).map_err(|e| e.to_string())?;
    lua.load(source)
        .set_name(format!("@{}", path.display()))
        .into_function()
        .map(|_| ())
        .map_err(|e| format!("Lua syntax error: {}", describe(&e)))
}

/// The first line of the innermost Lua error message.
pub fn describe(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => describe(cause),
        mlua::Error::SyntaxError { message, .. } => {
            message.lines().next().unwrap_or("").to_string()
        }
        mlua::Error::RuntimeError(m) => m.lines().next().unwrap_or("").to_string(),
        mlua::Error::MemoryError(m) => format!("out of memory: {m}"),
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

/// Makes Lua modules from one source file.
pub struct LuaFactory {
    source: String,
    path: PathBuf,
    limits: LuaLimits,
    env: Vec<String>,
    settings: serde_json::Value,
    /// Every instance runs in one state: made by the first.
    shared: Option<Mutex<Option<Arc<Vm>>>>,
}

impl LuaFactory {
    /// A factory for the module at `path` with this source.
    pub fn new(source: String, path: PathBuf) -> Self {
        LuaFactory {
            source,
            path,
            limits: LuaLimits::default(),
            env: Vec::new(),
            settings: serde_json::Value::Object(Default::default()),
            shared: None,
        }
    }

    /// One Lua state for every instance (`lua_state = "shared"`): an idle
    /// instance costs its environment and its functions, not a state.
    /// Their hooks run one at a time, and the limits (memory, CPU per
    /// call) are the state's.
    pub fn shared_state(mut self, shared: bool) -> Self {
        self.shared = shared.then(|| Mutex::new(None));
        self
    }

    /// The shared state's memory in bytes after a full collection (`None`
    /// for a type whose instances have states of their own, or before the
    /// first instance). For diagnostics and tests: the collection runs
    /// between hook calls.
    pub fn shared_memory(&self) -> Option<usize> {
        let shared = self.shared.as_ref()?;
        let vm = shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        vm.guarded(|lua| {
            lua.gc_collect()?;
            lua.gc_collect()?;
            Ok(lua.used_memory())
        })
        .ok()
    }

    /// The state for a new instance: its own, or the shared one.
    fn vm(&self) -> mlua::Result<Arc<Vm>> {
        let Some(shared) = &self.shared else {
            return Ok(Arc::new(Vm::new(self, false)?));
        };
        let mut slot = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(vm) = slot.as_ref() {
            return Ok(vm.clone());
        }
        let vm = Arc::new(Vm::new(self, true)?);
        *slot = Some(vm.clone());
        Ok(vm)
    }

    /// Sets the CPU limit per hook call.
    pub fn cpu_limit(mut self, limit: Duration) -> Self {
        self.limits.cpu = limit;
        self
    }

    /// Sets the memory limit of a Lua state.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.limits.memory = bytes;
        self
    }

    /// Sets every limit.
    pub fn limits(mut self, limits: LuaLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The type's `[client_type.settings]`, the global `settings`.
    pub fn settings(mut self, settings: serde_json::Value) -> Self {
        self.settings = settings;
        self
    }

    /// The environment variables `env(NAME)` may read (never `TETHER_*`).
    pub fn env(mut self, names: Vec<String>) -> Self {
        self.env = names;
        self
    }
}

impl ModuleFactory for LuaFactory {
    fn create(&self, ctx: ModuleContext) -> Result<Box<dyn ClientModule>, ModuleError> {
        LuaModule::new(self, ctx)
            .map(|m| Box::new(m) as Box<dyn ClientModule>)
            .map_err(|e| ModuleError::new(describe(&e)))
    }

    fn call_limit(&self) -> Option<Duration> {
        Some(self.limits.cpu)
    }
}

/// A connection handle as Lua userdata: `conn.key`, `conn.state`,
/// `conn:send(text)`, `conn:send_binary(bytes)`, `conn:close(code, reason)`.
pub(super) struct LuaConn(pub(super) ConnHandle);

impl UserData for LuaConn {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("key", |_, this| Ok(this.0.key().to_string()));
        fields.add_field_method_get("state", |_, this| Ok(this.0.state()));
    }

    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method(
            "send",
            |_, this, (text, opts): (mlua::String, Option<Table>)| {
                let text = text.to_str()?.to_string();
                // conn:send(text, {durable = true, id = …, ttl_secs = …})
                let durable = match opts {
                    Some(o) if o.get::<Option<bool>>("durable")?.unwrap_or(false) => Some(o),
                    _ => None,
                };
                let Some(opts) = durable else {
                    return this
                        .0
                        .send_text(&text)
                        .map(|()| Value::Nil)
                        .map_err(|e| mlua::Error::RuntimeError(e.to_string()));
                };
                let id: Option<String> = opts.get("id")?;
                let ttl: Option<u64> = opts.get("ttl_secs")?;
                let stored = this
                    .0
                    .send_durable(&Message::Text(text), id, ttl)
                    .map_err(mlua::Error::RuntimeError)?;
                Ok(Value::Integer(stored.seq))
            },
        );
        methods.add_method("report", |lua, this, state: Value| {
            this.0.report(lua.from_value(state)?);
            Ok(())
        });
        methods.add_method("ready", |_, this, ()| {
            this.0.mark_ready();
            Ok(())
        });
        methods.add_method("send_binary", |_, this, data: mlua::String| {
            this.0
                .send_binary(&data.as_bytes())
                .map_err(|e| mlua::Error::RuntimeError(e.to_string()))
        });
        methods.add_method(
            "close",
            |_, this, (code, reason): (Option<u16>, Option<String>)| {
                this.0
                    .close(code.unwrap_or(1000), reason.as_deref().unwrap_or(""))
                    .map_err(mlua::Error::RuntimeError)
            },
        );
    }
}

struct LuaModule {
    vm: Arc<Vm>,
    /// The instance's globals.
    env: Table,
    conn: mlua::AnyUserData,
    /// Live timers: id → `{f, once}`.
    timers: Table,
    /// Whether the module defines `on_message` / `outbox_ack`, as of its
    /// last call: the host asks between calls, when reading a shared state
    /// could wait for another instance's call.
    defines_on_message: AtomicBool,
    defines_outbox_ack: AtomicBool,
}

impl LuaModule {
    fn new(factory: &LuaFactory, ctx: ModuleContext) -> mlua::Result<Self> {
        let vm = factory.vm()?;
        // Outside the host's worker: a shared state may be in another
        // instance's call.
        let patience = factory.limits.cpu + Duration::from_secs(1);
        let (env, conn, timers) = vm.guarded_within(patience, |lua| {
            let env = vm.environment()?;
            let timers = globals::install(lua, &env, &ctx, &factory.env, &factory.limits)?;
            env.set("require", sandbox::require(lua, &env)?)?;
            let settings = match &factory.settings {
                serde_json::Value::Null => lua.create_table()?,
                s => match lua.to_value(s)? {
                    Value::Table(t) => t,
                    _ => lua.create_table()?,
                },
            };
            env.set("settings", settings)?;
            let conn = lua.create_userdata(LuaConn(ctx.conn.clone()))?;
            vm.run_module(&env)?;
            Ok((env, conn, timers))
        })?;
        // Setting up the sandbox and loading the module leave garbage
        // behind (about 4 KB of 36); an idle instance should not keep it.
        // A shared state is left to its incremental collector: a full
        // collection per instance would cost the sum of all of them.
        if vm.gate.is_none() {
            vm.lua.gc_collect()?;
        }
        let module = LuaModule {
            vm,
            env,
            conn,
            timers,
            defines_on_message: AtomicBool::new(false),
            defines_outbox_ack: AtomicBool::new(false),
        };
        module.note_hooks();
        Ok(module)
    }

    /// Notes which hooks the module defines now.
    fn note_hooks(&self) {
        let defined = |name| matches!(self.hook(name), Ok(Some(_)));
        self.defines_on_message
            .store(defined("on_message"), Ordering::Relaxed);
        self.defines_outbox_ack
            .store(defined("outbox_ack"), Ordering::Relaxed);
    }

    /// The hook `name` if the module defines it.
    fn hook(&self, name: &str) -> mlua::Result<Option<Function>> {
        self.env.raw_get(name)
    }

    /// `{type = "text" | "binary", data = …}` for a message.
    fn message_table(&self, message: &Message) -> mlua::Result<Table> {
        let names = &self.vm.names;
        let msg = self.vm.lua.create_table_with_capacity(0, 2)?;
        let (kind, data) = match message {
            Message::Text(t) => (&names.text, t.as_bytes()),
            Message::Binary(b) => (&names.binary, b.as_slice()),
        };
        msg.raw_set(&names.type_, kind)?;
        msg.raw_set(&names.data, self.vm.lua.create_string(data)?)?;
        Ok(msg)
    }

    /// Runs `f` alone in the state, under the CPU budget, then notes which
    /// hooks the module defines (a hook may define another).
    fn guarded<R>(&self, f: impl FnOnce(&Lua) -> mlua::Result<R>) -> mlua::Result<R> {
        let result = self.vm.guarded(f);
        self.note_hooks();
        result
    }

    /// Calls the global `name` if the module defines it.
    fn call(&self, name: &str, args: impl mlua::IntoLuaMulti) -> Result<(), ModuleError> {
        let f = self
            .hook(name)
            .map_err(|e| ModuleError::new(describe(&e)))?;
        let Some(f) = f else { return Ok(()) };
        self.guarded(|_| f.call::<()>(args))
            .map_err(|e| ModuleError::new(format!("{name}: {}", describe(&e))))
    }
}

impl ClientModule for LuaModule {
    fn before_connect(&mut self, request: &mut ConnectRequest) -> Result<(), ModuleError> {
        // The instance's settings apply from this attempt on.
        if request.settings.is_object() {
            let err = |e: mlua::Error| ModuleError::new(format!("settings: {}", describe(&e)));
            let settings = self.vm.lua.to_value(&request.settings).map_err(err)?;
            self.env.set("settings", settings).map_err(err)?;
        }
        let f = self
            .hook("before_connect")
            .map_err(|e| ModuleError::new(describe(&e)))?;
        let Some(f) = f else { return Ok(()) };
        let err = |e: mlua::Error| ModuleError::new(format!("before_connect: {}", describe(&e)));
        let client = self.vm.lua.create_table().map_err(err)?;
        let headers = self.vm.lua.create_table().map_err(err)?;
        for (k, v) in &request.headers {
            headers.set(k.as_str(), v.as_str()).map_err(err)?;
        }
        client.set("key", request.key.as_str()).map_err(err)?;
        client.set("url", request.url.as_str()).map_err(err)?;
        client.set("headers", headers).map_err(err)?;
        if let Some((user, password)) = &request.credentials {
            client.set("user", user.as_str()).map_err(err)?;
            client.set("password", password.as_str()).map_err(err)?;
        }
        self.guarded(|_| f.call::<()>(client.clone()))
            .map_err(err)?;
        request.url = client.get::<String>("url").map_err(err)?;
        let headers: Table = client.get("headers").map_err(err)?;
        request.headers.clear();
        for pair in headers.pairs::<String, String>() {
            let (k, v) = pair.map_err(err)?;
            request.headers.insert(k, v);
        }
        Ok(())
    }

    fn before_close(&mut self, _conn: &ConnHandle) -> Result<bool, ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(format!("before_close: {}", describe(&e)));
        let f = self.hook("before_close").map_err(err)?;
        let Some(f) = f else { return Ok(false) };
        let conn = self.conn.clone();
        let waits: Value = self.guarded(|_| f.call(conn)).map_err(err)?;
        Ok(matches!(waits, Value::Boolean(true)))
    }

    fn on_open(&mut self, _conn: &ConnHandle) -> Result<(), ModuleError> {
        self.call("on_open", self.conn.clone())
    }

    fn on_message(&mut self, _conn: &ConnHandle, message: &Message) -> Result<(), ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(format!("on_message: {}", describe(&e)));
        let f: Option<Function> = self.env.raw_get(&self.vm.names.on_message).map_err(err)?;
        let Some(f) = f else { return Ok(()) };
        let msg = self.message_table(message).map_err(err)?;
        // The hooks are noted after every other hook, which is where a
        // module defines its hooks, not per message. (`outbox_ack` is read
        // once, when the client starts; an `on_message` that removes itself
        // costs at most a call that does nothing.)
        self.vm
            .guarded(|_| f.call::<()>((self.conn.clone(), msg)))
            .map_err(err)
    }

    fn on_error(
        &mut self,
        _conn: &ConnHandle,
        kind: &str,
        description: &str,
    ) -> Result<(), ModuleError> {
        self.call(
            "on_error",
            (self.conn.clone(), kind.to_string(), description.to_string()),
        )
    }

    fn on_close(&mut self, _conn: &ConnHandle, code: u16, reason: &str) -> Result<(), ModuleError> {
        self.call("on_close", (self.conn.clone(), code, reason.to_string()))
    }

    fn handles_messages(&self) -> bool {
        self.defines_on_message.load(Ordering::Relaxed) || self.acks_outbox()
    }

    fn acks_outbox(&self) -> bool {
        self.defines_outbox_ack.load(Ordering::Relaxed)
    }

    fn outbox_ack(
        &mut self,
        _conn: &ConnHandle,
        message: &Message,
    ) -> Result<Vec<String>, ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(format!("outbox_ack: {}", describe(&e)));
        let f = self.hook("outbox_ack").map_err(err)?;
        let Some(f) = f else { return Ok(Vec::new()) };
        let msg = self.message_table(message).map_err(err)?;
        let acked: Value = self.guarded(|_| f.call(msg)).map_err(err)?;
        let one = |v: Value| -> Result<Option<String>, ModuleError> {
            Ok(match v {
                Value::Nil | Value::Boolean(false) => None,
                Value::Integer(i) => Some(i.to_string()),
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) => Some(s.to_string_lossy()),
                other => {
                    return Err(ModuleError::new(format!(
                        "outbox_ack: returned a {}; return the acknowledged message id (a string or an integer), a list of them, or nil",
                        other.type_name()
                    )))
                }
            })
        };
        match acked {
            Value::Table(list) => {
                let mut ids = Vec::new();
                for v in list.sequence_values::<Value>() {
                    ids.extend(one(v.map_err(err)?)?);
                }
                Ok(ids)
            }
            v => Ok(one(v)?.into_iter().collect()),
        }
    }

    fn gate(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.vm.gate.clone()
    }

    fn on_timer(&mut self, _conn: &ConnHandle, id: u64) -> Result<bool, ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(describe(&e));
        let timers = &self.timers;
        let entry: Option<Table> = timers.get(id).map_err(err)?;
        let Some(entry) = entry else { return Ok(false) };
        let f: Function = entry.get("f").map_err(err)?;
        let once: bool = entry.get("once").map_err(err)?;
        if once {
            timers.set(id, Value::Nil).map_err(err)?;
        }
        self.guarded(|_| f.call::<()>(()))
            .map_err(|e| ModuleError::new(format!("timer: {}", describe(&e))))?;
        Ok(!once)
    }
}
