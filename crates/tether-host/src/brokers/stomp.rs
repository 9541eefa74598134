//! STOMP 1.2 framing, sans-IO: bytes in, frames out; frames in, bytes out.
//!
//! The decoder streams: a frame may span several WebSocket messages and one
//! message may hold several frames, with heart-beat end-of-lines between
//! them. Header values are unescaped (`\\`, `\n`, `\r`, `\c`) except in
//! `CONNECT` and `CONNECTED`, as the specification says; when a header is
//! repeated the first value counts. A body is read up to `content-length`
//! when the header is there, else up to the first NUL.

/// A STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECT`, `SEND`, `MESSAGE`, …
    pub command: String,
    /// Headers in order, repeated ones included.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// A frame with no body.
    pub fn new(command: &str) -> Self {
        Frame {
            command: command.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes are not STOMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    /// The command line is empty or not a STOMP command.
    #[error(
        "STOMP: {0:?} is not a frame command (expected a word of capital letters such as MESSAGE)"
    )]
    BadCommand(String),
    /// A header line has no colon.
    #[error("STOMP: header line {0:?} has no ':'")]
    BadHeader(String),
    /// A backslash escape that STOMP 1.2 does not define.
    #[error(
        "STOMP: header {0:?} has an undefined escape (only \\\\, \\n, \\r and \\c are allowed)"
    )]
    BadEscape(String),
    /// Text that is not UTF-8 in the command or the headers.
    #[error("STOMP: the command or a header is not UTF-8")]
    NotUtf8,
    /// `content-length` is not a number.
    #[error("STOMP: content-length {0:?} is not a number of bytes")]
    BadContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("STOMP: the body of {0} is longer than its content-length (no NUL after it)")]
    MissingNul(String),
    /// The frame passes the size limit.
    #[error("STOMP: a frame passes the limit of {0} bytes; raise the limit or check the server")]
    TooLarge(usize),
}

/// The largest frame a decoder takes by default.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// The most headers one frame may have.
const MAX_HEADERS: usize = 1000;

/// A streaming STOMP decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_frame: usize,
    /// After an error the stream cannot be resynchronised.
    failed: Option<StompError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder that refuses frames larger than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max_frame,
            failed: None,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        // A broken stream is not buffered any further.
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held that are not a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, if one is buffered. After an error every call
    /// returns the same error: the stream is broken.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, StompError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.parse() {
            Ok(Some((frame, used))) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            Ok(None) => {
                if self.buf.len() > self.max_frame {
                    self.failed = Some(StompError::TooLarge(self.max_frame));
                    return Err(StompError::TooLarge(self.max_frame));
                }
                Ok(None)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Every whole frame buffered.
    pub fn frames(&mut self) -> Result<Vec<Frame>, StompError> {
        let mut out = Vec::new();
        while let Some(f) = self.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    fn parse(&mut self) -> Result<Option<(Frame, usize)>, StompError> {
        // Heart-beats: end-of-lines between frames.
        let skip = self
            .buf
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        if skip > 0 {
            self.buf.drain(..skip);
        }
        let buf = &self.buf[..];
        let mut pos = 0;
        let Some(line) = next_line(buf, &mut pos) else {
            return Ok(None);
        };
        let command = std::str::from_utf8(line).map_err(|_| StompError::NotUtf8)?;
        if command.is_empty()
            || command.len() > 32
            || !command.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(StompError::BadCommand(command.chars().take(40).collect()));
        }
        let raw_headers = command == "CONNECT" || command == "CONNECTED";
        let mut headers = Vec::new();
        loop {
            let Some(line) = next_line(buf, &mut pos) else {
                return Ok(None);
            };
            if line.is_empty() {
                break;
            }
            if headers.len() >= MAX_HEADERS {
                return Err(StompError::TooLarge(self.max_frame));
            }
            let line = std::str::from_utf8(line).map_err(|_| StompError::NotUtf8)?;
            let Some((name, value)) = line.split_once(':') else {
                return Err(StompError::BadHeader(line.chars().take(80).collect()));
            };
            if raw_headers {
                headers.push((name.to_string(), value.to_string()));
            } else {
                let bad = || StompError::BadEscape(line.chars().take(80).collect());
                headers.push((
                    unescape(name).ok_or_else(bad)?,
                    unescape(value).ok_or_else(bad)?,
                ));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| {
                v.trim()
                    .parse::<usize>()
                    .map_err(|_| StompError::BadContentLength(v.clone()))
            })
            .transpose()?;
        let (body, used) = match length {
            Some(n) => {
                if n > self.max_frame {
                    return Err(StompError::TooLarge(self.max_frame));
                }
                if buf.len() < pos + n + 1 {
                    return Ok(None);
                }
                if buf[pos + n] != 0 {
                    return Err(StompError::MissingNul(command.to_string()));
                }
                (buf[pos..pos + n].to_vec(), pos + n + 1)
            }
            None => match buf[pos..].iter().position(|b| *b == 0) {
                Some(n) => (buf[pos..pos + n].to_vec(), pos + n + 1),
                None => return Ok(None),
            },
        };
        let frame = Frame {
            command: command.to_string(),
            headers,
            body,
        };
        Ok(Some((frame, used)))
    }
}

/// The line starting at `*pos` without its `\n` (or `\r\n`); None when
/// the line is not complete yet.
fn next_line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let end = buf[*pos..].iter().position(|b| *b == b'\n')? + *pos;
    let mut line = &buf[*pos..end];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    *pos = end + 1;
    Some(line)
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            'c' => ':',
            _ => return None,
        });
    }
    Some(out)
}

fn escape(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            ':' => out.extend_from_slice(b"\\c"),
            c => {
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The command is not a word of capital letters.
    #[error("STOMP: {0:?} is not a frame command (use capital letters, e.g. SEND)")]
    BadCommand(String),
    /// CONNECT headers cannot be escaped, so they may not hold these.
    #[error("STOMP: {0} header {1:?} holds a newline or ':' (not allowed in CONNECT)")]
    Unescapable(String, String),
}

/// The bytes of a frame. A body gets a `content-length` header unless the
/// frame has one, so that NULs in the body are safe.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let c = &frame.command;
    if c.is_empty() || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(EncodeError::BadCommand(c.clone()));
    }
    let raw = c == "CONNECT" || c == "CONNECTED" || c == "STOMP";
    let mut out = Vec::with_capacity(64 + frame.body.len());
    out.extend_from_slice(c.as_bytes());
    out.push(b'\n');
    for (name, value) in &frame.headers {
        if raw {
            let bad = |s: &str| s.contains(['\n', '\r']) || s.contains(':');
            if bad(name) || value.contains(['\n', '\r']) {
                return Err(EncodeError::Unescapable(c.clone(), name.clone()));
            }
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        } else {
            escape(name, &mut out);
            out.push(b':');
            escape(value, &mut out);
        }
        out.push(b'\n');
    }
    if !frame.body.is_empty() && frame.get("content-length").is_none() {
        out.extend_from_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(&frame.body);
    out.push(0);
    Ok(out)
}

/// Negotiated heart-beats (STOMP 1.2 §Heart-beating): how often we must
/// send, and how long the server may stay silent, in milliseconds; 0 is
/// off. `ours` is what we asked for (`cx,cy`), `theirs` the `heart-beat`
/// header of CONNECTED (`sx,sy`).
pub fn heartbeats(ours: (u64, u64), theirs: Option<&str>) -> (u64, u64) {
    let (sx, sy) = theirs
        .and_then(|h| h.split_once(','))
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .unwrap_or((0, 0));
    let (cx, cy) = ours;
    let send = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
    let receive = if cy == 0 || sx == 0 { 0 } else { cy.max(sx) };
    (send, receive)
}
