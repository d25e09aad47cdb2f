//! The client half of the peer transport: openraft's network traits over the
//! `cairn.raft.v1.RaftPeer` gRPC service.
//!
//! Every RPC body is a postcard-encoded openraft message inside a protobuf
//! `Payload`. Replies are postcard-encoded `Result<T, Fatal>`: `Err` means the
//! remote Raft node has stopped (shut down, panicked, or hit a storage error).
//!
//! Error mapping, which decides openraft's retry behaviour:
//!
//! | what happened | openraft error |
//! | --- | --- |
//! | cannot connect, connection reset, peer shutting down (`UNAVAILABLE`), bad peer URL, remote Raft stopped | `Unreachable`: openraft backs off before retrying |
//! | no reply within the RPC's time budget (`DEADLINE_EXCEEDED`, local timer) | `Timeout` |
//! | anything else (undecodable reply, other gRPC status) | `NetworkError` |

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{Fatal, ReplicationClosed};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::StreamAppendResult as RaftStreamAppendResult;
use openraft::{OptionalSend, RPCTypes};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::cluster_check::{peer_grpc, PeerGrpc};
use crate::coalesce::Connector;
use crate::snapshot_data::Written;
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, CairnNode, NetworkError, NodeId, RPCError,
    Snapshot, SnapshotResponse, StreamingError, Timeout, TransferLeaderRequest,
    TransferLeaderResponse, TypeConfig, Unreachable, Vote, VoteRequest, VoteResponse,
};
use cairn_proto::raft::v1::{Payload, SnapshotChunk};

mod stream_append;

type StreamAppendResult = RaftStreamAppendResult<TypeConfig>;

/// The largest gRPC message either side sends or accepts by default: room for
/// a large AppendEntries batch.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The largest snapshot chunk sent.
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Transport settings shared by all peer connections.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// How long establishing a TCP connection may take.
    pub connect_timeout: Duration,
    /// TCP keepalive probe interval.
    pub tcp_keepalive: Duration,
    /// HTTP/2 PING interval, also while idle, so a dead peer is noticed.
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a PING reply before dropping the connection.
    pub http2_keepalive_timeout: Duration,
    /// Largest gRPC message sent or accepted.
    pub max_message_bytes: usize,
    /// Snapshot chunk size; capped at [`MAX_SNAPSHOT_CHUNK_BYTES`] and at
    /// openraft's `snapshot_max_chunk_size`.
    pub snapshot_chunk_bytes: usize,
    /// How long a replication stream may owe a reply before it is dropped
    /// and restarted. Far above a follower's fsync under load: restarting a
    /// busy stream costs more than waiting for it.
    pub append_reply_timeout: Duration,
    /// How long a replication stream may hold back a request that only
    /// moves the commit index, hoping to send it with the next entries
    /// (see `stream_append::HeldCommit`). Zero sends it at once.
    pub commit_notice_delay: Duration,
    /// This member's cluster, named in every call so that a member of
    /// another cluster refuses it (`cluster_check`); `None` names none.
    pub cluster_id: Option<u64>,
    /// How to dial `https://` members; `None` refuses such URLs.
    pub tls: Option<PeerTls>,
}

/// How a member dials `https://` members: the rustls config it dials them
/// with (the suites and versions its flags allow, the CA that signs the
/// members' certificates or a verifier in its place, and its own
/// certificate to show; ALPN `h2`).
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub config: Arc<ClientConfig>,
}

/// The URL to hand tonic for `url`, and the connector that dials it.
///
/// tonic's own TLS builds its rustls config itself (rustls' default
/// versions, the process-wide provider's suites) and takes none of ours,
/// so a member's `--cipher-suites` and TLS version flags could not reach
/// its dialing side. So an `https://` member is handed to tonic as
/// `http://`, and `connector` runs TLS with `tls`, checking the URL's host
/// as tonic would. Without `tls` the URL is left as it is: tonic then
/// refuses to dial it, as before.
pub fn dial_target(
    url: &str,
    tls: Option<&PeerTls>,
    connector: Connector,
) -> Result<(String, Connector), String> {
    let (Some(rest), Some(tls)) = (url.strip_prefix("https://"), tls) else {
        return Ok((url.to_string(), connector));
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid peer url {url:?}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("peer url {url:?} names no host"))?;
    // A literal IPv6 host comes in brackets; the name to check is without.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("peer url {url:?}: {host:?} is not a host name: {e}"))?;
    Ok((
        format!("http://{rest}"),
        connector.with_tls(tls.config.clone(), server_name),
    ))
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            connect_timeout: Duration::from_secs(2),
            tcp_keepalive: Duration::from_secs(30),
            http2_keepalive_interval: Duration::from_secs(10),
            http2_keepalive_timeout: Duration::from_secs(5),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            snapshot_chunk_bytes: MAX_SNAPSHOT_CHUNK_BYTES,
            append_reply_timeout: Duration::from_secs(2),
            commit_notice_delay: Duration::from_millis(2),
            cluster_id: None,
            tls: None,
        }
    }
}

/// Creates [`PeerClient`]s for openraft. One gRPC channel (one HTTP/2
/// connection, opened lazily and re-established on failure) is kept per
/// target node and shared by all clients to it; it is replaced when the
/// node's `peer_url` changes. Cloning shares the cache.
#[derive(Clone)]
pub struct NetworkFactory {
    self_id: NodeId,
    config: Arc<NetworkConfig>,
    channels: Arc<Mutex<HashMap<NodeId, CachedChannel>>>,
}

struct CachedChannel {
    peer_url: String,
    channel: Channel,
}

impl fmt::Debug for NetworkFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkFactory")
            .field("self_id", &self.self_id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NetworkFactory {
    /// `self_id` is this node's id, reported in timeout errors.
    pub fn new(self_id: NodeId, config: NetworkConfig) -> Self {
        NetworkFactory {
            self_id,
            config: Arc::new(config),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client for `target`, reusing the cached channel. Never connects by
    /// itself; must be called within a tokio runtime.
    pub fn client(&self, target: NodeId, node: &CairnNode) -> PeerClient {
        let inner = self.channel(target, &node.peer_url).map(|channel| {
            peer_grpc(
                channel,
                self.config.cluster_id,
                self.config.max_message_bytes,
            )
        });
        PeerClient {
            self_id: self.self_id,
            target,
            config: self.config.clone(),
            inner,
            unreachable_streak: Arc::default(),
        }
    }

    /// Drops the cached channel to `target` (e.g. when it leaves the cluster).
    pub fn forget(&self, target: NodeId) {
        self.lock().remove(&target);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, CachedChannel>> {
        // The map is always consistent, so a panic elsewhere cannot have left
        // it half-updated: recover from poisoning rather than propagate it.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channel(&self, target: NodeId, peer_url: &str) -> Result<Channel, Arc<str>> {
        let mut map = self.lock();
        if let Some(c) = map.get(&target) {
            if c.peer_url == peer_url {
                return Ok(c.channel.clone());
            }
        }
        let connector = Connector::new(Some(self.config.tcp_keepalive));
        let (url, connector) = dial_target(peer_url, self.config.tls.as_ref(), connector)?;
        let channel = self.endpoint(&url)?.connect_with_connector_lazy(connector);
        map.insert(
            target,
            CachedChannel {
                peer_url: peer_url.to_string(),
                channel: channel.clone(),
            },
        );
        Ok(channel)
    }

    fn endpoint(&self, peer_url: &str) -> Result<Endpoint, Arc<str>> {
        let url = if peer_url.contains("://") {
            peer_url.to_string()
        } else {
            format!("http://{peer_url}")
        };
        let c = &self.config;
        let invalid =
            |e: tonic::transport::Error| Arc::from(format!("invalid peer url {peer_url:?}: {e}"));
        let endpoint = Endpoint::from_shared(url)
            .map(|e| {
                e.connect_timeout(c.connect_timeout)
                    .http2_keep_alive_interval(c.http2_keepalive_interval)
                    .keep_alive_timeout(c.http2_keepalive_timeout)
                    .keep_alive_while_idle(true)
            })
            .map_err(invalid)?;
        Ok(endpoint)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &CairnNode) -> PeerClient {
        self.client(target, node)
    }
}

/// Sends Raft RPCs to one peer. Implements openraft's `RaftNetworkV2` (and
/// through it every per-RPC network trait), plus the `Forward` and
/// `ReadIndex` calls Cairn itself makes.
#[derive(Clone)]
pub struct PeerClient {
    self_id: NodeId,
    target: NodeId,
    config: Arc<NetworkConfig>,
    /// `Err` when the peer URL is unusable: every RPC then fails Unreachable.
    inner: Result<PeerGrpc, Arc<str>>,
    /// Replication streams in a row that found the peer unreachable: the
    /// pause before the next attempt doubles with it
    /// (`stream_append::unreachable_pause`).
    unreachable_streak: Arc<std::sync::atomic::AtomicU32>,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("self_id", &self.self_id)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Unary {
    AppendEntries,
    Vote,
    PreVote,
    TransferLeader,
}

impl Unary {
    fn rpc_type(self) -> RPCTypes {
        match self {
            Unary::AppendEntries => RPCTypes::AppendEntries,
            Unary::Vote | Unary::PreVote => RPCTypes::Vote,
            Unary::TransferLeader => RPCTypes::TransferLeader,
        }
    }
}

/// What a transport failure means to openraft, before it is put into the
/// error type of the particular RPC.
enum Failure {
    Unreachable(Unreachable),
    Timeout(Timeout),
    Network(NetworkError),
}

impl From<Failure> for RPCError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unreachable(e) => RPCError::Unreachable(e),
            Failure::Timeout(e) => RPCError::Timeout(e),
            Failure::Network(e) => RPCError::Network(e),
        }
    }
}

impl From<Failure> for StreamingError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Unreachable(e) => StreamingError::Unreachable(e),
            Failure::Timeout(e) => StreamingError::Timeout(e),
            Failure::Network(e) => StreamingError::Network(e),
        }
    }
}

impl PeerClient {
    pub fn target(&self) -> NodeId {
        self.target
    }

    fn grpc(&self) -> Result<PeerGrpc, Failure> {
        self.inner.clone().map_err(|msg| {
            Failure::Unreachable(Unreachable::from_string(format!(
                "node {}: {msg}",
                self.target
            )))
        })
    }

    fn timeout(&self, action: RPCTypes, after: Duration) -> Failure {
        Failure::Timeout(Timeout {
            action,
            id: self.self_id,
            target: self.target,
            timeout: after,
        })
    }

    /// Maps a gRPC status. `started` is when the call began and `after` its
    /// time budget: tonic enforces the `grpc-timeout` it was given itself and
    /// reports its expiry as `CANCELLED`, which is a timeout here.
    fn status_failure(
        &self,
        action: RPCTypes,
        after: Duration,
        started: Instant,
        s: Status,
    ) -> Failure {
        let msg = || {
            format!(
                "{action} to node {}: {}: {}",
                self.target,
                s.code(),
                s.message()
            )
        };
        match s.code() {
            Code::Unavailable => Failure::Unreachable(Unreachable::from_string(msg())),
            Code::DeadlineExceeded => self.timeout(action, after),
            Code::Cancelled if started.elapsed() >= after => self.timeout(action, after),
            _ => Failure::Network(NetworkError::from_string(msg())),
        }
    }

    /// Decodes a reply: `Result<T, Fatal>` in postcard.
    fn decode_reply<T: DeserializeOwned>(
        &self,
        action: RPCTypes,
        data: &[u8],
    ) -> Result<T, Failure> {
        match postcard::from_bytes::<Result<T, Fatal<TypeConfig>>>(data) {
            Ok(Ok(v)) => Ok(v),
            // The remote Raft has stopped: it cannot answer until restarted,
            // so back off like for any unreachable node.
            Ok(Err(fatal)) => Err(Failure::Unreachable(Unreachable::from_string(format!(
                "{action} to node {}: remote raft stopped: {fatal}",
                self.target
            )))),
            Err(e) => Err(Failure::Network(NetworkError::from_string(format!(
                "{action} to node {}: undecodable reply ({} bytes): {e}",
                self.target,
                data.len()
            )))),
        }
    }

    async fn unary<Req, Resp>(
        &mut self,
        kind: Unary,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, Failure>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let action = kind.rpc_type();
        let ttl = option.soft_ttl();
        let data = crate::encoding::to_vec_sized(req).map_err(|e| {
            Failure::Network(NetworkError::from_string(format!(
                "{action}: encode request: {e}"
            )))
        })?;
        let mut client = self.grpc()?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(ttl);
        let started = Instant::now();
        let call = async move {
            match kind {
                Unary::AppendEntries => client.append_entries(request).await,
                Unary::Vote => client.vote(request).await,
                Unary::PreVote => client.pre_vote(request).await,
                Unary::TransferLeader => client.transfer_leader(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Err(_elapsed) => return Err(self.timeout(action, ttl)),
            Ok(Err(status)) => return Err(self.status_failure(action, ttl, started, status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        self.decode_reply(action, &reply.data)
    }

    /// Sends a `Forward` call (a client command a follower passes to the
    /// leader); the bytes are opaque to this crate.
    pub async fn forward(
        &mut self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        let mut client = self
            .inner
            .clone()
            .map_err(|m| Status::unavailable(m.to_string()))?;
        let mut request = tonic::Request::new(Payload { data: payload });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.forward(request)).await {
            Err(_) => Err(Status::deadline_exceeded("forward: timed out")),
            Ok(r) => r.map(|r| r.into_inner().data),
        }
    }

    /// Opens the `Presence` stream to this peer (see
    /// [`crate::leader_watch`]); fails if it cannot be opened in `timeout`.
    pub async fn presence(&self, timeout: Duration) -> Result<tonic::Streaming<Payload>, Status> {
        let mut client = self
            .inner
            .clone()
            .map_err(|m| Status::unavailable(m.to_string()))?;
        // No grpc-timeout: the stream is meant to stay open.
        let request = tonic::Request::new(Payload { data: Vec::new() });
        match tokio::time::timeout(timeout, client.presence(request)).await {
            Err(_) => Err(Status::deadline_exceeded("presence: timed out")),
            Ok(r) => r.map(|r| r.into_inner()),
        }
    }

    /// Sends a `ReadIndex` call (a follower asks the leader for a read index);
    /// the bytes are opaque to this crate.
    pub async fn read_index(
        &mut self,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Status> {
        let mut client = self
            .inner
            .clone()
            .map_err(|m| Status::unavailable(m.to_string()))?;
        let mut request = tonic::Request::new(Payload { data: payload });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.read_index(request)).await {
            Err(_) => Err(Status::deadline_exceeded("read_index: timed out")),
            Ok(r) => r.map(|r| r.into_inner().data),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = crate::types::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError> {
        Ok(self.unary(Unary::AppendEntries, &rpc, &option).await?)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult, RPCError>>, RPCError>>
    where
        S: Stream<Item = AppendEntriesRequest> + OptionalSend + Unpin + 'static,
    {
        self.open_append_stream(input, option)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        Ok(self.unary(Unary::Vote, &rpc, &option).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError> {
        Ok(self.unary(Unary::PreVote, &rpc, &option).await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse, RPCError> {
        Ok(self.unary(Unary::TransferLeader, &req, &option).await?)
    }

    /// Streams the snapshot as `InstallSnapshot` chunks of at most
    /// [`MAX_SNAPSHOT_CHUNK_BYTES`].
    ///
    /// openraft's `RPCOption` for snapshots carries
    /// `Config::install_snapshot_timeout`, meant per chunk; the whole transfer
    /// (including the remote install) is given that budget once per chunk,
    /// plus once more.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse, StreamingError> {
        let action = RPCTypes::InstallSnapshot;
        let encode_err = |what: &str, e: postcard::Error| {
            StreamingError::Network(NetworkError::from_string(format!(
                "{action}: encode {what}: {e}"
            )))
        };
        let vote_bytes = postcard::to_allocvec(&vote).map_err(|e| encode_err("vote", e))?;
        let meta_bytes =
            postcard::to_allocvec(&snapshot.meta).map_err(|e| encode_err("meta", e))?;
        let mut client = self.grpc()?;

        let chunk_bytes = self
            .config
            .snapshot_chunk_bytes
            .min(
                option
                    .snapshot_chunk_size()
                    .unwrap_or(MAX_SNAPSHOT_CHUNK_BYTES),
            )
            .clamp(1, MAX_SNAPSHOT_CHUNK_BYTES);
        // A snapshot built here is written out now, at low priority: the
        // requests this member serves meanwhile come first. A failure is
        // the transfer's, retried later; the member goes on.
        let data = crate::thread_priority::run_in_background("cairn-raft-snapshot", move || {
            snapshot.snapshot.written()
        })
        .await
        .and_then(|written| written)
        .map_err(|e| {
            StreamingError::Network(NetworkError::from_string(format!(
                "{action}: write snapshot: {e}"
            )))
        })?;
        let read_failed = Arc::new(Mutex::new(None));
        let (n, chunks) = snapshot_chunks(
            vote_bytes,
            meta_bytes,
            data,
            chunk_bytes,
            read_failed.clone(),
        );

        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let budget = option.soft_ttl().saturating_mul(n.saturating_add(1));

        let mut request = tonic::Request::new(chunks);
        request.set_timeout(budget);
        let started = Instant::now();
        let call = tokio::time::timeout(budget, client.install_snapshot(request));

        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => match r {
                Err(_elapsed) => return Err(self.timeout(action, budget).into()),
                Ok(Err(status)) => {
                    return Err(self.status_failure(action, budget, started, status).into())
                }
                Ok(Ok(reply)) => reply.into_inner(),
            },
        };
        // A read error ends the stream early, without `done`: the receiver
        // installs nothing and says so; the error here says why.
        if let Some(e) = read_failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(StreamingError::Network(NetworkError::from_string(format!(
                "{action}: read snapshot: {e}"
            ))));
        }
        Ok(self.decode_reply(action, &reply.data)?)
    }
}

/// The snapshot as chunks of `chunk_bytes`, read one at a time (from the
/// snapshot file, off the runtime) as the transport asks for them: the
/// first carries the vote and meta, the last has `done` set. An empty
/// snapshot is one chunk. A read error is put in `failed` and ends the
/// stream. Returns the number of chunks too.
fn snapshot_chunks(
    vote: Vec<u8>,
    meta: Vec<u8>,
    data: Written,
    chunk_bytes: usize,
    failed: Arc<Mutex<Option<io::Error>>>,
) -> (usize, impl Stream<Item = SnapshotChunk> + Send + 'static) {
    let chunk_bytes = chunk_bytes.max(1);
    let len = data.len();
    let n = usize::try_from(len.div_ceil(chunk_bytes as u64))
        .unwrap_or(usize::MAX)
        .max(1);
    let data = Arc::new(data);
    let state = (0usize, Some(vote), Some(meta));
    let chunks = futures::stream::unfold(state, move |(i, mut vote, mut meta)| {
        let (data, failed) = (data.clone(), failed.clone());
        async move {
            if i >= n {
                return None;
            }
            let pos = (i as u64).saturating_mul(chunk_bytes as u64);
            let read = tokio::task::spawn_blocking(move || data.read_chunk(pos, chunk_bytes))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        *f = Some(e);
                    }
                    return None;
                }
            };
            let chunk = SnapshotChunk {
                vote: vote.take().unwrap_or_default(),
                meta: meta.take().unwrap_or_default(),
                data: bytes,
                done: i + 1 == n,
            };
            Some((chunk, (i + 1, vote, meta)))
        }
    });
    (n, chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SnapshotData;
    use futures::StreamExt as _;

    async fn chunks_of(
        data: SnapshotData,
        chunk_bytes: usize,
    ) -> (usize, Vec<SnapshotChunk>, Option<io::Error>) {
        let failed = Arc::new(Mutex::new(None));
        let data = data.written().unwrap();
        let (n, chunks) = snapshot_chunks(vec![1], vec![2], data, chunk_bytes, failed.clone());
        let chunks = chunks.collect().await;
        let failed = failed.lock().unwrap().take();
        (n, chunks, failed)
    }

    #[tokio::test]
    async fn chunks_cover_the_snapshot() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let (n, chunks, failed) = chunks_of(SnapshotData::Bytes(data.clone()), 4096).await;
        assert!(failed.is_none());
        assert_eq!(n, 3);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].vote, vec![1]);
        assert_eq!(chunks[0].meta, vec![2]);
        assert!(chunks[1].vote.is_empty() && chunks[1].meta.is_empty());
        assert!(!chunks[0].done && !chunks[1].done && chunks[2].done);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, data);

        let (n, empty, _) = chunks_of(SnapshotData::Bytes(Vec::new()), 4096).await;
        assert_eq!((n, empty.len()), (1, 1));
        assert!(empty[0].done && empty[0].data.is_empty());

        let (n, exact, _) = chunks_of(SnapshotData::Bytes(vec![7; 8192]), 4096).await;
        assert_eq!((n, exact.len()), (2, 2));
    }

    #[tokio::test]
    async fn a_read_error_ends_the_stream_before_done_and_is_kept() {
        use std::io::Write as _;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[5; 6000]).unwrap();
        // The file is shorter than the data it claims to hold.
        let data = SnapshotData::File {
            file: Arc::new(file),
            offset: 0,
            len: 10_000,
        };
        let (n, chunks, failed) = chunks_of(data, 4096).await;
        assert_eq!(n, 3);
        assert_eq!(chunks.len(), 1, "the second read fails");
        assert!(!chunks[0].done);
        assert_eq!(failed.unwrap().kind(), io::ErrorKind::UnexpectedEof);
    }
}
