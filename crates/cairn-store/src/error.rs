use serde::{Deserialize, Serialize};

/// Why the store refused a request. Each maps to the etcd error of the same
/// meaning at the wire edge. A refused request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("mvcc: required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: i64 },
    #[error("mvcc: required revision is a future revision (current {current_revision})")]
    FutureRevision { current_revision: i64 },
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("lease TTL {ttl_secs}s is out of range")]
    LeaseTtlTooLarge { ttl_secs: i64 },
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("mvcc: database space exceeded")]
    NoSpace,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("value is provided")]
    ValueProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A write through the etcd API touched the registry's reserved prefix.
    #[error("keys under the reserved prefix \\0cairn/ are written only by the registry API")]
    ReservedPrefix,
    /// A value of the history, dropped from memory, could not be read back
    /// from storage.
    #[error("history value at revision {revision} unavailable: {reason}")]
    HistoryUnavailable { revision: i64, reason: String },
    // Auth, with etcd's messages (`rpctypes`), which clients match on.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A CORRUPT alarm is raised: a member's keyspace was found unlike the
    /// majority's; nothing changes until it is disarmed.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A bound on the auth state (names, users, roles, permissions).
    #[error("too many {0} (or too long)")]
    AuthLimit(String),
}
