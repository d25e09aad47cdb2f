//! The same floor with gRPC on every hop: replicas that speak etcd's
//! `KV.Put` and do nothing else, so `cairn bench` drives them with the very
//! client code it drives Cairn and etcd with.
//!
//! Both Cairn and etcd must answer clients over gRPC (the wire contract),
//! and Cairn's members talk gRPC to each other too. This probe keeps those
//! hops and drops everything else. The leader serves `KV.Put`; it keeps one
//! `RaftPeer.StreamAppend` stream open to each follower (Cairn's own
//! pipelined replication stream: one message each way per write, no
//! per-call headers), sends each value down every stream, writes and syncs
//! it on a blocking thread meanwhile (as a log writer thread does), and
//! answers once its own sync and one follower's acknowledgement are in. A
//! follower writes and syncs each message as its reply stream is polled,
//! on the runtime's one thread, and replies with the message's sequence
//! number. One current-thread runtime per process: the fewest threads that
//! can carry those steps. Every
//! connection writes through `cairn_raft::coalesce`, as Cairn's and the
//! bench's do, so that a response's frames leave in one socket write.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cairn_raft::coalesce::{Coalesced, Connector};
use futures::stream::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::raft::v1::raft_peer_client::RaftPeerClient;
use cairn_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use cairn_proto::raft::v1::{Payload, SnapshotChunk};

use super::{Disk, Log};

/// Messages queued to one follower's stream; with one client, one at most.
const STREAM_QUEUE: usize = 64;

/// The leader's end of one follower's replication stream.
struct FollowerStream {
    /// Each message: the write's 8-byte sequence number, then its value.
    requests: mpsc::Sender<Payload>,
    /// The highest sequence number the follower acknowledged.
    acked: Arc<AtomicU64>,
}

/// One replica's services: `KV.Put` on the leader, `RaftPeer.StreamAppend`
/// on a follower.
#[derive(Clone)]
pub struct FloorReplica {
    /// Shared with the blocking thread that writes the leader's copy.
    log: Arc<Mutex<Log>>,
    /// Empty on a follower.
    followers: Arc<Vec<FollowerStream>>,
    /// Woken whenever a follower acknowledges.
    acks: Arc<Notify>,
    /// The last sequence number the leader gave a write.
    last_seq: Arc<AtomicU64>,
}

impl FloorReplica {
    /// Prepares the log file and opens a replication stream to each of
    /// `followers` (their `host:port`), which must be serving already.
    pub async fn new(disk: &Disk, followers: &[String]) -> anyhow::Result<Self> {
        let log = Log::create(disk)?;
        let acks = Arc::new(Notify::new());
        let mut streams = Vec::new();
        for addr in followers {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .connect_with_connector(Connector::new(None))
                .await?;
            let (requests, queued) = mpsc::channel(STREAM_QUEUE);
            let replies = RaftPeerClient::new(channel)
                .stream_append(ReceiverStream::new(queued))
                .await?
                .into_inner();
            let acked = Arc::new(AtomicU64::new(0));
            tokio::spawn(read_acks(replies, acked.clone(), acks.clone()));
            streams.push(FollowerStream { requests, acked });
        }
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            followers: Arc::new(streams),
            acks,
            last_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    fn append(log: &Mutex<Log>, value: &[u8]) -> Result<(), Status> {
        let mut log = log
            .lock()
            .map_err(|_| Status::internal("log lock poisoned"))?;
        log.append(value)
            .map_err(|e| Status::internal(format!("log write: {e}")))
    }

    async fn replicate(&self, value: Vec<u8>) -> Result<(), Status> {
        let seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut message = Vec::with_capacity(8 + value.len());
        message.extend_from_slice(&seq.to_le_bytes());
        message.extend_from_slice(&value);
        for follower in self.followers.iter() {
            follower
                .requests
                .send(Payload {
                    data: message.clone(),
                })
                .await
                .map_err(|_| Status::unavailable("a follower's stream ended"))?;
        }
        let log = self.log.clone();
        let local = tokio::task::spawn_blocking(move || Self::append(&log, &value));
        let needed = self.followers.len().div_ceil(2);
        loop {
            let woken = self.acks.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let acked = self
                .followers
                .iter()
                .filter(|f| f.acked.load(Ordering::Acquire) >= seq)
                .count();
            if acked >= needed {
                break;
            }
            woken.await;
        }
        local
            .await
            .map_err(|e| Status::internal(format!("log thread: {e}")))?
    }
}

/// Reads one follower's acknowledgements into `acked`, waking waiters.
async fn read_acks(mut replies: Streaming<Payload>, acked: Arc<AtomicU64>, acks: Arc<Notify>) {
    while let Ok(Some(reply)) = replies.message().await {
        let Ok(seq) = <[u8; 8]>::try_from(reply.data.as_slice()) else {
            break;
        };
        acked.fetch_max(u64::from_le_bytes(seq), Ordering::AcqRel);
        acks.notify_waiters();
    }
}

type PayloadStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for FloorReplica {
    type StreamAppendStream = PayloadStream;
    type PresenceStream = PayloadStream;
    type ForwardStreamStream = PayloadStream;

    /// Writes and syncs each message as the reply stream is polled, then
    /// replies with its sequence number.
    async fn stream_append(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<PayloadStream>, Status> {
        let log = self.log.clone();
        let replies = request.into_inner().map(move |message| {
            let message = message?;
            if message.data.len() < 8 || message.data.len() > 8 + super::MAX_PAYLOAD_BYTES {
                return Err(Status::invalid_argument("not a floor probe message"));
            }
            Self::append(&log, &message.data[8..])?;
            Ok(Payload {
                data: message.data[..8].to_vec(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn append_entries(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn presence(&self, _: Request<Payload>) -> Result<Response<PayloadStream>, Status> {
        Err(unimplemented())
    }

    async fn vote(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn pre_vote(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn install_snapshot(
        &self,
        _: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn transfer_leader(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn forward(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }

    async fn forward_stream(
        &self,
        _: Request<Streaming<Payload>>,
    ) -> Result<Response<PayloadStream>, Status> {
        Err(unimplemented())
    }

    async fn read_index(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(unimplemented())
    }
}

fn unimplemented() -> Status {
    Status::unimplemented("the floor probe takes puts and stream_append only")
}

#[tonic::async_trait]
impl Kv for FloorReplica {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let put = request.into_inner();
        if put.value.len() > super::MAX_PAYLOAD_BYTES {
            return Err(Status::invalid_argument("value over the probe's bound"));
        }
        if self.followers.is_empty() {
            // A cluster of one: write on this thread, the runtime's only one.
            Self::append(&self.log, &put.value)?;
        } else {
            self.replicate(put.value).await?;
        }
        Ok(Response::new(PutResponse {
            header: Some(ResponseHeader::default()),
            prev_kv: None,
        }))
    }

    async fn range(&self, _: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        Err(unimplemented())
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(unimplemented())
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(unimplemented())
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(unimplemented())
    }
}

/// Serves `kv` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, kv: FloorReplica) -> anyhow::Result<()> {
    Server::builder()
        .tcp_nodelay(true)
        .add_service(KvServer::new(kv.clone()))
        .add_service(RaftPeerServer::new(kv))
        .serve_with_incoming(TcpListenerStream::new(listener).map(|accepted| {
            accepted.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(Coalesced::new(stream))
            })
        }))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(disk: Disk, followers: &[String]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let kv = FloorReplica::new(&disk, followers).await.unwrap();
        tokio::spawn(serve(listener, kv));
        addr
    }

    #[tokio::test]
    async fn a_put_is_answered_once_the_leader_and_a_follower_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = |name: &str| Disk {
            path: dir.path().join(name),
            file_bytes: 1 << 20,
            sync: true,
        };
        let f1 = start(disk("f1"), &[]).await;
        let f2 = start(disk("f2"), &[]).await;
        let leader = start(disk("leader"), &[f1, f2]).await;
        let mut client =
            cairn_proto::etcdserverpb::kv_client::KvClient::connect(format!("http://{leader}"))
                .await
                .unwrap();
        for _ in 0..20 {
            let put = PutRequest {
                key: b"k".to_vec(),
                value: vec![b'v'; 10],
                ..Default::default()
            };
            client.put(put).await.unwrap();
        }
        let written = |name: &str| {
            let log = std::fs::read(dir.path().join(name)).unwrap();
            log.iter().take_while(|&&b| b == b'v').count()
        };
        assert_eq!(written("leader"), 200);
        // A majority had each value when it was answered; the slower
        // follower gets its copies after.
        assert_eq!(written("f1").max(written("f2")), 200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while written("f1").min(written("f2")) < 200 {
            assert!(
                std::time::Instant::now() < deadline,
                "a follower never caught up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let err = client.range(RangeRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unimplemented);
    }
}
