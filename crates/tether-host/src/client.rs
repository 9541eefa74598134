//! One client (a stored instance or a dynamic connection) at run time: its
//! connection, its module, its state and counters, and the worker task that
//! runs them. Socket → connection → event → module hooks, one at a time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use tether::{Backoff, ConnectOptions, Event, ReconnectPolicy};

use crate::events::{body, EventBus, HostEvent};
use crate::modules::{ClientModule, ConnHandle, ConnectRequest, NoModule, TimerRequest};
use crate::store::{now_ms, rfc3339};

/// A client's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// Not connected and not trying.
    Closed,
    /// Connecting (TCP, TLS, handshake).
    Connecting,
    /// Open.
    Open,
    /// Close handshake in progress.
    Closing,
    /// Lost; waiting for the next attempt.
    Reconnecting,
    /// Its type is gone from the config: kept, never connected.
    Disabled,
}

impl ClientState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Closed => "closed",
            ClientState::Connecting => "connecting",
            ClientState::Open => "open",
            ClientState::Closing => "closing",
            ClientState::Reconnecting => "reconnecting",
            ClientState::Disabled => "disabled",
        }
    }
}

/// Counters and live facts.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state.
    pub state: ClientState,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Reconnect attempts made.
    pub reconnects: u64,
    /// When the current connection opened, RFC 3339.
    pub connected_since: Option<String>,
    /// Last keepalive round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Errors seen, by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl Status {
    /// A client that is closed and has done nothing yet.
    pub fn closed() -> Self {
        Status {
            state: ClientState::Closed,
            last_error: None,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            reconnects: 0,
            connected_since: None,
            rtt_ms: None,
            errors: Default::default(),
        }
    }
}

/// How to connect: the instance's settings merged with its type's.
#[derive(Clone)]
pub struct ClientSpec {
    /// URL.
    pub url: String,
    /// Basic-auth user and password.
    pub credentials: Option<(String, String)>,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// Subprotocols.
    pub protocols: Vec<String>,
    /// Connect timeout.
    pub timeout: Duration,
    /// Reconnect when the link is lost.
    pub reconnect: bool,
    /// Reconnect timing.
    pub policy: ReconnectPolicy,
    /// Keepalive interval and timeout (`None` = off).
    pub keepalive: (Option<Duration>, Option<Duration>),
    /// Offer compression.
    pub compression: bool,
    /// Honour HTTP_PROXY / HTTPS_PROXY / ALL_PROXY / NO_PROXY.
    pub use_env_proxy: bool,
    /// TLS options for `wss://`.
    pub tls: tether::TlsOptions,
}

impl ClientSpec {
    fn options(&self, headers: &BTreeMap<String, String>) -> ConnectOptions {
        let mut o = ConnectOptions::new();
        for (n, v) in headers {
            o.header(n.clone(), v.clone());
        }
        for p in &self.protocols {
            o.protocol(p.clone());
        }
        if let Some((u, p)) = &self.credentials {
            o.basic_auth(u.clone(), p.clone());
        }
        if self.use_env_proxy {
            o.proxy(tether::ProxyMode::Environment);
        }
        o.tls(self.tls.clone());
        o.connect_timeout(self.timeout)
            .keepalive(self.keepalive.0, self.keepalive.1)
            .compression(self.compression);
        o
    }
}

enum Control {
    Connect,
    Disconnect,
    Shutdown,
    Timer(u64),
}

/// A client at run time. Cheap to share; the worker task does the work.
pub struct ClientRuntime {
    /// The key.
    pub key: String,
    /// Not stored: lives until closed.
    pub dynamic: bool,
    spec: Mutex<ClientSpec>,
    status: Mutex<Status>,
    handle: ConnHandle,
    control: mpsc::UnboundedSender<Control>,
    history: Mutex<VecDeque<Arc<HostEvent>>>,
    bus: EventBus,
}

impl ClientRuntime {
    /// Starts the worker for a client. `make_module` builds its module once
    /// the runtime exists (it needs the handle and the event bus).
    pub fn spawn(
        key: String,
        dynamic: bool,
        spec: ClientSpec,
        initial: ClientState,
        bus: EventBus,
        make_module: impl FnOnce(
            &Arc<ClientRuntime>,
            mpsc::UnboundedSender<TimerRequest>,
        ) -> Box<dyn ClientModule>,
    ) -> Arc<ClientRuntime> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (timers_tx, timers_rx) = mpsc::unbounded_channel();
        let rt = Arc::new(ClientRuntime {
            handle: ConnHandle::new(key.clone()),
            key,
            dynamic,
            spec: Mutex::new(spec),
            status: Mutex::new(Status {
                state: initial,
                ..Status::closed()
            }),
            control,
            history: Mutex::new(VecDeque::new()),
            bus,
        });
        let module = make_module(&rt, timers_tx);
        tokio::spawn(Worker::new(rt.clone(), module, control_rx, timers_rx).run());
        rt
    }

    /// The connection handle modules and other clients use.
    pub fn handle(&self) -> ConnHandle {
        self.handle.clone()
    }

    /// A copy of the status, with the live round-trip time.
    pub fn status(&self) -> Status {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(rtt) = self.handle.connection().and_then(|c| c.rtt()) {
            s.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
        }
        s
    }

    /// The last events, oldest first.
    pub fn history(&self) -> Vec<Arc<HostEvent>> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Replaces the settings used by the next connection attempt.
    pub fn set_spec(&self, spec: ClientSpec) {
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = spec;
    }

    /// Connects (no-op when connected or connecting).
    pub fn connect(&self) {
        let _ = self.control.send(Control::Connect);
    }

    /// Disconnects and stops reconnecting.
    pub fn disconnect(&self) {
        let _ = self.control.send(Control::Disconnect);
    }

    /// Closes and ends the worker.
    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    /// Sends a message; fails when not open.
    pub fn send(&self, message: &tether::Message) -> Result<(), String> {
        if self.status().state != ClientState::Open {
            return Err(format!("client {:?} is not open", self.key));
        }
        let result = match message {
            tether::Message::Text(t) => self.handle.send_text(t),
            tether::Message::Binary(b) => self.handle.send_binary(b),
        };
        if result.is_ok() {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.messages_out += 1;
            s.bytes_out += message.len() as u64;
        }
        result
    }

    /// Publishes an event for this client.
    pub fn publish(&self, body: serde_json::Value) {
        let event = HostEvent {
            client: self.key.clone(),
            dynamic: self.dynamic,
            at: rfc3339(now_ms()),
            body,
        };
        self.bus.publish(&self.history, event);
    }

    /// Publishes an error event and counts it by kind.
    pub(crate) fn publish_error(&self, kind: &str, message: &str) {
        self.update(|s| *s.errors.entry(kind.to_string()).or_default() += 1);
        self.publish(body::error(kind, message));
    }

    fn set_state(&self, state: ClientState) {
        let changed = {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            let changed = s.state != state;
            s.state = state;
            if state != ClientState::Open {
                s.connected_since = None;
            }
            changed
        };
        if changed {
            self.publish(body::state(state.as_str()));
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The task behind one client.
struct Worker {
    rt: Arc<ClientRuntime>,
    module: Option<Box<dyn ClientModule>>,
    control: mpsc::UnboundedReceiver<Control>,
    timers: mpsc::UnboundedReceiver<TimerRequest>,
    timer_tasks: HashMap<u64, JoinHandle<()>>,
    events: Option<tether::Receiver>,
    want: bool,
    backoff: Option<Backoff>,
    retry_at: Option<tokio::time::Instant>,
}

impl Worker {
    fn new(
        rt: Arc<ClientRuntime>,
        module: Box<dyn ClientModule>,
        control: mpsc::UnboundedReceiver<Control>,
        timers: mpsc::UnboundedReceiver<TimerRequest>,
    ) -> Self {
        Worker {
            rt,
            module: Some(module),
            control,
            timers,
            timer_tasks: HashMap::new(),
            events: None,
            want: false,
            backoff: None,
            retry_at: None,
        }
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                c = self.control.recv() => match c {
                    Some(Control::Connect) => {
                        self.want = true;
                        if self.events.is_none() {
                            self.retry_at = None;
                            self.attempt().await;
                        }
                    }
                    Some(Control::Disconnect) => self.stop("disconnected by operator"),
                    Some(Control::Timer(id)) => self.timer(id).await,
                    Some(Control::Shutdown) | None => {
                        self.stop("host shutting down");
                        self.drain_until_closed().await;
                        break;
                    }
                },
                Some(t) = self.timers.recv() => self.schedule(t),
                event = next_event(&mut self.events) => match event {
                    Some(e) => self.handle_event(e).await,
                    None => self.events = None,
                },
                _ = sleep_until(self.retry_at), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    self.attempt().await;
                }
            }
        }
        for (_, t) in self.timer_tasks.drain() {
            t.abort();
        }
    }

    /// Runs a hook on a blocking thread, keeping hooks in order.
    async fn hook<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn ClientModule, &ConnHandle) -> Result<R, crate::modules::ModuleError>
            + Send
            + 'static,
    ) -> Option<R> {
        let mut module = self.module.take().unwrap_or_else(|| Box::new(NoModule));
        let handle = self.rt.handle();
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let r = f(module.as_mut(), &handle);
            crate::metrics::HANDLER_DURATION.observe(started.elapsed());
            (module, r)
        })
        .await;
        match joined {
            Ok((module, result)) => {
                self.module = Some(module);
                match result {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(client = %self.rt.key, error = %e, "handler failed");
                        self.rt.publish_error("module", &e.message);
                        None
                    }
                }
            }
            Err(e) => {
                // A panicking Rust module: keep the client running without it.
                self.rt
                    .publish_error("module", &format!("handler panicked: {e}; module disabled"));
                self.module = Some(Box::new(NoModule));
                None
            }
        }
    }

    async fn attempt(&mut self) {
        let spec = self
            .rt
            .spec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self.backoff.is_none() {
            self.backoff = Some(Backoff::new(spec.policy.clone()));
        }
        self.rt.set_state(ClientState::Connecting);
        let request = ConnectRequest {
            key: self.rt.key.clone(),
            url: spec.url.clone(),
            headers: spec.headers.clone(),
        };
        let prepared = self
            .hook(move |m, _| {
                let mut r = request;
                m.before_connect(&mut r).map(|()| r)
            })
            .await;
        let Some(request) = prepared else {
            return self.lost(&spec, "before_connect failed".into());
        };
        match tether::open(
            self.rt.key.clone(),
            &request.url,
            &spec.options(&request.headers),
        ) {
            Ok((conn, rx)) => {
                self.rt.handle.set(Some(conn));
                self.events = Some(rx);
            }
            Err(e) => {
                // The URL or headers are unusable: retrying cannot help.
                self.rt.publish_error(e.kind(), &e.to_string());
                self.rt.update(|s| s.last_error = Some(e.to_string()));
                self.want = false;
                self.rt.set_state(ClientState::Closed);
            }
        }
    }

    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Open { protocol, .. } => {
                if let Some(b) = self.backoff.as_mut() {
                    b.opened(Instant::now());
                }
                self.rt.set_state(ClientState::Open);
                self.rt
                    .update(|s| s.connected_since = Some(rfc3339(now_ms())));
                self.rt.publish(body::open(protocol.as_deref()));
                self.hook(|m, c| m.on_open(c)).await;
            }
            Event::Message(message) => {
                self.rt.update(|s| {
                    s.messages_in += 1;
                    s.bytes_in += message.len() as u64;
                });
                self.rt.publish(body::message(&message));
                self.hook(move |m, c| m.on_message(c, &message)).await;
            }
            Event::Closed(closed) => {
                self.rt.handle.set(None);
                self.events = None;
                let error = closed
                    .error
                    .as_ref()
                    .map(|e| (e.kind().to_string(), e.to_string()));
                if let Some((kind, message)) = error.clone() {
                    self.rt.update(|s| s.last_error = Some(message.clone()));
                    self.rt.publish_error(&kind, &message);
                    self.hook(move |m, c| m.on_error(c, &kind, &message)).await;
                }
                let (code, reason) = (closed.code, closed.reason.clone());
                self.rt.publish(body::close(code, &reason));
                self.hook(move |m, c| m.on_close(c, code, &reason)).await;
                let spec = self
                    .rt
                    .spec
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let why = error.map_or_else(|| format!("closed with {}", closed.code), |(_, m)| m);
                self.lost(&spec, why);
            }
            _ => {}
        }
    }

    /// The link is down: retry later, or settle as closed.
    fn lost(&mut self, spec: &ClientSpec, why: String) {
        if !(self.want && spec.reconnect) {
            self.want = false;
            self.rt.set_state(ClientState::Closed);
            return;
        }
        let backoff = self
            .backoff
            .get_or_insert_with(|| Backoff::new(spec.policy.clone()));
        match backoff.next_delay(Instant::now()) {
            Some((attempt, delay)) => {
                self.rt.update(|s| s.reconnects += 1);
                self.rt.set_state(ClientState::Reconnecting);
                self.rt
                    .publish(body::reconnecting(attempt, delay.as_millis()));
                self.retry_at = Some(tokio::time::Instant::now() + delay);
            }
            None => {
                let attempts = backoff.attempts();
                self.rt.update(|s| {
                    s.last_error = Some(format!("gave up after {attempts} attempts: {why}"))
                });
                self.want = false;
                self.rt.set_state(ClientState::Closed);
            }
        }
    }

    fn stop(&mut self, reason: &str) {
        self.want = false;
        self.retry_at = None;
        self.backoff = None;
        match self.rt.handle.connection() {
            Some(conn) => {
                if conn.close(1000, reason).is_ok() {
                    self.rt.set_state(ClientState::Closing);
                }
            }
            None => {
                if self.rt.status().state != ClientState::Disabled {
                    self.rt.set_state(ClientState::Closed);
                }
            }
        }
    }

    async fn drain_until_closed(&mut self) {
        let deadline = tokio::time::sleep(Duration::from_secs(6));
        tokio::pin!(deadline);
        while self.events.is_some() {
            tokio::select! {
                e = next_event(&mut self.events) => match e {
                    Some(e) => self.handle_event(e).await,
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
    }

    fn schedule(&mut self, t: TimerRequest) {
        let tx = self.rt.control.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(t.delay).await;
            if tx.send(Control::Timer(t.id)).is_err() {
                return;
            }
            if let Some(every) = t.every {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.send(Control::Timer(t.id)).is_err() {
                        return;
                    }
                }
            }
        });
        self.timer_tasks.insert(t.id, task);
    }

    async fn timer(&mut self, id: u64) {
        let keep = self.hook(move |m, c| m.on_timer(c, id)).await;
        if keep != Some(true) {
            if let Some(t) = self.timer_tasks.remove(&id) {
                t.abort();
            }
        }
    }
}

async fn next_event(rx: &mut Option<tether::Receiver>) -> Option<Event> {
    match rx {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
