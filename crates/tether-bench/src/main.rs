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

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use clients::{Imp, Servers};
use serde_json::json;

#[global_allocator]
static HEAP: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const IMPS: [Imp; 4] = [Imp::Tether, Imp::Tungstenite, Imp::Fastws, Imp::Raw];

struct Row {
    scenario: String,
    unit: &'static str,
    higher_is_better: bool,
    values: Vec<(Imp, f64)>,
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if ids.len() > core {
            core_affinity::set_for_current(ids[core]);
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
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
                    _ => on_task(&rt, clients::pipelined(imp, s, 1024, 50_000, 64))?,
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
    let result = run(s, quick, &exe);
    let _ = server.kill();
    let _ = server.wait();
    let rows = result?;
    print_table(&rows);
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

fn run(s: Servers, quick: bool, exe: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reps = if quick { 3 } else { 5 };
    let mut rows = Vec::new();
    let note = |r: &Row| eprintln!("done: {}", r.scenario);

    for size in [16usize, 1024, 64 << 10] {
        let n = if quick { 2_000 } else { 20_000 } / if size > 1024 { 4 } else { 1 };
        let mut rate = Row {
            scenario: format!("sequential echo {} B, msg/s", size),
            unit: "msg/s",
            higher_is_better: true,
            values: vec![],
        };
        let row = |what: &str| Row {
            scenario: format!("sequential echo {size} B, {what}"),
            unit: "us",
            higher_is_better: false,
            values: vec![],
        };
        let (mut p50, mut p99, mut cpu) = (
            row("p50 RTT"),
            row("p99 RTT"),
            row("client CPU per round trip"),
        );
        // Implementations take turns within each repetition, so drift in
        // the machine's load hits them alike.
        let mut samples: Vec<[Vec<f64>; 4]> = IMPS.iter().map(|_| Default::default()).collect();
        for _ in 0..reps {
            for (i, imp) in IMPS.into_iter().enumerate() {
                let used = thread_cpu();
                let mut t = on_task(&rt, clients::sequential(imp, s, size, n))?;
                let used = thread_cpu() - used;
                let total: Duration = t.iter().sum();
                samples[i][0].push(n as f64 / total.as_secs_f64());
                t.sort();
                samples[i][1].push(percentile(&t, 0.5));
                samples[i][2].push(percentile(&t, 0.99));
                samples[i][3].push(used.as_secs_f64() * 1e6 / n as f64);
            }
        }
        for (imp, [r, a, b, c]) in IMPS.into_iter().zip(samples) {
            rate.values.push((imp, median(r)));
            p50.values.push((imp, median(a)));
            p99.values.push((imp, median(b)));
            cpu.values.push((imp, median(c)));
        }
        note(&rate);
        rows.extend([rate, p50, p99, cpu]);
    }

    let n = if quick { 20_000 } else { 200_000 };
    let mut row = Row {
        scenario: "pipelined echo 1 KiB, 64 in flight".into(),
        unit: "msg/s",
        higher_is_better: true,
        values: vec![],
    };
    let mut cpu_row = Row {
        scenario: "pipelined echo 1 KiB, client CPU per message".into(),
        unit: "us",
        higher_is_better: false,
        values: vec![],
    };
    (row.values, cpu_row.values) = interleaved_cpu(&IMPS, reps, |imp| {
        let cpu = thread_cpu();
        let t = on_task(&rt, clients::pipelined(imp, s, 1024, n, 64))?;
        let cpu = thread_cpu() - cpu;
        Ok((
            n as f64 / t.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64,
        ))
    })?;
    note(&row);
    rows.extend([row, cpu_row]);

    let n = if quick { 200 } else { 2_000 };
    // Rate and client CPU per MiB for one-way transfers of 1 MiB messages.
    let one_way = |imps: &[Imp], send: bool, name: String| -> anyhow::Result<[Row; 2]> {
        let mut row = Row {
            scenario: name.clone(),
            unit: "MB/s",
            higher_is_better: true,
            values: vec![],
        };
        let mut cpu_row = Row {
            scenario: format!("{name}, client CPU per MiB"),
            unit: "us",
            higher_is_better: false,
            values: vec![],
        };
        (row.values, cpu_row.values) = interleaved_cpu(imps, reps, |imp| {
            let cpu = thread_cpu();
            let t = if send {
                on_task(&rt, clients::send_oneway(imp, s, 1 << 20, n))?
            } else {
                on_task(&rt, clients::recv_oneway(imp, s, 1 << 20, n))?
            };
            let cpu = thread_cpu() - cpu;
            Ok((
                (n << 20) as f64 / t.as_secs_f64() / 1e6,
                cpu.as_secs_f64() * 1e6 / n as f64,
            ))
        })?;
        note(&row);
        Ok([row, cpu_row])
    };
    rows.extend(one_way(
        &IMPS,
        true,
        "one-way 1 MiB, client sending".into(),
    )?);
    rows.extend(one_way(
        &IMPS,
        false,
        "one-way 1 MiB, client receiving".into(),
    )?);
    // The same for tether, without giving buffers back.
    clients::TETHER_RECYCLES.store(false, std::sync::atomic::Ordering::Relaxed);
    let without = one_way(
        &[Imp::Tether],
        false,
        "one-way 1 MiB, client receiving, tether without Receiver::recycle".into(),
    );
    clients::TETHER_RECYCLES.store(true, std::sync::atomic::Ordering::Relaxed);
    rows.extend(without?);

    let n = if quick { 500 } else { 3_000 };
    let mut row = Row {
        scenario: "connection setup (connect + handshake)".into(),
        unit: "conn/s",
        higher_is_better: true,
        values: vec![],
    };
    row.values = interleaved(&[Imp::Tether, Imp::Tungstenite, Imp::Fastws], reps, |imp| {
        Ok(n as f64 / on_task(&rt, clients::setup(imp, s, n))?.as_secs_f64())
    })?;
    note(&row);
    rows.push(row);

    let conns = if quick { 1_000 } else { 10_000 };
    let labels = [
        "heap per idle connection after handshake",
        "RSS per idle connection after handshake",
        "heap per idle connection after one 64 KiB echo",
        "RSS per idle connection after one 64 KiB echo",
    ];
    let mut mem_rows: Vec<Row> = labels
        .iter()
        .map(|l| Row {
            scenario: format!("{l} ({conns} conns)"),
            unit: "bytes",
            higher_is_better: false,
            values: vec![],
        })
        .collect();
    for imp in [Imp::Tether, Imp::Tungstenite, Imp::Fastws] {
        let out = Command::new(exe)
            .args([
                "--memory",
                imp.name(),
                &conns.to_string(),
                &s.ws.to_string(),
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "memory run for {} failed: {}",
            imp.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<f64> = serde_json::from_slice(&out.stdout)?;
        for (row, value) in mem_rows.iter_mut().zip(v) {
            row.values.push((imp, value));
        }
    }
    rows.extend(mem_rows);
    eprintln!("done: memory");

    let budget = Duration::from_millis(if quick { 300 } else { 1500 });
    let (fast, naive) = micro::masking(budget);
    rows.push(Row {
        scenario: "masking (tether vs naive byte loop)".into(),
        unit: "GB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, fast), (Imp::Raw, naive)],
    });
    let (masked, plain) = micro::masked_copy(budget);
    rows.push(Row {
        scenario: "masked copy of 1 MiB into the send buffer (tether vs plain memcpy)".into(),
        unit: "GB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, masked), (Imp::Raw, plain)],
    });
    let (ascii, mixed) = micro::utf8(budget);
    rows.push(Row {
        scenario: "UTF-8 validation, ASCII".into(),
        unit: "GB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, ascii)],
    });
    rows.push(Row {
        scenario: "UTF-8 validation, mixed scripts".into(),
        unit: "GB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, mixed)],
    });
    let stream = micro::json_stream(10_000);
    let (t, raw) = micro::deflate(&stream, budget);
    rows.push(Row {
        scenario: "deflate JSON stream (tether send path vs raw zlib-rs)".into(),
        unit: "MB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, t), (Imp::Raw, raw)],
    });
    let (t, raw) = micro::inflate(&stream, budget);
    let (ctx, receive_only, no_ctx) = micro::compressed_connection_heap(|| HEAP.allocated());
    rows.push(Row {
        scenario:
            "engine heap per compressed connection, context takeover (after one message each way)"
                .into(),
        unit: "bytes",
        higher_is_better: false,
        values: vec![(Imp::Tether, ctx)],
    });
    rows.push(Row {
        scenario: "engine heap per compressed connection, context takeover, receiving only".into(),
        unit: "bytes",
        higher_is_better: false,
        values: vec![(Imp::Tether, receive_only)],
    });
    rows.push(Row {
        scenario: "engine heap per compressed connection, no context takeover".into(),
        unit: "bytes",
        higher_is_better: false,
        values: vec![(Imp::Tether, no_ctx)],
    });
    rows.push(Row {
        scenario: "inflate JSON stream (tether receive path vs raw zlib-rs)".into(),
        unit: "MB/s",
        higher_is_better: true,
        values: vec![(Imp::Tether, t), (Imp::Raw, raw)],
    });
    Ok(rows)
}

/// Runs `f` for each implementation in turn, `reps` rounds; medians.
fn interleaved(
    imps: &[Imp],
    reps: usize,
    mut f: impl FnMut(Imp) -> anyhow::Result<f64>,
) -> anyhow::Result<Vec<(Imp, f64)>> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); imps.len()];
    for _ in 0..reps {
        for (i, imp) in imps.iter().enumerate() {
            samples[i].push(f(*imp)?);
        }
    }
    Ok(imps
        .iter()
        .copied()
        .zip(samples.into_iter().map(median))
        .collect())
}

/// Like [`interleaved`], for a measurement and the client CPU time it took.
#[allow(clippy::type_complexity)]
fn interleaved_cpu(
    imps: &[Imp],
    reps: usize,
    mut f: impl FnMut(Imp) -> anyhow::Result<(f64, f64)>,
) -> anyhow::Result<(Vec<(Imp, f64)>, Vec<(Imp, f64)>)> {
    let mut cpu = Vec::new();
    let values = interleaved(imps, reps, |imp| {
        let (value, c) = f(imp)?;
        cpu.push((imp, c));
        Ok(value)
    })?;
    let cpu = imps
        .iter()
        .map(|&imp| {
            let samples = cpu.iter().filter(|(i, _)| *i == imp).map(|(_, c)| *c);
            (imp, median(samples.collect()))
        })
        .collect();
    Ok((values, cpu))
}

fn print_table(rows: &[Row]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "| scenario | unit | tether | tokio-tungstenite | fastwebsockets | raw TCP / reference | tether vs tt | tether vs fws | tether vs raw |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let get = |imp: Imp| r.values.iter().find(|(i, _)| *i == imp).map(|(_, v)| *v);
        let fmt = |v: Option<f64>| {
            v.map_or("–".to_string(), |v| {
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
        };
        let ratio = |other: Option<f64>| match (get(Imp::Tether), other) {
            (Some(t), Some(o)) if o > 0.0 && t > 0.0 => {
                format!("{:.2}×", if r.higher_is_better { t / o } else { o / t })
            }
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.unit,
            fmt(get(Imp::Tether)),
            fmt(get(Imp::Tungstenite)),
            fmt(get(Imp::Fastws)),
            fmt(get(Imp::Raw)),
            ratio(get(Imp::Tungstenite)),
            ratio(get(Imp::Fastws)),
            ratio(get(Imp::Raw)),
        );
    }
    let _ = writeln!(
        out,
        "\nRatios: above 1× means tether is better (faster, or smaller for latency and memory)."
    );
}
