//! Pipelined replication: openraft's `stream_append` over one gRPC
//! bidirectional stream (`RaftPeer.StreamAppend`) per replication session.
//!
//! openraft's default sends one AppendEntries, waits for the reply, then
//! sends the next, so a follower's fsync and a network round trip sit between
//! every two batches. Here requests flow as openraft produces them and the
//! follower (`Raft::stream_append`) writes batch N+1 while batch N is being
//! flushed; replies come back in request order on the same stream.
//!
//! Time limits: setting the stream up gets the RPC's `soft_ttl` (at least
//! [`MIN_SETUP`]); after that, a reply that is owed must arrive within
//! [`super::NetworkConfig::append_reply_timeout`]. An idle stream (every request
//! answered) has no deadline: HTTP/2 keepalive notices a dead peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::network::RPCOption;
use openraft::raft::StreamAppendResult;
use openraft::RPCTypes;
use tonic::Streaming;

use super::{Failure, PeerClient};
use crate::types::{AppendEntriesRequest, NetworkError, RPCError, TypeConfig};
use cairn_proto::raft::v1::Payload;

/// The least time given to opening a stream: the RPC's own `soft_ttl` is a
/// fraction of the heartbeat interval, tight for a first TCP connect.
const MIN_SETUP: Duration = Duration::from_millis(500);
/// How often a waiting reader checks whether an owed reply is overdue.
const OVERDUE_CHECK: Duration = Duration::from_millis(50);

type Reply = Result<StreamAppendResult<TypeConfig>, RPCError>;

/// What the request side tells the reply side.
#[derive(Default)]
struct Sent {
    /// Requests handed to gRPC so far.
    count: AtomicU64,
    /// Set when a request could not be encoded; the stream then ends.
    encode_error: Mutex<Option<String>>,
}

/// The reply side's state between two items.
struct Replies {
    client: PeerClient,
    response: Streaming<Payload>,
    sent: Arc<Sent>,
    received: u64,
    reply_timeout: Duration,
}

impl PeerClient {
    pub(super) fn open_append_stream<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Reply>, RPCError>>
    where
        S: Stream<Item = AppendEntriesRequest> + Send + Unpin + 'static,
    {
        let client = self.clone();
        Box::pin(async move {
            let action = RPCTypes::AppendEntries;
            let setup = option.soft_ttl().max(MIN_SETUP);
            let sent = Arc::new(Sent::default());
            let requests = encode_requests(input, sent.clone());
            let mut grpc = client.grpc()?;
            let started = Instant::now();
            let call = grpc.stream_append(tonic::Request::new(requests));
            let response = match tokio::time::timeout(setup, call).await {
                Err(_) => return Err(client.timeout(action, setup).into()),
                Ok(Err(status)) => {
                    return Err(client.status_failure(action, setup, started, status).into())
                }
                Ok(Ok(response)) => response.into_inner(),
            };
            let reply_timeout = client.config.append_reply_timeout;
            let state = Replies {
                client,
                response,
                sent,
                received: 0,
                reply_timeout,
            };
            let replies = futures::stream::unfold(Some(state), |state| async move {
                let mut state = state?;
                let (item, go_on) = state.next_reply().await?;
                Some((item, go_on.then_some(state)))
            });
            let replies: BoxStream<'s, Reply> = Box::pin(replies);
            Ok(replies)
        })
    }
}

/// Encodes requests as they come, counting them; an encoding failure is
/// recorded and ends the request stream.
fn encode_requests<S>(input: S, sent: Arc<Sent>) -> impl Stream<Item = Payload> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest> + Send + Unpin + 'static,
{
    input.scan(sent, |sent, req| {
        let item = match postcard::to_allocvec(&req) {
            Ok(data) => {
                sent.count.fetch_add(1, Ordering::Relaxed);
                Some(Payload { data })
            }
            Err(e) => {
                *sent.encode_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                None
            }
        };
        futures::future::ready(item)
    })
}

impl Replies {
    /// The next item for openraft and whether the stream goes on after it;
    /// `None` when the stream ended cleanly.
    async fn next_reply(&mut self) -> Option<(Reply, bool)> {
        let action = RPCTypes::AppendEntries;
        let started = Instant::now();
        let message = match self.wait_message().await {
            Ok(m) => m,
            Err(failure) => return Some((Err(failure.into()), false)),
        };
        let payload = match message {
            Ok(Some(payload)) => payload,
            Ok(None) => {
                let encode_error = self
                    .sent
                    .encode_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let e = encode_error?;
                let err = NetworkError::from_string(format!("{action}: encode request: {e}"));
                return Some((Err(RPCError::Network(err)), false));
            }
            Err(status) => {
                let timeout = self.reply_timeout;
                let f = self.client.status_failure(action, timeout, started, status);
                return Some((Err(f.into()), false));
            }
        };
        self.received += 1;
        let decoded = self
            .client
            .decode_reply::<StreamAppendResult<TypeConfig>>(action, &payload.data);
        match decoded {
            Ok(result) => {
                let go_on = result.is_ok();
                Some((Ok(result), go_on))
            }
            Err(failure) => Some((Err(failure.into()), false)),
        }
    }

    /// Waits for the next message; fails when a reply is owed for longer
    /// than the reply timeout.
    async fn wait_message(&mut self) -> Result<Result<Option<Payload>, tonic::Status>, Failure> {
        let mut owed_since: Option<Instant> = None;
        loop {
            // `Streaming::message` keeps its state in the stream, so dropping
            // the future at a timeout loses nothing.
            match tokio::time::timeout(OVERDUE_CHECK, self.response.message()).await {
                Ok(message) => return Ok(message),
                Err(_) => {
                    if self.sent.count.load(Ordering::Relaxed) <= self.received {
                        owed_since = None;
                        continue;
                    }
                    let since = *owed_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.reply_timeout {
                        return Err(self
                            .client
                            .timeout(RPCTypes::AppendEntries, self.reply_timeout));
                    }
                }
            }
        }
    }
}
