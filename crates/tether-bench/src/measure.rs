//! What the scenarios measure with: CPU time of the calling thread (a
//! client's own cost), percentiles, and the host's "the server has it all".

use std::sync::Arc;
use std::time::Duration;

/// The `p` quantile of sorted durations, in milliseconds.
pub fn pct_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

/// Waits until the neutral server's `/sink` says "done" (it has read every
/// message it was told to expect), as an event of the host's client.
pub async fn sink_done(
    mut events: tokio::sync::broadcast::Receiver<Arc<tether_host::events::HostEvent>>,
) {
    loop {
        match events.recv().await {
            Ok(e) if e.body["event"] == "message" && e.body["data"] == "done" => return,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

/// CPU time this thread has used: the client's own cost, which a busy
/// machine disturbs less than wall time.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a
    // constant the kernel knows; clock_gettime writes only into `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User and system CPU time this thread has used so far.
pub fn thread_user_sys() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid and writable; getrusage writes only into it.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(usage.ru_utime), tv(usage.ru_stime))
}
