//! The server half of the peer transport: the `cairn.raft.v1.RaftPeer` gRPC
//! service, feeding a local [`openraft::Raft`].
//!
//! Raft RPCs (AppendEntries, Vote, PreVote, InstallSnapshot, TransferLeader)
//! go straight to openraft. `Forward` and `ReadIndex` carry Cairn's own
//! messages and go to a [`PeerHandler`] the server supplies.
//!
//! Requests are postcard-encoded openraft messages; a malformed one is
//! answered `INVALID_ARGUMENT`. Replies are postcard-encoded
//! `Result<T, Fatal>` (see [`crate::network`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster_check::ClusterCheck;
use crate::forward_frame;
use crate::network::DEFAULT_MAX_MESSAGE_BYTES;
use crate::types::{
    AppendEntriesRequest, Fatal, Raft, RaftError, Snapshot, SnapshotData, SnapshotMeta,
    TransferLeaderRequest, TypeConfig, Vote, VoteRequest,
};
use cairn_proto::raft::v1::raft_peer_server::{RaftPeer, RaftPeerServer};
use cairn_proto::raft::v1::{Payload, SnapshotChunk};

/// Forwarded requests one `ForwardStream` has under way at once; a stream
/// is one follower's, which itself bounds what it forwards.
pub const FORWARD_STREAM_WINDOW: usize = 64;

/// The largest snapshot [`PeerService`] accepts by default: 4 GiB.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// A boxed, `Send` future: keeps [`PeerHandler`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Serves the peer RPCs that are Cairn's rather than openraft's. The payloads
/// are opaque to this crate; the implementation defines their encoding.
pub trait PeerHandler: Send + Sync + 'static {
    /// A follower forwards a client command to this node (the leader).
    fn forward(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;

    /// A follower asks this node (the leader) for a read index.
    fn read_index(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
}

/// A [`PeerHandler`] that answers `UNIMPLEMENTED` to everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnimplementedPeerHandler;

impl PeerHandler for UnimplementedPeerHandler {
    fn forward(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async { Err(Status::unimplemented("forward is not served by this node")) })
    }

    fn read_index(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async {
            Err(Status::unimplemented(
                "read_index is not served by this node",
            ))
        })
    }
}

/// The `RaftPeer` gRPC service over a local Raft node with state machine `SM`.
pub struct PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    raft: Raft<SM>,
    handler: Arc<dyn PeerHandler>,
    max_snapshot_bytes: u64,
    max_message_bytes: usize,
    /// Whether `ForwardStream` is served; off, it answers `UNIMPLEMENTED`
    /// as a member that predates it would (rolling-upgrade tests).
    forward_stream: bool,
    /// This member's cluster: calls naming another are refused
    /// (`cluster_check`); `None` takes every call.
    cluster_id: Option<u64>,
}

impl<SM> fmt::Debug for PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerService")
            .field("max_snapshot_bytes", &self.max_snapshot_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl<SM> PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    pub fn new(raft: Raft<SM>, handler: Arc<dyn PeerHandler>) -> Self {
        PeerService {
            raft,
            handler,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            forward_stream: true,
            cluster_id: None,
        }
    }

    /// Refuse calls from members of other clusters (see `cluster_check`).
    pub fn with_cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = Some(cluster_id);
        self
    }

    /// Answer `ForwardStream` with `UNIMPLEMENTED`, as a member older than
    /// it does: followers must fall back to one `Forward` call a request.
    pub fn without_forward_stream(mut self) -> Self {
        self.forward_stream = false;
        self
    }

    /// The largest snapshot accepted; a larger transfer is refused with
    /// `RESOURCE_EXHAUSTED`.
    pub fn with_max_snapshot_bytes(mut self, bytes: u64) -> Self {
        self.max_snapshot_bytes = bytes;
        self
    }

    /// The largest gRPC message accepted or sent (default 64 MiB).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The tonic service, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> InterceptedService<RaftPeerServer<Self>, ClusterCheck> {
        let max = self.max_message_bytes;
        let check = ClusterCheck(self.cluster_id);
        let server = RaftPeerServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        InterceptedService::new(server, check)
    }

    /// Receives a snapshot stream. The first chunk must carry the vote and
    /// the meta, no later one may; the stream must end with `done`.
    async fn receive_snapshot(
        &self,
        mut stream: Streaming<SnapshotChunk>,
    ) -> Result<(Vote, SnapshotMeta, Vec<u8>), Status> {
        let mut header: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut data: Vec<u8> = Vec::new();
        let mut done = false;
        while let Some(chunk) = stream.message().await? {
            if done {
                return Err(Status::invalid_argument(
                    "install_snapshot: chunk after the last one",
                ));
            }
            match &header {
                None => {
                    if chunk.vote.is_empty() || chunk.meta.is_empty() {
                        return Err(Status::invalid_argument(
                            "install_snapshot: first chunk lacks vote or meta",
                        ));
                    }
                    header = Some((chunk.vote, chunk.meta));
                }
                Some(_) => {
                    if !chunk.vote.is_empty() || !chunk.meta.is_empty() {
                        return Err(Status::invalid_argument(
                            "install_snapshot: vote or meta repeated after the first chunk",
                        ));
                    }
                }
            }
            let total = data.len() as u64 + chunk.data.len() as u64;
            if total > self.max_snapshot_bytes {
                return Err(Status::resource_exhausted(format!(
                    "install_snapshot: snapshot exceeds {} bytes",
                    self.max_snapshot_bytes
                )));
            }
            if data.is_empty() {
                data = chunk.data;
            } else {
                data.try_reserve(chunk.data.len()).map_err(|_| {
                    Status::resource_exhausted(format!(
                        "install_snapshot: cannot allocate {total} bytes"
                    ))
                })?;
                data.extend_from_slice(&chunk.data);
            }
            done = chunk.done;
        }
        let Some((vote, meta)) = header else {
            return Err(Status::invalid_argument("install_snapshot: empty stream"));
        };
        if !done {
            return Err(Status::invalid_argument(
                "install_snapshot: stream ended before the last chunk",
            ));
        }
        let vote: Vote = decode("install_snapshot vote", &vote)?;
        let meta: SnapshotMeta = decode("install_snapshot meta", &meta)?;
        Ok((vote, meta, data))
    }
}

fn decode<T: DeserializeOwned>(what: &str, data: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(data)
        .map_err(|e| Status::invalid_argument(format!("{what}: malformed payload: {e}")))
}

fn reply<T: Serialize>(what: &str, res: &Result<T, Fatal>) -> Result<Response<Payload>, Status> {
    encode_reply(what, res).map(Response::new)
}

fn encode_reply<T: Serialize>(what: &str, res: &Result<T, Fatal>) -> Result<Payload, Status> {
    if let Err(fatal) = res {
        tracing::warn!("{what}: local raft stopped: {fatal}");
    }
    crate::encoding::to_vec_sized(res)
        .map(|data| Payload { data })
        .map_err(|e| Status::internal(format!("{what}: encode reply: {e}")))
}

fn fatal(e: RaftError) -> Fatal {
    match e {
        RaftError::Fatal(f) => f,
        RaftError::APIError(never) => match never {},
    }
}

/// Ends once the local Raft has stopped.
fn until_stopped<SM>(raft: &Raft<SM>) -> impl Future<Output = ()> + Send + 'static
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    let mut metrics = raft.metrics();
    async move {
        while metrics.borrow_watched().running_state.is_ok() {
            if metrics.changed().await.is_err() {
                break;
            }
        }
    }
}

#[tonic::async_trait]
impl<SM> RaftPeer for PeerService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    type StreamAppendStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

    /// Feeds the request stream into openraft's pipelined `stream_append`
    /// and answers each request, in order. A malformed request ends the
    /// input: the requests before it are still answered, then the stream
    /// ends with `INVALID_ARGUMENT`.
    async fn stream_append(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let bad_request: Arc<Mutex<Option<Status>>> = Arc::default();
        let input = request.into_inner().scan(bad_request.clone(), |bad, item| {
            let req = item.and_then(|p| decode::<AppendEntriesRequest>("stream_append", &p.data));
            futures::future::ready(match req {
                Ok(req) => Some(req),
                Err(status) => {
                    *bad.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                    None
                }
            })
        });
        let replies = self
            .raft
            .stream_append(input)
            .map(|res| encode_reply("stream_append", &res));
        let last = futures::stream::once(async move {
            bad_request.lock().unwrap_or_else(|p| p.into_inner()).take()
        })
        .filter_map(|bad| futures::future::ready(bad.map(Err)));
        Ok(Response::new(Box::pin(replies.chain(last))))
    }

    type PresenceStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

    /// Sends nothing and ends when the local Raft stops, so a follower can
    /// tell a dead leader (broken connection) from a quiet one.
    async fn presence(
        &self,
        _request: Request<Payload>,
    ) -> Result<Response<Self::PresenceStream>, Status> {
        let until_stopped = until_stopped(&self.raft);
        let stream = futures::stream::once(until_stopped).filter_map(|()| async { None });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: AppendEntriesRequest = decode("append_entries", &request.into_inner().data)?;
        let res = self.raft.append_entries(req).await.map_err(fatal);
        reply("append_entries", &res)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: VoteRequest = decode("vote", &request.into_inner().data)?;
        let res = self.raft.vote(req).await.map_err(fatal);
        reply("vote", &res)
    }

    async fn pre_vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: VoteRequest = decode("pre_vote", &request.into_inner().data)?;
        let res = self.raft.pre_vote(req).await.map_err(fatal);
        reply("pre_vote", &res)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Payload>, Status> {
        let (vote, meta, data) = self.receive_snapshot(request.into_inner()).await?;
        // openraft panics (in its core task) on a snapshot whose last log id
        // lies beyond the sending leader's vote; refuse it here instead.
        if let Some(last) = &meta.last_log_id {
            if last.committed_leader_id() > &vote.leader_id().to_committed() {
                return Err(Status::invalid_argument(format!(
                    "install_snapshot: snapshot last log id {last} is beyond the leader's vote {vote}"
                )));
            }
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotData::Bytes(data),
        };
        let res = self.raft.install_full_snapshot(vote, snapshot).await;
        reply("install_snapshot", &res)
    }

    async fn transfer_leader(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let req: TransferLeaderRequest = decode("transfer_leader", &request.into_inner().data)?;
        let res = self.raft.handle_transfer_leader(req).await;
        reply("transfer_leader", &res)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let data = self.handler.forward(request.into_inner().data).await?;
        Ok(Response::new(Payload { data }))
    }

    type ForwardStreamStream = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

    /// Each request as [`PeerHandler::forward`] would answer it, up to
    /// [`FORWARD_STREAM_WINDOW`] at once, each answer sent as it is ready.
    /// A frame too short to carry an id ends the stream with
    /// `INVALID_ARGUMENT` after the answers under way.
    async fn forward_stream(
        &self,
        request: Request<Streaming<Payload>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        if !self.forward_stream {
            return Err(Status::unimplemented("ForwardStream is not served"));
        }
        let mut input = request.into_inner();
        let handler = self.handler.clone();
        let (replies, rx) = tokio::sync::mpsc::channel(FORWARD_STREAM_WINDOW);
        // A stopped member ends its streams, so followers reopen theirs to
        // whoever leads now instead of talking to a member that is only
        // draining its connections.
        let stopped = until_stopped(&self.raft);
        tokio::spawn(async move {
            tokio::pin!(stopped);
            let window = Arc::new(tokio::sync::Semaphore::new(FORWARD_STREAM_WINDOW));
            loop {
                // Reading waits for room: the sender's flow control then
                // holds its further requests.
                let Ok(permit) = window.clone().acquire_owned().await else {
                    return;
                };
                let frame = tokio::select! {
                    frame = input.message() => match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) | Err(_) => return,
                    },
                    () = &mut stopped => {
                        let _ = replies
                            .send(Err(Status::unavailable("forward_stream: this member stopped")))
                            .await;
                        return;
                    }
                };
                let Some((id, payload)) = forward_frame::split_request(frame.data) else {
                    // The answers under way go first (each task gives its
                    // permit back once its answer is queued): the error
                    // ends the stream.
                    drop(permit);
                    let all = FORWARD_STREAM_WINDOW as u32;
                    let _ = window.acquire_many(all).await;
                    let _ = replies
                        .send(Err(Status::invalid_argument(
                            "forward_stream: a frame shorter than its id",
                        )))
                        .await;
                    return;
                };
                let handler = handler.clone();
                let replies = replies.clone();
                tokio::spawn(async move {
                    let answer = handler.forward(payload).await;
                    let data = forward_frame::reply(id, answer);
                    let _ = replies.send(Ok(Payload { data })).await;
                    drop(permit);
                });
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn read_index(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let data = self.handler.read_index(request.into_inner().data).await?;
        Ok(Response::new(Payload { data }))
    }
}
