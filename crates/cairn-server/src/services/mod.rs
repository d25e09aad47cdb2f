//! The gRPC services on the client port, each a thin translation between
//! etcd wire types and `Node` calls.
//!
//! * `data`: KV, Watch, Lease — the keyspace.
//! * `admin`: Cluster, Maintenance, Lock, Election — membership, operations
//!   and the concurrency recipes etcdctl uses.
//! * `health`: gRPC health and HTTP `/health`.
//! * `registry`: Cairn's own `cairn.v1` API — sessions, registries, locks,
//!   elections.

mod admin;
mod common;
mod data;
mod health;
mod registry;

use std::sync::Arc;

use tonic::service::Routes;

pub use common::Limits;

use crate::node::Node;

/// Every client-port service, plus HTTP `GET /health`.
pub fn routes(node: Arc<Node>, limits: Limits) -> Routes {
    let routes = Routes::default();
    let routes = data::add(routes, node.clone(), limits);
    let routes = admin::add(routes, node.clone(), limits);
    let routes = registry::add(routes, node.clone(), limits);
    health::add(routes, node)
}
