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

/// The admin group's etcd services, shared by their gRPC servers and the
/// JSON gateway.
pub struct Services {
    pub cluster: Arc<cluster::ClusterService>,
    pub maintenance: Arc<maintenance::MaintenanceService>,
    pub lock: Arc<lock::LockService>,
    pub election: Arc<election::ElectionService>,
    pub auth: Arc<auth::AuthService>,
}

impl Services {
    pub fn new(node: Arc<Node>) -> Services {
        Services {
            cluster: Arc::new(cluster::ClusterService::new(node.clone())),
            maintenance: Arc::new(maintenance::MaintenanceService::new(node.clone())),
            lock: Arc::new(lock::LockService::new(node.clone())),
            election: Arc::new(election::ElectionService::new(node.clone())),
            auth: Arc::new(auth::AuthService::new(node)),
        }
    }

    /// Their gRPC servers.
    pub fn add(&self, routes: Routes, limits: Limits) -> Routes {
        let decode_limit = limits.decode_limit();
        routes
            .add_service(
                ClusterServer::from_arc(self.cluster.clone())
                    .max_decoding_message_size(decode_limit),
            )
            .add_service(
                MaintenanceServer::from_arc(self.maintenance.clone())
                    .max_decoding_message_size(decode_limit),
            )
            .add_service(
                LockServer::from_arc(self.lock.clone()).max_decoding_message_size(decode_limit),
            )
            .add_service(
                ElectionServer::from_arc(self.election.clone())
                    .max_decoding_message_size(decode_limit),
            )
            .add_service(
                AuthServer::from_arc(self.auth.clone()).max_decoding_message_size(decode_limit),
            )
    }
}
