//! Reconnect timing: exponential backoff with full jitter.
//!
//! Attempt `n` (counting from 0) waits a uniformly random time between zero
//! and `min(max_delay, initial_delay * multiplier^n)`. Full jitter spreads a
//! crowd of clients that lost the same server over the whole window, so they
//! do not come back in one wave.

use std::time::Duration;

use crate::rt::Instant;

/// When and how often to try again after a connection is lost.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// The first window (default 1 s).
    pub initial_delay: Duration,
    /// The largest window (default 60 s).
    pub max_delay: Duration,
    /// How much the window grows per attempt (default 2).
    pub multiplier: f64,
    /// Give up after this many attempts in a row; `None` never gives up.
    pub max_attempts: Option<u32>,
    /// A connection that stayed open this long resets the attempt count
    /// (default 30 s).
    pub reset_after: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: None,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    /// The upper bound of the window for attempt `attempt` (0-based).
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(attempt.min(64) as i32);
        let secs = (self.initial_delay.as_secs_f64() * factor).min(self.max_delay.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_delay)
    }
}

/// The attempt counter of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: ReconnectPolicy,
    attempt: u32,
    opened_at: Option<Instant>,
}

impl Backoff {
    /// A fresh counter.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Backoff {
            policy,
            attempt: 0,
            opened_at: None,
        }
    }

    /// The connection opened at `now`.
    pub fn opened(&mut self, now: Instant) {
        self.opened_at = Some(now);
    }

    /// The connection was lost at `now`: the delay before the next attempt,
    /// with its number (1-based), or `None` when the policy gives up.
    pub fn next_delay(&mut self, now: Instant) -> Option<(u32, Duration)> {
        if let Some(opened) = self.opened_at.take() {
            if now.saturating_duration_since(opened) >= self.policy.reset_after {
                self.attempt = 0;
            }
        }
        if self
            .policy
            .max_attempts
            .is_some_and(|max| self.attempt >= max)
        {
            return None;
        }
        let window = self.policy.window(self.attempt);
        self.attempt += 1;
        let jittered = window.mul_f64(crate::rt::unit_random());
        Some((self.attempt, jittered))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_and_cap() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.window(0), Duration::from_secs(1));
        assert_eq!(p.window(3), Duration::from_secs(8));
        assert_eq!(p.window(10), Duration::from_secs(60));
        assert_eq!(p.window(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delays_are_jittered_within_the_window_and_give_up() {
        let policy = ReconnectPolicy {
            max_attempts: Some(3),
            ..Default::default()
        };
        let mut b = Backoff::new(policy.clone());
        let now = Instant::now();
        for n in 1..=3 {
            let (attempt, delay) = b.next_delay(now).unwrap();
            assert_eq!(attempt, n);
            assert!(delay <= policy.window(n - 1));
        }
        assert_eq!(b.next_delay(now), None);
    }

    #[test]
    fn a_stable_connection_resets_the_count() {
        let mut b = Backoff::new(ReconnectPolicy::default());
        let t0 = Instant::now();
        b.next_delay(t0);
        b.next_delay(t0);
        assert_eq!(b.attempts(), 2);
        b.opened(t0);
        b.next_delay(t0 + Duration::from_secs(31));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn full_jitter_spreads_a_crowd() {
        let policy = ReconnectPolicy {
            initial_delay: Duration::from_secs(8),
            ..Default::default()
        };
        let delays: Vec<Duration> = (0..200)
            .map(|_| {
                Backoff::new(policy.clone())
                    .next_delay(Instant::now())
                    .unwrap()
                    .1
            })
            .collect();
        let early = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(4))
            .count();
        // Uniform over [0, 8 s): about half land in the first half.
        assert!(
            (60..=140).contains(&early),
            "{early} of 200 in the first half"
        );
    }
}
