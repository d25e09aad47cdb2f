//! Wire ⇄ store conversions for the KV requests, with the validation etcd
//! performs at the edge (`checkRangeRequest`, `checkPutRequest`,
//! `checkDeleteRequest`, `checkTxnRequest`): a request refused here never
//! reaches Raft. The store checks the state-dependent rules again at apply.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::{compare, range_request, request_op, response_op};
use cairn_proto::mvccpb;
use cairn_store as st;
use cairn_store::StoreError;

use crate::error::ServerError;
use crate::services::common::kv_to_wire;

fn invalid_sort() -> ServerError {
    ServerError::InvalidArgument("invalid sort option".into())
}

fn key_range(key: Vec<u8>, range_end: Vec<u8>) -> st::KeyRange {
    st::KeyRange {
        start: key,
        end: range_end,
    }
}

pub fn range_request(r: pb::RangeRequest) -> Result<st::RangeRequest, ServerError> {
    if r.key.is_empty() {
        return Err(StoreError::EmptyKey.into());
    }
    let sort_order = match range_request::SortOrder::try_from(r.sort_order) {
        Ok(range_request::SortOrder::None) => st::SortOrder::None,
        Ok(range_request::SortOrder::Ascend) => st::SortOrder::Ascend,
        Ok(range_request::SortOrder::Descend) => st::SortOrder::Descend,
        Err(_) => return Err(invalid_sort()),
    };
    let sort_target = match range_request::SortTarget::try_from(r.sort_target) {
        Ok(range_request::SortTarget::Key) => st::SortTarget::Key,
        Ok(range_request::SortTarget::Version) => st::SortTarget::Version,
        Ok(range_request::SortTarget::Create) => st::SortTarget::Create,
        Ok(range_request::SortTarget::Mod) => st::SortTarget::Mod,
        Ok(range_request::SortTarget::Value) => st::SortTarget::Value,
        Err(_) => return Err(invalid_sort()),
    };
    Ok(st::RangeRequest {
        range: key_range(r.key, r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn put_request(p: pb::PutRequest) -> Result<st::PutRequest, ServerError> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey.into());
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided.into());
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided.into());
    }
    Ok(st::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    })
}

pub fn delete_request(d: pb::DeleteRangeRequest) -> Result<st::DeleteRangeRequest, ServerError> {
    if d.key.is_empty() {
        return Err(StoreError::EmptyKey.into());
    }
    Ok(st::DeleteRangeRequest {
        range: key_range(d.key, d.range_end),
        prev_kv: d.prev_kv,
    })
}

fn compare(c: pb::Compare) -> Result<st::Compare, ServerError> {
    if c.key.is_empty() {
        return Err(StoreError::EmptyKey.into());
    }
    let result = match compare::CompareResult::try_from(c.result) {
        Ok(compare::CompareResult::Equal) => st::CompareResult::Equal,
        Ok(compare::CompareResult::Greater) => st::CompareResult::Greater,
        Ok(compare::CompareResult::Less) => st::CompareResult::Less,
        Ok(compare::CompareResult::NotEqual) => st::CompareResult::NotEqual,
        Err(_) => {
            return Err(ServerError::InvalidArgument(
                "invalid compare result".into(),
            ))
        }
    };
    // `target` says which attribute is compared; the union holds the
    // operand. A union of another case reads as the zero value, as the Go
    // getters etcd uses do.
    use compare::TargetUnion as U;
    let union = c.target_union;
    let int = |pick: fn(&U) -> Option<i64>| union.as_ref().and_then(pick).unwrap_or(0);
    let target = match compare::CompareTarget::try_from(c.target) {
        Ok(compare::CompareTarget::Version) => st::CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(compare::CompareTarget::Create) => st::CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(compare::CompareTarget::Mod) => st::CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(compare::CompareTarget::Lease) => st::CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        Ok(compare::CompareTarget::Value) => st::CompareTarget::Value(match union {
            Some(U::Value(v)) => v,
            _ => Vec::new(),
        }),
        Err(_) => {
            return Err(ServerError::InvalidArgument(
                "invalid compare target".into(),
            ))
        }
    };
    Ok(st::Compare {
        result,
        target,
        range: key_range(c.key, c.range_end),
    })
}

fn request_op(op: pb::RequestOp) -> Result<st::RequestOp, ServerError> {
    Ok(match op.request {
        Some(request_op::Request::RequestRange(r)) => st::RequestOp::Range(range_request(r)?),
        Some(request_op::Request::RequestPut(p)) => st::RequestOp::Put(put_request(p)?),
        Some(request_op::Request::RequestDeleteRange(d)) => {
            st::RequestOp::DeleteRange(delete_request(d)?)
        }
        Some(request_op::Request::RequestTxn(t)) => st::RequestOp::Txn(txn_request(t)?),
        // etcd answers an empty op with "key not found".
        None => return Err(StoreError::KeyNotFound.into()),
    })
}

/// Convert a txn and validate every op in it (nested txns included). The
/// op-count and duplicate-key checks run on the result; see `kv.rs`.
pub fn txn_request(t: pb::TxnRequest) -> Result<st::TxnRequest, ServerError> {
    Ok(st::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(request_op)
            .collect::<Result<_, _>>()?,
    })
}

/// Builds response headers: everything but the revision is fixed per
/// response.
#[derive(Clone, Copy)]
pub struct Headers {
    pub base: pb::ResponseHeader,
}

impl Headers {
    pub fn at(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            ..self.base
        })
    }
}

pub fn range_response(h: Headers, r: st::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: h.at(r.revision),
        kvs: r.kvs.into_iter().map(kv_to_wire).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(h: Headers, r: st::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: h.at(r.revision),
        prev_kv: r.prev_kv.map(kv_to_wire),
    }
}

pub fn delete_response(h: Headers, r: st::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: h.at(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_wire).collect(),
    }
}

/// A txn response; nested responses carry headers at the txn's revision.
pub fn txn_response(h: Headers, r: st::TxnResponse) -> pb::TxnResponse {
    pb::TxnResponse {
        header: h.at(r.revision),
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    st::ResponseOp::Range(r) => {
                        response_op::Response::ResponseRange(range_response(h, r))
                    }
                    st::ResponseOp::Put(r) => {
                        response_op::Response::ResponsePut(put_response(h, r))
                    }
                    st::ResponseOp::DeleteRange(r) => {
                        response_op::Response::ResponseDeleteRange(delete_response(h, r))
                    }
                    st::ResponseOp::Txn(t) => {
                        response_op::Response::ResponseTxn(txn_response(h, t))
                    }
                }),
            })
            .collect(),
    }
}

pub fn event_to_wire(e: st::Event) -> mvccpb::Event {
    let kind = match e.kind {
        st::EventKind::Put => mvccpb::event::EventType::Put,
        st::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_wire(e.kv)),
        prev_kv: e.prev_kv.map(kv_to_wire),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reads_the_operand_named_by_target() {
        let c = pb::Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(7)),
            range_end: vec![],
        };
        let s = compare(c.clone()).unwrap();
        assert_eq!(s.target, st::CompareTarget::Mod(7));
        assert_eq!(s.result, st::CompareResult::Greater);
        // A mismatched union case reads as zero.
        let s = compare(pb::Compare {
            target: compare::CompareTarget::Version as i32,
            ..c
        })
        .unwrap();
        assert_eq!(s.target, st::CompareTarget::Version(0));
    }

    #[test]
    fn edge_checks_follow_etcd() {
        let empty_op = pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(
            txn_request(empty_op).unwrap_err(),
            ServerError::Store(StoreError::KeyNotFound)
        );
        let bad_sort = pb::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert!(matches!(
            range_request(bad_sort),
            Err(ServerError::InvalidArgument(_))
        ));
        let value_and_ignore = pb::PutRequest {
            key: b"a".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(
            put_request(value_and_ignore).unwrap_err(),
            ServerError::Store(StoreError::ValueProvided)
        );
        assert_eq!(
            delete_request(pb::DeleteRangeRequest::default()).unwrap_err(),
            ServerError::Store(StoreError::EmptyKey)
        );
    }
}
