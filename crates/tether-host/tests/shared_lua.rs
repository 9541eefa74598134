//! `lua_state = "shared"`: every instance of a type runs in one Lua state,
//! each in an environment of its own. Asserts what is shared and what is
//! not, that a removed instance leaves nothing behind in the state, and
//! that one instance's long call delays its siblings without failing them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::{start_host, wait_event, EchoServer, Workspace};
use tether_host::modules::lua::LuaFactory;
use tether_host::modules::{ConnHandle, ModuleContext, ModuleFactory};
use tether_host::ClientModule;

const COUNTING: &str = r#"
local n = 0
marks = (marks or 0) + 1
string.tether_marks = (string.tether_marks or 0) + 1
emit({ key = settings.name, global_marks = marks, library_marks = string.tether_marks,
       g_is_env = _G == _ENV })
function on_message(conn, msg)
  n = n + 1
  emit({ key = conn.key, n = n })
end
"#;

type Emitted = Arc<Mutex<Vec<Value>>>;

fn instance(factory: &LuaFactory, key: &str, emitted: &Emitted) -> Box<dyn ClientModule> {
    try_instance(factory, key, emitted).unwrap()
}

fn try_instance(
    factory: &LuaFactory,
    key: &str,
    emitted: &Emitted,
) -> Result<Box<dyn ClientModule>, String> {
    let sink = emitted.clone();
    let (timers, _) = tokio::sync::mpsc::unbounded_channel();
    let ctx = ModuleContext {
        key: key.into(),
        conn: ConnHandle::new(key),
        emit: Arc::new(move |v| sink.lock().unwrap().push(v)),
        clients: Arc::new(|_| None),
        timers,
    };
    factory.create(ctx).map_err(|e| e.message)
}

fn factory(ws: &Workspace, source: &str, shared: bool) -> LuaFactory {
    ws.write("modules/m.lua", source);
    LuaFactory::new(source.to_string(), ws.dir.join("modules/m.lua"))
        .settings(json!({ "name": "from-type" }))
        .shared_state(shared)
}

fn message(text: &str) -> tether::Message {
    tether::Message::Text(text.into())
}

#[test]
fn instances_share_the_libraries_but_not_their_globals() {
    let ws = Workspace::new("shared-globals");
    for shared in [false, true] {
        let f = factory(&ws, COUNTING, shared);
        let emitted: Emitted = Arc::default();
        let mut a = instance(&f, "a", &emitted);
        let mut b = instance(&f, "b", &emitted);
        for _ in 0..3 {
            a.on_message(&ConnHandle::new("a"), &message("x")).unwrap();
        }
        b.on_message(&ConnHandle::new("b"), &message("x")).unwrap();
        let got = emitted.lock().unwrap().clone();
        // A module's globals are its instance's, in either mode; the
        // library tables are the state's, so only a shared state shows
        // one instance's change to `string` to the other.
        let second_library_marks = if shared { 2 } else { 1 };
        assert_eq!(
            got,
            vec![
                json!({"key": "from-type", "global_marks": 1, "library_marks": 1, "g_is_env": true}),
                json!({"key": "from-type", "global_marks": 1, "library_marks": second_library_marks, "g_is_env": true}),
                json!({"key": "a", "n": 1}),
                json!({"key": "a", "n": 2}),
                json!({"key": "a", "n": 3}),
                json!({"key": "b", "n": 1}),
            ],
            "shared = {shared}"
        );
        assert_eq!(f.shared_memory().is_some(), shared);
    }
}

#[test]
fn a_removed_instance_leaves_nothing_in_the_shared_state() {
    let ws = Workspace::new("shared-leak");
    ws.write(
        "modules/helper.lua",
        "local t = {} for i = 1, 50 do t[i] = i end return t",
    );
    let source = r#"
local helper = require("helper")
local big = {}
for i = 1, 200 do big[i] = "row " .. i end
timer.every(1000, function() emit(#big + #helper) end)
timer.after(50, function() end)
function on_message(conn, msg) emit(#big) end
"#;
    let f = factory(&ws, source, true);
    let emitted: Emitted = Arc::default();
    let first = instance(&f, "first", &emitted);
    let base = f.shared_memory().unwrap();
    let one = {
        let extra = instance(&f, "extra", &emitted);
        let with_one = f.shared_memory().unwrap();
        drop(extra);
        with_one - base
    };
    // An instance with 200 strings, a table of 50, two timers: kilobytes.
    assert!(one > 8_000, "one instance took only {one} bytes");
    for i in 0..300 {
        let mut m = instance(&f, &format!("i{i}"), &emitted);
        m.on_message(&ConnHandle::new("x"), &message("x")).unwrap();
    }
    let after = f.shared_memory().unwrap();
    // 300 instances kept would be 300 × `one`; allow less than one.
    assert!(
        after < base + one,
        "300 dropped instances left {} bytes (one instance is {one})",
        after - base
    );
    drop(first);
}

fn config(echo_url: &str) -> String {
    format!(
        r#"
[[client_type]]
name = "feed"
module = "modules/feed.lua"
lua_state = "shared"
cpu_limit_ms = 300
[client_type.defaults]
url = "{echo_url}"
auto_connect = true
[client_type.defaults.keepalive]
ping_interval_secs = 0
"#
    )
}

/// A host with two open instances, `spinner` and `counter`, of one shared
/// type running `module`, and its event stream with nothing waiting.
struct Scene {
    host: Arc<tether_host::Host>,
    app: axum::Router,
    events: tokio::sync::broadcast::Receiver<Arc<tether_host::events::HostEvent>>,
    _echo: EchoServer,
    _ws: Workspace,
}

async fn scene(name: &str, module: &str) -> Scene {
    let echo = EchoServer::start().await;
    let ws = Workspace::new(name);
    ws.write("tether.toml", &config(&echo.url()))
        .write("modules/feed.lua", module);
    let (host, app) = start_host(&ws.config(), "sqlite::memory:").await;
    let mut events = host.events().subscribe();
    for key in ["spinner", "counter"] {
        let body = json!({"type": "feed", "key": key});
        let (s, v) = support::call(&app, "POST", "/api/clients", Some(body)).await;
        assert_eq!(s, 201, "{v}");
    }
    support::wait_state(&app, "spinner", "open").await;
    support::wait_state(&app, "counter", "open").await;
    while events.try_recv().is_ok() {}
    Scene {
        host,
        app,
        events,
        _echo: echo,
        _ws: ws,
    }
}

const FEED: &str = r#"
function on_message(conn, msg)
  if msg.data == "spin" then
    while true do end
  end
  emit({ n = tonumber(msg.data) })
end
"#;

const SPINS: usize = 6;

#[test]
fn a_sibling_spending_its_budget_delays_but_does_not_fail_the_others() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let Scene {
            host,
            app,
            mut events,
            _echo,
            _ws,
        } = scene("shared-busy", FEED).await;
        // Six calls that each spend the whole 300 ms budget, 1.8 s in all,
        // while the sibling gets 30 messages. Its calls wait for the state
        // in turn with the spinner's (the gate is first come, first
        // served), and its limit (300 ms + 1 s grace) counts from when it
        // has the state.
        for _ in 0..SPINS {
            host.send("spinner", &message("spin")).unwrap();
        }
        for n in 1..=30 {
            host.send("counter", &message(&n.to_string())).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut got = Vec::new();
        let mut limits = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while got.len() < 30 || limits < SPINS {
            let e = tokio::time::timeout_at(deadline, events.recv())
                .await
                .unwrap_or_else(|_| panic!("got {got:?} and {limits} CPU limit errors"))
                .unwrap();
            match (e.client.as_str(), e.body["event"].as_str()) {
                ("counter", Some("module")) => got.push(e.body["data"]["n"].as_i64().unwrap()),
                ("counter", Some("error")) => panic!("the sibling failed: {}", e.body),
                ("spinner", Some("error")) => {
                    let m = e.body["message"].as_str().unwrap_or("");
                    assert!(m.contains("CPU limit exceeded"), "{m}");
                    limits += 1;
                }
                _ => {}
            }
        }
        assert_eq!(got, (1..=30).collect::<Vec<_>>(), "once each, in order");
        let (_, v) = support::call(&app, "GET", "/api/clients/counter", None).await;
        assert_eq!(v["state"], "open", "{v}");
        // Both keep working after.
        host.send("counter", &message("31")).unwrap();
        wait_event(&mut events, "counter", |b| {
            b["event"] == "module" && b["data"]["n"] == 31
        })
        .await;
        shuts_down_in_time(&host).await;
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
}

/// The host shuts down within its bound, whatever its Lua state is doing.
async fn shuts_down_in_time(host: &tether_host::Host) {
    let started = std::time::Instant::now();
    host.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}

const STUCK: &str = r#"
function on_message(conn, msg)
  if msg.data == "stuck" then
    -- Lua patterns backtrack: this runs for seconds inside one C call,
    -- where the CPU budget cannot stop it.
    string.find(string.rep("a", 3000), ".-.-.-.-b")
  end
  emit({ n = tonumber(msg.data) })
end
"#;

/// What sharing costs when a call cannot be interrupted: the sibling's
/// hook waits for the state, without holding a thread, and fails with a
/// message that says why once its limit has passed; it never hangs.
#[test]
fn a_sibling_stuck_in_c_fails_the_others_with_a_clear_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let Scene {
                app,
                host,
                mut events,
                _echo,
                _ws,
            } = scene("shared-stuck", STUCK).await;
            host.send("spinner", &message("stuck")).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            host.send("counter", &message("1")).unwrap();
            let failed = wait_event(&mut events, "counter", |b| b["event"] == "error").await;
            let m = failed["message"].as_str().unwrap_or("");
            assert!(
                m.starts_with(
                    "on_message could not run: the type's shared Lua state stayed busy for 1300 ms"
                ),
                "{failed}"
            );
            let v = support::wait_state(&app, "counter", "failed").await;
            assert!(
                v["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("stayed busy")),
                "{v}"
            );
            // The API answers meanwhile, and shutdown is not held by the
            // call still stuck in C.
            let (s, _) = support::call(&app, "GET", "/api/clients", None).await;
            assert_eq!(s, 200);
            shuts_down_in_time(&host).await;
        })
    }));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.unwrap_or_else(|p| std::panic::resume_unwind(p));
}

#[test]
fn memory_limit_mb_bounds_the_state_and_is_checked() {
    let ws = Workspace::new("memory-limit");
    ws.write("modules/m.lua", "function on_open(conn) end");
    let bad = |value: &str| {
        tether_host::Loaded::parse(
            &format!("[[client_type]]\nname = \"t\"\nmodule = \"modules/m.lua\"\nmemory_limit_mb = {value}\n"),
            "t.toml",
            &ws.dir,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    for value in ["0", "65537"] {
        let e = bad(value);
        assert!(
            e.contains("t.toml:4") && e.contains("memory_limit_mb") && e.contains("1 to 65536"),
            "{e}"
        );
    }
    // 4 MiB of strings: over a 2 MiB state, within an 8 MiB one; in a
    // shared state the limit is the type's, so two instances of 3 MiB
    // each do not fit in 4 MiB.
    let grow = r#"big = {} for i = 1, 16 do big[i] = string.rep("x", 1 << 18) .. i end"#;
    for (mb, shared, instances, fits) in [
        (2, false, 1, false),
        (8, false, 1, true),
        (8, false, 2, true),
        (6, true, 1, true),
        (6, true, 2, false),
    ] {
        ws.write("modules/m.lua", grow);
        let f = LuaFactory::new(grow.to_string(), ws.dir.join("modules/m.lua"))
            .memory_limit(mb << 20)
            .shared_state(shared);
        let emitted: Emitted = Arc::default();
        let made: Vec<_> = (0..instances)
            .map(|i| try_instance(&f, &format!("k{i}"), &emitted))
            .collect();
        // (Kept until here: a dropped instance's memory is the state's again.)
        let all_fit = made.iter().all(Result::is_ok);
        let outcome: Vec<_> = made.iter().map(|r| r.as_ref().map(|_| ())).collect();
        assert_eq!(
            all_fit, fits,
            "{mb} MiB, shared {shared}, {instances}: {outcome:?}"
        );
        if !fits {
            let e = made.iter().find_map(|r| r.as_ref().err()).unwrap();
            assert!(
                e.contains("out of memory") || e.contains("not enough memory"),
                "{e}"
            );
        }
    }
}
