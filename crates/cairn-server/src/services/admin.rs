//! Services of the `admin` group (see `services/mod.rs`).
//!
//! * [`auth`]: etcd's Auth service — users, roles, permissions, tokens.
//! * [`cluster`]: etcd's Cluster service — member list, add, remove,
//!   update, promote — over the node's membership requests.
//! * [`maintenance`]: Status, Alarm, Hash, HashKV, Defragment, Snapshot,
//!   MoveLeader.
//! * [`lock`] and [`election`]: the server side of etcd's `v3lock` and
//!   `v3election` services, built like etcd's on the queue of keys in
//!   [`recipe`].

mod auth;
mod cluster;
mod election;
mod lock;
mod maintenance;
mod recipe;

use std::sync::Arc;

use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use tonic::service::Routes;

use super::Limits;
use crate::node::Node;

/// Slack over `max_request_bytes` for the gRPC decode limit (framing).
const DECODE_SLACK_BYTES: usize = 64 * 1024;

pub fn add(routes: Routes, node: Arc<Node>, limits: Limits) -> Routes {
    let decode_limit = limits.max_request_bytes.saturating_add(DECODE_SLACK_BYTES);
    routes
        .add_service(
            ClusterServer::new(cluster::ClusterService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            MaintenanceServer::new(maintenance::MaintenanceService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            LockServer::new(lock::LockService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            ElectionServer::new(election::ElectionService::new(node.clone()))
                .max_decoding_message_size(decode_limit),
        )
        .add_service(
            AuthServer::new(auth::AuthService::new(node)).max_decoding_message_size(decode_limit),
        )
}
