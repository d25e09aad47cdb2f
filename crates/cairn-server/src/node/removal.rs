//! A member removed from the cluster stops, as etcd's does.
//!
//! Why it must find out itself: the leader stops replicating to a member
//! as soon as it appends the entry that removes it, so the member may
//! never receive that entry. Left running, it kept answering `/health`
//! 200 and serving serializable reads of a state that no longer moved,
//! and a removed voter campaigned for good.
//!
//! How: every election timeout while it has reason to doubt (its own
//! membership leaves it out, it sees no leader, or its log has not grown
//! for two tick intervals: the leader appends a tick every interval), and
//! otherwise every [`QUIET_PROBE_TIMEOUTS`] election timeouts, a member
//! asks every member of its membership for that peer's applied membership
//! ([`MembershipView`]). It is removed when an answer leaves it out and is
//! at least as new as the newest membership it knows itself, applied or
//! not. The comparison fails safe: a peer that lags (it has
//! not applied the entry that added this member) answers an older
//! membership and decides nothing, and a member that was just added knows
//! the entry that added it.

use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use cairn_raft::types::RaftMetrics;

use super::forward::{ForwardRequest, ForwardResponse};
use super::Node;

/// Without a reason to doubt, a member still asks this often (in election
/// timeouts): a removed learner sees its leader as before.
const QUIET_PROBE_TIMEOUTS: u32 = 10;

/// A peer's answer about its memberships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipView {
    /// Its newest membership that it has applied (so committed); `None`
    /// if it has applied none yet.
    pub applied: Option<AppliedMembership>,
    /// Every member of its newest membership, applied or not: a change
    /// that is being committed (a member being added) counts.
    pub latest_members: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMembership {
    /// Log index of the membership entry.
    pub index: u64,
    /// Every member in it, voters and learners.
    pub members: Vec<u64>,
}

/// What a member knows of its own membership, for the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnMembership {
    /// Log index of its newest membership entry, applied or not (0: none).
    pub index: u64,
    /// Whether that membership has this member in it.
    pub includes_me: bool,
}

impl OwnMembership {
    fn of(m: &RaftMetrics, me: u64) -> Self {
        let stored = &m.membership_config;
        OwnMembership {
            index: stored.log_id().as_ref().map_or(0, |l| l.index),
            includes_me: stored.membership().nodes().any(|(id, _)| *id == me),
        }
    }
}

/// Whether `answer` shows this member removed: a committed membership at
/// least as new as its own that leaves it out, and no newer one on the
/// way that has it.
pub fn shows_removed(own: OwnMembership, me: u64, answer: &MembershipView) -> Option<String> {
    let applied = answer.applied.as_ref()?;
    if applied.index < own.index
        || applied.members.contains(&me)
        || answer.latest_members.contains(&me)
    {
        return None;
    }
    Some(format!(
        "member {me:x} is not in the cluster's membership at log index {} (members {}): it was removed, or never added",
        applied.index,
        applied
            .members
            .iter()
            .map(|id| format!("{id:x}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

impl Node {
    /// This member's answer to a peer's [`ForwardRequest::Membership`].
    pub(super) fn membership_view(&self) -> MembershipView {
        let m = self.raft.metrics().borrow_watched().clone();
        let stored = &m.membership_config;
        // openraft's effective membership is the newest in the log; it
        // is applied once the state machine has reached its entry.
        let members: Vec<u64> = stored.membership().nodes().map(|(id, _)| *id).collect();
        let applied = stored.log_id().as_ref().and_then(|log_id| {
            let is_applied = m
                .last_applied
                .as_ref()
                .is_some_and(|a| a.index >= log_id.index);
            is_applied.then(|| AppliedMembership {
                index: log_id.index,
                members: members.clone(),
            })
        });
        MembershipView {
            applied,
            latest_members: members,
        }
    }

    /// Why this member found itself removed, if it did.
    pub fn removal(&self) -> Option<String> {
        self.removed.borrow().clone()
    }

    /// Waits until this member finds itself removed, and says why.
    pub async fn removed(&self) -> String {
        let mut rx = self.removed.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            // The sender lives in this node: it is not dropped while we wait.
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// Asks peers, as the module docs say, until this member is removed or
/// the node is dropped; then stops its Raft.
///
/// `silent_after`: a member whose log has not grown for this long doubts
/// too. The leader appends a tick every tick interval, so a member it
/// still replicates to sees its log grow; a removed one may still name
/// its old leader for seconds (openraft keeps it until it campaigns).
pub(super) async fn watch(node: Weak<Node>, election_timeout: Duration, silent_after: Duration) {
    let mut ticker = tokio::time::interval(election_timeout);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet_ticks = 0u32;
    let mut last_log = (None, Instant::now());
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else { return };
        if !node.raft_running() {
            // Shut down, or stopped on a storage error: nothing to serve.
            return;
        }
        let me = node.member_id();
        let m = node.raft.metrics().borrow_watched().clone();
        if m.current_leader == Some(me) {
            quiet_ticks = 0;
            continue;
        }
        let own = OwnMembership::of(&m, me);
        if m.last_log_index != last_log.0 {
            last_log = (m.last_log_index, Instant::now());
        }
        quiet_ticks += 1;
        let silent = last_log.1.elapsed() >= silent_after;
        let doubt = !own.includes_me || m.current_leader.is_none() || silent;
        if !doubt && quiet_ticks < QUIET_PROBE_TIMEOUTS {
            continue;
        }
        quiet_ticks = 0;
        if let Some(why) = ask_peers(&node, own, election_timeout).await {
            stop_removed(&node, why).await;
            return;
        }
    }
}

/// Asks every member of this member's membership at once (3–7 of them):
/// after a membership change some have applied it and some not yet, and
/// asking one at a time took up to 4 s in cairn-chaos. The reason, if an
/// answer shows this member removed.
async fn ask_peers(node: &Node, own: OwnMembership, timeout: Duration) -> Option<String> {
    let me = node.member_id();
    let peers: Vec<(u64, String)> = node
        .members()
        .into_iter()
        .filter(|m| m.id != me)
        .filter_map(|m| Some((m.id, m.peer_urls.into_iter().next()?)))
        .collect();
    let asks = peers.iter().map(|(id, url)| async move {
        let answer = node
            .router
            .ask_member(url, &ForwardRequest::Membership, timeout)
            .await;
        match answer {
            Ok(ForwardResponse::Membership(view)) => shows_removed(own, me, &view),
            Ok(other) => {
                tracing::debug!("membership probe of {id:x}: unexpected {other:?}");
                None
            }
            Err(e) => {
                tracing::debug!("membership probe of {id:x}: {e}");
                None
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .next()
}

async fn stop_removed(node: &Node, why: String) {
    tracing::error!("{why}; this member stops serving");
    node.removed.send_replace(Some(why));
    let _ = node.raft.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(index: u64, members: &[u64]) -> MembershipView {
        MembershipView {
            applied: Some(AppliedMembership {
                index,
                members: members.to_vec(),
            }),
            latest_members: members.to_vec(),
        }
    }

    const ME: u64 = 7;

    #[test]
    fn a_committed_membership_as_new_as_ours_without_us_removes_us() {
        // We applied our own removal (index 40), or never received it.
        for own_index in [40, 30] {
            let own = OwnMembership {
                index: own_index,
                includes_me: own_index == 30,
            };
            let why = shows_removed(own, ME, &view(40, &[1, 2])).expect("removed");
            assert!(why.contains("log index 40"), "{why}");
        }
    }

    #[test]
    fn an_older_or_unapplied_membership_or_one_with_us_decides_nothing() {
        // Just added at index 50 (not yet applied here or there): a peer
        // that has applied only 40 lags, it does not know us yet.
        let just_added = OwnMembership {
            index: 50,
            includes_me: true,
        };
        assert_eq!(shows_removed(just_added, ME, &view(40, &[1, 2])), None);
        assert_eq!(shows_removed(just_added, ME, &view(50, &[1, 2, ME])), None);
        let unapplied = MembershipView {
            applied: None,
            latest_members: vec![1, 2],
        };
        assert_eq!(shows_removed(just_added, ME, &unapplied), None);
        // The peer applied an older membership without us, and is
        // committing the one that adds us.
        let adding = OwnMembership {
            index: 0,
            includes_me: false,
        };
        let mut being_added = view(40, &[1, 2]);
        being_added.latest_members.push(ME);
        assert_eq!(shows_removed(adding, ME, &being_added), None);
        assert!(shows_removed(adding, ME, &view(40, &[1, 2])).is_some());
    }
}
