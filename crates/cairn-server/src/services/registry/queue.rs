//! `cairn.v1.Lock` and `cairn.v1.Election`: FIFO queues of sessions.
//!
//! A waiter's queue key is created by a `Join` command; its create
//! revision is its place and its **fencing token**. The oldest waiter
//! holds the lock (leads). Waiting watches the waiter just ahead (and
//! one's own key) through the watch hub: no polling. A session that ends
//! loses its place with everything else it owns, in one revision.

use std::sync::Arc;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::cairn::v1::election_server::Election;
use cairn_proto::cairn::v1::lock_server::Lock;
use cairn_store::registry::keys::{queue_key, queue_prefix};
use cairn_store::registry::RegistryResult as R;
use cairn_store::registry::{read, QueueKind, RegistryCommand as C, Waiter};
use cairn_store::KeyRange;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::wait::{stopped, Watch};
use super::{apply, check_size, unexpected};
use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;
use crate::services::Limits;

/// Pause before retrying a read barrier that found no leader.
const BARRIER_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Observe responses queued per stream.
const OBSERVE_QUEUE: usize = 16;

fn lost() -> Status {
    Status::failed_precondition("cairn: the session lost its place (session expired or closed)")
}

/// Join the queue and wait until this session heads it. Returns the
/// fencing token and the revision at which it was seen heading the queue.
async fn acquire(
    node: &Arc<Node>,
    caller: &Caller,
    kind: QueueKind,
    name: Vec<u8>,
    session: i64,
    value: Vec<u8>,
) -> Result<(i64, i64), Status> {
    let joined = apply(
        node,
        caller,
        C::Join {
            kind,
            name: name.clone(),
            session,
            value,
        },
    )
    .await?;
    let R::Joined {
        revision,
        token,
        head,
    } = joined
    else {
        return Err(unexpected("join", &joined));
    };
    if head {
        return Ok((token, revision));
    }
    let leave = LeaveOnDrop {
        armed: Some(Place {
            node: node.clone(),
            caller: caller.clone(),
            kind,
            name: name.clone(),
            session,
            token,
            joined_at: revision,
        }),
    };
    let revision = wait_for_head(node, kind, &name, session, token).await?;
    leave.disarm();
    Ok((token, revision))
}

/// Wait (by watch) until the waiter `(session, token)` heads the queue.
async fn wait_for_head(
    node: &Node,
    kind: QueueKind,
    name: &[u8],
    session: i64,
    token: i64,
) -> Result<i64, Status> {
    loop {
        // Every check sees at least what was acknowledged before it. While
        // there is no leader the wait goes on (keeping the place in the
        // queue) rather than failing and leaving.
        if let Err(e) = node.read_barrier().await {
            if !(e.is_retryable() || e == ServerError::LeaderChanged) {
                return Err(e.into());
            }
            tokio::select! {
                _ = tokio::time::sleep(BARRIER_RETRY) => continue,
                _ = stopped(node) => return Err(ServerError::Stopped.into()),
            }
        }
        let (queue, revision) = {
            let store = node.store();
            (read::queue(&store, kind, name), store.revision())
        };
        let Some(pos) = queue
            .iter()
            .position(|w| w.session == session && w.token == token)
        else {
            return Err(lost());
        };
        if pos == 0 {
            return Ok(revision);
        }
        let ahead = &queue[pos - 1];
        let ranges = [
            KeyRange::single(queue_key(kind, name, ahead.session)),
            KeyRange::single(queue_key(kind, name, session)),
        ];
        let mut watch = Watch::new(node, &ranges, revision + 1)?;
        tokio::select! {
            m = watch.next() => { m?; }
            _ = stopped(node) => return Err(ServerError::Stopped.into()),
        }
    }
}

/// Leaves the queue if the waiting call fails or is abandoned (the client
/// went away), so a place nobody waits on never becomes the holder; but
/// not a place joined again since (`RegistryCommand::Abandon`): the same
/// session's retry, e.g. on another member after a connection broke.
struct LeaveOnDrop {
    /// The place to leave; `None` once disarmed.
    armed: Option<Place>,
}

/// A queue place as one waiting call joined it.
struct Place {
    /// Where to propose the leave.
    node: Arc<Node>,
    /// Who joined (the leave runs with the same permissions).
    caller: Caller,
    kind: QueueKind,
    name: Vec<u8>,
    session: i64,
    token: i64,
    /// The revision this call's `Join` answered with: a later write of
    /// the place is another call's.
    joined_at: i64,
}

impl LeaveOnDrop {
    fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        let Some(place) = self.armed.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let cmd = C::Abandon {
                kind: place.kind,
                name: place.name,
                session: place.session,
                token: place.token,
                joined_at: place.joined_at,
            };
            if let Err(e) = apply(&place.node, &place.caller, cmd).await {
                tracing::debug!("could not leave an abandoned queue place: {e}");
            }
        });
    }
}

async fn leave(
    node: &Node,
    caller: &Caller,
    kind: QueueKind,
    name: Vec<u8>,
    session: i64,
    token: i64,
) -> Result<(bool, i64), Status> {
    let cmd = C::Leave {
        kind,
        name,
        session,
        token,
    };
    match apply(node, caller, cmd).await? {
        R::Left { revision } => Ok((true, revision)),
        R::NotHeld => Ok((false, node.store().revision())),
        other => Err(unexpected("leave", &other)),
    }
}

pub struct LockService {
    node: Arc<Node>,
}

impl LockService {
    pub fn new(node: Arc<Node>) -> Self {
        LockService { node }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let (fencing_token, revision) = acquire(
            &self.node,
            &caller,
            QueueKind::Lock,
            req.name,
            req.session_id,
            Vec::new(),
        )
        .await?;
        Ok(Response::new(pb::LockResponse {
            fencing_token,
            revision,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let (released, revision) = leave(
            &self.node,
            &caller,
            QueueKind::Lock,
            req.name,
            req.session_id,
            req.fencing_token,
        )
        .await?;
        Ok(Response::new(pb::UnlockResponse { released, revision }))
    }
}

pub struct ElectionService {
    node: Arc<Node>,
    limits: Limits,
}

impl ElectionService {
    pub fn new(node: Arc<Node>, limits: Limits) -> Self {
        ElectionService { node, limits }
    }
}

fn leader_to_wire(w: Waiter) -> pb::ElectionLeader {
    pb::ElectionLeader {
        session_id: w.session,
        value: w.value,
        fencing_token: w.token,
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        check_size(&self.limits, &req)?;
        let (fencing_token, revision) = acquire(
            &self.node,
            &caller,
            QueueKind::Election,
            req.name,
            req.session_id,
            req.value,
        )
        .await?;
        Ok(Response::new(pb::CampaignResponse {
            fencing_token,
            revision,
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        check_size(&self.limits, &req)?;
        let cmd = C::Proclaim {
            name: req.name,
            session: req.session_id,
            token: req.fencing_token,
            value: req.value,
        };
        match apply(&self.node, &caller, cmd).await? {
            R::Proclaimed { revision } => Ok(Response::new(pb::ProclaimResponse { revision })),
            R::NotLeader => Err(Status::failed_precondition("cairn: not the leader")),
            R::NotHeld => Err(Status::failed_precondition(
                "cairn: no candidacy of this session with that fencing token",
            )),
            other => Err(unexpected("proclaim", &other)),
        }
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let name = request.into_inner().name;
        self.node.read_barrier().await?;
        let store = self.node.store();
        Ok(Response::new(pb::LeaderResponse {
            leader: read::head(&store, QueueKind::Election, &name).map(leader_to_wire),
            revision: store.revision(),
        }))
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        super::caller(&self.node, &request).await?;
        let name = request.into_inner().name;
        self.node.read_barrier().await?;
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE);
        let node = self.node.clone();
        tokio::spawn(async move {
            let prefix = queue_prefix(QueueKind::Election, &name);
            let mut last: Option<Option<(i64, i64)>> = None;
            loop {
                let (leader, revision) = {
                    let store = node.store();
                    (
                        read::head(&store, QueueKind::Election, &name),
                        store.revision(),
                    )
                };
                let seen = leader.as_ref().map(|w| (w.token, w.mod_revision));
                if last != Some(seen) {
                    last = Some(seen);
                    let resp = pb::LeaderResponse {
                        leader: leader.map(leader_to_wire),
                        revision,
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
                let mut watch =
                    match Watch::new(&node, &[KeyRange::prefix(prefix.clone())], revision + 1) {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    };
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = stopped(&node) => return,
                    m = watch.next() => if let Err(e) = m {
                        let _ = tx.send(Err(e)).await;
                        return;
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let (resigned, revision) = leave(
            &self.node,
            &caller,
            QueueKind::Election,
            req.name,
            req.session_id,
            req.fencing_token,
        )
        .await?;
        Ok(Response::new(pb::ResignResponse { resigned, revision }))
    }
}
