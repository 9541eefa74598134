//! The client connection state machine.
//!
//! Method kinds, in the order a driver uses them:
//! - inputs: [`receive_data`](ClientConnection::receive_data),
//!   [`receive_eof`](ClientConnection::receive_eof),
//!   [`handle_timeout`](ClientConnection::handle_timeout);
//! - commands, which only queue: `send_*` and [`close`](ClientConnection::close);
//! - outputs, to drain after every input or command:
//!   [`poll_transmit`](ClientConnection::poll_transmit) (bytes for the
//!   socket), [`poll_event`](ClientConnection::poll_event) (for the
//!   application), [`poll_timeout`](ClientConnection::poll_timeout) (when to
//!   call `handle_timeout` next);
//! - getters: [`state`](ClientConnection::state) and friends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::close::{close_payload, CloseCode};
use crate::config::Config;
use crate::deflate::{Deflater, Inflater};
use crate::entropy::{draw, Entropy};
use crate::error::{ProtocolError, SendError};
use crate::event::{CloseKind, Closed, Event};
use crate::frame::{write_frame, write_header, HeaderParser, OpCode};
use crate::handshake::{Request, RequestError};
use crate::mask::extend_masked;
use crate::opening::Opening;
use crate::utf8::Utf8Validator;

mod receive;

pub use receive::PayloadBuffer;

/// Message buffers smaller than this are not worth recycling.
const RECYCLE_MIN: usize = 64 << 10;

/// Where the connection is in its life, as the WebSocket API names it.
/// The one state type: the async client reports the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// The opening handshake (or, in a driver, TCP and TLS) is in progress.
    Connecting = 0,
    /// Messages flow both ways.
    Open = 1,
    /// A close frame was sent; the other side's is awaited.
    Closing = 2,
    /// Done, cleanly or not; nothing more is sent or reported.
    Closed = 3,
}

impl State {
    /// The lower-case name: `connecting`, `open`, `closing`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::Closing => "closing",
            State::Closed => "closed",
        }
    }

    /// The state stored as `self as u8` (in an atomic, say); anything
    /// unknown reads as `Closed`.
    pub fn from_u8(v: u8) -> State {
        match v {
            0 => State::Connecting,
            1 => State::Open,
            2 => State::Closing,
            _ => State::Closed,
        }
    }
}

/// What the bytes being read belong to.
#[derive(Debug, Clone, Copy)]
enum Inbound {
    Header,
    Data {
        remaining: u64,
        fin: bool,
    },
    Control {
        opcode: OpCode,
        remaining: u64,
    },
    /// After the server's close frame: anything more is ignored.
    Ignore,
}

/// A data message being assembled from frames.
struct Assembly {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
    /// Bytes of `data` already validated (for inflated text).
    checked: usize,
}

/// Keepalive bookkeeping.
#[derive(Default)]
struct Keepalive {
    next_ping: Option<Instant>,
    deadline: Option<Instant>,
    sent_at: Option<Instant>,
    seq: u32,
    rtt: Option<Duration>,
}

/// The client side of one WebSocket connection, without I/O: bytes in,
/// events out, no sockets, clock or threads of its own.
///
/// # Driving it
///
/// 1. [`new`](Self::new), then write what [`poll_transmit`](Self::poll_transmit)
///    gives (the opening handshake) to the socket.
/// 2. Loop:
///    - bytes read from the socket go to [`receive_data`](Self::receive_data)
///      (any chunking), the end of the stream to
///      [`receive_eof`](Self::receive_eof);
///    - when the instant from [`poll_timeout`](Self::poll_timeout) passes,
///      call [`handle_timeout`](Self::handle_timeout);
///    - the application's sends are `send_text`, `send_binary`,
///      [`send_ping`](Self::send_ping) and [`close`](Self::close), which only
///      queue;
///    - after each of those, drain [`poll_transmit`](Self::poll_transmit)
///      (write all of it) and [`poll_event`](Self::poll_event), then sleep
///      until the next read, send or [`poll_timeout`](Self::poll_timeout).
/// 3. Once [`state`](Self::state) is [`State::Closed`]: write what is left,
///    end your side of the stream (TCP `shutdown(Write)`), and keep reading
///    (feeding [`receive_eof`](Self::receive_eof) at the end) and honouring
///    [`poll_timeout`](Self::poll_timeout), which is now the teardown
///    deadline: the server should end the TCP connection first (RFC 6455
///    §7.1.1), and gets the close timeout to do it. Drop the socket once
///    [`is_finished`](Self::is_finished) says so and no event is left.
///
/// `docs/sans-io.md` walks through a complete loop.
pub struct ClientConnection {
    config: Arc<Config>,
    state: State,
    opening: Option<Opening>,
    out: Vec<u8>,
    events: VecDeque<Event>,
    header: HeaderParser,
    inbound: Inbound,
    control: Vec<u8>,
    assembly: Option<Assembly>,
    deflater: Option<Deflater>,
    inflater: Option<Inflater>,
    scratch: Vec<u8>,
    /// A message buffer the application gave back, for the next large message.
    spare: Vec<u8>,
    close_sent: bool,
    close_deadline: Option<Instant>,
    keepalive: Keepalive,
    entropy: Box<dyn Entropy>,
    /// The last instant a caller gave: when the connection closes, the
    /// teardown deadline counts from it (the engine reads no clock).
    last_now: Option<Instant>,
    teardown: Teardown,
}

/// After the close: waiting for the server to end the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// Not closed yet.
    NotClosed,
    /// Closed; the transport may be dropped after this instant.
    Until(Instant),
    /// The server ended the stream, or the deadline passed.
    Finished,
}

impl ClientConnection {
    /// Starts a connection: the handshake request is queued at once, so call
    /// [`poll_transmit`](Self::poll_transmit) next and send its bytes, then
    /// feed the server's answer to [`receive_data`](Self::receive_data).
    ///
    /// Keys and masks come from [`SystemEntropy`]; see
    /// [`with_entropy`](Self::with_entropy) to choose the generator. Needs
    /// the `system-entropy` feature (on by default).
    #[cfg(feature = "system-entropy")]
    pub fn new(config: Arc<Config>, request: &Request) -> Result<Self, RequestError> {
        Self::with_entropy(config, request, Box::new(crate::SystemEntropy))
    }

    /// Starts a connection whose handshake key and masking keys come from
    /// `entropy`: a seeded generator makes the bytes on the wire the same
    /// on every run.
    pub fn with_entropy(
        config: Arc<Config>,
        request: &Request,
        mut entropy: Box<dyn Entropy>,
    ) -> Result<Self, RequestError> {
        request.validate()?;
        if let Some(d) = &config.deflate {
            d.validate().map_err(RequestError::InvalidExtensionConfig)?;
        }
        let mut out = Vec::new();
        let opening = Opening::start(request, config.deflate.as_ref(), &mut *entropy, &mut out);
        Ok(ClientConnection {
            config,
            state: State::Connecting,
            opening: Some(opening),
            out,
            events: VecDeque::new(),
            header: HeaderParser::default(),
            inbound: Inbound::Header,
            control: Vec::new(),
            assembly: None,
            deflater: None,
            inflater: None,
            scratch: Vec::new(),
            spare: Vec::new(),
            close_sent: false,
            close_deadline: None,
            keepalive: Keepalive::default(),
            entropy,
            last_now: None,
            teardown: Teardown::NotClosed,
        })
    }

    // ---- getters ----

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes queued for the socket and not yet taken by `poll_transmit`.
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// The round-trip time measured by the last answered keepalive ping.
    pub fn rtt(&self) -> Option<Duration> {
        self.keepalive.rtt
    }

    /// Whether permessage-deflate was negotiated.
    pub fn is_compressed(&self) -> bool {
        self.inflater.is_some()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- inputs ----

    /// Feeds bytes read from the socket, in any chunking. Then drain
    /// [`poll_transmit`](Self::poll_transmit) (a ping's pong, an echoed close),
    /// [`poll_event`](Self::poll_event) and [`poll_timeout`](Self::poll_timeout).
    ///
    /// Never fails: a server that breaks the protocol gets a close frame with
    /// the right code, and a [`Event::Closed`] says why.
    pub fn receive_data(&mut self, now: Instant, data: &[u8]) {
        self.last_now = Some(now);
        if self.state == State::Connecting {
            let Some(opening) = self.opening.as_mut() else {
                return;
            };
            match opening.receive(data, &self.config) {
                crate::opening::Progress::NeedMore => {}
                crate::opening::Progress::Failed(err) => {
                    self.opening = None;
                    self.finish(
                        CloseCode::ABNORMAL,
                        String::new(),
                        CloseKind::Handshake(err),
                    );
                }
                crate::opening::Progress::Done {
                    accepted,
                    headers,
                    rest,
                } => {
                    self.opening = None;
                    if let Some(params) = accepted.deflate {
                        let (level, mem_level) = self
                            .config
                            .deflate
                            .as_ref()
                            .map_or((6, 5), |d| (d.level, d.mem_level));
                        self.deflater = Some(Deflater::new(params, level, mem_level));
                        self.inflater = Some(Inflater::new(params));
                    }
                    self.state = State::Open;
                    self.keepalive.next_ping = self.config.ping_interval.map(|i| later(now, i));
                    self.events.push_back(Event::Open(crate::event::Opened {
                        protocol: accepted.protocol,
                        compression: self.inflater.is_some(),
                        headers,
                    }));
                    // Bytes that came with the 101 are the first frames.
                    self.receive_frames(now, &rest);
                }
            }
            return;
        }
        self.receive_frames(now, data);
    }

    /// The server ended the byte stream (TCP FIN or TLS close_notify). Then
    /// drain [`poll_event`](Self::poll_event).
    pub fn receive_eof(&mut self, now: Instant) {
        self.last_now = Some(now);
        match self.state {
            State::Connecting => {
                let err = self
                    .opening
                    .take()
                    .map(|o| o.eof())
                    .unwrap_or(crate::error::HandshakeError::Eof);
                self.finish(
                    CloseCode::ABNORMAL,
                    String::new(),
                    CloseKind::Handshake(err),
                );
            }
            State::Open | State::Closing => {
                self.finish(CloseCode::ABNORMAL, String::new(), CloseKind::Abnormal)
            }
            State::Closed => {}
        }
        self.teardown = Teardown::Finished;
    }

    /// Call when the instant from [`poll_timeout`](Self::poll_timeout) has
    /// passed. May queue a ping, or close the connection on a timeout. Then
    /// drain [`poll_transmit`](Self::poll_transmit) (the ping) and
    /// [`poll_event`](Self::poll_event) (a timeout's close).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        if self.state == State::Closed {
            if matches!(self.teardown, Teardown::Until(d) if now >= d) {
                self.teardown = Teardown::Finished;
            }
            return;
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            self.finish(CloseCode::ABNORMAL, String::new(), CloseKind::CloseTimeout);
            return;
        }
        if self.keepalive.deadline.is_some_and(|d| now >= d) {
            self.finish(CloseCode::ABNORMAL, String::new(), CloseKind::PingTimeout);
            return;
        }
        if self.state == State::Open && self.keepalive.next_ping.is_some_and(|t| now >= t) {
            self.keepalive.seq = self.keepalive.seq.wrapping_add(1);
            let payload = self.keepalive.seq.to_be_bytes();
            self.write_control(OpCode::Ping, &payload);
            self.keepalive.sent_at = Some(now);
            if self.keepalive.deadline.is_none() {
                self.keepalive.deadline = self.config.ping_timeout.map(|t| later(now, t));
            }
            self.keepalive.next_ping = self.config.ping_interval.map(|i| later(now, i));
        }
    }

    // ---- commands ----

    /// Queues a text message. Then drain [`poll_transmit`](Self::poll_transmit).
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(OpCode::Text, text.as_bytes())
    }

    /// Queues a binary message. Then drain [`poll_transmit`](Self::poll_transmit).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(OpCode::Binary, data)
    }

    /// Queues a ping with up to 125 bytes of payload. Then drain
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        if payload.len() > 125 {
            return Err(SendError::ControlTooLong(payload.len()));
        }
        self.write_control(OpCode::Ping, payload);
        Ok(())
    }

    /// Starts the close handshake: queues a close frame and arms the close
    /// timeout. The connection reaches [`State::Closed`] when the server's
    /// close frame arrives or the timeout passes. The reason is cut to the
    /// 123 bytes a close frame can carry. Then drain
    /// [`poll_transmit`](Self::poll_transmit), and keep reading until
    /// [`poll_event`](Self::poll_event) gives the `Closed` event.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.last_now = Some(now);
        self.check_can_send()?;
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        self.write_control(OpCode::Close, &close_payload(code, reason));
        self.close_sent = true;
        self.state = State::Closing;
        self.close_deadline = Some(later(now, self.config.close_timeout));
        self.keepalive = Keepalive {
            rtt: self.keepalive.rtt,
            ..Keepalive::default()
        };
        Ok(())
    }

    // ---- outputs ----

    /// Moves the bytes queued for the socket onto the end of `buf` and
    /// returns how many there were. When `buf` is empty this swaps buffers
    /// instead of copying. Write all of them before calling again.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        let n = self.out.len();
        if n == 0 {
            return 0;
        }
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.out);
        } else {
            buf.extend_from_slice(&self.out);
            self.out.clear();
        }
        n
    }

    /// The next event for the application, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    ///
    /// Once closed, this is the teardown deadline: the instant after which
    /// the transport may be dropped even if the server has not ended it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return match self.teardown {
                Teardown::Until(d) => Some(d),
                _ => None,
            };
        }
        [
            self.close_deadline,
            self.keepalive.deadline,
            self.keepalive.next_ping,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Frees buffer capacity that an idle connection does not need.
    pub fn shrink_buffers(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
        self.scratch = Vec::new();
        // A control frame's payload may be half received (its first bytes
        // came with the 101, or in an earlier read): keep it then.
        if !matches!(self.inbound, Inbound::Control { .. }) {
            self.control = Vec::new();
        }
        self.spare = Vec::new();
    }

    /// Gives back the buffer of a message the application is done with, so
    /// that the next message of a similar size reuses it instead of a fresh
    /// allocation. Worth it for large messages at a high rate: with glibc's
    /// malloc a fresh buffer of a megabyte or more is often mapped and
    /// unmapped each time, and every page of it faulted in. One buffer is
    /// kept (the largest); [`shrink_buffers`](Self::shrink_buffers) frees it.
    /// Returns whether this one was kept (small buffers never are).
    pub fn recycle(&mut self, buffer: Vec<u8>) -> bool {
        if buffer.capacity() >= RECYCLE_MIN && buffer.capacity() > self.spare.capacity() {
            self.spare = buffer;
            self.spare.clear();
            return true;
        }
        false
    }

    /// A buffer for an uncompressed message of `len` bytes: the recycled one
    /// when it fits and would not be mostly wasted, else a new one.
    fn message_buffer(&mut self, len: usize) -> Vec<u8> {
        let spare = self.spare.capacity();
        if len >= RECYCLE_MIN && len <= spare && len >= spare / 2 {
            std::mem::take(&mut self.spare)
        } else {
            Vec::with_capacity(len)
        }
    }

    // ---- internals: sending ----

    fn check_can_send(&self) -> Result<(), SendError> {
        match self.state {
            State::Connecting => Err(SendError::NotOpen),
            State::Open => Ok(()),
            State::Closing | State::Closed => Err(SendError::Closed),
        }
    }

    fn send_data(&mut self, opcode: OpCode, data: &[u8]) -> Result<(), SendError> {
        self.check_can_send()?;
        let threshold = self
            .config
            .deflate
            .as_ref()
            .map_or(usize::MAX, |d| d.compression_threshold);
        match self.deflater.as_mut() {
            Some(deflater) if data.len() >= threshold => {
                self.scratch.clear();
                deflater.compress(data, &mut self.scratch);
                let mask = draw(&mut *self.entropy);
                write_header(
                    &mut self.out,
                    true,
                    true,
                    opcode,
                    self.scratch.len() as u64,
                    mask,
                );
                extend_masked(&mut self.out, &self.scratch, mask);
                if self.scratch.capacity() > 64 << 10 {
                    self.scratch = Vec::new();
                }
            }
            _ => {
                let mask = draw(&mut *self.entropy);
                write_frame(&mut self.out, true, false, opcode, data, mask);
            }
        }
        Ok(())
    }

    fn write_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = draw(&mut *self.entropy);
        write_frame(&mut self.out, true, false, opcode, payload, mask);
    }

    /// Whether the transport can be dropped: the connection is closed and
    /// the server has ended the byte stream, or the teardown deadline from
    /// [`poll_timeout`](Self::poll_timeout) has passed.
    pub fn is_finished(&self) -> bool {
        self.teardown == Teardown::Finished
    }

    /// Ends the connection and reports why. Idempotent.
    fn finish(&mut self, code: CloseCode, reason: String, kind: CloseKind) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.teardown = match self.last_now {
            Some(now) => Teardown::Until(later(now, self.config.close_timeout)),
            None => Teardown::Finished,
        };
        self.inbound = Inbound::Ignore;
        self.assembly = None;
        self.close_deadline = None;
        self.keepalive.next_ping = None;
        self.keepalive.deadline = None;
        self.events
            .push_back(Event::Closed(Closed { code, reason, kind }));
    }

    /// The server broke the protocol: send the matching close code, stop.
    fn fail(&mut self, err: ProtocolError) {
        let code = err.close_code();
        if !self.close_sent && self.state != State::Closed {
            self.write_control(OpCode::Close, &close_payload(code, ""));
            self.close_sent = true;
        }
        self.finish(code, err.to_string(), CloseKind::Protocol(err));
    }
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("state", &self.state)
            .field("buffered", &self.out.len())
            .field("compressed", &self.inflater.is_some())
            .finish_non_exhaustive()
    }
}

/// `now + d` for a timer, without overflowing the clock: a duration no
/// clock can hold (`Duration::MAX` from a config) counts as a century,
/// which never comes in practice.
fn later(now: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}
