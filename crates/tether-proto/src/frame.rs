//! Frame headers (RFC 6455 §5.2): parsing the server's, writing ours.
//!
//! The decoder is incremental: [`HeaderParser`] accepts the header bytes in
//! any number of pieces, so a frame may arrive one byte at a time. Payload
//! bytes never pass through it; the connection copies them straight into the
//! message being assembled.

use crate::error::ProtocolError;
use crate::mask::extend_masked;

/// A frame's opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the low nibble of the first header byte.
    pub fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        Ok(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The opcode's wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1, which permessage-deflate uses to mark a compressed message.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The payload length.
    pub len: u64,
}

/// Parses a frame header that may arrive in pieces.
///
/// It checks only what the header alone can tell: the reserved bits that no
/// extension allows, reserved opcodes, a masked server frame, control frame
/// rules, and the 64-bit length's top bit. Rules that need the connection's
/// state (continuations, message limits) are the connection's.
#[derive(Debug, Default)]
pub struct HeaderParser {
    buf: [u8; 14],
    filled: usize,
}

impl HeaderParser {
    /// Feeds bytes from `data`. Returns how many bytes were consumed and,
    /// once the header is complete, the header. `allow_rsv1` says whether an
    /// extension that uses RSV1 was negotiated.
    pub fn feed(
        &mut self,
        data: &[u8],
        allow_rsv1: bool,
    ) -> Result<(usize, Option<FrameHeader>), ProtocolError> {
        let mut used = 0;
        // The first two bytes tell how long the header is.
        while self.filled < 2 {
            let Some(&byte) = data.get(used) else {
                return Ok((used, None));
            };
            self.buf[self.filled] = byte;
            self.filled += 1;
            used += 1;
        }
        let b0 = self.buf[0];
        let b1 = self.buf[1];
        if b1 & 0x80 != 0 {
            return Err(ProtocolError::MaskedFrame);
        }
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !allow_rsv1) {
            return Err(ProtocolError::ReservedBits(b0 & 0x70));
        }
        let fin = b0 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlTooLong);
            }
        }
        let total = match len7 {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        while self.filled < total {
            let Some(&byte) = data.get(used) else {
                return Ok((used, None));
            };
            self.buf[self.filled] = byte;
            self.filled += 1;
            used += 1;
        }
        let len = match len7 {
            126 => u16::from_be_bytes([self.buf[2], self.buf[3]]) as u64,
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buf[2..10]);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBit);
                }
                len
            }
            n => n as u64,
        };
        self.filled = 0;
        Ok((
            used,
            Some(FrameHeader {
                fin,
                rsv1,
                opcode,
                len,
            }),
        ))
    }
}

/// Appends a complete masked client frame to `out`.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) {
    write_header(out, fin, rsv1, opcode, payload.len() as u64, mask);
    extend_masked(out, payload, mask);
}

/// Appends a masked client frame header; the caller appends the payload
/// masked with the same key.
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    len: u64,
    mask: [u8; 4],
) {
    let b0 = (fin as u8) << 7 | (rsv1 as u8) << 6 | opcode.as_u8();
    out.reserve(14 + len as usize);
    out.push(b0);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<FrameHeader, ProtocolError> {
        let mut p = HeaderParser::default();
        let (used, h) = p.feed(bytes, false)?;
        assert_eq!(used, bytes.len());
        Ok(h.expect("complete header"))
    }

    #[test]
    fn parses_all_three_length_forms() {
        assert_eq!(parse_all(&[0x81, 5]).unwrap().len, 5);
        assert_eq!(parse_all(&[0x82, 126, 0x01, 0x00]).unwrap().len, 256);
        let h = parse_all(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
        assert_eq!(h.len, 1 << 32);
    }

    #[test]
    fn one_byte_at_a_time() {
        let bytes = [0x02, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        let mut p = HeaderParser::default();
        for (i, b) in bytes.iter().enumerate() {
            let (used, h) = p.feed(std::slice::from_ref(b), false).unwrap();
            assert_eq!(used, 1);
            assert_eq!(h.is_some(), i == bytes.len() - 1);
            if let Some(h) = h {
                assert!(!h.fin);
                assert_eq!(h.opcode, OpCode::Binary);
                assert_eq!(h.len, 65536);
            }
        }
    }

    #[test]
    fn rejects_header_violations() {
        assert_eq!(parse_all(&[0x81, 0x85]), Err(ProtocolError::MaskedFrame));
        assert_eq!(
            parse_all(&[0xC1, 0]),
            Err(ProtocolError::ReservedBits(0x40))
        );
        assert_eq!(
            parse_all(&[0xA1, 0]),
            Err(ProtocolError::ReservedBits(0x20))
        );
        assert_eq!(parse_all(&[0x83, 0]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(
            parse_all(&[0x8B, 0]),
            Err(ProtocolError::ReservedOpcode(0xB))
        );
        assert_eq!(parse_all(&[0x09, 0]), Err(ProtocolError::FragmentedControl));
        assert_eq!(
            parse_all(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlTooLong)
        );
        assert_eq!(
            parse_all(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBit)
        );
    }

    #[test]
    fn writes_masked_frames_that_parse_back() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            write_frame(
                &mut out,
                true,
                false,
                OpCode::Binary,
                &payload,
                [1, 2, 3, 4],
            );
            // clear the mask bit so the server-side parser accepts it
            out[1] &= 0x7F;
            let mut p = HeaderParser::default();
            let (used, h) = p.feed(&out, false).unwrap();
            let h = h.unwrap();
            assert_eq!(h.len as usize, len);
            assert_eq!(out.len(), used + 4 + len);
        }
    }
}
