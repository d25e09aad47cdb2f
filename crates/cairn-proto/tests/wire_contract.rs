//! The etcd v3 wire contract: field numbers, wire types, enum values, package,
//! service and rpc names that etcdctl and etcd client libraries depend on.
//!
//! Every expectation here was checked against etcd's published API (v3.4 and
//! v3.5); a change to a `.proto` file that breaks compatibility fails here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cairn_proto::authpb::{self, permission, Permission, Role, User, UserAddOptions};
use cairn_proto::etcdserverpb::{
    self, alarm_request, compare, downgrade_request, range_request, request_op, response_op,
    watch_create_request, watch_request, AlarmMember, AlarmRequest, AlarmType, CompactionRequest,
    Compare, DeleteRangeRequest, DeleteRangeResponse, DowngradeRequest, HashKvRequest,
    HashKvResponse, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberListRequest,
    MoveLeaderRequest, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, ResponseOp, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    TxnRequest, TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest,
    WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::{event, Event, KeyValue};
use cairn_proto::{raft, v3electionpb, v3lockpb};
use prost::Message;

// ---------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------

const VARINT: u64 = 0;
const LEN: u64 = 2;

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn tag(field: u64, wire_type: u64) -> Vec<u8> {
    varint((field << 3) | wire_type)
}

/// The bytes of one varint field (int32/int64/uint64/bool/enum).
fn vfield(field: u64, value: u64) -> Vec<u8> {
    let mut out = tag(field, VARINT);
    out.extend(varint(value));
    out
}

/// The bytes of one length-delimited field (bytes/string/message/packed).
fn lfield(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = tag(field, LEN);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Splits an encoded message into (field number -> raw field bytes), to check
/// each field's number and wire type without depending on encoding order.
fn fields(mut buf: &[u8]) -> BTreeMap<u64, Vec<Vec<u8>>> {
    fn read_varint(buf: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = buf[0];
            *buf = &buf[1..];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    while !buf.is_empty() {
        let start = buf;
        let key = read_varint(&mut buf);
        match key & 7 {
            0 => {
                read_varint(&mut buf);
            }
            2 => {
                let len = read_varint(&mut buf) as usize;
                buf = &buf[len..];
            }
            wt => panic!("unexpected wire type {wt}"),
        }
        let used = start.len() - buf.len();
        out.entry(key >> 3)
            .or_default()
            .push(start[..used].to_vec());
    }
    out
}

fn field_numbers<M: Message>(m: &M) -> Vec<u64> {
    fields(&m.encode_to_vec()).into_keys().collect()
}

// ---------------------------------------------------------------------------
// mvccpb / authpb
// ---------------------------------------------------------------------------

#[test]
fn key_value_fields() {
    let kv = KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: b"v".to_vec(),
        lease: 6,
    };
    let got = fields(&kv.encode_to_vec());
    assert_eq!(got[&1], vec![lfield(1, b"k")]);
    assert_eq!(got[&2], vec![vfield(2, 2)]);
    assert_eq!(got[&3], vec![vfield(3, 3)]);
    assert_eq!(got[&4], vec![vfield(4, 4)]);
    assert_eq!(got[&5], vec![lfield(5, b"v")]);
    assert_eq!(got[&6], vec![vfield(6, 6)]);
    assert_eq!(got.len(), 6);
    // Literal bytes for the key, independent of the helpers.
    assert_eq!(
        KeyValue {
            key: b"a".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
        [0x0a, 0x01, b'a']
    );
}

#[test]
fn event_fields_and_type() {
    assert_eq!(event::EventType::Put as i32, 0);
    assert_eq!(event::EventType::Delete as i32, 1);
    let kv = KeyValue {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let ev = Event {
        r#type: event::EventType::Delete as i32,
        kv: Some(kv.clone()),
        prev_kv: Some(kv.clone()),
    };
    let inner = kv.encode_to_vec();
    assert_eq!(
        ev.encode_to_vec(),
        cat(&[vfield(1, 1), lfield(2, &inner), lfield(3, &inner)])
    );
}

#[test]
fn auth_messages() {
    let user = User {
        name: b"n".to_vec(),
        password: b"p".to_vec(),
        roles: vec!["r".into()],
        options: Some(UserAddOptions { no_password: true }),
    };
    assert_eq!(
        user.encode_to_vec(),
        cat(&[
            lfield(1, b"n"),
            lfield(2, b"p"),
            lfield(3, b"r"),
            lfield(4, &vfield(1, 1)),
        ])
    );
    assert_eq!(permission::Type::Read as i32, 0);
    assert_eq!(permission::Type::Write as i32, 1);
    assert_eq!(permission::Type::Readwrite as i32, 2);
    let perm = Permission {
        perm_type: permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    };
    let perm_bytes = cat(&[vfield(1, 2), lfield(2, b"a"), lfield(3, b"b")]);
    assert_eq!(perm.encode_to_vec(), perm_bytes);
    let role = Role {
        name: b"r".to_vec(),
        key_permission: vec![perm],
    };
    assert_eq!(
        role.encode_to_vec(),
        cat(&[lfield(1, b"r"), lfield(2, &perm_bytes)])
    );
}

// ---------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------

#[test]
fn response_header_fields() {
    let h = ResponseHeader {
        cluster_id: 11,
        member_id: 22,
        revision: 33,
        raft_term: 44,
    };
    assert_eq!(
        h.encode_to_vec(),
        cat(&[vfield(1, 11), vfield(2, 22), vfield(3, 33), vfield(4, 44)])
    );
    // Field 1, varint 1: literal bytes.
    assert_eq!(
        ResponseHeader {
            cluster_id: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        [0x08, 0x01]
    );
}

#[test]
fn range_request_fields() {
    let one = |f: fn(&mut RangeRequest)| {
        let mut r = RangeRequest::default();
        f(&mut r);
        r.encode_to_vec()
    };
    assert_eq!(one(|r| r.key = b"k".to_vec()), lfield(1, b"k"));
    assert_eq!(one(|r| r.range_end = vec![0]), [0x12, 0x01, 0x00]);
    assert_eq!(one(|r| r.limit = 5), [0x18, 0x05]);
    assert_eq!(one(|r| r.revision = 7), [0x20, 0x07]);
    assert_eq!(
        one(|r| r.sort_order = range_request::SortOrder::Descend as i32),
        [0x28, 0x02]
    );
    assert_eq!(
        one(|r| r.sort_target = range_request::SortTarget::Mod as i32),
        [0x30, 0x03]
    );
    assert_eq!(one(|r| r.serializable = true), [0x38, 0x01]);
    assert_eq!(one(|r| r.keys_only = true), [0x40, 0x01]);
    assert_eq!(one(|r| r.count_only = true), [0x48, 0x01]);
    assert_eq!(one(|r| r.min_mod_revision = 1), vfield(10, 1));
    assert_eq!(one(|r| r.max_mod_revision = 1), vfield(11, 1));
    assert_eq!(one(|r| r.min_create_revision = 1), vfield(12, 1));
    assert_eq!(one(|r| r.max_create_revision = 1), vfield(13, 1));
    // int64 fields use plain varints (not zigzag): -1 takes ten bytes.
    assert_eq!(one(|r| r.revision = -1), vfield(4, u64::MAX));

    use range_request::{SortOrder, SortTarget};
    assert_eq!(
        [SortOrder::None, SortOrder::Ascend, SortOrder::Descend].map(|v| v as i32),
        [0, 1, 2]
    );
    assert_eq!(
        [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn range_response_fields() {
    let kv = KeyValue {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let r = RangeResponse {
        header: Some(ResponseHeader {
            revision: 1,
            ..Default::default()
        }),
        kvs: vec![kv.clone(), kv.clone()],
        more: true,
        count: 9,
    };
    let kvb = kv.encode_to_vec();
    assert_eq!(
        r.encode_to_vec(),
        cat(&[
            lfield(1, &vfield(3, 1)),
            lfield(2, &kvb),
            lfield(2, &kvb),
            vfield(3, 1),
            vfield(4, 9),
        ])
    );
}

#[test]
fn put_and_delete_fields() {
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 3,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(
        put.encode_to_vec(),
        cat(&[
            lfield(1, b"k"),
            lfield(2, b"v"),
            vfield(3, 3),
            vfield(4, 1),
            vfield(5, 1),
            vfield(6, 1),
        ])
    );
    let kvb = KeyValue {
        key: b"k".to_vec(),
        ..Default::default()
    };
    assert_eq!(
        field_numbers(&PutResponse {
            header: Some(ResponseHeader::default()),
            prev_kv: Some(kvb.clone()),
        }),
        [1, 2]
    );
    let del = DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        prev_kv: true,
    };
    assert_eq!(
        del.encode_to_vec(),
        cat(&[lfield(1, b"a"), lfield(2, b"b"), vfield(3, 1)])
    );
    assert_eq!(
        field_numbers(&DeleteRangeResponse {
            header: Some(ResponseHeader::default()),
            deleted: 1,
            prev_kvs: vec![kvb],
        }),
        [1, 2, 3]
    );
}

#[test]
fn compare_fields_and_oneof() {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    assert_eq!(
        [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            CompareTarget::Version,
            CompareTarget::Create,
            CompareTarget::Mod,
            CompareTarget::Value,
            CompareTarget::Lease
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3, 4]
    );

    let with = |u: TargetUnion| {
        Compare {
            target_union: Some(u),
            ..Default::default()
        }
        .encode_to_vec()
    };
    // Proto3 oneof members are encoded even when zero.
    assert_eq!(with(TargetUnion::Version(0)), [0x20, 0x00]);
    assert_eq!(with(TargetUnion::CreateRevision(5)), vfield(5, 5));
    assert_eq!(with(TargetUnion::ModRevision(6)), vfield(6, 6));
    assert_eq!(with(TargetUnion::Value(b"x".to_vec())), lfield(7, b"x"));
    assert_eq!(with(TargetUnion::Lease(8)), vfield(8, 8));

    let c = Compare {
        result: CompareResult::NotEqual as i32,
        target: CompareTarget::Mod as i32,
        key: b"k".to_vec(),
        target_union: None,
        range_end: b"z".to_vec(),
    };
    // range_end is field 64: tag (64 << 3 | 2) = 514 = varint 0x82 0x04.
    assert_eq!(
        c.encode_to_vec(),
        cat(&[
            vfield(1, 3),
            vfield(2, 2),
            lfield(3, b"k"),
            vec![0x82, 0x04, 0x01, b'z'],
        ])
    );
}

#[test]
fn txn_fields_and_ops() {
    let range = RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let rb = range.encode_to_vec();
    let op = |r: request_op::Request| RequestOp { request: Some(r) }.encode_to_vec();
    assert_eq!(
        op(request_op::Request::RequestRange(range.clone())),
        lfield(1, &rb)
    );
    assert_eq!(
        op(request_op::Request::RequestPut(PutRequest::default())),
        lfield(2, &[])
    );
    assert_eq!(
        op(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest::default()
        )),
        lfield(3, &[])
    );
    assert_eq!(
        op(request_op::Request::RequestTxn(TxnRequest::default())),
        lfield(4, &[])
    );

    let rop = |r: response_op::Response| ResponseOp { response: Some(r) }.encode_to_vec();
    assert_eq!(
        rop(response_op::Response::ResponseRange(
            RangeResponse::default()
        )),
        lfield(1, &[])
    );
    assert_eq!(
        rop(response_op::Response::ResponsePut(PutResponse::default())),
        lfield(2, &[])
    );
    assert_eq!(
        rop(response_op::Response::ResponseDeleteRange(
            DeleteRangeResponse::default()
        )),
        lfield(3, &[])
    );
    assert_eq!(
        rop(response_op::Response::ResponseTxn(TxnResponse::default())),
        lfield(4, &[])
    );

    let txn = TxnRequest {
        compare: vec![Compare::default()],
        success: vec![RequestOp::default()],
        failure: vec![RequestOp::default()],
    };
    assert_eq!(
        txn.encode_to_vec(),
        cat(&[lfield(1, &[]), lfield(2, &[]), lfield(3, &[])])
    );
    let resp = TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: true,
        responses: vec![ResponseOp::default()],
    };
    assert_eq!(
        resp.encode_to_vec(),
        cat(&[lfield(1, &[]), vfield(2, 1), lfield(3, &[])])
    );
    assert_eq!(
        CompactionRequest {
            revision: 5,
            physical: true
        }
        .encode_to_vec(),
        cat(&[vfield(1, 5), vfield(2, 1)])
    );
}

// ---------------------------------------------------------------------------
// Watch
// ---------------------------------------------------------------------------

#[test]
fn watch_request_oneof() {
    use watch_request::RequestUnion;
    let w = |u: RequestUnion| {
        WatchRequest {
            request_union: Some(u),
        }
        .encode_to_vec()
    };
    assert_eq!(
        w(RequestUnion::CreateRequest(WatchCreateRequest::default())),
        lfield(1, &[])
    );
    assert_eq!(
        w(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 3
        })),
        lfield(2, &vfield(1, 3))
    );
    assert_eq!(
        w(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        lfield(3, &[])
    );
}

#[test]
fn watch_create_request_fields() {
    use watch_create_request::FilterType;
    assert_eq!(FilterType::Noput as i32, 0);
    assert_eq!(FilterType::Nodelete as i32, 1);
    let one = |f: fn(&mut WatchCreateRequest)| {
        let mut r = WatchCreateRequest::default();
        f(&mut r);
        r.encode_to_vec()
    };
    assert_eq!(one(|r| r.key = b"k".to_vec()), lfield(1, b"k"));
    assert_eq!(one(|r| r.range_end = b"z".to_vec()), lfield(2, b"z"));
    assert_eq!(one(|r| r.start_revision = 9), [0x18, 0x09]);
    assert_eq!(one(|r| r.progress_notify = true), [0x20, 0x01]);
    // filters: packed repeated enum (field 5, wire type 2).
    assert_eq!(
        one(|r| r.filters = vec![FilterType::Noput as i32, FilterType::Nodelete as i32]),
        [0x2a, 0x02, 0x00, 0x01]
    );
    assert_eq!(one(|r| r.prev_kv = true), [0x30, 0x01]);
    assert_eq!(one(|r| r.watch_id = 4), [0x38, 0x04]);
    assert_eq!(one(|r| r.fragment = true), [0x40, 0x01]);

    // Decoding also accepts unpacked filters (older encoders).
    let unpacked = cat(&[vfield(5, 1), vfield(5, 0)]);
    let r = WatchCreateRequest::decode(unpacked.as_slice()).unwrap();
    assert_eq!(r.filters, [1, 0]);
}

#[test]
fn watch_response_fields() {
    let ev = Event {
        r#type: event::EventType::Put as i32,
        kv: None,
        prev_kv: None,
    };
    let r = WatchResponse {
        header: Some(ResponseHeader::default()),
        watch_id: 2,
        created: true,
        canceled: true,
        compact_revision: 5,
        cancel_reason: "why".into(),
        fragment: true,
        events: vec![ev],
    };
    assert_eq!(
        r.encode_to_vec(),
        cat(&[
            lfield(1, &[]),
            vfield(2, 2),
            vfield(3, 1),
            vfield(4, 1),
            vfield(5, 5),
            lfield(6, b"why"),
            vfield(7, 1),
            // events is field 11: tag 11 << 3 | 2 = 0x5a.
            vec![0x5a, 0x00],
        ])
    );

    // Decode what an etcd server sends for a put event.
    let kv = cat(&[lfield(1, b"foo"), vfield(3, 7), lfield(5, b"bar")]);
    let wire = cat(&[
        lfield(1, &vfield(3, 7)),
        vfield(2, 1),
        lfield(11, &lfield(2, &kv)),
    ]);
    let got = WatchResponse::decode(wire.as_slice()).unwrap();
    assert_eq!(got.header.unwrap().revision, 7);
    assert_eq!(got.watch_id, 1);
    let ev = &got.events[0];
    assert_eq!(ev.r#type(), event::EventType::Put);
    let kv = ev.kv.as_ref().unwrap();
    assert_eq!(kv.key, b"foo");
    assert_eq!(kv.mod_revision, 7);
    assert_eq!(kv.value, b"bar");
}

// ---------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------

#[test]
fn lease_fields() {
    assert_eq!(
        LeaseGrantRequest { ttl: 10, id: 20 }.encode_to_vec(),
        cat(&[vfield(1, 10), vfield(2, 20)])
    );
    assert_eq!(
        LeaseGrantResponse {
            header: Some(ResponseHeader::default()),
            id: 2,
            ttl: 3,
            error: "e".into(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, &[]), vfield(2, 2), vfield(3, 3), lfield(4, b"e")])
    );
    assert_eq!(
        LeaseKeepAliveRequest { id: 5 }.encode_to_vec(),
        vfield(1, 5)
    );
    assert_eq!(
        field_numbers(&etcdserverpb::LeaseKeepAliveResponse {
            header: Some(ResponseHeader::default()),
            id: 1,
            ttl: 1,
        }),
        [1, 2, 3]
    );
    assert_eq!(
        etcdserverpb::LeaseRevokeRequest { id: 5 }.encode_to_vec(),
        vfield(1, 5)
    );
    assert_eq!(
        LeaseTimeToLiveRequest { id: 5, keys: true }.encode_to_vec(),
        cat(&[vfield(1, 5), vfield(2, 1)])
    );
    assert_eq!(
        LeaseTimeToLiveResponse {
            header: Some(ResponseHeader::default()),
            id: 2,
            ttl: 3,
            granted_ttl: 4,
            keys: vec![b"k".to_vec()],
        }
        .encode_to_vec(),
        cat(&[
            lfield(1, &[]),
            vfield(2, 2),
            vfield(3, 3),
            vfield(4, 4),
            lfield(5, b"k"),
        ])
    );
    assert_eq!(
        etcdserverpb::LeaseLeasesResponse {
            header: None,
            leases: vec![etcdserverpb::LeaseStatus { id: 9 }],
        }
        .encode_to_vec(),
        lfield(2, &vfield(1, 9))
    );
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

#[test]
fn member_fields() {
    let m = Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_eq!(
        m.encode_to_vec(),
        cat(&[
            vfield(1, 1),
            lfield(2, b"n"),
            lfield(3, b"p"),
            lfield(4, b"c"),
            vfield(5, 1),
        ])
    );
    assert_eq!(
        MemberAddRequest {
            peer_ur_ls: vec!["p".into()],
            is_learner: true,
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"p"), vfield(2, 1)])
    );
    assert_eq!(
        field_numbers(&etcdserverpb::MemberAddResponse {
            header: Some(ResponseHeader::default()),
            member: Some(Member::default()),
            members: vec![Member::default()],
        }),
        [1, 2, 3]
    );
    assert_eq!(
        etcdserverpb::MemberUpdateRequest {
            id: 7,
            peer_ur_ls: vec!["p".into()],
        }
        .encode_to_vec(),
        cat(&[vfield(1, 7), lfield(2, b"p")])
    );
    assert_eq!(
        etcdserverpb::MemberRemoveRequest { id: 7 }.encode_to_vec(),
        vfield(1, 7)
    );
    assert_eq!(
        etcdserverpb::MemberPromoteRequest { id: 7 }.encode_to_vec(),
        vfield(1, 7)
    );
    assert_eq!(
        MemberListRequest { linearizable: true }.encode_to_vec(),
        vfield(1, 1)
    );
    assert_eq!(
        field_numbers(&etcdserverpb::MemberListResponse {
            header: Some(ResponseHeader::default()),
            members: vec![Member::default()],
        }),
        [1, 2]
    );
}

// ---------------------------------------------------------------------------
// Maintenance
// ---------------------------------------------------------------------------

#[test]
fn status_response_fields() {
    let one = |f: fn(&mut StatusResponse)| {
        let mut r = StatusResponse::default();
        f(&mut r);
        r.encode_to_vec()
    };
    assert_eq!(
        one(|r| r.header = Some(ResponseHeader::default())),
        lfield(1, &[])
    );
    assert_eq!(one(|r| r.version = "3.5.0".into()), lfield(2, b"3.5.0"));
    assert_eq!(one(|r| r.db_size = 1), vfield(3, 1));
    assert_eq!(one(|r| r.leader = 1), vfield(4, 1));
    assert_eq!(one(|r| r.raft_index = 1), vfield(5, 1));
    assert_eq!(one(|r| r.raft_term = 1), vfield(6, 1));
    assert_eq!(one(|r| r.raft_applied_index = 1), [0x38, 0x01]);
    assert_eq!(one(|r| r.errors = vec!["e".into()]), [0x42, 0x01, b'e']);
    assert_eq!(one(|r| r.db_size_in_use = 1), [0x48, 0x01]);
    assert_eq!(one(|r| r.is_learner = true), [0x50, 0x01]);
    // Additive fields from etcd v3.6.
    assert_eq!(one(|r| r.storage_version = "s".into()), lfield(11, b"s"));
    assert_eq!(one(|r| r.db_size_quota = 1), vfield(12, 1));
    assert_eq!(
        one(|r| r.downgrade_info = Some(etcdserverpb::DowngradeInfo::default())),
        lfield(13, &[])
    );
}

#[test]
fn alarm_fields() {
    assert_eq!(
        [AlarmType::None, AlarmType::Nospace, AlarmType::Corrupt].map(|v| v as i32),
        [0, 1, 2]
    );
    use alarm_request::AlarmAction;
    assert_eq!(
        [
            AlarmAction::Get,
            AlarmAction::Activate,
            AlarmAction::Deactivate
        ]
        .map(|v| v as i32),
        [0, 1, 2]
    );
    assert_eq!(
        AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 9,
            alarm: AlarmType::Nospace as i32,
        }
        .encode_to_vec(),
        cat(&[vfield(1, 2), vfield(2, 9), vfield(3, 1)])
    );
    let am = AlarmMember {
        member_id: 9,
        alarm: AlarmType::Corrupt as i32,
    };
    let amb = cat(&[vfield(1, 9), vfield(2, 2)]);
    assert_eq!(am.encode_to_vec(), amb);
    assert_eq!(
        etcdserverpb::AlarmResponse {
            header: None,
            alarms: vec![am],
        }
        .encode_to_vec(),
        lfield(2, &amb)
    );
}

#[test]
fn hash_snapshot_move_leader_downgrade_fields() {
    assert_eq!(HashKvRequest { revision: 4 }.encode_to_vec(), vfield(1, 4));
    assert_eq!(
        HashKvResponse {
            header: Some(ResponseHeader::default()),
            hash: 0xdead_beef,
            compact_revision: 3,
            hash_revision: 4,
        }
        .encode_to_vec(),
        cat(&[
            lfield(1, &[]),
            vfield(2, 0xdead_beef),
            vfield(3, 3),
            vfield(4, 4)
        ])
    );
    assert_eq!(
        etcdserverpb::HashResponse {
            header: None,
            hash: 7
        }
        .encode_to_vec(),
        vfield(2, 7)
    );
    assert_eq!(
        SnapshotResponse {
            header: Some(ResponseHeader::default()),
            remaining_bytes: 100,
            blob: b"data".to_vec(),
            version: "3.6.0".into(),
        }
        .encode_to_vec(),
        cat(&[
            lfield(1, &[]),
            vfield(2, 100),
            lfield(3, b"data"),
            lfield(4, b"3.6.0"),
        ])
    );
    assert_eq!(
        MoveLeaderRequest { target_id: 42 }.encode_to_vec(),
        vfield(1, 42)
    );
    use downgrade_request::DowngradeAction;
    assert_eq!(
        [
            DowngradeAction::Validate,
            DowngradeAction::Enable,
            DowngradeAction::Cancel
        ]
        .map(|v| v as i32),
        [0, 1, 2]
    );
    assert_eq!(
        DowngradeRequest {
            action: DowngradeAction::Enable as i32,
            version: "3.4".into(),
        }
        .encode_to_vec(),
        cat(&[vfield(1, 1), lfield(2, b"3.4")])
    );
    assert_eq!(
        etcdserverpb::DowngradeResponse {
            header: None,
            version: "3.5".into(),
        }
        .encode_to_vec(),
        lfield(2, b"3.5")
    );
}

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

#[test]
fn auth_request_fields() {
    use etcdserverpb::*;
    assert_eq!(
        AuthenticateRequest {
            name: "u".into(),
            password: "p".into(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"u"), lfield(2, b"p")])
    );
    assert_eq!(
        AuthenticateResponse {
            header: None,
            token: "t".into(),
        }
        .encode_to_vec(),
        lfield(2, b"t")
    );
    assert_eq!(
        AuthUserAddRequest {
            name: "u".into(),
            password: "p".into(),
            options: Some(authpb::UserAddOptions { no_password: true }),
            hashed_password: "h".into(),
        }
        .encode_to_vec(),
        cat(&[
            lfield(1, b"u"),
            lfield(2, b"p"),
            lfield(3, &vfield(1, 1)),
            lfield(4, b"h"),
        ])
    );
    assert_eq!(
        AuthUserChangePasswordRequest {
            name: "u".into(),
            password: "p".into(),
            hashed_password: "h".into(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"u"), lfield(2, b"p"), lfield(3, b"h")])
    );
    assert_eq!(
        AuthUserGrantRoleRequest {
            user: "u".into(),
            role: "r".into(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"u"), lfield(2, b"r")])
    );
    assert_eq!(
        AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"u"), lfield(2, b"r")])
    );
    assert_eq!(
        AuthRoleGetRequest { role: "r".into() }.encode_to_vec(),
        lfield(1, b"r")
    );
    assert_eq!(
        AuthRoleDeleteRequest { role: "r".into() }.encode_to_vec(),
        lfield(1, b"r")
    );
    assert_eq!(
        AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(authpb::Permission::default()),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"r"), lfield(2, &[])])
    );
    assert_eq!(
        AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"r"), lfield(2, b"a"), lfield(3, b"b")])
    );
    assert_eq!(
        AuthStatusResponse {
            header: None,
            enabled: true,
            auth_revision: 3,
        }
        .encode_to_vec(),
        cat(&[vfield(2, 1), vfield(3, 3)])
    );
    assert_eq!(
        AuthRoleGetResponse {
            header: None,
            perm: vec![authpb::Permission::default()],
        }
        .encode_to_vec(),
        lfield(2, &[])
    );
    assert_eq!(
        AuthUserGetResponse {
            header: None,
            roles: vec!["r".into()],
        }
        .encode_to_vec(),
        lfield(2, b"r")
    );
    assert_eq!(
        AuthUserListResponse {
            header: None,
            users: vec!["u".into()],
        }
        .encode_to_vec(),
        lfield(2, b"u")
    );
    assert_eq!(
        AuthRoleListResponse {
            header: None,
            roles: vec!["r".into()],
        }
        .encode_to_vec(),
        lfield(2, b"r")
    );
}

// ---------------------------------------------------------------------------
// Lock and Election
// ---------------------------------------------------------------------------

#[test]
fn lock_and_election_fields() {
    assert_eq!(
        v3lockpb::LockRequest {
            name: b"n".to_vec(),
            lease: 5,
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"n"), vfield(2, 5)])
    );
    assert_eq!(
        v3lockpb::LockResponse {
            header: Some(ResponseHeader::default()),
            key: b"k".to_vec(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, &[]), lfield(2, b"k")])
    );
    assert_eq!(
        v3lockpb::UnlockRequest { key: b"k".to_vec() }.encode_to_vec(),
        lfield(1, b"k")
    );

    use v3electionpb::*;
    let lk = LeaderKey {
        name: b"n".to_vec(),
        key: b"k".to_vec(),
        rev: 3,
        lease: 4,
    };
    let lkb = cat(&[lfield(1, b"n"), lfield(2, b"k"), vfield(3, 3), vfield(4, 4)]);
    assert_eq!(lk.encode_to_vec(), lkb);
    assert_eq!(
        CampaignRequest {
            name: b"n".to_vec(),
            lease: 2,
            value: b"v".to_vec(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, b"n"), vfield(2, 2), lfield(3, b"v")])
    );
    assert_eq!(
        CampaignResponse {
            header: Some(ResponseHeader::default()),
            leader: Some(lk.clone()),
        }
        .encode_to_vec(),
        cat(&[lfield(1, &[]), lfield(2, &lkb)])
    );
    assert_eq!(
        ProclaimRequest {
            leader: Some(lk.clone()),
            value: b"v".to_vec(),
        }
        .encode_to_vec(),
        cat(&[lfield(1, &lkb), lfield(2, b"v")])
    );
    assert_eq!(
        ResignRequest {
            leader: Some(lk.clone()),
        }
        .encode_to_vec(),
        lfield(1, &lkb)
    );
    assert_eq!(
        LeaderRequest {
            name: b"n".to_vec()
        }
        .encode_to_vec(),
        lfield(1, b"n")
    );
    assert_eq!(
        LeaderResponse {
            header: None,
            kv: Some(KeyValue::default()),
        }
        .encode_to_vec(),
        lfield(2, &[])
    );
}

// ---------------------------------------------------------------------------
// Services: names, rpcs, streaming shape (from the descriptor set)
// ---------------------------------------------------------------------------

#[test]
fn service_names() {
    use cairn_proto::etcdserverpb::{
        auth_server, cluster_server, kv_server, lease_server, maintenance_server, watch_server,
    };
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
    assert_eq!(v3lockpb::lock_server::SERVICE_NAME, "v3lockpb.Lock");
    assert_eq!(
        v3electionpb::election_server::SERVICE_NAME,
        "v3electionpb.Election"
    );
    assert_eq!(
        raft::v1::raft_peer_server::SERVICE_NAME,
        "cairn.raft.v1.RaftPeer"
    );

    // The full method names etcd clients call.
    let path = |svc: &str, rpc: &str| format!("/{svc}/{rpc}");
    assert_eq!(
        path(kv_server::SERVICE_NAME, "Range"),
        "/etcdserverpb.KV/Range"
    );
    assert_eq!(
        path(maintenance_server::SERVICE_NAME, "Snapshot"),
        "/etcdserverpb.Maintenance/Snapshot"
    );
    assert_eq!(
        path(v3lockpb::lock_server::SERVICE_NAME, "Lock"),
        "/v3lockpb.Lock/Lock"
    );
    assert_eq!(
        path(v3electionpb::election_server::SERVICE_NAME, "Campaign"),
        "/v3electionpb.Election/Campaign"
    );
}

/// (rpc, request type, response type, client streaming, server streaming)
type Rpc = (&'static str, &'static str, &'static str, bool, bool);

fn services() -> BTreeMap<String, Vec<Rpc>> {
    let fds = prost_types::FileDescriptorSet::decode(cairn_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = BTreeMap::new();
    for file in &fds.file {
        let package = file.package();
        for svc in &file.service {
            let rpcs = svc
                .method
                .iter()
                .map(|m| {
                    let leak =
                        |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
                    (
                        leak(m.name()),
                        leak(m.input_type()),
                        leak(m.output_type()),
                        m.client_streaming(),
                        m.server_streaming(),
                    )
                })
                .collect();
            out.insert(format!("{package}.{}", svc.name()), rpcs);
        }
    }
    out
}

#[test]
fn descriptor_set_files() {
    let fds = prost_types::FileDescriptorSet::decode(cairn_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut files: Vec<(&str, &str)> = fds.file.iter().map(|f| (f.name(), f.package())).collect();
    files.sort();
    assert_eq!(
        files,
        [
            ("cairn/raft/v1/raft.proto", "cairn.raft.v1"),
            ("cairn/v1/claims.proto", "cairn.v1"),
            ("cairn/v1/registry.proto", "cairn.v1"),
            ("etcd/api/authpb/auth.proto", "authpb"),
            ("etcd/api/etcdserverpb/rpc.proto", "etcdserverpb"),
            ("etcd/api/mvccpb/kv.proto", "mvccpb"),
            (
                "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
                "v3electionpb"
            ),
            (
                "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
                "v3lockpb"
            ),
        ]
    );
}

#[test]
fn etcd_services_and_rpcs() {
    let s = services();
    const P: &str = ".etcdserverpb.";
    let q = |t: &str| format!("{P}{t}");
    let check = |svc: &str, expected: &[(&str, &str, &str, bool, bool)]| {
        let got: Vec<(String, String, String, bool, bool)> = s[svc]
            .iter()
            .map(|r| (r.0.into(), r.1.into(), r.2.into(), r.3, r.4))
            .collect();
        let want: Vec<(String, String, String, bool, bool)> = expected
            .iter()
            .map(|r| {
                let ty = |t: &str| {
                    if t.starts_with('.') {
                        t.to_owned()
                    } else {
                        q(t)
                    }
                };
                (r.0.into(), ty(r.1), ty(r.2), r.3, r.4)
            })
            .collect();
        assert_eq!(got, want, "service {svc}");
    };

    check(
        "etcdserverpb.KV",
        &[
            ("Range", "RangeRequest", "RangeResponse", false, false),
            ("Put", "PutRequest", "PutResponse", false, false),
            (
                "DeleteRange",
                "DeleteRangeRequest",
                "DeleteRangeResponse",
                false,
                false,
            ),
            ("Txn", "TxnRequest", "TxnResponse", false, false),
            (
                "Compact",
                "CompactionRequest",
                "CompactionResponse",
                false,
                false,
            ),
        ],
    );
    check(
        "etcdserverpb.Watch",
        &[("Watch", "WatchRequest", "WatchResponse", true, true)],
    );
    check(
        "etcdserverpb.Lease",
        &[
            (
                "LeaseGrant",
                "LeaseGrantRequest",
                "LeaseGrantResponse",
                false,
                false,
            ),
            (
                "LeaseRevoke",
                "LeaseRevokeRequest",
                "LeaseRevokeResponse",
                false,
                false,
            ),
            (
                "LeaseKeepAlive",
                "LeaseKeepAliveRequest",
                "LeaseKeepAliveResponse",
                true,
                true,
            ),
            (
                "LeaseTimeToLive",
                "LeaseTimeToLiveRequest",
                "LeaseTimeToLiveResponse",
                false,
                false,
            ),
            (
                "LeaseLeases",
                "LeaseLeasesRequest",
                "LeaseLeasesResponse",
                false,
                false,
            ),
        ],
    );
    check(
        "etcdserverpb.Cluster",
        &[
            (
                "MemberAdd",
                "MemberAddRequest",
                "MemberAddResponse",
                false,
                false,
            ),
            (
                "MemberRemove",
                "MemberRemoveRequest",
                "MemberRemoveResponse",
                false,
                false,
            ),
            (
                "MemberUpdate",
                "MemberUpdateRequest",
                "MemberUpdateResponse",
                false,
                false,
            ),
            (
                "MemberList",
                "MemberListRequest",
                "MemberListResponse",
                false,
                false,
            ),
            (
                "MemberPromote",
                "MemberPromoteRequest",
                "MemberPromoteResponse",
                false,
                false,
            ),
        ],
    );
    check(
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", "AlarmRequest", "AlarmResponse", false, false),
            ("Status", "StatusRequest", "StatusResponse", false, false),
            (
                "Defragment",
                "DefragmentRequest",
                "DefragmentResponse",
                false,
                false,
            ),
            ("Hash", "HashRequest", "HashResponse", false, false),
            ("HashKV", "HashKVRequest", "HashKVResponse", false, false),
            (
                "Snapshot",
                "SnapshotRequest",
                "SnapshotResponse",
                false,
                true,
            ),
            (
                "MoveLeader",
                "MoveLeaderRequest",
                "MoveLeaderResponse",
                false,
                false,
            ),
            (
                "Downgrade",
                "DowngradeRequest",
                "DowngradeResponse",
                false,
                false,
            ),
        ],
    );
    let auth: Vec<(String, String, String)> = [
        ("AuthEnable", "AuthEnable"),
        ("AuthDisable", "AuthDisable"),
        ("AuthStatus", "AuthStatus"),
        ("Authenticate", "Authenticate"),
        ("UserAdd", "AuthUserAdd"),
        ("UserGet", "AuthUserGet"),
        ("UserList", "AuthUserList"),
        ("UserDelete", "AuthUserDelete"),
        ("UserChangePassword", "AuthUserChangePassword"),
        ("UserGrantRole", "AuthUserGrantRole"),
        ("UserRevokeRole", "AuthUserRevokeRole"),
        ("RoleAdd", "AuthRoleAdd"),
        ("RoleGet", "AuthRoleGet"),
        ("RoleList", "AuthRoleList"),
        ("RoleDelete", "AuthRoleDelete"),
        ("RoleGrantPermission", "AuthRoleGrantPermission"),
        ("RoleRevokePermission", "AuthRoleRevokePermission"),
    ]
    .iter()
    .map(|(rpc, msg)| {
        (
            rpc.to_string(),
            q(&format!("{msg}Request")),
            q(&format!("{msg}Response")),
        )
    })
    .collect();
    let got: Vec<(String, String, String)> = s["etcdserverpb.Auth"]
        .iter()
        .map(|r| {
            assert!(!r.3 && !r.4, "{} must be unary", r.0);
            (r.0.into(), r.1.into(), r.2.into())
        })
        .collect();
    assert_eq!(got, auth);

    check(
        "v3lockpb.Lock",
        &[
            (
                "Lock",
                ".v3lockpb.LockRequest",
                ".v3lockpb.LockResponse",
                false,
                false,
            ),
            (
                "Unlock",
                ".v3lockpb.UnlockRequest",
                ".v3lockpb.UnlockResponse",
                false,
                false,
            ),
        ],
    );
    let e = |t: &str| -> &'static str { Box::leak(format!(".v3electionpb.{t}").into_boxed_str()) };
    check(
        "v3electionpb.Election",
        &[
            (
                "Campaign",
                e("CampaignRequest"),
                e("CampaignResponse"),
                false,
                false,
            ),
            (
                "Proclaim",
                e("ProclaimRequest"),
                e("ProclaimResponse"),
                false,
                false,
            ),
            (
                "Leader",
                e("LeaderRequest"),
                e("LeaderResponse"),
                false,
                false,
            ),
            (
                "Observe",
                e("LeaderRequest"),
                e("LeaderResponse"),
                false,
                true,
            ),
            (
                "Resign",
                e("ResignRequest"),
                e("ResignResponse"),
                false,
                false,
            ),
        ],
    );
    assert_eq!(
        s.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "cairn.raft.v1.RaftPeer",
            "cairn.v1.Claims",
            "cairn.v1.Election",
            "cairn.v1.Lock",
            "cairn.v1.Registry",
            "cairn.v1.Session",
            "etcdserverpb.Auth",
            "etcdserverpb.Cluster",
            "etcdserverpb.KV",
            "etcdserverpb.Lease",
            "etcdserverpb.Maintenance",
            "etcdserverpb.Watch",
            "v3electionpb.Election",
            "v3lockpb.Lock",
        ]
    );
}

// ---------------------------------------------------------------------------
// Generated clients and servers: the HTTP/2 paths they use
// ---------------------------------------------------------------------------

use tonic::codegen::http;
use tonic::{Request, Response, Status};

type Paths = Arc<Mutex<Vec<String>>>;

/// A transport that records each request path and passes it on to `inner`.
#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    paths: Paths,
}

impl<S> tonic::codegen::Service<http::Request<tonic::body::Body>> for Recorder<S>
where
    S: tonic::codegen::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.paths.lock().unwrap().push(req.uri().path().to_owned());
        self.inner.call(req)
    }
}

/// A transport that fails every call.
#[derive(Clone)]
struct Refuse;

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Refuse {
    type Response = http::Response<tonic::body::Body>;
    type Error = Status;
    type Future = std::future::Ready<Result<Self::Response, Status>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Err(Status::unavailable("refused")))
    }
}

fn refusing() -> (Recorder<Refuse>, Paths) {
    let paths = Paths::default();
    (
        Recorder {
            inner: Refuse,
            paths: paths.clone(),
        },
        paths,
    )
}

#[tokio::test]
async fn client_method_paths() {
    use etcdserverpb::{
        auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
        lease_client::LeaseClient, maintenance_client::MaintenanceClient,
        watch_client::WatchClient,
    };
    let (t, paths) = refusing();

    let mut kv = KvClient::new(t.clone());
    let _ = kv.range(RangeRequest::default()).await;
    let _ = kv.put(PutRequest::default()).await;
    let _ = kv.delete_range(DeleteRangeRequest::default()).await;
    let _ = kv.txn(TxnRequest::default()).await;
    let _ = kv.compact(CompactionRequest::default()).await;
    let _ = WatchClient::new(t.clone())
        .watch(tonic::codegen::tokio_stream::iter(
            Vec::<WatchRequest>::new(),
        ))
        .await;
    let mut lease = LeaseClient::new(t.clone());
    let _ = lease.lease_grant(LeaseGrantRequest::default()).await;
    let _ = lease
        .lease_keep_alive(tonic::codegen::tokio_stream::iter(Vec::<
            LeaseKeepAliveRequest,
        >::new()))
        .await;
    let _ = lease
        .lease_time_to_live(LeaseTimeToLiveRequest::default())
        .await;
    let _ = ClusterClient::new(t.clone())
        .member_list(MemberListRequest::default())
        .await;
    let mut m = MaintenanceClient::new(t.clone());
    let _ = m.status(StatusRequest::default()).await;
    let _ = m.snapshot(SnapshotRequest::default()).await;
    let _ = m.hash_kv(HashKvRequest::default()).await;
    let _ = m.move_leader(MoveLeaderRequest::default()).await;
    let _ = AuthClient::new(t.clone())
        .authenticate(etcdserverpb::AuthenticateRequest::default())
        .await;
    let mut lock = v3lockpb::lock_client::LockClient::new(t.clone());
    let _ = lock.lock(v3lockpb::LockRequest::default()).await;
    let _ = lock.unlock(v3lockpb::UnlockRequest::default()).await;
    let mut el = v3electionpb::election_client::ElectionClient::new(t.clone());
    let _ = el.campaign(v3electionpb::CampaignRequest::default()).await;
    let _ = el.observe(v3electionpb::LeaderRequest::default()).await;

    assert_eq!(
        *paths.lock().unwrap(),
        [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Put",
            "/etcdserverpb.KV/DeleteRange",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.KV/Compact",
            "/etcdserverpb.Watch/Watch",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.Lease/LeaseKeepAlive",
            "/etcdserverpb.Lease/LeaseTimeToLive",
            "/etcdserverpb.Cluster/MemberList",
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Maintenance/Snapshot",
            "/etcdserverpb.Maintenance/HashKV",
            "/etcdserverpb.Maintenance/MoveLeader",
            "/etcdserverpb.Auth/Authenticate",
            "/v3lockpb.Lock/Lock",
            "/v3lockpb.Lock/Unlock",
            "/v3electionpb.Election/Campaign",
            "/v3electionpb.Election/Observe",
        ]
    );
}

/// A KV service that answers Range by echoing parts of the request.
struct EchoKv;

#[tonic::async_trait]
impl etcdserverpb::kv_server::Kv for EchoKv {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(RangeResponse {
            header: Some(ResponseHeader {
                revision: r.revision,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key: r.key,
                value: r.range_end,
                ..Default::default()
            }],
            more: r.keys_only,
            count: r.limit,
        }))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(Status::unimplemented("put"))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<etcdserverpb::CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

/// A Lock service whose Lock returns a key derived from the name.
struct EchoLock;

#[tonic::async_trait]
impl v3lockpb::lock_server::Lock for EchoLock {
    async fn lock(
        &self,
        req: Request<v3lockpb::LockRequest>,
    ) -> Result<Response<v3lockpb::LockResponse>, Status> {
        let mut key = req.into_inner().name;
        key.extend_from_slice(b"/lease");
        Ok(Response::new(v3lockpb::LockResponse { header: None, key }))
    }
    async fn unlock(
        &self,
        _: Request<v3lockpb::UnlockRequest>,
    ) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        Err(Status::not_found("unlock"))
    }
}

#[tokio::test]
async fn generated_client_reaches_generated_server() {
    let paths = Paths::default();
    let server = Recorder {
        inner: etcdserverpb::kv_server::KvServer::new(EchoKv),
        paths: paths.clone(),
    };
    let mut kv = etcdserverpb::kv_client::KvClient::new(server);
    let resp = kv
        .range(RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 10,
            revision: 42,
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.header.unwrap().revision, 42);
    assert_eq!(resp.kvs[0].key, b"foo");
    assert_eq!(resp.kvs[0].value, b"fop");
    assert!(resp.more);
    assert_eq!(resp.count, 10);

    let err = kv.txn(TxnRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(err.message(), "txn");

    let lock_server = Recorder {
        inner: v3lockpb::lock_server::LockServer::new(EchoLock),
        paths: paths.clone(),
    };
    let mut lock = v3lockpb::lock_client::LockClient::new(lock_server);
    let key = lock
        .lock(v3lockpb::LockRequest {
            name: b"mutex".to_vec(),
            lease: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    assert_eq!(key, b"mutex/lease");
    let err = lock
        .unlock(v3lockpb::UnlockRequest { key })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    assert_eq!(
        *paths.lock().unwrap(),
        [
            "/etcdserverpb.KV/Range",
            "/etcdserverpb.KV/Txn",
            "/v3lockpb.Lock/Lock",
            "/v3lockpb.Lock/Unlock",
        ]
    );
}

#[tokio::test]
async fn server_rejects_unknown_method() {
    use tonic::codegen::Service as _;
    let mut server = etcdserverpb::kv_server::KvServer::new(EchoKv);
    let req = http::Request::builder()
        .method("POST")
        .uri("/etcdserverpb.KV/RangeStream")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .unwrap();
    let resp = server.call(req).await.unwrap();
    // grpc-status 12 = UNIMPLEMENTED.
    assert_eq!(resp.headers()["grpc-status"], "12");
}
