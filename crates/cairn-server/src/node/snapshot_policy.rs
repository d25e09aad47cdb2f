//! When a member builds a Raft snapshot.
//!
//! A Cairn snapshot copies the whole store, its history included, into a
//! file (`cairn_raft::state_machine::SnapshotBuilder`): its cost grows with
//! the store. What it buys, log that may be purged, grows with the writes
//! since the last one. etcd's rule alone, a snapshot every
//! `--snapshot-count` entries, is cheap for etcd, whose snapshot leaves its
//! backend file alone; here it rewrote a store of ever more history every
//! 100 000 puts, which cost 13–16 % of the puts at 256 clients and nearly
//! doubled their p99 (BENCHMARKS.md, session 24).
//!
//! So a member builds a snapshot once, since the last one,
//! - at least `snapshot_entries` entries were applied (etcd's rule), and
//! - either the log appended is at least as large as the last snapshot
//!   (writing snapshots then costs at most about one byte per byte of log),
//!   or [`MAX_ENTRIES_FACTOR`] times `snapshot_entries` were applied (this
//!   bounds the log kept, and its index in memory, however large the store).
//!
//! The policy is the node's own business, not the state machine's: members
//! may snapshot at different points. openraft's own policy is off
//! (`SnapshotPolicy::Never`); [`run`] asks for each snapshot.

use std::sync::Weak;
use std::time::Duration;

use cairn_raft::log_store::AppendedBytes;
use openraft::async_runtime::WatchReceiver;

use super::Node;

/// At most this many times `snapshot_entries` entries pass between two
/// snapshots, whatever the sizes.
pub const MAX_ENTRIES_FACTOR: u64 = 4;

/// How often the rule is checked. A snapshot a little late keeps a little
/// more log; checking on every apply would wake this task thousands of
/// times a second under load.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The rule above, for one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Fewest entries applied since the last snapshot (`snapshot_entries`).
    pub min_entries: u64,
    /// Entries after which a snapshot is due whatever the sizes.
    pub max_entries: u64,
}

impl SnapshotPolicy {
    pub fn new(snapshot_entries: u64) -> Self {
        let min_entries = snapshot_entries.max(1);
        SnapshotPolicy {
            min_entries,
            max_entries: min_entries.saturating_mul(MAX_ENTRIES_FACTOR),
        }
    }

    /// Whether a snapshot is due after `entries` entries and `log_bytes`
    /// bytes of log since the last one, which holds `snapshot_bytes`.
    pub fn due(&self, entries: u64, log_bytes: u64, snapshot_bytes: u64) -> bool {
        entries >= self.min_entries && (log_bytes >= snapshot_bytes || entries >= self.max_entries)
    }
}

/// What [`run`] remembers between two checks.
#[derive(Debug, Default)]
struct Tracker {
    /// The snapshot seen last (its log index), and the log's running byte
    /// total when it was seen: the bytes since are the log it would free.
    seen: Option<Option<u64>>,
    bytes_at_seen: u64,
    /// The applied log position (next index) when a snapshot was last
    /// asked for and has not appeared yet: a failed build is retried only
    /// after another `min_entries`, as openraft's own policy does.
    asked_at: Option<u64>,
}

impl Tracker {
    /// Whether to ask for a snapshot now, given the member's last snapshot
    /// and last applied entry (log indexes), the log's running byte total,
    /// and the last snapshot's size.
    fn check(
        &mut self,
        policy: &SnapshotPolicy,
        snapshot: Option<u64>,
        applied: Option<u64>,
        log_total: u64,
        snapshot_bytes: u64,
    ) -> bool {
        if self.seen != Some(snapshot) {
            // Built here or installed from the leader: count afresh.
            self.seen = Some(snapshot);
            self.bytes_at_seen = log_total;
            self.asked_at = None;
        }
        let next = |i: Option<u64>| i.map_or(0, |i| i.saturating_add(1));
        let applied = next(applied);
        if self
            .asked_at
            .is_some_and(|at| applied < at.saturating_add(policy.min_entries))
        {
            return false;
        }
        let entries = applied.saturating_sub(next(snapshot));
        let log_bytes = log_total.saturating_sub(self.bytes_at_seen);
        let due = policy.due(entries, log_bytes, snapshot_bytes);
        if due {
            self.asked_at = Some(applied);
        }
        due
    }
}

/// Asks the member's Raft for a snapshot whenever the policy says so;
/// returns once the node is gone. Spawn it once per node.
pub async fn run(node: Weak<Node>, policy: SnapshotPolicy, log: AppendedBytes) {
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = Tracker::default();
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else { return };
        let (snapshot, applied) = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.snapshot.as_ref().map(|l| l.index),
                m.last_applied.as_ref().map(|l| l.index),
            )
        };
        if tracker.check(
            &policy,
            snapshot,
            applied,
            log.total(),
            node.snapshots.saved_bytes(),
        ) && node.raft.trigger().snapshot().await.is_err()
        {
            return; // Raft stopped.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_the_entries_and_as_much_log_as_it_holds() {
        let p = SnapshotPolicy::new(100);
        assert_eq!(p.max_entries, 400);
        // (entries, log bytes, snapshot bytes) -> due
        let cases = [
            (
                (99, 1 << 30, 0),
                false,
                "too few entries, however many bytes",
            ),
            ((100, 0, 0), true, "no snapshot yet: etcd's rule alone"),
            ((100, 999, 1000), false, "less log than the snapshot holds"),
            ((100, 1000, 1000), true, "as much log as the snapshot"),
            ((399, 10, 1 << 30), false, "a big store waits..."),
            ((400, 10, 1 << 30), true, "...up to the entry bound"),
        ];
        for ((entries, log, snap), due, why) in cases {
            assert_eq!(p.due(entries, log, snap), due, "{why}");
        }
        assert_eq!(SnapshotPolicy::new(0).min_entries, 1);
        assert_eq!(SnapshotPolicy::new(u64::MAX).max_entries, u64::MAX);
    }

    #[test]
    fn the_tracker_counts_log_from_the_last_snapshot_and_retries_a_failed_build_later() {
        let p = SnapshotPolicy::new(10);
        let mut t = Tracker::default();
        // Started with 500 log bytes counted; no snapshot yet.
        assert!(!t.check(&p, None, Some(8), 500, 0), "9 entries");
        assert!(t.check(&p, None, Some(9), 600, 0), "10 entries");
        // Asked; the build has not appeared (or failed): not again until
        // another 10 entries.
        assert!(!t.check(&p, None, Some(18), 700, 0));
        assert!(t.check(&p, None, Some(19), 700, 0));
        // A 1,000-byte snapshot at 19, seen when the total was 700: the
        // bytes count from there.
        assert!(!t.check(&p, Some(19), Some(20), 700, 1_000), "1 entry");
        assert!(
            !t.check(&p, Some(19), Some(29), 1_699, 1_000),
            "10 entries, 999 bytes"
        );
        assert!(t.check(&p, Some(19), Some(29), 1_700, 1_000), "1,000 bytes");
        // One installed from the leader resets the count as well.
        assert!(!t.check(&p, Some(60), Some(69), 5_000, 1_000), "9 entries");
        assert!(
            !t.check(&p, Some(60), Some(99), 5_010, 1_000),
            "39 entries, 10 bytes"
        );
        assert!(
            t.check(&p, Some(60), Some(100), 5_010, 1_000),
            "40 entries: the bound"
        );
    }
}
