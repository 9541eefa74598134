//! `tether-bench --host [--quick]`: the host's message path, measured the
//! way `tether serve` runs it (in-process, the same code), against the same
//! neutral server, beside the library and a Python client in the same run.
//!
//! Flood in: the server sends N JSON texts of 200 B. Rates, in messages/s
//! until the host has counted all N:
//! - a type with no module; a Lua module whose `on_message` does nothing;
//!   one that decodes every message as JSON and emits every 1000th;
//! - the library alone (`tether::connect`, receive and drop);
//! - Python `websockets` doing `json.loads` on each (what a user would
//!   script instead), when `target/peers/venv` has it.
//!
//! The host's CPU per message is the process's user+system time over the
//! run divided by N (the server is another process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_host::{Host, Loaded, SqliteStore, Store};

const EMPTY: &str = "function on_message(conn, msg) end\n";
const JSON: &str = "local n = 0\nfunction on_message(conn, msg)\n  local v = json.decode(msg.data)\n  n = n + 1\n  if n % 1000 == 0 then emit(v) end\nend\n";

fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable; getrusage writes only into it.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One call of a Lua module's empty `on_message` with a 200-byte text, in
/// a state of its own or in a shared one, outside any host: ns per call,
/// the best of 7 rounds of 300,000.
fn lua_call(shared: bool) -> anyhow::Result<f64> {
    use tether_host::modules::lua::LuaFactory;
    use tether_host::modules::{ConnHandle, ModuleContext, ModuleFactory};
    let dir = std::env::temp_dir().join(format!("tether-bench-call-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("m.lua"), EMPTY)?;
    let factory = LuaFactory::new(EMPTY.into(), dir.join("m.lua")).shared_state(shared);
    let (timers, _) = tokio::sync::mpsc::unbounded_channel();
    let conn = ConnHandle::new("k");
    let mut module = factory
        .create(ModuleContext {
            key: "k".into(),
            conn: conn.clone(),
            emit: Arc::new(|_| {}),
            clients: Arc::new(|_| None),
            timers,
        })
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let msg = tether::Message::Text("x".repeat(200));
    let mut best = f64::MAX;
    for _ in 0..7 {
        let n = 300_000;
        let started = Instant::now();
        for _ in 0..n {
            module
                .on_message(&conn, &msg)
                .map_err(|e| anyhow::anyhow!(e.message))?;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n as f64);
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(best)
}

/// One host, one client of a type with `module` (None: no module),
/// flooded with `n` messages; returns (messages/s, CPU µs per message).
async fn flood_host(
    url: &str,
    module: Option<&str>,
    lua_state: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("tether-bench-host-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut module_line = match module {
        Some(source) => {
            std::fs::write(dir.join("m.lua"), source)?;
            format!("module = \"m.lua\"\nlua_state = \"{lua_state}\"\n")
        }
        None => String::new(),
    };
    // BENCH_LOG_EVENTS='["open"]': the type's `log_events`, to see what
    // logging every message costs.
    if let Ok(names) = std::env::var("BENCH_LOG_EVENTS") {
        module_line.push_str(&format!("log_events = {names}\n"));
    }
    let toml = format!(
        "[[client_type]]\nname = \"f\"\n{module_line}[client_type.defaults]\nurl = \"{url}\"\n[client_type.defaults.keepalive]\nping_interval_secs = 0\n"
    );
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join("b.db").display())).await?);
    let loaded = Loaded::parse(&toml, "bench.toml", &dir)?;
    let host = Host::start(&loaded, store.clone() as Arc<dyn Store>).await?;
    let input = tether_host::InstanceInput {
        type_name: Some("f".into()),
        key: Some("f1".into()),
        ..Default::default()
    };
    host.create_client(input, "bench").await?;
    let cpu = process_cpu();
    let started = Instant::now();
    host.connect_client("f1", "bench").await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let c = host.get_client("f1").await?;
        if c.status.messages_in as usize >= n {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the host fell behind");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu);
    host.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((
        n as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
    ))
}

/// The library alone, receiving and dropping.
async fn flood_library(url: &str, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (_conn, mut rx) = tether::connect(url, &Default::default()).await?;
    let mut got = 0;
    while got < n {
        match rx.next_message().await {
            Ok(_) => got += 1,
            Err(closed) => anyhow::bail!("closed early: {closed:?}"),
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Python websockets with json.loads per message, if installed.
fn flood_python(url: &str, n: usize) -> Option<f64> {
    let py =
        std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "target/peers/venv/bin/python".into());
    let script = format!(
        "import asyncio,json,time,websockets\nasync def m():\n  t=time.perf_counter()\n  async with websockets.connect({url:?}, max_size=None, compression=None, ping_interval=None) as ws:\n    for _ in range({n}): json.loads(await ws.recv())\n    print({n}/(time.perf_counter()-t))\nasyncio.run(m())\n"
    );
    let out = std::process::Command::new(py)
        .args(["-c", &script])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Runs the flood scenarios.
pub fn run(ws: std::net::SocketAddr, quick: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let n = if quick { 20_000 } else { 200_000 };
    // BENCH_SERVER=coalesce: the server writes what it has in batches (see
    // `server::Coalescing`) instead of one write per message, for all three.
    let batches = if std::env::var("BENCH_SERVER").is_ok_and(|v| v == "coalesce") {
        "&coalesce=1"
    } else {
        ""
    };
    let url = format!("ws://{ws}/json?n={n}&size=200{batches}");
    rt.block_on(async {
        let library = flood_library(&url, n).await?;
        let (none, none_cpu) = flood_host(&url, None, "instance", n).await?;
        let (empty, empty_cpu) = flood_host(&url, Some(EMPTY), "instance", n).await?;
        let (shared, shared_cpu) = flood_host(&url, Some(EMPTY), "shared", n).await?;
        let (json, json_cpu) = flood_host(&url, Some(JSON), "instance", n).await?;
        // Python reads every message its connection is sent (a close before
        // the end would wait for the rest), and is timed before it closes.
        let n_py = n.min(100_000);
        let python = flood_python(
            &format!("ws://{ws}/json?n={n_py}&size=200{batches}"),
            n_py,
        );
        println!("flood in, 200 B JSON texts, {n} messages:");
        println!("  library alone            {library:>9.0} msg/s");
        println!(
            "  host, no module          {none:>9.0} msg/s  {none_cpu:.1} µs CPU/msg  {:.2}x library",
            none / library
        );
        println!(
            "  host, empty on_message   {empty:>9.0} msg/s  {empty_cpu:.1} µs CPU/msg  {:.2}x library (goal >= 0.5)",
            empty / library
        );
        println!(
            "  ... lua_state = shared   {shared:>9.0} msg/s  {shared_cpu:.1} µs CPU/msg  {:.2}x library",
            shared / library
        );
        println!(
            "  one empty on_message call, alone: {:.0} ns (a state of its own), {:.0} ns (shared)",
            lua_call(false)?,
            lua_call(true)?
        );
        match python {
            Some(py) => println!(
                "  host, JSON + emit/1000   {json:>9.0} msg/s  {json_cpu:.1} µs CPU/msg  {:.2}x Python websockets + json.loads ({py:.0} msg/s; goal >= 3)",
                json / py
            ),
            None => println!(
                "  host, JSON + emit/1000   {json:>9.0} msg/s  {json_cpu:.1} µs CPU/msg  (no Python websockets for the ratio)"
            ),
        }
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
