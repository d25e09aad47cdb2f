//! The etcd packages' proto3 JSON, as etcd's HTTP gateway reads and writes
//! it (the request and answer shapes of etcd's documented `curl` examples).

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;

#[test]
fn requests_read_base64_bytes_and_either_field_name() {
    let r: pb::RangeRequest =
        serde_json::from_str(r#"{"key": "Zm9v", "range_end": "Zm9w", "limit": "5"}"#).unwrap();
    assert_eq!(
        (r.key, r.range_end, r.limit),
        (b"foo".to_vec(), b"fop".to_vec(), 5)
    );
    // The JSON (camelCase) name and a bare number are accepted too.
    let r: pb::RangeRequest =
        serde_json::from_str(r#"{"key": "Zm9v", "rangeEnd": "AA==", "limit": 7}"#).unwrap();
    assert_eq!((r.range_end, r.limit), (vec![0], 7));
    // Lease messages use etcd's upper-case field names.
    let g: pb::LeaseGrantRequest = serde_json::from_str(r#"{"TTL": 30, "ID": "12"}"#).unwrap();
    assert_eq!((g.ttl, g.id), (30, 12));
}

#[test]
fn a_txn_reads_enum_names_and_oneof_cases() {
    let t: pb::TxnRequest = serde_json::from_str(
        r#"{"compare": [{"key": "Zm9v", "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
            "success": [{"request_put": {"key": "Zm9v", "value": "YmFy"}}],
            "failure": [{"request_range": {"key": "Zm9v"}}]}"#,
    )
    .unwrap();
    let c = &t.compare[0];
    assert_eq!(c.target, pb::compare::CompareTarget::Create as i32);
    assert_eq!(
        c.target_union,
        Some(pb::compare::TargetUnion::CreateRevision(0))
    );
    assert!(matches!(
        t.success[0].request,
        Some(pb::request_op::Request::RequestPut(ref p)) if p.value == b"bar"
    ));
}

#[test]
fn answers_use_proto_names_strings_for_64_bits_and_leave_defaults_out() {
    let resp = pb::RangeResponse {
        header: Some(pb::ResponseHeader {
            cluster_id: u64::MAX,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }),
        kvs: vec![mvccpb::KeyValue {
            key: b"foo".to_vec(),
            value: b"bar".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    let json: serde_json::Value = serde_json::to_value(&resp).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "header": {"cluster_id": "18446744073709551615", "member_id": "2", "revision": "3", "raft_term": "4"},
            "kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "3", "version": "1", "value": "YmFy"}],
            "count": "1"
        })
    );
    let event = mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        kv: None,
        prev_kv: None,
    };
    assert_eq!(
        serde_json::to_string(&event).unwrap(),
        r#"{"type":"DELETE"}"#
    );
}

#[test]
fn unknown_fields_and_bad_base64_are_refused() {
    let unknown = serde_json::from_str::<pb::RangeRequest>(r#"{"keys": "Zm9v"}"#).unwrap_err();
    assert!(unknown.to_string().contains("keys"), "{unknown}");
    assert!(serde_json::from_str::<pb::PutRequest>(r#"{"key": "not base64!"}"#).is_err());
}
