//! The write path: client commands are queued, batched, proposed to Raft
//! together, and their results handed back one by one.
//!
//! While one batch is being replicated and fsynced the next one fills up,
//! so under load many client requests share one log append and one fsync
//! (group commit). Queue, batch size and batches in flight are bounded.

use std::sync::Arc;

use cairn_store::{Command, CommandResult};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::ServerError;

/// Most commands proposed as one batch.
pub const MAX_BATCH: usize = 512;
/// Most encoded bytes of commands in one batch (a batch of one command may
/// be larger, up to the request limit). A follower forwards a batch to the
/// leader as one peer message: 512 requests of 1.5 MiB would be 768 MiB,
/// past what a peer takes, and the forwarding stream broke under them,
/// failing every request it carried.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Commands waiting to be batched; past this, callers wait for room.
pub const QUEUE_CAPACITY: usize = 8192;
/// Batches proposed and not yet answered.
pub const MAX_BATCHES_IN_FLIGHT: usize = 16;

type Reply = oneshot::Sender<Result<CommandResult, ServerError>>;

/// Something that can propose a batch and answer each command in order.
pub trait BatchSink: Send + Sync + 'static {
    fn propose_batch(
        &self,
        commands: Vec<Command>,
    ) -> impl std::future::Future<Output = Vec<Result<CommandResult, ServerError>>> + Send;
}

#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(Command, Reply)>,
}

impl Proposer {
    pub fn start<S: BatchSink>(sink: Arc<S>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(rx, sink));
        Proposer { queue }
    }

    pub async fn propose(&self, command: Command) -> Result<CommandResult, ServerError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((command, tx))
            .await
            .map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)?
    }
}

async fn run<S: BatchSink>(mut rx: mpsc::Receiver<(Command, Reply)>, sink: Arc<S>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // A request taken from the queue that did not fit the last batch.
    let mut carried: Option<(Command, Reply)> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        // Wait for a slot first: while we wait, more requests queue up and
        // join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = encoded_len(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => {
                    let len = encoded_len(&item.0);
                    if bytes + len > MAX_BATCH_BYTES {
                        carried = Some(item);
                        break;
                    }
                    bytes += len;
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        let sink = sink.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
            let n = commands.len();
            let mut results = sink.propose_batch(commands).await.into_iter();
            for reply in replies {
                let r = results.next().unwrap_or_else(|| {
                    Err(ServerError::Internal(format!(
                        "batch of {n} answered short"
                    )))
                });
                let _ = reply.send(r);
            }
            drop(permit);
        });
    }
}

/// How many bytes `command` takes encoded (as it travels to the leader
/// and into the log); a walk over its fields, no copy.
fn encoded_len(command: &Command) -> usize {
    // Sizing cannot fail where encoding would not; count such a command as
    // large, so it goes in a batch of its own.
    postcard::experimental::serialized_size(command).unwrap_or(MAX_BATCH_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records each batch's command count and encoded bytes.
    struct Recorder(Mutex<Vec<usize>>, Mutex<Vec<usize>>);

    impl Recorder {
        fn new() -> Self {
            Recorder(Mutex::new(Vec::new()), Mutex::new(Vec::new()))
        }
    }

    impl BatchSink for Recorder {
        async fn propose_batch(
            &self,
            commands: Vec<Command>,
        ) -> Vec<Result<CommandResult, ServerError>> {
            self.0.lock().unwrap().push(commands.len());
            self.1
                .lock()
                .unwrap()
                .push(commands.iter().map(encoded_len).sum());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            commands.iter().map(|_| Ok(CommandResult::Empty)).collect()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_answer() {
        let sink = Arc::new(Recorder::new());
        let p = Proposer::start(sink.clone());
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.propose(Command::Compact { revision: 1 }).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(CommandResult::Empty));
        }
        let batches = sink.0.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 200);
        assert!(batches.len() < 200, "requests were batched: {batches:?}");
    }

    #[tokio::test]
    async fn large_commands_are_batched_within_the_byte_bound() {
        let sink = Arc::new(Recorder::new());
        let p = Proposer::start(sink.clone());
        let put = |i: usize| {
            Command::Put(cairn_store::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; 1_500 * 1024],
                ..Default::default()
            })
        };
        // More than the batches in flight can take at once, so that the
        // queue fills while they are proposed: 200 of these are ~290 MiB.
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let p = p.clone();
                tokio::spawn(async move { p.propose(put(i)).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(CommandResult::Empty));
        }
        let counts = sink.0.lock().unwrap().clone();
        let bytes = sink.1.lock().unwrap().clone();
        assert_eq!(counts.iter().sum::<usize>(), 200);
        assert!(
            bytes.iter().all(|b| *b <= MAX_BATCH_BYTES),
            "batch bytes {bytes:?}"
        );
        assert!(counts.iter().any(|n| *n > 1), "still batched: {counts:?}");
        // A command over the bound goes alone rather than not at all.
        let huge = Command::Put(cairn_store::PutRequest {
            key: b"huge".to_vec(),
            value: vec![0; MAX_BATCH_BYTES + 1],
            ..Default::default()
        });
        assert_eq!(p.propose(huge).await, Ok(CommandResult::Empty));
        assert_eq!(sink.0.lock().unwrap().last(), Some(&1));
    }
}
