//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! A code point may be split across frames or reads. The validator keeps the
//! at most three bytes of an unfinished code point and checks everything
//! else as soon as it arrives, so an invalid sequence fails the connection
//! at the first byte that proves it, not at the end of the message.

/// The bytes seen so far are not UTF-8 and can never become UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

/// Validates a stream of bytes as UTF-8, piece by piece.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: usize,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece. Bytes that end in an unfinished code point are
    /// fine for now; [`finish`](Self::finish) says whether the message ended
    /// in one.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            // Complete the code point left over from the last piece.
            let need = utf8_len(self.pending[0]).ok_or(Utf8Error)?;
            while self.pending_len < need {
                let Some((&b, rest)) = data.split_first() else {
                    // Still unfinished: the bytes so far must be a valid prefix.
                    return check_prefix(&self.pending[..self.pending_len]);
                };
                self.pending[self.pending_len] = b;
                self.pending_len += 1;
                data = rest;
            }
            if std::str::from_utf8(&self.pending[..need]).is_err() {
                return Err(Utf8Error);
            }
            self.pending_len = 0;
        }
        match simdutf8::compat::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) => {
                if e.error_len().is_some() {
                    return Err(Utf8Error);
                }
                // The piece ends inside a code point.
                let tail = &data[e.valid_up_to()..];
                check_prefix(tail)?;
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// The message has ended: it is valid only if no code point is left open.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let open = self.pending_len != 0;
        self.pending_len = 0;
        if open {
            Err(Utf8Error)
        } else {
            Ok(())
        }
    }
}

/// The length of the code point a lead byte starts, if it can start one.
fn utf8_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

/// Checks that `bytes` (shorter than their code point) can still become a
/// valid code point, so that errors show at the earliest byte.
fn check_prefix(bytes: &[u8]) -> Result<(), Utf8Error> {
    let Some(&lead) = bytes.first() else {
        return Ok(());
    };
    let need = utf8_len(lead).ok_or(Utf8Error)?;
    if bytes.len() >= need {
        return Err(Utf8Error);
    }
    if let Some(&second) = bytes.get(1) {
        let ok = match lead {
            0xE0 => (0xA0..=0xBF).contains(&second),
            0xED => (0x80..=0x9F).contains(&second),
            0xF0 => (0x90..=0xBF).contains(&second),
            0xF4 => (0x80..=0x8F).contains(&second),
            _ => (0x80..=0xBF).contains(&second),
        };
        if !ok {
            return Err(Utf8Error);
        }
    }
    if bytes.iter().skip(2).any(|b| !(0x80..=0xBF).contains(b)) {
        return Err(Utf8Error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_split(bytes: &[u8], split: usize) -> Result<(), Utf8Error> {
        let mut v = Utf8Validator::new();
        v.feed(&bytes[..split])?;
        v.feed(&bytes[split..])?;
        v.finish()
    }

    #[test]
    fn every_split_agrees_with_std() {
        let samples: Vec<Vec<u8>> = vec![
            "κόσμε".as_bytes().to_vec(),
            "a€𝄞b".as_bytes().to_vec(),
            vec![
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
            ],
            vec![0xF4, 0x90, 0x80, 0x80],
            vec![0xE0, 0x80, 0x80],
            vec![0xC0, 0x80],
            vec![0xF0, 0x9F, 0x98],
            vec![0xFF],
        ];
        for s in &samples {
            let expected = std::str::from_utf8(s).is_ok();
            for split in 0..=s.len() {
                assert_eq!(
                    validate_split(s, split).is_ok(),
                    expected,
                    "{s:x?} split {split}"
                );
            }
            // one byte at a time
            let mut v = Utf8Validator::new();
            let ok =
                s.iter().all(|b| v.feed(std::slice::from_ref(b)).is_ok()) && v.finish().is_ok();
            assert_eq!(ok, expected, "{s:x?} bytewise");
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        let mut v = Utf8Validator::new();
        // 0xED 0xA0 starts a surrogate: invalid before the code point ends.
        assert_eq!(v.feed(&[b'a', 0xED, 0xA0]), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xF4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(Utf8Error));
    }
}
