//! The `cairn.v1.Claims` service: block claims over gRPC. Writes are one
//! replicated command each (stamped with this member's estimate of cluster
//! time, as lease grants are); reads pass the linearizable read barrier and
//! then read the local store.

mod convert;
pub mod metrics;
mod reads;

use std::sync::Arc;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::cairn::v1::claims_server::{Claims, ClaimsServer};
use cairn_store::claims::{
    ClaimKey, Claims as ClaimsState, ClaimsCommand, ClaimsError, ClaimsOutput, ClaimsReply,
    StoredView, MAX_KEY_BYTES,
};
use cairn_store::{Command, CommandResult};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

pub use reads::ReadCounters;

use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::Node;

/// gRPC decode limit for claims requests: 10,000 keys of the longest kind
/// (256-byte keys) fit with room for values, whatever `max_request_bytes`.
pub const MAX_CLAIMS_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const _: () = assert!(
    MAX_CLAIMS_MESSAGE_BYTES
        > cairn_store::claims::MAX_KEYS_PER_REQUEST * (MAX_KEY_BYTES as usize + 8) * 2
);

pub fn add(routes: Routes, node: Arc<Node>, reads: Arc<ReadCounters>) -> Routes {
    routes.add_service(
        ClaimsServer::new(ClaimsService { node, reads })
            .max_decoding_message_size(MAX_CLAIMS_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLAIMS_MESSAGE_BYTES),
    )
}

struct ClaimsService {
    node: Arc<Node>,
    reads: Arc<ReadCounters>,
}

impl ClaimsService {
    async fn write(&self, caller: &Caller, cmd: ClaimsCommand) -> Result<ClaimsReply, Status> {
        match self.node.write_as(caller, Command::Claims(cmd)).await? {
            CommandResult::Claims(r) => r.map_err(convert::error_status),
            other => {
                Err(ServerError::Internal(format!("unexpected claims result {other:?}")).into())
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.node.clock.now_ms()
    }

    /// A linearizable lookup: `find` gives (request index, entry) pairs;
    /// hits and misses are counted for `/metrics`.
    async fn matches(
        &self,
        req: pb::MatchRequest,
        find: impl FnOnce(
            &ClaimsState,
            &str,
            &[ClaimKey],
        ) -> Result<Vec<(u32, StoredView)>, ClaimsError>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        let keys = convert::keys(req.keys)?;
        self.node.read_barrier().await?;
        let (found, revision) = {
            let store = self.node.store();
            let found =
                find(store.claims(), &req.namespace, &keys).map_err(convert::error_status)?;
            (found, store.revision())
        };
        let hits = found.len() as u64;
        self.reads
            .add(&req.namespace, hits, keys.len() as u64 - hits);
        Ok(Response::new(pb::MatchResponse {
            revision,
            matches: found
                .into_iter()
                .map(|(i, v)| convert::matched(i, v))
                .collect(),
        }))
    }
}

/// How long a lease ending at `deadline_ms` (cluster time) lives from
/// now, by this member's estimate `now_ms`, and at most the namespace's
/// TTL (`ttl_ms`, when this member knows the namespace): the lease was
/// granted at the leader's stamp, not later, so it lives no longer than
/// that. A follower's estimate trails the leader's by up to a commit
/// latency, and counted from it alone a fresh lease was said to live
/// longer than its TTL (30,010 ms of a 30 s one).
fn lease_left_ms(deadline_ms: u64, now_ms: u64, ttl_ms: Option<u64>) -> u64 {
    let left = deadline_ms.saturating_sub(now_ms);
    ttl_ms.map_or(left, |ttl| left.min(ttl))
}

fn unexpected(out: ClaimsOutput) -> Status {
    ServerError::Internal(format!("unexpected claims output {out:?}")).into()
}

#[tonic::async_trait]
impl Claims for ClaimsService {
    async fn create_namespace(
        &self,
        request: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let caller = crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let config = convert::config(req.config)?;
        let reply = self
            .write(
                &caller,
                ClaimsCommand::CreateNamespace {
                    name: req.namespace,
                    config,
                },
            )
            .await?;
        match reply.output {
            ClaimsOutput::Created { existed } => Ok(Response::new(pb::CreateNamespaceResponse {
                revision: reply.revision,
                existed,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn can_offload(
        &self,
        request: Request<pb::CanOffloadRequest>,
    ) -> Result<Response<pb::CanOffloadResponse>, Status> {
        let caller = crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let keys = convert::keys(req.keys)?;
        let now_ms = self.now_ms();
        let reply = self
            .write(
                &caller,
                ClaimsCommand::CanOffload {
                    namespace: req.namespace.clone(),
                    session_id: req.session_id,
                    keys,
                    now_ms,
                },
            )
            .await?;
        match reply.output {
            ClaimsOutput::CanOffload {
                statuses,
                lease_deadline_ms,
            } => {
                let ttl_ms = {
                    let store = self.node.store();
                    let ns = store.claims().stats(&req.namespace).ok();
                    ns.map(|ns| ns.config.lease_ttl_ms)
                };
                Ok(Response::new(pb::CanOffloadResponse {
                    revision: reply.revision,
                    statuses: statuses.into_iter().map(convert::offload_status).collect(),
                    lease_ttl_ms: lease_left_ms(lease_deadline_ms, self.now_ms(), ttl_ms),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn register(
        &self,
        request: Request<pb::ClaimsRegisterRequest>,
    ) -> Result<Response<pb::ClaimsRegisterResponse>, Status> {
        let caller = crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let entries = convert::entries(req.entries)?;
        let reply = self
            .write(
                &caller,
                ClaimsCommand::Register {
                    namespace: req.namespace,
                    session_id: req.session_id,
                    entries,
                    now_ms: self.now_ms(),
                },
            )
            .await?;
        match reply.output {
            ClaimsOutput::Register { statuses, evicted } => {
                Ok(Response::new(pb::ClaimsRegisterResponse {
                    revision: reply.revision,
                    statuses: statuses.into_iter().map(convert::register_status).collect(),
                    evicted,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn match_prefix(
        &self,
        request: Request<pb::MatchRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        crate::services::registry::caller(&self.node, &request).await?;
        self.matches(request.into_inner(), |claims, ns, keys| {
            let found = claims.match_prefix(ns, keys)?;
            Ok(found
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v))
                .collect())
        })
        .await
    }

    async fn match_all(
        &self,
        request: Request<pb::MatchRequest>,
    ) -> Result<Response<pb::MatchResponse>, Status> {
        crate::services::registry::caller(&self.node, &request).await?;
        self.matches(request.into_inner(), |claims, ns, keys| {
            claims.match_all(ns, keys)
        })
        .await
    }

    async fn remove(
        &self,
        request: Request<pb::ClaimsKeysRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let caller = crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let keys = convert::keys(req.keys)?;
        let reply = self
            .write(
                &caller,
                ClaimsCommand::Remove {
                    namespace: req.namespace,
                    keys,
                    now_ms: self.now_ms(),
                },
            )
            .await?;
        match reply.output {
            ClaimsOutput::Remove {
                removed,
                leases_released,
            } => Ok(Response::new(pb::RemoveResponse {
                revision: reply.revision,
                removed,
                leases_released,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn touch(
        &self,
        request: Request<pb::ClaimsKeysRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        let caller = crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let keys = convert::keys(req.keys)?;
        let reply = self
            .write(
                &caller,
                ClaimsCommand::Touch {
                    namespace: req.namespace,
                    keys,
                    now_ms: self.now_ms(),
                },
            )
            .await?;
        match reply.output {
            ClaimsOutput::Touch { present } => Ok(Response::new(pb::TouchResponse {
                revision: reply.revision,
                present,
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        crate::services::registry::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let (stats, revision) = {
            let store = self.node.store();
            let stats = if req.namespace.is_empty() {
                store.claims().all_stats()
            } else {
                vec![store
                    .claims()
                    .stats(&req.namespace)
                    .map_err(convert::error_status)?]
            };
            (stats, store.revision())
        };
        Ok(Response::new(pb::StatsResponse {
            revision,
            namespaces: stats
                .into_iter()
                .map(|s| {
                    let reads = self.reads.get(&s.name);
                    convert::stats_to_wire(s, reads)
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::lease_left_ms;

    #[test]
    fn a_lease_left_never_outlives_its_ttl() {
        // Stamped at 1,000 by the leader with a 30 s TTL; this member's
        // clock is 10 ms behind that stamp.
        assert_eq!(lease_left_ms(31_000, 990, Some(30_000)), 30_000);
        // Ahead of the stamp: counted from now.
        assert_eq!(lease_left_ms(31_000, 1_500, Some(30_000)), 29_500);
        assert_eq!(lease_left_ms(31_000, 40_000, Some(30_000)), 0);
        // A namespace this member has not applied yet: its own estimate.
        assert_eq!(lease_left_ms(31_000, 990, None), 30_010);
    }
}
