//! The claims client's error type.

use tonic::Code;

use crate::error::ClientError;

/// Everything a claims call can fail with. When the cluster cannot answer,
/// the call fails with [`Unavailable`](Self::Unavailable): `can_offload`
/// never pretends keys are offloadable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// Refused before anything changed: empty or oversize key list, mixed
    /// or wrong key kind, oversize key/value, bad namespace configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("claims namespace {0:?} not found")]
    NamespaceNotFound(String),

    /// `create_namespace` with a configuration other than the existing one.
    #[error("claims namespace {0:?} exists with a different configuration")]
    NamespaceExists(String),

    /// The session (lease owner) expired or was closed: its leases are gone.
    #[error("session {0:x} not found (expired or closed)")]
    SessionNotFound(i64),

    /// No member could answer within the retries and the request timeout.
    #[error("the cluster could not answer: {0}")]
    Unavailable(#[source] ClientError),

    /// Any other failure of the call (server error, protocol error).
    #[error(transparent)]
    Client(ClientError),

    /// The register batcher was closed (or its task ended) before the
    /// entries could be queued or flushed.
    #[error("the register batcher is closed")]
    BatcherClosed,

    /// Entries queued in the batcher could not be registered.
    #[error("{entries} queued register entries failed: {reason}")]
    BatchFailed { entries: usize, reason: String },

    /// An environment variable has a value that cannot be used.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        var: &'static str,
        value: String,
        reason: String,
    },
}

impl ClaimsError {
    /// Classify a client error of a call on `namespace` for `session`.
    pub(crate) fn from_client(e: ClientError, namespace: &str, session: i64) -> Self {
        match &e {
            ClientError::Unavailable { .. }
            | ClientError::Timeout { .. }
            | ClientError::OutcomeUnknown { .. } => return ClaimsError::Unavailable(e),
            ClientError::Rpc { status, .. } => {
                let msg = status.message();
                match status.code() {
                    // The store's texts: "session N not found ..." and
                    // "claims namespace \"name\" not found".
                    Code::NotFound if msg.starts_with("session ") => {
                        return ClaimsError::SessionNotFound(session)
                    }
                    Code::NotFound => return ClaimsError::NamespaceNotFound(namespace.into()),
                    Code::AlreadyExists => return ClaimsError::NamespaceExists(namespace.into()),
                    Code::InvalidArgument | Code::OutOfRange => {
                        return ClaimsError::InvalidArgument(msg.into())
                    }
                    // Unknown / Cancelled: the transport broke mid-call
                    // (a member going down), which no Cairn handler sends.
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Unknown
                    | Code::Cancelled
                    | Code::Aborted => return ClaimsError::Unavailable(e),
                    _ => {}
                }
            }
            _ => {}
        }
        ClaimsError::Client(e)
    }

    /// True when the cluster could not answer (the caller may retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClaimsError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn rpc(s: Status) -> ClaimsError {
        ClaimsError::from_client(ClientError::rpc("x", s), "ns", 0x2a)
    }

    #[test]
    fn server_errors_become_precise_variants() {
        assert!(matches!(
            rpc(Status::not_found("claims namespace \"ns\" not found")),
            ClaimsError::NamespaceNotFound(n) if n == "ns"
        ));
        assert!(matches!(
            rpc(Status::not_found(
                "session 42 not found (expired or never granted)"
            )),
            ClaimsError::SessionNotFound(0x2a)
        ));
        assert!(matches!(
            rpc(Status::not_found(
                "claims namespace \"session-ns\" not found"
            )),
            ClaimsError::NamespaceNotFound(_)
        ));
        assert!(matches!(
            rpc(Status::invalid_argument("the request has no keys")),
            ClaimsError::InvalidArgument(m) if m == "the request has no keys"
        ));
        assert!(matches!(
            rpc(Status::already_exists("x")),
            ClaimsError::NamespaceExists(_)
        ));
        assert!(rpc(Status::unavailable("etcdserver: no leader")).is_unavailable());
        assert!(rpc(Status::unknown("transport error")).is_unavailable());
        assert!(matches!(
            rpc(Status::internal("boom")),
            ClaimsError::Client(_)
        ));
        let down = ClientError::Unavailable {
            op: "can offload",
            attempts: 3,
            last: "connection refused".into(),
        };
        assert!(ClaimsError::from_client(down, "ns", 1).is_unavailable());
    }
}
