//! permessage-deflate (RFC 7692): the offer, the checks on the server's
//! answer, and the per-message compressor and decompressor.
//!
//! Both zlib streams are created lazily, on the first message that needs
//! them, and sized from the negotiated window, so an idle connection that
//! negotiated compression costs nothing until it is used.

use flate2::{Decompress, FlushDecompress, Status};

use crate::error::{HandshakeError, ProtocolError};

/// The four bytes a sync flush ends with; RFC 7692 §7.2.1 strips them on
/// the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// What the client offers. The defaults match what Python websockets and
/// Node ws offer: full windows, context takeover in both directions, and a
/// `client_max_window_bits` without a value so the server may pick ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// `client_max_window_bits`: `None` offers the parameter without a value
    /// (the server may choose any 8..=15); `Some(n)` caps our window at `n`.
    pub client_max_window_bits: Option<u8>,
    /// `server_max_window_bits=n`: asks the server to use a window of at most
    /// `n` bits, which caps our inflate memory. `None` leaves it out.
    pub server_max_window_bits: Option<u8>,
    /// `client_no_context_takeover`: we reset our compressor after every
    /// message (saves memory between messages, costs ratio).
    pub client_no_context_takeover: bool,
    /// `server_no_context_takeover`: asks the server to reset its compressor
    /// after every message, so we can free our inflate state between them.
    pub server_no_context_takeover: bool,
    /// Messages shorter than this are sent uncompressed. The default, 128
    /// bytes, is where deflate's 5–10 byte framing overhead and its CPU cost
    /// stop paying off for typical JSON: smaller messages rarely shrink.
    pub compression_threshold: usize,
    /// zlib compression level, 0..=9. The default 6 is zlib's default.
    pub level: u32,
    /// zlib memory level, 1..=9: the size of the compressor's hash table.
    /// The default 5 (as Python websockets uses) keeps the compressor at
    /// about 150 KB with a 15-bit window instead of about 380 KB at zlib's
    /// default 8, for a slightly lower ratio.
    pub mem_level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            client_max_window_bits: None,
            server_max_window_bits: None,
            client_no_context_takeover: false,
            server_no_context_takeover: false,
            compression_threshold: 128,
            level: 6,
            mem_level: 5,
        }
    }
}

/// What both sides agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The window we compress with.
    pub client_max_window_bits: u8,
    /// The window the server compresses with.
    pub server_max_window_bits: u8,
    /// We reset our compressor after every message.
    pub client_no_context_takeover: bool,
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
}

impl DeflateConfig {
    /// Checks the window sizes the user configured.
    pub fn validate(&self) -> Result<(), String> {
        for (name, bits) in [
            ("client_max_window_bits", self.client_max_window_bits),
            ("server_max_window_bits", self.server_max_window_bits),
        ] {
            if let Some(b) = bits {
                if !(8..=15).contains(&b) {
                    return Err(format!("{name} must be between 8 and 15, not {b}"));
                }
            }
        }
        if self.level > 9 {
            return Err(format!(
                "compression level must be 0..=9, not {}",
                self.level
            ));
        }
        Ok(())
    }

    /// The Sec-WebSocket-Extensions value we send.
    pub fn offer(&self) -> String {
        let mut s = String::from("permessage-deflate");
        match self.client_max_window_bits {
            Some(b) => s.push_str(&format!("; client_max_window_bits={b}")),
            None => s.push_str("; client_max_window_bits"),
        }
        if let Some(b) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={b}"));
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        s
    }

    /// Checks the server's permessage-deflate response (one extension from
    /// the Sec-WebSocket-Extensions list) against our offer.
    pub fn accept(&self, response: &str) -> Result<DeflateParams, HandshakeError> {
        let bad = |m: String| HandshakeError::InvalidExtension(m);
        let mut params = DeflateParams {
            client_max_window_bits: self.client_max_window_bits.unwrap_or(15),
            server_max_window_bits: 15,
            client_no_context_takeover: self.client_no_context_takeover,
            server_no_context_takeover: false,
        };
        let mut seen: Vec<String> = Vec::new();
        for param in response.split(';').skip(1) {
            let param = param.trim();
            if param.is_empty() {
                continue;
            }
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            let lname = name.to_ascii_lowercase();
            if seen.contains(&lname) {
                return Err(bad(format!("parameter {name} appears twice")));
            }
            seen.push(lname.clone());
            let bits = |v: Option<&str>| -> Result<u8, HandshakeError> {
                let v = v.ok_or_else(|| bad(format!("{name} needs a value")))?;
                match v.parse::<u8>() {
                    Ok(b) if (8..=15).contains(&b) && !v.starts_with('0') => Ok(b),
                    _ => Err(bad(format!("{name}={v} is outside 8..15"))),
                }
            };
            match lname.as_str() {
                "server_no_context_takeover" => {
                    if value.is_some() {
                        return Err(bad(format!("{name} takes no value")));
                    }
                    params.server_no_context_takeover = true;
                }
                "client_no_context_takeover" => {
                    if value.is_some() {
                        return Err(bad(format!("{name} takes no value")));
                    }
                    params.client_no_context_takeover = true;
                }
                "server_max_window_bits" => {
                    let b = bits(value)?;
                    if let Some(max) = self.server_max_window_bits {
                        if b > max {
                            return Err(bad(format!(
                                "server_max_window_bits={b} is above the {max} offered"
                            )));
                        }
                    }
                    params.server_max_window_bits = b;
                }
                "client_max_window_bits" => {
                    let b = bits(value)?;
                    if let Some(max) = self.client_max_window_bits {
                        if b > max {
                            return Err(bad(format!(
                                "client_max_window_bits={b} is above the {max} offered"
                            )));
                        }
                    }
                    params.client_max_window_bits = b;
                }
                _ => return Err(bad(format!("unknown parameter {name}"))),
            }
        }
        Ok(params)
    }
}

/// zlib cannot deflate with an 8-bit window (RFC 7692 §7.1.2.1 notes it);
/// 9 bits is the smallest that works, and inflating with 9 reads 8 too.
fn zlib_bits(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Compresses outgoing messages. It uses zlib-rs directly (flate2 does not
/// let the memory level be chosen, which triples the compressor's size).
pub(crate) struct Deflater {
    params: DeflateParams,
    level: u32,
    mem_level: u8,
    stream: Option<Box<zlib_rs::Deflate>>,
}

impl Deflater {
    pub fn new(params: DeflateParams, level: u32, mem_level: u8) -> Self {
        Deflater {
            params,
            level,
            mem_level,
            stream: None,
        }
    }

    /// Appends the compressed form of `data` (without the sync tail) to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let config = zlib_rs::DeflateConfig {
            level: self.level as i32,
            method: zlib_rs::Method::Deflated,
            // Negative: raw deflate, no zlib header.
            window_bits: -i32::from(zlib_bits(self.params.client_max_window_bits)),
            mem_level: i32::from(self.mem_level),
            strategy: zlib_rs::Strategy::Default,
        };
        let stream = self
            .stream
            .get_or_insert_with(|| Box::new(zlib_rs::Deflate::new_with_config(config)));
        let start = out.len();
        let mut input = data;
        loop {
            // Room for incompressible data plus block overhead; grown if needed.
            let room = (input.len() + input.len() / 8 + 64).max(256);
            let filled = out.len();
            out.resize(filled + room, 0);
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            let result =
                stream.compress(input, &mut out[filled..], zlib_rs::DeflateFlush::SyncFlush);
            let used = (stream.total_in() - in_before) as usize;
            let wrote = (stream.total_out() - out_before) as usize;
            out.truncate(filled + wrote);
            input = &input[used..];
            // Done when all input is in and zlib left room (nothing held back).
            let finished = input.is_empty() && wrote < room;
            if finished || result.is_err() || (used == 0 && wrote == 0) {
                break;
            }
        }
        if out.len() == start {
            // Nothing was pending (an empty message right after a flush):
            // RFC 7692 §7.2.1 wants the data to end in an empty stored
            // block, whose first byte is all that is left once the tail goes.
            out.push(0x00);
        } else if out.len() >= start + 4 && out[out.len() - 4..] == TAIL {
            out.truncate(out.len() - 4);
        }
        if self.params.client_no_context_takeover {
            // Drop the state: the next message starts fresh and the memory is freed.
            self.stream = None;
        }
    }

    #[cfg(test)]
    pub fn is_allocated(&self) -> bool {
        self.stream.is_some()
    }
}

/// Decompresses incoming messages, counting the output against a limit as
/// it is produced.
pub(crate) struct Inflater {
    params: DeflateParams,
    stream: Option<Box<Decompress>>,
    /// Whether the message in progress had any compressed bytes.
    fed: bool,
}

impl Inflater {
    pub fn new(params: DeflateParams) -> Self {
        Inflater {
            params,
            stream: None,
            fed: false,
        }
    }

    /// Inflates `input` onto the end of `out`. Fails with
    /// [`ProtocolError::MessageTooBig`] as soon as `out` would exceed `limit`,
    /// without allocating past it.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.fed |= !input.is_empty();
        let bits = zlib_bits(self.params.server_max_window_bits);
        let stream = self
            .stream
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, bits)));
        let mut input = input;
        loop {
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(ProtocolError::MessageTooBig {
                        size: out.len() as u64,
                        limit,
                    });
                }
                // Grow geometrically, but never past one byte over the limit:
                // that byte is how we learn the limit was crossed.
                let want =
                    (out.capacity().max(input.len() * 2).max(1024)).min(limit + 1 - out.len());
                out.reserve_exact(want.max(1));
            }
            let before_in = stream.total_in();
            let before_out = out.len();
            let status = stream
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|e| {
                    ProtocolError::InvalidDeflate(
                        e.message().unwrap_or("corrupt stream").to_string(),
                    )
                })?;
            let used = (stream.total_in() - before_in) as usize;
            input = &input[used..];
            if out.len() > limit {
                return Err(ProtocolError::MessageTooBig {
                    size: out.len() as u64,
                    limit,
                });
            }
            if status == Status::StreamEnd {
                // A final deflate block: legal, and the next message starts a new stream.
                stream.reset(false);
                if !input.is_empty() {
                    continue;
                }
            }
            let progressed = used > 0 || out.len() > before_out;
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
            if !progressed && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }

    /// Ends a message: feeds the stripped sync tail back in.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), ProtocolError> {
        // A compressed message with no bytes at all is empty; feeding the
        // tail alone would start a stored block that swallows the next message.
        if std::mem::take(&mut self.fed) {
            self.inflate(&TAIL, out, limit)?;
            self.fed = false;
        }
        if self.params.server_no_context_takeover {
            self.stream = None;
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn is_allocated(&self) -> bool {
        self.stream.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DeflateParams {
        DeflateConfig::default()
            .accept("permessage-deflate")
            .unwrap()
    }

    #[test]
    fn offer_text() {
        assert_eq!(
            DeflateConfig::default().offer(),
            "permessage-deflate; client_max_window_bits"
        );
        let cfg = DeflateConfig {
            client_max_window_bits: Some(10),
            server_max_window_bits: Some(12),
            client_no_context_takeover: true,
            server_no_context_takeover: true,
            ..Default::default()
        };
        assert_eq!(
            cfg.offer(),
            "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12; client_no_context_takeover; server_no_context_takeover"
        );
    }

    #[test]
    fn strict_response_checks() {
        let cfg = DeflateConfig::default();
        let p = cfg
            .accept("permessage-deflate; server_no_context_takeover; client_max_window_bits=9")
            .unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 9);
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(cfg.accept(bad).is_err(), "{bad}");
        }
        let capped = DeflateConfig {
            client_max_window_bits: Some(10),
            server_max_window_bits: Some(10),
            ..Default::default()
        };
        assert!(capped
            .accept("permessage-deflate; client_max_window_bits=12")
            .is_err());
        assert!(capped
            .accept("permessage-deflate; server_max_window_bits=11")
            .is_err());
        assert!(capped
            .accept("permessage-deflate; server_max_window_bits=10")
            .is_ok());
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for no_ctx in [false, true] {
            let mut p = params();
            p.client_no_context_takeover = no_ctx;
            p.server_no_context_takeover = no_ctx;
            let mut d = Deflater::new(p, 6, 5);
            let mut i = Inflater::new(p);
            for n in 0..5 {
                let msg = format!("{{\"seq\":{n},\"payload\":\"{}\"}}", "abc".repeat(200));
                let mut wire = Vec::new();
                d.compress(msg.as_bytes(), &mut wire);
                assert!(wire.len() < msg.len() / 4);
                let mut out = Vec::new();
                i.inflate(&wire, &mut out, 1 << 20).unwrap();
                i.finish_message(&mut out, 1 << 20).unwrap();
                assert_eq!(out, msg.as_bytes());
            }
            assert_eq!(d.is_allocated(), !no_ctx);
            assert_eq!(i.is_allocated(), !no_ctx);
        }
    }

    #[test]
    fn incompressible_and_empty_messages_round_trip() {
        let p = params();
        for mem_level in [1u8, 5, 8, 9] {
            let mut d = Deflater::new(p, 6, mem_level);
            let mut i = Inflater::new(p);
            let mut x: u32 = 0x9E37_79B9;
            let noise: Vec<u8> = (0..300_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for msg in [&noise[..], b"", &noise[..1000]] {
                let mut wire = Vec::new();
                d.compress(msg, &mut wire);
                let mut out = Vec::new();
                i.inflate(&wire, &mut out, 1 << 20).unwrap();
                i.finish_message(&mut out, 1 << 20).unwrap();
                assert_eq!(out, msg, "mem_level {mem_level}, {} bytes", msg.len());
            }
        }
    }

    #[test]
    fn empty_messages_keep_the_stream_in_step() {
        let p = params();
        let mut d = Deflater::new(p, 6, 5);
        let mut i = Inflater::new(p);
        for msg in [&b"first"[..], b"", b"", b"after two empty ones"] {
            let mut wire = Vec::new();
            d.compress(msg, &mut wire);
            assert!(
                !wire.is_empty(),
                "an empty message is sent as one 0x00 byte"
            );
            let mut out = Vec::new();
            i.inflate(&wire, &mut out, 1 << 20).unwrap();
            i.finish_message(&mut out, 1 << 20).unwrap();
            assert_eq!(out, msg);
        }
        // A peer that sends an empty compressed payload gets an empty message,
        // and the next message still decodes.
        let mut out = Vec::new();
        i.finish_message(&mut out, 1 << 20).unwrap();
        assert!(out.is_empty());
        let mut wire = Vec::new();
        d.compress(b"still in step", &mut wire);
        i.inflate(&wire, &mut out, 1 << 20).unwrap();
        i.finish_message(&mut out, 1 << 20).unwrap();
        assert_eq!(out, b"still in step");
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let p = params();
        let mut d = Deflater::new(p, 9, 8);
        let zeros = vec![0u8; 10 << 20];
        let mut wire = Vec::new();
        d.compress(&zeros, &mut wire);
        assert!(wire.len() < 20_000, "{}", wire.len());
        let mut i = Inflater::new(p);
        let mut out = Vec::new();
        let limit = 1 << 20;
        let err = i.inflate(&wire, &mut out, limit).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooBig { .. }));
        assert!(out.capacity() <= limit + 1, "allocated {}", out.capacity());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut i = Inflater::new(params());
        let mut out = Vec::new();
        let err = i
            .inflate(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00], &mut out, 1000)
            .unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidDeflate(_)));
    }
}
