//! etcd's Cluster service. Changes run on the leader (the node forwards
//! them); the answer lists the members as this node sees them once it has
//! caught up with the change, so `member add` prints a list that includes
//! the new member.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::error::ServerError;
use crate::node::forward::{ForwardRequest, ForwardResponse};
use crate::node::{Member, Node};
use crate::services::common::header;

pub struct ClusterService {
    node: Arc<Node>,
}

pub(super) fn member_to_wire(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// etcd's `ErrGRPCMemberBadURLs`.
fn bad_urls() -> ServerError {
    ServerError::InvalidArgument("given member URLs are invalid".into())
}

/// The one peer URL we keep per member: the first given, checked to be
/// `scheme://host:port`.
fn peer_url(urls: &[String]) -> Result<String, ServerError> {
    let url = urls.first().ok_or_else(bad_urls)?;
    for u in urls {
        let uri: http::Uri = u.parse().map_err(|_| bad_urls())?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
        if !scheme_ok || uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
            return Err(bad_urls());
        }
    }
    Ok(url.clone())
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService { node }
    }

    fn members_wire(&self) -> Vec<pb::Member> {
        self.node.members().iter().map(member_to_wire).collect()
    }

    /// Wait (bounded) until this node's view of the membership satisfies
    /// `done`; a change made on the leader reaches followers shortly after.
    /// Gives up quietly: the change itself has succeeded.
    async fn await_view(&self, done: impl Fn(&[Member]) -> bool + Send + Sync) {
        let node = &self.node;
        let timeout = Duration::from_millis(node.config.request_timeout_ms);
        let _ = node
            .raft
            .wait(Some(timeout))
            .metrics(
                |_| done(&node.members()),
                "membership change reaches this member",
            )
            .await;
    }

    async fn request(&self, req: ForwardRequest) -> Result<u64, Status> {
        match self.node.membership_request(req).await? {
            ForwardResponse::Member(id) => Ok(id),
            other => Err(ServerError::Internal(format!("unexpected answer {other:?}")).into()),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let req = request.into_inner();
        let peer_url = peer_url(&req.peer_ur_ls)?;
        let id = self
            .request(ForwardRequest::AddMember {
                peer_url: peer_url.clone(),
                is_learner: req.is_learner,
            })
            .await?;
        self.await_view(|ms| ms.iter().any(|m| m.id == id)).await;
        let members = self.node.members();
        let member = members
            .iter()
            .find(|m| m.id == id)
            .map(member_to_wire)
            .unwrap_or(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: vec![peer_url],
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            });
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(header(&self.node, None)),
            member: Some(member),
            members: members.iter().map(member_to_wire).collect(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let id = request.into_inner().id;
        self.request(ForwardRequest::RemoveMember { id }).await?;
        // A member that removed itself stops hearing about changes.
        if id != self.node.member_id() {
            self.await_view(|ms| ms.iter().all(|m| m.id != id)).await;
        }
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header(&self.node, None)),
            members: self.members_wire(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let req = request.into_inner();
        let peer_url = peer_url(&req.peer_ur_ls)?;
        let id = req.id;
        self.request(ForwardRequest::UpdatePeerUrl {
            id,
            peer_url: peer_url.clone(),
        })
        .await?;
        self.await_view(|ms| {
            ms.iter()
                .any(|m| m.id == id && m.peer_urls.first() == Some(&peer_url))
        })
        .await;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(header(&self.node, None)),
            members: self.members_wire(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.node.read_barrier().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(header(&self.node, None)),
            members: self.members_wire(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Caller::of(&self.node, &request)
            .await?
            .require_admin(&self.node)
            .await?;
        let id = request.into_inner().id;
        self.request(ForwardRequest::PromoteMember { id }).await?;
        self.await_view(|ms| ms.iter().any(|m| m.id == id && !m.is_learner))
            .await;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header(&self.node, None)),
            members: self.members_wire(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_and_the_first_is_kept() {
        let urls = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            peer_url(&urls(&["http://10.0.0.1:2380", "http://h:1"])).unwrap(),
            "http://10.0.0.1:2380"
        );
        for bad in [&[][..], &["10.0.0.1:2380"], &["http://h"], &["ftp://h:1"]] {
            assert_eq!(peer_url(&urls(bad)), Err(bad_urls()), "{bad:?}");
        }
    }
}
