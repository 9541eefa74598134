//! The two faces of one connection: [`Connection`], a cloneable handle that
//! sends and closes, and [`Receiver`], the stream of what arrives.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::{mpsc, Notify};

use tether_proto::{ClientConnection, CloseCode};

use crate::error::SendError;
use crate::options::BackpressurePolicy;

pub use crate::event::{Closed, Event, Message, State};

/// Past this many queued bytes, an async send yields to the driver.
const YIELD_AFTER: usize = 256 << 10;

/// Message buffers below this size are not worth recycling (the engine
/// would not keep them either).
const RECYCLE_MIN: usize = 64 << 10;

/// State shared by the handle, the receiver and the driver task.
pub(crate) struct Shared {
    pub key: String,
    pub url: String,
    pub inner: Mutex<Inner>,
    state: AtomicU8,
    /// Bytes the driver took from the engine but has not written yet.
    pub in_flight: AtomicUsize,
    pub driver: AtomicWaker,
    pub drained: Notify,
    /// Wakes the connecting phase when `close()` abandons it.
    pub abort: Notify,
    /// The subprotocol the server chose, once open.
    pub protocol: std::sync::OnceLock<Option<String>>,
    pub max_buffered: usize,
    pub policy: BackpressurePolicy,
    pub on_exit: crate::registry::ExitHook,
    /// Live `Connection` handles; with none left and the receiver gone,
    /// nobody can use the connection and the driver closes it.
    pub handles: AtomicUsize,
    /// The application gave a message buffer back; the driver frees it
    /// once the connection idles.
    pub recycled: AtomicBool,
    /// Bytes of messages delivered to the channel and not yet taken by the
    /// application; the driver stops reading at `receive_window`.
    pub undelivered: AtomicUsize,
    /// See [`ConnectOptions::receive_window`](crate::ConnectOptions::receive_window).
    pub receive_window: usize,
    /// The driver stopped reading until the application takes events.
    pub read_stalled: AtomicBool,
    /// See [`ConnectOptions::write_gate`](crate::ConnectOptions::write_gate).
    pub write_gate: Option<crate::options::WriteGate>,
}

pub(crate) struct Inner {
    /// `None` until the transport is up.
    pub engine: Option<ClientConnection>,
    /// A close asked for before the engine existed.
    pub early_close: bool,
}

impl Shared {
    pub fn new(
        key: String,
        url: String,
        max_buffered: usize,
        policy: BackpressurePolicy,
        receive_window: usize,
    ) -> Self {
        Shared {
            key,
            url,
            inner: Mutex::new(Inner {
                engine: None,
                early_close: false,
            }),
            state: AtomicU8::new(0),
            in_flight: AtomicUsize::new(0),
            driver: AtomicWaker::new(),
            drained: Notify::new(),
            abort: Notify::new(),
            protocol: std::sync::OnceLock::new(),
            max_buffered,
            policy,
            on_exit: Default::default(),
            handles: AtomicUsize::new(0),
            recycled: AtomicBool::new(false),
            undelivered: AtomicUsize::new(0),
            receive_window: receive_window.max(1),
            read_stalled: AtomicBool::new(false),
            write_gate: None,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves the engine usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_state(&self, s: State) {
        let v = match s {
            State::Connecting => 0,
            State::Open => 1,
            State::Closing => 2,
            State::Closed => 3,
        };
        self.state.store(v, Ordering::Release);
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }
}

/// A handle to one connection: send, close, read its state. Clone it freely;
/// every clone talks to the same connection. When every handle and the
/// [`Receiver`] are dropped, the connection closes with 1001 (going away).
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        shared.handles.fetch_add(1, Ordering::AcqRel);
        Connection { shared }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Connection::new(self.shared.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.driver.wake();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("key", &self.shared.key)
            .field("state", &self.state())
            .finish()
    }
}

impl Connection {
    /// Runs `f` once when the connection has ended (the registry forgets it).
    pub(crate) fn set_on_exit(&self, f: Box<dyn FnOnce() + Send>) {
        self.shared.on_exit.set(f);
    }

    /// Which connection this is: the same for every handle to it, and
    /// unique among live connections.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The key this connection was opened with.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The URL it was opened with, password redacted.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// The subprotocol the server chose; `None` before open or when it chose none.
    pub fn protocol(&self) -> Option<&str> {
        self.shared.protocol.get().and_then(|p| p.as_deref())
    }

    /// Bytes queued to send and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        let engine = self
            .shared
            .lock()
            .engine
            .as_ref()
            .map_or(0, |e| e.buffered_amount());
        engine + self.shared.in_flight.load(Ordering::Acquire)
    }

    /// The last keepalive round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.lock().engine.as_ref().and_then(|e| e.rtt())
    }

    /// Sends a text message, waiting for buffer space if the policy is
    /// [`BackpressurePolicy::Wait`].
    pub async fn send_text(&self, text: impl AsRef<str>) -> Result<(), SendError> {
        let text = text.as_ref();
        self.send_with(text.len(), |e| e.send_text(text)).await
    }

    /// Sends a binary message, waiting for buffer space if the policy is
    /// [`BackpressurePolicy::Wait`].
    pub async fn send_binary(&self, data: impl AsRef<[u8]>) -> Result<(), SendError> {
        let data = data.as_ref();
        self.send_with(data.len(), |e| e.send_binary(data)).await
    }

    /// Sends a message of either kind, waiting for buffer space if the
    /// policy is [`BackpressurePolicy::Wait`].
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.send_text(t).await,
            Message::Binary(b) => self.send_binary(b).await,
        }
    }

    /// Sends a text message now, or fails with
    /// [`SendError::BufferFull`] instead of waiting.
    pub fn try_send_text(&self, text: &str) -> Result<(), SendError> {
        self.try_send_with(text.len(), BackpressurePolicy::Error, |e| e.send_text(text))
    }

    /// Sends a binary message now, or fails instead of waiting.
    pub fn try_send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.try_send_with(data.len(), BackpressurePolicy::Error, |e| {
            e.send_binary(data)
        })
    }

    /// Sends a message of either kind now, or fails instead of waiting.
    pub fn try_send(&self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.try_send_text(t),
            Message::Binary(b) => self.try_send_binary(b),
        }
    }

    /// Sends a ping with up to 125 bytes of payload.
    pub fn ping(&self, payload: &[u8]) -> Result<(), SendError> {
        self.try_send_with(0, BackpressurePolicy::Error, |e| e.send_ping(payload))
    }

    /// Starts the close handshake with `code` and `reason`. Returns at once;
    /// the [`Event::Closed`] on the receiver says how it ended. Closing a
    /// connection that is still connecting abandons it.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        let code = CloseCode(code);
        if !code.is_sendable() {
            return Err(SendError::Invalid(
                tether_proto::SendError::InvalidCloseCode(code.0),
            ));
        }
        let mut inner = self.shared.lock();
        let result = match inner.engine.as_mut() {
            Some(engine) if engine.state() == tether_proto::State::Open => {
                let r = engine
                    .close(Instant::now(), code, reason)
                    .map_err(SendError::from);
                self.shared.set_state(engine.state());
                r
            }
            Some(engine) if engine.state() != tether_proto::State::Connecting => {
                Err(SendError::Closed)
            }
            _ => {
                if self.shared.state() == State::Closed {
                    Err(SendError::Closed)
                } else {
                    inner.early_close = true;
                    self.shared.abort.notify_one();
                    Ok(())
                }
            }
        };
        drop(inner);
        self.shared.driver.wake();
        result
    }

    async fn send_with(
        &self,
        len: usize,
        mut op: impl FnMut(&mut ClientConnection) -> Result<(), tether_proto::SendError>,
    ) -> Result<(), SendError> {
        loop {
            let drained = self.shared.drained.notified();
            match self.try_send_with(len, self.shared.policy, &mut op) {
                Err(SendError::BufferFull { .. })
                    if self.shared.policy == BackpressurePolicy::Wait =>
                {
                    drained.await;
                }
                Ok(()) if self.buffered_amount() >= YIELD_AFTER => {
                    self.pace().await;
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    /// After a send that left a lot queued: let the driver take it, and
    /// under the `Wait` policy also wait while the driver is still writing
    /// an earlier batch and another full one is queued behind it. The
    /// application then encodes the next message while the driver writes
    /// the last one (double buffering) instead of racing ahead to the limit:
    /// memory stays near two messages and the buffers stay in cache.
    async fn pace(&self) {
        tokio::task::yield_now().await;
        if self.shared.policy != BackpressurePolicy::Wait {
            return;
        }
        loop {
            let drained = self.shared.drained.notified();
            let queued = match self.shared.lock().engine.as_ref() {
                Some(e) if e.state() == tether_proto::State::Open => e.buffered_amount(),
                _ => return,
            };
            // Waiting on writes while reading waits for the application
            // could deadlock (the server may not read until it can write):
            // then the buffer limit alone applies.
            if queued < YIELD_AFTER
                || self.shared.in_flight.load(Ordering::Acquire) == 0
                || self.shared.read_stalled.load(Ordering::Acquire)
            {
                return;
            }
            drained.await;
        }
    }

    fn try_send_with(
        &self,
        len: usize,
        policy: BackpressurePolicy,
        op: impl FnOnce(&mut ClientConnection) -> Result<(), tether_proto::SendError>,
    ) -> Result<(), SendError> {
        let mut inner = self.shared.lock();
        let engine = match inner.engine.as_mut() {
            Some(e) => e,
            None if self.shared.state() == State::Closed => return Err(SendError::Closed),
            None => return Err(SendError::NotOpen),
        };
        let buffered = engine.buffered_amount() + self.shared.in_flight.load(Ordering::Acquire);
        let limit = self.shared.max_buffered;
        // An empty buffer always takes one message, however large, so a
        // message over the limit cannot wait forever.
        if buffered > 0 && buffered + len > limit && engine.state() == tether_proto::State::Open {
            if policy == BackpressurePolicy::Close {
                let _ = engine.close(Instant::now(), CloseCode::GOING_AWAY, "send buffer full");
                self.shared.set_state(engine.state());
                drop(inner);
                self.shared.driver.wake();
            }
            return Err(SendError::BufferFull { buffered, limit });
        }
        let result = op(engine).map_err(SendError::from);
        drop(inner);
        if result.is_ok() {
            self.shared.driver.wake();
        }
        result
    }
}

/// The stream of events of one connection. Receiving is cancel-safe: a
/// `next()` dropped before it completes loses nothing.
pub struct Receiver {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) driver: Arc<Shared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("key", &self.driver.key)
            .finish()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.rx.close();
        // Nobody takes messages any more: the window must not stop the
        // driver from reading the close handshake.
        self.driver.undelivered.store(0, Ordering::Release);
        self.driver.driver.wake();
    }
}

impl Receiver {
    /// The next event; `None` after [`Event::Closed`] has been returned.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.taken(event.as_ref());
        event
    }

    /// The next event if one is waiting, without waiting for one (`None`:
    /// nothing yet, or the stream ended). For taking a burst at once.
    pub fn try_next(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok();
        self.taken(event.as_ref());
        event
    }

    /// The next message, skipping other events; `Err` carries the close.
    pub async fn next_message(&mut self) -> Result<Message, Option<Closed>> {
        loop {
            let event = self.rx.recv().await;
            self.taken(event.as_ref());
            match event {
                Some(Event::Message(m)) => return Ok(m),
                Some(Event::Closed(c)) => return Err(Some(*c)),
                Some(_) => continue,
                None => return Err(None),
            }
        }
    }
}

impl Receiver {
    /// Bytes of messages received and waiting for you to take them. The
    /// connection stops reading from the socket once this reaches the
    /// receive window (1 MiB unless set), until you catch up.
    pub fn queued_bytes(&self) -> usize {
        self.driver.undelivered.load(Ordering::Acquire)
    }

    /// Accounts for a message the application took: the driver, if it
    /// stopped reading at the receive window, reads on.
    fn taken(&self, event: Option<&Event>) {
        if let Some(Event::Message(m)) = event {
            let before = self.driver.undelivered.fetch_sub(m.len(), Ordering::AcqRel);
            let window = self.driver.receive_window;
            if before >= window && before - m.len() < window {
                self.driver.driver.wake();
            }
        }
    }

    /// Gives a message you are done with back to the connection, so that
    /// its buffer holds the next message of a similar size (64 KiB and up)
    /// instead of a fresh allocation. Optional: worth it when large
    /// messages arrive at a high rate. The connection keeps one such buffer
    /// and frees it when it idles.
    pub fn recycle(&self, message: Message) {
        let buffer = message.into_bytes();
        if buffer.capacity() < RECYCLE_MIN {
            return; // not worth the lock
        }
        let kept = match self.driver.lock().engine.as_mut() {
            Some(engine) => engine.recycle(buffer),
            None => false,
        };
        // The driver frees a kept buffer when the connection idles.
        if kept && !self.driver.recycled.swap(true, Ordering::AcqRel) {
            self.driver.driver.wake();
        }
    }
}

impl futures_util::Stream for Receiver {
    type Item = Event;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(event) = &polled {
            self.taken(event.as_ref());
        }
        polled
    }
}
