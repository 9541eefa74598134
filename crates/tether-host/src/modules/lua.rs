//! Lua 5.4 handler modules, sandboxed.
//!
//! Each instance gets its own Lua state. The state has the `string`, `table`,
//! `math`, `utf8` and `coroutine` libraries, an `os` with only `time`,
//! `clock`, `date` and `difftime`, and no `io`, `debug`, `load`, `dofile` or
//! `loadfile`. `require` loads `NAME.lua` from the module's own folder only.
//! Every hook call runs under a CPU limit (an instruction-count hook checks
//! the deadline) and the state under a memory limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlua::{
    Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, UserData, Value, VmState,
};

use super::{
    ClientModule, ConnHandle, ConnectRequest, Message, ModuleContext, ModuleError, ModuleFactory,
    TimerRequest,
};

/// CPU time one hook call may take.
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_millis(1000);
/// Memory one Lua state may use.
pub const MEMORY_LIMIT: usize = 64 << 20;

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
    cpu_limit: Duration,
}

impl LuaFactory {
    /// A factory for the module at `path` with this source.
    pub fn new(source: String, path: PathBuf) -> Self {
        LuaFactory {
            source,
            path,
            cpu_limit: DEFAULT_CPU_LIMIT,
        }
    }

    /// Sets the CPU limit per hook call.
    pub fn cpu_limit(mut self, limit: Duration) -> Self {
        self.cpu_limit = limit;
        self
    }
}

impl ModuleFactory for LuaFactory {
    fn create(&self, ctx: ModuleContext) -> Result<Box<dyn ClientModule>, ModuleError> {
        LuaModule::new(&self.source, &self.path, self.cpu_limit, ctx)
            .map(|m| Box::new(m) as Box<dyn ClientModule>)
            .map_err(|e| ModuleError::new(describe(&e)))
    }
}

/// A connection handle as Lua userdata: `conn.key`, `conn.state`,
/// `conn:send(text)`, `conn:send_binary(bytes)`, `conn:close(code, reason)`.
struct LuaConn(ConnHandle);

impl UserData for LuaConn {
    fn add_fields<F: mlua::UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("key", |_, this| Ok(this.0.key().to_string()));
        fields.add_field_method_get("state", |_, this| Ok(this.0.state()));
    }

    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("send", |_, this, text: mlua::String| {
            let text = text.to_str()?.to_string();
            this.0.send_text(&text).map_err(mlua::Error::RuntimeError)
        });
        methods.add_method("send_binary", |_, this, data: mlua::String| {
            this.0
                .send_binary(&data.as_bytes())
                .map_err(mlua::Error::RuntimeError)
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
    lua: Lua,
    conn: mlua::AnyUserData,
    deadline: Arc<Mutex<Option<Instant>>>,
    cpu_limit: Duration,
}

const TIMERS: &str = "tether.timers";
const LOADED: &str = "tether.loaded";

impl LuaModule {
    fn new(
        source: &str,
        path: &Path,
        cpu_limit: Duration,
        ctx: ModuleContext,
    ) -> mlua::Result<Self> {
        let libs = StdLib::TABLE
            | StdLib::STRING
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::COROUTINE
            | StdLib::OS;
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        lua.set_memory_limit(MEMORY_LIMIT)?;
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let hook_deadline = deadline.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(1000),
            move |_, _| {
                let over = hook_deadline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|d| Instant::now() >= d);
                if over {
                    Err(mlua::Error::RuntimeError(format!(
                        "handler exceeded its CPU limit of {} ms",
                        cpu_limit.as_millis()
                    )))
                } else {
                    Ok(VmState::Continue)
                }
            },
        );
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        install_sandbox(&lua, dir)?;
        install_globals(&lua, &ctx)?;
        let conn = lua.create_userdata(LuaConn(ctx.conn.clone()))?;
        let module = LuaModule {
            lua,
            conn,
            deadline,
            cpu_limit,
        };
        module.guarded(|lua| {
            lua.load(source)
                .set_name(format!("@{}", path.display()))
                .exec()
        })?;
        Ok(module)
    }

    /// Runs `f` under the CPU limit.
    fn guarded<R>(&self, f: impl FnOnce(&Lua) -> mlua::Result<R>) -> mlua::Result<R> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + self.cpu_limit);
        let result = f(&self.lua);
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
        result
    }

    /// Calls the global `name` if the module defines it.
    fn call(&self, name: &str, args: impl mlua::IntoLuaMulti) -> Result<(), ModuleError> {
        let f: Option<Function> = self
            .lua
            .globals()
            .get(name)
            .map_err(|e| ModuleError::new(describe(&e)))?;
        let Some(f) = f else { return Ok(()) };
        self.guarded(|_| f.call::<()>(args))
            .map_err(|e| ModuleError::new(format!("{name}: {}", describe(&e))))
    }
}

fn install_sandbox(lua: &Lua, dir: PathBuf) -> mlua::Result<()> {
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
    lua.set_named_registry_value(LOADED, lua.create_table()?)?;
    let require = lua.create_function(move |lua, name: String| {
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !valid {
            return Err(mlua::Error::RuntimeError(format!(
                "require({name:?}): module names are letters, digits, '_' and '.' only"
            )));
        }
        let loaded: Table = lua.named_registry_value(LOADED)?;
        if let Some(v) = loaded.get::<Option<Value>>(name.as_str())? {
            return Ok(v);
        }
        let path = dir.join(format!("{}.lua", name.replace('.', "/")));
        let source = std::fs::read_to_string(&path).map_err(|e| {
            mlua::Error::RuntimeError(format!(
                "require({name:?}): cannot read {}: {e}",
                path.display()
            ))
        })?;
        let value: Value = lua
            .load(&source)
            .set_name(format!("@{}", path.display()))
            .call(())?;
        let value = if value.is_nil() {
            Value::Boolean(true)
        } else {
            value
        };
        loaded.set(name.as_str(), value.clone())?;
        Ok(value)
    })?;
    g.set("require", require)?;
    Ok(())
}

fn install_globals(lua: &Lua, ctx: &ModuleContext) -> mlua::Result<()> {
    let g = lua.globals();

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
        lua.create_function(|lua, s: String| {
            let value: serde_json::Value = serde_json::from_str(&s)
                .map_err(|e| mlua::Error::RuntimeError(format!("json.decode: {e}")))?;
            lua.to_value(&value)
        })?,
    )?;
    g.set("json", json)?;

    let log = lua.create_table()?;
    let key = ctx.key.clone();
    log.set(
        "info",
        lua.create_function(move |_, m: String| {
            tracing::info!(target: "tether::module", client = %key, "{m}");
            Ok(())
        })?,
    )?;
    let key = ctx.key.clone();
    log.set(
        "warn",
        lua.create_function(move |_, m: String| {
            tracing::warn!(target: "tether::module", client = %key, "{m}");
            Ok(())
        })?,
    )?;
    let key = ctx.key.clone();
    log.set(
        "error",
        lua.create_function(move |_, m: String| {
            tracing::error!(target: "tether::module", client = %key, "{m}");
            Ok(())
        })?,
    )?;
    g.set("log", log)?;

    let emit = ctx.emit.clone();
    g.set(
        "emit",
        lua.create_function(move |lua, v: Value| {
            let value: serde_json::Value = lua.from_value(v)?;
            emit(value);
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

    g.set(
        "env",
        lua.create_function(|_, name: String| Ok(std::env::var(name).ok()))?,
    )?;

    lua.set_named_registry_value(TIMERS, lua.create_table()?)?;
    let next_id = Arc::new(AtomicU64::new(1));
    let timer = lua.create_table()?;
    for (name, repeat) in [("after", false), ("every", true)] {
        let tx = ctx.timers.clone();
        let next_id = next_id.clone();
        timer.set(
            name,
            lua.create_function(move |lua, (ms, f): (u64, Function)| {
                if repeat && ms == 0 {
                    return Err(mlua::Error::RuntimeError(
                        "timer.every needs an interval of at least 1 ms".into(),
                    ));
                }
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let timers: Table = lua.named_registry_value(TIMERS)?;
                let entry = lua.create_table()?;
                entry.set("f", f)?;
                entry.set("once", !repeat)?;
                timers.set(id, entry)?;
                let d = Duration::from_millis(ms);
                let _ = tx.send(TimerRequest {
                    id,
                    delay: d,
                    every: repeat.then_some(d),
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
    g.set("timer", timer)?;
    Ok(())
}

impl ClientModule for LuaModule {
    fn before_connect(&mut self, request: &mut ConnectRequest) -> Result<(), ModuleError> {
        let f: Option<Function> = self
            .lua
            .globals()
            .get("before_connect")
            .map_err(|e| ModuleError::new(describe(&e)))?;
        let Some(f) = f else { return Ok(()) };
        let err = |e: mlua::Error| ModuleError::new(format!("before_connect: {}", describe(&e)));
        let client = self.lua.create_table().map_err(err)?;
        let headers = self.lua.create_table().map_err(err)?;
        for (k, v) in &request.headers {
            headers.set(k.as_str(), v.as_str()).map_err(err)?;
        }
        client.set("key", request.key.as_str()).map_err(err)?;
        client.set("url", request.url.as_str()).map_err(err)?;
        client.set("headers", headers).map_err(err)?;
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

    fn on_open(&mut self, _conn: &ConnHandle) -> Result<(), ModuleError> {
        self.call("on_open", self.conn.clone())
    }

    fn on_message(&mut self, _conn: &ConnHandle, message: &Message) -> Result<(), ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(describe(&e));
        let msg = self.lua.create_table().map_err(err)?;
        let (kind, data) = match message {
            Message::Text(t) => ("text", t.as_bytes()),
            Message::Binary(b) => ("binary", b.as_slice()),
        };
        msg.set("type", kind).map_err(err)?;
        msg.set("data", self.lua.create_string(data).map_err(err)?)
            .map_err(err)?;
        self.call("on_message", (self.conn.clone(), msg))
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

    fn on_timer(&mut self, _conn: &ConnHandle, id: u64) -> Result<bool, ModuleError> {
        let err = |e: mlua::Error| ModuleError::new(describe(&e));
        let timers: Table = self.lua.named_registry_value(TIMERS).map_err(err)?;
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
