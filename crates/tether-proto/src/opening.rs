//! The opening handshake in progress: the request is sent, the response is
//! being read.

use crate::config::Config;
use crate::deflate::DeflateConfig;
use crate::error::HandshakeError;
use crate::handshake::{
    generate_key, parse_response, validate_upgrade, Accepted, Request, ResponseHead,
    REJECTION_BODY_LIMIT,
};

pub(crate) struct Opening {
    key: String,
    protocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    buf: Vec<u8>,
    rejection: Option<Rejection>,
}

/// A non-101 response whose body we are still collecting.
struct Rejection {
    head: ResponseHead,
    body: Vec<u8>,
    want: usize,
}

pub(crate) enum Progress {
    NeedMore,
    Failed(HandshakeError),
    Done {
        accepted: Accepted,
        headers: Vec<(String, String)>,
        /// Bytes after the response head: the first frames.
        rest: Vec<u8>,
    },
}

impl Opening {
    /// Queues the request into `out`.
    pub fn start(
        request: &Request,
        deflate: Option<&DeflateConfig>,
        entropy: &mut dyn crate::Entropy,
        out: &mut Vec<u8>,
    ) -> Self {
        let key = generate_key(entropy);
        request.write(&key, deflate, out);
        Opening {
            key,
            protocols: request.protocols().to_vec(),
            deflate: deflate.cloned(),
            buf: Vec::new(),
            rejection: None,
        }
    }

    pub fn receive(&mut self, data: &[u8], config: &Config) -> Progress {
        if let Some(rej) = self.rejection.as_mut() {
            let take = (rej.want - rej.body.len()).min(data.len());
            rej.body.extend_from_slice(&data[..take]);
            if rej.body.len() >= rej.want {
                return Progress::Failed(
                    self.rejection
                        .take()
                        .map_or(HandshakeError::Eof, Rejection::into_error),
                );
            }
            return Progress::NeedMore;
        }
        self.buf.extend_from_slice(data);
        let head = match parse_response(&self.buf, config.max_handshake_size) {
            Ok(Some(head)) => head,
            Ok(None) => return Progress::NeedMore,
            Err(e) => return Progress::Failed(e),
        };
        let rest = self.buf.split_off(head.len);
        if head.status != 101 {
            let want = content_length(&head).map_or(rest.len(), |n| n.min(REJECTION_BODY_LIMIT));
            let want = want.min(REJECTION_BODY_LIMIT);
            let mut body = rest;
            body.truncate(want);
            let rej = Rejection { head, body, want };
            if rej.body.len() >= rej.want {
                return Progress::Failed(rej.into_error());
            }
            self.rejection = Some(rej);
            return Progress::NeedMore;
        }
        match validate_upgrade(&head, &self.key, &self.protocols, self.deflate.as_ref()) {
            Ok(accepted) => Progress::Done {
                accepted,
                headers: head.headers,
                rest,
            },
            Err(e) => Progress::Failed(e),
        }
    }

    /// The stream ended: a rejection is complete with what arrived.
    pub fn eof(self) -> HandshakeError {
        match self.rejection {
            Some(rej) => rej.into_error(),
            None => HandshakeError::Eof,
        }
    }
}

impl Rejection {
    fn into_error(self) -> HandshakeError {
        HandshakeError::Rejected {
            status: self.head.status,
            reason: self.head.reason,
            headers: self.head.headers,
            body: self.body,
        }
    }
}

fn content_length(head: &ResponseHead) -> Option<usize> {
    head.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}
