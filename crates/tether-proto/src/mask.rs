//! Client-to-server masking (RFC 6455 §5.3).
//!
//! Masking XORs every payload byte with one of four key bytes, chosen by the
//! byte's position. The routine works a machine word at a time: it handles
//! the unaligned head byte by byte, then 8 bytes per step with the key
//! rotated to the head's offset, then the tail. This needs no `unsafe`; the
//! compiler turns the word loop into vector code.

/// XORs `buf` in place with `key`, as if `buf` started at payload offset 0.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// XORs `buf` in place with `key`, where `buf[0]` sits at payload offset
/// `offset`. Lets a payload be masked in several pieces.
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let key64 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key64;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Copies `src` onto the end of `dst`, masked with `key`, in one pass over
/// memory: each block is masked into a small stack buffer (which stays in
/// L1) and appended from there, so the payload is read once and the send
/// buffer written once. Copying first and masking in place would read and
/// write the send buffer twice.
pub fn extend_masked(dst: &mut Vec<u8>, src: &[u8], key: [u8; 4]) {
    const BLOCK: usize = 128;
    dst.reserve(src.len());
    let key64 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut blocks = src.chunks_exact(BLOCK);
    let mut tmp = [0u8; BLOCK];
    for block in &mut blocks {
        for (out, word) in tmp.chunks_exact_mut(8).zip(block.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            out.copy_from_slice(&(u64::from_ne_bytes(w) ^ key64).to_ne_bytes());
        }
        dst.extend_from_slice(&tmp);
    }
    // Every block is a multiple of 4 bytes long, so the tail starts at key
    // offset 0.
    let start = dst.len();
    dst.extend_from_slice(blocks.remainder());
    apply_mask(&mut dst[start..], key);
}

/// The byte-at-a-time reference routine, kept for tests and benchmarks.
pub fn apply_mask_naive(buf: &mut [u8], key: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_for_every_length_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..70 {
            let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(31)).collect();
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key);
            apply_mask_naive(&mut slow, key);
            assert_eq!(fast, slow, "len {len}");
            // masking in two pieces gives the same as one pass
            for split in 0..len {
                let mut pieces = data.clone();
                let (a, b) = pieces.split_at_mut(split);
                apply_mask_at(a, key, 0);
                apply_mask_at(b, key, split);
                assert_eq!(pieces, slow, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn extend_masked_matches_copy_then_mask() {
        let key = [0x9A, 0x0B, 0xFF, 0x01];
        for len in [0, 1, 7, 8, 511, 512, 513, 1024, 1500, 4099] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut expected = src.clone();
            apply_mask_naive(&mut expected, key);
            let mut dst = vec![0xEE; 3];
            extend_masked(&mut dst, &src, key);
            assert_eq!(&dst[..3], &[0xEE; 3]);
            assert_eq!(&dst[3..], &expected[..], "len {len}");
        }
    }

    #[test]
    fn masking_twice_restores() {
        let data = b"Hello, WebSocket masking".to_vec();
        let mut buf = data.clone();
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_ne!(buf, data);
        apply_mask(&mut buf, [1, 2, 3, 4]);
        assert_eq!(buf, data);
    }
}
