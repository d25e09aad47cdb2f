//! Cluster time as this node estimates it.
//!
//! The store's time only moves when a command carries a `now_ms` (ticks,
//! lease grants and keep-alives proposed by the leader). Every node keeps an
//! estimate: a store time (the anchor) and the local monotonic instant it
//! was taken at; the estimate is the anchor plus the elapsed monotonic time.
//!
//! - **The leader's clock only moves forward.** An applied time moves the
//!   estimate forward when it is ahead of it, never back. A command is
//!   stamped when proposed and applied a commit latency later; taking such
//!   a time as "now" would set the leader's clock back by a commit latency
//!   per tick (a 6 s lease lived 8 s with 100 ms ticks).
//! - **A follower follows its leader's stamps**, back as well as forward
//!   ([`ClusterClock::follow`]), but only stamps from entries of the
//!   current term while it knows the leader of that term: those were made
//!   by the leader it follows, a replication delay ago — or, when they
//!   waited out a partition, seconds ago: so only the first stamp of a term
//!   may set the clock back freely, later ones of the same term by at most
//!   [`FOLLOW_BACK_MAX_MS`] (enough to undo a monotonic clock running a
//!   little fast; following a late tick all the way back had a follower,
//!   then elected, stretch every lease by the partition's length:
//!   cairn-chaos seed 4412). A follower's clock
//!   runs on while no leader ticks (an election, a partition), and the next
//!   leader's may be behind it; keeping the larger estimate left followers
//!   seconds ahead of their leader for good — they reported leases as
//!   nearly expired, and one of them elected later would have expired
//!   leases early (cairn-chaos seed 1). Stamps of older terms move it only
//!   forward: a new leader commits the last ticks of an isolated old leader
//!   seconds after they were made, and following those lost 2 s of cluster
//!   time (seed 16). The leader's answer to a read-index request carries
//!   its time too (`LeaderRead`), and a follower follows it the same way
//!   before it serves the read: a member that installed a snapshot or
//!   replayed old entries has only old stamps until the leader's next
//!   tick, and after a whole-cluster crash such a member answered a
//!   lease's `TimeToLive` with the TTL left at its last stamp, 2 s more
//!   than was left (cairn-chaos seed 2). A new leader ticks at once, so
//!   its term's first stamp follows its election by a commit.
//! - **Only the leader's clock stamps.** The leader re-stamps every command
//!   it proposes, forwarded ones too (`Command::restamp`): the store's time
//!   is the largest stamp ever applied, so one stamp from a member whose
//!   estimate ran ahead would move cluster time ahead for good and expire
//!   leases early.
//! - **A new cluster's clock runs only from a real anchor.** A member of a
//!   new cluster, or one restarted that never held a cluster time (no
//!   saved estimate, no stamp applied), starts *frozen* at time 0; it starts running at its first
//!   applied time (a stamp made by a leader) or when it becomes leader
//!   itself. A clock that ran from process start would be ahead of the
//!   leader's by the difference in start times. A follower anchored on a
//!   leader's stamp is not ahead of that leader, so a follower that becomes
//!   leader continues the old leader's clock, at most one commit latency
//!   behind: a lease's TTL keeps counting across a leader change instead
//!   of restarting, and never ends early.
//! - **A restart keeps its downtime, and runs.** A restarted member starts
//!   from the store time it last applied plus [`downtime_ms`] — the
//!   wall-clock time since the data file was last written, a lower bound
//!   of the time that passed since the last applied stamp was made, capped
//!   so that a wall-clock jump cannot expire leases early by more than the
//!   cap — or from the estimate it saved last plus the wall-clock time
//!   since, if that is later (`saved_clock.rs`: the rows lag the log by
//!   up to a checkpoint, and a crash before any leader stamped a time
//!   would lose the downtime before it) — and runs from there at once
//!   ([`ClusterClock::resumed`]). Frozen
//!   until it applied a newer stamp or led, a restarted member that was
//!   elected first continued cluster time from when it went down: every
//!   lease was stretched by its downtime and its wait, and the followers,
//!   whose clocks had run on, were seconds ahead of their new leader and
//!   reported leases as nearly expired (cairn-chaos seed 1). Entries it
//!   re-applies from its log carry older stamps than its start and move
//!   nothing.

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

/// How far one stamp of the term a follower already follows may set its
/// clock back. Within a term the leader's clock only moves forward, so a
/// stamp behind the follower's estimate is either a late one (it waited
/// out a partition, in a queue or in the leader's uncommitted log, and
/// following it would set the clock back by that wait for good; then this
/// follower, elected, would stretch every lease by it: cairn-chaos seed
/// 4412) or the correction of a monotonic clock running a little faster
/// than the leader's (parts per thousand at most: well under this per
/// stamp, with stamps every tick).
pub const FOLLOW_BACK_MAX_MS: u64 = 10;

#[derive(Debug)]
pub struct ClusterClock {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    anchor: Anchor,
    /// (term, time) of the newest leader stamp this member followed.
    followed: (u64, u64),
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
    /// A frozen clock at `store_now_ms`, for a member of a new cluster
    /// (see the module docs).
    pub fn new(store_now_ms: u64) -> Self {
        Self::start(store_now_ms, None)
    }

    /// A clock running from `start_ms` now, for a restarted member:
    /// `start_ms` is its store time plus its downtime.
    pub fn resumed(start_ms: u64) -> Self {
        Self::start(start_ms, Some(Instant::now()))
    }

    /// The clock a member starts with (see the module docs). `restarted`:
    /// its data file existed; `store_now_ms`: the store time in its rows;
    /// `downtime_ms`: see [`downtime_ms`]; `saved_ms`: its saved estimate
    /// plus the time since (`saved_clock.rs`), `None` without one.
    pub fn at_start(
        restarted: bool,
        store_now_ms: u64,
        downtime_ms: u64,
        saved_ms: Option<u64>,
    ) -> Self {
        let from_rows = store_now_ms.saturating_add(downtime_ms);
        match saved_ms {
            Some(saved) if restarted => Self::resumed(from_rows.max(saved)),
            // A member that never held a cluster time (no saved estimate,
            // no stamp in its rows: it crashed before its first snapshot
            // or entry) has no time to resume; it starts frozen like a
            // new one.
            _ if restarted && store_now_ms > 0 => Self::resumed(from_rows),
            _ => Self::new(store_now_ms),
        }
    }

    fn start(store_ms: u64, at: Option<Instant>) -> Self {
        ClusterClock {
            state: Mutex::new(State {
                anchor: Anchor { store_ms, at },
                followed: (0, 0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain Copy values: a panic elsewhere cannot leave them half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called after each applied batch with the store's time: moves the
    /// estimate forward only.
    pub fn observe(&self, store_now_ms: u64) {
        let mut state = self.lock();
        let anchor = &mut state.anchor;
        let running = anchor.at.is_some();
        if store_now_ms > anchor.estimate() || (!running && store_now_ms >= anchor.store_ms) {
            *anchor = Anchor {
                store_ms: store_now_ms.max(anchor.store_ms),
                at: Some(Instant::now()),
            };
        }
    }

    /// A follower applied `stamp_ms`, stamped by the leader it follows in
    /// `term`, the current term (see the module docs). Only a newer stamp
    /// than the last one followed counts. The first of a term becomes the
    /// estimate, back as well as forward; later ones of the same term move
    /// it forward, and back by at most [`FOLLOW_BACK_MAX_MS`].
    pub fn follow(&self, stamp_ms: u64, term: u64) {
        let mut state = self.lock();
        if (term, stamp_ms) <= state.followed {
            return;
        }
        let new_term = term > state.followed.0;
        state.followed = (term, stamp_ms);
        let estimate = state.anchor.estimate();
        let store_ms = if new_term || state.anchor.at.is_none() {
            stamp_ms
        } else {
            stamp_ms.max(estimate.saturating_sub(FOLLOW_BACK_MAX_MS))
        };
        state.anchor = Anchor {
            store_ms,
            at: Some(Instant::now()),
        };
    }

    /// This node leads now: its clock must run (it stamps cluster time).
    pub fn set_leading(&self, leading: bool) {
        let mut state = self.lock();
        if leading && state.anchor.at.is_none() {
            state.anchor.at = Some(Instant::now());
        }
    }

    /// Estimated cluster time now.
    pub fn now_ms(&self) -> u64 {
        self.lock().anchor.estimate()
    }

    /// The estimate now if the clock runs; `None` while frozen (a member
    /// of a new cluster before its first stamp: its 0 is no cluster time).
    pub fn running_ms(&self) -> Option<u64> {
        let anchor = self.lock().anchor;
        anchor.at.is_some().then(|| anchor.estimate())
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
    fn a_member_resumes_only_a_time_it_held() {
        let running = |c: &ClusterClock| c.running_ms().is_some();
        // New: frozen at the store time.
        let c = ClusterClock::at_start(false, 0, 0, None);
        assert!(!running(&c));
        // Restarted with a saved estimate: the later of it and rows + downtime.
        let c = ClusterClock::at_start(true, 5_000, 1_000, Some(9_000));
        assert!(running(&c) && (9_000..9_500).contains(&c.now_ms()));
        let c = ClusterClock::at_start(true, 5_000, 1_000, Some(2_000));
        assert!(running(&c) && (6_000..6_500).contains(&c.now_ms()));
        // Restarted without one: rows + downtime if the rows hold a time.
        let c = ClusterClock::at_start(true, 5_000, 1_000, None);
        assert!(running(&c) && (6_000..6_500).contains(&c.now_ms()));
        // Restarted with nothing: its downtime is no cluster time.
        let c = ClusterClock::at_start(true, 0, 1_000, None);
        assert!(!running(&c), "{}", c.now_ms());
        assert_eq!(c.now_ms(), 0);
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

    #[test]
    fn a_resumed_clock_runs_and_ignores_replayed_older_stamps() {
        let c = ClusterClock::resumed(20_000);
        spin_ms(20);
        assert!(c.now_ms() >= 20_020, "runs from the restart");
        // Entries re-applied from the log after a restart carry stamps from
        // before the downtime.
        c.observe(15_000);
        c.observe(19_999);
        assert!(c.now_ms() >= 20_020);
        c.observe(30_000);
        assert!(c.now_ms() >= 30_000, "a newer stamp moves it");
    }

    #[test]
    fn a_follower_ahead_of_its_leader_follows_the_leaders_stamps_back() {
        // The follower ran on while no leader ticked; the new leader's
        // clock is behind it. The leader's stamps of its term win.
        let c = ClusterClock::new(10_000);
        c.observe(10_000);
        spin_ms(60);
        assert!(c.now_ms() >= 10_060);
        c.observe(10_010);
        assert!(c.now_ms() >= 10_060, "observe alone never goes back");
        c.follow(10_010, 7);
        let now = c.now_ms();
        assert!((10_010..10_050).contains(&now), "{now}");
        // An older stamp, or the same term's earlier one, moves nothing.
        c.follow(10_005, 7);
        c.follow(99_999, 6);
        assert!(c.now_ms() >= now && c.now_ms() < 10_060);
        c.follow(10_020, 8);
        assert!(c.now_ms() >= 10_020);
    }

    #[test]
    fn a_late_stamp_of_the_followed_term_sets_the_clock_back_only_a_little() {
        let c = ClusterClock::new(10_000);
        c.follow(10_000, 3);
        spin_ms(200);
        let before = c.now_ms();
        assert!(before >= 10_200);
        // The leader's tick stamped 10_050 reached this follower only now
        // (it waited out a partition): at most a small step back.
        c.follow(10_050, 3);
        let after = c.now_ms();
        assert!(
            after + FOLLOW_BACK_MAX_MS >= before && after < before + 50,
            "{after} against {before}"
        );
        // A fresh stamp of the term moves it forward as before.
        c.follow(before + 500, 3);
        assert!(c.now_ms() >= before + 500);
        // And a slightly earlier one (a clock running a little fast) pulls
        // it back a little.
        let ahead = c.now_ms();
        c.follow(ahead - 3, 3);
        assert!(c.now_ms() < ahead + 3, "{} against {ahead}", c.now_ms());
    }
}
