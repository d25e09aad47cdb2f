//! The log's one writer thread, with group commit.
//!
//! Every write is a job taken from one FIFO queue, so writes reach the disk
//! in the order openraft issued them. `append` does not wait for its job
//! (see [`super::unflushed`]); when the writer finds several appends
//! queued — RaftCore submits one per batch it accepted, a follower one per
//! AppendEntries — it writes them, and any queued `committed` update, in
//! **one** transaction with one fsync, then reports each append flushed.
//! Without this, non-blocking appends would cost one fsync each.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::unflushed::Unflushed;
use super::{ctx, KEY_COMMITTED, LOG_TABLE, META_TABLE};
use crate::types::{IOFlushed, LogId};

/// How many writes may wait for the writer thread. Appends are not awaited,
/// so this is what bounds them: when the disk falls this far behind, the
/// submitting task blocks until the writer catches up (backpressure on
/// RaftCore, which is what should slow down).
const QUEUE_JOBS: usize = 1024;
/// Most appends folded into one transaction.
const MAX_GROUP_APPENDS: usize = 256;
/// Most encoded bytes folded into one transaction (at least one append).
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Entries to write, as openraft handed them to one `append` call.
pub(super) struct Append {
    pub db: Arc<Database>,
    /// (log index, postcard-encoded entry)
    pub rows: Vec<(u64, Vec<u8>)>,
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
    /// Anything else, run as is, in order.
    Run(Box<dyn FnOnce() + Send>),
}

pub(super) struct Writer {
    tx: SyncSender<Job>,
}

impl Writer {
    pub fn spawn() -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_JOBS);
        std::thread::Builder::new()
            .name("cairn-raft-log-writer".into())
            // Ends when the LogStore (the only sender) is dropped. Jobs own
            // their Arc<Database> and release it when done, so once an
            // awaited write returns this thread holds no reference to it.
            .spawn(move || run(rx))
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
        self.tx
            .send(job)
            .map_err(|_| io::Error::other(format!("raft log {what}: writer thread has stopped")))
    }
}

fn run(rx: Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Run(f) => f(),
            Job::Committed { db, bytes } => {
                if let Err(e) = write_group(&db, &[], Some(bytes.as_deref())) {
                    tracing::warn!("raft log store: save committed: {e}");
                }
            }
            Job::Append(first) => {
                let (group, committed, after) = gather(first, &rx);
                next = after;
                flush_group(group, committed);
            }
        }
    }
}

/// The appends (and latest committed id) queued right behind `first`, up to
/// the group limits; also the first job that could not join, if any.
type Gathered = (Vec<Append>, Option<Option<Vec<u8>>>, Option<Job>);

fn gather(first: Append, rx: &Receiver<Job>) -> Gathered {
    let mut bytes: usize = first.rows.iter().map(|(_, b)| b.len()).sum();
    let mut group = vec![first];
    let mut committed = None;
    while group.len() < MAX_GROUP_APPENDS && bytes < MAX_GROUP_BYTES {
        match rx.try_recv() {
            Ok(Job::Append(a)) => {
                bytes += a.rows.iter().map(|(_, b)| b.len()).sum::<usize>();
                group.push(a);
            }
            Ok(Job::Committed { bytes: c, .. }) => committed = Some(c),
            Ok(other) => return (group, committed, Some(other)),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
        }
    }
    (group, committed, None)
}

fn flush_group(group: Vec<Append>, committed: Option<Option<Vec<u8>>>) {
    let db = group[0].db.clone();
    let rows: Vec<&(u64, Vec<u8>)> = group.iter().flat_map(|a| a.rows.iter()).collect();
    let res = write_group(&db, &rows, committed.as_ref().map(|c| c.as_deref()));
    drop(db);
    for a in group {
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

/// One transaction: the rows (fsynced if any) and, if given, the committed
/// log id (`None` inside: remove it).
fn write_group(
    db: &Database,
    rows: &[&(u64, Vec<u8>)],
    committed: Option<Option<&[u8]>>,
) -> io::Result<()> {
    let mut txn = db
        .begin_write()
        .map_err(|e| ctx("append: begin write", e))?;
    let durability = if rows.is_empty() {
        Durability::None
    } else {
        Durability::Immediate
    };
    txn.set_durability(durability)
        .map_err(|e| ctx("append: set durability", e))?;
    if !rows.is_empty() {
        let mut log = txn
            .open_table(LOG_TABLE)
            .map_err(|e| ctx("append: open raft_log", e))?;
        for (index, bytes) in rows.iter().copied() {
            log.insert(*index, bytes.as_slice())
                .map_err(|e| ctx("append: insert entry", e))?;
        }
    }
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
    txn.commit().map_err(|e| ctx("append: commit", e))
}
