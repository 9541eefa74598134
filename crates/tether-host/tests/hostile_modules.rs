//! Modules written to freeze, starve or rob the host. Each case runs a
//! hostile `on_message` on one client while another client keeps echoing,
//! and asserts three things: the error event the hostile client gets, that
//! the other client kept working meanwhile, and that the host shut down
//! within its bound afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{start_host, wait_event, EchoServer, Workspace};
use tether_host::events::HostEvent;
use tether_host::Host;

const HOSTILE: &str = r#"
local cases = {}
cases.coroutine = function()
  coroutine.wrap(function() while true do end end)()
end
cases.nested_coroutine = function()
  coroutine.wrap(function()
    coroutine.wrap(function() while true do end end)()
  end)()
end
cases.pcall_loop = function()
  while true do pcall(function() while true do end end) end
end
cases.xpcall_handler_loop = function()
  while true do
    xpcall(function() error("x") end, function() while true do end end)
  end
end
cases.resume_loop = function()
  while true do
    coroutine.resume(coroutine.create(function() while true do end end))
  end
end
cases.error_object_loops = function()
  error(setmetatable({}, { __tostring = function() while true do end end }))
end
cases.tostring_of_error_in_pcall = function()
  local e = setmetatable({}, { __tostring = function() while true do end end })
  while true do pcall(tostring, e) end
end
cases.gc_metamethod = function()
  setmetatable({}, { __gc = function() while true do end end })
end
cases.string_rep_bomb = function()
  local s = string.rep("x", 1 << 30)
  emit(#s)
end
cases.table_growth = function()
  local t = {}
  while true do t[#t + 1] = string.rep("y", 1 << 20) .. #t end
end
cases.deep_recursion = function()
  -- Wide frames reach Lua's stack limit in few calls, well inside the budget.
  local function f(a, b, c, d, e, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u)
    return 1 + f(a, b, c, d, e, g, h, i, j, k, l, m, n, o, p, q, r, s, t, u)
  end
  f(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
end
cases.c_function_stuck = function()
  -- Lua patterns backtrack: this runs for seconds inside one C call.
  string.find(string.rep("a", 3000), ".-.-.-.-b")
end
cases.close_metamethod_loops = function()
  local guard <close> = setmetatable({}, { __close = function() while true do end end })
  while true do end
end
cases.env_admin_token = function()
  emit(env("TETHER_ADMIN_TOKEN"))
end
cases.env_not_listed = function()
  emit(env("HOME"))
end
cases.env_listed = function()
  emit({ listed = env("HOSTILE_ALLOWED") })
end
cases.timer_every_zero = function()
  timer.every(0, function() end)
end
cases.timer_flood = function()
  for i = 1, 100 do timer.every(1000, function() end) end
end
cases.timer_extremes = function()
  -- Far in the future: accepted, never fire, and do not hold shutdown.
  timer.after(1e15, function() emit("fired") end)
  timer.every(2^62, function() emit("fired") end)
  -- A fraction is rounded up: accepted.
  local id = timer.after(10.5, function() end)
  timer.cancel(id)
  local answers = {}
  for i, ms in ipairs({ -1, 0/0, math.huge, 1e300, "soon" }) do
    local ok, err = pcall(timer.after, ms, function() end)
    answers[i] = ok and "accepted" or tostring(err)
  end
  -- Later than a far timer wrongly taken as a short one would fire.
  timer.after(300, function() emit({ answers = answers }) end)
end
fired = 0
cases.timer_chain = function()
  local function again()
    fired = fired + 1
    timer.after(10, again)
  end
  timer.after(10, again)
  timer.every(500, function() emit({ fired = fired }) end)
end

function on_message(conn, msg)
  local case = cases[msg.data]
  if case then case() end
end
"#;

fn config(echo_url: &str) -> String {
    format!(
        r#"
[[client_type]]
name = "hostile"
module = "modules/hostile.lua"
cpu_limit_ms = 300
env = ["HOSTILE_ALLOWED"]
[client_type.defaults]
url = "{echo_url}"
auto_connect = true
[client_type.defaults.keepalive]
ping_interval_secs = 0

[[client_type]]
name = "plain"
[client_type.defaults]
url = "{echo_url}"
auto_connect = true
"#
    )
}

/// A host with a hostile client `bad` and a plain client `good`, both open.
struct Scene {
    host: Arc<Host>,
    events: tokio::sync::broadcast::Receiver<Arc<HostEvent>>,
    _echo: EchoServer,
    _ws: Workspace,
}

async fn scene() -> Scene {
    let echo = EchoServer::start().await;
    let ws = Workspace::new("hostile");
    ws.write("tether.toml", &config(&echo.url()))
        .write("modules/hostile.lua", HOSTILE);
    let (host, app) = start_host(&ws.config(), "sqlite::memory:").await;
    let mut events = host.events().subscribe();
    for (key, t) in [("bad", "hostile"), ("good", "plain")] {
        let body = serde_json::json!({"type": t, "key": key});
        let (s, v) = support::call(&app, "POST", "/api/clients", Some(body)).await;
        assert_eq!(s, 201, "{v}");
    }
    support::wait_state(&app, "bad", "open").await;
    support::wait_state(&app, "good", "open").await;
    while events.try_recv().is_ok() {}
    Scene {
        host,
        events,
        _echo: echo,
        _ws: ws,
    }
}

/// Runs a case: triggers it on `bad`, and while waiting for the event that
/// `expect` matches, sends to `good` every 20 ms. Returns that event and how
/// many echoes `good` got meanwhile (cases that fail at once leave no time
/// for any, so only the slow ones check that count). Then checks that
/// `good` still echoes, and that the host shuts down within 8 s.
fn run_case(case: &str, expect: impl Fn(&Value) -> bool + Send + 'static) -> (Value, usize) {
    let _one_at_a_time = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let case = case.to_string();
    let result = on_runtime(&runtime, async move {
        let mut s = scene().await;
        s.host
            .send("bad", &tether::Message::Text(case.clone()))
            .unwrap();
        let mut good_echoes = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let found = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = s.host.send("good", &tether::Message::Text("ping".into()));
                }
                e = s.events.recv() => {
                    let e = e.expect("bus open");
                    if e.client == "good" && e.body["event"] == "message" {
                        good_echoes += 1;
                    }
                    if e.client == "bad" && expect(&e.body) {
                        break e.body.clone();
                    }
                }
                _ = tokio::time::sleep_until(deadline) => panic!("case {case}: no matching event"),
            }
        };
        // The other client keeps flowing after the case too.
        let before = good_echoes;
        s.host
            .send("good", &tether::Message::Text("after".into()))
            .unwrap();
        wait_event(&mut s.events, "good", |b| {
            b["event"] == "message" && b["data"] == "after"
        })
        .await;
        let started = std::time::Instant::now();
        s.host.shutdown().await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(8),
            "case {case}: shutdown took {took:?}"
        );
        (found, before)
    });
    // A call stuck in C must not hold the test process either.
    finish(runtime, result)
}

/// The cases measure what another client does meanwhile and run against
/// CPU budgets: one at a time, so that they do not starve each other.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on `runtime`, catching a failed assertion so that the runtime
/// can still be shut down without waiting for a hook stuck in Lua.
fn on_runtime<T>(
    runtime: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T>,
) -> std::thread::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(f)))
}

/// Shuts `runtime` down without waiting for blocking threads (a call stuck
/// in C must not hold the test process), then passes the result or the
/// failure on.
fn finish<T>(runtime: tokio::runtime::Runtime, result: std::thread::Result<T>) -> T {
    runtime.shutdown_timeout(Duration::from_millis(100));
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn module_error(text: &'static str) -> impl Fn(&Value) -> bool + Send + 'static {
    move |b| {
        b["event"] == "error"
            && b["kind"] == "module"
            && b["message"].as_str().is_some_and(|m| m.contains(text))
    }
}

fn assert_cpu_limit(case: &str) {
    let (e, good) = run_case(case, module_error("CPU limit exceeded"));
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("on_message: CPU limit exceeded: a hook call may run for 300 ms"),
        "{case}: {e}"
    );
    // 300 ms of hostile CPU at one send every 20 ms: the other client echoed.
    assert!(
        good >= 5,
        "{case}: the other client echoed only {good} times"
    );
}

#[test]
fn a_loop_inside_a_coroutine_hits_the_cpu_limit() {
    assert_cpu_limit("coroutine");
}

#[test]
fn a_loop_inside_nested_coroutines_hits_the_cpu_limit() {
    assert_cpu_limit("nested_coroutine");
}

#[test]
fn pcall_cannot_swallow_the_cpu_limit() {
    assert_cpu_limit("pcall_loop");
}

#[test]
fn an_xpcall_handler_cannot_swallow_the_cpu_limit() {
    assert_cpu_limit("xpcall_handler_loop");
}

#[test]
fn coroutine_resume_cannot_swallow_the_cpu_limit() {
    assert_cpu_limit("resume_loop");
}

#[test]
fn an_error_object_whose_tostring_loops_is_stopped() {
    let (e, good) = run_case("error_object_loops", module_error("CPU limit exceeded"));
    assert!(
        e["message"].as_str().unwrap().starts_with("on_message:"),
        "{e}"
    );
    assert!(good >= 5, "the other client echoed only {good} times");
}

#[test]
fn tostring_of_a_looping_error_object_in_pcall_hits_the_cpu_limit() {
    assert_cpu_limit("tostring_of_error_in_pcall");
}

#[test]
fn gc_metamethods_are_refused() {
    let (e, _) = run_case(
        "gc_metamethod",
        module_error("__gc metamethods are not allowed"),
    );
    assert!(
        e["message"].as_str().unwrap().contains("hostile.lua"),
        "{e}"
    );
}

#[test]
fn string_rep_past_the_memory_limit_is_an_error() {
    let (e, _) = run_case("string_rep_bomb", module_error("out of memory"));
    assert!(
        e["message"].as_str().unwrap().starts_with("on_message:"),
        "{e}"
    );
}

#[test]
fn a_growing_table_stops_at_the_memory_limit() {
    let (e, _) = run_case("table_growth", module_error("out of memory"));
    assert!(
        e["message"].as_str().unwrap().starts_with("on_message:"),
        "{e}"
    );
}

#[test]
fn deep_recursion_is_an_error() {
    let (e, _) = run_case("deep_recursion", module_error("stack overflow"));
    assert!(
        e["message"].as_str().unwrap().starts_with("on_message:"),
        "{e}"
    );
}

#[test]
fn a_call_stuck_inside_a_c_function_fails_only_its_client() {
    let (e, good) = run_case(
        "c_function_stuck",
        module_error("did not return within its limit"),
    );
    let message = e["message"].as_str().unwrap();
    assert!(
        message.starts_with("on_message did not return within its limit of 300 ms"),
        "{message}"
    );
    // The worker waits the limit plus one second: 65 sends in that time.
    assert!(good >= 20, "the other client echoed only {good} times");
}

#[test]
fn a_close_metamethod_that_loops_after_the_limit_fails_only_its_client() {
    // Lua runs to-be-closed handlers of an error raised by the budget hook
    // with hooks off: only the worker's deadline stops this one.
    let (e, good) = run_case(
        "close_metamethod_loops",
        module_error("did not return within its limit"),
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("on_message did not return"),
        "{e}"
    );
    assert!(good >= 20, "the other client echoed only {good} times");
}

#[test]
fn a_stuck_client_is_failed_and_closed() {
    let _one_at_a_time = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = on_runtime(&runtime, async {
        let mut s = scene().await;
        s.host
            .send("bad", &tether::Message::Text("c_function_stuck".into()))
            .unwrap();
        wait_event(&mut s.events, "bad", |b| b["event"] == "close").await;
        let view = s.host.get_client("bad").await.unwrap();
        assert_eq!(view.status.state.as_str(), "failed");
        assert!(view
            .status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("on_message did not return")));
        // Connecting while the call still runs is refused with a reason.
        s.host.connect_client("bad", "test").await.unwrap();
        let e = wait_event(&mut s.events, "bad", |b| b["event"] == "error").await;
        assert!(
            e["message"].as_str().unwrap().contains("still running"),
            "{e}"
        );
        assert_eq!(
            s.host
                .get_client("bad")
                .await
                .unwrap()
                .status
                .state
                .as_str(),
            "failed"
        );
        s.host.shutdown().await;
    });
    finish(runtime, result)
}

#[test]
fn modules_cannot_read_tether_variables() {
    std::env::set_var("TETHER_ADMIN_TOKEN", "must-not-leak");
    let (e, _) = run_case(
        "env_admin_token",
        module_error("env(\"TETHER_ADMIN_TOKEN\")"),
    );
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("never readable"), "{message}");
    assert!(!message.contains("must-not-leak"), "{message}");
}

#[test]
fn modules_read_only_the_variables_their_type_lists() {
    let (e, _) = run_case("env_not_listed", module_error("env(\"HOME\"): not allowed"));
    assert!(
        e["message"].as_str().unwrap().contains("env = [...]"),
        "{e}"
    );
    std::env::set_var("HOSTILE_ALLOWED", "yes");
    let (e, _) = run_case("env_listed", |b| b["event"] == "module");
    assert_eq!(e["data"]["listed"], "yes");
}

#[test]
fn timer_every_zero_is_refused() {
    run_case(
        "timer_every_zero",
        module_error("timer.every(0): the shortest delay is 10 ms"),
    );
}

#[test]
fn timers_per_client_are_capped() {
    run_case(
        "timer_flood",
        module_error("already has 32 timers, the most allowed"),
    );
}

#[test]
fn a_timer_that_schedules_timers_is_paced() {
    // The chain re-arms every 10 ms: at most ~100 firings a second, and
    // the other client keeps echoing while it runs.
    let (e, good) = run_case("timer_chain", |b| {
        b["event"] == "module" && b["data"]["fired"].as_u64().is_some_and(|n| n > 0)
    });
    let fired = e["data"]["fired"].as_u64().unwrap();
    assert!(fired <= 60, "fired {fired} times in 500 ms");
    assert!(good >= 5, "the other client echoed only {good} times");
}

#[test]
fn timer_delays_out_of_range_are_refused_and_far_ones_never_fire() {
    // The first thing the case emits: its answers, 300 ms later, and not
    // "fired" from one of the far timers.
    let (e, _) = run_case("timer_extremes", |b| b["event"] == "module");
    let answers: Vec<&str> = e["data"]["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| a.as_str().unwrap_or("?"))
        .collect();
    let expected = ["-1", "NaN", "inf", "1e300", "string"];
    assert_eq!(answers.len(), expected.len(), "{e}");
    for (answer, got) in answers.iter().zip(expected) {
        assert!(
            answer.contains(&format!(
                "timer.after({got}): the delay is a number of milliseconds, 0 or more"
            )),
            "{answer}"
        );
    }
    // run_case has checked that the other client still echoes and that
    // the host, holding two timers due in thousands of years, shut down
    // within 8 s.
}
