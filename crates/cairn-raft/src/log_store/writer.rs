//! The log's writer thread, with group commit.
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
//! and so does `save_committed`: they enter the same queue, wait up to
//! [`HOLD_ROWS_FOR`] for company, and go on to the row thread ([`rows`])
//! together, never before the appends queued ahead of them are synced.
//! The row thread folds them into one redb transaction, so the rows are
//! never written ahead of the entries they come from, and appends never
//! wait for a redb commit. Applying a batch never waits for redb's single
//! writer lock nor costs a transaction of its own. The rows are committed
//! without fsync; see `rows::Checkpoint` for when they are made durable.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::oneshot;

use queue::{Queue, Sender};
use rows::{RowJob, RowSender};

use super::unflushed::Unflushed;
use super::wal::{Record, Wal};
use super::{ctx, KEY_COMMITTED, META_TABLE};
use crate::types::{IOFlushed, LogId};
pub(in crate::log_store) use rows::write_group;

mod queue;
mod rows;

/// How many writes may wait for the writer thread. Appends are not awaited,
/// so this is what bounds them: when the disk falls this far behind, the
/// submitting task blocks until the writer catches up (backpressure on
/// RaftCore, which is what should slow down).
const QUEUE_JOBS: usize = 1024;
/// Most jobs gathered into one group of appends (written with one write),
/// the row jobs taken on the way included.
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
    /// The latest committed log id, written without fsync in the
    /// transaction of the rows held with it.
    Committed {
        db: Arc<Database>,
        bytes: Option<Vec<u8>>,
    },
    /// State machine rows, written in the next transaction.
    State(StateJob),
    /// Anything else, run as is, in order: after every append and row
    /// queued before it, and before any queued after it.
    Run(Box<dyn FnOnce() + Send>),
    /// Wakes the thread to take the side queue's jobs (see [`queue`]).
    Wake,
}

impl queue::Wake for Job {
    fn is_wake(&self) -> bool {
        matches!(self, Job::Wake)
    }
}

/// Writes a batch's rows into an open transaction.
pub type StateRows = Box<dyn FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send>;

pub(super) struct StateJob {
    db: Arc<Database>,
    rows: StateRows,
    /// Bytes of `rows`, to pace durable commits (`rows::Checkpoint`).
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
        self.writer.submit_lazy("state rows", job)
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
    tx: Sender<Job>,
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
        let (tx, queue) = queue::channel::<Job>(QUEUE_JOBS, None);
        let rows = RowSender::spawn(queue.queued())?;
        std::thread::Builder::new()
            .name("cairn-raft-log-writer".into())
            // Ends when the LogStore (the only sender) is dropped, and the
            // row thread after it. Jobs own their Arc<Database> and
            // release it when done, so once an awaited write returns these
            // threads hold no reference to it.
            .spawn(move || {
                // A group commit: see the function.
                crate::thread_priority::wake_without_preempting();
                run(queue, rows)
            })
            .map_err(|e| ctx("spawn raft log writer thread", e))?;
        Ok(Writer { tx })
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
        self.tx.submit(job).map_err(|_| stopped(what))
    }

    /// Like [`Writer::submit`], for a job nothing waits for (rows, the
    /// committed id): it does not wake the thread, which takes it with the
    /// next job or within [`HOLD_ROWS_FOR`] (see [`queue`]).
    pub fn submit_lazy(&self, what: &'static str, job: Job) -> io::Result<()> {
        self.tx
            .submit_lazy(job, || Job::Wake)
            .map_err(|_| stopped(what))
    }
}

fn stopped(what: &str) -> io::Error {
    io::Error::other(format!("raft log {what}: writer thread has stopped"))
}

fn run(queue: Queue<Job>, rows: RowSender) {
    let mut next: Option<Job> = None;
    let mut pending = PendingRows::new(HOLD_ROWS_FOR);
    // After appends, until when their rows and committed id are expected
    // on the side queue: sleep until then with a deadline, so that they
    // do not wake this thread (see `queue`).
    let mut expect_rows_until: Option<Instant> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => {
                let now = Instant::now();
                let expected = expect_rows_until
                    .filter(|until| *until > now)
                    .map(|until| until - now);
                match pending.left(now).or(expected) {
                    None => match queue.recv() {
                        Some(job) => job,
                        None => break,
                    },
                    Some(left) => match queue.recv_timeout(left) {
                        Ok(job) => job,
                        Err(gone) => {
                            expect_rows_until = None;
                            pending.send(&rows);
                            if gone {
                                break;
                            }
                            continue;
                        }
                    },
                }
            }
        };
        match job {
            Job::Run(f) => {
                pending.send(&rows);
                rows.run_and_wait(f)
            }
            Job::Committed { db, bytes } => pending.push_committed(db, bytes),
            Job::State(s) => pending.push_state(s),
            Job::Append(first) => {
                let (group, after) = gather(Group::with_append(first), &queue, &mut pending);
                next = after;
                group.flush(&queue);
                expect_rows_until = Some(Instant::now() + HOLD_ROWS_FOR);
            }
            Job::Wake => {}
        }
        if pending.due(Instant::now()) {
            pending.send(&rows);
        }
    }
    pending.send(&rows);
}

/// How long applied rows and the committed id may wait before they go to
/// the row thread. They are not durable when committed either (see
/// `rows::Checkpoint`) and nothing waits for them, but each redb
/// transaction costs CPU: with few clients a put's rows had one of their
/// own (30 % of the log writer's CPU at 4 clients), now the rows of the
/// puts within this time share one; and each hand-over wakes the row
/// thread (at 64 clients, one per group of appends cost ~8 % more server
/// CPU per put). A later job, or the idle log thread, sends them once the
/// time is up.
const HOLD_ROWS_FOR: Duration = Duration::from_millis(5);
/// Bytes of rows sent at once however soon (claims requests bring
/// ~10–20 KB each).
const HOLD_ROWS_BYTES: usize = 256 * 1024;

/// The rows and committed id the log thread keeps until they go to the
/// row thread, as one job.
struct PendingRows {
    db: Option<Arc<Database>>,
    /// The latest committed id (`None` inside: remove it).
    committed: Option<Option<Vec<u8>>>,
    states: Vec<StateJob>,
    /// Bytes of `states`' rows, kept as they come: the bound is checked
    /// after every job.
    bytes: usize,
    /// When the oldest of them came.
    since: Option<Instant>,
    hold_for: Duration,
}

impl PendingRows {
    fn new(hold_for: Duration) -> PendingRows {
        PendingRows {
            db: None,
            committed: None,
            states: Vec::new(),
            bytes: 0,
            since: None,
            hold_for,
        }
    }

    fn push_committed(&mut self, db: Arc<Database>, bytes: Option<Vec<u8>>) {
        self.db = Some(db);
        self.committed = Some(bytes);
        self.since.get_or_insert_with(Instant::now);
    }

    fn push_state(&mut self, s: StateJob) {
        self.db = Some(s.db.clone());
        self.bytes = self.bytes.saturating_add(s.bytes);
        self.states.push(s);
        self.since.get_or_insert_with(Instant::now);
    }

    /// How much longer the held jobs may wait (zero: send them now);
    /// `None` when none are held.
    fn left(&self, now: Instant) -> Option<Duration> {
        let since = self.since?;
        if self.bytes >= HOLD_ROWS_BYTES {
            return Some(Duration::ZERO);
        }
        Some(
            self.hold_for
                .saturating_sub(now.saturating_duration_since(since)),
        )
    }

    fn due(&self, now: Instant) -> bool {
        self.left(now).is_some_and(|left| left.is_zero())
    }

    /// What is held, as one job; `None` when nothing is.
    fn take(&mut self) -> Option<RowJob> {
        self.bytes = 0;
        self.since = None;
        // Every push sets the database: none, nothing held.
        let db = self.db.take()?;
        Some(RowJob::Rows {
            db,
            committed: self.committed.take(),
            states: std::mem::take(&mut self.states),
        })
    }

    /// Hands what is held to the row thread.
    fn send(&mut self, rows: &RowSender) {
        if let Some(job) = self.take() {
            rows.send(job);
        }
    }
}

/// Appends queued back to back, written with one write and one fsync.
#[derive(Default)]
struct Group {
    appends: Vec<Append>,
    /// Row jobs gathered with them (they go to the pending rows).
    jobs: usize,
    bytes: usize,
}

impl Group {
    fn with_append(a: Append) -> Group {
        let mut g = Group::default();
        g.add_append(a);
        g
    }

    fn add_append(&mut self, a: Append) {
        self.bytes += a.rows.iter().map(|(_, b)| b.len()).sum::<usize>();
        self.appends.push(a);
    }

    fn full(&self) -> bool {
        self.appends.len() + self.jobs >= MAX_GROUP_JOBS || self.bytes >= MAX_GROUP_BYTES
    }

    /// The appends' entries in one write and one fsync of the segment file,
    /// then each append's callback.
    fn flush(self, queue: &Queue<Job>) {
        let Some(wal) = self.appends.first().map(|a| a.wal.clone()) else {
            return;
        };
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
        // Zeros for the next appends while nothing waits, so that an
        // append under light load rarely writes them itself.
        if queue.idle() {
            if let Err(e) = wal.preallocate_ahead() {
                tracing::warn!("raft log store: preallocating the log failed: {e}");
            }
        }
    }
}

/// Adds the jobs queued right behind the group's first, up to the group
/// limits (row jobs among them to `pending`: they go on only after the
/// group's appends are synced); returns the group and the first job that
/// could not join.
fn gather(mut group: Group, queue: &Queue<Job>, pending: &mut PendingRows) -> (Group, Option<Job>) {
    while !group.full() {
        match queue.try_recv() {
            Some(Job::Append(a)) => {
                group.add_append(a);
                continue;
            }
            Some(Job::Committed { db, bytes }) => pending.push_committed(db, bytes),
            Some(Job::State(s)) => pending.push_state(s),
            Some(other) => return (group, Some(other)),
            None => break,
        }
        group.jobs += 1;
    }
    (group, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Arc<Database>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
        (dir, db)
    }

    fn state_job(db: &Arc<Database>, bytes: usize) -> StateJob {
        StateJob {
            db: db.clone(),
            rows: Box::new(|_| Ok(())),
            bytes,
            failed: Arc::default(),
            on_commit: Box::new(|| {}),
        }
    }

    /// Rows wait for company until their time is up, or go at once past
    /// the byte bound; taking them starts over.
    #[test]
    fn pending_rows_go_when_their_time_is_up_or_past_the_byte_bound() {
        let (_dir, db) = db();
        let hold = Duration::from_millis(5);
        let mut pending = PendingRows::new(hold);
        let t0 = Instant::now();
        assert_eq!(pending.left(t0), None, "nothing held: no deadline");
        assert!(!pending.due(t0));

        pending.push_committed(db.clone(), None);
        let since = pending.since.unwrap();
        assert_eq!(pending.left(since), Some(hold));
        pending.push_state(state_job(&db, 100));
        assert!(!pending.due(since + Duration::from_millis(4)));
        assert_eq!(
            pending.left(since + Duration::from_millis(4)),
            Some(Duration::from_millis(1)),
            "the oldest job's time counts"
        );
        assert!(pending.due(since + hold));
        let Some(RowJob::Rows {
            committed, states, ..
        }) = pending.take()
        else {
            panic!("the held rows go as one job");
        };
        assert_eq!(
            (committed, states.len()),
            (Some(None), 1),
            "both go together"
        );
        assert_eq!(pending.left(since + hold), None);

        pending.push_state(state_job(&db, HOLD_ROWS_BYTES - 1));
        assert!(!pending.due(Instant::now()));
        pending.push_state(state_job(&db, 1));
        assert!(pending.due(Instant::now()), "the byte bound: at once");
        assert!(pending.take().is_some());
        assert_eq!(pending.bytes, 0);
        assert!(pending.take().is_none(), "nothing held: no job");
    }
}
