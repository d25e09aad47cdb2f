//! A follower's `ForwardStream` to its leader: forwarded requests
//! multiplexed on one long-lived gRPC stream, matched to their replies by
//! id.
//!
//! Why not one `Forward` call per batch: with clients spread over the
//! members, two thirds of the writes are forwarded, and at 64 clients a
//! forwarded put cost ~45 µs more server CPU than one sent to the leader
//! (BENCHMARKS.md): a call's stream set-up, headers and trailers, a task
//! on each side and the channel's buffer hop, for batches of one or two
//! commands. On the stream each batch is one message each way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_proto::raft::v1::Payload;
use cairn_raft::cluster_check::PeerGrpc;
use cairn_raft::forward_frame;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

/// Requests queued for the stream's sender; forwarders wait for room past
/// it. (Each member's proposer bounds the batches it has in flight, so
/// this is rarely reached.)
const QUEUE_FRAMES: usize = 64;

/// Why a forwarded request has no answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// It never left this member: safe to send again.
    NotSent(String),
    /// It may have reached the leader and the answer was lost: its outcome
    /// is unknown.
    Lost(String),
    /// The deadline passed first; its outcome is unknown.
    Timeout,
    /// The leader answered it with an error status.
    Status(Status),
}

type Waiter = oneshot::Sender<Result<Vec<u8>, CallError>>;

/// Requests sent and not yet answered.
#[derive(Default)]
struct Pending {
    next_id: u64,
    waiting: HashMap<u64, Waiter>,
    /// Why the stream ended, once it has: no request joins after that.
    closed: Option<String>,
}

pub(super) struct ForwardStream {
    /// The leader at the other end.
    pub leader_id: u64,
    frames: mpsc::Sender<Payload>,
    pending: Arc<Mutex<Pending>>,
}

impl ForwardStream {
    /// Opens the stream with `client`. Fails with the leader's status, e.g.
    /// `UNIMPLEMENTED` from a member too old to serve it.
    pub async fn open(mut client: PeerGrpc, leader_id: u64) -> Result<Self, Status> {
        let (frames, rx) = mpsc::channel(QUEUE_FRAMES);
        let outbound = ReceiverStream::new(rx);
        let inbound = client.forward_stream(outbound).await?.into_inner();
        let pending = Arc::new(Mutex::new(Pending::default()));
        tokio::spawn(read_replies(inbound, pending.clone()));
        Ok(ForwardStream {
            leader_id,
            frames,
            pending,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        lock(&self.pending)
    }

    /// Whether requests can still go out on it.
    pub fn is_open(&self) -> bool {
        self.lock().closed.is_none() && !self.frames.is_closed()
    }

    /// Sends one `Forward` payload and waits, until `deadline`, for the
    /// leader's answer.
    pub async fn call(&self, payload: Vec<u8>, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut pending = self.lock();
            if let Some(why) = &pending.closed {
                return Err(CallError::NotSent(why.clone()));
            }
            let id = pending.next_id;
            pending.next_id += 1;
            pending.waiting.insert(id, tx);
            id
        };
        let frame = Payload {
            data: forward_frame::request(payload, id),
        };
        let sent = tokio::time::timeout_at(deadline, self.frames.send(frame)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                self.lock().waiting.remove(&id);
                return Err(CallError::NotSent("the stream to the leader closed".into()));
            }
            Err(_) => {
                self.lock().waiting.remove(&id);
                return Err(CallError::Timeout);
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => answer,
            // The reader always answers before it drops a waiter.
            Ok(Err(_)) => Err(CallError::Lost("the stream to the leader ended".into())),
            Err(_) => {
                self.lock().waiting.remove(&id);
                Err(CallError::Timeout)
            }
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hands each reply to its waiter until the stream ends, then fails the
/// requests still waiting (their outcome is unknown) and refuses new ones.
async fn read_replies(mut inbound: Streaming<Payload>, pending: Arc<Mutex<Pending>>) {
    let why = loop {
        match inbound.message().await {
            Ok(Some(frame)) => {
                let Some((id, answer)) = forward_frame::split_reply(frame.data) else {
                    break "a malformed reply from the leader".to_string();
                };
                let waiter = lock(&pending).waiting.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer.map_err(CallError::Status));
                }
            }
            Ok(None) => break "the leader ended the stream".to_string(),
            Err(status) => break format!("the stream to the leader broke: {status}"),
        }
    };
    let waiting = {
        let mut pending = lock(&pending);
        pending.closed = Some(why.clone());
        std::mem::take(&mut pending.waiting)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(CallError::Lost(why.clone())));
    }
}
