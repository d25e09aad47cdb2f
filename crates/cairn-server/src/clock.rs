//! Cluster time as this node estimates it.
//!
//! The store's time only moves when a command carries a `now_ms` (ticks,
//! lease grants and keep-alives proposed by the leader). Every node notes
//! the store time it last applied and the local monotonic instant it
//! applied it at; its estimate is that time plus the elapsed monotonic
//! time. A follower that becomes leader therefore continues the old
//! leader's clock (losing only replication delay), so a lease's TTL keeps
//! counting across a leader change instead of restarting.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct ClusterClock {
    /// (store time in ms, local instant it was observed at)
    last: Mutex<(u64, Instant)>,
}

impl ClusterClock {
    pub fn new(store_now_ms: u64) -> Self {
        ClusterClock {
            last: Mutex::new((store_now_ms, Instant::now())),
        }
    }

    /// Called after each applied batch with the store's time.
    pub fn observe(&self, store_now_ms: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if store_now_ms > last.0 {
            *last = (store_now_ms, Instant::now());
        }
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
}
