//! `tether-bench --host [--quick]`, the rest of the host's paths, in-process
//! with the API served on a real loopback socket:
//!
//! - Sends through the API: 8 keep-alive HTTP/1.1 connections each post
//!   `POST /api/clients/{key}/send` one after the other to a client of the
//!   neutral server's `/sink`. Reported: sends/s and the latency of one
//!   call (p50/p99), and that the server received every one.
//! - Events to consumers: a client is flooded with N messages; 1 and then
//!   10 subscribers read `GET /api/events` (SSE). Reported: events/s that
//!   reach each subscriber (all N, in order of their ids).
//! - Many instances (`--host-idle N`, a process of its own so the heap
//!   starts clean): N instances of one type with a small Lua module, all
//!   connected to `/echo` and idle. Reported: heap and RSS per instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tether_host::api::{router, AppState, TokenCheck};
use tether_host::{Host, Loaded, SqliteStore, Store};

use crate::measure::{pct_ms, sink_done};

const TOKEN: &str = "bench-token";

struct Served {
    host: Arc<Host>,
    store: Arc<SqliteStore>,
    api: std::net::SocketAddr,
    dir: std::path::PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn stop(self) {
        self.server.abort();
        self.host.shutdown().await;
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host with one type `t` (with this Lua module, if any) and its API on
/// a loopback port.
async fn serve(name: &str, module: Option<&str>) -> anyhow::Result<Served> {
    serve_with(name, module, "").await
}

/// [`serve`] with more lines in the type's table.
async fn serve_with(name: &str, module: Option<&str>, type_lines: &str) -> anyhow::Result<Served> {
    let dir = std::env::temp_dir().join(format!("tether-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let extra = match module {
        Some(source) => {
            std::fs::write(dir.join("m.lua"), source)?;
            "module = \"m.lua\"\n"
        }
        None => "",
    };
    let toml = format!(
        "[[client_type]]\nname = \"t\"\n{extra}{type_lines}[client_type.defaults]\nurl = \"ws://127.0.0.1:1/\"\n[client_type.defaults.keepalive]\nping_interval_secs = 0\n"
    );
    let store =
        Arc::new(SqliteStore::open(&format!("sqlite://{}", dir.join("b.db").display())).await?);
    let loaded = Loaded::parse(&toml, "bench.toml", &dir)?;
    let host = Host::start(&loaded, store.clone() as Arc<dyn Store>).await?;
    let app = router(AppState::new(host.clone(), TokenCheck::new(TOKEN)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Served {
        host,
        store,
        api,
        dir,
        server,
    })
}

async fn add_client(host: &Arc<Host>, key: &str, url: &str) -> anyhow::Result<()> {
    let input = tether_host::InstanceInput {
        type_name: Some("t".into()),
        key: Some(key.into()),
        url: Some(url.into()),
        auto_connect: Some(true),
        ..Default::default()
    };
    host.create_client(input, "bench").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.get_client(key).await?.status.state.as_str() != "open" {
        anyhow::ensure!(Instant::now() < deadline, "{key} never opened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection: a request, then its whole answer.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Posts `body` to `path`; returns the status.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?;
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("bad status line: {head}"))?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    self.fill().await?;
                }
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the API closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Sends through the API: 8 keep-alive connections, N sends in all.
async fn api_sends(ws: std::net::SocketAddr, n: usize) -> anyhow::Result<()> {
    const CONNS: usize = 8;
    let s = serve("api-sends", None).await?;
    add_client(&s.host, "k", &format!("ws://{ws}/sink?n={n}")).await?;
    let events = s.host.events().subscribe();
    let body = serde_json::json!({"text": "x".repeat(200)}).to_string();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let (api, body) = (s.api, body.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = Http::open(api).await?;
            let mut lat = Vec::with_capacity(n / CONNS + 1);
            for _ in (c..n).step_by(CONNS) {
                let at = Instant::now();
                let status = http.post("/api/clients/k/send", &body).await?;
                anyhow::ensure!(status == 202, "send answered {status}");
                lat.push(at.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed();
    // The server says "done" once it has read all N.
    tokio::time::timeout(Duration::from_secs(60), sink_done(events)).await?;
    lat.sort();
    println!(
        "sends through the API, 200 B, {CONNS} keep-alive connections: {:.0} sends/s; call p50 {:.2} ms, p99 {:.2} ms; all {n} received",
        n as f64 / elapsed.as_secs_f64(),
        pct_ms(&lat, 0.5),
        pct_ms(&lat, 0.99)
    );
    s.stop().await;
    Ok(())
}

/// Reads an SSE stream until it has seen `n` message events; checks their
/// ids rise by one. Returns when it has them all.
async fn subscriber(api: std::net::SocketAddr, n: usize) -> anyhow::Result<Instant> {
    let mut stream = TcpStream::connect(api).await?;
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut pending = String::new();
    let mut chunk = vec![0u8; 64 << 10];
    let (mut got, mut last_id) = (0usize, None::<i64>);
    while got < n {
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "the stream ended after {got} events");
        pending.push_str(&String::from_utf8_lossy(&chunk[..read]));
        // Whole events only; keep a partial one for the next read.
        let Some(cut) = pending.rfind("\n\n") else {
            continue;
        };
        for event in pending[..cut].split("\n\n") {
            if !event.contains("event: message") {
                continue;
            }
            let id = event
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.trim().parse::<i64>().ok());
            if let (Some(prev), Some(id)) = (last_id, id) {
                anyhow::ensure!(id == prev + 1, "event {id} after {prev}");
            }
            last_id = id.or(last_id);
            got += 1;
        }
        pending.drain(..cut + 2);
    }
    Ok(Instant::now())
}

/// Events to consumers: `subs` subscribers of a flood of `n` messages.
async fn sse_fanout(ws: std::net::SocketAddr, n: usize, subs: usize) -> anyhow::Result<f64> {
    let s = serve("sse", None).await?;
    let mut readers = Vec::new();
    for _ in 0..subs {
        readers.push(tokio::spawn(subscriber(s.api, n)));
    }
    // Let every stream subscribe before the flood starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    add_client(&s.host, "f", &format!("ws://{ws}/json?n={n}&size=200")).await?;
    let mut slowest = started;
    for r in readers {
        slowest = slowest.max(r.await??);
    }
    let rate = n as f64 / (slowest - started).as_secs_f64();
    s.stop().await;
    Ok(rate)
}

/// Starts `tether-bench --host-idle N` and reads its answer; `lua_state`
/// is the type's (`instance` or `shared`), or `none` for a type without a
/// module.
fn idle_instances(ws: std::net::SocketAddr, n: usize, lua_state: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--host-idle", &n.to_string(), &ws.to_string()])
        .env("BENCH_IDLE_MODULE", lua_state)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "--host-idle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// `--host-idle N WS`: N idle instances with a Lua module, in this process.
pub fn idle_child(
    n: usize,
    ws: std::net::SocketAddr,
    heap: impl Fn() -> usize,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let module = "local seen = 0\nfunction on_open(conn) end\nfunction on_message(conn, msg)\n  seen = seen + 1\nend\n";
        // BENCH_IDLE_MODULE: instance (the default), shared, or none.
        let mode = std::env::var("BENCH_IDLE_MODULE").unwrap_or_else(|_| "instance".into());
        let s = match mode.as_str() {
            "none" => serve("idle", None).await?,
            "instance" | "shared" => serve_with("idle", Some(module), &format!("lua_state = \"{mode}\"\n")).await?,
            other => anyhow::bail!("BENCH_IDLE_MODULE={other}: use instance, shared or none"),
        };
        let (heap0, rss0) = (heap(), crate::memory::rss());
        let url = format!("ws://{ws}/echo");
        for i in 0..n {
            let input = tether_host::InstanceInput {
                type_name: Some("t".into()),
                key: Some(format!("i{i}")),
                url: Some(url.clone()),
                auto_connect: Some(true),
                ..Default::default()
            };
            s.host.create_client(input, "bench").await?;
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let open = s
                .host
                .list_clients()
                .await?
                .iter()
                .filter(|c| c.status.state.as_str() == "open")
                .count();
            if open == n {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "only {open} of {n} opened");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let heap_per = (heap() - heap0) as f64 / n as f64;
        let rss_per = crate::memory::rss().saturating_sub(rss0) as f64 / n as f64;
        println!(
            "{n} idle instances (lua_state: {mode}), connected: heap {:.1} KiB, RSS {:.1} KiB per instance (goal <= 32 KiB)",
            heap_per / 1024.0,
            rss_per / 1024.0
        );
        // What an operator's scrape and list cost with that many.
        let started = Instant::now();
        let text = tether_host::metrics::render(&s.host).await;
        let render = started.elapsed();
        let started = Instant::now();
        let listed = s.host.list_clients().await?.len();
        let list = started.elapsed();
        anyhow::ensure!(listed == n, "listed {listed} of {n}");
        println!(
            "  with {n} instances: /metrics rendered in {:.0} ms ({} KiB), the client list in {:.0} ms",
            render.as_secs_f64() * 1e3,
            text.len() / 1024,
            list.as_secs_f64() * 1e3
        );
        s.stop().await;
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Runs the API, SSE and many-instance scenarios.
pub fn run(ws: std::net::SocketAddr, quick: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        api_sends(ws, if quick { 5_000 } else { 50_000 }).await?;
        let n = if quick { 5_000 } else { 50_000 };
        let one = sse_fanout(ws, n, 1).await?;
        let ten = sse_fanout(ws, n, 10).await?;
        println!(
            "SSE, {n} events of 200 B: 1 subscriber {one:.0} events/s; 10 subscribers {ten:.0} events/s to each ({:.2}x)",
            ten / one
        );
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    for lua_state in ["instance", "shared"] {
        idle_instances(ws, if quick { 1_000 } else { 10_000 }, lua_state)?;
    }
    Ok(())
}
