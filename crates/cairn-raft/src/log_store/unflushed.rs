//! Entries handed to `append` whose transaction has not committed yet.
//!
//! openraft requires appended entries to be readable as soon as `append`
//! returns, but only calls back when they are on disk. Keeping the entries
//! here lets `append` return at once (RaftCore goes on batching and
//! replicating while the writer thread fsyncs) and lets replication send an
//! entry to followers while the leader is still writing it.
//!
//! The entries here are always the tail of the log: appends are contiguous,
//! flushed in the order they were submitted, and truncation waits for the
//! writer. A reader takes its copy of this tail *before* it opens its redb
//! read transaction; an entry leaves this map only after its transaction
//! committed, so every entry is in one view or the other.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::types::{Entry, LogId};

/// One unflushed entry and its encoded size (for the replication byte budget).
#[derive(Clone)]
pub(super) struct Pending {
    pub entry: Entry,
    pub encoded_bytes: usize,
}

#[derive(Default)]
pub(super) struct Unflushed {
    entries: Mutex<BTreeMap<u64, Pending>>,
}

impl Unflushed {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        // Every mutation is a single map operation, so a panic elsewhere
        // cannot leave the map half-updated.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, pending: Vec<Pending>) {
        let mut map = self.lock();
        for p in pending {
            map.insert(p.entry.log_id.index, p);
        }
    }

    /// Forgets the entries a committed transaction wrote. An index that has
    /// since been replaced by another entry (truncated and re-appended) stays.
    pub fn flushed(&self, written: &[LogId]) {
        let mut map = self.lock();
        for id in written {
            if map.get(&id.index).is_some_and(|p| &p.entry.log_id == id) {
                map.remove(&id.index);
            }
        }
    }

    /// Drops every entry at `from` or above (log truncation).
    pub fn truncate_from(&self, from: u64) {
        let mut map = self.lock();
        map.split_off(&from);
    }

    /// A copy of the unflushed entries in `[lo, hi)`.
    pub fn range(&self, lo: u64, hi: Option<u64>) -> Vec<Pending> {
        let map = self.lock();
        match hi {
            Some(h) => map.range(lo..h).map(|(_, p)| p.clone()).collect(),
            None => map.range(lo..).map(|(_, p)| p.clone()).collect(),
        }
    }

    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().values().next_back().map(|p| p.entry.log_id)
    }
}
