//! Commands the state machine applies, and their results.
//!
//! A `Command` is what one Raft log entry carries. Everything that changes
//! state, including the passage of time (`Tick`), is a command, so every
//! replica that applies the same log reaches the same state.

use serde::{Deserialize, Serialize};

use crate::claims::{ClaimsCommand, ClaimsResult};
use crate::error::StoreError;
use crate::kv::{KeyRange, KeyValue};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
    },
    /// Grant a lease; `id == 0` asks the store to choose one. `now_ms` is
    /// the leader's cluster time when it proposed the grant.
    LeaseGrant {
        id: i64,
        ttl_secs: i64,
        now_ms: u64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// Restart the lease's countdown from the current cluster time.
    LeaseKeepAlive {
        id: i64,
        now_ms: u64,
    },
    /// The leader's view of cluster time, in milliseconds. Cluster time never
    /// goes backwards; leases whose deadline has passed expire, at most
    /// `max_expiries` of them per tick so a storm cannot stall the cluster.
    Tick {
        now_ms: u64,
        max_expiries: u32,
    },
    /// Raise or clear an alarm (NOSPACE). `member_id == 0` for all members.
    Alarm {
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmKind,
    },
    /// A registry operation (names, locks, elections); see `registry`.
    Registry(crate::registry::RegistryCommand),
    /// A block-claims request (see `claims`): one command per request.
    Claims(ClaimsCommand),
    /// A change to users, roles or permissions (see `auth`).
    Auth(crate::auth::AuthCommand),
    /// `command` on behalf of `user`, sent while auth is on: applied only
    /// if the user, as of this point of the log, may (see
    /// `AuthState::check_command`). The edge checked the same before
    /// proposing; this check catches a permission revoked in between.
    As {
        user: String,
        command: Box<Command>,
    },
}

impl Command {
    /// The cluster time the command carries, if any.
    pub fn now_ms(&self) -> Option<u64> {
        match self {
            Command::LeaseGrant { now_ms, .. }
            | Command::LeaseKeepAlive { now_ms, .. }
            | Command::Tick { now_ms, .. } => Some(*now_ms),
            Command::Claims(c) => c.now_ms(),
            Command::As { command, .. } => command.now_ms(),
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Txn(_)
            | Command::Compact { .. }
            | Command::LeaseRevoke { .. }
            | Command::Alarm { .. }
            | Command::Registry(_)
            | Command::Auth(_) => None,
        }
    }

    /// About how many keys applying the command reads or writes: a
    /// measure of its apply cost that needs no look at the store. A range
    /// delete or a tick counts one, however much it removes.
    pub fn keys_touched(&self) -> usize {
        match self {
            Command::Txn(t) => t.compare.len() + t.success.len().max(t.failure.len()),
            Command::Claims(c) => c.keys_touched(),
            Command::As { command, .. } => command.keys_touched(),
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseRevoke { .. }
            | Command::LeaseKeepAlive { .. }
            | Command::Tick { .. }
            | Command::Alarm { .. }
            | Command::Registry(_)
            | Command::Auth(_) => 1,
        }
    }

    /// Replace the cluster time the command carries, if any. The leader
    /// stamps every command it proposes with its own clock: the store's
    /// time is the largest stamp ever applied, so a stamp from a member
    /// whose estimate ran ahead would move cluster time ahead for good and
    /// expire leases early.
    pub fn restamp(&mut self, at_ms: u64) {
        match self {
            Command::LeaseGrant { now_ms, .. }
            | Command::LeaseKeepAlive { now_ms, .. }
            | Command::Tick { now_ms, .. } => *now_ms = at_ms,
            Command::Claims(c) => c.restamp(at_ms),
            Command::As { command, .. } => command.restamp(at_ms),
            Command::Put(_)
            | Command::DeleteRange(_)
            | Command::Txn(_)
            | Command::Compact { .. }
            | Command::LeaseRevoke { .. }
            | Command::Alarm { .. }
            | Command::Registry(_)
            | Command::Auth(_) => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    Activate,
    Deactivate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmKind {
    NoSpace,
    Corrupt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// Maximum keys returned; 0 for no limit.
    pub limit: i64,
    /// Read at this revision; 0 or less for the current one.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub range: KeyRange,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeResponse {
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnResponse {
    pub revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub revision: i64,
    pub id: i64,
    pub ttl_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    pub revision: i64,
    pub id: i64,
    pub ttl_secs: i64,
}

/// What applying one command produced. Errors are results too: a rejected
/// command is applied (it occupies a log index) but changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact {
        revision: i64,
    },
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke {
        revision: i64,
    },
    LeaseKeepAlive(LeaseKeepAliveResponse),
    Tick {
        revision: i64,
        expired: Vec<i64>,
    },
    Alarm {
        revision: i64,
    },
    Registry(crate::registry::RegistryResult),
    Claims(ClaimsResult),
    /// An auth change was made; the auth revision after it.
    Auth {
        revision: i64,
        auth_revision: u64,
    },
    /// Raft-internal entries (blank, membership) carry no command.
    #[default]
    Empty,
    Error(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ClaimsCommand;

    #[test]
    fn keys_touched_counts_a_request_s_keys() {
        let put = || RequestOp::Put(PutRequest::default());
        let compare = Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(1),
            range: crate::KeyRange::single("k"),
        };
        let txn = Command::Txn(TxnRequest {
            compare: vec![compare; 2],
            success: vec![put(), put(), put()],
            failure: vec![put()],
        });
        // Compares, then the longer branch.
        assert_eq!(txn.keys_touched(), 5);
        assert_eq!(Command::Put(PutRequest::default()).keys_touched(), 1);
        let offload = Command::Claims(ClaimsCommand::CanOffload {
            namespace: "ns".into(),
            session_id: 1,
            keys: (0..1000).map(crate::claims::ClaimKey::U64).collect(),
            now_ms: 0,
        });
        assert_eq!(offload.keys_touched(), 1000);
        let tick = Command::Tick {
            now_ms: 0,
            max_expiries: 10_000,
        };
        assert_eq!(
            tick.keys_touched(),
            1,
            "a tick counts one however much expires"
        );
    }

    /// Byte fields are encoded as byte strings (`serde_bytes`), which
    /// postcard writes exactly as it wrote them as sequences of `u8`
    /// (a length, then the bytes): logs, rows and snapshots written before
    /// read the same, and members of either version replicate to each
    /// other. Only the encoder's speed changed (one copy, not a call per
    /// byte).
    #[test]
    fn byte_fields_encode_as_sequences_of_bytes_did() {
        #[derive(Serialize, Deserialize)]
        struct PutAsBefore {
            key: Vec<u8>,
            value: Vec<u8>,
            lease: i64,
            prev_kv: bool,
            ignore_value: bool,
            ignore_lease: bool,
        }
        let put = PutRequest {
            key: b"k/1".to_vec(),
            value: (0..=255u8).cycle().take(300).collect(),
            lease: 7,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        };
        let before = PutAsBefore {
            key: put.key.clone(),
            value: put.value.clone(),
            lease: put.lease,
            prev_kv: put.prev_kv,
            ignore_value: put.ignore_value,
            ignore_lease: put.ignore_lease,
        };
        let old = postcard::to_allocvec(&before).unwrap();
        assert_eq!(postcard::to_allocvec(&put).unwrap(), old);
        assert_eq!(postcard::from_bytes::<PutRequest>(&old).unwrap(), put);

        #[derive(Serialize)]
        enum TargetAsBefore {
            _Version(i64),
            _Create(i64),
            _Mod(i64),
            Value(Vec<u8>),
        }
        let value = b"v".repeat(200);
        assert_eq!(
            postcard::to_allocvec(&CompareTarget::Value(value.clone())).unwrap(),
            postcard::to_allocvec(&TargetAsBefore::Value(value)).unwrap()
        );
    }
}
