//! The STOMP and MQTT decoders on arbitrary bytes, fed in arbitrary
//! pieces: they return frames or errors, never panic, and never hold more
//! than their limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tether_host::brokers::{mqtt, stomp};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let step = usize::from(cut).max(1);
    let mut s = stomp::Decoder::new(1 << 16);
    let mut m5 = mqtt::Decoder::new(mqtt::Version::V5, 1 << 16);
    let mut m3 = mqtt::Decoder::new(mqtt::Version::V311, 1 << 16);
    for piece in rest.chunks(step) {
        s.feed(piece);
        m5.feed(piece);
        m3.feed(piece);
        let _ = s.frames();
        let _ = m5.packets();
        let _ = m3.packets();
    }
});
