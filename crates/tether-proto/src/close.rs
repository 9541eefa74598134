//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use crate::error::ProtocolError;
use crate::utf8::Utf8Validator;

/// A close status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection ended without a close frame (never sent).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message was not UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the server did not negotiate an extension the client needs.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether this code may appear in a close frame on the wire: 1000–1003,
    /// 1007–1014 and the registered and private ranges 3000–4999.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a received close payload into the code and reason.
///
/// An empty payload means "no status" (1005). A one-byte payload, a code that
/// may not be sent, or a reason that is not UTF-8 is a protocol violation.
pub fn parse_close_payload(payload: &[u8]) -> Result<(CloseCode, String), ProtocolError> {
    match payload.len() {
        0 => Ok((CloseCode::NO_STATUS, String::new())),
        1 => Err(ProtocolError::CloseLengthOne),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = &payload[2..];
            let mut v = Utf8Validator::new();
            v.feed(reason)
                .and_then(|()| v.finish())
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            let reason =
                String::from_utf8(reason.to_vec()).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}

/// Builds a close payload. The reason is cut, at a character boundary, to
/// the 123 bytes that fit in a control frame.
pub fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.0.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn parses_payloads() {
        assert_eq!(parse_close_payload(&[]).unwrap().0, CloseCode::NO_STATUS);
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::CloseLengthOne)
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xEE]),
            Err(ProtocolError::InvalidCloseCode(1006))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xE8, 0xFF]),
            Err(ProtocolError::InvalidUtf8)
        );
        let (code, reason) = parse_close_payload(&[0x03, 0xE9, b'b', b'y', b'e']).unwrap();
        assert_eq!((code, reason.as_str()), (CloseCode::GOING_AWAY, "bye"));
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let payload = close_payload(CloseCode::NORMAL, &reason);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
