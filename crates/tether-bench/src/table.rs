//! The client comparison: each scenario run by every implementation in turn
//! against the same server, and the table of medians and ratios.

use std::io::Write;
use std::time::Duration;

use crate::clients::{self, Imp, Servers};
use crate::measure::thread_cpu;
use std::process::Command;

use crate::{micro, on_task, HEAP, IMPS};

pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) unit: &'static str,
    pub(crate) higher_is_better: bool,
    pub(crate) values: Vec<(Imp, f64)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

pub(crate) fn run(s: Servers, quick: bool, exe: &std::path::Path) -> anyhow::Result<Vec<Row>> {
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
    // The neutral server writes each echo on its own, which sets the pace
    // for every client; with `coalesce` it writes the echoes of one read at
    // once, and the clients' own cost shows.
    for (coalesce, server) in [(false, ""), (true, ", server writing in batches")] {
        let mut row = Row {
            scenario: format!("pipelined echo 1 KiB, 64 in flight{server}"),
            unit: "msg/s",
            higher_is_better: true,
            values: vec![],
        };
        let mut cpu_row = Row {
            scenario: format!("pipelined echo 1 KiB{server}, client CPU per message"),
            unit: "us",
            higher_is_better: false,
            values: vec![],
        };
        // The raw TCP server does not batch: no raw column beside it.
        let imps: Vec<Imp> = IMPS
            .into_iter()
            .filter(|&i| !coalesce || i != Imp::Raw)
            .collect();
        (row.values, cpu_row.values) = interleaved_cpu(&imps, reps, |imp| {
            let cpu = thread_cpu();
            let t = on_task(&rt, clients::pipelined(imp, s, 1024, n, 64, coalesce))?;
            let cpu = thread_cpu() - cpu;
            Ok((
                n as f64 / t.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / n as f64,
            ))
        })?;
        note(&row);
        rows.extend([row, cpu_row]);
    }

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

pub(crate) fn print_table(rows: &[Row]) {
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
