//! Handler modules: the hooks a client type runs for its connections.
//!
//! [`ClientModule`] is the Rust trait; Lua modules ([`lua::LuaFactory`]) are
//! one implementation of it. The host calls the hooks of one client one at a
//! time, in event order, on a blocking thread, so a slow handler never
//! stalls another client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

pub mod lua;

pub use tether::Message;

/// A hook failed: a runtime error, or the CPU limit ran out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModuleError {
    /// What happened, with the module file and line where known.
    pub message: String,
}

impl ModuleError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        ModuleError {
            message: message.into(),
        }
    }
}

/// What `before_connect` may change for the next connection attempt.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The instance key (read-only).
    pub key: String,
    /// The URL to connect to.
    pub url: String,
    /// The request headers.
    pub headers: BTreeMap<String, String>,
    /// The instance's user and password (read-only: a broker module logs
    /// in with them).
    pub credentials: Option<(String, String)>,
    /// The module's settings for this attempt (read-only): the type's
    /// `[client_type.settings]` with the instance's on top.
    pub settings: serde_json::Value,
}

/// How long the host waits for a module's goodbye before it closes.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The connection, as handlers see it: it follows the instance across
/// reconnects.
#[derive(Clone)]
pub struct ConnHandle {
    key: String,
    current: Arc<Mutex<Option<tether::Connection>>>,
    ready: Arc<Ready>,
    durable: Arc<std::sync::OnceLock<crate::outbox::DurableSender>>,
    sent: Arc<Sent>,
    protocol: Arc<Mutex<Option<serde_json::Value>>>,
    gate: Arc<std::sync::OnceLock<SendGate>>,
}

/// Whether an instance may send now: in a cluster, only while this node
/// holds its lease and renewed it recently (a node that wakes from a pause
/// sends nothing).
pub type SendGate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What went out on a client's connections, whoever sent it (the API, the
/// module, the outbox): every send is counted here.
#[derive(Default)]
pub(crate) struct Sent {
    pub messages: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
}

/// Whether the outbox may deliver on the current connection.
#[derive(Default)]
pub(crate) struct Ready {
    flag: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

impl ConnHandle {
    /// A handle with no connection yet.
    pub fn new(key: impl Into<String>) -> Self {
        ConnHandle {
            key: key.into(),
            current: Arc::new(Mutex::new(None)),
            ready: Arc::default(),
            durable: Arc::default(),
            sent: Arc::default(),
            protocol: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// Makes every send ask `gate` first (once; a cluster's lease check).
    pub(crate) fn set_gate(&self, gate: SendGate) {
        let _ = self.gate.set(gate);
    }

    /// The send gate, if any (a cluster's lease check).
    pub(crate) fn gate(&self) -> Option<SendGate> {
        self.gate.get().cloned()
    }

    /// Whether the gate lets this instance send now.
    pub(crate) fn may_send(&self) -> bool {
        self.gate.get().is_none_or(|g| g(&self.key))
    }

    /// The live connection, if sending is allowed.
    fn sendable(&self) -> Result<tether::Connection, tether::SendError> {
        if !self.may_send() {
            // Fenced: this node no longer holds the lease; the connection
            // is being closed.
            return Err(tether::SendError::Closed);
        }
        self.connection().ok_or(tether::SendError::NotOpen)
    }

    /// What the module reports of its protocol's state (a broker type: its
    /// subscriptions, negotiated heart-beats, when the broker was last
    /// heard); shown by the API and the UI.
    pub fn report(&self, state: serde_json::Value) {
        *self.protocol.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
    }

    /// The last [`report`](Self::report).
    pub fn protocol(&self) -> Option<serde_json::Value> {
        self.protocol
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts a message that went out.
    pub(crate) fn count_sent(&self, len: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.sent.messages.fetch_add(1, Relaxed);
        self.sent.bytes.fetch_add(len as u64, Relaxed);
    }

    /// Messages and payload bytes sent so far.
    pub(crate) fn sent(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.sent.messages.load(Relaxed),
            self.sent.bytes.load(Relaxed),
        )
    }

    /// Gives the handle its client's durable sends (once).
    pub(crate) fn set_durable(&self, sender: crate::outbox::DurableSender) {
        let _ = self.durable.set(sender);
    }

    /// The client's durable sends, if it has an outbox (stored instances).
    pub fn durable(&self) -> Option<&crate::outbox::DurableSender> {
        self.durable.get()
    }

    /// Says the connection is ready for the outbox's messages (after the
    /// module's own login or subscribe, with `ready = "module"`).
    pub fn mark_ready(&self) {
        self.ready
            .flag
            .store(true, std::sync::atomic::Ordering::Release);
        self.ready.changed.notify_waiters();
    }

    pub(crate) fn reset_ready(&self) {
        self.ready
            .flag
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Waits until the connection is marked ready.
    pub(crate) async fn wait_ready(&self) {
        loop {
            let changed = self.ready.changed.notified();
            if self.ready.flag.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            changed.await;
        }
    }

    /// Stores a message in the client's outbox (from a hook's thread).
    pub fn send_durable(
        &self,
        message: &tether::Message,
        id: Option<String>,
        ttl_secs: Option<u64>,
    ) -> Result<crate::outbox::Stored, String> {
        let sender = self.durable().ok_or_else(|| {
            format!(
                "client {:?} has no outbox (dynamic connections cannot send durably)",
                self.key
            )
        })?;
        sender
            .send_blocking(message, id, ttl_secs)
            .map_err(|e| e.to_string())
    }

    /// The instance key.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn set(&self, conn: Option<tether::Connection>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// The live connection, if any.
    pub fn connection(&self) -> Option<tether::Connection> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `connecting`, `open`, `closing` or `closed`.
    pub fn state(&self) -> &'static str {
        self.connection().map_or("closed", |c| c.state().as_str())
    }

    /// Sends a message now (handlers never wait): the one counted path for
    /// every send on an instance's connection.
    pub fn send(&self, message: &tether::Message) -> Result<(), tether::SendError> {
        let conn = self.sendable()?;
        conn.try_send(message)?;
        self.count_sent(message.len());
        Ok(())
    }

    /// Sends a text message now.
    pub fn send_text(&self, text: &str) -> Result<(), tether::SendError> {
        let conn = self.sendable()?;
        conn.try_send_text(text)?;
        self.count_sent(text.len());
        Ok(())
    }

    /// Sends a binary message now.
    pub fn send_binary(&self, data: &[u8]) -> Result<(), tether::SendError> {
        let conn = self.sendable()?;
        conn.try_send_binary(data)?;
        self.count_sent(data.len());
        Ok(())
    }

    /// Starts the close handshake.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), String> {
        let conn = self.connection().ok_or("not connected")?;
        conn.close(code, reason).map_err(|e| e.to_string())
    }
}

/// A timer a module asked for.
#[derive(Debug, Clone, Copy)]
pub struct TimerRequest {
    /// The module's id for it.
    pub id: u64,
    /// First firing after this long.
    pub delay: Duration,
    /// Then again every this long, if set.
    pub every: Option<Duration>,
}

/// Finds a client's connection by key.
pub type ClientLookup = Arc<dyn Fn(&str) -> Option<ConnHandle> + Send + Sync>;

/// What the host gives a module when it creates it for an instance.
#[derive(Clone)]
pub struct ModuleContext {
    /// The instance key.
    pub key: String,
    /// The instance's connection.
    pub conn: ConnHandle,
    /// Publishes a value on the instance's event stream as a `module` event.
    pub emit: Arc<dyn Fn(serde_json::Value) + Send + Sync>,
    /// Finds another client's connection by key.
    pub clients: ClientLookup,
    /// Schedules timers; they come back as [`ClientModule::on_timer`].
    pub timers: mpsc::UnboundedSender<TimerRequest>,
}

/// The hooks of one client instance. Every hook has a default that does
/// nothing, so an implementation overrides only what it needs.
pub trait ClientModule: Send {
    /// Before each connection attempt; may change the URL and headers.
    fn before_connect(&mut self, _request: &mut ConnectRequest) -> Result<(), ModuleError> {
        Ok(())
    }
    /// The connection opened.
    fn on_open(&mut self, _conn: &ConnHandle) -> Result<(), ModuleError> {
        Ok(())
    }
    /// A message arrived.
    fn on_message(&mut self, _conn: &ConnHandle, _message: &Message) -> Result<(), ModuleError> {
        Ok(())
    }
    /// The connection failed: `kind` as in [`tether::Error::kind`].
    fn on_error(
        &mut self,
        _conn: &ConnHandle,
        _kind: &str,
        _description: &str,
    ) -> Result<(), ModuleError> {
        Ok(())
    }
    /// The connection closed.
    fn on_close(
        &mut self,
        _conn: &ConnHandle,
        _code: u16,
        _reason: &str,
    ) -> Result<(), ModuleError> {
        Ok(())
    }
    /// Before an operator's close of an open connection: the module may
    /// say goodbye in its protocol (STOMP DISCONNECT, MQTT DISCONNECT).
    /// `true`: the module closes the connection itself once the server
    /// answered (the host closes it anyway after [`CLOSE_GRACE`]).
    fn before_close(&mut self, _conn: &ConnHandle) -> Result<bool, ModuleError> {
        Ok(false)
    }
    /// Whether [`on_message`](Self::on_message) does anything: a module
    /// without it spares the host a trip to the blocking pool per message.
    fn handles_messages(&self) -> bool {
        true
    }
    /// In ack mode: the outbox message ids this incoming message
    /// acknowledges (a JSON-RPC id, STOMP receipts; for an MQTT type the
    /// packet ids of PUBACKs). Called after [`on_message`](Self::on_message).
    fn outbox_ack(
        &mut self,
        _conn: &ConnHandle,
        _message: &Message,
    ) -> Result<Vec<String>, ModuleError> {
        Ok(Vec::new())
    }
    /// Whether the outbox waits for [`outbox_ack`](Self::outbox_ack)
    /// before a message is done (else it is done once written).
    fn acks_outbox(&self) -> bool {
        false
    }
    /// A timer fired. Returns false when the timer no longer exists (it was
    /// cancelled), so the host stops it.
    fn on_timer(&mut self, _conn: &ConnHandle, _id: u64) -> Result<bool, ModuleError> {
        Ok(false)
    }
    /// For a module that shares its state with other instances: the lock
    /// a hook call needs. The host waits for it before the call goes to a
    /// blocking thread, and the call's time limit counts from when it has it.
    fn gate(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        None
    }
}

/// Makes a module for each instance of a client type.
pub trait ModuleFactory: Send + Sync {
    /// A fresh module for one instance (for Lua: a Lua state of its own, or
    /// an environment in the type's shared state).
    fn create(&self, ctx: ModuleContext) -> Result<Box<dyn ClientModule>, ModuleError>;

    /// How long one hook call may take. The host stops waiting for a call
    /// that runs a second past it, and fails the client: its connection is
    /// closed and its hooks never run again until it is connected anew.
    fn call_limit(&self) -> Option<Duration> {
        None
    }
}

/// How long the host waits for a hook call of a module that sets no
/// [`ModuleFactory::call_limit`].
pub const DEFAULT_CALL_LIMIT: Duration = Duration::from_secs(10);

/// The module of a type without one: every hook does nothing.
pub struct NoModule;

impl ClientModule for NoModule {
    fn handles_messages(&self) -> bool {
        false
    }
}
