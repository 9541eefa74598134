//! The driver: one task per open connection. It owns the socket and moves
//! bytes between it and the engine, and events from the engine to the
//! [`Receiver`](crate::Receiver). Connections start in [`crate::start`].
//!
//! socket → `receive_data` → engine → `poll_event` → channel → application;
//! application → engine (under the lock) → `poll_transmit` → socket.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use bytes::BufMut;
use tether_proto::{CloseKind, PayloadBuffer};

use crate::connection::{Closed, Event, Shared};
use crate::error::Error;
use crate::start::Transport;

/// Bytes read from the socket per call, on the stack: an idle connection
/// holds no read buffer at all.
const READ_CHUNK: usize = 64 * 1024;

/// A payload with at least this much left is read straight into the
/// message buffer rather than through `READ_CHUNK`.
const DIRECT_READ_MIN: usize = 4 * 1024;

/// Buffers up to this size are kept while idle.
const SMALL_BUFFER: usize = 16 << 10;
/// How long a connection must idle before larger buffers are released.
const SHRINK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

pub(crate) struct Driver {
    shared: Arc<Shared>,
    io: Box<dyn Transport>,
    host: String,
    tx: PollSender<Event>,
    wbuf: Vec<u8>,
    wpos: usize,
    need_flush: bool,
    read_closed: bool,
    io_error: Option<Error>,
    pub(crate) pending: Option<Event>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    deadline: Option<Instant>,
    done: bool,
    abandoned: bool,
    shrink_at: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        io: Box<dyn Transport>,
        host: String,
        tx: mpsc::Sender<Event>,
    ) -> Self {
        Driver {
            shared,
            io,
            host,
            tx: PollSender::new(tx),
            wbuf: Vec::new(),
            wpos: 0,
            need_flush: false,
            read_closed: false,
            io_error: None,
            pending: None,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(3600))),
            deadline: None,
            done: false,
            abandoned: false,
            shrink_at: None,
        }
    }

    /// Runs until the engine is closed and every event is delivered.
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.driver.register(cx.waker());
        self.close_if_abandoned();
        if self.shared.recycled.swap(false, Ordering::AcqRel) {
            // A recycled buffer is kept while messages flow, freed on idle.
            self.shrink_at = Some(Instant::now() + SHRINK_AFTER);
        }
        loop {
            // Writing and delivering make no work for the other steps; a
            // read, a fired timer or a failed socket do (events to deliver,
            // a pong or close to write): only they take another round.
            let mut more = self.poll_write(cx);
            self.poll_deliver(cx);
            more |= self.poll_read(cx);
            more |= self.poll_timer(cx);
            if self.done && self.pending.is_none() {
                return Poll::Ready(());
            }
            if !more {
                return Poll::Pending;
            }
        }
    }

    /// Nobody holds a handle or the receiver: close with 1001.
    fn close_if_abandoned(&mut self) {
        let receiver_gone = self.tx.get_ref().is_none_or(|tx| tx.is_closed());
        if self.abandoned || self.shared.handles.load(Ordering::Acquire) > 0 || !receiver_gone {
            return;
        }
        self.abandoned = true;
        if let Some(engine) = self.shared.lock().engine.as_mut() {
            if engine.state() == tether_proto::State::Open {
                let _ = engine.close(Instant::now(), tether_proto::CloseCode::GOING_AWAY, "");
            }
        }
    }

    /// Writes what the engine has to send. True when the socket failed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.io_error.is_some() {
            return false;
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if let Some(engine) = self.shared.lock().engine.as_mut() {
                let n = engine.poll_transmit(&mut self.wbuf);
                self.shared.in_flight.store(n, Ordering::Release);
            }
        }
        if self.wpos < self.wbuf.len() && self.shared.write_gate.as_ref().is_some_and(|g| !g()) {
            // Fenced: nothing more goes on the wire, not even a close frame.
            self.wbuf.clear();
            self.wpos = 0;
            self.fail_io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the connection's write gate refused further writes",
            ));
            return true;
        }
        while self.wpos < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(0)) => {
                    self.fail_io(std::io::ErrorKind::WriteZero.into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    self.wpos += n;
                    self.shared.in_flight.fetch_sub(n, Ordering::AcqRel);
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => {
                    self.fail_io(e);
                    return true;
                }
                Poll::Pending => return false,
            }
        }
        if self.need_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => {
                    self.fail_io(e);
                    return true;
                }
                Poll::Pending => return false,
            }
            // Everything written: wake blocked senders. Big buffers are kept
            // for the next message and released once the connection idles.
            if self.wbuf.capacity() > SMALL_BUFFER {
                self.shrink_at = Some(Instant::now() + SHRINK_AFTER);
            }
            self.shared.drained.notify_waiters();
        }
        false
    }

    /// Hands the engine's events to the receiver while it has room.
    fn poll_deliver(&mut self, cx: &mut Context<'_>) {
        loop {
            if self.pending.is_none() {
                let mut inner = self.shared.lock();
                let Some(engine) = inner.engine.as_mut() else {
                    return;
                };
                let event = engine.poll_event();
                self.shared.set_state(engine.state());
                drop(inner);
                self.pending = match event {
                    Some(e) => self.convert(e),
                    None => return,
                };
            }
            match self.tx.poll_reserve(cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(event) = self.pending.take() {
                        if matches!(event, Event::Closed(_)) {
                            self.done = true;
                        }
                        if let Event::Message(m) = &event {
                            self.shared.undelivered.fetch_add(m.len(), Ordering::AcqRel);
                        }
                        let _ = self.tx.send_item(event);
                    }
                }
                // The receiver is gone: nobody listens, drop the event.
                Poll::Ready(Err(_)) => {
                    if matches!(self.pending.take(), Some(Event::Closed(_))) {
                        self.done = true;
                    }
                }
                Poll::Pending => return,
            }
        }
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        // Backpressure: read only when the application has taken every
        // event the engine produced, and keeps up within the receive window.
        if self.read_closed || self.done {
            return false;
        }
        if self.pending.is_some()
            || self.shared.undelivered.load(Ordering::Acquire) >= self.shared.receive_window
        {
            if !self.shared.read_stalled.swap(true, Ordering::AcqRel) {
                // A sender pacing itself must not wait for writes that may
                // need the application to read first: let it re-check.
                self.shared.drained.notify_waiters();
            }
            return false;
        }
        if self.shared.read_stalled.load(Ordering::Acquire) {
            self.shared.read_stalled.store(false, Ordering::Release);
        }
        let lent = self
            .shared
            .lock()
            .engine
            .as_mut()
            .and_then(|e| e.lend_payload_buffer(DIRECT_READ_MIN));
        if let Some(payload) = lent {
            return self.poll_read_payload(cx, payload);
        }
        let mut stack = [const { MaybeUninit::<u8>::uninit() }; READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                let mut inner = self.shared.lock();
                if let Some(engine) = inner.engine.as_mut() {
                    if buf.filled().is_empty() {
                        self.read_closed = true;
                        engine.receive_eof(now);
                    } else {
                        engine.receive_data(now, buf.filled());
                    }
                }
                true
            }
            Poll::Ready(Err(e)) => {
                self.fail_io(e);
                true
            }
            Poll::Pending => false,
        }
    }

    /// Reads the rest of a large payload straight into the message buffer
    /// (without the lock: sends go on meanwhile), then hands it back.
    fn poll_read_payload(&mut self, cx: &mut Context<'_>, mut payload: PayloadBuffer) -> bool {
        let spare = payload.spare();
        let mut limited = payload.buffer().limit(spare);
        let result = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut limited);
        let now = Instant::now();
        let mut inner = self.shared.lock();
        let Some(engine) = inner.engine.as_mut() else {
            return false;
        };
        engine.receive_payload(now, payload);
        match result {
            Poll::Ready(Ok(0)) => {
                self.read_closed = true;
                engine.receive_eof(now);
                true
            }
            Poll::Ready(Ok(_)) => true,
            Poll::Ready(Err(e)) => {
                drop(inner);
                self.fail_io(e);
                true
            }
            Poll::Pending => false,
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let engine_deadline = self
            .shared
            .lock()
            .engine
            .as_ref()
            .and_then(|e| e.poll_timeout());
        let deadline = match (engine_deadline, self.shrink_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline != self.deadline {
            self.deadline = deadline;
            if let Some(d) = deadline {
                self.sleep.as_mut().reset(tokio::time::Instant::from_std(d));
            }
        }
        if self.deadline.is_none() || self.sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        if self.shrink_at.is_some_and(|t| now >= t) {
            self.shrink_at = None;
            if self.wpos == self.wbuf.len() {
                self.wbuf = Vec::new();
                self.wpos = 0;
                if let Some(engine) = self.shared.lock().engine.as_mut() {
                    engine.shrink_buffers();
                }
            }
        }
        if engine_deadline.is_some_and(|d| now >= d) {
            if let Some(engine) = self.shared.lock().engine.as_mut() {
                engine.handle_timeout(now);
            }
        }
        self.deadline = None;
        true
    }

    /// The socket failed: the engine sees the end of the stream, and the
    /// error says how it ended.
    fn fail_io(&mut self, e: std::io::Error) {
        tracing::debug!(key = %self.shared.key, error = %e, "socket error");
        self.io_error = Some(Error::from_io(e, &self.host));
        self.read_closed = true;
        self.wbuf.clear();
        self.wpos = 0;
        if let Some(engine) = self.shared.lock().engine.as_mut() {
            engine.receive_eof(Instant::now());
        }
    }

    pub(crate) fn convert(&mut self, event: tether_proto::Event) -> Option<Event> {
        Some(match event {
            tether_proto::Event::Open(o) => {
                let _ = self.shared.protocol.set(o.protocol.clone());
                Event::Open {
                    protocol: o.protocol,
                    compression: o.compression,
                }
            }
            tether_proto::Event::Message(m) => Event::Message(m),
            tether_proto::Event::Pong { rtt, .. } => Event::Pong { rtt },
            tether_proto::Event::Closed(c) => {
                let clean = c.is_clean();
                let error = match c.kind {
                    CloseKind::Remote | CloseKind::Local => None,
                    CloseKind::Protocol(e) => Some(Error::Protocol(e)),
                    CloseKind::Handshake(e) => Some(Error::Handshake(e)),
                    CloseKind::CloseTimeout => Some(Error::CloseTimeout),
                    CloseKind::PingTimeout => Some(Error::PingTimeout),
                    _ => Some(self.io_error.take().unwrap_or(Error::Abnormal)),
                };
                Event::Closed(Box::new(Closed {
                    code: c.code.0,
                    reason: c.reason,
                    clean,
                    error,
                }))
            }
            _ => return None,
        })
    }

    /// After the close: write what is left (our close frame), end our side,
    /// and read until the server ends its side, by the engine's teardown
    /// deadline (its `poll_timeout` once closed: the close timeout).
    pub(crate) async fn shut_down(mut self) {
        if self.io_error.is_some() {
            return;
        }
        let wait = {
            let mut inner = self.shared.lock();
            let Some(engine) = inner.engine.as_mut() else {
                return;
            };
            let _ = engine.poll_transmit(&mut self.wbuf);
            engine.shrink_buffers();
            // Finished already (the server ended the stream first): what is
            // left to write still gets the close timeout, not forever. (A
            // wait, not a deadline: tokio's timeout takes any duration.)
            engine
                .poll_timeout()
                .map_or(engine.config().close_timeout, |d| {
                    d.saturating_duration_since(Instant::now())
                })
        };
        let io = &mut self.io;
        let rest = &self.wbuf[self.wpos.min(self.wbuf.len())..];
        let read_closed = self.read_closed;
        let ended = tokio::time::timeout(wait, async move {
            io.write_all(rest).await?;
            io.shutdown().await?;
            if !read_closed {
                let mut sink = [0u8; 4096];
                while io.read(&mut sink).await? > 0 {}
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        if let Some(engine) = self.shared.lock().engine.as_mut() {
            match ended {
                Ok(_) => engine.receive_eof(Instant::now()),
                Err(_) => engine.handle_timeout(Instant::now()),
            }
        }
        self.shared.in_flight.store(0, Ordering::Release);
    }
}
