//! Transactions: compares, then-ops and else-ops.
//!
//! ```
//! use cairn_client::{Compare, CompareOp, Txn, TxnOp, PutOptions, GetOptions};
//! let txn = Txn::new()
//!     .when([Compare::version("lock", CompareOp::Equal, 0)])
//!     .and_then([TxnOp::put("lock", "me", PutOptions::default())])
//!     .or_else([TxnOp::get("lock", GetOptions::default())]);
//! # let _ = txn;
//! ```

use cairn_proto::etcdserverpb as pb;

use crate::range::prefix_range_end;
use crate::types::{
    DeleteOptions, DeleteResponse, GetOptions, GetResponse, PutOptions, PutResponse, ResponseHeader,
};

/// How a compare relates the key's attribute to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// The attribute compared, with the value to compare it to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

/// One guard of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    pub key: Vec<u8>,
    /// When non-empty, every key in `[key, range_end)` is compared.
    pub range_end: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            range_end: Vec::new(),
            op,
            target,
        }
    }

    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare::new(key, op, CompareTarget::Value(value.into()))
    }

    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Compare::new(key, op, CompareTarget::Version(version))
    }

    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Compare::new(key, op, CompareTarget::CreateRevision(revision))
    }

    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Compare::new(key, op, CompareTarget::ModRevision(revision))
    }

    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Compare::new(key, op, CompareTarget::Lease(lease))
    }

    /// Compare every key in `[key, range_end)`.
    pub fn with_range_end(mut self, range_end: impl Into<Vec<u8>>) -> Self {
        self.range_end = range_end.into();
        self
    }

    /// Compare every key starting with the key.
    pub fn with_prefix(mut self) -> Self {
        if self.key.is_empty() {
            self.key = vec![0];
        }
        self.range_end = prefix_range_end(&self.key);
        self
    }

    pub(crate) fn to_wire(&self) -> pb::Compare {
        use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
        let (target, union) = match &self.target {
            CompareTarget::Value(v) => (T::Value, U::Value(v.clone())),
            CompareTarget::Version(v) => (T::Version, U::Version(*v)),
            CompareTarget::CreateRevision(v) => (T::Create, U::CreateRevision(*v)),
            CompareTarget::ModRevision(v) => (T::Mod, U::ModRevision(*v)),
            CompareTarget::Lease(v) => (T::Lease, U::Lease(*v)),
        };
        pb::Compare {
            result: match self.op {
                CompareOp::Equal => R::Equal,
                CompareOp::NotEqual => R::NotEqual,
                CompareOp::Greater => R::Greater,
                CompareOp::Less => R::Less,
            } as i32,
            target: target as i32,
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            target_union: Some(union),
        }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Get {
        key: Vec<u8>,
        options: GetOptions,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        options: PutOptions,
    },
    Delete {
        key: Vec<u8>,
        options: DeleteOptions,
    },
    /// A nested transaction.
    Txn(Txn),
}

impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>, options: GetOptions) -> Self {
        TxnOp::Get {
            key: key.into(),
            options,
        }
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, options: PutOptions) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            options,
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>, options: DeleteOptions) -> Self {
        TxnOp::Delete {
            key: key.into(),
            options,
        }
    }

    pub(crate) fn to_wire(&self) -> pb::RequestOp {
        use pb::request_op::Request;
        let request = match self {
            TxnOp::Get { key, options } => Request::RequestRange(options.to_request(key)),
            TxnOp::Put {
                key,
                value,
                options,
            } => Request::RequestPut(options.to_request(key.clone(), value.clone())),
            TxnOp::Delete { key, options } => Request::RequestDeleteRange(options.to_request(key)),
            TxnOp::Txn(t) => Request::RequestTxn(t.to_wire()),
        };
        pb::RequestOp {
            request: Some(request),
        }
    }
}

/// A transaction: if every compare holds, the `and_then` ops run, otherwise
/// the `or_else` ops. It commits at most one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    /// Add guards (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Add operations run when every guard holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Add operations run when some guard fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    pub(crate) fn to_wire(&self) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: self.compares.iter().map(Compare::to_wire).collect(),
            success: self.success.iter().map(TxnOp::to_wire).collect(),
            failure: self.failure.iter().map(TxnOp::to_wire).collect(),
        }
    }
}

/// The answer of one transaction operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    Get(GetResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    /// Whether the guards held (so the `and_then` branch ran).
    pub succeeded: bool,
    /// One per operation that ran, in order.
    pub responses: Vec<TxnOpResponse>,
}

impl From<pb::TxnResponse> for TxnResponse {
    fn from(r: pb::TxnResponse) -> Self {
        use pb::response_op::Response;
        TxnResponse {
            header: r.header.into(),
            succeeded: r.succeeded,
            responses: r
                .responses
                .into_iter()
                .filter_map(|op| {
                    Some(match op.response? {
                        Response::ResponseRange(r) => TxnOpResponse::Get(r.into()),
                        Response::ResponsePut(r) => TxnOpResponse::Put(r.into()),
                        Response::ResponseDeleteRange(r) => TxnOpResponse::Delete(r.into()),
                        Response::ResponseTxn(r) => TxnOpResponse::Txn(r.into()),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_builds_wire_request() {
        let t = Txn::new()
            .when([
                Compare::value("k", CompareOp::Equal, "v"),
                Compare::mod_revision("k", CompareOp::Less, 5).with_prefix(),
            ])
            .and_then([TxnOp::put("k", "w", PutOptions::default())])
            .or_else([
                TxnOp::get("k", GetOptions::default()),
                TxnOp::Txn(Txn::new().and_then([TxnOp::delete("x", DeleteOptions::prefix())])),
            ]);
        let w = t.to_wire();
        assert_eq!(w.compare.len(), 2);
        assert_eq!(
            w.compare[0].target,
            pb::compare::CompareTarget::Value as i32
        );
        assert_eq!(
            w.compare[0].target_union,
            Some(pb::compare::TargetUnion::Value(b"v".to_vec()))
        );
        assert_eq!(w.compare[1].result, pb::compare::CompareResult::Less as i32);
        assert_eq!(w.compare[1].range_end, b"l".to_vec());
        assert_eq!(w.success.len(), 1);
        assert_eq!(w.failure.len(), 2);
        match &w.failure[1].request {
            Some(pb::request_op::Request::RequestTxn(inner)) => match &inner.success[0].request {
                Some(pb::request_op::Request::RequestDeleteRange(d)) => {
                    assert_eq!(d.range_end, b"y".to_vec())
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn txn_responses_convert() {
        use pb::response_op::Response;
        let r = pb::TxnResponse {
            header: Some(pb::ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            succeeded: true,
            responses: vec![
                pb::ResponseOp {
                    response: Some(Response::ResponsePut(pb::PutResponse::default())),
                },
                pb::ResponseOp { response: None },
            ],
        };
        let t = TxnResponse::from(r);
        assert!(t.succeeded);
        assert_eq!(t.header.revision, 9);
        assert_eq!(
            t.responses,
            vec![TxnOpResponse::Put(PutResponse::default())]
        );
    }
}
