//! The log's tail in memory: entries handed to `append` whose write has not
//! been synced yet, and the most recent synced ones.
//!
//! openraft requires appended entries to be readable as soon as `append`
//! returns, but only calls back when they are on disk. Keeping the entries
//! here lets `append` return at once (RaftCore goes on batching and
//! replicating while the writer thread fsyncs) and lets replication send an
//! entry to followers while the leader is still writing it.
//!
//! Synced entries stay a while ([`KEEP_BYTES`], [`KEEP_ENTRIES`]): the state
//! machine reads each entry right after it commits, and replication to a
//! follower that is only slightly behind reads it soon after too. Serving
//! those from here saves a trip through the blocking pool and the segment
//! file, measured at ~200 µs of a 1.4 ms put.
//!
//! The entries here are always the tail of the log: appends are contiguous,
//! synced in the order they were submitted, truncation waits for the
//! writer, and only synced entries are dropped, from the front. A reader
//! takes its copy of this tail *before* it reads the files; an entry leaves
//! this map only after it is readable there, so every entry is in one view
//! or the other.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::types::{Entry, LogId};

/// Synced entries kept, by encoded size...
const KEEP_BYTES: usize = 8 * 1024 * 1024;
/// ...and by count (many tiny entries cost more than their encoding).
const KEEP_ENTRIES: usize = 8192;

/// One unflushed entry and its encoded size (for the replication byte budget).
#[derive(Clone)]
pub(super) struct Pending {
    pub entry: Entry,
    pub encoded_bytes: usize,
}

/// One entry of the tail and whether it is synced yet.
#[derive(Clone)]
struct Held {
    pending: Pending,
    synced: bool,
}

#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, Held>,
    /// Encoded bytes of the synced entries held.
    synced_bytes: usize,
    synced_count: usize,
}

impl Tail {
    /// Drops the oldest synced entries past the limits.
    fn evict(&mut self) {
        while self.synced_bytes > KEEP_BYTES || self.synced_count > KEEP_ENTRIES {
            match self.entries.first_entry() {
                Some(first) if first.get().synced => {
                    let held = first.remove();
                    self.forget_synced(&held);
                }
                _ => break,
            }
        }
    }

    fn forget_synced(&mut self, held: &Held) {
        if held.synced {
            self.synced_bytes -= held.pending.encoded_bytes;
            self.synced_count -= 1;
        }
    }
}

#[derive(Default)]
pub(super) struct Unflushed {
    entries: Mutex<Tail>,
}

impl Unflushed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        // Every mutation is a single map operation, so a panic elsewhere
        // cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, pending: Vec<Pending>) {
        let mut tail = self.lock();
        for p in pending {
            let held = Held {
                pending: p,
                synced: false,
            };
            if let Some(old) = tail.entries.insert(held.pending.entry.log_id.index, held) {
                tail.forget_synced(&old);
            }
        }
    }

    /// Marks the entries a sync wrote as synced, so they may be dropped. An
    /// index that has since been replaced by another entry (truncated and
    /// re-appended) stays unsynced.
    pub fn flushed(&self, written: &[LogId]) {
        let mut tail = self.lock();
        let mut bytes = 0;
        let mut count = 0;
        for id in written {
            if let Some(held) = tail.entries.get_mut(&id.index) {
                if &held.pending.entry.log_id == id && !held.synced {
                    held.synced = true;
                    bytes += held.pending.encoded_bytes;
                    count += 1;
                }
            }
        }
        tail.synced_bytes += bytes;
        tail.synced_count += count;
        tail.evict();
    }

    /// Drops every entry at `from` or above (log truncation).
    pub fn truncate_from(&self, from: u64) {
        let mut tail = self.lock();
        let gone = tail.entries.split_off(&from);
        for held in gone.values() {
            tail.forget_synced(held);
        }
    }

    /// Drops every entry up to and including `upto` (log purge).
    pub fn purge_upto(&self, upto: u64) {
        let mut tail = self.lock();
        while let Some(first) = tail.entries.first_entry() {
            if *first.key() > upto {
                break;
            }
            let held = first.remove();
            tail.forget_synced(&held);
        }
    }

    /// A copy of the entries held in `[lo, hi)`.
    pub fn range(&self, lo: u64, hi: Option<u64>) -> Vec<Pending> {
        let tail = self.lock();
        let held = match hi {
            Some(h) => tail.entries.range(lo..h),
            None => tail.entries.range(lo..),
        };
        held.map(|(_, h)| h.pending.clone()).collect()
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock()
            .entries
            .values()
            .next_back()
            .map(|h| h.pending.entry.log_id)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::types::LeaderId;

    fn pending(index: u64) -> Pending {
        let leader = <LeaderId as RaftLeaderId>::new(1, 1).to_committed();
        Pending {
            entry: Entry::new_blank(LogId::new(leader, index)),
            encoded_bytes: 10,
        }
    }

    fn ids(range: std::ops::Range<u64>) -> Vec<LogId> {
        range.map(|i| pending(i).entry.log_id).collect()
    }

    #[test]
    fn only_synced_entries_are_dropped_oldest_first_past_the_limit() {
        let tail = Unflushed::default();
        let n = KEEP_ENTRIES as u64 + 100;
        tail.insert((1..=n).map(pending).collect());
        assert_eq!(tail.range(0, None).len() as u64, n, "unsynced stay");
        tail.flushed(&ids(1..n - 10));
        let kept = tail.range(0, None);
        // Everything unsynced, and the newest synced up to the limit.
        assert_eq!(kept.len(), KEEP_ENTRIES + 11);
        assert_eq!(kept.last().unwrap().entry.log_id.index, n);
        let first = kept[0].entry.log_id.index;
        assert_eq!(first, n - 10 - KEEP_ENTRIES as u64);
        // Contiguous to the end.
        for (i, p) in kept.iter().enumerate() {
            assert_eq!(p.entry.log_id.index, first + i as u64);
        }
    }

    #[test]
    fn truncate_and_purge_keep_the_counts_right() {
        let tail = Unflushed::default();
        tail.insert((1..=20).map(pending).collect());
        tail.flushed(&ids(1..21));
        tail.truncate_from(15);
        tail.purge_upto(4);
        let kept: Vec<u64> = tail
            .range(0, None)
            .iter()
            .map(|p| p.entry.log_id.index)
            .collect();
        assert_eq!(kept, (5..15).collect::<Vec<_>>());
        let t = tail.lock();
        assert_eq!((t.synced_count, t.synced_bytes), (10, 100));
        drop(t);
        // A re-appended index replaces the synced entry and counts as unsynced.
        tail.insert(vec![pending(14)]);
        let t = tail.lock();
        assert_eq!((t.synced_count, t.synced_bytes), (9, 90));
        assert_eq!(tail_last(&t), Some(14));
    }

    fn tail_last(t: &Tail) -> Option<u64> {
        t.entries.keys().next_back().copied()
    }
}
