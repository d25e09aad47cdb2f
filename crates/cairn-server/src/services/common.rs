//! Pieces every service needs: the response header, request limits, and
//! the wire form of a key-value.

use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_proto::mvccpb;
use cairn_store::KeyValue;

use crate::node::Node;

/// A stream of client requests, as gRPC or the JSON gateway decoded them.
pub type RequestStream<T> = futures::stream::BoxStream<'static, Result<T, tonic::Status>>;

/// Request limits from the server config, checked at the edge before
/// anything is proposed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// etcd `--max-request-bytes`; also the gRPC decode limit (plus slack
    /// for framing).
    pub max_request_bytes: usize,
    /// etcd `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Most watchers on one watch stream, and on all of a member's.
    pub max_watchers_per_stream: usize,
    pub max_watchers: usize,
}

impl Limits {
    /// The gRPC decode limit: `max_request_bytes` and slack for framing,
    /// so a request just over the limit gets etcd's "request is too large"
    /// from the service rather than a transport error.
    pub fn decode_limit(&self) -> usize {
        const DECODE_SLACK_BYTES: usize = 64 * 1024;
        self.max_request_bytes.saturating_add(DECODE_SLACK_BYTES)
    }
}

/// A header at the node's current revision. `revision` overrides the
/// store's for responses that must report the revision they were served at.
pub fn header(node: &Node, revision: Option<i64>) -> ResponseHeader {
    ResponseHeader {
        cluster_id: node.cluster_id(),
        member_id: node.member_id(),
        revision: revision.unwrap_or_else(|| node.store().revision()),
        raft_term: node.raft_term(),
    }
}

pub fn kv_to_wire(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}
