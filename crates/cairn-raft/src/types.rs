//! The one place where Cairn's openraft types are declared.
//!
//! Everything else in Cairn names Raft types through the aliases below, so a
//! change of openraft version or of a type parameter touches this file only.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use cairn_store::{Command, CommandResult};

openraft::declare_raft_types!(
    /// Cairn's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = cairn_store::CommandResult,
        NodeId = u64,
        Node = CairnNode,
);

/// The application data one Raft log entry carries: a [`cairn_store::Command`],
/// shared. openraft clones an entry each time it reads it from the log (each
/// follower's stream, the apply) and a proposal is cloned on its way in; a
/// `CanOffload` of 1,000 keys is 32 KB of keys to copy each time, where a
/// shared command costs a reference count.
///
/// openraft requires its `D` type to implement `Display` (for logging), which
/// `cairn_store::Command` does not, and the orphan rule forbids implementing
/// it here. This wrapper is `#[serde(transparent)]`: on disk and on the wire
/// it is byte-for-byte a `Command` (serde writes an `Arc<T>` as its `T`), so
/// it can later be replaced by `Command` itself without a data migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Request(pub Arc<cairn_store::Command>);

impl Request {
    pub fn into_inner(self) -> cairn_store::Command {
        Arc::unwrap_or_clone(self.0)
    }
}

impl From<cairn_store::Command> for Request {
    fn from(c: cairn_store::Command) -> Self {
        Request(Arc::new(c))
    }
}

impl From<Arc<cairn_store::Command>> for Request {
    fn from(c: Arc<cairn_store::Command>) -> Self {
        Request(c)
    }
}

impl Deref for Request {
    type Target = cairn_store::Command;

    fn deref(&self) -> &cairn_store::Command {
        &self.0
    }
}

impl fmt::Display for Request {
    /// A short summary for logs: never the (possibly large) keys and values
    /// of puts and transactions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        summarize(&self.0, f)
    }
}

/// A command for logs: sizes of keys and values, never their bytes, and
/// never credentials (`AuthCommand`'s Debug leaves them out).
fn summarize(command: &cairn_store::Command, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    use cairn_store::Command;
    match command {
        Command::As { user, command } => {
            write!(f, "As({user:?}, ")?;
            summarize(command, f)?;
            write!(f, ")")
        }
        Command::Put(p) => write!(f, "Put(key={}B, value={}B)", p.key.len(), p.value.len()),
        Command::Txn(t) => write!(
            f,
            "Txn(compare={}, success={}, failure={})",
            t.compare.len(),
            t.success.len(),
            t.failure.len()
        ),
        Command::Registry(r) => write!(f, "Registry({})", r.op_name()),
        // The other commands are small.
        other => write!(f, "{other:?}"),
    }
}

/// What the cluster knows about one member: stored in the membership config,
/// replicated through the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CairnNode {
    /// The member's name (etcd's `--name`).
    pub name: String,
    /// Where peers reach this member's `cairn.raft.v1.RaftPeer` service,
    /// e.g. `http://10.0.0.1:2380`.
    pub peer_url: String,
    /// Where clients reach this member's etcd API.
    pub client_urls: Vec<String>,
}

impl fmt::Display for CairnNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_url)
    }
}

pub type NodeId = u64;

// --- Storage and log types -------------------------------------------------

pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type LeaderId = openraft::alias::LeaderIdOf<TypeConfig>;
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type EntryPayload = openraft::alias::EntryPayloadOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, CairnNode>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type IOFlushed = openraft::storage::IOFlushed<TypeConfig>;
pub type EntryResponder = openraft::storage::EntryResponder<TypeConfig>;

/// The snapshot bytes every Cairn state machine exposes
/// (`RaftStateMachine::SnapshotData`); the transport sends exactly this.
pub use crate::snapshot_data::SnapshotData;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

// --- The Raft handle and its observables -----------------------------------

/// A Raft node over state machine `SM`.
pub type Raft<SM> = openraft::Raft<TypeConfig, SM>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
pub use openraft::{Config as RaftConfig, ServerState};

// --- RPC messages ------------------------------------------------------------

pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
pub type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;
pub type SnapshotResponse = openraft::raft::SnapshotResponse<TypeConfig>;
pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;
pub type TransferLeaderResponse = openraft::raft::TransferLeaderResponse<TypeConfig>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;

// --- Errors ------------------------------------------------------------------

/// An error from a `Raft` API: `E` for the API's own errors, or `Fatal`.
pub type RaftError<E = openraft::errors::Infallible> = openraft::errors::RaftError<TypeConfig, E>;
pub type Fatal = openraft::errors::Fatal<TypeConfig>;
pub type StorageError = openraft::StorageError<TypeConfig>;
pub type ClientWriteError = openraft::errors::ClientWriteError<TypeConfig>;
pub type ForwardToLeader = openraft::errors::ForwardToLeader<TypeConfig>;
pub type InitializeError = openraft::errors::InitializeError<TypeConfig>;
pub type LinearizableReadError = openraft::errors::LinearizableReadError<TypeConfig>;
pub type ChangeMembershipError = openraft::alias::ChangeMembershipErrorOf<TypeConfig>;
pub type RPCError = openraft::errors::RPCError<TypeConfig>;
pub type StreamingError = openraft::errors::StreamingError<TypeConfig>;
pub type Unreachable = openraft::errors::Unreachable<TypeConfig>;
pub type NetworkError = openraft::errors::NetworkError<TypeConfig>;
pub type Timeout = openraft::errors::Timeout<TypeConfig>;
