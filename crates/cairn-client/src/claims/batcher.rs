//! `RegisterBatcher`: buffers register entries and sends them as one
//! request once `batch_size` entries are waiting or the first has waited
//! `flush_interval`, from a background task. The queue to the task is
//! bounded (`queue_batches` batches): `register` waits when it is full.
//! `flush()` returns once everything queued before it is acknowledged;
//! `close()` (or dropping the batcher) sends what is pending and stops the
//! task.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::ClaimsError;
use super::types::{RegisterEntry, RegisterStatus, Registered};
use super::ClaimsClient;

/// What the batches sent since the previous flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Register requests sent.
    pub requests: u64,
    pub stored: u64,
    pub already_stored: u64,
    pub leased_by_other: u64,
    pub rejected_full: u64,
    /// Entries the server evicted to make room.
    pub evicted: u64,
    /// Entries of requests that failed (the first error is reported).
    pub failed: u64,
    first_error: Option<String>,
}

impl FlushReport {
    fn add(&mut self, r: &Registered) {
        self.requests += 1;
        self.evicted += r.evicted;
        for s in &r.statuses {
            match s {
                RegisterStatus::Stored => self.stored += 1,
                RegisterStatus::AlreadyStored => self.already_stored += 1,
                RegisterStatus::LeasedByOther => self.leased_by_other += 1,
                RegisterStatus::RejectedFull => self.rejected_full += 1,
            }
        }
    }

    fn fail(&mut self, entries: usize, e: &ClaimsError) {
        self.requests += 1;
        self.failed += entries as u64;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// `Err` if any entry failed, else the counts.
    fn into_result(self) -> Result<FlushReport, ClaimsError> {
        match &self.first_error {
            Some(reason) => Err(ClaimsError::BatchFailed {
                entries: self.failed as usize,
                reason: reason.clone(),
            }),
            None => Ok(self),
        }
    }
}

/// Sends one batch (the claims client's `register`, or a fake in tests).
type Sink = Arc<
    dyn Fn(Vec<RegisterEntry>) -> BoxFuture<'static, Result<Registered, ClaimsError>> + Send + Sync,
>;

enum Msg {
    Entries(Vec<RegisterEntry>),
    Flush(oneshot::Sender<Result<FlushReport, ClaimsError>>),
}

/// Batches `register` calls of one [`ClaimsClient`]. Dropping it stops the
/// task after it has sent what was queued.
pub struct RegisterBatcher {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<Result<FlushReport, ClaimsError>>,
    batch_size: usize,
}

impl std::fmt::Debug for RegisterBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterBatcher")
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl RegisterBatcher {
    pub(crate) fn start(client: ClaimsClient) -> RegisterBatcher {
        let c = &client.config;
        let (batch_size, interval, queue) = (c.batch_size, c.flush_interval, c.queue_batches);
        let sink: Sink = Arc::new(move |batch| {
            let client = client.clone();
            Box::pin(async move { client.register(&batch).await })
        });
        Self::with_sink(sink, batch_size, interval, queue)
    }

    fn with_sink(sink: Sink, batch_size: usize, interval: Duration, queue: usize) -> Self {
        let batch_size = batch_size.clamp(1, super::MAX_KEYS_PER_REQUEST);
        let (tx, rx) = mpsc::channel(queue.max(1));
        let pending = Pending::new(batch_size, interval);
        let task = tokio::spawn(run(sink, rx, pending));
        RegisterBatcher {
            tx,
            task,
            batch_size,
        }
    }

    /// Queue entries; waits only while the queue is full. They are sent
    /// within the flush interval (or at once when a batch fills).
    pub async fn register(&self, entries: Vec<RegisterEntry>) -> Result<(), ClaimsError> {
        let mut entries = entries;
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(self.batch_size));
            self.tx
                .send(Msg::Entries(entries))
                .await
                .map_err(|_| ClaimsError::BatcherClosed)?;
            entries = rest;
        }
        Ok(())
    }

    /// Send what is pending and wait until everything queued before this
    /// call is acknowledged. Reports (and resets) the counts since the
    /// previous flush; `Err(BatchFailed)` if any entry of them failed.
    pub async fn flush(&self) -> Result<FlushReport, ClaimsError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Flush(reply))
            .await
            .map_err(|_| ClaimsError::BatcherClosed)?;
        answer.await.map_err(|_| ClaimsError::BatcherClosed)?
    }

    /// Send what is pending, stop the task, and report what happened since
    /// the last flush.
    pub async fn close(self) -> Result<FlushReport, ClaimsError> {
        drop(self.tx);
        self.task.await.map_err(|_| ClaimsError::BatcherClosed)?
    }
}

/// Entries waiting to be sent, and when they must go.
#[derive(Debug)]
struct Pending {
    batch_size: usize,
    interval: Duration,
    entries: Vec<RegisterEntry>,
    /// When the oldest waiting entry arrived.
    since: Option<Instant>,
}

impl Pending {
    fn new(batch_size: usize, interval: Duration) -> Self {
        Pending {
            batch_size,
            interval,
            entries: Vec::new(),
            since: None,
        }
    }

    /// Add entries that arrived at `now`; returns the full batches to send.
    fn push(&mut self, now: Instant, entries: Vec<RegisterEntry>) -> Vec<Vec<RegisterEntry>> {
        if entries.is_empty() {
            return Vec::new();
        }
        self.since.get_or_insert(now);
        self.entries.extend(entries);
        let mut full = Vec::new();
        while self.entries.len() >= self.batch_size {
            let rest = self.entries.split_off(self.batch_size);
            full.push(std::mem::replace(&mut self.entries, rest));
        }
        if self.entries.is_empty() {
            self.since = None;
        }
        full
    }

    /// When the waiting entries must be sent, if any wait.
    fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + self.interval)
    }

    fn take(&mut self) -> Option<Vec<RegisterEntry>> {
        self.since = None;
        (!self.entries.is_empty()).then(|| std::mem::take(&mut self.entries))
    }
}

async fn send(sink: &Sink, batch: Vec<RegisterEntry>, report: &mut FlushReport) {
    let n = batch.len();
    match sink(batch).await {
        Ok(r) => report.add(&r),
        Err(e) => {
            tracing::warn!(entries = n, error = %e, "claims register batch failed");
            report.fail(n, &e);
        }
    }
}

async fn run(
    sink: Sink,
    mut rx: mpsc::Receiver<Msg>,
    mut pending: Pending,
) -> Result<FlushReport, ClaimsError> {
    let mut report = FlushReport::default();
    loop {
        let msg = match pending.due() {
            Some(at) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(at) => {
                    if let Some(batch) = pending.take() {
                        send(&sink, batch, &mut report).await;
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match msg {
            Some(Msg::Entries(entries)) => {
                for batch in pending.push(Instant::now(), entries) {
                    send(&sink, batch, &mut report).await;
                }
            }
            Some(Msg::Flush(reply)) => {
                if let Some(batch) = pending.take() {
                    send(&sink, batch, &mut report).await;
                }
                let _ = reply.send(std::mem::take(&mut report).into_result());
            }
            // Every sender is gone: send the rest and stop.
            None => {
                if let Some(batch) = pending.take() {
                    send(&sink, batch, &mut report).await;
                }
                return report.into_result();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::super::types::ClaimKey;
    use super::*;

    fn entries(from: u64, n: u64) -> Vec<RegisterEntry> {
        (from..from + n)
            .map(|k| RegisterEntry::new(ClaimKey::U64(k), "v"))
            .collect()
    }

    fn keys(batch: &[RegisterEntry]) -> Vec<u64> {
        batch
            .iter()
            .map(|e| match e.key {
                ClaimKey::U64(k) => k,
                _ => unreachable!("u64 keys only"),
            })
            .collect()
    }

    #[test]
    fn pending_cuts_full_batches_and_keeps_the_rest_with_a_deadline() {
        let t0 = Instant::now();
        let mut p = Pending::new(3, Duration::from_millis(10));
        assert_eq!(p.due(), None);
        let full = p.push(t0, entries(0, 7));
        assert_eq!(
            full.iter().map(|b| keys(b)).collect::<Vec<_>>(),
            vec![vec![0, 1, 2], vec![3, 4, 5]]
        );
        assert_eq!(p.due(), Some(t0 + Duration::from_millis(10)));
        // Later entries do not push the deadline back.
        let t1 = t0 + Duration::from_millis(5);
        assert!(p.push(t1, entries(7, 1)).is_empty());
        assert_eq!(p.due(), Some(t0 + Duration::from_millis(10)));
        // Filling the batch sends it and clears the deadline.
        let full = p.push(t1, entries(8, 1));
        assert_eq!(keys(&full[0]), vec![6, 7, 8]);
        assert_eq!(p.due(), None);
        assert_eq!(p.take(), None);
        p.push(t1, entries(9, 1));
        assert_eq!(keys(&p.take().unwrap()), vec![9]);
        assert_eq!(p.due(), None);
        assert!(p.push(t1, Vec::new()).is_empty());
        assert_eq!(p.due(), None, "nothing waits");
    }

    /// A sink that records batches, acknowledging each entry as stored
    /// after taking a permit (so tests can hold it back).
    fn recording(gate: Arc<Semaphore>) -> (Sink, Arc<Mutex<Vec<Vec<u64>>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sink: Sink = Arc::new(move |batch: Vec<RegisterEntry>| {
            let (s, gate) = (s.clone(), gate.clone());
            Box::pin(async move {
                gate.acquire().await.expect("gate open").forget();
                s.lock().unwrap().push(keys(&batch));
                Ok(Registered {
                    revision: 1,
                    statuses: vec![RegisterStatus::Stored; batch.len()],
                    evicted: 0,
                })
            })
        });
        (sink, seen)
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once_and_a_partial_one_after_the_interval() {
        let (sink, seen) = recording(Arc::new(Semaphore::new(1000)));
        // An hour-long interval: only a full batch can be sent.
        let b = RegisterBatcher::with_sink(sink.clone(), 3, Duration::from_secs(3600), 4);
        b.register(entries(0, 4)).await.unwrap();
        eventually("the full batch", || seen.lock().unwrap().len() == 1).await;
        assert_eq!(seen.lock().unwrap()[0], vec![0, 1, 2]);
        // flush() sends the partial batch and waits for it.
        let r = b.flush().await.unwrap();
        assert_eq!(seen.lock().unwrap()[1], vec![3]);
        assert_eq!((r.requests, r.stored), (2, 4));
        // The counts restart after a flush.
        assert_eq!(b.flush().await.unwrap(), FlushReport::default());

        // A short interval sends a partial batch without any flush.
        let (sink, seen) = recording(Arc::new(Semaphore::new(1000)));
        let b = RegisterBatcher::with_sink(sink, 100, Duration::from_millis(5), 4);
        b.register(entries(0, 2)).await.unwrap();
        eventually("the timed batch", || seen.lock().unwrap().len() == 1).await;
        assert_eq!(seen.lock().unwrap()[0], vec![0, 1]);
        assert_eq!(b.close().await.unwrap().stored, 2);
    }

    #[tokio::test]
    async fn flush_waits_for_everything_queued_before_it() {
        let gate = Arc::new(Semaphore::new(0));
        let (sink, seen) = recording(gate.clone());
        let b = Arc::new(RegisterBatcher::with_sink(
            sink,
            2,
            Duration::from_secs(3600),
            8,
        ));
        b.register(entries(0, 5)).await.unwrap();
        let flusher = {
            let b = b.clone();
            tokio::spawn(async move { b.flush().await })
        };
        // Nothing is acknowledged while the sink is held back.
        tokio::task::yield_now().await;
        assert!(!flusher.is_finished());
        gate.add_permits(3);
        let r = flusher.await.unwrap().unwrap();
        assert_eq!(r.stored, 5);
        assert_eq!(*seen.lock().unwrap(), vec![vec![0, 1], vec![2, 3], vec![4]]);
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_register_waits_when_it_is_full() {
        let gate = Arc::new(Semaphore::new(0));
        let (sink, seen) = recording(gate.clone());
        // One batch of one entry in flight, one queued: the third waits.
        let b = Arc::new(RegisterBatcher::with_sink(
            sink,
            1,
            Duration::from_secs(3600),
            1,
        ));
        b.register(entries(0, 1)).await.unwrap();
        b.register(entries(1, 1)).await.unwrap();
        let third = {
            let b = b.clone();
            tokio::spawn(async move { b.register(entries(2, 1)).await })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            !third.is_finished(),
            "the queue is full: register must wait"
        );
        gate.add_permits(10);
        third.await.unwrap().unwrap();
        assert_eq!(b.flush().await.unwrap().stored, 3);
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn dropping_the_batcher_sends_what_is_pending_and_stops() {
        let (sink, seen) = recording(Arc::new(Semaphore::new(1000)));
        let b = RegisterBatcher::with_sink(sink.clone(), 100, Duration::from_secs(3600), 4);
        b.register(entries(0, 3)).await.unwrap();
        let task_done = {
            // Watch the task through a weak handle on the sink: the task
            // holds the only other strong reference.
            let weak = Arc::downgrade(&sink);
            drop(sink);
            drop(b);
            weak
        };
        eventually("the pending batch", || seen.lock().unwrap().len() == 1).await;
        assert_eq!(seen.lock().unwrap()[0], vec![0, 1, 2]);
        eventually("the task to stop", || task_done.upgrade().is_none()).await;
    }

    #[tokio::test]
    async fn failures_are_reported_by_the_next_flush_and_by_close() {
        let sink: Sink = Arc::new(|batch: Vec<RegisterEntry>| {
            Box::pin(async move {
                if batch.len() == 1 {
                    Err(ClaimsError::InvalidArgument("boom".into()))
                } else {
                    Ok(Registered {
                        revision: 1,
                        statuses: vec![RegisterStatus::LeasedByOther; batch.len()],
                        evicted: 0,
                    })
                }
            })
        });
        let b = RegisterBatcher::with_sink(sink, 2, Duration::from_secs(3600), 4);
        b.register(entries(0, 3)).await.unwrap();
        let err = b.flush().await.unwrap_err();
        assert!(
            matches!(&err, ClaimsError::BatchFailed { entries: 1, reason } if reason.contains("boom")),
            "{err}"
        );
        b.register(entries(0, 2)).await.unwrap();
        assert_eq!(b.close().await.unwrap().leased_by_other, 2);
    }
}
