//! `cargo run --release -p tether-bench -- [--quick] [--json FILE]`
//!
//! One run measures Tether, tokio-tungstenite, fastwebsockets and raw TCP
//! against the same server process (fastwebsockets' server side, pinned to
//! its own core), then the CPU-bound paths. It prints a table of medians and
//! ratios; `--json` also writes `[{scenario, implementation, value, unit}]`.

mod brokers;
mod clients;
mod measure;
use measure::{thread_cpu, thread_user_sys};
mod durable;
mod host;
mod host_scale;
mod memory;
mod micro;
mod server;
mod table;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use clients::{Imp, Servers};
use serde_json::json;

#[global_allocator]
static HEAP: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const IMPS: [Imp; 4] = [Imp::Tether, Imp::Tungstenite, Imp::Fastws, Imp::Raw];

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if ids.len() > core {
            core_affinity::set_for_current(ids[core]);
        }
    }
}

/// Runs a client scenario as a spawned task, as applications run their
/// connection logic, rather than as the runtime's `block_on` future (which
/// costs every client that is woken by another task an extra
/// `epoll_wait(0)`).
///
/// With `--main-future` the scenario is the runtime's `block_on` future
/// instead, as a `#[tokio::main]` application that drives its connection
/// from `main` runs it.
fn on_task<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    scenario: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    if MAIN_FUTURE.load(std::sync::atomic::Ordering::Relaxed) {
        return rt.block_on(scenario);
    }
    rt.block_on(async { tokio::spawn(scenario).await? })
}

/// `--main-future`: run client scenarios as the `block_on` future.
static MAIN_FUTURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        pin(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(server::run(args[2].parse()?, args[3].parse()?));
    }
    if args.get(1).map(String::as_str) == Some("--host-idle") {
        pin(0);
        let _ = rlimit::increase_nofile_limit(65_536);
        return host_scale::idle_child(args[2].parse()?, args[3].parse()?, || HEAP.allocated());
    }
    if args.get(1).map(String::as_str) == Some("--memory") {
        pin(0);
        let _ = rlimit::increase_nofile_limit(65_536);
        let imp = IMPS
            .into_iter()
            .find(|i| i.name() == args[2])
            .expect("implementation");
        let n: usize = args[3].parse()?;
        let s = Servers {
            ws: args[4].parse()?,
            raw: args[4].parse()?,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let r = rt.block_on(memory::per_connection(imp, s, n, || HEAP.allocated()))?;
        println!("{}", json!(r));
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--main-future") {
        MAIN_FUTURE.store(true, std::sync::atomic::Ordering::Relaxed);
        println!("arrangement: each client scenario is the runtime's main future (block_on)");
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let json_out = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();

    let s = Servers {
        ws: free_addr(),
        raw: free_addr(),
    };
    let exe = std::env::current_exe()?;
    let mut server = Command::new(&exe)
        .args(["--serve", &s.ws.to_string(), &s.raw.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut ready)?;
    anyhow::ensure!(ready.trim() == "ready", "server did not start");
    if std::env::var("BENCH_HOST_CORES").as_deref() != Ok("all") {
        pin(0);
    }
    let _ = rlimit::increase_nofile_limit(65_536);

    if args.iter().any(|a| a == "--host") {
        // BENCH_HOST=flood: the flood scenarios only (for A/B runs).
        let flood_only = std::env::var("BENCH_HOST").is_ok_and(|v| v == "flood");
        let result = host::run(s.ws, quick).and_then(|()| {
            if flood_only {
                Ok(())
            } else {
                host_scale::run(s.ws, quick)
            }
        });
        let _ = server.kill();
        let _ = server.wait();
        return result;
    }
    if args.iter().any(|a| a == "--brokers") {
        let result = brokers::run(quick);
        let _ = server.kill();
        let _ = server.wait();
        return result;
    }
    if args.iter().any(|a| a == "--durable") {
        let result = durable::run(s.ws, quick);
        let _ = server.kill();
        let _ = server.wait();
        return result;
    }
    if only.as_deref() == Some("zmem") {
        for bits in [9u8, 10, 12, 15] {
            let before = HEAP.allocated();
            let mut c =
                flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, bits);
            let mut out = Vec::with_capacity(256);
            let _ = c.compress_vec(b"{\"hello\":1}", &mut out, flate2::FlushCompress::Sync);
            let deflate = HEAP.allocated() - before - out.capacity();
            let before = HEAP.allocated();
            let mut d = flate2::Decompress::new_with_window_bits(false, bits);
            let mut o2 = Vec::with_capacity(256);
            let _ = d.decompress_vec(&out, &mut o2, flate2::FlushDecompress::Sync);
            let inflate = HEAP.allocated() - before - o2.capacity();
            println!("window {bits}: deflate {deflate} B, inflate {inflate} B");
            drop((c, d));
        }
        let _ = server.kill();
        let _ = server.wait();
        return Ok(());
    }
    if only.as_deref() == Some("micro") {
        let budget = Duration::from_millis(1000);
        println!(
            "masked copy (tether, memcpy) GB/s: {:?}",
            micro::masked_copy(budget)
        );
        let stream = micro::json_stream(10_000);
        println!(
            "deflate (tether, raw) MB/s: {:?}",
            micro::deflate(&stream, budget)
        );
        println!(
            "inflate (tether, raw) MB/s: {:?}",
            micro::inflate(&stream, budget)
        );
        println!(
            "heap per compressed connection (context takeover, receive only, none): {:?}",
            micro::compressed_connection_heap(|| HEAP.allocated())
        );
        let _ = server.kill();
        let _ = server.wait();
        return Ok(());
    }
    if let Some(only) = only {
        // Profiling aid: one scenario, many times, for the implementations
        // named by `--imp` (comma-separated; tether by default).
        let imps: Vec<Imp> = args
            .iter()
            .position(|a| a == "--imp")
            .and_then(|i| args.get(i + 1))
            .map_or(vec![Imp::Tether], |names| {
                IMPS.into_iter()
                    .filter(|i| names.split(',').any(|n| n == i.name()))
                    .collect()
            });
        let size: usize = args
            .iter()
            .position(|a| a == "--size")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for _ in 0..10 {
            for &imp in &imps {
                let cpu = thread_cpu();
                let t = match only.as_str() {
                    "send" => on_task(&rt, clients::send_oneway(imp, s, 1 << 20, 200))?,
                    "recv" => on_task(&rt, clients::recv_oneway(imp, s, 1 << 20, 200))?,
                    "seq" => on_task(&rt, clients::sequential(imp, s, size, 20_000))?
                        .iter()
                        .sum(),
                    "pipe-coalesce" => {
                        on_task(&rt, clients::pipelined(imp, s, 1024, 50_000, 64, true))?
                    }
                    _ => on_task(&rt, clients::pipelined(imp, s, 1024, 50_000, 64, false))?,
                };
                let cpu = thread_cpu() - cpu;
                let (user, sys) = thread_user_sys();
                eprintln!(
                    "{only} {}: {t:?} (client CPU {cpu:?}; thread so far: user {user:?}, system {sys:?})",
                    imp.name()
                );
            }
        }
        let _ = server.kill();
        let _ = server.wait();
        return Ok(());
    }
    let result = table::run(s, quick, &exe);
    let _ = server.kill();
    let _ = server.wait();
    let rows = result?;
    table::print_table(&rows);
    if let Some(path) = json_out {
        let mut out = Vec::new();
        for r in &rows {
            for (imp, v) in &r.values {
                out.push(json!({"scenario": r.scenario, "implementation": imp.name(), "value": v, "unit": r.unit}));
            }
        }
        std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
        eprintln!("wrote {path}");
    }
    Ok(())
}
