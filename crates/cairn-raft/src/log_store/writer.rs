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
//! see [`Checkpoint`] for when they are made durable. Under light load
//! they wait up to [`HOLD_ROWS_FOR`] for later rows to share that
//! transaction.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// One past the last appended entry's index (see `LogStore`).
    appended_end: Arc<AtomicU64>,
}

impl StateWriter {
    /// How many entries the log holds after `applied`: committed or not,
    /// how far the state machine trails the log.
    pub fn entries_after(&self, applied: Option<LogId>) -> u64 {
        let applied_end = applied.map_or(0, |l| l.index.saturating_add(1));
        self.appended_end
            .load(Ordering::Acquire)
            .saturating_sub(applied_end)
    }

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
    pub fn state_writer(&self, db: Arc<Database>, appended_end: Arc<AtomicU64>) -> StateWriter {
        StateWriter {
            writer: self.clone(),
            db,
            failed: Arc::default(),
            appended_end,
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

    /// The next job if one comes within `timeout`; `Err(true)` once every
    /// sender is gone.
    fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Job, bool> {
        match self.rx.recv_timeout(timeout) {
            Ok(job) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Ok(job)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(true),
        }
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
    let mut rows = RowWriter::new();
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rows.next_job(&queue) {
                Some(job) => job,
                None => {
                    rows.finish();
                    return;
                }
            },
        };
        match job {
            Job::Run(f) => {
                // It may write to redb, after every row queued before it.
                rows.finish();
                f()
            }
            Job::Committed { db, bytes } => {
                rows.write(db, Some(bytes), Vec::new(), queue.idle());
            }
            Job::Append(first) => {
                let (group, after) = gather(Group::with_append(first), &queue);
                next = after;
                group.flush(&mut rows, &queue);
            }
            Job::State(first) => {
                let (group, after) = gather(Group::with_state(first), &queue);
                next = after;
                group.flush(&mut rows, &queue);
            }
        }
    }
}

/// Writes the state machine's rows and the committed id to redb, and runs
/// the durable checkpoints beside the writer thread.
///
/// A checkpoint is a durable commit of nothing: it writes out every page
/// the non-durable commits before it left in memory, and fsyncs. That
/// takes milliseconds (~500 KiB of lease rows under offload load), and on
/// the writer thread the log's next append waited for it: with one client
/// the request behind each checkpoint was the p99. Here a thread of its
/// own runs it, and the log's appends go on; rows that come meanwhile are
/// held (redb has one writer: their transaction would only wait for the
/// checkpoint's) and written as one transaction when it ends.
struct RowWriter {
    checkpoint: Checkpoint,
    /// `None` if its thread could not start: checkpoints run inline.
    background: Option<Background>,
    held: Held,
    /// How long rows wait for more to share their transaction
    /// ([`HOLD_ROWS_FOR`]; zero in tests that write at once).
    hold_for: Duration,
}

/// Rows not written yet: waiting for the running checkpoint to end, or
/// for more rows to share a transaction with.
#[derive(Default)]
struct Held {
    db: Option<Arc<Database>>,
    /// The latest committed id (`None` inside: remove it).
    committed: Option<Option<Vec<u8>>>,
    states: Vec<StateJob>,
    /// When the oldest of them came.
    since: Option<Instant>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.committed.is_none()
    }

    /// Bytes of the rows in `states`.
    fn bytes(&self) -> usize {
        self.states.iter().map(|s| s.bytes).sum()
    }
}

/// How long applied rows and the committed id may wait before their redb
/// transaction. They are not durable when committed either (see
/// [`Checkpoint`]) and nothing waits for them, but each transaction costs
/// the writer thread: with few clients a put's rows had one of their own
/// (30 % of the log writer's CPU at 4 clients), now the rows of the puts
/// within this time share one. A later append's group writes them once
/// the time is up; an idle writer wakes for them.
const HOLD_ROWS_FOR: Duration = Duration::from_millis(5);
/// Bytes of rows written at once however soon (claims requests bring
/// ~20 KB each).
const HOLD_ROWS_BYTES: usize = 256 * 1024;

/// How often the writer, idle but holding rows whose time is up, looks
/// whether the running checkpoint has ended.
const HELD_POLL: Duration = Duration::from_micros(250);

impl RowWriter {
    fn new() -> RowWriter {
        RowWriter {
            hold_for: HOLD_ROWS_FOR,
            ..RowWriter::with_checkpoint(|db| write_group(db, None, true))
        }
    }

    /// `durable_commit` is what the checkpoint thread runs (tests gate it).
    fn with_checkpoint(
        durable_commit: impl Fn(&Database) -> io::Result<()> + Send + 'static,
    ) -> RowWriter {
        let background = Background::spawn(durable_commit)
            .inspect_err(|e| tracing::warn!("raft log store: checkpoints run inline: {e}"))
            .ok();
        RowWriter {
            checkpoint: Checkpoint::default(),
            background,
            held: Held::default(),
            hold_for: Duration::ZERO,
        }
    }

    fn running(&mut self) -> bool {
        self.background.as_mut().is_some_and(Background::running)
    }

    /// How much longer the held rows may wait: zero once they have
    /// waited [`HOLD_ROWS_FOR`] or are [`HOLD_ROWS_BYTES`].
    fn hold_left(&self) -> Duration {
        if self.held.bytes() >= HOLD_ROWS_BYTES {
            return Duration::ZERO;
        }
        let waited = self.held.since.map_or(Duration::MAX, |s| s.elapsed());
        self.hold_for.saturating_sub(waited)
    }

    /// The next job. While rows are held, it also wakes when their time
    /// is up, to write them, and from then on every [`HELD_POLL`] while a
    /// checkpoint runs, to see whether it ended.
    fn next_job(&mut self, queue: &Queue) -> Option<Job> {
        while !self.held.is_empty() {
            let left = self.hold_left();
            let wait = if !left.is_zero() {
                left
            } else if self.running() {
                HELD_POLL
            } else {
                self.write_held(queue.idle());
                continue;
            };
            match queue.recv_timeout(wait) {
                Ok(job) => return Some(job),
                Err(true) => return None,
                Err(false) => {}
            }
        }
        queue.recv()
    }

    /// Writes (or holds, while a checkpoint runs) `states` and `committed`.
    fn write(
        &mut self,
        db: Arc<Database>,
        committed: Option<Option<Vec<u8>>>,
        states: Vec<StateJob>,
        idle: bool,
    ) {
        self.held.db = Some(db);
        if committed.is_some() {
            self.held.committed = committed;
        }
        self.held.states.extend(states);
        self.held.since.get_or_insert_with(Instant::now);
        if self.hold_left().is_zero() && !self.running() {
            self.write_held(idle);
        }
    }

    /// Waits for the running checkpoint, then writes what is held.
    fn finish(&mut self) {
        if let Some(background) = &mut self.background {
            background.wait();
        }
        self.write_held(true);
    }

    fn write_held(&mut self, idle: bool) {
        let bytes = self.held.bytes();
        let Held {
            db,
            committed,
            states,
            ..
        } = std::mem::take(&mut self.held);
        let Some(db) = db else { return };
        let due = self.checkpoint.due(bytes, idle);
        let in_background = due && self.background.is_some();
        let mut state_error: Option<String> = None;
        let (rows, on_commit): (Vec<_>, Vec<_>) = states
            .into_iter()
            .map(|s| ((s.rows, s.failed), s.on_commit))
            .unzip();
        let res = write_txn(
            &db,
            committed.as_ref().map(|c| c.as_deref()),
            due && !in_background,
            |txn| {
                for (rows, failed) in rows {
                    if let Err(e) = rows(txn) {
                        let msg = e.to_string();
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                        state_error = Some(msg);
                        return Err(e);
                    }
                }
                Ok(())
            },
        );
        if let (Err(e), None) = (&res, &state_error) {
            tracing::warn!("raft log store: save committed: {e}");
        }
        if res.is_ok() {
            for f in on_commit {
                f();
            }
            if in_background {
                if let Some(background) = &mut self.background {
                    background.start(db);
                }
            }
        }
    }
}

/// The checkpoint thread: makes everything committed so far durable.
struct Background {
    start: SyncSender<Arc<Database>>,
    done: Receiver<io::Result<()>>,
    running: bool,
}

impl Background {
    fn spawn(
        durable_commit: impl Fn(&Database) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Background> {
        let (start, jobs) = mpsc::sync_channel::<Arc<Database>>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cairn-raft-checkpoint".into())
            // Ends when the writer thread drops `start`.
            .spawn(move || {
                // Rows held meanwhile wait for it, but no request does.
                crate::thread_priority::yield_to_requests();
                for db in jobs {
                    let res = durable_commit(&db);
                    // Holds no database between checkpoints.
                    drop(db);
                    if done_tx.send(res).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| ctx("spawn checkpoint thread", e))?;
        Ok(Background {
            start,
            done,
            running: false,
        })
    }

    fn start(&mut self, db: Arc<Database>) {
        match self.start.send(db) {
            Ok(()) => self.running = true,
            Err(_) => tracing::warn!("raft log store: checkpoint thread has stopped"),
        }
    }

    /// Whether a checkpoint still runs (reports one that ended).
    fn running(&mut self) -> bool {
        if self.running {
            match self.done.try_recv() {
                Ok(res) => self.ended(res),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.running = false,
            }
        }
        self.running
    }

    fn wait(&mut self) {
        if self.running {
            match self.done.recv() {
                Ok(res) => self.ended(res),
                Err(_) => self.running = false,
            }
        }
    }

    fn ended(&mut self, res: io::Result<()>) {
        self.running = false;
        if let Err(e) = res {
            // The next checkpoint makes the same rows durable.
            tracing::warn!("raft log store: checkpoint: {e}");
        }
    }
}

/// When the state machine's rows were last made durable.
///
/// They are committed without fsync: the log's segment files are what a
/// restart recovers from (it re-applies the log after the state machine's
/// last durable row). Every [`CHECKPOINT_INTERVAL`], or sooner once
/// [`CHECKPOINT_BYTES`] of rows were committed since the last and no job
/// waits, a checkpoint makes everything committed durable ([`RowWriter`]
/// runs it on its own thread). That bounds the re-apply after a crash, and
/// lets redb reuse the pages the non-durable commits freed (it cannot
/// before a durable commit, so the file would grow). It costs one redb
/// fsync per checkpoint, after the log's own fsync of the rows' entries:
/// the state made durable never covers an entry the log does not hold
/// durably.
///
/// Why a byte bound: a checkpoint writes out every page the non-durable
/// commits left in memory. Under `CanOffload` of 1,000 keys (~20 KB of
/// lease rows per request) half a second of rows took 10–25 ms to write,
/// and rows held behind it wait that long (and with ext4's ordered
/// journal, the log's fsyncs beside it slow down). Smaller is better for
/// the log's fsyncs on a disk the members share: 1-client offload p99
/// was 3.8–3.9 ms with 2 MiB against 2.5–2.7 with 512 KiB (four pairs),
/// and 2.33–3.12 (mean 2.62) with 128 KiB against 2.43–3.04 (mean 2.72)
/// over eight (BENCHMARKS.md, session 18). Why only when idle:
/// under a steady stream of small writes (puts at 256 clients) the writer
/// is never idle, and a checkpoint every few dozen milliseconds cost those
/// rows throughput; the interval bounds them.
struct Checkpoint {
    last: std::time::Instant,
    /// Row bytes committed since the last durable commit.
    bytes: usize,
}

/// How often, at the longest, the state machine's rows are made durable;
/// see [`Checkpoint`].
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
/// Row bytes after which the next commit is made durable, however soon.
const CHECKPOINT_BYTES: usize = 128 * 1024;

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
    fn flush(self, rows: &mut RowWriter, queue: &Queue) {
        let db = self.db();
        let appended_to = self.appends.first().map(|a| a.wal.clone());
        if let Some(wal) = appended_to.clone() {
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
        if let Some(db) = db {
            let committed = self.committed.map(|(_, c)| c);
            rows.write(db, committed, self.states, queue.idle());
        }
        // Zeros for the next appends while nothing waits, so that an
        // append under light load rarely writes them itself.
        if let Some(wal) = appended_to {
            if queue.idle() {
                if let Err(e) = wal.preallocate_ahead() {
                    tracing::warn!("raft log store: preallocating the log failed: {e}");
                }
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
    let started = std::time::Instant::now();
    let committed = txn.commit().map_err(|e| ctx("state rows: commit", e));
    let histogram = if durable {
        &crate::metrics::BACKEND_CHECKPOINT
    } else {
        &crate::metrics::BACKEND_COMMIT
    };
    histogram.observe(started.elapsed());
    committed
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use redb::{ReadableDatabase, TableDefinition};

    use super::*;

    const ROWS: TableDefinition<&str, &str> = TableDefinition::new("rows");

    /// A state job writing `key`, and a flag its `on_commit` sets.
    fn row(db: &Arc<Database>, key: &'static str) -> (StateJob, Arc<AtomicBool>) {
        let committed = Arc::new(AtomicBool::new(false));
        let flag = committed.clone();
        let job = StateJob {
            db: db.clone(),
            rows: Box::new(move |txn| {
                let mut t = txn.open_table(ROWS).map_err(io::Error::other)?;
                t.insert(key, "v").map_err(io::Error::other)?;
                Ok(())
            }),
            bytes: 10,
            failed: Arc::default(),
            on_commit: Box::new(move || flag.store(true, Ordering::SeqCst)),
        };
        (job, committed)
    }

    fn has(db: &Database, key: &str) -> bool {
        let read = db.begin_read().unwrap();
        match read.open_table(ROWS) {
            Ok(t) => t.get(key).unwrap().is_some(),
            Err(_) => false,
        }
    }

    /// A database and a row writer whose next commit is a checkpoint that
    /// waits for the test's word (sent on the returned sender).
    fn gated_writer() -> (
        tempfile::TempDir,
        Arc<Database>,
        RowWriter,
        mpsc::Sender<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let (go, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let mut rows = RowWriter::with_checkpoint(move |db| {
            gate.lock().unwrap().recv().ok();
            write_group(db, None, true)
        });
        rows.checkpoint.last -= CHECKPOINT_INTERVAL;
        (dir, db, rows, go)
    }

    /// A job queue and its sending end.
    fn queue() -> (SyncSender<Job>, Queue) {
        let (tx, rx) = mpsc::sync_channel(4);
        let queue = Queue {
            rx,
            queued: Arc::default(),
        };
        (tx, queue)
    }

    #[test]
    fn rows_that_come_during_a_checkpoint_are_held_then_written_in_one_go() {
        let (_dir, db, mut rows, go) = gated_writer();
        let (a, a_done) = row(&db, "a");
        rows.write(db.clone(), None, vec![a], true);
        assert!(a_done.load(Ordering::SeqCst) && has(&db, "a"));
        assert!(rows.running(), "the due checkpoint runs beside");

        let (b, b_done) = row(&db, "b");
        rows.write(db.clone(), Some(Some(b"7".to_vec())), vec![b], true);
        assert!(!b_done.load(Ordering::SeqCst) && !has(&db, "b"), "held");

        // A job queued meanwhile is taken at once, checkpoint or not.
        let (tx, queue) = queue();
        tx.send(Job::Run(Box::new(|| {}))).unwrap();
        assert!(matches!(rows.next_job(&queue), Some(Job::Run(_))));
        assert!(!b_done.load(Ordering::SeqCst));

        go.send(()).unwrap();
        rows.finish();
        assert!(!rows.running());
        assert!(b_done.load(Ordering::SeqCst) && has(&db, "b"));
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META_TABLE).unwrap();
        assert_eq!(meta.get(KEY_COMMITTED).unwrap().unwrap().value(), b"7");
    }

    #[test]
    fn an_idle_writer_writes_held_rows_once_the_checkpoint_ends() {
        let (_dir, db, mut rows, go) = gated_writer();
        let (a, _) = row(&db, "a");
        rows.write(db.clone(), None, vec![a], true);
        let (b, b_done) = row(&db, "b");
        rows.write(db.clone(), None, vec![b], true);
        let (tx, queue) = queue();
        go.send(()).unwrap();
        // No job comes; the writer polls, writes the held rows, and ends
        // when the queue closes.
        let closer = std::thread::spawn(move || {
            while !b_done.load(Ordering::SeqCst) {
                std::thread::sleep(HELD_POLL);
            }
            drop(tx);
        });
        assert!(rows.next_job(&queue).is_none());
        closer.join().unwrap();
        assert!(has(&db, "b"));
    }

    /// A row writer that holds rows for `hold_for` (no checkpoint due
    /// before the interval).
    fn holding_writer(hold_for: Duration) -> (tempfile::TempDir, Arc<Database>, RowWriter) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        let mut rows = RowWriter::with_checkpoint(|db| write_group(db, None, true));
        rows.hold_for = hold_for;
        (dir, db, rows)
    }

    #[test]
    fn rows_wait_for_company_and_an_idle_writer_writes_them_when_time_is_up() {
        let (_dir, db, mut rows) = holding_writer(Duration::from_millis(30));
        let (a, a_done) = row(&db, "a");
        rows.write(db.clone(), None, vec![a], true);
        let (b, b_done) = row(&db, "b");
        rows.write(db.clone(), Some(Some(b"9".to_vec())), vec![b], true);
        assert!(!a_done.load(Ordering::SeqCst) && !has(&db, "a"), "held");
        assert!(!b_done.load(Ordering::SeqCst));
        // No job comes: the writer wakes when the hold is over, writes
        // both, and ends when the queue closes.
        let (tx, queue) = queue();
        let started = Instant::now();
        let closer = std::thread::spawn(move || {
            while !b_done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(tx);
        });
        assert!(rows.next_job(&queue).is_none());
        closer.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "did not wait on"
        );
        assert!(a_done.load(Ordering::SeqCst) && has(&db, "a") && has(&db, "b"));
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META_TABLE).unwrap();
        assert_eq!(meta.get(KEY_COMMITTED).unwrap().unwrap().value(), b"9");
    }

    #[test]
    fn held_rows_go_with_the_first_write_after_their_time_or_past_the_byte_bound() {
        let (_dir, db, mut rows) = holding_writer(Duration::from_millis(20));
        let (a, a_done) = row(&db, "a");
        rows.write(db.clone(), None, vec![a], true);
        assert!(!a_done.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(25));
        let (b, b_done) = row(&db, "b");
        rows.write(db.clone(), None, vec![b], true);
        assert!(a_done.load(Ordering::SeqCst) && b_done.load(Ordering::SeqCst));
        assert!(has(&db, "a") && has(&db, "b"));

        // Enough bytes are written at once, however soon.
        let (mut big, big_done) = row(&db, "big");
        big.bytes = HOLD_ROWS_BYTES;
        rows.write(db.clone(), None, vec![big], true);
        assert!(big_done.load(Ordering::SeqCst) && has(&db, "big"));
    }

    #[test]
    fn a_run_job_writes_held_rows_first() {
        let (_dir, db, mut rows) = holding_writer(Duration::from_secs(60));
        let (a, a_done) = row(&db, "a");
        rows.write(db.clone(), None, vec![a], true);
        assert!(!a_done.load(Ordering::SeqCst));
        // What `run` does with a `Job::Run` (snapshot builds, purges).
        rows.finish();
        assert!(a_done.load(Ordering::SeqCst) && has(&db, "a"));
    }

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
