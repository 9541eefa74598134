//! The opening handshake (RFC 6455 §4): the request we send and the checks
//! on the server's response.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::deflate::{DeflateConfig, DeflateParams};
use crate::error::HandshakeError;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// How much of a rejection's body is kept.
pub const REJECTION_BODY_LIMIT: usize = 4096;

/// What to ask the server for.
#[derive(Debug, Clone)]
pub struct Request {
    host: String,
    port: u16,
    secure: bool,
    resource: String,
    origin: Option<String>,
    headers: Vec<(String, String)>,
    protocols: Vec<String>,
}

/// The request could not be built: a caller's mistake, found before any byte
/// is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A header name that is not an HTTP token.
    #[error("invalid header name {0:?}: use letters, digits and !#$%&'*+-.^_`|~")]
    InvalidHeaderName(String),
    /// A header value with a control character (CR or LF would split the request).
    #[error("invalid value for header {0:?}: control characters are not allowed")]
    InvalidHeaderValue(String),
    /// A header that the handshake itself sets.
    #[error("header {0:?} is set by the WebSocket handshake and cannot be overridden")]
    ReservedHeader(String),
    /// A subprotocol name that is not an HTTP token.
    #[error("invalid subprotocol name {0:?}: it must be a non-empty HTTP token")]
    InvalidProtocol(String),
    /// The host is empty or has characters a Host header cannot carry.
    #[error("invalid host {0:?}")]
    InvalidHost(String),
    /// The permessage-deflate options are out of range.
    #[error("invalid compression options: {0}")]
    InvalidExtensionConfig(String),
    /// The resource is not an absolute path.
    #[error("invalid resource {0:?}: it must start with '/' and contain no spaces or control characters")]
    InvalidResource(String),
}

impl Request {
    /// A request for `resource` (path and query, e.g. `/chat?room=1`) on
    /// `host:port`. `secure` is true for `wss://`; it decides which port is
    /// the default one, left out of the Host header.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        secure: bool,
        resource: impl Into<String>,
    ) -> Self {
        Request {
            host: host.into(),
            port,
            secure,
            resource: resource.into(),
            origin: None,
            headers: Vec::new(),
            protocols: Vec::new(),
        }
    }

    /// Sets the Origin header.
    pub fn origin(&mut self, origin: impl Into<String>) -> &mut Self {
        self.origin = Some(origin.into());
        self
    }

    /// Adds a header to the request.
    pub fn header(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol, in order of preference.
    pub fn protocol(&mut self, name: impl Into<String>) -> &mut Self {
        self.protocols.push(name.into());
        self
    }

    /// The subprotocols offered.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Checks every part for what could break or smuggle into the request.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.host.is_empty()
            || self
                .host
                .bytes()
                .any(|b| b <= b' ' || b == b'/' || b == 0x7F)
        {
            return Err(RequestError::InvalidHost(self.host.clone()));
        }
        if !self.resource.starts_with('/') || self.resource.bytes().any(|b| b <= b' ' || b == 0x7F)
        {
            return Err(RequestError::InvalidResource(self.resource.clone()));
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(RequestError::InvalidHeaderName(name.clone()));
            }
            if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                return Err(RequestError::ReservedHeader(name.clone()));
            }
            if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7F) {
                return Err(RequestError::InvalidHeaderValue(name.clone()));
            }
        }
        if let Some(origin) = &self.origin {
            if origin.bytes().any(|b| b < b' ' || b == 0x7F) {
                return Err(RequestError::InvalidHeaderValue("Origin".into()));
            }
        }
        for p in &self.protocols {
            if !is_token(p) {
                return Err(RequestError::InvalidProtocol(p.clone()));
            }
        }
        Ok(())
    }

    /// Writes the HTTP request with `key` (base64 of 16 random bytes).
    pub(crate) fn write(&self, key: &str, deflate: Option<&DeflateConfig>, out: &mut Vec<u8>) {
        let default_port = if self.secure { 443 } else { 80 };
        let mut s = String::with_capacity(256);
        s.push_str("GET ");
        s.push_str(&self.resource);
        s.push_str(" HTTP/1.1\r\nHost: ");
        s.push_str(&self.host);
        if self.port != default_port {
            s.push(':');
            s.push_str(&self.port.to_string());
        }
        s.push_str("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
        s.push_str(key);
        s.push_str("\r\n");
        if let Some(origin) = &self.origin {
            s.push_str("Origin: ");
            s.push_str(origin);
            s.push_str("\r\n");
        }
        if !self.protocols.is_empty() {
            s.push_str("Sec-WebSocket-Protocol: ");
            s.push_str(&self.protocols.join(", "));
            s.push_str("\r\n");
        }
        if let Some(deflate) = deflate {
            s.push_str("Sec-WebSocket-Extensions: ");
            s.push_str(&deflate.offer());
            s.push_str("\r\n");
        }
        for (name, value) in &self.headers {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(value);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        out.extend_from_slice(s.as_bytes());
    }
}

const RESERVED: &[&str] = &[
    "Host",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
    "Content-Length",
    "Transfer-Encoding",
];

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A fresh random Sec-WebSocket-Key.
pub(crate) fn generate_key(entropy: &mut dyn crate::Entropy) -> String {
    let bytes: [u8; 16] = crate::entropy::draw(entropy);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The Sec-WebSocket-Accept value the server must answer `key` with.
pub fn accept_for_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A parsed response head.
pub(crate) struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// How many bytes of the buffer the head took.
    pub len: usize,
}

/// Parses the response head from `buf`; `Ok(None)` means more bytes are
/// needed.
pub(crate) fn parse_response(
    buf: &[u8],
    limit: usize,
) -> Result<Option<ResponseHead>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if len > limit {
                return Err(HandshakeError::ResponseTooLarge { limit });
            }
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some(ResponseHead {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or("").to_string(),
                headers,
                len,
            }))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > limit {
                Err(HandshakeError::ResponseTooLarge { limit })
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => Err(HandshakeError::InvalidHttp(
            "more than 64 response headers".into(),
        )),
        Err(e) => Err(HandshakeError::InvalidHttp(e.to_string())),
    }
}

/// What the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub protocol: Option<String>,
    pub deflate: Option<DeflateParams>,
}

/// Checks a 101 response against what we asked for.
pub(crate) fn validate_upgrade(
    head: &ResponseHead,
    key: &str,
    protocols: &[String],
    deflate: Option<&DeflateConfig>,
) -> Result<Accepted, HandshakeError> {
    let values = |name: &'static str| {
        head.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("Upgrade", "websocket") {
        return Err(HandshakeError::NotUpgraded(
            "the Upgrade header does not contain \"websocket\"".into(),
        ));
    }
    if !has_token("Connection", "upgrade") {
        return Err(HandshakeError::NotUpgraded(
            "the Connection header does not contain \"upgrade\"".into(),
        ));
    }
    let mut accept = values("Sec-WebSocket-Accept");
    match (accept.next(), accept.next()) {
        (Some(a), None) if a.trim() == accept_for_key(key) => {}
        (None, _) => {
            return Err(HandshakeError::NotUpgraded(
                "the Sec-WebSocket-Accept header is missing".into(),
            ))
        }
        _ => return Err(HandshakeError::BadAccept),
    }
    let chosen: Vec<&str> = values("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = match chosen.as_slice() {
        [] => None,
        [p] if protocols.iter().any(|o| o == p) => Some(p.to_string()),
        [p] => return Err(HandshakeError::UnexpectedProtocol(p.to_string())),
        many => return Err(HandshakeError::UnexpectedProtocol(many.join(", "))),
    };
    let mut negotiated = None;
    for ext in values("Sec-WebSocket-Extensions").flat_map(|v| v.split(',')) {
        let ext = ext.trim();
        if ext.is_empty() {
            continue;
        }
        let name = ext.split(';').next().unwrap_or("").trim();
        match deflate {
            Some(cfg) if name.eq_ignore_ascii_case("permessage-deflate") => {
                if negotiated.is_some() {
                    return Err(HandshakeError::InvalidExtension(
                        "permessage-deflate accepted twice".into(),
                    ));
                }
                negotiated = Some(cfg.accept(ext)?);
            }
            _ => return Err(HandshakeError::UnexpectedExtension(ext.to_string())),
        }
    }
    Ok(Accepted {
        protocol,
        deflate: negotiated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_example() {
        assert_eq!(
            accept_for_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_are_random_16_bytes() {
        let a = generate_key(&mut crate::SystemEntropy);
        let b = generate_key(&mut crate::SystemEntropy);
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 16);
    }

    #[test]
    fn host_header_has_port_only_when_not_default() {
        let mut out = Vec::new();
        Request::new("example.com", 80, false, "/a?b=c").write("k", None, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n"),
            "{text}"
        );
        let mut out = Vec::new();
        Request::new("example.com", 80, true, "/").write("k", None, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Host: example.com:80\r\n"));
        let mut out = Vec::new();
        Request::new("[::1]", 443, true, "/").write("k", None, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("Host: [::1]\r\n"));
    }

    #[test]
    fn rejects_header_injection() {
        let mut r = Request::new("h", 80, false, "/");
        r.header("X-A", "ok\r\nEvil: 1");
        assert_eq!(
            r.validate(),
            Err(RequestError::InvalidHeaderValue("X-A".into()))
        );
        let mut r = Request::new("h", 80, false, "/");
        r.header("Bad Name", "v");
        assert!(matches!(
            r.validate(),
            Err(RequestError::InvalidHeaderName(_))
        ));
        let mut r = Request::new("h", 80, false, "/");
        r.header("sec-websocket-key", "v");
        assert!(matches!(r.validate(), Err(RequestError::ReservedHeader(_))));
        let mut r = Request::new("h", 80, false, "/");
        r.protocol("a b");
        assert!(matches!(
            r.validate(),
            Err(RequestError::InvalidProtocol(_))
        ));
        assert!(Request::new("h", 80, false, "/x y").validate().is_err());
    }
}
