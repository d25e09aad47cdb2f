//! `cairn.v1.Session`: a session is a lease. Create = grant, keepalive =
//! lease keep-alive, close = revoke; expiry comes from the leader's
//! replicated ticks, so a session's TTL keeps counting across leader
//! changes.

use std::sync::Arc;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::cairn::v1::session_server::Session;
use cairn_store::{Command, CommandResult, StoreError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::unexpected;
use super::wait::stopped;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;

/// Keepalive responses queued per stream; the stream stops reading
/// requests while the client does not read responses.
const KEEP_ALIVE_QUEUE: usize = 16;

pub struct SessionService {
    node: Arc<Node>,
}

impl SessionService {
    pub fn new(node: Arc<Node>) -> Self {
        SessionService { node }
    }
}

async fn keep_alive_once(
    node: &Node,
    caller: &Caller,
    id: i64,
) -> Result<pb::KeepAliveResponse, Status> {
    let command = Command::LeaseKeepAlive {
        id,
        now_ms: node.clock.now_ms(),
    };
    match node.write_as(caller, command).await {
        Ok(CommandResult::LeaseKeepAlive(r)) => Ok(pb::KeepAliveResponse {
            session_id: r.id,
            ttl_secs: r.ttl_secs,
            lost: false,
        }),
        Ok(other) => Err(unexpected("keepalive", &other)),
        Err(ServerError::Store(StoreError::LeaseNotFound)) => Ok(pb::KeepAliveResponse {
            session_id: id,
            ttl_secs: 0,
            lost: true,
        }),
        Err(e) => Err(e.into()),
    }
}

#[tonic::async_trait]
impl Session for SessionService {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let ttl_secs = request.into_inner().ttl_secs;
        if ttl_secs <= 0 {
            return Err(Status::invalid_argument("cairn: ttl_secs must be positive"));
        }
        let command = Command::LeaseGrant {
            id: 0,
            ttl_secs,
            now_ms: self.node.clock.now_ms(),
        };
        match self.node.write_as(&caller, command).await? {
            CommandResult::LeaseGrant(g) => Ok(Response::new(pb::CreateSessionResponse {
                session_id: g.id,
                ttl_secs: g.ttl_secs,
                revision: g.revision,
            })),
            other => Err(unexpected("create session", &other)),
        }
    }

    type KeepAliveStream = ReceiverStream<Result<pb::KeepAliveResponse, Status>>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    _ = stopped(&node) => {
                        let _ = tx.try_send(Err(ServerError::Stopped.into()));
                        return;
                    }
                    next = incoming.next() => next,
                };
                let Some(Ok(req)) = next else { return };
                let resp = keep_alive_once(&node, &caller, req.session_id).await;
                let failed = resp.is_err();
                let sent = tokio::select! {
                    sent = tx.send(resp) => sent.is_ok(),
                    _ = stopped(&node) => false,
                };
                // An error ends the stream; the client opens a new one.
                if !sent || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let id = request.into_inner().session_id;
        match self
            .node
            .write_as(&caller, Command::LeaseRevoke { id })
            .await
        {
            Ok(CommandResult::LeaseRevoke { revision }) => {
                Ok(Response::new(pb::CloseSessionResponse { revision }))
            }
            Ok(other) => Err(unexpected("close session", &other)),
            Err(ServerError::Store(StoreError::LeaseNotFound)) => Err(Status::not_found(
                "cairn: session not found (expired or closed)",
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn session_info(
        &self,
        request: Request<pb::SessionInfoRequest>,
    ) -> Result<Response<pb::SessionInfoResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let id = request.into_inner().session_id;
        self.node.read_barrier().await?;
        let (info, store_now_ms, revision) = {
            let store = self.node.store();
            (store.lease_info(id), store.now_ms(), store.revision())
        };
        let Some(info) = info else {
            return Ok(Response::new(pb::SessionInfoResponse {
                found: false,
                revision,
                ..Default::default()
            }));
        };
        // Store time moves with ticks; count down in between with the
        // time this member estimates has passed since.
        let since_ms = self.node.clock.now_ms().saturating_sub(store_now_ms);
        let since_ms = i64::try_from(since_ms).unwrap_or(i64::MAX);
        Ok(Response::new(pb::SessionInfoResponse {
            found: true,
            granted_ttl_secs: info.granted_ttl_secs,
            remaining_ms: info.remaining_ms.saturating_sub(since_ms).max(0),
            revision,
        }))
    }
}
