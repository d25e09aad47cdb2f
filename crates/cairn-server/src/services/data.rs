//! Services of the `data` group (see `services/mod.rs`).

use std::sync::Arc;

use tonic::service::Routes;

use super::Limits;
use crate::node::Node;

pub fn add(routes: Routes, node: Arc<Node>, limits: Limits) -> Routes {
    let _ = (node, limits);
    routes
}
