//! `tether-bench --durable [--quick]`: the host's durable paths, in-process,
//! against the same neutral server, with a real SQLite file (WAL, fsync).
//!
//! - Durable sends: 64 tasks call `Host::send_durable` with 200-byte
//!   messages; a send returns once its group commit is on disk. Reported:
//!   sends/s, the latency of one call (p50/p99), and the rate at which the
//!   server received them; beside it the non-durable `Host::send`.
//! - Durable sends at a fixed offered rate (open loop, the goal's 20,000/s):
//!   each send starts at its scheduled time whatever the others do, and its
//!   latency counts from that time, so a stall shows in every send it
//!   delays (no coordinated omission). Reported: p50/p99/p99.9 of a call.
//!   The closed-loop figure above measures the queue of 64 senders at
//!   saturation; this one measures what a caller at the goal rate sees.
//! - Event log under a flood: the server sends 200-byte messages as fast as
//!   it can; every one becomes a logged event. Reported: events logged per
//!   second, and the log writer alone (events published straight to it).
//!
//! Like every client in this bench the host is pinned to core 0, with the
//! server on core 1. `BENCH_HOST_CORES=all` leaves the host free on every
//! core, as `tether serve` runs (the server stays on core 1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_host::{Host, Loaded, SqliteStore, Store};

use crate::measure::{pct_ms, sink_done};

fn host_config(url: &str) -> String {
    format!(
        r#"
[[client_type]]
name = "bench"
[client_type.defaults]
url = "{url}"
auto_connect = true
[client_type.defaults.keepalive]
ping_interval_secs = 0
"#
    )
}

async fn start(dir: &std::path::Path, url: &str) -> anyhow::Result<(Arc<Host>, Arc<SqliteStore>)> {
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join("bench.db").display())).await?);
    let config = Loaded::parse(&host_config(url), "bench.toml", dir)?;
    let host = Host::start(&config, store.clone() as Arc<dyn Store>).await?;
    let input = tether_host::InstanceInput {
        type_name: Some("bench".into()),
        key: Some("b1".into()),
        ..Default::default()
    };
    host.create_client(input, "bench").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.get_client("b1").await?.status.state.as_str() != "open" {
        anyhow::ensure!(Instant::now() < deadline, "the bench client never opened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((host, store))
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Durable sends: rate, call latency, delivery rate; and the plain path.
async fn durable_sends(ws: std::net::SocketAddr, n: usize) -> anyhow::Result<()> {
    let dir = tempdir("durable");
    let (host, store) = start(&dir, &format!("ws://{ws}/sink?n={n}")).await?;
    if std::env::var("BENCH_NO_DELIVERY").is_ok() {
        host.disconnect_client("b1", "bench").await?;
    }
    let events = host.events().subscribe();
    let payload = "x".repeat(200);
    let tasks: usize = std::env::var("BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..tasks {
        let host = host.clone();
        let msg = tether::Message::Text(payload.clone());
        joins.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / tasks + 1);
            for _ in (t..n).step_by(tasks) {
                let at = Instant::now();
                host.send_durable("b1", &msg, None, None).await?;
                lat.push(at.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for j in joins {
        lat.extend(j.await??);
    }
    let accepted = started.elapsed();
    lat.sort();
    println!(
        "durable send 200 B, {tasks} senders: {:.0} sends/s on disk; call p50 {:.2} ms, p99 {:.2} ms",
        n as f64 / accepted.as_secs_f64(),
        pct_ms(&lat, 0.5),
        pct_ms(&lat, 0.99),
    );
    if std::env::var("BENCH_NO_DELIVERY").is_ok() {
        return Ok(());
    }
    sink_done(events).await;
    let delivered = started.elapsed();
    println!(
        "durable delivered end to end: {:.0} msg/s",
        n as f64 / delivered.as_secs_f64()
    );
    host.shutdown().await;
    store.close().await;

    // The plain path beside it: the same server, nothing stored.
    let dir2 = tempdir("plain");
    let (host, store) = start(&dir2, &format!("ws://{ws}/sink?n={n}")).await?;
    let events = host.events().subscribe();
    let msg = tether::Message::Text(payload);
    let started = Instant::now();
    let mut lat = Vec::with_capacity(n);
    let mut sent = 0;
    while sent < n {
        let at = Instant::now();
        match host.send("b1", &msg) {
            Ok(()) => {
                lat.push(at.elapsed());
                sent += 1;
            }
            // The outgoing buffer is full: let the connection write.
            Err(_) => tokio::task::yield_now().await,
        }
    }
    let accepted = started.elapsed();
    sink_done(events).await;
    let delivered = started.elapsed();
    lat.sort();
    println!(
        "plain send 200 B: {:.0} sends/s queued; call p50 {:.4} ms, p99 {:.4} ms; delivered {:.0} msg/s end to end",
        n as f64 / accepted.as_secs_f64(),
        pct_ms(&lat, 0.5),
        pct_ms(&lat, 0.99),
        n as f64 / delivered.as_secs_f64()
    );
    host.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(dir2);
    Ok(())
}

/// Durable sends at a fixed offered rate: open loop, latency from each
/// send's scheduled start.
async fn durable_at_rate(ws: std::net::SocketAddr, rate: u32, secs: u32) -> anyhow::Result<()> {
    let n = (rate * secs) as usize;
    let dir = tempdir("durable-rate");
    let (host, store) = start(&dir, &format!("ws://{ws}/sink?n={n}")).await?;
    let events = host.events().subscribe();
    let msg = tether::Message::Text("x".repeat(200));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<anyhow::Result<Duration>>();
    // The schedule is kept by a thread of its own that wakes every 200 µs
    // and starts the sends that are due. A tokio timer has 1 ms ticks,
    // which would add up to 1 ms to every scheduled start and count it as
    // the host's; waking for every send would cost the shared core 20,000
    // thread switches a second.
    let rt = tokio::runtime::Handle::current();
    let sender = host.clone();
    let generator = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let mut scheduled = 0usize;
        // The schedule's own lateness: how long the thread went without
        // running (a stall here is the OS's, and is counted in every send
        // it delays).
        let (mut last, mut gaps) = (started, Vec::new());
        while scheduled < n {
            let now = std::time::Instant::now();
            gaps.push(now - last);
            last = now;
            let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
            for i in scheduled..due {
                let at = started + Duration::from_secs_f64(i as f64 / rate as f64);
                let (host, msg, tx) = (sender.clone(), msg.clone(), tx.clone());
                rt.spawn(async move {
                    let r = host.send_durable("b1", &msg, None, None).await;
                    let _ = tx.send(r.map(|_| at.elapsed()).map_err(Into::into));
                });
            }
            scheduled = due;
            std::thread::sleep(Duration::from_micros(200));
        }
        gaps
    });
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = rx.recv().await {
        lat.push(r?);
    }
    let mut gaps = generator.join().unwrap_or_default();
    gaps.push(Duration::ZERO);
    gaps.sort();
    let stalls = gaps
        .iter()
        .filter(|g| **g > Duration::from_millis(5))
        .count();
    lat.sort();
    println!(
        "durable send 200 B at {rate}/s offered (open loop, {n} sends): call p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; the schedule's thread: longest gap {:.2} ms, {stalls} gaps over 5 ms",
        pct_ms(&lat, 0.5),
        pct_ms(&lat, 0.99),
        pct_ms(&lat, 0.999),
        pct_ms(&lat, 1.0),
        pct_ms(&gaps, 1.0),
    );
    sink_done(events).await;
    host.shutdown().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The event log: under a flood through the host, and its writer alone.
async fn event_log(ws: std::net::SocketAddr, n: usize) -> anyhow::Result<()> {
    let dir = tempdir("flood");
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join("bench.db").display())).await?);
    let (_, before) = store.events_bounds().await?;
    let config = Loaded::parse(
        &host_config(&format!("ws://{ws}/source?n={n}&size=200")),
        "b.toml",
        &dir,
    )?;
    let started = Instant::now();
    let host = Host::start(&config, store.clone() as Arc<dyn Store>).await?;
    let input = tether_host::InstanceInput {
        type_name: Some("bench".into()),
        key: Some("f1".into()),
        ..Default::default()
    };
    host.create_client(input, "bench").await?;
    // open + state events come first; wait for n message events more.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, newest) = store.events_bounds().await?;
        if newest - before >= n as i64 + 2 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the log fell behind: {newest}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let through_host = started.elapsed();
    host.shutdown().await;

    // The writer alone.
    let bus = tether_host::events::EventBus::with_log(4096, store.clone(), Default::default());
    let (_, before) = store.events_bounds().await?;
    let history = std::sync::Mutex::new(tether_host::events::History::default());
    let body = serde_json::json!({"event": "message", "type": "text", "data": "y".repeat(200)});
    let started = Instant::now();
    for _ in 0..n {
        let event = tether_host::events::HostEvent {
            client: "w1".into(),
            dynamic: false,
            at: String::new(),
            body: body.clone(),
            seq: Default::default(),
            held: None,
            json: Default::default(),
        };
        bus.publish(&history, event, true);
    }
    loop {
        let (_, newest) = store.events_bounds().await?;
        if newest - before >= n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let writer = started.elapsed();
    println!(
        "event log, 200 B messages: {:.0} events/s logged through the host under a flood (connect included); log writer alone {:.0} events/s",
        n as f64 / through_host.as_secs_f64(),
        n as f64 / writer.as_secs_f64()
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Runs both.
pub fn run(ws: std::net::SocketAddr, quick: bool) -> anyhow::Result<()> {
    // As `tether serve` runs: two worker threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // BENCH_DURABLE=rate runs only the open-loop part (for A/B runs).
    let only_rate = std::env::var("BENCH_DURABLE").is_ok_and(|v| v == "rate");
    let n = if quick { 20_000 } else { 100_000 };
    if !only_rate {
        rt.block_on(durable_sends(ws, n))?;
    }
    rt.block_on(durable_at_rate(ws, 20_000, if quick { 2 } else { 10 }))?;
    if !only_rate {
        rt.block_on(event_log(ws, if quick { 50_000 } else { 200_000 }))?;
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
