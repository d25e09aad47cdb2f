//! Cluster time as this node estimates it.
//!
//! The store's time only moves when a command carries a `now_ms` (ticks,
//! lease grants and keep-alives proposed by the leader). Every node keeps an
//! estimate: a store time (the anchor) and the local monotonic instant it
//! was taken at; the estimate is the anchor plus the elapsed monotonic time.
//!
//! - A follower re-anchors on every newer applied time. Its estimate is then
//!   never ahead of the leader's (a stamp is applied after it was made), so
//!   a follower that becomes leader continues the old leader's clock, at
//!   most one commit latency behind it: a lease's TTL keeps counting across
//!   a leader change instead of restarting, and never ends early.
//! - The leader does not re-anchor on its own stamps: they are applied a
//!   commit latency after they were made, and re-anchoring would lose that
//!   latency at every tick, making cluster time run slow under load (a 6 s
//!   lease lived 8 s with 100 ms ticks and 30 ms commits). It only moves
//!   forward to an applied time ahead of its estimate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct ClusterClock {
    /// (store time in ms, local instant it was observed at)
    last: Mutex<(u64, Instant)>,
    /// Whether this node leads (set by the tick loop): decides how applied
    /// times move the estimate.
    leading: AtomicBool,
}

impl ClusterClock {
    pub fn new(store_now_ms: u64) -> Self {
        ClusterClock {
            last: Mutex::new((store_now_ms, Instant::now())),
            leading: AtomicBool::new(false),
        }
    }

    /// Called after each applied batch with the store's time.
    pub fn observe(&self, store_now_ms: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let floor = if self.leading.load(Ordering::Relaxed) {
            last.0.saturating_add(last.1.elapsed().as_millis() as u64)
        } else {
            last.0
        };
        if store_now_ms > floor {
            *last = (store_now_ms, Instant::now());
        }
    }

    /// Whether this node now leads; see the module docs.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// Estimated cluster time now, never behind what was observed.
    pub fn now_ms(&self) -> u64 {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.0.saturating_add(last.1.elapsed().as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_advances_from_the_last_observation() {
        let c = ClusterClock::new(10_000);
        assert!(c.now_ms() >= 10_000);
        c.observe(5); // older time never moves the clock back
        assert!(c.now_ms() >= 10_000);
        c.observe(20_000);
        assert!(c.now_ms() >= 20_000);
    }

    /// On the leader, observing a time the estimate already passed (its own
    /// tick, stamped a commit latency ago) must not pull the clock back.
    #[test]
    fn leader_keeps_its_estimate_when_its_stamps_are_applied() {
        let c = ClusterClock::new(10_000);
        c.set_leading(true);
        let started = Instant::now();
        while started.elapsed().as_millis() < 30 {
            std::hint::spin_loop();
        }
        let before = c.now_ms();
        assert!(before >= 10_030);
        c.observe(10_010);
        assert!(c.now_ms() >= before);
    }

    /// A follower re-anchors on each newer stamp, so it is never ahead of
    /// the leader that made the stamp.
    #[test]
    fn follower_reanchors_on_newer_stamps() {
        let c = ClusterClock::new(10_000);
        let started = Instant::now();
        while started.elapsed().as_millis() < 30 {
            std::hint::spin_loop();
        }
        c.observe(10_010);
        assert!(c.now_ms() < 10_030, "{}", c.now_ms());
    }
}
