//! Which failures are retried.
//!
//! Reads are idempotent and retried on any `Unavailable`. Writes are
//! retried only when the failure proves the request was never delivered to
//! a member that could apply it: a failed connection, or a server refusing
//! it before proposing (`no leader`, `not leader`). A write that may have
//! reached consensus (`leader changed`, `request timed out`, a connection
//! lost mid-call, a deadline) is reported as outcome-unknown and never
//! retried, so it cannot be applied twice.

pub(crate) use cairn_proto::status::is_connect_error;
use tonic::{Code, Status};

/// Metadata key a Cairn member sets on `Unavailable` to name the leader's
/// client URL.
pub const LEADER_METADATA_KEY: &str = "cairn-leader";

/// How a call may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Safe to repeat (range, status, member list, lease TTL, watch create, ...).
    Read,
    /// Changes state; repeated only if it surely was not delivered.
    Write,
}

/// What to do with a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Try again (on the next endpoint, or on the leader if named).
    Retry,
    /// Give up: the error is the answer.
    Fail,
    /// Give up: a write may or may not have been applied.
    Unknown,
}

/// The facts about a failed try that decide its fate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure<'a> {
    pub code: Code,
    pub message: &'a str,
    /// The transport could not connect: nothing was sent.
    pub connect_error: bool,
}

impl<'a> Failure<'a> {
    pub(crate) fn of(status: &'a Status) -> Self {
        Failure {
            code: status.code(),
            message: status.message(),
            connect_error: is_connect_error(status),
        }
    }
}

/// Server messages that mean "refused before proposing".
const NOT_DELIVERED_MESSAGES: &[&str] = &["etcdserver: no leader", "etcdserver: not leader"];

/// tonic's message when the channel failed before sending (its `ready()`
/// step).
const NOT_READY_PREFIX: &str = "Service was not ready";

pub(crate) fn classify(kind: CallKind, f: Failure<'_>) -> Disposition {
    let not_delivered = f.connect_error
        || f.message.starts_with(NOT_READY_PREFIX)
        || (f.code == Code::Unavailable
            && NOT_DELIVERED_MESSAGES
                .iter()
                .any(|m| f.message.starts_with(m)));
    if not_delivered {
        return Disposition::Retry;
    }
    match kind {
        CallKind::Read => match f.code {
            Code::Unavailable => Disposition::Retry,
            _ => Disposition::Fail,
        },
        CallKind::Write => match f.code {
            // Includes "leader changed", "request timed out", "server
            // stopped" and connections lost mid-call.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Disposition::Unknown,
            // A transport failure tonic could not classify.
            Code::Unknown if f.message.contains("transport") || f.message.contains("h2") => {
                Disposition::Unknown
            }
            _ => Disposition::Fail,
        },
    }
}

/// The status message with the causes tonic keeps behind it (e.g. `tcp
/// connect error: Connection refused (os error 111)`).
pub(crate) fn describe(status: &Status) -> String {
    let mut out = status.message().to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        let s = err.to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = err.source();
    }
    out
}

/// Whether the status reports that the call's deadline passed (tonic's
/// client-side `Timeout expired`, or the server's `DeadlineExceeded`).
pub(crate) fn is_deadline(status: &Status) -> bool {
    if status.code() == Code::DeadlineExceeded {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.downcast_ref::<tonic::TimeoutExpired>().is_some() {
            return true;
        }
        source = err.source();
    }
    status.code() == Code::Cancelled && status.message() == "Timeout expired"
}

/// The leader's client URL if the status names one.
pub(crate) fn leader_hint(status: &Status) -> Option<String> {
    named_leader(status.metadata()).map(str::to_owned)
}

/// The leader's client URL if this metadata (an error's, or a follower's
/// answer) names one.
pub(crate) fn named_leader(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(code: Code, message: &str) -> Failure<'_> {
        Failure {
            code,
            message,
            connect_error: false,
        }
    }

    #[test]
    fn reads_retry_on_any_unavailable() {
        for m in [
            "etcdserver: no leader",
            "etcdserver: leader changed",
            "etcdserver: request timed out",
            "connection reset",
        ] {
            assert_eq!(
                classify(CallKind::Read, f(Code::Unavailable, m)),
                Disposition::Retry,
                "{m}"
            );
        }
        assert_eq!(
            classify(
                CallKind::Read,
                f(Code::InvalidArgument, "etcdserver: key is not provided")
            ),
            Disposition::Fail
        );
        assert_eq!(
            classify(
                CallKind::Read,
                f(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted"
                )
            ),
            Disposition::Fail
        );
    }

    #[test]
    fn writes_retry_only_when_not_delivered() {
        let connect = Failure {
            code: Code::Unavailable,
            message: "tcp connect error: Connection refused (os error 111)",
            connect_error: true,
        };
        assert_eq!(classify(CallKind::Write, connect), Disposition::Retry);
        assert_eq!(
            classify(
                CallKind::Write,
                f(Code::Unavailable, "etcdserver: no leader")
            ),
            Disposition::Retry
        );
        assert_eq!(
            classify(
                CallKind::Write,
                f(Code::Unavailable, "etcdserver: not leader")
            ),
            Disposition::Retry
        );
        assert_eq!(
            classify(
                CallKind::Write,
                f(Code::Unknown, "Service was not ready: transport error")
            ),
            Disposition::Retry
        );
    }

    #[test]
    fn writes_with_unknown_outcome_are_never_retried() {
        for (code, m) in [
            (Code::Unavailable, "etcdserver: leader changed"),
            (Code::Unavailable, "etcdserver: request timed out"),
            (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            (Code::Unavailable, "etcdserver: server stopped"),
            (Code::Unavailable, "error reading a body from connection"),
            (
                Code::DeadlineExceeded,
                "Deadline expired before operation could complete",
            ),
            (Code::Cancelled, "Timeout expired"),
        ] {
            assert_eq!(
                classify(CallKind::Write, f(code, m)),
                Disposition::Unknown,
                "{m}"
            );
        }
    }

    #[test]
    fn definite_server_errors_fail_writes() {
        for (code, m) in [
            (Code::NotFound, "etcdserver: requested lease not found"),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
        ] {
            assert_eq!(
                classify(CallKind::Write, f(code, m)),
                Disposition::Fail,
                "{m}"
            );
        }
    }

    #[test]
    fn connect_errors_are_recognised_by_message_too() {
        let s = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(is_connect_error(&s));
        assert!(!is_connect_error(&Status::unavailable(
            "etcdserver: leader changed"
        )));
        assert!(!is_connect_error(&Status::internal("Connection refused")));
    }

    #[test]
    fn deadlines_are_recognised() {
        assert!(is_deadline(&Status::deadline_exceeded("x")));
        assert!(is_deadline(&Status::cancelled("Timeout expired")));
        assert!(!is_deadline(&Status::cancelled("client went away")));
        assert!(!is_deadline(&Status::unavailable(
            "etcdserver: request timed out"
        )));
    }

    #[test]
    fn leader_hint_is_read_from_metadata() {
        let mut s = Status::unavailable("etcdserver: not leader");
        assert_eq!(leader_hint(&s), None);
        s.metadata_mut().insert(
            LEADER_METADATA_KEY,
            "http://127.0.0.1:2379".parse().unwrap(),
        );
        assert_eq!(leader_hint(&s).as_deref(), Some("http://127.0.0.1:2379"));
    }
}
