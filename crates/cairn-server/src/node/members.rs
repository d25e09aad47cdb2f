//! Membership: list, add, remove, promote, update; each change runs on the
//! leader (forwarded if need be) as an openraft membership change.

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_raft::types::CairnNode;
use cairn_raft::types::{ChangeMembershipError, ClientWriteError};
use openraft::ChangeMembers;

use super::forward::{ForwardRequest, ForwardResponse};
use super::pending_voters::PendingVoters;
use super::{identity, Node};
use crate::error::ServerError;

/// Entries a learner may trail the leader by and still be promoted.
const PROMOTE_MAX_LAG_ENTRIES: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Node {
    /// Members as this node's applied membership has them.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                name: node.name.clone(),
                peer_urls: vec![node.peer_url.clone()],
                client_urls: node.client_urls.clone(),
                is_learner: !voters.contains(id),
            })
            .collect()
    }

    pub fn is_learner(&self) -> bool {
        self.members()
            .iter()
            .any(|m| m.id == self.member_id() && m.is_learner)
    }

    /// Run a membership request here if leader, else on the leader.
    pub async fn membership_request(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ServerError> {
        if self.raft.is_leader() {
            return self.membership_as_leader(req).await;
        }
        match self.router.forward(&req).await {
            // Leadership moved to us while we asked.
            Err(ServerError::NotLeader { .. }) => self.membership_as_leader(req).await,
            other => other,
        }
    }

    pub async fn membership_as_leader(
        &self,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ServerError> {
        if !self.raft.is_leader() {
            return Err(ServerError::NoLeader);
        }
        let members = self.members();
        let find = |id: u64| {
            members
                .iter()
                .find(|m| m.id == id)
                .cloned()
                .ok_or(ServerError::MemberNotFound)
        };
        let change = |c: ChangeMembers<u64, CairnNode>| self.change_membership(c);
        match req {
            ForwardRequest::AddMember {
                peer_url,
                is_learner,
            } => {
                if members.iter().any(|m| m.peer_urls.contains(&peer_url)) {
                    return Err(ServerError::PeerUrlExists);
                }
                let joins = if is_learner {
                    VoterJoins::No
                } else {
                    self.when_a_voter_can_join(&members)?
                };
                let id = identity::member_id(&peer_url, &self.config.initial_cluster_token);
                let node = CairnNode {
                    name: String::new(),
                    peer_url,
                    client_urls: Vec::new(),
                };
                change(ChangeMembers::AddNodes(BTreeMap::from([(id, node)]))).await?;
                match joins {
                    VoterJoins::No => {}
                    VoterJoins::Now => {
                        change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?
                    }
                    VoterJoins::OnceCaughtUp => {
                        // Kept on disk before the answer: a restart of this
                        // member must not forget it (pending_voters.rs). The
                        // metrics may show the committed change a moment
                        // later; the promoting task takes a listed member
                        // missing from them as removed.
                        self.raft
                            .wait(Some(self.router.request_timeout))
                            .metrics(
                                |m| m.membership_config.membership().get_node(&id).is_some(),
                                "the added member is in the membership",
                            )
                            .await
                            .map_err(|_| ServerError::Timeout)?;
                        let pending = self.pending_voters.clone();
                        tokio::task::spawn_blocking(move || pending.add(id))
                            .await
                            .map_err(|e| ServerError::Internal(e.to_string()))?
                            .map_err(|e| {
                                ServerError::Internal(format!(
                                    "member {id:x} was added as a learner, but recording \
                                     that it is to vote failed ({e}); `member promote` it \
                                     once it runs"
                                ))
                            })?;
                    }
                }
                Ok(ForwardResponse::Member(id))
            }
            ForwardRequest::RemoveMember { id } => {
                let m = find(id)?;
                let voters = members.iter().filter(|m| !m.is_learner).count();
                if id == self.member_id() && voters > 1 {
                    // openraft's leader does not remove itself cleanly (its
                    // core asserts on the second step): hand over first, and
                    // let the next leader remove this member.
                    self.hand_over_leadership(&members).await?;
                    return self
                        .router
                        .forward(&ForwardRequest::RemoveMember { id })
                        .await;
                }
                if m.is_learner {
                    change(ChangeMembers::RemoveNodes(BTreeSet::from([id]))).await?;
                } else {
                    if members.iter().filter(|m| !m.is_learner).count() == 1 {
                        return Err(ServerError::NotEnoughStartedMembers);
                    }
                    change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
                }
                Ok(ForwardResponse::Member(id))
            }
            ForwardRequest::PromoteMember { id } => {
                if !find(id)?.is_learner {
                    return Err(ServerError::MemberNotLearner);
                }
                if !ready_to_vote(&self.raft.metrics().borrow_watched(), id) {
                    return Err(ServerError::LearnerNotReady);
                }
                change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                Ok(ForwardResponse::Member(id))
            }
            ForwardRequest::UpdatePeerUrl { id, peer_url } => {
                let m = find(id)?;
                if members
                    .iter()
                    .any(|o| o.id != id && o.peer_urls.contains(&peer_url))
                {
                    return Err(ServerError::PeerUrlExists);
                }
                let node = CairnNode {
                    name: m.name,
                    peer_url,
                    client_urls: m.client_urls,
                };
                change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)]))).await?;
                Ok(ForwardResponse::Member(id))
            }
            ForwardRequest::PublishAttributes {
                id,
                name,
                client_urls,
            } => {
                let m = find(id)?;
                if m.name != name || m.client_urls != client_urls {
                    let peer_url = m.peer_urls.first().cloned().unwrap_or_default();
                    let node = CairnNode {
                        name,
                        peer_url,
                        client_urls,
                    };
                    change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)]))).await?;
                }
                Ok(ForwardResponse::Done)
            }
            ForwardRequest::TransferLeader { to } => {
                let m = find(to)?;
                if m.is_learner {
                    return Err(ServerError::InvalidArgument(
                        "cannot transfer leadership to a learner".into(),
                    ));
                }
                self.raft
                    .trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|e| ServerError::Internal(e.to_string()))?;
                Ok(ForwardResponse::Done)
            }
            other => Err(ServerError::InvalidArgument(format!(
                "not a membership request: {other:?}"
            ))),
        }
    }
}

impl Node {
    /// Transfers leadership to the voter that has the most of the log and
    /// waits until another member leads (at most a request timeout).
    async fn hand_over_leadership(&self, members: &[Member]) -> Result<(), ServerError> {
        let me = self.member_id();
        let metrics = self.raft.metrics().borrow_watched().clone();
        let to = members
            .iter()
            .filter(|m| !m.is_learner && m.id != me)
            .max_by_key(|m| matched_index(&metrics, m.id))
            .map(|m| m.id)
            .ok_or(ServerError::NotEnoughStartedMembers)?;
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?;
        self.raft
            .wait(Some(self.router.request_timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another member leads",
            )
            .await
            .map_err(|_| ServerError::Timeout)?;
        Ok(())
    }

    /// etcd's strict reconfiguration check: a new voter that has not started
    /// yet must not leave the cluster without a quorum of started voters.
    /// A voter counts as started when it answered the leader within two
    /// election timeouts (etcd: connected within its health interval); the
    /// leader's replication metrics keep a stopped member's last match.
    ///
    /// The exception is etcd's too: a second voter for a cluster of one
    /// (growing a cluster again after `--force-new-cluster` or a restore).
    /// etcd commits that change under the old configuration and waits for
    /// the new member's vote only afterwards; openraft's joint consensus
    /// needs the new member's vote to commit the change itself, and the
    /// member starts only after `member add` answers. So it joins as a
    /// learner and is promoted once it has caught up.
    fn when_a_voter_can_join(&self, members: &[Member]) -> Result<VoterJoins, ServerError> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let answered = metrics.heartbeat.unwrap_or_default();
        let within = Duration::from_millis(self.config.election_timeout_ms * 2);
        let voters: Vec<u64> = members
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect();
        if voters == [self.member_id()] {
            return Ok(VoterJoins::OnceCaughtUp);
        }
        let started = voters
            .iter()
            .filter(|id| {
                **id == self.member_id()
                    || answered.get(*id).is_some_and(|at| {
                        at.as_ref()
                            .is_some_and(|t| openraft::Instant::elapsed(&**t) < within)
                    })
            })
            .count();
        let voters_after = voters.len() + 1;
        let quorum_after = voters_after / 2 + 1;
        if started < quorum_after {
            return Err(ServerError::NotEnoughStartedMembers);
        }
        Ok(VoterJoins::Now)
    }

    /// Apply one membership change on the leader, waiting (bounded) while
    /// another change is still in progress (members publishing their
    /// attributes at start-up race with `member add`) or while a new
    /// leader's core does not lead yet.
    async fn change_membership(
        &self,
        change: ChangeMembers<u64, CairnNode>,
    ) -> Result<(), ServerError> {
        let deadline = tokio::time::Instant::now() + self.router.request_timeout;
        loop {
            // openraft's `SetNodes` adds a node it does not know. A member
            // publishing its attributes must not come back that way after
            // it was removed while its request waited here (it re-added a
            // member removed while down, as a learner).
            if let ChangeMembers::SetNodes(nodes) = &change {
                let members = self.members();
                if !nodes.keys().all(|id| members.iter().any(|m| m.id == *id)) {
                    return Err(ServerError::MemberNotFound);
                }
            }
            // openraft waits for the change to commit, which a change
            // that needs a member that is down never does: give up at the
            // request timeout, as etcd does (the outcome is then unknown).
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let changed =
                tokio::time::timeout(left, self.raft.change_membership(change.clone(), false))
                    .await
                    .map_err(|_| ServerError::Timeout)?;
            match changed {
                Ok(_) => return Ok(()),
                Err(e) => {
                    // A leader that was just elected (a hand-over) may not
                    // take the change yet: its core still says "forward".
                    // openraft makes a change in two steps, and another
                    // change between them (a member publishing its
                    // attributes) fails the second one's precondition:
                    // the change is made again from where it stopped.
                    let retry = matches!(
                        e.api_error(),
                        Some(ClientWriteError::ChangeMembershipError(
                            ChangeMembershipError::InProgress(_)
                        )) | Some(ClientWriteError::ForwardToLeader(_))
                            | Some(ClientWriteError::PreconditionFailed(_))
                    );
                    if !retry || tokio::time::Instant::now() >= deadline {
                        return Err(ServerError::Internal(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// How a member being added becomes a voter.
enum VoterJoins {
    /// It is added as a learner.
    No,
    /// In the same request.
    Now,
    /// Later, by [`promote_pending_voters`].
    OnceCaughtUp,
}

/// How often the promoting task looks while a promotion is pending.
const PROMOTE_POLL: Duration = Duration::from_millis(100);

/// How long one promotion may wait for its change to commit: a learner
/// that stops answering after catching up leaves the change waiting for
/// its vote. The next attempt follows.
const PROMOTE_ATTEMPT: Duration = Duration::from_secs(30);

/// Runs for the member's lifetime: while it leads, promotes each pending
/// voter ([`super::pending_voters`]) once the leader's log is known to be
/// on it (within [`PROMOTE_MAX_LAG_ENTRIES`]), and forgets one that votes
/// or is no longer a member. There is no deadline: `member add` was asked
/// for a voter, and a member that starts late still becomes one.
pub(super) async fn promote_pending_voters(node: Weak<Node>) {
    let Some(n) = node.upgrade() else { return };
    let pending = n.pending_voters.clone();
    drop(n);
    loop {
        if pending.ids().is_empty() {
            // `notify_one` keeps a permit when nobody waits: an addition
            // between the check and here is not missed. The timeout lets
            // the task see that its node is gone.
            tokio::select! {
                _ = pending.added.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            tokio::time::sleep(PROMOTE_POLL).await;
        }
        let Some(n) = node.upgrade() else { return };
        let raft = n.raft.clone();
        drop(n);
        // Listed only once the leader's metrics showed it a member: read
        // before the metrics, an ID is in them unless it was removed since.
        let ids = pending.ids();
        let metrics = raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(metrics.id) {
            continue;
        }
        let membership = metrics.membership_config.membership();
        for id in ids {
            let known = membership.get_node(&id).is_some();
            let votes = membership.voter_ids().any(|v| v == id);
            if votes || !known {
                forget(&pending, id, votes).await;
                continue;
            }
            // Heard from at all, not only within the lag of a short log.
            if matched_index(&metrics, id) == 0 || !ready_to_vote(&metrics, id) {
                continue;
            }
            let promote =
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false);
            match tokio::time::timeout(PROMOTE_ATTEMPT, promote).await {
                Ok(Ok(_)) => {
                    tracing::info!("member {id:x} caught up and is a voter now");
                    forget(&pending, id, true).await;
                }
                Ok(Err(e)) => tracing::debug!("promoting member {id:x}: {e}; trying again"),
                Err(_) => tracing::warn!(
                    "promoting member {id:x} did not commit within {PROMOTE_ATTEMPT:?}; \
                     trying again"
                ),
            }
        }
    }
}

/// Drops `id` from the pending voters; a failed write is logged and
/// retried at the next look (the ID is still listed then).
async fn forget(pending: &Arc<PendingVoters>, id: u64, votes: bool) {
    let p = pending.clone();
    match tokio::task::spawn_blocking(move || p.remove(id)).await {
        Ok(Ok(())) if !votes => {
            tracing::info!("member {id:x}, to be promoted, is no longer a member")
        }
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("forgetting pending voter {id:x}: {e}"),
        Err(e) => tracing::warn!("forgetting pending voter {id:x}: {e}"),
    }
}

/// Make sure the cluster knows this member's name and client URLs (a
/// member added by `member add` starts with neither). Retries until done.
pub(super) async fn publish_attributes(node: Weak<Node>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(n) = node.upgrade() else { return };
        let me = n.member_id();
        let want_urls = n.config.advertise_client_urls();
        let known = n.members().into_iter().find(|m| m.id == me);
        if let Some(m) = known {
            if m.name == n.identity.name && m.client_urls == want_urls {
                return;
            }
            let req = ForwardRequest::PublishAttributes {
                id: me,
                name: n.identity.name.clone(),
                client_urls: want_urls,
            };
            if n.membership_request(req).await.is_ok() {
                // Give our view of the membership a moment to catch up.
                pause = Duration::from_millis(100);
            }
        }
        drop(n);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether learner `id` trails the leader's log by at most
/// [`PROMOTE_MAX_LAG_ENTRIES`] (etcd's "learner not ready" otherwise).
fn ready_to_vote(metrics: &cairn_raft::types::RaftMetrics, id: u64) -> bool {
    let last = metrics.last_log_index.unwrap_or(0);
    last.saturating_sub(matched_index(metrics, id)) <= PROMOTE_MAX_LAG_ENTRIES
}

/// How far the leader's log is known to be on member `id` (0 if the
/// leader does not replicate to it, or this member does not lead).
fn matched_index(metrics: &cairn_raft::types::RaftMetrics, id: u64) -> u64 {
    metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map_or(0, |log_id| log_id.index())
}
