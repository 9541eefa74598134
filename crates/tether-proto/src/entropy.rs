//! Where the engine's randomness comes from. A client draws 16 random bytes
//! for each handshake's `Sec-WebSocket-Key` (RFC 6455 §4.1) and 4 for the
//! masking key of every frame it sends, which must be unpredictable to
//! anything on the path (§5.3, §10.3). The engine owns no generator of its
//! own: the caller passes one to [`ClientConnection::with_entropy`], so a
//! test can seed it and replay a run byte for byte.
//!
//! [`ClientConnection::with_entropy`]: crate::ClientConnection::with_entropy

/// A source of random bytes for handshake keys and masking keys.
///
/// Every [`rand::RngCore`] that is `Send` is one, so a seeded
/// `rand::rngs::StdRng` gives a reproducible connection. In production use
/// [`SystemEntropy`] (the default of [`ClientConnection::new`]) or another
/// cryptographically secure generator: predictable masks let a hostile page
/// poison intermediaries' caches (RFC 6455 §10.3).
///
/// [`ClientConnection::new`]: crate::ClientConnection::new
pub trait Entropy: Send {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<R: rand::RngCore + Send> Entropy for R {
    fn fill(&mut self, dest: &mut [u8]) {
        self.fill_bytes(dest);
    }
}

/// The thread-local cryptographically secure generator of `rand` (ChaCha,
/// seeded and reseeded from the operating system), reached on each call: a
/// zero-sized handle that is `Send` and costs no allocation. Needs the
/// `system-entropy` feature (on by default).
#[cfg(feature = "system-entropy")]
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

#[cfg(feature = "system-entropy")]
impl rand::RngCore for SystemEntropy {
    fn next_u32(&mut self) -> u32 {
        rand::rng().next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        rand::rng().next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::rng().fill_bytes(dest);
    }
}

/// `N` random bytes from `entropy`.
pub(crate) fn draw<const N: usize>(entropy: &mut dyn Entropy) -> [u8; N] {
    let mut bytes = [0u8; N];
    entropy.fill(&mut bytes);
    bytes
}
