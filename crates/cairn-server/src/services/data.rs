//! Services of the `data` group (see `services/mod.rs`): the etcd KV, Watch
//! and Lease services, each a translation between etcd wire types and
//! `Node` calls.
//!
//! * [`kv`]: Range, Put, DeleteRange, Txn, Compact.
//! * [`watch`]: one bidirectional stream carrying many watchers, fed by the
//!   node's watch hub.
//! * [`lease`]: grant, revoke, keep-alive stream, time-to-live, list.
//! * [`convert`]: wire ⇄ store conversions and the edge validation etcd
//!   does before a request is proposed.

mod convert;
mod kv;
mod lease;
mod watch;

use std::sync::Arc;

use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch as signal;
use tonic::service::Routes;

use super::Limits;
use crate::node::Node;

/// The data group's services, shared by their gRPC servers and the JSON
/// gateway.
pub struct Services {
    pub kv: Arc<kv::KvService>,
    pub watch: Arc<watch::WatchService>,
    pub lease: Arc<lease::LeaseService>,
}

impl Services {
    pub fn new(node: Arc<Node>, limits: Limits) -> Services {
        let stopped = stop_signal(&node);
        Services {
            kv: Arc::new(kv::KvService::new(node.clone(), limits)),
            watch: Arc::new(watch::WatchService::new(
                node.clone(),
                limits,
                stopped.clone(),
            )),
            lease: Arc::new(lease::LeaseService::new(node, stopped)),
        }
    }

    /// Their gRPC servers.
    pub fn add(&self, routes: Routes, limits: Limits) -> Routes {
        let decode_limit = limits.decode_limit();
        routes
            .add_service(
                KvServer::from_arc(self.kv.clone()).max_decoding_message_size(decode_limit),
            )
            .add_service(
                WatchServer::from_arc(self.watch.clone()).max_decoding_message_size(decode_limit),
            )
            .add_service(
                LeaseServer::from_arc(self.lease.clone()).max_decoding_message_size(decode_limit),
            )
    }
}

/// Becomes `true` once the node's Raft has stopped (`Node::shutdown`).
///
/// Long-lived streams (watch, lease keep-alive) end on it: the client
/// server shuts down gracefully, waiting for every open stream, so a
/// stream that outlived the node would hold the shutdown (and the data
/// dir) forever. One task per server watches Raft's metrics; the streams
/// wait on this cheap channel instead.
fn stop_signal(node: &Node) -> signal::Receiver<bool> {
    let (tx, rx) = signal::channel(false);
    let mut metrics = node.raft.metrics();
    tokio::spawn(async move {
        loop {
            if metrics.borrow_watched().running_state.is_err() {
                break;
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // Nobody listens any more.
                _ = tx.closed() => return,
            }
        }
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once `stopped` (from [`stop_signal`]) turns true.
async fn until_stopped(stopped: &mut signal::Receiver<bool>) {
    // A dropped sender means the signal task ended: treat as stopped.
    let _ = stopped.wait_for(|s| *s).await;
}
