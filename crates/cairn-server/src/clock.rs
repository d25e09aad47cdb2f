//! Cluster time as this node estimates it.
//!
//! The store's time only moves when a command carries a `now_ms` (ticks,
//! lease grants and keep-alives proposed by the leader). Every node keeps an
//! estimate: a store time (the anchor) and the local monotonic instant it
//! was taken at; the estimate is the anchor plus the elapsed monotonic time.
//!
//! - **Only forward.** An applied time moves the estimate only when it is
//!   ahead of it. A command is stamped when proposed and applied a commit
//!   latency later; a tick proposed before a partition healed is applied
//!   seconds late. Taking such a time as "now" set the clock back: on the
//!   leader, by a commit latency per tick (a 6 s lease lived 8 s with 100 ms
//!   ticks), and by a partition's length after a heal.
//! - **Runs only from a real anchor.** A member starts *frozen* at the store
//!   time it last applied; it starts running at its first applied time (a
//!   stamp made by a leader) or when it becomes leader itself. A clock that
//!   ran from process start would be ahead of the leader's by the
//!   difference in start times, and as leader it would expire leases early.
//!   A follower anchored on a leader's stamp is never ahead of that leader,
//!   so a follower that becomes leader continues the old leader's clock, at
//!   most one commit latency behind: a lease's TTL keeps counting across a
//!   leader change instead of restarting, and never ends early.
//! - **A restart keeps its downtime.** A restarted member starts from the
//!   store time it last applied, older than the cluster's by its downtime.
//!   If it leads again before applying a newer tick (openraft lets a
//!   restarted leader resume its term), that would stall cluster time and
//!   stretch every lease by the downtime. So [`downtime_ms`] adds the
//!   wall-clock time since the data file was last written (a lower bound of
//!   the time that passed since the last applied tick was proposed, so the
//!   estimate never runs ahead), capped so that a wall-clock jump cannot
//!   expire leases early by more than the cap.

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
    state: Mutex<Anchor>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Store time in ms at `at`.
    store_ms: u64,
    /// When the clock started running from `store_ms`; `None` while frozen.
    at: Option<Instant>,
}

impl Anchor {
    fn estimate(&self) -> u64 {
        match self.at {
            Some(at) => self
                .store_ms
                .saturating_add(at.elapsed().as_millis() as u64),
            None => self.store_ms,
        }
    }
}

impl ClusterClock {
    /// A frozen clock at `store_now_ms` (see the module docs).
    pub fn new(store_now_ms: u64) -> Self {
        ClusterClock {
            state: Mutex::new(Anchor {
                store_ms: store_now_ms,
                at: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Anchor> {
        // One Copy value: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called after each applied batch with the store's time.
    pub fn observe(&self, store_now_ms: u64) {
        let mut anchor = self.lock();
        let running = anchor.at.is_some();
        if store_now_ms > anchor.estimate() || (!running && store_now_ms >= anchor.store_ms) {
            *anchor = Anchor {
                store_ms: store_now_ms.max(anchor.store_ms),
                at: Some(Instant::now()),
            };
        }
    }

    /// This node leads now: its clock must run (it stamps cluster time).
    pub fn set_leading(&self, leading: bool) {
        let mut anchor = self.lock();
        if leading && anchor.at.is_none() {
            anchor.at = Some(Instant::now());
        }
    }

    /// Estimated cluster time now, never behind what was observed.
    pub fn now_ms(&self) -> u64 {
        self.lock().estimate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin_ms(ms: u128) {
        let started = Instant::now();
        while started.elapsed().as_millis() < ms {
            std::hint::spin_loop();
        }
    }

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
    fn a_new_clock_is_frozen_until_anchored() {
        let c = ClusterClock::new(10_000);
        spin_ms(20);
        assert_eq!(c.now_ms(), 10_000, "not running before an anchor");
        c.observe(10_005);
        spin_ms(20);
        assert!(c.now_ms() >= 10_025, "runs from the first applied time");
    }

    #[test]
    fn becoming_leader_starts_the_clock() {
        let c = ClusterClock::new(10_000);
        c.set_leading(true);
        spin_ms(20);
        assert!(c.now_ms() >= 10_020);
    }

    #[test]
    fn a_late_applied_time_does_not_set_the_estimate_back() {
        let c = ClusterClock::new(10_000);
        c.set_leading(true);
        spin_ms(50);
        let before = c.now_ms();
        assert!(before >= 10_050);
        // A tick stamped 10_010 but applied only now (it waited out a
        // partition, or a commit latency) must not pull the estimate back.
        c.observe(10_010);
        assert!(c.now_ms() >= before, "{} < {before}", c.now_ms());
        c.observe(5);
        assert!(c.now_ms() >= before);
    }

    #[test]
    fn a_newer_applied_time_moves_the_estimate_up() {
        let c = ClusterClock::new(10_000);
        c.observe(10_000);
        c.observe(20_000);
        assert!(c.now_ms() >= 20_000);
    }
}
