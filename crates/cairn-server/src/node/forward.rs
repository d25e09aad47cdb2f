//! What a member asks the leader on a client's behalf, over the peer port.
//!
//! Clients may talk to any member: writes, read-index requests and
//! membership changes that need the leader are forwarded to it in one of
//! these messages (postcard inside the `Forward` RPC).

use std::sync::Arc;

use cairn_store::{Command, CommandResult};
use serde::{Deserialize, Serialize};

use super::removal::MembershipView;
use crate::error::ServerError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A batch of client commands, proposed in order as one batch (shared
    /// with the sender's retry list; on the wire each is a `Command`).
    Commands(Vec<Arc<Command>>),
    /// The leader's read index: a follower serves a linearizable read once
    /// it has applied this far.
    ReadIndex,
    AddMember {
        peer_url: String,
        is_learner: bool,
    },
    RemoveMember {
        id: u64,
    },
    PromoteMember {
        id: u64,
    },
    /// Change a member's peer URL (`member update`).
    UpdatePeerUrl {
        id: u64,
        peer_url: String,
    },
    /// A member publishes its name and client URLs after it starts.
    PublishAttributes {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
    TransferLeader {
        to: u64,
    },
    /// Any member answers with its memberships: a member asks to find out
    /// whether it was removed (removal.rs).
    Membership,
    /// Any member answers with its keyspace hash at `revision` once it has
    /// applied that far (the leader's corruption check).
    HashKv {
        revision: i64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    Commands(Vec<Result<CommandResult, ServerError>>),
    ReadIndex(LeaderRead),
    /// A membership change was committed; carries the member ID it concerned.
    Member(u64),
    Done,
    Membership(MembershipView),
    HashKv {
        hash: u32,
        compact_revision: i64,
    },
}

/// The leader's answer to a read-index request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRead {
    /// A follower serves the read once it has applied this far.
    pub index: u64,
    /// The leader's term: its clock is the one to follow in that term.
    pub term: u64,
    /// The leader's cluster time when it answered (`None` while its clock
    /// is frozen). A follower's clock follows it like a stamp: a member
    /// whose clock is behind (it installed a snapshot, or replayed old
    /// entries, and has applied no stamp of this term yet) would otherwise
    /// count a lease's remaining TTL from an old time (clock.rs).
    pub now_ms: Option<u64>,
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ServerError> {
    cairn_raft::encoding::to_vec_sized(v)
        .map_err(|e| ServerError::Internal(format!("encode forward message: {e}")))
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ServerError> {
    postcard::from_bytes(bytes)
        .map_err(|e| ServerError::InvalidArgument(format!("malformed forward message: {e}")))
}
