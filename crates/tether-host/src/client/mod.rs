//! One client (a stored instance or a dynamic connection) at run time: its
//! connection, its module, its state and counters, and the worker task that
//! runs them. Socket → connection → event → module hooks, one at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use tether::{ConnectOptions, ReconnectPolicy};

use crate::events::{body, EventBus, HostEvent};
use crate::modules::{ClientModule, ConnHandle, TimerRequest};
use crate::store::{now_ms, rfc3339};

/// A client's state as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// A hook call overran its limit: closed, no hooks run, not reconnected
    /// until an operator connects it again.
    Failed,
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
            ClientState::Failed => "failed",
        }
    }
}

/// Counters and live facts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The state.
    pub state: ClientState,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Messages received.
    pub messages_in: u64,
    /// Messages sent: by the API, the module and the outbox.
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
    /// What the module reports of its protocol (`conn:report{…}`).
    pub protocol: Option<serde_json::Value>,
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
            protocol: None,
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
    /// The module's settings: the type's, with the instance's on top.
    pub settings: serde_json::Value,
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

mod delivery;
mod worker;
use worker::Worker;

enum Control {
    Connect,
    Disconnect,
    Shutdown,
    Timer(u64),
    /// The link's next attempt asks what to connect to.
    Attempt(AttemptReply),
}

/// Where the worker answers an attempt's question.
type AttemptReply = tokio::sync::oneshot::Sender<Result<tether::Attempt, String>>;

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
    history: Mutex<crate::events::History>,
    bus: EventBus,
    /// The event names its type logs (`None`: all).
    logged: Option<Vec<String>>,
}

/// What a client starts with.
pub struct ClientSetup {
    /// The key.
    pub key: String,
    /// Not stored: lives until closed.
    pub dynamic: bool,
    /// How to connect.
    pub spec: ClientSpec,
    /// The state before anything happens (closed, or disabled).
    pub initial: ClientState,
    /// Where its events go.
    pub bus: EventBus,
    /// The event names its type logs (`None`: all).
    pub logged: Option<Vec<String>>,
    /// How long one hook call may take before the client fails.
    pub call_limit: Duration,
}

impl ClientRuntime {
    /// Starts the worker for a client. `make_module` builds its module once
    /// the runtime exists (it needs the handle and the event bus).
    pub fn spawn(
        setup: ClientSetup,
        make_module: impl FnOnce(
            &Arc<ClientRuntime>,
            mpsc::UnboundedSender<TimerRequest>,
        ) -> Box<dyn ClientModule>,
    ) -> Arc<ClientRuntime> {
        let ClientSetup {
            key,
            dynamic,
            spec,
            initial,
            bus,
            logged,
            call_limit,
        } = setup;
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
            history: Mutex::new(crate::events::History::default()),
            bus,
            logged,
        });
        let module = make_module(&rt, timers_tx);
        tokio::spawn(Worker::new(rt.clone(), module, call_limit, control_rx, timers_rx).run());
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
        (s.messages_out, s.bytes_out) = self.handle.sent();
        s.protocol = self.handle.protocol();
        s
    }

    /// The last events, oldest first.
    pub fn history(&self) -> Vec<Arc<HostEvent>> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events()
    }

    /// The settings the next connection attempt uses.
    pub(crate) fn spec(&self) -> ClientSpec {
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
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

    /// Sends a message now; fails when not open, closing or the outgoing
    /// buffer is full.
    pub fn send(&self, message: &tether::Message) -> Result<(), tether::SendError> {
        match self.status().state {
            ClientState::Open => self.handle.send(message),
            ClientState::Closing => Err(tether::SendError::Closed),
            _ => Err(tether::SendError::NotOpen),
        }
    }

    /// Counts a message the outbox sent on the connection.
    pub(crate) fn count_sent(&self, message: &tether::Message) {
        self.handle.count_sent(message.len());
    }

    /// Publishes a received message: without its data when the data is
    /// larger than `event_data_limit_bytes` (the module got all of it).
    pub(crate) fn publish_message(&self, message: &tether::Message) {
        let limit = self.bus.memory().data_limit;
        if message.len() > limit {
            let kind = match message {
                tether::Message::Text(_) => "text",
                tether::Message::Binary(_) => "binary",
            };
            self.publish(serde_json::json!({
                "event": "message", "type": kind, "size": message.len(),
                "truncated": "event_data_limit_bytes",
            }));
        } else {
            self.publish(body::message(message));
        }
    }

    /// Bytes of events this client keeps in its history.
    pub fn history_bytes(&self) -> usize {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes()
    }

    /// Publishes an event for this client.
    pub fn publish(&self, body: serde_json::Value) {
        let event = HostEvent {
            client: self.key.clone(),
            dynamic: self.dynamic,
            at: rfc3339(now_ms()),
            body,
            seq: Default::default(),
            held: None,
            json: Default::default(),
        };
        let logged = self.logged.as_ref().is_none_or(|names| {
            event
                .body
                .get("event")
                .and_then(|v| v.as_str())
                .is_some_and(|n| names.iter().any(|x| x == n))
        });
        self.bus.publish(&self.history, event, logged);
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
