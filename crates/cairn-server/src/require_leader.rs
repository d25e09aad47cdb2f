//! etcd's "require leader" requests: a client that sends the metadata
//! `hasleader: true` (clientv3's `WithRequireLeader`; Kubernetes' watches
//! do) wants to hear at once when the member it talks to has no leader,
//! rather than wait on a member cut off from the cluster.
//!
//! As etcd does:
//! * a call carrying it on a member that knows no leader is refused with
//!   `Unavailable` "etcdserver: no leader" ([`RequireLeaderLayer`], before
//!   any service runs);
//! * a stream carrying it (watch, lease keep-alive, election observe) ends
//!   with that error once the member has known no leader for
//!   [`LEADERLESS_ELECTIONS`] election timeouts in a row (ending streams
//!   costs clients more than refusing calls, hence the wait), so the
//!   client moves to another member ([`LeaderWatch`]).

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::error::ServerError;
use crate::node::Node;

/// The metadata key and value etcd clients send.
pub const REQUIRE_LEADER_METADATA: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &str = "true";

/// Election timeouts without a leader after which require-leader streams
/// end (etcd's `maxNoLeaderCnt`).
pub const LEADERLESS_ELECTIONS: u32 = 3;

/// Whether a request asks for a leader.
pub fn required<T>(request: &tonic::Request<T>) -> bool {
    request
        .metadata()
        .get(REQUIRE_LEADER_METADATA)
        .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes())
}

/// Whether the member has gone without a leader for
/// [`LEADERLESS_ELECTIONS`] election timeouts; see [`watch_leader`].
#[derive(Debug, Clone)]
pub struct LeaderWatch(tokio::sync::watch::Sender<bool>);

impl Default for LeaderWatch {
    fn default() -> Self {
        LeaderWatch(tokio::sync::watch::Sender::new(false))
    }
}

impl LeaderWatch {
    /// Returns once the member has gone that long without a leader.
    pub async fn lost(&self) {
        let _ = self.0.subscribe().wait_for(|lost| *lost).await;
    }

    /// A stream's end when it required a leader and `lost` came: the
    /// error it ends with.
    pub fn error() -> tonic::Status {
        ServerError::NoLeader.into()
    }
}

/// Looks every election timeout whether `node` knows a leader, and tells
/// its [`LeaderWatch`] once it has known none for [`LEADERLESS_ELECTIONS`]
/// looks in a row (and again once it knows one). Ends with the node.
pub async fn watch_leader(node: Weak<Node>, election_timeout: Duration, watch: LeaderWatch) {
    let mut leaderless = 0u32;
    loop {
        tokio::time::sleep(election_timeout).await;
        let Some(node) = node.upgrade() else { return };
        leaderless = match node.knows_leader() {
            true => 0,
            false => leaderless.saturating_add(1),
        };
        let lost = leaderless >= LEADERLESS_ELECTIONS;
        watch
            .0
            .send_if_modified(|was| std::mem::replace(was, lost) != lost);
    }
}

/// Refuses calls carrying `hasleader: true` (gRPC) or
/// `Grpc-Metadata-Hasleader: true` (the JSON gateway) on a member that
/// knows no leader, before any service runs.
#[derive(Clone)]
pub struct RequireLeaderLayer(pub Arc<Node>);

impl<S> tower_layer::Layer<S> for RequireLeaderLayer {
    type Service = RequireLeader<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireLeader {
            inner,
            node: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireLeader<S> {
    inner: S,
    node: Arc<Node>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// grpc-gateway's form of the metadata, for JSON gateway calls.
const GATEWAY_REQUIRE_LEADER_HEADER: &str = "grpc-metadata-hasleader";

impl<S, ReqBody> tower_service::Service<http::Request<ReqBody>> for RequireLeader<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        let asks = |name: &str| {
            headers
                .get(name)
                .is_some_and(|v| v.as_bytes() == REQUIRE_LEADER_VALUE.as_bytes())
        };
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // Only a request that asks looks at Raft's metrics: this runs for
        // every call on the client port.
        let asked = match grpc {
            true => asks(REQUIRE_LEADER_METADATA),
            false => asks(GATEWAY_REQUIRE_LEADER_HEADER),
        };
        let refusal = match asked && !self.node.knows_leader() {
            false => None,
            // A trailers-only answer: the status in the headers, no body.
            true if grpc => Some(LeaderWatch::error().into_http::<tonic::body::Body>()),
            true => {
                let (parts, body) = crate::services::json_error(&LeaderWatch::error()).into_parts();
                Some(http::Response::from_parts(
                    parts,
                    tonic::body::Body::new(body),
                ))
            }
        };
        match refusal {
            Some(answer) => Box::pin(async move { Ok(answer) }),
            None => Box::pin(self.inner.call(req)),
        }
    }
}

/// For a stream request: `None` when it does not ask for a leader; the
/// member's [`LeaderWatch`] when it does and a leader is known; refused
/// when it does and none is (as the layer refuses, for requests that did
/// not pass it: the JSON gateway's).
pub fn guard<T>(
    node: &Node,
    request: &tonic::Request<T>,
) -> Result<Option<LeaderWatch>, tonic::Status> {
    if !required(request) {
        return Ok(None);
    }
    match node.knows_leader() {
        true => Ok(Some(node.leader_watch.clone())),
        false => Err(LeaderWatch::error()),
    }
}

/// `stream`, ended with the no-leader error once `watch` (from [`guard`])
/// says the leader is lost; unchanged without one.
pub fn end_when_lost<T: Send + 'static>(
    stream: futures::stream::BoxStream<'static, Result<T, tonic::Status>>,
    watch: Option<LeaderWatch>,
) -> futures::stream::BoxStream<'static, Result<T, tonic::Status>> {
    use futures::StreamExt;
    let Some(watch) = watch else { return stream };
    futures::stream::unfold(Some((stream, watch)), |state| async move {
        let (mut stream, watch) = state?;
        tokio::select! {
            item = stream.next() => item.map(|item| (item, Some((stream, watch)))),
            // Dropping the stream ends what feeds it (its watchers leave
            // the hub, a keep-alive loop stops).
            _ = watch.lost() => Some((Err(LeaderWatch::error()), None)),
        }
    })
    .boxed()
}
