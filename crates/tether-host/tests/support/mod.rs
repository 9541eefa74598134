//! Test fixtures: echo servers from a peer library, hosts on temporary
//! config folders, and a one-shot API caller.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use tether_host::api::{router, AppState, TokenCheck};
use tether_host::{Host, Loaded, SqliteStore, Store};

pub const TOKEN: &str = "test-token";

/// A tungstenite echo server that can be stopped (dropping every
/// connection) and started again on the same port.
pub struct EchoServer {
    pub addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> EchoServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tasks2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                tasks2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        EchoServer { addr, tasks }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Stops listening and drops every connection (TCP ends, no close frame).
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A folder with a config file and modules.
pub struct Workspace {
    pub dir: PathBuf,
}

impl Workspace {
    pub fn new(name: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!(
            "tether-host-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(dir.join("modules")).unwrap();
        Workspace { dir }
    }

    pub fn write(&self, path: &str, text: &str) -> &Self {
        std::fs::write(self.dir.join(path), text).unwrap();
        self
    }

    pub fn config(&self) -> Loaded {
        Loaded::load(&self.dir.join("tether.toml")).unwrap()
    }

    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("tether.db").display())
    }
}

impl Workspace {
    /// A workspace whose config has one predefined type `t` with this Lua
    /// module, connecting to `url`.
    pub fn with_module(name: &str, module: &str, url: &str) -> Workspace {
        let ws = Workspace::new(name);
        ws.write("modules/m.lua", module);
        ws.write(
            "tether.toml",
            &format!(
                "[[client_type]]\nname = \"t\"\nmodule = \"modules/m.lua\"\npredefined = true\n[client_type.defaults]\nurl = \"{url}\"\n"
            ),
        );
        ws
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) * 1000
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            % 1000)
}

/// A host and its router over the given store URL.
pub async fn start_host(config: &Loaded, store_url: &str) -> (Arc<Host>, axum::Router) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(store_url).await.unwrap());
    let host = Host::start(config, store).await.unwrap();
    let app = router(AppState::new(host.clone(), TokenCheck::new(TOKEN)));
    (host, app)
}

/// Calls the router once; returns the status and the JSON body (Null when empty).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call_raw(app, method, path, body.map(|b| b.to_string()), Some(TOKEN)).await
}

pub async fn call_raw(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// Waits until the client's state is `state` (polling the API).
pub async fn wait_state(app: &axum::Router, key: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, v) = call(app, "GET", &format!("/api/clients/{key}"), None).await;
        if v["state"] == state {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never reached {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for an event of `client` matching `pred` on the host's bus.
pub async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<tether_host::events::HostEvent>>,
    client: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("event timed out")
            .expect("bus closed");
        if e.client == client && pred(&e.body) {
            return e.body.clone();
        }
    }
}
