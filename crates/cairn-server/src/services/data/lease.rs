//! The etcd Lease service. Grants, revokes and keep-alives are replicated
//! commands carrying the cluster time they were proposed at; time-to-live
//! and the lease list are linearizable reads of the local store.

use std::sync::Arc;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_store::auth::Access;
use cairn_store::{Command, CommandResult, StoreError};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::kv::unexpected;
use super::until_stopped;
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::services::common::{header, RequestStream};

/// Keep-alive responses queued for one stream; the stream stops reading
/// requests while the client does not read responses.
const KEEP_ALIVE_QUEUE: usize = 16;

pub struct LeaseService {
    node: Arc<Node>,
    /// True once the node stopped; ends keep-alive streams.
    stopped: watch::Receiver<bool>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>, stopped: watch::Receiver<bool>) -> Self {
        LeaseService { node, stopped }
    }
}

/// Renew one lease. An unknown lease is not an error on this stream: etcd
/// answers it with TTL 0 and keeps the stream open.
async fn keep_alive_once(
    node: &Node,
    caller: &Caller,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let command = Command::LeaseKeepAlive {
        id,
        now_ms: node.clock.now_ms(),
    };
    match node.write_as(caller, command).await {
        Ok(CommandResult::LeaseKeepAlive(r)) => Ok(pb::LeaseKeepAliveResponse {
            header: Some(header(node, Some(r.revision))),
            id: r.id,
            ttl: r.ttl_secs,
        }),
        Ok(other) => Err(unexpected("lease keep-alive", other)),
        Err(ServerError::Store(StoreError::LeaseNotFound)) => Ok(pb::LeaseKeepAliveResponse {
            header: Some(header(node, None)),
            id,
            ttl: 0,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Whole seconds left of `remaining_ms`, rounded up, never negative.
fn remaining_secs(remaining_ms: i64) -> i64 {
    (remaining_ms.max(0) + 999) / 1000
}

/// A keep-alive stream's answers.
pub type KeepAliveStream =
    futures::stream::BoxStream<'static, Result<pb::LeaseKeepAliveResponse, Status>>;

impl LeaseService {
    /// A keep-alive stream over `request`'s stream of requests, which gRPC
    /// or the JSON gateway decoded: one answer per request, until the
    /// client closes its side.
    pub async fn keep_alive(
        &self,
        request: Request<RequestStream<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let leader_watch = crate::require_leader::guard(&self.node, &request)?;
        // The stream runs as whoever opened it.
        let caller = Caller::of(&self.node, &request).await?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_QUEUE);
        let node = self.node.clone();
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    _ = until_stopped(&mut stopped) => {
                        let _ = tx.try_send(Err(ServerError::Stopped.into()));
                        return;
                    }
                    next = incoming.next() => next,
                };
                // The client closed its side (or the connection broke).
                let Some(Ok(req)) = next else { return };
                let resp = keep_alive_once(&node, &caller, req.id).await;
                let failed = resp.is_err();
                // An error ends the stream, as in etcd; the client opens a
                // new one.
                let sent = tokio::select! {
                    sent = tx.send(resp) => sent.is_ok(),
                    _ = until_stopped(&mut stopped) => false,
                };
                if !sent || failed {
                    return;
                }
            }
        });
        Ok(Response::new(crate::require_leader::end_when_lost(
            ReceiverStream::new(rx).boxed(),
            leader_watch,
        )))
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let command = Command::LeaseGrant {
            id: req.id,
            ttl_secs: req.ttl,
            now_ms: self.node.clock.now_ms(),
        };
        match self.node.write_as(&caller, command).await? {
            CommandResult::LeaseGrant(r) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(header(&self.node, Some(r.revision))),
                id: r.id,
                ttl: r.ttl_secs,
                error: String::new(),
            })),
            other => Err(unexpected("lease grant", other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let id = request.into_inner().id;
        match self
            .node
            .write_as(&caller, Command::LeaseRevoke { id })
            .await?
        {
            CommandResult::LeaseRevoke { revision } => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(header(&self.node, Some(revision))),
            })),
            other => Err(unexpected("lease revoke", other)),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.keep_alive(request.map(StreamExt::boxed)).await
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let (info, store_now_ms, revision) = {
            let store = self.node.store();
            (store.lease_info(req.id), store.now_ms(), store.revision())
        };
        let header = Some(header(&self.node, Some(revision)));
        let Some(info) = info else {
            // etcd reports a lease that does not exist with TTL -1.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        // Key names are data: listing them takes read permission on each
        // (as etcd since its fix for CVE-2023-32082; the TTL alone needs none).
        if req.keys {
            for key in &info.keys {
                caller
                    .require(
                        &self.node,
                        &cairn_store::KeyRange::single(key.clone()),
                        Access::Read,
                    )
                    .await?;
            }
        }
        // The store's time moves only with ticks; count down between them
        // with the time elapsed since, as this node estimates it.
        let since_store_ms = self.node.clock.now_ms().saturating_sub(store_now_ms);
        let since_store_ms = i64::try_from(since_store_ms).unwrap_or(i64::MAX);
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id: info.id,
            ttl: remaining_secs(info.remaining_ms.saturating_sub(since_store_ms)),
            granted_ttl: info.granted_ttl_secs,
            keys: if req.keys { info.keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Caller::of(&self.node, &request).await?;
        self.node.read_barrier().await?;
        let (ids, revision) = {
            let store = self.node.store();
            (store.lease_ids(), store.revision())
        };
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(header(&self.node, Some(revision))),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::remaining_secs;

    #[test]
    fn remaining_ttl_rounds_up_and_never_goes_negative() {
        assert_eq!(remaining_secs(10_000), 10);
        assert_eq!(remaining_secs(9_001), 10);
        assert_eq!(remaining_secs(1), 1);
        assert_eq!(remaining_secs(0), 0);
        assert_eq!(remaining_secs(-500), 0);
    }
}
