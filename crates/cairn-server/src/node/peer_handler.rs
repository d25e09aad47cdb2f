//! The leader's side of forwarded requests (`RaftPeer.Forward`).

use std::sync::{Arc, Weak};

use cairn_raft::peer_service::{BoxFuture, PeerHandler};
use tonic::Status;

use super::forward::{decode, encode, ForwardRequest, ForwardResponse};
use super::Node;
use crate::error::ServerError;

/// Holds the node weakly: the peer server must not keep a stopped node alive.
pub struct NodePeerHandler(pub Weak<Node>);

impl NodePeerHandler {
    async fn answer(node: Arc<Node>, payload: &[u8]) -> Result<ForwardResponse, ServerError> {
        match decode::<ForwardRequest>(payload)? {
            ForwardRequest::Commands(commands) => {
                if !node.raft.is_leader() {
                    return Err(ServerError::NoLeader);
                }
                Ok(ForwardResponse::Commands(
                    node.router.propose_as_leader(commands).await,
                ))
            }
            ForwardRequest::ReadIndex => node
                .router
                .read_index_as_leader()
                .await
                .map(ForwardResponse::ReadIndex),
            ForwardRequest::Membership => Ok(ForwardResponse::Membership(node.membership_view())),
            ForwardRequest::HashKv { revision } => {
                crate::corruption::hash_at(&node, revision).await
            }
            other => node.membership_as_leader(other).await,
        }
    }
}

impl PeerHandler for NodePeerHandler {
    fn forward(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            let node = self
                .0
                .upgrade()
                .ok_or_else(|| Status::unavailable("member is stopping"))?;
            let answer = Self::answer(node, &payload).await;
            encode(&answer).map_err(Status::from)
        })
    }

    fn read_index(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>> {
        Box::pin(async move {
            let node = self
                .0
                .upgrade()
                .ok_or_else(|| Status::unavailable("member is stopping"))?;
            let answer = node
                .router
                .read_index_as_leader()
                .await
                .map(ForwardResponse::ReadIndex);
            encode(&answer).map_err(Status::from)
        })
    }
}
