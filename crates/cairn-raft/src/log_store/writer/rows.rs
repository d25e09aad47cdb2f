//! The row thread: writes the state machine's rows and the committed id
//! to redb, beside the log's writer thread.
//!
//! Why a thread of its own: a redb commit of held rows takes 0.1–1 ms of
//! CPU (more when the thread is preempted on a busy machine), and on the
//! log's thread the next append waited behind it. Under 1-client
//! `CanOffload` of 1,000 keys, 4–5 % of the leader's row commits took over
//! 3.2 ms, each one the latency of the request whose append came then.
//! Here appends and their fsyncs go on while rows are committed.
//!
//! Order is kept: every row job reaches this thread through the log's
//! queue, which forwards it only after writing and syncing every append
//! queued before it, so rows are never written ahead of the entries they
//! come from, and a checkpoint never makes a state durable that the log
//! does not hold. A `Run` job (vote, truncation, purge, snapshot build)
//! runs here after every row before it, while the log's thread waits for
//! it: it stays ordered with both.

use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability};

use super::queue::{self, Queue, Sender};
use super::{ctx, StateJob, KEY_COMMITTED, META_TABLE, QUEUE_JOBS};

/// What the log's writer thread hands on to the row thread, in its order.
pub(super) enum RowJob {
    /// The rows the log's thread held, written in one transaction.
    Rows {
        db: Arc<Database>,
        /// The latest committed log id, if one came (`None` inside:
        /// remove it).
        committed: Option<Option<Vec<u8>>>,
        states: Vec<StateJob>,
    },
    /// Anything else, run after every row before it.
    Run(Box<dyn FnOnce() + Send>),
}

impl queue::Wake for RowJob {
    fn is_wake(&self) -> bool {
        false
    }
}

/// The log's writer thread's handle on the row thread.
pub(super) struct RowSender {
    tx: Sender<RowJob>,
}

impl RowSender {
    /// Starts the row thread. `log_queued` counts the jobs waiting for the
    /// log's thread: a checkpoint is due early only when neither waits.
    pub(super) fn spawn(log_queued: Arc<AtomicUsize>) -> io::Result<RowSender> {
        let (tx, queue) = queue::channel::<RowJob>(QUEUE_JOBS, Some(log_queued));
        std::thread::Builder::new()
            .name("cairn-raft-rows".into())
            // Ends when the log's writer thread (the only sender) ends.
            .spawn(move || run(queue))
            .map_err(|e| ctx("spawn raft row thread", e))?;
        Ok(RowSender { tx })
    }

    /// Queues `job`; blocks while the row thread is [`QUEUE_JOBS`] behind
    /// (the log's thread, and so RaftCore, slows down).
    pub(super) fn send(&self, job: RowJob) {
        if let Err(job) = self.tx.submit(job) {
            // Only a panic ends the row thread early: say so where the
            // state machine looks (a `Run` job's waiter sees its sender
            // dropped).
            if let RowJob::Rows { states, .. } = job {
                for s in states {
                    *s.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some("the row thread has stopped".into());
                }
            }
            tracing::error!("raft log store: the row thread has stopped");
        }
    }

    /// Runs `job` on the row thread after every row sent before, and
    /// waits for it.
    pub(super) fn run_and_wait(&self, job: Box<dyn FnOnce() + Send>) {
        let (done_tx, done_rx) = mpsc::sync_channel::<()>(1);
        self.send(RowJob::Run(Box::new(move || {
            job();
            let _ = done_tx.send(());
        })));
        // An error: the thread dropped the job; its waiter is told so.
        let _ = done_rx.recv();
    }
}

fn run(queue: Queue<RowJob>) {
    let mut rows = RowWriter::new();
    while let Some(job) = rows.next_job(&queue) {
        match job {
            RowJob::Run(f) => {
                // It may write to redb, after every row queued before it.
                rows.finish();
                f()
            }
            RowJob::Rows {
                db,
                committed,
                states,
            } => rows.write(db, committed, states, queue.idle()),
        }
    }
    rows.finish();
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
}

/// Rows not written yet: waiting for the running checkpoint to end.
#[derive(Default)]
struct Held {
    db: Option<Arc<Database>>,
    /// The latest committed id (`None` inside: remove it).
    committed: Option<Option<Vec<u8>>>,
    states: Vec<StateJob>,
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

/// How often the row thread, idle but holding rows, looks whether the
/// running checkpoint has ended.
const HELD_POLL: Duration = Duration::from_micros(250);

impl RowWriter {
    fn new() -> RowWriter {
        RowWriter::with_checkpoint(|db| write_group(db, None, true))
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
        }
    }

    fn running(&mut self) -> bool {
        self.background.as_mut().is_some_and(Background::running)
    }

    /// The next job. While rows are held, it also wakes every
    /// [`HELD_POLL`] to see whether the checkpoint ended, and then writes
    /// them.
    fn next_job(&mut self, queue: &Queue<RowJob>) -> Option<RowJob> {
        while !self.held.is_empty() {
            if !self.running() {
                self.write_held(queue.idle());
                continue;
            }
            match queue.recv_timeout(HELD_POLL) {
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
        if !self.running() {
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

/// One transaction with, if given, the committed log id (`None` inside:
/// remove it); fsynced when `durable` is set.
pub(in crate::log_store) fn write_group(
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
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

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
    fn queue() -> (Sender<RowJob>, Queue<RowJob>) {
        queue::channel(4, None)
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
        assert!(tx.submit(RowJob::Run(Box::new(|| {}))).is_ok());
        assert!(matches!(rows.next_job(&queue), Some(RowJob::Run(_))));
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
