//! The receiving half of the state machine: frames in, messages and control
//! frames out.

use std::time::Instant;

use super::{Assembly, ClientConnection, Inbound, State};
use crate::close::{close_payload, parse_close_payload, CloseCode};
use crate::error::ProtocolError;
use crate::event::{CloseKind, Event, Message};
use crate::frame::{FrameHeader, OpCode};
use crate::utf8::Utf8Validator;

/// The buffer of a message being received, lent to the driver so that a
/// large payload is read from the socket straight into it instead of being
/// copied there from a read buffer. See
/// [`ClientConnection::lend_payload_buffer`].
#[derive(Debug)]
pub struct PayloadBuffer {
    data: Vec<u8>,
    start: usize,
    limit: usize,
}

impl PayloadBuffer {
    /// The buffer to append to. Append only, and at most
    /// [`spare`](Self::spare) bytes; it already has the capacity reserved.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// How many more bytes belong to the current frame's payload.
    pub fn spare(&self) -> usize {
        (self.start + self.limit).saturating_sub(self.data.len())
    }
}

impl ClientConnection {
    /// When the next bytes from the server are the rest of an uncompressed
    /// data frame with at least `min` bytes left, lends the message's buffer:
    /// read up to [`PayloadBuffer::spare`] bytes into it, then hand it back
    /// with [`receive_payload`](Self::receive_payload) before feeding
    /// anything else. Otherwise `None`: read into your own buffer and call
    /// [`receive_data`](Self::receive_data).
    ///
    /// This saves one copy per byte for large messages; it changes nothing
    /// in what is validated or reported.
    pub fn lend_payload_buffer(&mut self, min: usize) -> Option<PayloadBuffer> {
        let Inbound::Data { remaining, .. } = self.inbound else {
            return None;
        };
        let msg = self.assembly.as_mut().filter(|m| !m.compressed)?;
        if remaining < min.max(1) as u64 {
            return None;
        }
        let data = std::mem::take(&mut msg.data);
        Some(PayloadBuffer {
            start: data.len(),
            limit: usize::try_from(remaining).unwrap_or(usize::MAX),
            data,
        })
    }

    /// Takes back a buffer from [`lend_payload_buffer`](Self::lend_payload_buffer)
    /// with the bytes read into it, and processes them as
    /// [`receive_data`](Self::receive_data) would. Bytes past the frame's
    /// payload are not lost: they are fed on as ordinary input.
    pub fn receive_payload(&mut self, now: Instant, mut payload: PayloadBuffer) {
        self.last_now = Some(now);
        let end = payload.start + payload.limit;
        let excess = if payload.data.len() > end {
            payload.data.split_off(end)
        } else {
            Vec::new()
        };
        let appended = payload.data.len().saturating_sub(payload.start);
        match (self.inbound, self.assembly.as_mut()) {
            (Inbound::Data { remaining, fin }, Some(msg)) if !msg.compressed => {
                msg.data = payload.data;
                if appended > 0 {
                    if msg.text {
                        let from = payload.start.min(msg.data.len());
                        if msg.utf8.feed(&msg.data[from..]).is_err() {
                            return self.fail(ProtocolError::InvalidUtf8);
                        }
                    }
                    let remaining = remaining.saturating_sub(appended as u64);
                    self.inbound = Inbound::Data { remaining, fin };
                    if remaining == 0 {
                        if let Err(e) = self.end_data_frame(fin) {
                            return self.fail(e);
                        }
                    }
                }
            }
            // The connection ended (a timeout) while the buffer was out:
            // what was read no longer matters.
            _ => return,
        }
        if !excess.is_empty() {
            self.receive_frames(now, &excess);
        }
    }

    pub(super) fn receive_frames(&mut self, now: Instant, mut data: &[u8]) {
        while !data.is_empty() {
            match self.inbound {
                Inbound::Ignore => return,
                Inbound::Header => {
                    let allow_rsv1 = self.inflater.is_some();
                    match self.header.feed(data, allow_rsv1) {
                        Err(e) => return self.fail(e),
                        Ok((used, header)) => {
                            data = &data[used..];
                            if let Some(h) = header {
                                if let Err(e) = self.begin_frame(now, h) {
                                    return self.fail(e);
                                }
                            }
                        }
                    }
                }
                Inbound::Data { remaining, fin } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    let (chunk, rest) = data.split_at(n);
                    data = rest;
                    let remaining = remaining - n as u64;
                    self.inbound = Inbound::Data { remaining, fin };
                    if let Err(e) = self.message_data(chunk) {
                        return self.fail(e);
                    }
                    if remaining == 0 {
                        if let Err(e) = self.end_data_frame(fin) {
                            return self.fail(e);
                        }
                    }
                }
                Inbound::Control { opcode, remaining } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    self.control.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    let remaining = remaining - n as u64;
                    self.inbound = Inbound::Control { opcode, remaining };
                    if remaining == 0 {
                        if let Err(e) = self.end_control_frame(now, opcode) {
                            return self.fail(e);
                        }
                    }
                }
            }
        }
    }

    fn begin_frame(&mut self, now: Instant, h: FrameHeader) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        if h.len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooBig {
                size: h.len,
                limit: self.config.max_frame_size,
            });
        }
        match h.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                if h.rsv1 {
                    return Err(ProtocolError::CompressedNonFirstFrame("control"));
                }
                self.control.clear();
                self.inbound = Inbound::Control {
                    opcode: h.opcode,
                    remaining: h.len,
                };
                if h.len == 0 {
                    self.end_control_frame(now, h.opcode)?;
                }
                return Ok(());
            }
            OpCode::Continuation => {
                let Some(msg) = self.assembly.as_mut() else {
                    return Err(ProtocolError::OrphanContinuation);
                };
                if h.rsv1 {
                    return Err(ProtocolError::CompressedNonFirstFrame("continuation"));
                }
                let size = msg.data.len() as u64 + h.len;
                if !msg.compressed && size > limit as u64 {
                    return Err(ProtocolError::MessageTooBig { size, limit });
                }
                if !msg.compressed {
                    msg.data.reserve(h.len as usize);
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.assembly.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if !h.rsv1 && h.len > limit as u64 {
                    return Err(ProtocolError::MessageTooBig { size: h.len, limit });
                }
                let data = if h.rsv1 {
                    Vec::new()
                } else {
                    self.message_buffer(h.len as usize)
                };
                self.assembly = Some(Assembly {
                    text: h.opcode == OpCode::Text,
                    compressed: h.rsv1,
                    data,
                    utf8: Utf8Validator::new(),
                    checked: 0,
                });
            }
        }
        self.inbound = Inbound::Data {
            remaining: h.len,
            fin: h.fin,
        };
        if h.len == 0 {
            self.end_data_frame(h.fin)?;
        }
        Ok(())
    }

    fn message_data(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let Some(msg) = self.assembly.as_mut() else {
            return Ok(());
        };
        if msg.compressed {
            let inflater = self
                .inflater
                .as_mut()
                .ok_or(ProtocolError::ReservedBits(0x40))?;
            inflater.inflate(chunk, &mut msg.data, self.config.max_message_size)?;
            if msg.text {
                msg.utf8
                    .feed(&msg.data[msg.checked..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                msg.checked = msg.data.len();
            }
        } else {
            if msg.text {
                msg.utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            msg.data.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn end_data_frame(&mut self, fin: bool) -> Result<(), ProtocolError> {
        self.inbound = Inbound::Header;
        if !fin {
            return Ok(());
        }
        let Some(mut msg) = self.assembly.take() else {
            return Ok(());
        };
        if msg.compressed {
            if let Some(inflater) = self.inflater.as_mut() {
                inflater.finish_message(&mut msg.data, self.config.max_message_size)?;
            }
            if msg.text {
                msg.utf8
                    .feed(&msg.data[msg.checked..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        }
        let message = if msg.text {
            msg.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(String::from_utf8(msg.data).map_err(|_| ProtocolError::InvalidUtf8)?)
        } else {
            Message::Binary(msg.data)
        };
        self.events.push_back(Event::Message(message));
        Ok(())
    }

    fn end_control_frame(&mut self, now: Instant, opcode: OpCode) -> Result<(), ProtocolError> {
        self.inbound = Inbound::Header;
        let payload = std::mem::take(&mut self.control);
        match opcode {
            OpCode::Ping => {
                if !self.close_sent && self.state == State::Open {
                    self.write_control(OpCode::Pong, &payload);
                }
                self.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => {
                let k = &mut self.keepalive;
                let mut rtt = None;
                if let Some(sent) = k.sent_at {
                    if payload == k.seq.to_be_bytes() {
                        rtt = Some(now.saturating_duration_since(sent));
                        k.rtt = rtt;
                        k.sent_at = None;
                        k.deadline = None;
                    }
                }
                self.events.push_back(Event::Pong { payload, rtt });
            }
            OpCode::Close => {
                let (code, reason) = parse_close_payload(&payload)?;
                let kind = if self.close_sent {
                    CloseKind::Local
                } else {
                    // Echo the server's code (or an empty close when it sent none).
                    let echo = if code == CloseCode::NO_STATUS {
                        Vec::new()
                    } else {
                        close_payload(code, "")
                    };
                    self.write_control(OpCode::Close, &echo);
                    self.close_sent = true;
                    CloseKind::Remote
                };
                self.finish(code, reason, kind);
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {}
        }
        Ok(())
    }
}
