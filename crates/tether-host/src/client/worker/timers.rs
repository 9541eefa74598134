//! A module's timers: one task each, firing into the worker's control
//! channel, never queueing firings behind a slow handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Worker;
use crate::client::Control;
use crate::modules::TimerRequest;

impl Worker {
    pub(super) fn cancel_timers(&mut self) {
        for (_, (t, _)) in self.timer_tasks.drain() {
            t.abort();
        }
    }

    /// Starts a module's timer. A firing that finds the previous one of the
    /// same timer still waiting for its hook is skipped, so a slow handler
    /// never builds up a queue of firings.
    pub(super) fn schedule(&mut self, t: TimerRequest) {
        let tx = self.rt.control.clone();
        let pending = Arc::new(AtomicBool::new(false));
        let flag = pending.clone();
        let fire = move || {
            if flag.swap(true, Ordering::AcqRel) {
                return true;
            }
            tx.send(Control::Timer(t.id)).is_ok()
        };
        let task = tokio::spawn(async move {
            tokio::time::sleep(t.delay).await;
            if !fire() {
                return;
            }
            if let Some(every) = t.every {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if !fire() {
                        return;
                    }
                }
            }
        });
        self.timer_tasks.insert(t.id, (task, pending));
    }

    pub(super) async fn timer(&mut self, id: u64) {
        if let Some((_, pending)) = self.timer_tasks.get(&id) {
            pending.store(false, Ordering::Release);
        }
        let keep = self.hook("timer", move |m, c| m.on_timer(c, id)).await;
        if keep != Some(true) {
            if let Some((t, _)) = self.timer_tasks.remove(&id) {
                t.abort();
            }
        }
    }
}
