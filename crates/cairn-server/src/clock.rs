//! Cluster time as this node estimates it.
//!
//! The store's time only moves when a command carries a `now_ms` (ticks,
//! lease grants and keep-alives proposed by the leader). Every node notes
//! the store time it last applied and the local monotonic instant it
//! applied it at; its estimate is that time plus the elapsed monotonic
//! time. A follower that becomes leader therefore continues the old
//! leader's clock (losing only replication delay), so a lease's TTL keeps
//! counting across a leader change instead of restarting.
//!
//! A restarted member starts from the store time it last applied, which
//! is older than the cluster's time by its downtime. If it leads again
//! before applying a newer tick (openraft lets a restarted leader resume
//! its term), that would stall cluster time and stretch every lease by the
//! downtime. So [`downtime_ms`] adds the wall-clock time since the data
//! file was last written (a lower bound of the time that passed since the
//! last applied tick was proposed, so the estimate never runs ahead),
//! capped so that a wall-clock jump cannot expire leases early by more
//! than the cap.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Wall-clock milliseconds since `data_file` was last modified, at most
/// `cap_ms`; 0 if it does not exist or its time is in the future. Read it
/// before opening the file (opening may write).
pub fn downtime_ms(data_file: &Path, cap_ms: u64) -> u64 {
    let Ok(modified) = std::fs::metadata(data_file).and_then(|m| m.modified()) else {
        return 0;
    };
    SystemTime::now()
        .duration_since(modified)
        .map(|d| (d.as_millis() as u64).min(cap_ms))
        .unwrap_or(0)
}

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

    /// Called after each applied batch with the store's time. Only moves
    /// the estimate forward: an entry applied late (a tick proposed before
    /// a partition healed, or replayed at start-up) carries a time older
    /// than the current estimate, and taking it as "now" would set this
    /// member's clock back by the delay — and, on the leader, stall
    /// cluster time and stretch every lease by it.
    pub fn observe(&self, store_now_ms: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let estimate = last.0.saturating_add(last.1.elapsed().as_millis() as u64);
        if store_now_ms > estimate {
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
    fn downtime_is_time_since_last_write_capped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("db");
        assert_eq!(downtime_ms(&f, 10_000), 0, "missing file: no downtime");
        std::fs::write(&f, b"x").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let d = downtime_ms(&f, 10_000);
        assert!((3_000..4_000).contains(&d), "{d}");
        assert_eq!(downtime_ms(&f, 1_000), 1_000, "capped");
    }

    #[test]
    fn a_late_applied_time_does_not_set_the_estimate_back() {
        let c = ClusterClock::new(10_000);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = c.now_ms();
        assert!(before >= 10_050);
        // A tick stamped 10_010 but applied only now (it waited out a
        // partition) must not pull the estimate back to ~10_010.
        c.observe(10_010);
        assert!(c.now_ms() >= before, "{} < {before}", c.now_ms());
    }

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
