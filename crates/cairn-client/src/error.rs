//! The client's error type.

use std::time::Duration;

use tonic::{Code, Status};

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `Client::connect` was given an empty endpoint list.
    #[error("no endpoints given")]
    NoEndpoints,

    /// An endpoint is not a usable `http://host:port` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// The caller passed something the client refuses before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The server answered with an error status (e.g. `etcdserver: key not
    /// found`). The status is kept whole for callers that need its code or
    /// metadata.
    #[error("{}", .status.message())]
    Rpc {
        /// The operation that failed, e.g. `"put"`.
        op: &'static str,
        /// Not a `#[source]`: its text repeats the message.
        status: Box<Status>,
    },

    /// A write was sent but no definite answer came back (the leader
    /// changed, the server or the client timed out, the connection broke
    /// mid-request). The write may or may not have been applied; the client
    /// did not retry it.
    #[error("{op}: outcome unknown, the request may or may not have been applied: {reason}")]
    OutcomeUnknown { op: &'static str, reason: String },

    /// Every attempt failed with a retryable error (endpoints down, no
    /// leader, ...).
    #[error("{op}: no endpoint could serve the request after {attempts} attempt(s): {last}")]
    Unavailable {
        op: &'static str,
        attempts: u32,
        /// The last error seen.
        last: String,
    },

    /// A read got no answer within the request timeout.
    #[error("{op}: timed out after {timeout:?}")]
    Timeout { op: &'static str, timeout: Duration },

    /// A keep-alive was answered with TTL <= 0: the lease does not exist
    /// (any more).
    #[error("lease {id:x} not found or already expired")]
    LeaseNotFound { id: i64 },

    /// The server cancelled a watcher that the client did not cancel; for a
    /// watch that asked for a compacted revision, `compact_revision` is the
    /// oldest revision still available.
    #[error("watch was canceled ({reason})")]
    WatchCanceled {
        reason: String,
        compact_revision: i64,
    },

    /// A snapshot stream was cut short or failed its integrity check.
    #[error("snapshot: {0}")]
    Snapshot(String),

    /// The server answered something the client cannot make sense of.
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl ClientError {
    pub(crate) fn rpc(op: &'static str, status: Status) -> Self {
        ClientError::Rpc {
            op,
            status: Box::new(status),
        }
    }

    /// The gRPC code of a server error, if this is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// The full gRPC status of a server error, if this is one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }

    /// True when a write may or may not have been applied.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ClientError::OutcomeUnknown { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_display_the_server_message() {
        let e = ClientError::rpc(
            "put",
            Status::not_found("etcdserver: requested lease not found"),
        );
        assert_eq!(e.to_string(), "etcdserver: requested lease not found");
        assert_eq!(e.code(), Some(Code::NotFound));
        let e = ClientError::LeaseNotFound { id: 0x694d };
        assert_eq!(e.to_string(), "lease 694d not found or already expired");
    }
}
