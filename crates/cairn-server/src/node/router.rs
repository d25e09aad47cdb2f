//! Getting requests to the leader: local proposal when this node leads,
//! forwarding over the peer port when it does not, retrying only when the
//! request certainly did not reach the log.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::raft::v1::Payload;
use cairn_proto::status::is_connect_error;
use cairn_raft::cluster_check::{peer_grpc, PeerGrpc};
use cairn_raft::coalesce::Connector;
use cairn_raft::network::{dial_target, PeerTls};
use cairn_raft::types::{CairnNode, ClientWriteError, Request};
use cairn_store::{Command, CommandResult};
use futures::StreamExt;
use openraft::ReadPolicy;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::forward::{decode, encode, ForwardRequest, ForwardResponse, LeaderRead};
use super::forward_stream::{CallError, ForwardStream};
use super::Raft;
use crate::clock::ClusterClock;
use crate::error::ServerError;
use crate::proposer::BatchSink;

/// The largest forwarded request or answer.
const MAX_FORWARD_BYTES: usize = 256 * 1024 * 1024;

/// Pause between attempts while no leader is known or it moved.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub struct Router {
    pub(crate) raft: Raft,
    /// Peer channels by URL, reused across requests.
    channels: Mutex<HashMap<String, Channel>>,
    /// The stream forwarded requests take to the leader, opened on first
    /// use and again when the leader changes or the stream breaks.
    forward_stream: tokio::sync::Mutex<Option<Arc<ForwardStream>>>,
    /// A leader that does not serve `ForwardStream` (an older member in a
    /// rolling upgrade), by ID and term: requests go to it one `Forward`
    /// call each. Only for that term: a member restarted upgraded must
    /// win an election to lead again, and then it is asked afresh.
    unary_leader: Mutex<Option<(u64, u64)>>,
    /// Forward streams opened so far (`/metrics`): more than one per
    /// leader change means streams break.
    streams_opened: AtomicU64,
    /// `Forward` calls made to a leader without `ForwardStream` (`/metrics`).
    forward_calls: AtomicU64,
    /// Longest a request may wait for a leader and an answer.
    pub(crate) request_timeout: Duration,
    /// This member's cluster time: what it proposes as leader carries it
    /// (see `Command::restamp`), whoever stamped the request first.
    clock: Arc<ClusterClock>,
    /// Named in every peer call (`cairn_raft::cluster_check`).
    cluster_id: u64,
    /// How to dial `https://` members; `None` when peers talk plain HTTP/2.
    tls: Option<PeerTls>,
}

/// How a forwarded request reaches the leader.
enum Route {
    Stream(Arc<ForwardStream>),
    /// One `Forward` call per request (a leader without `ForwardStream`).
    Call,
    /// Not reachable now (why): nothing was sent.
    Unreachable(String),
}

/// One command's fate in a local proposal.
enum Outcome {
    Done(Result<CommandResult, ServerError>),
    /// Refused before it was appended: safe to send elsewhere.
    NotAppended,
}

impl Router {
    pub fn new(
        raft: Raft,
        request_timeout: Duration,
        clock: Arc<ClusterClock>,
        cluster_id: u64,
        tls: Option<PeerTls>,
    ) -> Self {
        Router {
            tls,
            raft,
            channels: Mutex::new(HashMap::new()),
            forward_stream: tokio::sync::Mutex::new(None),
            unary_leader: Mutex::new(None),
            streams_opened: AtomicU64::new(0),
            forward_calls: AtomicU64::new(0),
            request_timeout,
            clock,
            cluster_id,
        }
    }

    /// The current leader's ID and node, waiting (bounded) while an election runs.
    pub async fn leader(&self, deadline: Instant) -> Result<(u64, CairnNode), ServerError> {
        loop {
            let m = self.raft.metrics().borrow_watched().clone();
            if let Some(id) = m.current_leader {
                if let Some(node) = m.membership_config.membership().get_node(&id) {
                    return Ok((id, node.clone()));
                }
            }
            if Instant::now() + RETRY_PAUSE > deadline {
                return Err(ServerError::NoLeader);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    fn channel(&self, url: &str) -> Result<Channel, ServerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let bad =
            |e: tonic::transport::Error| ServerError::Internal(format!("bad peer URL {url}: {e}"));
        let (dialed, connector) = dial_target(url, self.tls.as_ref(), Connector::new(None))
            .map_err(ServerError::Internal)?;
        let ch = Endpoint::from_shared(dialed)
            .map_err(bad)?
            .connect_timeout(Duration::from_secs(1))
            // A leader that stops answering (SIGSTOP, a dead host) closes
            // the connection after a missed ping, and with it the forward
            // stream, whose reader would otherwise wait on it for good.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_with_connector_lazy(connector);
        channels.insert(url.to_string(), ch.clone());
        Ok(ch)
    }

    /// Send `req` to the leader and return its answer. Retries while the
    /// request cannot have been acted on (no leader, connection refused,
    /// the addressee is not the leader).
    pub async fn forward(&self, req: &ForwardRequest) -> Result<ForwardResponse, ServerError> {
        let deadline = Instant::now() + self.request_timeout;
        let payload = encode(req)?;
        loop {
            let (leader_id, node) = self.leader(deadline).await?;
            if leader_id == *self.raft.node_id() {
                return Err(ServerError::NotLeader {
                    leader_id,
                    leader_client_url: first_url(&node),
                });
            }
            let delivered = match self.route_to(leader_id, &node, deadline).await? {
                Route::Stream(stream) => {
                    self.forward_on_stream(&stream, &payload, deadline).await?
                }
                Route::Call => {
                    self.forward_call(leader_id, &node, &payload, deadline)
                        .await?
                }
                Route::Unreachable(why) => {
                    tracing::debug!("forward to leader {leader_id:x} not sent: {why}");
                    None
                }
            };
            if let Some(answer) = delivered {
                match answer {
                    Err(ServerError::NotLeader { .. }) | Err(ServerError::NoLeader) => {}
                    other => return other,
                }
            }
            if Instant::now() + RETRY_PAUSE > deadline {
                return Err(ServerError::Timeout);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Streams to a leader opened so far, for `/metrics`.
    pub fn forward_streams_opened(&self) -> u64 {
        self.streams_opened.load(Ordering::Relaxed)
    }

    /// The leader this member's forward stream goes to, while one is open
    /// and no request is choosing its route; for tests and diagnostics.
    pub fn forward_stream_leader(&self) -> Option<u64> {
        let slot = self.forward_stream.try_lock().ok()?;
        slot.as_ref().filter(|s| s.is_open()).map(|s| s.leader_id)
    }

    /// `Forward` calls made so far (to leaders without `ForwardStream`),
    /// for `/metrics`.
    pub fn forward_calls(&self) -> u64 {
        self.forward_calls.load(Ordering::Relaxed)
    }

    /// How to reach `leader_id`: its open stream (opened if need be), a
    /// call per request for a leader that only takes those, or not yet.
    /// Fails only on a bad URL.
    async fn route_to(
        &self,
        leader_id: u64,
        node: &CairnNode,
        deadline: Instant,
    ) -> Result<Route, ServerError> {
        let marked = *self.unary_leader.lock().unwrap_or_else(|p| p.into_inner());
        if marked.is_some_and(|(id, term)| id == leader_id && term == self.current_term()) {
            return Ok(Route::Call);
        }
        let mut slot = self.forward_stream.lock().await;
        if let Some(stream) = slot.as_ref() {
            if stream.leader_id == leader_id && stream.is_open() {
                return Ok(Route::Stream(stream.clone()));
            }
        }
        *slot = None;
        // The term the leader would be marked for, read before asking it.
        let term = self.current_term();
        let client = self.peer_client(&node.peer_url)?;
        let opened =
            tokio::time::timeout_at(deadline, ForwardStream::open(client, leader_id)).await;
        Ok(match opened {
            Ok(Ok(stream)) => {
                self.streams_opened.fetch_add(1, Ordering::Relaxed);
                let stream = Arc::new(stream);
                *slot = Some(stream.clone());
                Route::Stream(stream)
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
                *self.unary_leader.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((leader_id, term));
                Route::Call
            }
            // Nothing was sent; the next attempt opens again.
            Ok(Err(s)) => Route::Unreachable(s.to_string()),
            Err(_) => Route::Unreachable("opening the stream timed out".into()),
        })
    }

    fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// One attempt on the stream: the leader's answer, `None` if the
    /// request never left (safe to retry), or an error whose outcome is
    /// unknown.
    async fn forward_on_stream(
        &self,
        stream: &ForwardStream,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<Option<Result<ForwardResponse, ServerError>>, ServerError> {
        let leader_id = stream.leader_id;
        match stream.call(payload.to_vec(), deadline).await {
            Ok(bytes) => Ok(Some(decode(&bytes)?)),
            Err(CallError::NotSent(why)) => {
                tracing::debug!("forward to leader {leader_id:x} not sent: {why}");
                Ok(None)
            }
            Err(CallError::Timeout) => Err(ServerError::Timeout),
            Err(CallError::Lost(why)) => {
                tracing::debug!("forward to leader {leader_id:x} lost: {why}");
                Err(ServerError::LeaderFailed)
            }
            Err(CallError::Status(s)) => Err(unknown_outcome(leader_id, &s)),
        }
    }

    /// One `Forward` call, for a leader without `ForwardStream`; the same
    /// outcomes as [`Self::forward_on_stream`].
    async fn forward_call(
        &self,
        leader_id: u64,
        node: &CairnNode,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<Option<Result<ForwardResponse, ServerError>>, ServerError> {
        let mut client = self.peer_client(&node.peer_url)?;
        let mut request = tonic::Request::new(Payload {
            data: payload.to_vec(),
        });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        self.forward_calls.fetch_add(1, Ordering::Relaxed);
        match client.forward(request).await {
            Ok(resp) => Ok(Some(decode(&resp.into_inner().data)?)),
            // Nothing was delivered: try again once a leader is reachable.
            Err(s) if s.code() == tonic::Code::Unavailable && is_connect_error(&s) => Ok(None),
            Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ServerError::Timeout),
            Err(s) => Err(unknown_outcome(leader_id, &s)),
        }
    }

    /// A peer client on the shared channel to `peer_url`, sized for
    /// forwarded messages.
    fn peer_client(&self, peer_url: &str) -> Result<PeerGrpc, ServerError> {
        Ok(peer_grpc(
            self.channel(peer_url)?,
            Some(self.cluster_id),
            MAX_FORWARD_BYTES,
        ))
    }

    /// One `Forward` call to the member at `peer_url`, whoever leads: for
    /// the requests any member answers.
    pub async fn ask_member(
        &self,
        peer_url: &str,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ServerError> {
        let mut client = self.peer_client(peer_url)?;
        let mut request = tonic::Request::new(Payload { data: encode(req)? });
        request.set_timeout(timeout);
        let answer = tokio::time::timeout(timeout, client.forward(request))
            .await
            .map_err(|_| ServerError::Timeout)?
            .map_err(|s| ServerError::Internal(format!("asking {peer_url}: {s}")))?;
        decode::<Result<ForwardResponse, ServerError>>(&answer.into_inner().data)?
    }

    /// Stamps the commands with this leader's cluster time, in place:
    /// a command no one else holds is not copied.
    fn stamp<'a>(&self, commands: impl IntoIterator<Item = &'a mut Arc<Command>>) {
        let now_ms = self.clock.now_ms();
        for c in commands {
            Arc::make_mut(c).restamp(now_ms);
        }
    }

    /// Propose stamped commands on this node, which believes it leads.
    async fn propose_local(&self, commands: Vec<Arc<Command>>) -> Vec<Outcome> {
        let n = commands.len();
        let stream = match self
            .raft
            .client_write_many(commands.into_iter().map(Request))
            .await
        {
            Ok(s) => s,
            Err(fatal) => {
                return (0..n)
                    .map(|_| Outcome::Done(Err(fatal_error(&fatal))))
                    .collect();
            }
        };
        let results: Vec<_> = stream.collect().await;
        let mut out: Vec<Outcome> = results
            .into_iter()
            .map(|r| match r {
                Ok(Ok(resp)) => Outcome::Done(match resp.response {
                    CommandResult::Error(e) => Err(ServerError::Store(e)),
                    ok => Ok(ok),
                }),
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => Outcome::NotAppended,
                Ok(Err(ClientWriteError::LogEntryDiscarded(_))) => {
                    Outcome::Done(Err(ServerError::LeaderChanged))
                }
                Ok(Err(e)) => Outcome::Done(Err(ServerError::Internal(e.to_string()))),
                Err(fatal) => Outcome::Done(Err(fatal_error(&fatal))),
            })
            .collect();
        while out.len() < n {
            out.push(Outcome::Done(Err(ServerError::Stopped)));
        }
        out
    }

    /// The leader side of a forwarded batch: propose if leading, else say
    /// so (nothing appended, the sender retries elsewhere).
    pub async fn propose_as_leader(
        &self,
        mut commands: Vec<Arc<Command>>,
    ) -> Vec<Result<CommandResult, ServerError>> {
        self.stamp(&mut commands);
        self.propose_local(commands)
            .await
            .into_iter()
            .map(|o| match o {
                Outcome::Done(r) => r,
                Outcome::NotAppended => Err(ServerError::NoLeader),
            })
            .collect()
    }

    /// A follower's clock follows the leader's time from a read-index
    /// answer, as it follows the leader's stamps (clock.rs): only while
    /// it follows that term's leader, never when it leads itself.
    fn follow_leader_clock(&self, read: LeaderRead) {
        let Some(now_ms) = read.now_ms else { return };
        let follows = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.current_term == read.term && m.current_leader.is_some_and(|l| l != m.id)
        };
        if follows {
            self.clock.follow(now_ms, read.term);
        }
    }

    /// Wait until this node's state machine reflects every write committed
    /// before the call: the read index from the leader (ours or forwarded),
    /// then local apply up to it.
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            if self.raft.is_leader() {
                match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(_) => return Ok(()),
                    Err(e) if Instant::now() + RETRY_PAUSE > deadline => {
                        tracing::debug!("read index: {e}");
                        return Err(ServerError::Timeout);
                    }
                    Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                }
                continue;
            }
            let index = match self.forward(&ForwardRequest::ReadIndex).await {
                Ok(ForwardResponse::ReadIndex(read)) => {
                    self.follow_leader_clock(read);
                    read.index
                }
                Ok(other) => {
                    return Err(ServerError::Internal(format!(
                        "unexpected read index answer {other:?}"
                    )))
                }
                // We are becoming leader, or the leader went away with the
                // question (asking again changes nothing): pause, then
                // serve locally or ask whoever leads now.
                Err(ServerError::NotLeader { .. } | ServerError::LeaderFailed)
                    if Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(ServerError::NotLeader { .. } | ServerError::LeaderFailed) => {
                    return Err(ServerError::Timeout)
                }
                Err(e) => return Err(e),
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            return self
                .raft
                .wait(Some(wait))
                .applied_index_at_least(Some(index), "read index")
                .await
                .map(|_| ())
                .map_err(|_| ServerError::Timeout);
        }
    }

    /// Leader side of a forwarded read-index request.
    pub async fn read_index_as_leader(&self) -> Result<LeaderRead, ServerError> {
        if !self.raft.is_leader() {
            return Err(ServerError::NoLeader);
        }
        let linearizer = self
            .raft
            .get_read_linearizer(ReadPolicy::ReadIndex)
            .await
            .map_err(|_| ServerError::NoLeader)?;
        let read_log_id = linearizer.read_log_id();
        Ok(LeaderRead {
            index: read_log_id.index(),
            term: read_log_id.committed_leader_id().term,
            now_ms: self.clock.running_ms(),
        })
    }
}

impl BatchSink for Router {
    async fn propose_batch(
        &self,
        commands: Vec<Command>,
    ) -> Vec<Result<CommandResult, ServerError>> {
        let deadline = Instant::now() + self.request_timeout;
        // Shared from here on: a retry keeps its own reference, so the
        // proposal and the forward take no copy of a command.
        let mut commands: Vec<Arc<Command>> = commands.into_iter().map(Arc::new).collect();
        let mut results: Vec<Option<Result<CommandResult, ServerError>>> =
            vec![None; commands.len()];
        loop {
            let pending: Vec<usize> = (0..commands.len())
                .filter(|i| results[*i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            if self.raft.is_leader() {
                // Stamped before they are shared with the batch.
                self.stamp(
                    commands
                        .iter_mut()
                        .enumerate()
                        .filter(|(i, _)| results[*i].is_none())
                        .map(|(_, c)| c),
                );
                let batch = pending.iter().map(|i| commands[*i].clone()).collect();
                for (i, outcome) in pending.iter().zip(self.propose_local(batch).await) {
                    if let Outcome::Done(r) = outcome {
                        results[*i] = Some(r);
                    }
                }
            } else {
                let batch = pending.iter().map(|i| commands[*i].clone()).collect();
                let answers = match self.forward(&ForwardRequest::Commands(batch)).await {
                    Ok(ForwardResponse::Commands(rs)) if rs.len() == pending.len() => rs,
                    Ok(other) => vec![
                        Err(ServerError::Internal(format!(
                            "unexpected answer {other:?}"
                        )));
                        pending.len()
                    ],
                    // Leadership is coming to us: propose locally next round.
                    Err(ServerError::NotLeader { .. }) => Vec::new(),
                    Err(e) => vec![Err(e); pending.len()],
                };
                for (i, r) in pending.iter().zip(answers) {
                    // The leader refused before appending: try again.
                    if !matches!(r, Err(ServerError::NoLeader)) {
                        results[*i] = Some(r);
                    }
                }
            }
            if Instant::now() + RETRY_PAUSE > deadline {
                break;
            }
            if results.iter().any(Option::is_none) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ServerError::Timeout)))
            .collect()
    }
}

/// What a client hears when this member's Raft ended under its request:
/// a member stopping is `server stopped` (`Unavailable`: the request may
/// or may not have been applied), anything else is an internal failure.
fn fatal_error(fatal: &openraft::error::Fatal<cairn_raft::types::TypeConfig>) -> ServerError {
    match fatal {
        openraft::error::Fatal::Stopped => ServerError::Stopped,
        other => ServerError::Internal(other.to_string()),
    }
}

fn first_url(node: &CairnNode) -> String {
    node.client_urls.first().cloned().unwrap_or_default()
}

/// The error for a forwarded request that reached the leader, or may have,
/// and got no answer but `status`. A broken connection or a stopping
/// leader leaves its outcome unknown: etcd's "possibly due to previous
/// leader failure", which clients treat as such (`Unavailable`); anything
/// else is the leader failing the request.
fn unknown_outcome(leader_id: u64, status: &tonic::Status) -> ServerError {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
            tracing::debug!("forward to leader {leader_id:x} lost: {status}");
            ServerError::LeaderFailed
        }
        _ => ServerError::Internal(format!("forward to leader {leader_id:x}: {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::raft::v1::raft_peer_client::RaftPeerClient;
    use tonic::{Code, Status};

    #[test]
    fn only_a_failed_connect_counts_as_not_sent() {
        assert!(is_connect_error(&Status::unavailable(
            "tcp connect error: Connection refused (os error 111)"
        )));
        // A connection that broke under a call it carried.
        for broken in [
            "h2 protocol error: error reading a body from connection",
            "connection reset",
            "transport error",
        ] {
            assert!(!is_connect_error(&Status::unavailable(broken)), "{broken}");
        }
    }

    /// What a call to a port nobody listens on really returns, through
    /// the same connector as peer channels.
    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_with_connector_lazy(Connector::new(None));
        let status = RaftPeerClient::new(channel)
            .forward(Payload { data: vec![1] })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(is_connect_error(&status), "{status:?}");
    }

    #[test]
    fn a_stopped_raft_is_server_stopped_and_other_fatal_errors_internal() {
        assert_eq!(
            fatal_error(&openraft::error::Fatal::Stopped),
            ServerError::Stopped
        );
        assert!(matches!(
            fatal_error(&openraft::error::Fatal::Panicked),
            ServerError::Internal(_)
        ));
    }

    #[test]
    fn a_lost_answer_is_an_unknown_outcome_and_other_statuses_are_errors() {
        for code in [Code::Unavailable, Code::Unknown, Code::Cancelled] {
            assert_eq!(
                unknown_outcome(1, &Status::new(code, "stream broke")),
                ServerError::LeaderFailed
            );
        }
        assert!(matches!(
            unknown_outcome(1, &Status::invalid_argument("bad frame")),
            ServerError::Internal(_)
        ));
    }
}
