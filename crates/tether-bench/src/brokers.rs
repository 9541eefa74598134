//! `tether-bench --brokers [--quick]`: messages through the host's built-in
//! broker types against the real brokers of `scripts/brokers.sh start`
//! (Mosquitto over WebSocket, RabbitMQ Web-STOMP), both directions.
//!
//! - In: an independent client publishes N messages of 200 B on the broker
//!   side (`mosquitto_pub -l`; stomp.py for STOMP); the clock stops when
//!   the host has emitted N message events (decoded, acknowledged).
//! - Out: 64 tasks make N durable sends through the host; the clock stops
//!   when every one is `done`, that is, acknowledged by the broker (PUBACK,
//!   RECEIPT).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tether_host::{Host, Loaded, SqliteStore, Store};

fn config(kind: &str, url: &str, subscribe: &str, extra: &str) -> String {
    format!(
        "[[client_type]]\nname = \"b\"\nmodule = \"builtin:{kind}\"\n[client_type.settings]\nsubscribe = [\"{subscribe}\"]\n{extra}\n[client_type.defaults]\nurl = \"{url}\"\n"
    )
}

async fn start(
    name: &str,
    toml: &str,
) -> anyhow::Result<(Arc<Host>, Arc<SqliteStore>, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("tether-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join("b.db").display())).await?);
    let loaded = Loaded::parse(toml, "bench.toml", &dir)?;
    let host = Host::start(&loaded, store.clone() as Arc<dyn Store>).await?;
    let input = tether_host::InstanceInput {
        type_name: Some("b".into()),
        key: Some("b1".into()),
        user: Some("guest".into()),
        password: Some("guest".into()),
        ..Default::default()
    };
    host.create_client(input, "bench").await?;
    let mut rx = host.events().subscribe();
    host.connect_client("b1", "bench").await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline.into(), rx.recv()).await??;
        if std::env::var("BENCH_DEBUG").is_ok() {
            eprintln!("{}", e.body);
        }
        if e.body["event"] == "module"
            && (e.body["data"]["mqtt"] == "connected" || e.body["data"]["stomp"] == "connected")
        {
            break;
        }
    }
    Ok((host, store, dir))
}

async fn count_in(
    host: &Host,
    n: usize,
    publish: impl FnOnce() -> anyhow::Result<std::process::Child>,
) -> anyhow::Result<f64> {
    let mut rx = host.events().subscribe();
    let started = Instant::now();
    let mut child = publish()?;
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await? {
            Ok(e) if e.body["event"] == "module" && e.body["data"]["body"].is_string() => {
                seen += 1;
                if std::env::var("BENCH_DEBUG").is_ok() && seen % 500 == 0 {
                    eprintln!("{seen} after {:?}", started.elapsed());
                }
            }
            Ok(e) => {
                if std::env::var("BENCH_DEBUG").is_ok() {
                    eprintln!("{}", e.body);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => seen += k as usize,
            Err(e) => anyhow::bail!("{e}"),
        }
    }
    let _ = child.wait();
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn count_out(host: &Arc<Host>, n: usize, send: serde_json::Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..64 {
        let host = host.clone();
        let send = send.clone();
        joins.push(tokio::spawn(async move {
            for _ in (t..n).step_by(64) {
                host.send_broker("b1", &send, Some((None, None))).await?;
            }
            anyhow::Ok(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = host.store().outbox_stats("b1").await?;
        if stats.done as usize >= n {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not all acknowledged: {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Runs both brokers, both directions.
pub fn run(quick: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let n = if quick { 5_000 } else { 50_000 };
    let body = "x".repeat(200);
    rt.block_on(async {
        let (host, store, dir) = start(
            "mqtt",
            &config("mqtt", "ws://127.0.0.1:8083", "bench/in", "qos = 1"),
        )
        .await?;
        let lines: String = (0..n).map(|_| format!("{body}\n")).collect();
        let path = dir.join("lines.txt");
        std::fs::write(&path, lines)?;
        eprintln!("mqtt: connected; {n} in");
        let rate_in = count_in(&host, n, || {
            Ok(std::process::Command::new("mosquitto_pub")
                .args(["-p", "18830", "-q", "1", "-t", "bench/in", "-l"])
                .stdin(std::fs::File::open(&path)?)
                .spawn()?)
        })
        .await?;
        eprintln!("mqtt: {n} out");
        let rate_out = count_out(&host, n, serde_json::json!({"topic": "bench/out", "body": body})).await?;
        println!("mqtt (Mosquitto, QoS 1, 200 B): in {rate_in:.0} msg/s (emitted, PUBACKed); out {rate_out:.0} msg/s durable (PUBACKed)");
        host.shutdown().await;
        store.close().await;

        let (host, store, _) = start(
            "stomp",
            &config("stomp", "ws://127.0.0.1:15674/ws", "/queue/bench-in", "heartbeat_ms = 10000"),
        )
        .await?;
        let py = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "target/peers/venv/bin/python".into());
        let script = format!(
            "import stomp\nc=stomp.Connection12([('127.0.0.1',61613)],vhost='/')\nc.connect('guest','guest',wait=True)\nfor i in range({n}): c.send('/queue/bench-in','{body}')\nc.disconnect()\n"
        );
        eprintln!("stomp: connected; {n} in");
        let rate_in = count_in(&host, n, || Ok(std::process::Command::new(&py).args(["-c", &script]).spawn()?)).await?;
        let rate_out = count_out(&host, n, serde_json::json!({"destination": "/queue/bench-out", "body": body})).await?;
        println!("stomp (RabbitMQ Web-STOMP, client-individual acks, 200 B): in {rate_in:.0} msg/s (emitted, ACKed); out {rate_out:.0} msg/s durable (receipts)");
        host.shutdown().await;
        store.close().await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
