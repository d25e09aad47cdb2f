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
    while let Some(first) = rx.recv().await {
        // Wait for a slot first: while we wait, more requests queue up and
        // join this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Mutex<Vec<usize>>);

    impl BatchSink for Recorder {
        async fn propose_batch(
            &self,
            commands: Vec<Command>,
        ) -> Vec<Result<CommandResult, ServerError>> {
            self.0.lock().unwrap().push(commands.len());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            commands.iter().map(|_| Ok(CommandResult::Empty)).collect()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_batches_and_each_gets_its_answer() {
        let sink = Arc::new(Recorder(Mutex::new(Vec::new())));
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
}
