//! The Raft log and vote.
//!
//! Entries live in append-only segment files ([`wal`]): one sequential
//! write and one `fdatasync` per group of appends. Everything else lives in
//! the redb [`Database`] shared with the state machine, in one table:
//!
//! - `raft_meta`: `&str` → postcard bytes, keys `vote`, `committed` and
//!   `last_purged_log_id`.
//!
//! (`raft_log`, the entries' table of older versions, is emptied into the
//! files at open.)
//!
//! # Threads
//!
//! - every write (append, vote, committed, truncate, purge) and the state
//!   machine's rows are jobs on one dedicated writer thread, taken from a
//!   FIFO queue. One thread means writes reach the disk in the order
//!   openraft issued them, which the `RaftLogStorage` contract requires, even
//!   if a caller's future is dropped half-way;
//! - `append` does not wait for its job: it leaves the entries readable in
//!   memory ([`unflushed`]) and returns, and the writer thread reports the
//!   fsync through openraft's callback. RaftCore keeps batching client writes
//!   and replicating (the leader's fsync overlaps the followers') instead of
//!   stalling for every fsync. The writer folds the appends queued behind
//!   each other into one write with one fsync (group commit, see [`writer`]).
//!   `save_committed` is not waited for either; `save_vote`,
//!   `truncate_after` and `purge` are;
//! - reads run on tokio's blocking pool (`spawn_blocking`); a read that only
//!   needs unflushed entries touches no file at all.
//!
//! # Durability
//!
//! | write          | how | why |
//! | -------------- | --- | --- |
//! | `append`       | segment file, `fdatasync` per group | an acknowledged entry must survive a crash |
//! | `truncate_after` | segment files cut and synced | rare; keeps a removed conflicting suffix from reappearing after a crash |
//! | `save_vote`    | redb `Immediate` | Raft safety: never vote twice in a term |
//! | `purge`        | redb `Immediate` (`last_purged_log_id`), then whole segment files deleted | the state machine rows covering the purged entries must be durable before the entries go; this commit makes them so |
//! | `save_committed` | redb `None` (`Immediate` with [`LogStore::with_durable_committed`]) | an optimisation (recovery re-applies up to it); openraft allows an older value after a crash |
//! | state machine rows | redb `None`; a checkpoint (an `Immediate` commit on its own thread) every 500 ms or 128 KiB of rows | recoverable from the log: a restart re-applies the entries after the last durable row (see `writer::rows::Checkpoint`, `writer::rows::RowWriter`) |
//!
//! A redb `Immediate` commit also makes every earlier `None` commit durable.
//!
//! A redb database has one writer at a time: a state machine that holds a
//! write transaction open while waiting on Raft would stall the log writer.

use std::fmt::{self, Debug};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{Entry, IOFlushed, LogId, LogState, TypeConfig, Vote};

mod unflushed;
mod wal;
mod writer;
use unflushed::{Pending, Unflushed};
use wal::Wal;
use writer::{Append, Job, Writer};
pub use writer::{StateRows, StateWriter};

/// `raft_log`: log index → postcard-encoded [`Entry`].
pub const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `raft_meta`: small postcard-encoded records, see the `KEY_*` constants.
pub const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

pub const KEY_VOTE: &str = "vote";
pub const KEY_COMMITTED: &str = "committed";
pub const KEY_LAST_PURGED: &str = "last_purged_log_id";

/// The default for [`LogStore::with_replication_batch_bytes`]: a quarter of
/// the transport's 64 MiB message limit, leaving room for encoding overhead.
pub const DEFAULT_REPLICATION_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The Raft log store. Create one per node with [`LogStore::open`] and hand
/// it to `Raft::new`.
pub struct LogStore {
    db: Arc<Database>,
    /// The entries; redb keeps the vote and the other small records.
    wal: Arc<Wal>,
    writer: Writer,
    /// Appended entries whose transaction has not committed yet.
    unflushed: Arc<Unflushed>,
    replication_batch_bytes: usize,
    committed_durability: Durability,
    /// One past the index of the last entry appended (0 for none), for
    /// the state machine to see how far its applies trail the log.
    appended_end: Arc<AtomicU64>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (creating if needed) the log's tables in `db` and its segment
    /// files in `wal_dir`, and starts the writer thread. Entries left in
    /// redb's `raft_log` table by an older version move to the files.
    ///
    /// This blocks on file IO and a redb write transaction: call it before
    /// starting the async runtime's work, or from `spawn_blocking`.
    pub fn open(db: Arc<Database>, wal_dir: &Path) -> io::Result<Self> {
        {
            let txn = db.begin_write().map_err(|e| ctx("open: begin write", e))?;
            txn.open_table(LOG_TABLE)
                .map_err(|e| ctx("open: create raft_log", e))?;
            txn.open_table(META_TABLE)
                .map_err(|e| ctx("open: create raft_meta", e))?;
            txn.commit().map_err(|e| ctx("open: commit", e))?;
        }
        // Surface corruption of the small records at startup, not mid-flight.
        read_meta::<Vote>(&db, KEY_VOTE)?;
        read_meta::<LogId>(&db, KEY_COMMITTED)?;
        let purged = read_meta::<LogId>(&db, KEY_LAST_PURGED)?;
        let wal = Wal::open(wal_dir, purged)?;
        migrate_redb_log(&db, &wal)?;
        let appended_end = wal.last_log_id().map_or(0, |l| l.index.saturating_add(1));

        Ok(LogStore {
            db,
            wal: Arc::new(wal),
            writer: Writer::spawn()?,
            unflushed: Arc::new(Unflushed::default()),
            replication_batch_bytes: DEFAULT_REPLICATION_BATCH_BYTES,
            committed_durability: Durability::None,
            appended_end: Arc::new(AtomicU64::new(appended_end)),
        })
    }

    /// Makes `save_committed` fsync (`Durability::Immediate`) instead of
    /// riding on the next log append's fsync. Off by default: it costs one
    /// more fsync per commit advance. With it on, the committed id recovered
    /// after a crash is never older than one the state machine applied, so
    /// openraft re-applies up to it on startup; with it off, wait for
    /// `Raft::wait_for_recovery` before serving reads after a restart.
    pub fn with_durable_committed(mut self, durable: bool) -> Self {
        self.committed_durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        self
    }

    /// Caps the encoded size of the entries one replication read returns
    /// (`limited_get_log_entries`, which builds AppendEntries). At least one
    /// entry is always returned.
    pub fn with_replication_batch_bytes(mut self, bytes: usize) -> Self {
        self.replication_batch_bytes = bytes.max(1);
        self
    }

    /// A handle through which the state machine writes its rows through
    /// this store's writer queue, in order with the log (see [`writer`]).
    pub fn state_writer(&self) -> StateWriter {
        self.writer
            .state_writer(self.db.clone(), self.appended_end.clone())
    }

    /// A reader over this store; cheap to create and to clone.
    pub fn reader(&self) -> LogReader {
        LogReader {
            db: self.db.clone(),
            wal: self.wal.clone(),
            unflushed: self.unflushed.clone(),
            replication_batch_bytes: self.replication_batch_bytes,
        }
    }

    async fn write<F>(&self, what: &'static str, job: F) -> io::Result<()>
    where
        F: FnOnce(&Database) -> io::Result<()> + Send + 'static,
    {
        let db = self.db.clone();
        self.writer.run(what, move || job(&db)).await
    }
}

/// Reads the log and the vote. Every clone shares the same database.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
    wal: Arc<Wal>,
    /// The log's tail that is still being written; see [`unflushed`].
    unflushed: Arc<Unflushed>,
    replication_batch_bytes: usize,
}

impl Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader").finish_non_exhaustive()
    }
}

impl LogReader {
    async fn read<T, F>(&self, job: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> io::Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || job(&db))
            .await
            .map_err(|e| ctx("raft log read task", e))?
    }

    /// The entries in `[lo, hi)` up to `budget` encoded bytes (at least one):
    /// flushed ones from the segment files, then the unflushed tail.
    async fn read_range(&self, lo: u64, hi: Option<u64>, budget: usize) -> io::Result<Vec<Entry>> {
        // Copy the tail first: an entry leaves it only once it is readable
        // from the files.
        let tail = self.unflushed.range(lo, hi);
        let tail_start = tail.first().map(|p| p.entry.log_id.index);
        let mut out = Vec::new();
        let mut bytes_read = 0usize;
        if tail_start != Some(lo) {
            let wal_hi = tail_start.or(hi).unwrap_or(u64::MAX);
            let wal = self.wal.clone();
            let (flushed, bytes) =
                tokio::task::spawn_blocking(move || wal.read(lo, wal_hi, budget))
                    .await
                    .map_err(|e| ctx("raft log read task", e))??;
            out = flushed;
            bytes_read = bytes;
            if bytes_read >= budget || tail_start.is_none() {
                return Ok(out);
            }
            // Nothing stored below the tail (indexes before the log's first
            // one, or purged) is not a hole; a gap between the two parts is.
            let next = out.last().map(|e| e.log_id.index + 1);
            if next.is_some() && next != tail_start {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "raft log store: hole in the log: expected index {next:?}, \
                         the tail in memory starts at {tail_start:?}"
                    ),
                ));
            }
        }
        for p in tail {
            if !out.is_empty() && bytes_read >= budget {
                break;
            }
            let index = p.entry.log_id.index;
            if let Some(prev) = out.last().map(|e| e.log_id.index) {
                if index != prev + 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "raft log store: hole in the log's tail in memory: \
                             index {index} follows {prev}"
                        ),
                    ));
                }
            }
            bytes_read = bytes_read.saturating_add(p.encoded_bytes);
            out.push(p.entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((lo, hi)) = normalize(&range) else {
            return Ok(Vec::new());
        };
        self.read_range(lo, hi, usize::MAX).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read(|db| read_meta::<Vote>(db, KEY_VOTE)).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        if start >= end {
            return Ok(Vec::new());
        }
        let budget = self.replication_batch_bytes;
        self.read_range(start, Some(end), budget).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        let unflushed_last = self.unflushed.last_log_id();
        let last_purged = self
            .reader()
            .read(|db| read_meta::<LogId>(db, KEY_LAST_PURGED))
            .await?;
        Ok(LogState {
            last_log_id: unflushed_last.or(self.wal.last_log_id()).or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote, "vote")?;
        self.write("save vote", move |db| {
            put_meta(db, KEY_VOTE, &bytes, Durability::Immediate)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = match &committed {
            Some(c) => Some(encode(c, "committed")?),
            None => None,
        };
        let durability = self.committed_durability;
        if matches!(durability, Durability::Immediate) {
            return self
                .write("save committed", move |db| {
                    writer::write_group(db, Some(bytes.as_deref()), true)
                })
                .await;
        }
        // Not waited for: a lost or late committed id only makes recovery
        // re-apply less (see `with_durable_committed`), and waiting would
        // stall RaftCore behind the append fsyncs queued before it. Nor
        // does it wake the writer thread (`writer::queue`).
        self.writer.submit_lazy(
            "save committed",
            Job::Committed {
                db: self.db.clone(),
                bytes,
            },
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.reader()
            .read(|db| read_meta::<LogId>(db, KEY_COMMITTED))
            .await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows: Vec<(LogId, Vec<u8>)> = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut written: Vec<LogId> = Vec::new();
        for entry in entries {
            let bytes = encode(&entry, "entry")?;
            rows.push((entry.log_id, bytes));
            written.push(entry.log_id);
            pending.push(Pending {
                encoded_bytes: rows.last().map_or(0, |(_, b)| b.len()),
                entry,
            });
        }
        if rows.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        // Readable from now on, as openraft requires; durable at the callback.
        let end = written.last().map_or(0, |l| l.index.saturating_add(1));
        self.unflushed.insert(pending);
        self.appended_end.store(end, Ordering::Release);
        self.writer.submit(
            "append",
            Job::Append(Append {
                wal: self.wal.clone(),
                rows,
                written,
                unflushed: self.unflushed.clone(),
                callback,
            }),
        )
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(l) => match l.index.checked_add(1) {
                Some(i) => i,
                None => return Ok(()),
            },
            None => 0,
        };
        // Waited for (it follows every queued append), so no reader can see
        // a removed entry afterwards.
        self.unflushed.truncate_from(from);
        self.appended_end.fetch_min(from, Ordering::AcqRel);
        let wal = self.wal.clone();
        self.writer
            .run("truncate", move || wal.truncate(from))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let wal = self.wal.clone();
        self.write("purge", move |db| {
            // Durable before any file goes: it is what tells a restart to
            // skip what the files may still hold. This commit also makes
            // every state machine row queued before it durable, and those
            // cover the snapshot this purge follows, so no entry the state
            // machine still needs at restart is deleted.
            let mut txn = db.begin_write().map_err(|e| ctx("purge: begin write", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| ctx("purge: set durability", e))?;
            {
                let mut meta = txn
                    .open_table(META_TABLE)
                    .map_err(|e| ctx("purge: open raft_meta", e))?;
                let prev: Option<LogId> = match meta
                    .get(KEY_LAST_PURGED)
                    .map_err(|e| ctx("purge: read last_purged_log_id", e))?
                {
                    Some(v) => Some(decode(v.value(), "raft_meta last_purged_log_id")?),
                    None => None,
                };
                // Purging never moves backwards.
                if prev.as_ref().is_some_and(|p| p >= &log_id) {
                    return Ok(());
                }
                let bytes = encode(&log_id, "last_purged_log_id")?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                    .map_err(|e| ctx("purge: write last_purged_log_id", e))?;
            }
            txn.commit().map_err(|e| ctx("purge: commit", e))?;
            wal.purge(log_id.index)
        })
        .await?;
        self.unflushed.purge_upto(log_id.index);
        Ok(())
    }
}

/// Moves entries an older Cairn kept in redb's `raft_log` table into the
/// segment files, then empties the table (one fsync each side).
fn migrate_redb_log(db: &Database, wal: &Wal) -> io::Result<()> {
    let rows: Vec<(u64, Vec<u8>)> = {
        let txn = db.begin_read().map_err(|e| ctx("migrate: begin read", e))?;
        let log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| ctx("migrate: open raft_log", e))?;
        let mut rows = Vec::new();
        for item in log.iter().map_err(|e| ctx("migrate: iterate", e))? {
            let (k, v) = item.map_err(|e| ctx("migrate: iterate", e))?;
            rows.push((k.value(), v.value().to_vec()));
        }
        rows
    };
    if rows.is_empty() {
        return Ok(());
    }
    // A crash after the files took them and before the table was emptied
    // leaves them in both: the files win.
    if wal.last_log_id().is_none() {
        let mut records = Vec::with_capacity(rows.len());
        for (index, bytes) in &rows {
            records.push(wal::Record {
                log_id: decode_entry(*index, bytes)?.log_id,
                payload: bytes,
            });
        }
        wal.append(&records)?;
    }
    let mut txn = db
        .begin_write()
        .map_err(|e| ctx("migrate: begin write", e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| ctx("migrate: set durability", e))?;
    {
        let mut log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| ctx("migrate: open raft_log", e))?;
        log.retain(|_, _| false)
            .map_err(|e| ctx("migrate: clear raft_log", e))?;
    }
    txn.commit().map_err(|e| ctx("migrate: commit", e))?;
    tracing::info!(
        "raft log store: moved {} entries from redb to the segment files",
        rows.len()
    );
    Ok(())
}

// --- Helpers -------------------------------------------------------------------

fn ctx(what: &str, e: impl fmt::Display) -> io::Error {
    io::Error::other(format!("raft log store: {what}: {e}"))
}

fn encode<T: Serialize>(v: &T, what: &str) -> io::Result<Vec<u8>> {
    crate::encoding::to_vec_sized(v).map_err(|e| ctx(&format!("encode {what}"), e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> io::Result<T> {
    postcard::from_bytes(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log store: corrupt {what} ({} bytes): {e}",
                bytes.len()
            ),
        )
    })
}

fn decode_entry(index: u64, bytes: &[u8]) -> io::Result<Entry> {
    let entry: Entry = decode(bytes, &format!("raft_log entry at index {index}"))?;
    if entry.log_id.index != index {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log store: corrupt raft_log: key {index} holds the entry of log id {}",
                entry.log_id
            ),
        ));
    }
    Ok(entry)
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &'static str) -> io::Result<Option<T>> {
    let txn = db
        .begin_read()
        .map_err(|e| ctx(&format!("read {key}: begin read"), e))?;
    let meta = txn
        .open_table(META_TABLE)
        .map_err(|e| ctx(&format!("read {key}: open raft_meta"), e))?;
    match meta.get(key).map_err(|e| ctx(&format!("read {key}"), e))? {
        Some(v) => Ok(Some(decode(v.value(), &format!("raft_meta {key}"))?)),
        None => Ok(None),
    }
}

fn put_meta(
    db: &Database,
    key: &'static str,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    let mut txn = db
        .begin_write()
        .map_err(|e| ctx(&format!("write {key}: begin write"), e))?;
    txn.set_durability(durability)
        .map_err(|e| ctx(&format!("write {key}: set durability"), e))?;
    {
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| ctx(&format!("write {key}: open raft_meta"), e))?;
        meta.insert(key, bytes)
            .map_err(|e| ctx(&format!("write {key}"), e))?;
    }
    txn.commit()
        .map_err(|e| ctx(&format!("write {key}: commit"), e))
}

/// `[lo, hi)` for a range of log indexes (`hi == None`: unbounded), or `None`
/// when the range is empty.
fn normalize(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let lo = match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&x) => x.checked_add(1),
        Bound::Excluded(&x) => Some(x),
        Bound::Unbounded => None,
    };
    match hi {
        Some(h) if h <= lo => None,
        _ => Some((lo, hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderId;

    use crate::types::LeaderId;

    fn entry(index: u64) -> Entry {
        let leader = <LeaderId as RaftLeaderId>::new(1, 1).to_committed();
        Entry::new_blank(LogId::new(leader, index))
    }

    fn pending(range: std::ops::RangeInclusive<u64>) -> Vec<Pending> {
        range
            .map(|i| Pending {
                entry: entry(i),
                encoded_bytes: 10,
            })
            .collect()
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    async fn store_with_flushed(last: u64) -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let mut store = LogStore::open(db, &dir.path().join("wal")).unwrap();
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append((1..=last).map(entry), IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        (dir, store)
    }

    /// Reads join the segment files and the tail in memory.
    #[tokio::test]
    async fn reads_see_flushed_and_unflushed_entries() {
        let (_dir, mut store) = store_with_flushed(5).await;
        store.unflushed.insert(pending(6..=8));
        let mut reader = store.get_log_reader().await;
        assert_eq!(
            indexes(&reader.try_get_log_entries(1..9).await.unwrap()),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(
            indexes(&reader.try_get_log_entries(7..).await.unwrap()),
            [7, 8]
        );
        assert_eq!(
            indexes(&reader.try_get_log_entries(2..4).await.unwrap()),
            [2, 3]
        );
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));

        // The budget covers both parts: redb's 1..=5 are tens of bytes, the
        // tail's entries count 10 each.
        let mut small = store.reader();
        small.replication_batch_bytes = 1;
        assert_eq!(
            indexes(&small.limited_get_log_entries(6, 9).await.unwrap()),
            [6]
        );
        assert_eq!(small.limited_get_log_entries(1, 9).await.unwrap().len(), 1);

        // Synced entries stay readable from memory; truncation drops them.
        store.unflushed.flushed(&[entry(6).log_id]);
        assert_eq!(store.unflushed.range(0, None).len(), 8);
        store.unflushed.truncate_from(8);
        assert_eq!(
            indexes(&reader.try_get_log_entries(7..).await.unwrap()),
            [7]
        );
    }

    /// The state machine's view of how far the log runs ahead of it
    /// follows appends and truncations, and survives a restart.
    #[tokio::test]
    async fn the_state_writer_counts_the_entries_after_an_applied_one() {
        let (dir, mut store) = store_with_flushed(5).await;
        let writer = store.state_writer();
        assert_eq!(writer.entries_after(Some(entry(2).log_id)), 3);
        assert_eq!(writer.entries_after(Some(entry(5).log_id)), 0);
        // Applied beyond the log (a snapshot was installed): none.
        assert_eq!(writer.entries_after(Some(entry(9).log_id)), 0);

        store.truncate_after(Some(entry(3).log_id)).await.unwrap();
        assert_eq!(writer.entries_after(Some(entry(2).log_id)), 1);
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append((4..=9).map(entry), IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        assert_eq!(writer.entries_after(Some(entry(2).log_id)), 7);
        // Both hold the writer thread, which holds the database.
        drop((writer, store));

        let db = Arc::new(Database::open(dir.path().join("db")).unwrap());
        let reopened = LogStore::open(db, &dir.path().join("wal")).unwrap();
        assert_eq!(
            reopened.state_writer().entries_after(Some(entry(2).log_id)),
            7
        );
    }

    /// Appends are synced and reported while the state machine's rows are
    /// being committed: a slow redb commit holds up no append, and the
    /// rows still land once it ends, before a later `Run` job.
    #[tokio::test]
    async fn appends_do_not_wait_for_a_row_commit() {
        let (_dir, mut store) = store_with_flushed(2).await;
        let writer = store.state_writer();
        let (in_commit_tx, in_commit) = std::sync::mpsc::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (committed_tx, committed) = tokio::sync::oneshot::channel::<()>();
        writer
            .submit(
                10,
                Box::new(move |_txn| {
                    let _ = in_commit_tx.send(());
                    gate.recv().map_err(io::Error::other)
                }),
                Box::new(move || {
                    let _ = committed_tx.send(());
                }),
            )
            .unwrap();
        // The rows go on once the appends queued before them are synced;
        // wait until their transaction is open and stuck.
        tokio::task::spawn_blocking(move || in_commit.recv())
            .await
            .unwrap()
            .unwrap();

        let (tx, rx) = TypeConfig::oneshot();
        store
            .append((3..=4).map(entry), IOFlushed::signal(tx))
            .await
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), rx)
            .await
            .expect("the append waited for the row commit")
            .unwrap()
            .unwrap();
        assert_eq!(store.wal.last_log_id().map(|l| l.index), Some(4));

        // A write job runs after the rows queued before it.
        release.send(()).unwrap();
        store.write("after the rows", |_db| Ok(())).await.unwrap();
        committed.await.expect("rows committed before the run job");
    }

    /// A gap in the log is corruption, not a short read.
    #[tokio::test]
    async fn gap_before_the_unflushed_tail_is_an_error() {
        let (_dir, store) = store_with_flushed(3).await;
        store.unflushed.insert(pending(6..=7));
        let mut reader = store.reader();
        let err = reader.try_get_log_entries(1..8).await.unwrap_err();
        assert!(err.to_string().contains("hole"), "{err}");
    }

    #[test]
    fn normalize_ranges() {
        assert_eq!(normalize(&(3..7)), Some((3, Some(7))));
        assert_eq!(normalize(&(3..=7)), Some((3, Some(8))));
        assert_eq!(normalize(&(3..)), Some((3, None)));
        assert_eq!(normalize(&(..)), Some((0, None)));
        assert_eq!(normalize(&(5..5)), None);
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = 6..5;
        assert_eq!(normalize(&inverted), None);
        assert_eq!(normalize(&(0..=u64::MAX)), Some((0, None)));
    }
}
