//! The server's error type and its mapping to etcd's gRPC errors.
//!
//! etcd clients recognise errors by gRPC code and message text
//! ("etcdserver: ..."), so the messages below are part of the wire contract.

use cairn_store::StoreError;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This member cannot serve the request and knows who can.
    #[error("etcdserver: not leader (leader is {leader_id:x} at {leader_client_url})")]
    NotLeader {
        leader_id: u64,
        leader_client_url: String,
    },
    /// No leader is known right now; retry after an election.
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The leader changed while the request was in flight; it may or may
    /// not have been applied (etcd's "leader changed").
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The connection to the leader broke while a forwarded request was
    /// under way: it may or may not have been applied (etcd's
    /// `ErrTimeoutDueToLeaderFail`).
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    LeaderFailed,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// A token that does not verify, has expired, or names a credential
    /// since changed. etcd clients authenticate again on it.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// `Authenticate` on a member configured to verify JWTs only (a
    /// `pub-key` and no `priv-key`); etcd's words.
    #[error("auth: token signing attempted with verify-only key")]
    TokenVerifyOnly,
    /// The node is shutting down or its Raft core stopped.
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// Worth retrying on this or another member (after a short backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ServerError::NoLeader | ServerError::Timeout | ServerError::NotLeader { .. }
        )
    }
}

fn store_status(e: &StoreError) -> Status {
    let (code, msg): (Code, &str) = match e {
        StoreError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided"),
        StoreError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found"),
        StoreError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided"),
        StoreError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided"),
        StoreError::TooManyOps => (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        ),
        StoreError::DuplicateKey => (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        ),
        StoreError::Compacted { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        StoreError::FutureRevision { .. } => (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        StoreError::NoSpace => (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ),
        StoreError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found"),
        StoreError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists"),
        StoreError::LeaseTtlTooLarge { .. } => {
            (Code::OutOfRange, "etcdserver: too large lease TTL")
        }
        StoreError::ReservedPrefix => (
            Code::InvalidArgument,
            "etcdserver: keys under the reserved prefix \\0cairn/ are written only by the cairn.v1 registry API",
        ),
        StoreError::RootUserNotExist
        | StoreError::RootRoleNotExist
        | StoreError::UserAlreadyExist
        | StoreError::UserNotFound
        | StoreError::RoleAlreadyExist
        | StoreError::RoleNotFound
        | StoreError::RoleNotGranted
        | StoreError::PermissionNotGranted => return Status::failed_precondition(e.to_string()),
        StoreError::UserEmpty | StoreError::RoleEmpty | StoreError::InvalidAuthMgmt => {
            return Status::invalid_argument(e.to_string())
        }
        StoreError::PermissionDenied => return Status::permission_denied(e.to_string()),
        StoreError::Corrupt => return Status::data_loss(e.to_string()),
        StoreError::AuthLimit(_) => {
            return Status::invalid_argument(format!("etcdserver: {e}"))
        }
        other => return Status::internal(format!("etcdserver: {other}")),
    };
    Status::new(code, msg)
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        match &e {
            ServerError::Store(s) => store_status(s),
            // etcd uses FailedPrecondition for "not leader"; clients that
            // understand our metadata can redirect without a guess.
            ServerError::NotLeader {
                leader_client_url, ..
            } => {
                let mut s = Status::new(Code::Unavailable, "etcdserver: not leader");
                if let Ok(v) = leader_client_url.parse() {
                    s.metadata_mut().insert("cairn-leader", v);
                }
                s
            }
            ServerError::NoLeader => Status::unavailable(e.to_string()),
            ServerError::Timeout | ServerError::LeaderChanged | ServerError::LeaderFailed => {
                Status::unavailable(e.to_string())
            }
            ServerError::Stopped => Status::unavailable(e.to_string()),
            ServerError::RequestTooLarge
            | ServerError::TooManyOps
            | ServerError::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
            ServerError::MemberNotFound => Status::not_found(e.to_string()),
            ServerError::AuthNotEnabled => Status::failed_precondition(e.to_string()),
            ServerError::AuthFailed => Status::invalid_argument(e.to_string()),
            ServerError::InvalidAuthToken => Status::unauthenticated(e.to_string()),
            ServerError::TokenVerifyOnly => Status::failed_precondition(e.to_string()),
            ServerError::PeerUrlExists
            | ServerError::MemberNotLearner
            | ServerError::LearnerNotReady
            | ServerError::NotEnoughStartedMembers => Status::failed_precondition(e.to_string()),
            ServerError::Internal(_) => Status::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_etcd_codes_and_texts() {
        let s: Status = ServerError::Store(StoreError::Compacted {
            compact_revision: 3,
        })
        .into();
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        let s: Status = ServerError::Store(StoreError::LeaseNotFound).into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );
        let s: Status = ServerError::Store(StoreError::NoSpace).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }

    #[test]
    fn unknown_outcomes_are_unavailable_with_etcd_texts() {
        // Clients take `Unavailable` on a write as "may have happened":
        // never as a failure, never retried blindly.
        for (e, text) in [
            (ServerError::LeaderChanged, "etcdserver: leader changed"),
            (ServerError::Timeout, "etcdserver: request timed out"),
            (
                ServerError::LeaderFailed,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
        ] {
            let s: Status = e.into();
            assert_eq!((s.code(), s.message()), (Code::Unavailable, text));
        }
    }

    #[test]
    fn not_leader_carries_the_leader_address() {
        let s: Status = ServerError::NotLeader {
            leader_id: 1,
            leader_client_url: "http://127.0.0.1:2379".into(),
        }
        .into();
        assert_eq!(
            s.metadata().get("cairn-leader").unwrap(),
            "http://127.0.0.1:2379"
        );
    }
}
