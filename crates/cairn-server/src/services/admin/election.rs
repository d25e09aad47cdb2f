//! etcd's Election service (`v3electionpb`) on the queue of
//! [`super::recipe`], as etcd's `v3election` server runs
//! `concurrency.Election`.
//!
//! A candidate's key `<name>/<lease hex>` holds its proposed value; the
//! oldest key under `<name>/` is the leader, and its value the election's
//! value. A `LeaderKey{name, key, rev, lease}` names a leadership: `rev` is
//! the key's create revision, so a leadership that ended (key deleted and
//! perhaps re-created) is never mistaken for the current one.

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::v3electionpb as pb;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_store::auth::Access;
use cairn_store::{
    Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RequestOp, TxnRequest,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::recipe::{self, HubWatch, LeaveOnDrop, Turn};
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::services::common::{header, kv_to_wire};

/// Leader changes queued for one `Observe` stream.
const OBSERVE_QUEUE: usize = 16;

pub struct ElectionService {
    node: Arc<Node>,
}

impl ElectionService {
    pub fn new(node: Arc<Node>) -> Self {
        ElectionService { node }
    }
}

/// etcd's `concurrency.ErrElectionNotLeader`.
fn not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}

/// etcd's `concurrency.ErrElectionNoLeader`.
fn no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}

/// The candidate's key went away (its lease expired) before it led.
fn session_expired() -> Status {
    Status::new(Code::Unknown, "election: session is expired")
}

/// etcd's `ErrMissingLeaderKey`.
fn missing_leader_key() -> Status {
    Status::invalid_argument("\"leader\" field must be provided")
}

/// Set the leader's value if `key` still has create revision `rev`.
/// Returns the revision, or `None` if that leadership is over.
async fn proclaim(
    node: &Node,
    caller: &Caller,
    key: &[u8],
    rev: i64,
    value: Vec<u8>,
) -> Result<Option<i64>, ServerError> {
    let resp = recipe::txn(
        node,
        caller,
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Create(rev),
                range: KeyRange::single(key),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: key.to_vec(),
                value,
                ignore_lease: true,
                ..Default::default()
            })],
            failure: Vec::new(),
        },
    )
    .await?;
    Ok(resp.succeeded.then_some(resp.revision))
}

/// Send the election's leader to `out` now and after every change (of
/// leader or of its value) until the client goes away or the node stops.
async fn observe(
    node: Arc<Node>,
    prefix: Vec<u8>,
    out: mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) {
    if let Err(e) = node.read_barrier().await {
        let _ = out.send(Err(e.into())).await;
        return;
    }
    let range = KeyRange::prefix(prefix.clone());
    let mut watch: Option<HubWatch> = None;
    // (key, mod revision) of the leader last sent.
    let mut last: Option<(Vec<u8>, i64)> = None;
    loop {
        let (leader, revision) = {
            let store = node.store();
            (recipe::first_created(&store, &prefix), store.revision())
        };
        let leader = match leader {
            Ok(l) => l,
            Err(e) => {
                let _ = out.send(Err(ServerError::from(e).into())).await;
                return;
            }
        };
        if watch.is_none() {
            // From the revision just read: no change can slip between.
            match HubWatch::new(node.hub.clone(), std::slice::from_ref(&range), revision + 1) {
                Ok(w) => watch = Some(w),
                Err(e) => {
                    let _ = out.send(Err(e.into())).await;
                    return;
                }
            }
        }
        if let Some(kv) = leader {
            let id = (kv.key.clone(), kv.mod_revision);
            if last.as_ref() != Some(&id) {
                let msg = pb::LeaderResponse {
                    header: Some(header(&node, Some(revision))),
                    kv: Some(kv_to_wire(kv)),
                };
                tokio::select! {
                    sent = out.send(Ok(msg)) => if sent.is_err() { return },
                    _ = recipe::stopped(&node) => return,
                }
                last = Some(id);
            }
        }
        let Some(w) = watch.as_mut() else { return };
        tokio::select! {
            msg = w.changed() => {
                if matches!(msg, crate::watch_hub::WatchMessage::Compacted { .. }) {
                    watch = None;
                }
            }
            _ = out.closed() => return,
            _ = recipe::stopped(&node) => {
                let _ = out.try_send(Err(ServerError::Stopped.into()));
                return;
            }
        }
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    /// Wait until the caller leads the election `name`, its key holding
    /// `value` (an existing key of the same lease is reused and given the
    /// value), and return the leadership.
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let node = &self.node;
        let lease = recipe::session_lease(node, &caller, req.lease).await?;
        let prefix = recipe::queue_prefix(&req.name);
        let key = recipe::queue_key(&prefix, lease);
        let joined = recipe::join(node, &caller, &prefix, &key, req.value.clone(), lease).await?;
        let rev = joined.create_revision;
        // A failed or abandoned campaign resigns (etcd resigns on cancel).
        let leave = LeaveOnDrop::new(node.clone(), caller.clone(), key.clone(), joined.revision);
        let mut revision = joined.revision;
        if !joined.first {
            match recipe::wait_turn(node, &prefix, &key, rev).await? {
                Turn::Mine { revision: r } => revision = r,
                Turn::Lost => {
                    leave.disarm();
                    return Err(session_expired());
                }
            }
        }
        leave.disarm();
        Ok(Response::new(pb::CampaignResponse {
            header: Some(header(node, Some(revision))),
            leader: Some(pb::LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let leader = req.leader.ok_or_else(missing_leader_key)?;
        let revision = proclaim(&self.node, &caller, &leader.key, leader.rev, req.value)
            .await?
            .ok_or_else(not_leader)?;
        Ok(Response::new(pb::ProclaimResponse {
            header: Some(header(&self.node, Some(revision))),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let prefix = recipe::queue_prefix(&request.into_inner().name);
        caller
            .require(&self.node, &KeyRange::prefix(prefix.clone()), Access::Read)
            .await?;
        self.node.read_barrier().await?;
        let (leader, revision) = {
            let store = self.node.store();
            let leader = recipe::first_created(&store, &prefix).map_err(ServerError::from)?;
            (leader, store.revision())
        };
        let kv = leader.ok_or_else(no_leader)?;
        Ok(Response::new(pb::LeaderResponse {
            header: Some(header(&self.node, Some(revision))),
            kv: Some(kv_to_wire(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let leader_watch = crate::require_leader::guard(&self.node, &request)?;
        let caller = Caller::of(&self.node, &request).await?;
        let prefix = recipe::queue_prefix(&request.into_inner().name);
        caller
            .require(&self.node, &KeyRange::prefix(prefix.clone()), Access::Read)
            .await?;
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE);
        tokio::spawn(observe(self.node.clone(), prefix, tx));
        Ok(Response::new(crate::require_leader::end_when_lost(
            futures::StreamExt::boxed(ReceiverStream::new(rx)),
            leader_watch,
        )))
    }

    /// End the leadership (or candidacy) named by `leader`, if it still
    /// stands; succeeds either way, as etcd's.
    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let leader = request.into_inner().leader.ok_or_else(missing_leader_key)?;
        let revision =
            recipe::delete_if_created_at(&self.node, &caller, &leader.key, leader.rev).await?;
        Ok(Response::new(pb::ResignResponse {
            header: Some(header(&self.node, Some(revision))),
        }))
    }
}
