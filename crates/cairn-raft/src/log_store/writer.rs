//! The log's one writer thread, with group commit.
//!
//! Every write is a job taken from one FIFO queue, so writes reach the disk
//! in the order openraft issued them. `append` does not wait for its job
//! (see [`super::unflushed`]); when the writer finds several appends
//! queued — RaftCore submits one per batch it accepted, a follower one per
//! AppendEntries — it writes them to the segment file in **one** write with
//! one fsync, then reports each append flushed. Without this, non-blocking
//! appends would cost one fsync each.
//!
//! The state machine hands its per-batch rows here too ([`StateWriter`]),
//! and they are folded, with any queued `committed` update, into one redb
//! transaction per group, written after the group's appends are synced and
//! reported. Applying a batch thus never waits for redb's single writer
//! lock nor costs a transaction of its own, and the rows are never written
//! ahead of the entries they come from. They are committed without fsync;
//! see [`Checkpoint`] for when they are made durable.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::unflushed::Unflushed;
use super::wal::{Record, Wal};
use super::{ctx, KEY_COMMITTED, META_TABLE};
use crate::types::{IOFlushed, LogId};

/// How many writes may wait for the writer thread. Appends are not awaited,
/// so this is what bounds them: when the disk falls this far behind, the
/// submitting task blocks until the writer catches up (backpressure on
/// RaftCore, which is what should slow down).
const QUEUE_JOBS: usize = 1024;
/// Most jobs folded into one transaction.
const MAX_GROUP_JOBS: usize = 256;
/// Most encoded bytes folded into one transaction (at least one append).
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Entries to write, as openraft handed them to one `append` call.
pub(super) struct Append {
    pub wal: Arc<Wal>,
    /// (log id, postcard-encoded entry)
    pub rows: Vec<(LogId, Vec<u8>)>,
    /// The log ids written, to drop them from the unflushed tail.
    pub written: Vec<LogId>,
    pub unflushed: Arc<Unflushed>,
    pub callback: IOFlushed,
}

pub(super) enum Job {
    Append(Append),
    /// The latest committed log id, written without fsync; folded into a
    /// neighbouring append's transaction when there is one.
    Committed {
        db: Arc<Database>,
        bytes: Option<Vec<u8>>,
    },
    /// State machine rows, written in the next transaction.
    State(StateJob),
    /// Anything else, run as is, in order.
    Run(Box<dyn FnOnce() + Send>),
}

/// Writes a batch's rows into an open transaction.
pub type StateRows = Box<dyn FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send>;

pub(super) struct StateJob {
    db: Arc<Database>,
    rows: StateRows,
    /// Bytes of `rows`, to pace durable commits ([`Checkpoint`]).
    bytes: usize,
    failed: Arc<Mutex<Option<String>>>,
    /// Run once the transaction holding `rows` committed (readers see it).
    on_commit: OnCommit,
}

/// Told that a batch's rows are committed.
pub type OnCommit = Box<dyn FnOnce() + Send>;

/// Lets the state machine queue its rows on the log's writer thread.
/// Cheap to clone.
#[derive(Clone)]
pub struct StateWriter {
    writer: Writer,
    db: Arc<Database>,
    /// The first failed write, reported by the next `check`.
    failed: Arc<Mutex<Option<String>>>,
}

impl StateWriter {
    /// Queues `rows` (`bytes` of keys and values), to be written in order
    /// after everything queued before, then `on_commit` once their
    /// transaction committed (not if it failed); does not wait. Blocks when
    /// the writer is far behind.
    pub fn submit(&self, bytes: usize, rows: StateRows, on_commit: OnCommit) -> io::Result<()> {
        self.check()?;
        let job = Job::State(StateJob {
            db: self.db.clone(),
            rows,
            bytes,
            failed: self.failed.clone(),
            on_commit,
        });
        self.writer.submit("state rows", job)
    }

    /// Runs `job` after every queued write and waits for its result.
    pub async fn run<F>(&self, job: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()> + Send + 'static,
    {
        self.writer.run("state write", job).await?;
        self.check()
    }

    /// Fails if an earlier queued write failed: the persisted state no
    /// longer follows the applied one, so the state machine must stop.
    pub fn check(&self) -> io::Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(io::Error::other(format!(
                "state rows: earlier write failed: {e}"
            ))),
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: SyncSender<Job>,
    /// Jobs submitted and not yet taken by the writer thread.
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// A handle for the state machine's rows, on `db`.
    pub fn state_writer(&self, db: Arc<Database>) -> StateWriter {
        StateWriter {
            writer: self.clone(),
            db,
            failed: Arc::default(),
        }
    }

    pub fn spawn() -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_JOBS);
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        std::thread::Builder::new()
            .name("cairn-raft-log-writer".into())
            // Ends when the LogStore (the only sender) is dropped. Jobs own
            // their Arc<Database> and release it when done, so once an
            // awaited write returns this thread holds no reference to it.
            .spawn(move || {
                run(Queue {
                    rx,
                    queued: counter,
                })
            })
            .map_err(|e| ctx("spawn raft log writer thread", e))?;
        Ok(Writer { tx, queued })
    }

    /// Runs `job` after every earlier job and waits for its result.
    pub async fn run<F>(&self, what: &'static str, job: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()> + Send + 'static,
    {
        let (done_tx, done_rx) = oneshot::channel();
        self.submit(
            what,
            Job::Run(Box::new(move || {
                let _ = done_tx.send(job());
            })),
        )?;
        done_rx
            .await
            .map_err(|_| io::Error::other(format!("raft log {what}: writer thread has stopped")))?
    }

    /// Queues `job` behind every earlier one without waiting for it.
    pub fn submit(&self, what: &'static str, job: Job) -> io::Result<()> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(job).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            io::Error::other(format!("raft log {what}: writer thread has stopped"))
        })
    }
}

/// The writer thread's end of the queue.
struct Queue {
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn recv(&self) -> Option<Job> {
        let job = self.rx.recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(job)
    }

    fn try_recv(&self) -> Option<Job> {
        let job = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(job)
    }

    /// Whether no job waits: a durable commit now holds up nothing.
    fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }
}

fn run(queue: Queue) {
    let mut next: Option<Job> = None;
    let mut checkpoint = Checkpoint::default();
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match queue.recv() {
                Some(job) => job,
                None => return,
            },
        };
        match job {
            Job::Run(f) => f(),
            Job::Committed { db, bytes } => {
                let durable = checkpoint.due(bytes.as_ref().map_or(0, Vec::len), queue.idle());
                if let Err(e) = write_group(&db, Some(bytes.as_deref()), durable) {
                    tracing::warn!("raft log store: save committed: {e}");
                }
            }
            Job::Append(first) => {
                let (group, after) = gather(Group::with_append(first), &queue);
                next = after;
                group.flush(&mut checkpoint, &queue);
            }
            Job::State(first) => {
                let (group, after) = gather(Group::with_state(first), &queue);
                next = after;
                group.flush(&mut checkpoint, &queue);
            }
        }
    }
}

/// When the state machine's rows were last made durable.
///
/// They are committed without fsync: the log's segment files are what a
/// restart recovers from (it re-applies the log after the state machine's
/// last durable row). Every [`CHECKPOINT_INTERVAL`], or sooner once
/// [`CHECKPOINT_BYTES`] of rows were committed since the last and no job
/// waits behind the commit, one of those commits is made durable instead.
/// That bounds the re-apply after a crash, and lets redb reuse the pages
/// the non-durable commits freed (it cannot before a durable commit, so
/// the file would grow). It costs one redb
/// fsync per checkpoint, after the log's own fsync of the same group: the
/// state made durable never covers an entry the log does not hold durably.
///
/// Why a byte bound: the durable commit writes out every page the
/// non-durable ones left in memory, on the writer thread, and the log's
/// appends queued behind it wait (with ext4 ordering, even a log fsync
/// running beside it would). Under `CanOffload` of 1,000 keys (~40 KB of
/// lease rows per request) half a second of rows took 10–25 ms to write,
/// and every request caught behind it was the 1-client row's p99. Why only
/// when idle: under a steady stream of small writes (puts at 256 clients)
/// the writer is never idle, and a durable commit every few dozen
/// milliseconds cost those rows throughput; the interval bounds them.
struct Checkpoint {
    last: std::time::Instant,
    /// Row bytes committed since the last durable commit.
    bytes: usize,
}

/// How often, at the longest, the state machine's rows are made durable;
/// see [`Checkpoint`].
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Row bytes after which the next commit is made durable, however soon.
const CHECKPOINT_BYTES: usize = 512 * 1024;

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            last: std::time::Instant::now(),
            bytes: 0,
        }
    }
}

impl Checkpoint {
    /// Whether the commit about to be made, of `bytes` of rows, should be
    /// durable; if so, counts it as made. `idle`: no job waits behind it.
    fn due(&mut self, bytes: usize, idle: bool) -> bool {
        self.bytes = self.bytes.saturating_add(bytes);
        let by_bytes = self.bytes >= CHECKPOINT_BYTES && idle;
        if self.last.elapsed() < CHECKPOINT_INTERVAL && !by_bytes {
            return false;
        }
        self.last = std::time::Instant::now();
        self.bytes = 0;
        true
    }
}

/// Writes queued back to back, folded into one transaction.
#[derive(Default)]
struct Group {
    appends: Vec<Append>,
    /// The latest committed id queued, if any (`None` inside: remove it),
    /// and the database to write it to.
    committed: Option<(Arc<Database>, Option<Vec<u8>>)>,
    states: Vec<StateJob>,
    bytes: usize,
}

impl Group {
    fn with_append(a: Append) -> Group {
        let mut g = Group::default();
        g.add_append(a);
        g
    }

    fn with_state(s: StateJob) -> Group {
        let mut g = Group::default();
        g.states.push(s);
        g
    }

    fn add_append(&mut self, a: Append) {
        self.bytes += a.rows.iter().map(|(_, b)| b.len()).sum::<usize>();
        self.appends.push(a);
    }

    fn full(&self) -> bool {
        self.appends.len() + self.states.len() >= MAX_GROUP_JOBS || self.bytes >= MAX_GROUP_BYTES
    }

    /// The database the group's redb rows go to, if it has any.
    fn db(&self) -> Option<Arc<Database>> {
        match (&self.committed, self.states.first()) {
            (Some((db, _)), _) => Some(db.clone()),
            (None, Some(s)) => Some(s.db.clone()),
            (None, None) => None,
        }
    }

    /// The appends' entries in one write and one fsync of the segment file,
    /// then each append's callback; then the committed id and the state
    /// machine's rows in one redb transaction, not fsynced: the log is what
    /// makes them recoverable (see the module docs of `log_store`).
    fn flush(self, checkpoint: &mut Checkpoint, queue: &Queue) {
        let db = self.db();
        if let Some(first) = self.appends.first() {
            let wal = first.wal.clone();
            let records: Vec<Record<'_>> = self
                .appends
                .iter()
                .flat_map(|a| a.rows.iter())
                .map(|(log_id, payload)| Record {
                    log_id: *log_id,
                    payload,
                })
                .collect();
            let res = wal.append(&records);
            drop(records);
            if let Err(e) = &res {
                tracing::error!("raft log store: append failed: {e}");
            }
            for a in self.appends {
                let outcome = match &res {
                    Ok(()) => {
                        a.unflushed.flushed(&a.written);
                        Ok(())
                    }
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                a.callback.io_completed(outcome);
            }
        }
        let Some(db) = db else { return };
        let committed = self.committed.as_ref().map(|(_, c)| c.as_deref());
        let mut state_error: Option<String> = None;
        let durable = checkpoint.due(self.states.iter().map(|s| s.bytes).sum(), queue.idle());
        let (rows, on_commit): (Vec<_>, Vec<_>) = self
            .states
            .into_iter()
            .map(|s| ((s.rows, s.failed), s.on_commit))
            .unzip();
        let res = write_txn(&db, committed, durable, |txn| {
            for (rows, failed) in rows {
                if let Err(e) = rows(txn) {
                    let msg = e.to_string();
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                    state_error = Some(msg);
                    return Err(e);
                }
            }
            Ok(())
        });
        if let (Err(e), None) = (&res, &state_error) {
            tracing::warn!("raft log store: save committed: {e}");
        }
        if res.is_ok() {
            for f in on_commit {
                f();
            }
        }
    }
}

/// Adds the jobs queued right behind the group's first, up to the group
/// limits; returns the group and the first job that could not join.
fn gather(mut group: Group, queue: &Queue) -> (Group, Option<Job>) {
    while !group.full() {
        match queue.try_recv() {
            Some(Job::Append(a)) => group.add_append(a),
            Some(Job::Committed { db, bytes }) => group.committed = Some((db, bytes)),
            Some(Job::State(s)) => group.states.push(s),
            Some(other) => return (group, Some(other)),
            None => break,
        }
    }
    (group, None)
}

/// One transaction with, if given, the committed log id (`None` inside:
/// remove it); fsynced when `durable` is set.
pub(super) fn write_group(
    db: &Database,
    committed: Option<Option<&[u8]>>,
    durable: bool,
) -> io::Result<()> {
    write_txn(db, committed, durable, |_| Ok(()))
}

/// [`write_group`] plus `more`, run inside the same transaction.
fn write_txn(
    db: &Database,
    committed: Option<Option<&[u8]>>,
    durable: bool,
    more: impl FnOnce(&redb::WriteTransaction) -> io::Result<()>,
) -> io::Result<()> {
    let mut txn = db
        .begin_write()
        .map_err(|e| ctx("state rows: begin write", e))?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|e| ctx("state rows: set durability", e))?;
    if let Some(committed) = committed {
        let mut meta = txn
            .open_table(META_TABLE)
            .map_err(|e| ctx("save committed: open raft_meta", e))?;
        match committed {
            Some(b) => meta.insert(KEY_COMMITTED, b).map(|_| ()),
            None => meta.remove(KEY_COMMITTED).map(|_| ()),
        }
        .map_err(|e| ctx("save committed: write", e))?;
    }
    more(&txn)?;
    txn.commit().map_err(|e| ctx("state rows: commit", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_after_the_interval_or_the_byte_bound_when_idle() {
        let mut c = Checkpoint::default();
        assert!(!c.due(100, true), "neither bound reached");
        assert!(!c.due(CHECKPOINT_BYTES - 200, true));
        assert!(!c.due(100, false), "bytes reached, but jobs wait");
        assert!(c.due(0, true), "bytes add up across commits");
        assert_eq!(c.bytes, 0, "counted as made");
        assert!(!c.due(0, true));
        assert!(c.due(CHECKPOINT_BYTES, true), "one big commit alone");
        c.last -= CHECKPOINT_INTERVAL;
        assert!(c.due(0, false), "the interval passed: due, busy or not");
        assert!(!c.due(0, true));
    }
}
