//! The keyspace hash (etcd's `HashKV`) taken a bounded number of records
//! at a time.
//!
//! Why: hashing walks every retained record (1.3 ms per 10,000 keys of
//! 256 B, criterion `range_10k/hash_kv`), and the server holds the store's
//! read lock while it does; apply waits for that lock, so hashing a
//! million keys in one go stalls writes for over a tenth of a second. A [`HashCursor`] keeps the crc32 state and
//! where the walk stopped, so the server can take the lock once per step
//! and let writes in between. Writes between steps append records above
//! the hashed revision, which the hash leaves out, so the result is the
//! one-shot hash at that revision. Only a compaction removes records the
//! walk may have passed or not yet reached; a step then asks for a restart
//! rather than give a wrong hash.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StoreError;
use crate::mvcc::{KeySpace, Record};
use crate::revision::Revision;

/// A hash of the keyspace at one revision, in progress. Begun by
/// [`crate::Store::hash_cursor`], advanced by
/// [`crate::Store::hash_kv_step`]. After an error the cursor is spent.
#[derive(Clone)]
pub struct HashCursor {
    /// The crc32 of the records hashed so far.
    hasher: crc32fast::Hasher,
    /// The revision hashed at: records above it (written since the hash
    /// began) are left out.
    revision: i64,
    /// The store's compact revision when the hash began: if it moved,
    /// records were removed under the cursor.
    compact_revision: i64,
    /// The last record hashed, where the next step resumes; none before
    /// the first.
    last: Option<Revision>,
    /// The store the hash began on ([`Incarnation`]).
    incarnation: u64,
}

/// Which `Store` value a hash walks: a number no other store in this
/// process was given. A store put in another's place (a snapshot
/// installed between two steps) has another one, so the cursor restarts
/// rather than mix the two, even when their compact revisions match. Not
/// state: it is never replicated, persisted or read by an apply, and a
/// copy of a store is a store of its own (so `Clone` draws a new number).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Incarnation(u64);

impl Incarnation {
    pub(crate) fn get(&self) -> u64 {
        self.0
    }
}

impl Default for Incarnation {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Incarnation(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Clone for Incarnation {
    fn clone(&self) -> Self {
        Incarnation::default()
    }
}

/// What one step of a hash came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProgress {
    /// Records at or below the revision remain: step again.
    More,
    /// Every record at or below the revision is hashed: the hash, and the
    /// compact revision it covers from (as [`crate::Store::hash_kv`]).
    Done { hash: u32, compact_revision: i64 },
    /// The store changed under the cursor (a compaction since it began,
    /// now at `compact_revision`, or an older or newer state put in its place):
    /// the hash so far counts for nothing; begin a new cursor.
    Restart { compact_revision: i64 },
}

impl fmt::Debug for HashCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashCursor")
            .field("revision", &self.revision)
            .field("compact_revision", &self.compact_revision)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl HashCursor {
    /// A hash at `revision` (0: the head) of a store at `head` compacted
    /// at `compact_revision`; refused as a read at that revision would be.
    pub(crate) fn begin(
        revision: i64,
        head: i64,
        compact_revision: i64,
        incarnation: u64,
    ) -> Result<HashCursor, StoreError> {
        let revision = if revision <= 0 { head } else { revision };
        if revision > head {
            return Err(StoreError::FutureRevision {
                current_revision: head,
            });
        }
        if revision < compact_revision {
            return Err(StoreError::Compacted { compact_revision });
        }
        Ok(HashCursor {
            hasher: crc32fast::Hasher::new(),
            revision,
            compact_revision,
            last: None,
            incarnation,
        })
    }

    /// The revision this cursor hashes at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Hashes up to `max_records` more records of `kv` (a store now at
    /// `head`, compacted at `compact_revision`).
    pub(crate) fn step(
        &mut self,
        kv: &KeySpace,
        head: i64,
        compact_revision: i64,
        incarnation: u64,
        max_records: usize,
    ) -> Result<HashProgress, StoreError> {
        assert!(max_records > 0, "a step must make progress");
        if compact_revision != self.compact_revision
            || head < self.revision
            || incarnation != self.incarnation
        {
            return Ok(HashProgress::Restart { compact_revision });
        }
        let walked = kv.walk_held_after(self.last, self.revision, max_records, |key, r| {
            hash_record(&mut self.hasher, key, r);
            self.last = Some(r.rev);
            Ok(())
        })?;
        if walked == max_records {
            return Ok(HashProgress::More);
        }
        Ok(HashProgress::Done {
            hash: self.hasher.clone().finalize(),
            compact_revision,
        })
    }
}

/// One record's part of the hash. The bytes and their order are what
/// every version hashed: members of different versions compare hashes.
fn hash_record(h: &mut crc32fast::Hasher, key: &[u8], r: &Record) {
    h.update(key);
    h.update(&r.rev.main.to_be_bytes());
    h.update(&r.rev.sub.to_be_bytes());
    h.update(&[r.tombstone as u8]);
    h.update(&r.value);
}
