//! The two faces of a browser connection, with the native ones' methods:
//! [`Connection`] sends and closes, [`Receiver`] is the stream of what
//! arrives. They hold no JavaScript objects (the socket stays in
//! [`socket`](super::socket)'s table on the page's thread), so they are
//! `Send` and `Sync` like the native ones.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use web_sys::WebSocket;

use super::socket;
use crate::error::{Error, SendError};
use crate::event::{Closed, Event, Message, State};
use crate::options::{BackpressurePolicy, ConnectOptions};

/// How often a send under [`BackpressurePolicy::Wait`] looks whether the
/// browser's buffer drained: the browser has no event for it.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// State shared by the handle, the receiver and the socket's callbacks.
pub(crate) struct Shared {
    /// The socket's entry in [`socket`]'s table.
    pub id: u64,
    pub key: String,
    pub url: Arc<str>,
    state: AtomicU8,
    pub protocol: OnceLock<Option<String>>,
    pub max_buffered: usize,
    pub policy: BackpressurePolicy,
    pub on_exit: crate::registry::ExitHook,
    /// Live `Connection` handles.
    pub handles: AtomicUsize,
    pub receiver_gone: AtomicBool,
    /// Bytes of messages received and not yet taken.
    pub undelivered: AtomicUsize,
    /// Why we ended the connection ourselves (a connect timeout).
    pub failure: Mutex<Option<Error>>,
    pub opened: AtomicBool,
    /// Closed by the application while connecting: not a failure.
    pub abandoned: AtomicBool,
}

impl Shared {
    pub fn new(id: u64, key: String, url: Arc<str>, options: &ConnectOptions) -> Self {
        Shared {
            id,
            key,
            url,
            state: AtomicU8::new(State::Connecting as u8),
            protocol: OnceLock::new(),
            max_buffered: options.max_buffered,
            policy: options.backpressure,
            on_exit: Default::default(),
            handles: AtomicUsize::new(0),
            receiver_gone: AtomicBool::new(false),
            undelivered: AtomicUsize::new(0),
            failure: Mutex::new(None),
            opened: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
        }
    }

    pub fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// The browser's ready state while the socket lives, ours after.
    pub fn state(&self) -> State {
        let ours = State::from_u8(self.state.load(Ordering::Acquire));
        if ours == State::Closed {
            return ours;
        }
        socket::with(self.id, |ws| State::from_u8(ws.ready_state() as u8)).unwrap_or(ours)
    }

    /// Nobody can send or listen any more: close.
    fn close_if_abandoned(&self) {
        if self.handles.load(Ordering::Acquire) == 0 && self.receiver_gone.load(Ordering::Acquire) {
            let _ = close(self, super::GOING_AWAY, "");
        }
    }
}

/// Starts the close handshake, or abandons a connection still connecting.
fn close(shared: &Shared, code: u16, reason: &str) -> Result<(), SendError> {
    super::check_close(code, reason)?;
    let closed = match shared.state() {
        State::Closing | State::Closed => return Err(SendError::Closed),
        State::Connecting => {
            shared.abandoned.store(true, Ordering::Release);
            socket::with(shared.id, |ws| ws.close())
        }
        State::Open => socket::with(shared.id, |ws| ws.close_with_code_and_reason(code, reason)),
    };
    match closed {
        Some(Ok(())) => {
            shared.set_state(State::Closing);
            Ok(())
        }
        _ => Err(SendError::Closed),
    }
}

/// A handle to one connection: send, close, read its state. Clone it
/// freely. When every handle and the [`Receiver`] are dropped, the
/// connection closes with 1000 (a browser may not send 1001).
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
            self.shared.close_if_abandoned();
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

    /// Which connection this is: the same for every handle to it.
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

    /// Bytes queued to send and not yet handed to the network (the
    /// browser's `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        socket::with(self.shared.id, |ws| ws.buffered_amount() as usize).unwrap_or(0)
    }

    /// The last keepalive round-trip time: a page cannot ping, so never.
    pub fn rtt(&self) -> Option<Duration> {
        None
    }

    /// Sends a text message, waiting for buffer space if the policy is
    /// [`BackpressurePolicy::Wait`].
    pub async fn send_text(&self, text: impl AsRef<str>) -> Result<(), SendError> {
        let text = text.as_ref();
        self.send_with(text.len(), |ws| ws.send_with_str(text))
            .await
    }

    /// Sends a binary message, waiting for buffer space if the policy is
    /// [`BackpressurePolicy::Wait`].
    pub async fn send_binary(&self, data: impl AsRef<[u8]>) -> Result<(), SendError> {
        let data = data.as_ref();
        self.send_with(data.len(), |ws| ws.send_with_u8_array(data))
            .await
    }

    /// Sends a message of either kind.
    pub async fn send(&self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.send_text(t).await,
            Message::Binary(b) => self.send_binary(b).await,
        }
    }

    /// Sends a text message now, or fails with
    /// [`SendError::BufferFull`] instead of waiting.
    pub fn try_send_text(&self, text: &str) -> Result<(), SendError> {
        self.try_send_with(text.len(), BackpressurePolicy::Error, |ws| {
            ws.send_with_str(text)
        })
    }

    /// Sends a binary message now, or fails instead of waiting.
    pub fn try_send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.try_send_with(data.len(), BackpressurePolicy::Error, |ws| {
            ws.send_with_u8_array(data)
        })
    }

    /// Sends a message of either kind now, or fails instead of waiting.
    pub fn try_send(&self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(t) => self.try_send_text(t),
            Message::Binary(b) => self.try_send_binary(b),
        }
    }

    /// A page cannot send pings: always [`SendError::Unsupported`].
    pub fn ping(&self, _payload: &[u8]) -> Result<(), SendError> {
        Err(SendError::Unsupported("pings"))
    }

    /// Starts the close handshake with `code` (1000 or 3000–4999 in a
    /// browser) and `reason` (up to 123 bytes). Returns at once; the
    /// [`Event::Closed`] on the receiver says how it ended. Closing a
    /// connection that is still connecting abandons it.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        close(&self.shared, code, reason)
    }

    async fn send_with(
        &self,
        len: usize,
        op: impl Fn(&WebSocket) -> Result<(), wasm_bindgen::JsValue>,
    ) -> Result<(), SendError> {
        loop {
            match self.try_send_with(len, self.shared.policy, &op) {
                Err(SendError::BufferFull { .. })
                    if self.shared.policy == BackpressurePolicy::Wait =>
                {
                    crate::rt::sleep(DRAIN_POLL).await;
                }
                other => return other,
            }
        }
    }

    fn try_send_with(
        &self,
        len: usize,
        policy: BackpressurePolicy,
        op: impl FnOnce(&WebSocket) -> Result<(), wasm_bindgen::JsValue>,
    ) -> Result<(), SendError> {
        match self.state() {
            State::Connecting => return Err(SendError::NotOpen),
            State::Closing | State::Closed => return Err(SendError::Closed),
            State::Open => {}
        }
        let limit = self.shared.max_buffered;
        let sent = socket::with(self.shared.id, |ws| {
            let buffered = ws.buffered_amount() as usize;
            // An empty buffer always takes one message, however large.
            if buffered > 0 && buffered + len > limit {
                return Err(SendError::BufferFull { buffered, limit });
            }
            op(ws).map_err(|_| SendError::Closed)
        });
        match sent {
            Some(Err(SendError::BufferFull { buffered, limit })) => {
                if policy == BackpressurePolicy::Close {
                    let _ = self.close(1000, "send buffer full");
                }
                Err(SendError::BufferFull { buffered, limit })
            }
            Some(result) => result,
            None => Err(SendError::Closed),
        }
    }
}

/// The stream of events of one connection. Receiving is cancel-safe.
pub struct Receiver {
    pub(crate) rx: mpsc::UnboundedReceiver<Event>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("key", &self.shared.key)
            .finish()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.close_if_abandoned();
    }
}

impl Receiver {
    /// The next event; `None` after [`Event::Closed`] has been returned.
    pub async fn next(&mut self) -> Option<Event> {
        let event = self.rx.recv().await;
        self.taken(event.as_ref());
        event
    }

    /// The next event if one is waiting, without waiting for one.
    pub fn try_next(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok();
        self.taken(event.as_ref());
        event
    }

    /// The next message, skipping other events; `Err` carries the close.
    pub async fn next_message(&mut self) -> Result<Message, Option<Closed>> {
        loop {
            match self.next().await {
                Some(Event::Message(m)) => return Ok(m),
                Some(Event::Closed(c)) => return Err(Some(*c)),
                Some(_) => continue,
                None => return Err(None),
            }
        }
    }

    /// Bytes of messages received and waiting for you to take them. A
    /// browser cannot stop reading, so nothing holds the server back.
    pub fn queued_bytes(&self) -> usize {
        self.shared.undelivered.load(Ordering::Acquire)
    }

    /// Natively gives a large buffer back for reuse; the browser allocates
    /// every message itself, so here it only drops it.
    pub fn recycle(&self, message: Message) {
        drop(message);
    }

    fn taken(&self, event: Option<&Event>) {
        if let Some(Event::Message(m)) = event {
            self.shared.undelivered.fetch_sub(m.len(), Ordering::AcqRel);
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
