//! A writer thread's end of its job queue, and the side queue of jobs that
//! do not wake it.
//!
//! Why a side queue: under few clients every put handed the log's writer
//! thread three jobs (its entries, the new committed id, the state rows
//! applied from it), and each woke the thread from sleep. On the benchmark
//! VM a context switch costs ~25 µs of CPU; a 1-client put cost 19 of them
//! across the three members (541 µs of server CPU), the log thread 3–4.6
//! on each member. Only the entries need the thread soon (a client waits
//! for their fsync); the committed id and the rows may wait, and nothing
//! waits for them. So they go to the side queue
//! ([`Sender::submit_lazy`]), and the thread takes them when it wakes for
//! something else, or after [`super::HOLD_ROWS_FOR`].
//!
//! Order is kept: a side job records how many channel jobs were submitted
//! before it, and comes out after exactly those ([`Queue::pop`]), so rows
//! are never taken ahead of the entries they were applied from.
//!
//! A side job never waits forever: a thread that goes to sleep with no
//! deadline first says so ([`Side::asleep`]), and a job put on the side
//! queue then wakes it with a [`Wake`] job on the channel.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most jobs on the side queue; past it jobs take the channel (which
/// blocks the sender when full, as it should).
pub(super) const SIDE_JOBS: usize = 1024;

/// A job that only wakes the thread.
pub(super) trait Wake {
    fn is_wake(&self) -> bool;
}

/// Jobs submitted without waking the thread, each with the number of
/// channel jobs submitted before it.
pub(super) struct Side<J> {
    jobs: Mutex<VecDeque<(u64, J)>>,
    /// Channel jobs submitted so far: counted before each is sent.
    submitted: AtomicU64,
    /// Set while the thread sleeps with no deadline.
    asleep: AtomicBool,
}

impl<J> Default for Side<J> {
    fn default() -> Self {
        Side {
            jobs: Mutex::new(VecDeque::new()),
            submitted: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
        }
    }
}

impl<J> Side<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, J)>> {
        // Pushes and pops leave the queue consistent: recover from a panic
        // elsewhere rather than propagate it.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending end: channel jobs and side jobs.
pub(super) struct Sender<J> {
    tx: SyncSender<J>,
    /// Channel jobs submitted and not yet taken.
    queued: Arc<AtomicUsize>,
    side: Arc<Side<J>>,
}

impl<J> Clone for Sender<J> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            queued: self.queued.clone(),
            side: self.side.clone(),
        }
    }
}

impl<J: Wake> Sender<J> {
    /// Queues `job` on the channel; blocks while the channel is full. Once
    /// the thread is gone, hands the job back.
    pub fn submit(&self, job: J) -> Result<(), J> {
        // Counted before it is sent: a side job submitted after this call
        // began must come out after this job.
        self.side.submitted.fetch_add(1, Ordering::SeqCst);
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.send(job).map_err(|mpsc::SendError(job)| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            job
        })
    }

    /// Queues `job` without waking the thread unless it sleeps with no
    /// deadline (then `wake()` goes on the channel); after [`SIDE_JOBS`],
    /// on the channel instead. An error: the thread is gone.
    pub fn submit_lazy(&self, job: J, wake: impl FnOnce() -> J) -> Result<(), J> {
        let mut jobs = self.side.lock();
        if jobs.len() >= SIDE_JOBS {
            drop(jobs);
            return self.submit(job);
        }
        jobs.push_back((self.side.submitted.load(Ordering::SeqCst), job));
        drop(jobs);
        if self.side.asleep.load(Ordering::SeqCst) {
            return self.submit(wake());
        }
        Ok(())
    }
}

/// A thread's end of a job queue.
pub(super) struct Queue<J> {
    rx: Receiver<J>,
    /// Channel jobs sent and not yet taken.
    queued: Arc<AtomicUsize>,
    /// The queue of the thread that feeds this one, if any: this one is
    /// idle only when that one is too.
    upstream: Option<Arc<AtomicUsize>>,
    side: Arc<Side<J>>,
    /// Channel jobs taken from the channel and handed out (or wakes).
    taken: Cell<u64>,
    /// A channel job taken from the channel but not handed out yet: side
    /// jobs submitted before it go first.
    held: RefCell<Option<J>>,
}

/// A channel and both its ends.
pub(super) fn channel<J>(
    bound: usize,
    upstream: Option<Arc<AtomicUsize>>,
) -> (Sender<J>, Queue<J>) {
    let (tx, rx) = mpsc::sync_channel(bound);
    let queued = Arc::new(AtomicUsize::new(0));
    let side = Arc::new(Side::default());
    let sender = Sender {
        tx,
        queued: queued.clone(),
        side: side.clone(),
    };
    let queue = Queue {
        rx,
        queued,
        upstream,
        side,
        taken: Cell::new(0),
        held: RefCell::new(None),
    };
    (sender, queue)
}

impl<J: Wake> Queue<J> {
    /// The channel's job counter, for a downstream queue's [`Queue::idle`].
    pub fn queued(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
    }

    /// The side job due before the held job (or before any job still on
    /// the channel, when none is held), if any.
    fn ready_side(&self, jobs: &mut VecDeque<(u64, J)>) -> Option<J> {
        match jobs.front() {
            Some((before, _)) if *before <= self.taken.get() => jobs.pop_front().map(|(_, j)| j),
            _ => None,
        }
    }

    /// The next job among those already taken off the channel and the side
    /// queue, in submission order; `None` if the next one is still on the
    /// channel.
    fn pop(&self) -> Option<J> {
        if let Some(j) = self.ready_side(&mut self.side.lock()) {
            return Some(j);
        }
        let held = self.held.borrow_mut().take()?;
        self.taken.set(self.taken.get() + 1);
        Some(held)
    }

    /// Takes a job off the channel: held until the side jobs before it are
    /// out; a wake only counts.
    fn took(&self, job: J) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if job.is_wake() {
            self.taken.set(self.taken.get() + 1);
        } else {
            *self.held.borrow_mut() = Some(job);
        }
    }

    /// The next job, sleeping as long as it takes; `None` once every
    /// sender is gone.
    pub fn recv(&self) -> Option<J> {
        loop {
            if let Some(j) = self.pop() {
                return Some(j);
            }
            // Say so before looking once more: a side job put after the
            // look then sees it and wakes this thread.
            self.side.asleep.store(true, Ordering::SeqCst);
            if self.ready_side_waiting() {
                self.side.asleep.store(false, Ordering::SeqCst);
                continue;
            }
            let got = self.rx.recv();
            self.side.asleep.store(false, Ordering::SeqCst);
            self.took(got.ok()?);
        }
    }

    fn ready_side_waiting(&self) -> bool {
        self.side
            .lock()
            .front()
            .is_some_and(|(before, _)| *before <= self.taken.get())
    }

    /// The next job if one is due within `timeout` (side jobs come out at
    /// its end, without waking the thread before); `Err(true)` once every
    /// sender is gone.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<J, bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(j) = self.pop() {
                return Ok(j);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(job) => self.took(job),
                Err(mpsc::RecvTimeoutError::Timeout) => return self.pop().ok_or(false),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(true),
            }
        }
    }

    /// The next job if one is there now.
    pub fn try_recv(&self) -> Option<J> {
        loop {
            if let Some(j) = self.pop() {
                return Some(j);
            }
            self.took(self.rx.try_recv().ok()?);
        }
    }

    /// Whether no job waits: a durable commit now holds up nothing.
    pub fn idle(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
            && self.held.borrow().is_none()
            && self.side.lock().is_empty()
            && self
                .upstream
                .as_ref()
                .is_none_or(|u| u.load(Ordering::Acquire) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum T {
        Ch(u32),
        Side(u32),
        Wake,
    }

    impl Wake for T {
        fn is_wake(&self) -> bool {
            *self == T::Wake
        }
    }

    fn drain(q: &Queue<T>) -> Vec<T> {
        std::iter::from_fn(|| q.try_recv()).collect()
    }

    /// Side jobs come out after the channel jobs submitted before them and
    /// before those submitted after, however the two interleave.
    #[test]
    fn side_jobs_keep_their_place_among_channel_jobs() {
        let (tx, q) = channel::<T>(16, None);
        tx.submit_lazy(T::Side(0), || T::Wake).unwrap();
        tx.submit(T::Ch(1)).unwrap();
        tx.submit(T::Ch(2)).unwrap();
        tx.submit_lazy(T::Side(3), || T::Wake).unwrap();
        tx.submit_lazy(T::Side(4), || T::Wake).unwrap();
        tx.submit(T::Ch(5)).unwrap();
        assert!(!q.idle());
        assert_eq!(
            drain(&q),
            [
                T::Side(0),
                T::Ch(1),
                T::Ch(2),
                T::Side(3),
                T::Side(4),
                T::Ch(5)
            ]
        );
        assert!(q.idle());

        // Taking the channel job first (a recv that saw it) still lets the
        // side job submitted before it out first.
        tx.submit_lazy(T::Side(6), || T::Wake).unwrap();
        tx.submit(T::Ch(7)).unwrap();
        assert_eq!(q.recv(), Some(T::Side(6)));
        assert_eq!(q.recv(), Some(T::Ch(7)));
    }

    /// A side job does not wake a thread that sleeps with a deadline: it
    /// comes out at the deadline. One that sleeps without one is woken.
    #[test]
    fn a_side_job_wakes_only_a_thread_asleep_without_a_deadline() {
        let (tx, q) = channel::<T>(16, None);
        let sender = tx.clone();
        let light = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.submit_lazy(T::Side(1), || T::Wake).unwrap();
        });
        let started = Instant::now();
        assert_eq!(q.recv_timeout(Duration::from_millis(200)), Ok(T::Side(1)));
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "taken at the deadline, not woken"
        );
        light.join().unwrap();
        assert_eq!(q.recv_timeout(Duration::from_millis(1)), Err(false));

        let sender = tx.clone();
        let deep = std::thread::spawn(move || {
            // Until the queue sleeps without a deadline.
            while !sender.side.asleep.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            sender.submit_lazy(T::Side(2), || T::Wake).unwrap();
        });
        assert_eq!(q.recv(), Some(T::Side(2)));
        deep.join().unwrap();
        assert!(q.idle(), "the wake job was counted, not handed out");
        drop(tx);
        assert_eq!(q.recv(), None);
    }

    /// Past the side queue's bound, jobs take the channel, in order.
    #[test]
    fn a_full_side_queue_sends_on_the_channel() {
        let (tx, q) = channel::<T>(SIDE_JOBS + 8, None);
        for i in 0..SIDE_JOBS as u32 + 2 {
            tx.submit_lazy(T::Side(i), || T::Wake).unwrap();
        }
        assert_eq!(tx.side.lock().len(), SIDE_JOBS);
        assert_eq!(tx.queued.load(Ordering::Acquire), 2);
        let got = drain(&q);
        assert_eq!(got.len(), SIDE_JOBS + 2);
        assert!(got.iter().enumerate().all(|(i, t)| *t == T::Side(i as u32)));
    }
}
