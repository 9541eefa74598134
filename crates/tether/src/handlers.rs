//! The event-handler face of a connection: open, message, error and close
//! callbacks, as in the browser's WebSocket API.

use crate::error::Error;
use crate::event::{Closed, Event, Message};
use crate::{Connection, Receiver};

type OnOpen = Box<dyn FnMut(&Connection) + Send>;
type OnMessage = Box<dyn FnMut(&Connection, Message) + Send>;
type OnError = Box<dyn FnMut(&Connection, &Error) + Send>;
type OnClose = Box<dyn FnMut(&Connection, u16, &str) + Send>;

/// Callbacks for one connection. They run one at a time, in event order, on
/// a task of their own; `on_error` comes right before `on_close` when the
/// connection ended because something failed.
#[derive(Default)]
pub struct Handlers {
    on_open: Option<OnOpen>,
    on_message: Option<OnMessage>,
    on_error: Option<OnError>,
    on_close: Option<OnClose>,
}

impl Handlers {
    /// No callbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called once the handshake completes.
    pub fn on_open(mut self, f: impl FnMut(&Connection) + Send + 'static) -> Self {
        self.on_open = Some(Box::new(f));
        self
    }

    /// Called for every message.
    pub fn on_message(mut self, f: impl FnMut(&Connection, Message) + Send + 'static) -> Self {
        self.on_message = Some(Box::new(f));
        self
    }

    /// Called when the connection fails: [`Error::kind`] names the kind,
    /// its `Display` describes it.
    pub fn on_error(mut self, f: impl FnMut(&Connection, &Error) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Called last, with the close code and reason (1006 without a handshake).
    pub fn on_close(mut self, f: impl FnMut(&Connection, u16, &str) + Send + 'static) -> Self {
        self.on_close = Some(Box::new(f));
        self
    }

    /// Runs the callbacks for the events of `rx` until the connection closes.
    pub async fn run(mut self, conn: Connection, mut rx: Receiver) {
        while let Some(event) = rx.next().await {
            match event {
                Event::Open { .. } => {
                    if let Some(f) = self.on_open.as_mut() {
                        f(&conn);
                    }
                }
                Event::Message(m) => {
                    if let Some(f) = self.on_message.as_mut() {
                        f(&conn, m);
                    }
                }
                Event::Closed(closed) => {
                    let Closed {
                        code,
                        reason,
                        error,
                        ..
                    } = *closed;
                    if let (Some(e), Some(f)) = (error.as_ref(), self.on_error.as_mut()) {
                        f(&conn, e);
                    }
                    if let Some(f) = self.on_close.as_mut() {
                        f(&conn, code, &reason);
                    }
                    return;
                }
                _ => {}
            }
        }
    }

    /// Spawns [`run`](Self::run) on the runtime.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn spawn(self, conn: Connection, rx: Receiver) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(conn, rx))
    }

    /// Spawns [`run`](Self::run) on the page's event loop.
    #[cfg(target_arch = "wasm32")]
    pub fn spawn(self, conn: Connection, rx: Receiver) {
        wasm_bindgen_futures::spawn_local(self.run(conn, rx))
    }
}
