//! The gRPC services on the client port, each a thin translation between
//! etcd wire types and `Node` calls.
//!
//! * `data`: KV, Watch, Lease — the keyspace.
//! * `admin`: Cluster, Maintenance, Lock, Election — membership, operations
//!   and the concurrency recipes etcdctl uses.
//! * `claims`: `cairn.v1.Claims`, block claims.
//! * `health`: gRPC health, HTTP `/health` and `/metrics`.
//! * `gateway`: etcd's JSON gateway, `POST /v3/...`, over the same etcd
//!   services.
//! * `registry`: Cairn's own `cairn.v1` API — sessions, registries, locks,
//!   elections.
//! * `http_access`: `--cors` and `--host-whitelist` for the HTTP endpoints.

mod admin;
pub mod claims;
mod common;
mod data;
pub mod etcd_metrics;
mod gateway;

/// A failed call's answer as the JSON gateway gives it.
pub(crate) use gateway::json_error;
mod health;
pub mod http_access;
mod registry;

use std::sync::Arc;

use tonic::service::Routes;

pub use common::Limits;

use crate::node::Node;

/// Every client-port service, plus HTTP `GET /health` and `GET /metrics`
/// and the JSON gateway; and the last two alone, for the metrics port.
pub fn routes(node: Arc<Node>, limits: Limits) -> (Routes, axum::Router) {
    let data = data::Services::new(node.clone(), limits);
    let admin = admin::Services::new(node.clone());
    let routes = Routes::default();
    let routes = data.add(routes, limits);
    let routes = admin.add(routes, limits);
    let routes = registry::add(routes, node.clone(), limits);
    let claim_reads = Arc::new(claims::ReadCounters::default());
    let routes = claims::add(routes, node.clone(), claim_reads.clone());
    let http_only = health::http_router(node.clone(), claim_reads.clone());
    let routes = health::add(routes, node.clone());
    // The HTTP endpoints, behind etcd's access rules (gRPC is not).
    let access = http_access::HttpAccess::new(
        &node.config.cors,
        &node.config.host_whitelist,
        node.config.client_tls().is_some(),
    );
    let http = gateway::router(&data, &admin, limits)
        .merge(health::http_router(node, claim_reads))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(access),
            http_access::guard,
        ));
    let router = routes.into_axum_router().merge(http);
    (Routes::from(router.fallback(gateway::not_found)), http_only)
}
