//! The keyspace hash (`HashKV`) without stalling writes.
//!
//! Hashing walks every retained record (1.3 ms per 10,000 keys of 256 B),
//! and apply needs the store's write lock: hashed under one read lock, a
//! million keys stall every write for over a tenth of a second (etcd hashes
//! from a read transaction and does not stop writes). So the hash is taken
//! in steps of [`STEP_RECORDS`] records (`Store::hash_kv_step`), the read
//! lock held for one step at a time; writes apply between steps. The
//! corruption check, a member's answer to it and the `HashKV` RPC all hash
//! through [`hash_in_steps`], so they give the same value as before.

use std::future::Future;
use std::time::Duration;

use cairn_raft::state_machine::SharedStore;
use cairn_store::{HashCursor, HashProgress, StoreError};

use crate::error::ServerError;

/// Records hashed per hold of the read lock: about 0.5 ms of hashing
/// (criterion `range_10k/hash_kv_step_4096`), short against a write's
/// commit, and few enough steps that their hand-offs cost little.
pub const STEP_RECORDS: usize = 4096;

/// The pause after each step, off the CPU, before the next can take the
/// read lock. std's `RwLock` lets a waiting writer in before new readers,
/// but a writer the release woke and that is not running yet loses the
/// lock to a reader that asks at once (often the hashing thread itself,
/// still on the CPU the writer was woken on), for a whole step each time.
/// Measured (`cargo bench -p cairn-bench --bench hash_stall`: 100,000
/// keys, a put every 100 µs, 2 cores): without the pause 12–26 puts of
/// ~1,100 waited over 1 ms (p99 1.3–2.4 ms); with it 0–9 (p99 0.9 ms).
/// The longest wait still varies with the OS scheduler (1–12 ms), against
/// 21 ms for the hash in one go. It costs ~0.2 ms a step: a hash takes
/// ~25 % longer.
const HAND_OFF_PAUSE: Duration = Duration::from_micros(50);

/// Times a hash begins again after a compaction removed records under it
/// before it gives up: compactions come minutes apart, so more than one in
/// a hash is already unlikely.
const MAX_RESTARTS: usize = 3;

/// A hash of the keyspace at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The compact revision the hash covers from: hashes are comparable
    /// only between members at the same one.
    pub compact_revision: i64,
    /// The revision hashed (the head when asked for revision 0).
    pub revision: i64,
}

/// `Store::hash_kv(revision)` taken [`STEP_RECORDS`] records at a time,
/// the read lock held for one step only. Writes between steps leave the
/// hash alone; after a compaction under it, it begins again (at the same
/// revision), at most [`MAX_RESTARTS`] times, then gives up with
/// [`ServerError::Timeout`] (retryable: the next round or call may pass).
/// Refused as the one-shot hash would be (future or compacted revision).
pub async fn hash_in_steps(store: &SharedStore, revision: i64) -> Result<KvHash, ServerError> {
    hash_with(store, revision, step_on_blocking_pool).await
}

/// What a step gives back: the cursor, and what the step came to.
type Stepped = (HashCursor, Result<HashProgress, StoreError>);

/// One step of a hash on the blocking pool (`spawn_blocking`), not on a
/// runtime worker: it is about a millisecond of CPU, and values dropped
/// from memory are read back from the database file, which blocks. One
/// task per step, not one for the whole hash: a caller that gives up (a
/// timed-out peer request, a dropped RPC) stops the hash after the
/// current step.
async fn step_on_blocking_pool(
    store: SharedStore,
    mut cursor: HashCursor,
) -> Result<Stepped, ServerError> {
    tokio::task::spawn_blocking(move || {
        let progress = read(&store).hash_kv_step(&mut cursor, STEP_RECORDS);
        std::thread::sleep(HAND_OFF_PAUSE);
        (cursor, progress)
    })
    .await
    .map_err(|e| ServerError::Internal(format!("hash step: {e}")))
}

/// [`hash_in_steps`] with each step taken by `step` (tests put writes
/// between steps through it).
async fn hash_with<F, Fut>(
    store: &SharedStore,
    mut revision: i64,
    mut step: F,
) -> Result<KvHash, ServerError>
where
    F: FnMut(SharedStore, HashCursor) -> Fut,
    Fut: Future<Output = Result<Stepped, ServerError>>,
{
    for _ in 0..=MAX_RESTARTS {
        let mut cursor = read(store).hash_cursor(revision)?;
        // A restart hashes the same revision, not a newer head.
        revision = cursor.revision();
        loop {
            let (returned, progress) = step(SharedStore::clone(store), cursor).await?;
            cursor = returned;
            match progress? {
                HashProgress::More => {}
                HashProgress::Done {
                    hash,
                    compact_revision,
                } => {
                    return Ok(KvHash {
                        hash,
                        compact_revision,
                        revision,
                    })
                }
                HashProgress::Restart { compact_revision } => {
                    tracing::debug!(
                        "hash at {revision}: compacted at {compact_revision} meanwhile; again"
                    );
                    break;
                }
            }
        }
    }
    tracing::warn!("hash at {revision}: compacted under it {MAX_RESTARTS} times; given up");
    Err(ServerError::Timeout)
}

/// The store's read lock, poisoned or not (as `Node::store`).
fn read(store: &SharedStore) -> std::sync::RwLockReadGuard<'_, cairn_store::Store> {
    store.read().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};

    use cairn_store::{Command, CommandResult, PutRequest, Store, StoreError};

    use super::*;

    fn put(n: usize) -> Command {
        Command::Put(PutRequest {
            key: format!("k{}", n % 3_000).into_bytes(),
            value: format!("v{n}").into_bytes(),
            ..Default::default()
        })
    }

    fn apply(store: &SharedStore, cmd: &Command) {
        let result = store.write().unwrap().apply(cmd).result;
        assert!(!matches!(result, CommandResult::Error(_)), "{result:?}");
    }

    /// The one-shot hash `(hash, compact_revision)` as a [`KvHash`] at
    /// revision 10,000.
    fn at_10k((hash, compact_revision): (u32, i64)) -> KvHash {
        KvHash {
            hash,
            compact_revision,
            revision: 10_000,
        }
    }

    /// 10,000 records: three steps.
    fn filled() -> SharedStore {
        let store = Arc::new(RwLock::new(Store::new()));
        for n in 0..10_000 {
            apply(&store, &put(n));
        }
        store
    }

    /// Hashes `store` at `revision` in steps, `before_step` applied before
    /// each (none when it gives none); also how many it applied.
    async fn hash_between(
        store: &SharedStore,
        revision: i64,
        mut before_step: impl FnMut(&Store) -> Option<Command>,
    ) -> (Result<KvHash, ServerError>, usize) {
        let mut applied = 0;
        let hashed = hash_with(store, revision, |store, cursor| {
            let cmd = before_step(&store.read().unwrap());
            if let Some(cmd) = cmd {
                apply(&store, &cmd);
                applied += 1;
            }
            step_on_blocking_pool(store, cursor)
        })
        .await;
        (hashed, applied)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_between_steps_leave_the_hash_alone() {
        let store = filled();
        let (hash, compact_revision) = store.read().unwrap().hash_kv(0).unwrap();
        let mut n = 10_000;
        let (hashed, applied) = hash_between(&store, 0, |_| {
            n += 1;
            Some(put(n))
        })
        .await;
        assert_eq!(hashed.unwrap(), at_10k((hash, compact_revision)));
        assert_eq!(applied, 3, "one before each step");
        assert_ne!(store.read().unwrap().hash_kv(0).unwrap().0, hash);
        // The same without writes, through the blocking pool.
        assert_eq!(
            hash_in_steps(&store, 10_000).await.unwrap(),
            at_10k((hash, compact_revision))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hash_compacted_under_every_step_gives_up_with_an_error() {
        let store = filled();
        // A compaction one revision further each time: always below the
        // revision hashed, so each restart can begin, and is compacted
        // under again.
        let compact_further = |s: &Store| {
            Some(Command::Compact {
                revision: s.compact_revision() + 1,
            })
        };
        let (hashed, applied) = hash_between(&store, 10_000, compact_further).await;
        assert_eq!(hashed, Err(ServerError::Timeout));
        assert_eq!(applied, 1 + MAX_RESTARTS, "one a restart");
        // Compacted under only once, it begins again and hashes.
        let mut once = Some(Command::Compact { revision: 100 });
        let (hashed, applied) = hash_between(&store, 10_000, |_| once.take()).await;
        let (hash, compact_revision) = store.read().unwrap().hash_kv(10_000).unwrap();
        assert_eq!(applied, 1);
        assert_eq!(compact_revision, 100);
        assert_eq!(hashed.unwrap(), at_10k((hash, compact_revision)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_revision_compacted_away_or_not_reached_is_refused() {
        let store = filled();
        apply(&store, &Command::Compact { revision: 50 });
        assert_eq!(
            hash_in_steps(&store, 49).await,
            Err(ServerError::Store(StoreError::Compacted {
                compact_revision: 50
            }))
        );
        assert_eq!(
            hash_in_steps(&store, 10_001).await,
            Err(ServerError::Store(StoreError::FutureRevision {
                current_revision: 10_000
            }))
        );
    }
}
