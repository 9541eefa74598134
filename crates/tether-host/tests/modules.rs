//! Lua modules on their own: the sandbox, the globals, before_connect, and
//! config errors for broken modules.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::Workspace;
use tether_host::modules::lua::LuaFactory;
use tether_host::modules::{
    ConnHandle, ConnectRequest, ModuleContext, ModuleFactory, TimerRequest,
};

struct Harness {
    emitted: Arc<Mutex<Vec<Value>>>,
    timers: tokio::sync::mpsc::UnboundedReceiver<TimerRequest>,
    module: Box<dyn tether_host::ClientModule>,
    conn: ConnHandle,
}

fn load(ws: &Workspace, source: &str) -> Result<Harness, String> {
    ws.write("modules/m.lua", source);
    let emitted: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = emitted.clone();
    let (tx, timers) = tokio::sync::mpsc::unbounded_channel();
    let conn = ConnHandle::new("k1");
    let ctx = ModuleContext {
        key: "k1".into(),
        conn: conn.clone(),
        emit: Arc::new(move |v| sink.lock().unwrap().push(v)),
        clients: Arc::new(|key| (key == "other").then(|| ConnHandle::new("other"))),
        timers: tx,
    };
    let factory = LuaFactory::new(source.to_string(), ws.dir.join("modules/m.lua"))
        .cpu_limit(Duration::from_millis(200))
        .env(vec![
            "MODULE_TEST_SECRET".into(),
            "MODULE_TEST_UNSET".into(),
        ]);
    let module = factory.create(ctx).map_err(|e| e.message)?;
    Ok(Harness {
        emitted,
        timers,
        module,
        conn,
    })
}

#[test]
fn sandbox_has_no_io_os_execute_debug_or_load() {
    let ws = Workspace::new("sandbox");
    let h = load(
        &ws,
        r#"
        emit({ io = type(io), debug = type(debug), load = type(load), dofile = type(dofile),
               execute = type(os.execute), getenv = type(os.getenv), time = type(os.time),
               string = type(string.format) })
        "#,
    )
    .unwrap();
    assert_eq!(
        h.emitted.lock().unwrap()[0],
        json!({"io": "nil", "debug": "nil", "load": "nil", "dofile": "nil", "execute": "nil",
               "getenv": "nil", "time": "function", "string": "function"})
    );
}

#[test]
fn require_stays_in_the_module_folder() {
    let ws = Workspace::new("require");
    std::fs::write(ws.dir.join("secret.lua"), "return 42").unwrap();
    ws.write("modules/helper.lua", "return { answer = 41 }");
    let h = load(&ws, r#"emit(require("helper").answer)"#).unwrap();
    assert_eq!(h.emitted.lock().unwrap()[0], json!(41));
    let err = load(&ws, r#"require("../secret")"#).err().unwrap();
    assert!(err.contains("letters, digits"), "{err}");
    let err = load(&ws, r#"require("nothere")"#).err().unwrap();
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn json_log_env_clients_and_before_connect() {
    let ws = Workspace::new("globals");
    std::env::set_var("MODULE_TEST_SECRET", "s3");
    let mut h = load(
        &ws,
        r#"
        local v = json.decode('{"a":[1,2,{"b":true}]}')
        emit({ a2 = v.a[2], b = v.a[3].b, text = json.encode({ x = 1 }) })
        log.info("hello from lua")
        emit({ secret = env("MODULE_TEST_SECRET"), missing = env("MODULE_TEST_UNSET") == nil })
        emit({ other = clients.get("other").key, none = clients.get("ghost") == nil })
        function before_connect(client)
          client.url = client.url .. "?token=" .. env("MODULE_TEST_SECRET")
          client.headers["X-Key"] = client.key
          client.headers["Drop"] = nil
        end
        "#,
    )
    .unwrap();
    let emitted = h.emitted.lock().unwrap().clone();
    assert_eq!(emitted[0], json!({"a2": 2, "b": true, "text": "{\"x\":1}"}));
    assert_eq!(emitted[1], json!({"secret": "s3", "missing": true}));
    assert_eq!(emitted[2], json!({"other": "other", "none": true}));
    let mut request = ConnectRequest {
        key: "k1".into(),
        url: "ws://h/".into(),
        headers: [("Drop".to_string(), "x".to_string())]
            .into_iter()
            .collect(),
        credentials: None,
        settings: serde_json::json!({}),
    };
    h.module.before_connect(&mut request).unwrap();
    assert_eq!(request.url, "ws://h/?token=s3");
    assert_eq!(request.headers.get("X-Key").map(String::as_str), Some("k1"));
    assert!(!request.headers.contains_key("Drop"));
}

#[test]
fn handlers_report_errors_with_lines_and_limits() {
    let ws = Workspace::new("errors");
    let mut h = load(
        &ws,
        "function on_close(conn, code, reason)\n  error('closing ' .. code)\nend\nfunction on_open(conn)\n  while true do end\nend\n",
    )
    .unwrap();
    let e = h.module.on_close(&h.conn, 1001, "bye").unwrap_err();
    assert!(e.message.contains("m.lua:2: closing 1001"), "{}", e.message);
    let started = std::time::Instant::now();
    let e = h.module.on_open(&h.conn).unwrap_err();
    assert!(
        e.message
            .contains("CPU limit exceeded: a hook call may run for 200 ms"),
        "{}",
        e.message
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The module is still usable afterwards.
    let e = h.module.on_close(&h.conn, 1000, "").unwrap_err();
    assert!(e.message.contains("closing 1000"));
    // Sending without a connection is a Lua error, not a crash.
    let mut h = load(&ws, "function on_open(conn) conn:send('x') end").unwrap();
    let e = h.module.on_open(&h.conn).unwrap_err();
    assert!(e.message.contains("not open"), "{}", e.message);
}

#[test]
fn timers_are_requested_and_fire() {
    let ws = Workspace::new("timers");
    let mut h = load(
        &ws,
        r#"
        local n = 0
        once = timer.after(50, function() emit("once") end)
        every = timer.every(10, function() n = n + 1; emit(n) end)
        "#,
    )
    .unwrap();
    let first = h.timers.try_recv().unwrap();
    let second = h.timers.try_recv().unwrap();
    assert_eq!(
        (first.delay, first.every),
        (Duration::from_millis(50), None)
    );
    assert_eq!(second.every, Some(Duration::from_millis(10)));
    assert!(
        !h.module.on_timer(&h.conn, first.id).unwrap(),
        "one-shot timers end after firing"
    );
    assert!(
        !h.module.on_timer(&h.conn, first.id).unwrap(),
        "and fire only once"
    );
    assert!(h.module.on_timer(&h.conn, second.id).unwrap());
    assert!(h.module.on_timer(&h.conn, second.id).unwrap());
    assert_eq!(
        *h.emitted.lock().unwrap(),
        vec![json!("once"), json!(1), json!(2)]
    );
}

#[test]
fn memory_limit_stops_a_hog() {
    let ws = Workspace::new("memory");
    let mut h = load(
        &ws,
        "function on_open(conn)\n  local t = {}\n  for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end\nend\n",
    )
    .unwrap();
    let e = h.module.on_open(&h.conn).unwrap_err();
    assert!(
        e.message.contains("memory") || e.message.contains("CPU limit"),
        "{}",
        e.message
    );
}

#[test]
fn config_rejects_lua_syntax_errors_with_file_and_line() {
    let ws = Workspace::new("syntax");
    ws.write(
        "modules/bad.lua",
        "function on_open(conn)\n  if then\nend\n",
    );
    ws.write(
        "tether.toml",
        "[[client_type]]\nname = \"x\"\nmodule = \"modules/bad.lua\"\n",
    );
    let err = tether_host::Loaded::load(&ws.dir.join("tether.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tether.toml:3"), "{err}");
    assert!(err.contains("bad.lua:2"), "{err}");
}

#[test]
fn json_decode_builds_every_kind_of_value_and_round_trips() {
    let ws = Workspace::new("json");
    let h = load(
        &ws,
        r#"
        local text = '{"i":-7,"big":18446744073709551615,"f":1.5,"s":"h\\u00e9\\n","t":true,'
          .. '"n":null,"empty":[],"nested":{"list":[1,[2,3],{"k":"v"}],"obj":{}},"dup":1,"dup":2}'
        local v = json.decode(text)
        emit({
          i = v.i, i_type = math.type(v.i), big = v.big > 1.8e19, f = v.f, s = v.s, t = v.t,
          null_is_json_null = v.n == json.null, empty_len = #v.empty,
          third = v.nested.list[3].k, inner = v.nested.list[2][2], dup = v.dup,
          again = json.encode(json.decode('{"a":[],"b":{},"c":[1,null]}')),
        })
        for _, bad in ipairs({ "", "{", "[1,]", '{"a":1} x', "nul", '"\\x"' }) do
          local ok, err = pcall(json.decode, bad)
          emit({ ok = ok, err = tostring(err):match("json.decode: [^\n]*") ~= nil })
        end
        local deep = string.rep("[", 200) .. string.rep("]", 200)
        local ok, err = pcall(json.decode, deep)
        emit({ deep_ok = ok, deep = tostring(err):match("recursion limit") ~= nil })
        "#,
    )
    .unwrap();
    let got = h.emitted.lock().unwrap().clone();
    assert_eq!(
        got[0],
        json!({"i": -7, "i_type": "integer", "big": true, "f": 1.5, "s": "hé\n", "t": true,
               "null_is_json_null": true, "empty_len": 0, "third": "v", "inner": 3, "dup": 2,
               "again": "{\"a\":[],\"b\":{},\"c\":[1,null]}"})
    );
    for bad in &got[1..7] {
        assert_eq!(bad, &json!({"ok": false, "err": true}));
    }
    assert_eq!(got[7], json!({"deep_ok": false, "deep": true}));
}
