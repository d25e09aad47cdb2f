//! Peer calls name the cluster they belong to, and a member refuses calls
//! from another cluster, as etcd does (`X-Etcd-Cluster-ID`).
//!
//! Why: a member's ID is derived from its peer URL and the cluster token,
//! and Raft messages do not say whom they are for. A member of another
//! cluster that comes to listen on an address a cluster still lists (a
//! reused port, a host rebuilt for a new cluster) would otherwise take
//! that cluster's Raft messages as its own: another leader's log, at
//! indexes it has already committed. Seen between test clusters that
//! shared ports (TESTING.md, session 28).
//!
//! A call without the header is accepted: members older than it do not
//! send one.

use cairn_proto::raft::v1::raft_peer_client::RaftPeerClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The metadata key that carries the sender's cluster ID (hex).
pub const CLUSTER_ID_HEADER: &str = "cairn-cluster-id";

/// A peer client whose every call names this member's cluster.
pub type PeerGrpc = RaftPeerClient<InterceptedService<Channel, ClusterHeader>>;

/// A peer client on `channel` for a member of cluster `cluster_id`
/// (`None`: calls name no cluster), taking and sending messages of up to
/// `max_message_bytes`.
pub fn peer_grpc(channel: Channel, cluster_id: Option<u64>, max_message_bytes: usize) -> PeerGrpc {
    RaftPeerClient::with_interceptor(channel, ClusterHeader::new(cluster_id))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

/// Client side: adds the header, encoded once, to every call.
#[derive(Debug, Clone)]
pub struct ClusterHeader(Option<MetadataValue<Ascii>>);

impl ClusterHeader {
    pub fn new(cluster_id: Option<u64>) -> Self {
        ClusterHeader(cluster_id.map(|id| {
            MetadataValue::try_from(format!("{id:x}")).expect("hex digits are a valid header value")
        }))
    }
}

impl Interceptor for ClusterHeader {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(CLUSTER_ID_HEADER, value.clone());
        }
        Ok(request)
    }
}

/// Server side: refuses a call that names another cluster
/// (`FAILED_PRECONDITION`); `None` accepts every call.
#[derive(Debug, Clone, Copy)]
pub struct ClusterCheck(pub Option<u64>);

impl Interceptor for ClusterCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let (Some(ours), Some(value)) = (self.0, request.metadata().get(CLUSTER_ID_HEADER)) else {
            return Ok(request);
        };
        let theirs = value
            .to_str()
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| Status::invalid_argument("malformed cairn-cluster-id header"))?;
        if theirs != ours {
            return Err(Status::failed_precondition(format!(
                "a call from a member of cluster {theirs:x}; this member belongs to cluster {ours:x}"
            )));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: Option<u64>) -> Request<()> {
        ClusterHeader::new(id).call(Request::new(())).unwrap()
    }

    #[test]
    fn a_call_from_our_cluster_or_naming_none_passes() {
        assert!(ClusterCheck(Some(0xabc)).call(named(Some(0xabc))).is_ok());
        assert!(ClusterCheck(Some(0xabc)).call(named(None)).is_ok());
        assert!(ClusterCheck(None).call(named(Some(1))).is_ok());
    }

    #[test]
    fn a_call_from_another_cluster_is_refused() {
        let err = ClusterCheck(Some(0xabc))
            .call(named(Some(0xdef)))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.message().contains("cluster def"), "{err:?}");
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert(CLUSTER_ID_HEADER, MetadataValue::from_static("zz"));
        let err = ClusterCheck(Some(1)).call(bad).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
