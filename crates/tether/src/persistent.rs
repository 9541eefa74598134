//! Connections that should stay up: reconnect with exponential backoff and
//! full jitter, with an event for every attempt.
//!
//! Messages sent while disconnected fail fast with [`SendError::NotOpen`]
//! by default. With [`PersistentOptions::queue_bytes`] set, they wait in a
//! bounded queue (in order) and go out right after the next open; a message
//! that would overflow the queue fails with [`SendError::BufferFull`]. An
//! explicit [`Persistent::close`] stops reconnecting and drops the queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::error::{Error, SendError};
use crate::event::{Closed, Event, Message};
use crate::options::ConnectOptions;
use crate::reconnect::{Backoff, ReconnectPolicy};
use crate::rt::{self, Instant};
use crate::transport::{self, open, Connection};

/// How a persistent connection retries and queues.
#[derive(Clone, Default)]
pub struct PersistentOptions {
    /// When to retry.
    pub policy: ReconnectPolicy,
    /// Bytes of messages kept while disconnected; 0 (the default) makes
    /// sends fail fast instead.
    pub queue_bytes: usize,
    /// Runs before every attempt, the first included, and may change its
    /// URL and options (fresh credentials, another server). An `Err`
    /// counts as a failed attempt: the policy's next delay follows.
    pub before_attempt: Option<BeforeAttempt>,
}

impl std::fmt::Debug for PersistentOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentOptions")
            .field("policy", &self.policy)
            .field("queue_bytes", &self.queue_bytes)
            .field("before_attempt", &self.before_attempt.is_some())
            .finish()
    }
}

/// What one attempt connects to.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The URL.
    pub url: String,
    /// The options.
    pub options: ConnectOptions,
}

/// The hook of [`PersistentOptions::before_attempt`]: given what the
/// connection was opened with, what this attempt uses, or why it cannot be
/// made.
pub type BeforeAttempt = Arc<
    dyn Fn(
            Attempt,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Attempt, String>> + Send>>
        + Send
        + Sync,
>;

/// What a persistent connection reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum PersistentEvent {
    /// A connection opened (the first, or a reconnect).
    Open {
        /// The subprotocol the server chose.
        protocol: Option<String>,
    },
    /// A message arrived.
    Message(Message),
    /// The current connection ended; a reconnect follows unless closed.
    Disconnected(Box<Closed>),
    /// The next attempt starts after `delay`.
    Reconnecting {
        /// The attempt's number since the last stable connection (1-based).
        attempt: u32,
        /// The jittered delay before it.
        delay: Duration,
    },
    /// The policy's attempts are used up. No event follows.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
    /// Closed on request. No event follows.
    Closed,
    /// A setting makes every attempt fail before it reaches the network
    /// (a CA file that cannot be read, a bad proxy in the environment): no
    /// attempt is made again. No event follows.
    Failed(Box<Error>),
}

/// The state of a persistent connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistentState {
    /// The first connection is being made.
    Connecting,
    /// Open.
    Open,
    /// Lost; waiting for or making the next attempt.
    Reconnecting,
    /// Closed on request, or gave up.
    Closed,
}

struct Inner {
    /// Live `Persistent` handles.
    handles: std::sync::atomic::AtomicUsize,
    receiver_gone: AtomicBool,
    current: Mutex<Option<Connection>>,
    queue: Mutex<(VecDeque<Message>, usize)>,
    queue_bytes: usize,
    stopped: AtomicBool,
    stop: Notify,
    /// Cuts the current wait between attempts short.
    retry_now: Notify,
    state: AtomicU8,
}

impl Inner {
    /// No more connections: closed, and what waited to be sent is dropped.
    fn finish(&self) {
        self.set_state(PersistentState::Closed);
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }

    fn set_state(&self, s: PersistentState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Stops reconnecting and closes the current connection. False when it
    /// was already stopped.
    fn stop(&self, code: u16, reason: &str) -> bool {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.stop.notify_one();
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(conn) = current {
            let _ = conn.close(code, reason);
        }
        true
    }

    /// Nobody can send or listen any more: close with 1001.
    fn stop_if_abandoned(&self) {
        if self.handles.load(Ordering::Acquire) == 0 && self.receiver_gone.load(Ordering::Acquire) {
            self.stop(transport::GOING_AWAY, "");
        }
    }
}

/// A connection that reconnects until closed. Clone it freely. When every
/// handle and the receiver are dropped, it closes with 1001.
pub struct Persistent {
    inner: Arc<Inner>,
}

impl Clone for Persistent {
    fn clone(&self) -> Self {
        self.inner.handles.fetch_add(1, Ordering::AcqRel);
        Persistent {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Persistent {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.stop_if_abandoned();
        }
    }
}

/// The events of a persistent connection.
pub struct PersistentReceiver {
    rx: mpsc::Receiver<PersistentEvent>,
    inner: Arc<Inner>,
}

impl Drop for PersistentReceiver {
    fn drop(&mut self) {
        self.inner.receiver_gone.store(true, Ordering::Release);
        self.inner.stop_if_abandoned();
    }
}

impl PersistentReceiver {
    /// The next event; `None` after `GaveUp`, `Closed` or `Failed`.
    /// Cancel-safe.
    pub async fn next(&mut self) -> Option<PersistentEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting, without waiting for one. For
    /// taking a burst at once.
    pub fn try_next(&mut self) -> Option<PersistentEvent> {
        self.rx.try_recv().ok()
    }
}

impl Persistent {
    /// Starts connecting to `url` and keeps the connection up.
    pub fn open(
        key: impl Into<String>,
        url: &str,
        options: &ConnectOptions,
        persistent: PersistentOptions,
    ) -> Result<(Persistent, PersistentReceiver), Error> {
        let key = key.into();
        // Check the URL and options now: a bad one fails every attempt.
        transport::check(url, options)?;
        let inner = Arc::new(Inner {
            handles: std::sync::atomic::AtomicUsize::new(1),
            receiver_gone: AtomicBool::new(false),
            current: Mutex::new(None),
            queue: Mutex::new((VecDeque::new(), 0)),
            queue_bytes: persistent.queue_bytes,
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
            retry_now: Notify::new(),
            state: AtomicU8::new(PersistentState::Connecting as u8),
        });
        let (tx, rx) = mpsc::channel(64);
        let first = Attempt {
            url: url.to_string(),
            options: options.clone(),
        };
        rt::spawn(supervise(inner.clone(), key, first, persistent, tx));
        let receiver = PersistentReceiver {
            rx,
            inner: inner.clone(),
        };
        Ok((Persistent { inner }, receiver))
    }

    /// The current state.
    pub fn state(&self) -> PersistentState {
        match self.inner.state.load(Ordering::Acquire) {
            0 => PersistentState::Connecting,
            1 => PersistentState::Open,
            2 => PersistentState::Reconnecting,
            _ => PersistentState::Closed,
        }
    }

    /// The live connection, if open.
    pub fn connection(&self) -> Option<Connection> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends a text message (see the module docs for what happens while
    /// disconnected).
    pub async fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.send(Message::Text(text.to_string())).await
    }

    /// Sends a binary message.
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.send(Message::Binary(data.to_vec())).await
    }

    /// Sends a message of either kind: on the open connection, or into the
    /// bounded queue while disconnected.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if let Some(conn) = self.connection() {
            match conn.send(&message).await {
                Err(SendError::NotOpen | SendError::Closed) => {}
                other => return other,
            }
        }
        if self.inner.queue_bytes == 0 {
            return Err(SendError::NotOpen);
        }
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.1 + message.len() > self.inner.queue_bytes {
            return Err(SendError::BufferFull {
                buffered: q.1,
                limit: self.inner.queue_bytes,
            });
        }
        q.1 += message.len();
        q.0.push_back(message);
        Ok(())
    }

    /// While waiting between attempts: makes the next attempt now. The
    /// attempt count stays (the next wait is as long as it would have
    /// been). Does nothing while connected or connecting.
    pub fn reconnect_now(&self) {
        self.inner.retry_now.notify_waiters();
    }

    /// Stops reconnecting and closes the current connection with `code`.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), SendError> {
        transport::check_close(code, reason)?;
        if self.inner.stop(code, reason) {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }
}

async fn supervise(
    inner: Arc<Inner>,
    key: String,
    given: Attempt,
    persistent: PersistentOptions,
    tx: mpsc::Sender<PersistentEvent>,
) {
    // Boxed, as is each connection's loop: an idle connection's task then
    // holds only what it waits on, not the largest of every step.
    let given = Box::new(given);
    let mut backoff = Box::new(Backoff::new(persistent.policy));
    loop {
        if inner.stopped.load(Ordering::Acquire) {
            break;
        }
        let attempt = match &persistent.before_attempt {
            None => Ok((*given).clone()),
            Some(hook) => match Box::pin(prepare(hook, &given, &inner)).await {
                Some(prepared) => prepared,
                None => break,
            },
        };
        let opened = attempt.map(|a| open(key.clone(), &a.url, &a.options));
        let connection = match opened {
            Ok(Ok(pair)) => Some(pair),
            Ok(Err(error)) => {
                tracing::warn!(key = %key, error = %error, "not reconnecting: the settings fail every attempt");
                inner.finish();
                let failed = PersistentEvent::Failed(Box::new(error));
                let _ = Box::pin(tx.send(failed)).await;
                return;
            }
            Err(why) => {
                tracing::debug!(key = %key, why = %why, "attempt not made");
                None
            }
        };
        if let Some((conn, rx)) = connection {
            Box::pin(run_connection(&inner, &mut backoff, conn, rx, &tx)).await;
        }
        if inner.stopped.load(Ordering::Acquire) {
            break;
        }
        inner.set_state(PersistentState::Reconnecting);
        let Some((attempt, delay)) = backoff.next_delay(Instant::now()) else {
            inner.set_state(PersistentState::Closed);
            let _ = tx
                .send(PersistentEvent::GaveUp {
                    attempts: backoff.attempts(),
                })
                .await;
            return;
        };
        let _ = tx
            .send(PersistentEvent::Reconnecting { attempt, delay })
            .await;
        tokio::select! {
            _ = Box::pin(rt::sleep(delay)) => {}
            _ = inner.retry_now.notified() => {}
            _ = inner.stop.notified() => break,
        }
    }
    inner.finish();
    let _ = tx.send(PersistentEvent::Closed).await;
}

/// Runs the before-attempt hook; `None` when stopped meanwhile.
async fn prepare(
    hook: &BeforeAttempt,
    given: &Attempt,
    inner: &Inner,
) -> Option<Result<Attempt, String>> {
    tokio::select! {
        prepared = hook(given.clone()) => Some(prepared),
        _ = inner.stop.notified() => None,
    }
}

/// Sends what waited while disconnected, in order.
async fn send_all(conn: &Connection, queued: Vec<Message>) {
    for m in queued {
        let _ = conn.send(&m).await;
    }
}

/// Forwards one connection's events until it has closed.
async fn run_connection(
    inner: &Inner,
    backoff: &mut Backoff,
    conn: Connection,
    mut rx: crate::Receiver,
    tx: &mpsc::Sender<PersistentEvent>,
) {
    *inner.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
    if inner.stopped.load(Ordering::Acquire) {
        // Stopped while this attempt started: it must not stay open.
        let _ = conn.close(1000, "");
    }
    while let Some(event) = rx.next().await {
        let forward = match event {
            Event::Open { protocol, .. } => {
                backoff.opened(Instant::now());
                inner.set_state(PersistentState::Open);
                // What waited while disconnected goes first, in order.
                let queued: Vec<Message> = {
                    let mut q = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.1 = 0;
                    q.0.drain(..).collect()
                };
                if !queued.is_empty() {
                    Box::pin(send_all(&conn, queued)).await;
                }
                Some(PersistentEvent::Open { protocol })
            }
            Event::Message(m) => Some(PersistentEvent::Message(m)),
            Event::Closed(c) => {
                *inner.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                // Not open from the moment the application can know it.
                if !inner.stopped.load(Ordering::Acquire) {
                    inner.set_state(PersistentState::Reconnecting);
                }
                Some(PersistentEvent::Disconnected(c))
            }
            _ => None,
        };
        if let Some(e) = forward {
            let _ = tx.send(e).await;
        }
    }
}
