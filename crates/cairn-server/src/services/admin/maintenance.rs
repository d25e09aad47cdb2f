//! etcd's Maintenance service: status, alarms, hashes, snapshots, leader
//! transfer. Everything answers for the member that serves the request,
//! as in etcd.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction as WireAlarmAction;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_store::{AlarmAction, AlarmKind, Command};
use futures::Stream;
use openraft::async_runtime::WatchReceiver;
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};

use crate::auth::Caller;
use crate::error::ServerError;
use crate::kv_hash::hash_in_steps;
use crate::node::forward::ForwardRequest;
use crate::node::{Node, ETCD_API_VERSION};
use crate::restore::encode_snapshot;
use crate::services::common::header;

/// Largest blob in one `SnapshotResponse`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        MaintenanceService { node }
    }
}

fn alarm_to_wire(kind: AlarmKind) -> pb::AlarmType {
    match kind {
        AlarmKind::NoSpace => pb::AlarmType::Nospace,
        AlarmKind::Corrupt => pb::AlarmType::Corrupt,
    }
}

fn alarm_from_wire(t: pb::AlarmType) -> Option<AlarmKind> {
    match t {
        pb::AlarmType::None => None,
        pb::AlarmType::Nospace => Some(AlarmKind::NoSpace),
        pb::AlarmType::Corrupt => Some(AlarmKind::Corrupt),
    }
}

fn alarm_member(member_id: u64, kind: AlarmKind) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id,
        alarm: alarm_to_wire(kind) as i32,
    }
}

/// An alarm as etcd lists it in `StatusResponse.errors` (the protobuf text
/// form of its `AlarmMember`, trailing space included).
fn alarm_text(member_id: u64, kind: AlarmKind) -> String {
    format!(
        "memberID:{member_id} alarm:{} ",
        alarm_to_wire(kind).as_str_name()
    )
}

/// A 32-bit digest (the first bytes of a SHA-256) of everything the state
/// machine holds: records, leases and scalars.
fn hash_all(snapshot: &cairn_store::StoreSnapshot) -> Result<u32, ServerError> {
    let bytes = postcard::to_allocvec(snapshot)
        .map_err(|e| ServerError::Internal(format!("encode store: {e}")))?;
    let digest = Sha256::digest(&bytes);
    Ok(u32::from_be_bytes(
        digest[..4].try_into().expect("sha256 has 32 bytes"),
    ))
}

/// Split a snapshot file into the messages of the `Snapshot` stream: the
/// header on the first, `remaining_bytes` counting what follows each.
pub(super) fn snapshot_messages(
    bytes: Vec<u8>,
    header: pb::ResponseHeader,
) -> impl Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static {
    let total = bytes.len();
    futures::stream::unfold(
        (bytes, 0usize, Some(header)),
        move |(bytes, sent, header)| async move {
            if sent >= total {
                return None;
            }
            let end = (sent + SNAPSHOT_CHUNK_BYTES).min(total);
            let msg = pb::SnapshotResponse {
                header,
                remaining_bytes: (total - end) as u64,
                blob: bytes[sent..end].to_vec(),
                version: String::new(),
            };
            Some((Ok(msg), (bytes, end, None)))
        },
    )
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let caller = Caller::of(&self.node, &request).await?;
        let req = request.into_inner();
        let action = WireAlarmAction::try_from(req.action)
            .map_err(|_| ServerError::InvalidArgument("unknown alarm action".into()))?;
        let kind = pb::AlarmType::try_from(req.alarm)
            .map_err(|_| ServerError::InvalidArgument("unknown alarm type".into()))?;
        let kind = alarm_from_wire(kind);
        let node = &self.node;
        let mut alarms = Vec::new();
        match action {
            WireAlarmAction::Get => {
                node.read_barrier().await?;
                alarms = node
                    .store()
                    .alarms()
                    .iter()
                    .filter(|(_, a)| kind.is_none_or(|k| k == *a))
                    .map(|(m, a)| alarm_member(*m, *a))
                    .collect();
            }
            // As etcd: activating "no alarm" does nothing.
            WireAlarmAction::Activate => {
                if let Some(kind) = kind {
                    let activate = Command::Alarm {
                        action: AlarmAction::Activate,
                        member_id: req.member_id,
                        alarm: kind,
                    };
                    node.write_as(&caller, activate).await?;
                    alarms.push(alarm_member(req.member_id, kind));
                }
            }
            // Member 0 means every member: clear the alarm wherever raised.
            WireAlarmAction::Deactivate => {
                if let Some(kind) = kind {
                    caller.require_admin(node).await?;
                    node.read_barrier().await?;
                    let raised: Vec<u64> = node
                        .store()
                        .alarms()
                        .iter()
                        .filter(|(m, a)| *a == kind && (req.member_id == 0 || *m == req.member_id))
                        .map(|(m, _)| *m)
                        .collect();
                    for member_id in raised {
                        let deactivate = Command::Alarm {
                            action: AlarmAction::Deactivate,
                            member_id,
                            alarm: kind,
                        };
                        node.write_as(&caller, deactivate).await?;
                        alarms.push(alarm_member(member_id, kind));
                    }
                }
            }
        }
        Ok(Response::new(pb::AlarmResponse {
            header: Some(header(node, None)),
            alarms,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let node = &self.node;
        let metrics = node.raft.metrics().borrow_watched().clone();
        let (in_use, mut errors) = {
            let store = node.store();
            let alarms: Vec<String> = store
                .alarms()
                .iter()
                .map(|(m, a)| alarm_text(*m, *a))
                .collect();
            (store.size_bytes(), alarms)
        };
        if metrics.current_leader.is_none() {
            errors.insert(0, ServerError::NoLeader.to_string());
        }
        let db_path = node.db_path().to_path_buf();
        let db_size = tokio::task::spawn_blocking(move || std::fs::metadata(db_path))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .map(|m| m.len())
            .map_err(|e| ServerError::Internal(format!("db size: {e}")))?;
        Ok(Response::new(pb::StatusResponse {
            header: Some(header(node, None)),
            version: ETCD_API_VERSION.to_string(),
            db_size: db_size as i64,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|l| l.index()).unwrap_or(0),
            errors,
            db_size_in_use: in_use as i64,
            is_learner: node.is_learner(),
            storage_version: String::new(),
            db_size_quota: node.config.quota_backend_bytes as i64,
            downgrade_info: None,
        }))
    }

    /// Succeeds without touching the file. The backend is redb, which has
    /// no online defragmentation and needs none for correctness: pages
    /// freed by deletes and compaction go back to its free list and are
    /// reused by later writes, so the file does not keep growing with
    /// churn, but it does not shrink either. `Status.dbSizeInUse` shows the
    /// live data; to reclaim disk space, take a snapshot and restore it into
    /// a new data dir.
    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(header(&self.node, None)),
        }))
    }

    /// A hash of the whole state machine on this member (keys with their
    /// history, leases, scalars); equal on members that applied the same
    /// log. Not linearized, as in etcd.
    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let (snapshot, revision) = {
            let store = self.node.store();
            (
                store.snapshot().map_err(ServerError::from)?,
                store.revision(),
            )
        };
        let hash = tokio::task::spawn_blocking(move || hash_all(&snapshot))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
        Ok(Response::new(pb::HashResponse {
            header: Some(header(&self.node, Some(revision))),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let want = request.into_inner().revision;
        self.node.read_barrier().await?;
        let hashed = hash_in_steps(&self.node.store, want).await?;
        let head = self.node.store().revision();
        Ok(Response::new(pb::HashKvResponse {
            header: Some(header(&self.node, Some(head))),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
            hash_revision: hashed.revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// The member's whole state machine as one consistent snapshot file
    /// (see `crate::restore` for the format), in chunks of at most
    /// [`SNAPSHOT_CHUNK_BYTES`].
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        // One read guard: the copy is a single revision of the store.
        let (snapshot, revision) = {
            let store = self.node.store();
            (
                store.snapshot().map_err(ServerError::from)?,
                store.revision(),
            )
        };
        let bytes = tokio::task::spawn_blocking(move || encode_snapshot(&snapshot))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        let header = header(&self.node, Some(revision));
        Ok(Response::new(Box::pin(snapshot_messages(bytes, header))))
    }

    /// Hand leadership to `targetID` (a voter) and wait, bounded by the
    /// request timeout, until this member sees it lead.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let to = request.into_inner().target_id;
        let node = &self.node;
        let target = node.members().into_iter().find(|m| m.id == to);
        if target.is_none_or(|m| m.is_learner) {
            return Err(Status::failed_precondition(
                "etcdserver: bad leader transferee",
            ));
        }
        if node.leader_id() != Some(to) {
            node.membership_request(ForwardRequest::TransferLeader { to })
                .await?;
            let timeout = Duration::from_millis(node.config.request_timeout_ms);
            node.raft
                .wait(Some(timeout))
                .metrics(|m| m.current_leader == Some(to), "leader transfer")
                .await
                .map_err(|_| {
                    Status::new(
                        Code::Unavailable,
                        "etcdserver: request timed out, leader transfer took too long",
                    )
                })?;
        }
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(header(node, None)),
        }))
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        Err(Status::unimplemented(
            "etcdserver: cluster version downgrade is not supported",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn snapshot_stream_chunks_carry_remaining_bytes_and_one_header() {
        let bytes: Vec<u8> = (0..(2 * SNAPSHOT_CHUNK_BYTES + 100))
            .map(|i| i as u8)
            .collect();
        let msgs: Vec<_> = snapshot_messages(bytes.clone(), pb::ResponseHeader::default())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(msgs.len(), 3);
        assert!(msgs[0].header.is_some() && msgs[1].header.is_none());
        let remaining: Vec<u64> = msgs.iter().map(|m| m.remaining_bytes).collect();
        assert_eq!(remaining, vec![(SNAPSHOT_CHUNK_BYTES + 100) as u64, 100, 0]);
        let joined: Vec<u8> = msgs.into_iter().flat_map(|m| m.blob).collect();
        assert_eq!(joined, bytes);
    }

    #[test]
    fn alarms_are_listed_in_etcd_text_form() {
        assert_eq!(
            alarm_text(10276657743932975437, AlarmKind::NoSpace),
            "memberID:10276657743932975437 alarm:NOSPACE "
        );
    }
}
