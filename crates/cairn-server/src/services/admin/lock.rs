//! etcd's Lock service (`v3lockpb`): a distributed mutex on the queue of
//! [`super::recipe`], as etcd's `v3lock` server runs `concurrency.Mutex`.
//!
//! `Lock{name, lease}` returns once the caller's key `<name>/<lease hex>`
//! is the oldest under `<name>/`; the key is attached to the lease, so the
//! lock is released when the lease ends. `Unlock{key}` deletes the key.

use std::sync::Arc;

use cairn_proto::v3lockpb as pb;
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_store::{Command, CommandResult, DeleteRangeRequest, KeyRange};
use tonic::{Code, Request, Response, Status};

use super::recipe::{self, LeaveOnDrop, Turn};
use crate::auth::Caller;
use crate::node::Node;
use crate::services::common::header;

pub struct LockService {
    node: Arc<Node>,
}

impl LockService {
    pub fn new(node: Arc<Node>) -> Self {
        LockService { node }
    }
}

/// etcd's `concurrency.ErrSessionExpired`: the key went away while waiting.
fn session_expired() -> Status {
    Status::new(Code::Unknown, "mutex: session is expired")
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let node = &self.node;
        let lease = recipe::session_lease(node, &caller, req.lease).await?;
        let prefix = recipe::queue_prefix(&req.name);
        let key = recipe::queue_key(&prefix, lease);
        let joined = recipe::join(node, &caller, &prefix, &key, Vec::new(), lease).await?;
        // From here until we answer, a failure or a vanished client leaves
        // the queue (etcd unlocks when the wait fails).
        let leave = LeaveOnDrop::new(node.clone(), caller, key.clone(), joined.revision);
        let revision = if joined.first {
            joined.revision
        } else {
            match recipe::wait_turn(node, &prefix, &key, joined.create_revision).await? {
                Turn::Mine { revision } => revision,
                Turn::Lost => {
                    leave.disarm();
                    return Err(session_expired());
                }
            }
        };
        leave.disarm();
        Ok(Response::new(pb::LockResponse {
            header: Some(header(node, Some(revision))),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let key = request.into_inner().key;
        let delete = Command::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(key),
            prev_kv: false,
        });
        let result = self.node.write_as(&caller, delete).await?;
        let revision = match result {
            CommandResult::DeleteRange(d) => d.revision,
            other => return Err(recipe::unexpected("delete", other).into()),
        };
        Ok(Response::new(pb::UnlockResponse {
            header: Some(header(&self.node, Some(revision))),
        }))
    }
}
