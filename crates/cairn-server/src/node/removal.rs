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
//!
//! A member that knows no membership at all (it started with an empty
//! data dir to join a cluster, and no leader has contacted it) asks the
//! peers of its `--initial-cluster` instead. One answer cannot decide
//! there, since such a member has no membership of its own to compare
//! with: a peer that has not received the entry adding it answers without
//! it. So the leader of the newest term among the answers must leave it
//! out of its log (a leader's log holds every committed entry, and an
//! entry missing from it can no longer commit), and so must a majority of
//! the newest membership the answers show ([`shows_never_joined`]). This
//! is etcd's refusal to start a member that was never added (or was
//! removed before it first joined).

use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};

use cairn_raft::types::RaftMetrics;

use super::forward::{ForwardRequest, ForwardResponse};
use super::{identity, Node};

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
    /// Its current term.
    pub term: u64,
    /// Whether it leads in that term.
    pub leader: bool,
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
    Some(not_a_member(me, applied))
}

/// The reason a member stops: `applied`, a committed membership, leaves
/// it out.
fn not_a_member(me: u64, applied: &AppliedMembership) -> String {
    format!(
        "member {me:x} is not in the cluster's membership at log index {} (members {}): it was removed, or never added",
        applied.index,
        applied
            .members
            .iter()
            .map(|id| format!("{id:x}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// For a member that knows no membership: whether `answers` (peer ID and
/// its view) show that the leader of the newest term among them, and a
/// majority of the newest membership among them, leave it out. Any answer
/// with this member in it, applied or on the way, decides nothing.
pub fn shows_never_joined(me: u64, answers: &[(u64, MembershipView)]) -> Option<String> {
    if answers.iter().any(|(_, v)| v.latest_members.contains(&me)) {
        return None;
    }
    let newest_term = answers.iter().map(|(_, v)| v.term).max()?;
    if !answers
        .iter()
        .any(|(_, v)| v.leader && v.term == newest_term)
    {
        return None;
    }
    let newest = answers
        .iter()
        .filter_map(|(_, v)| v.applied.as_ref())
        .max_by_key(|a| a.index)?;
    if newest.members.contains(&me) {
        return None;
    }
    let without_me = answers
        .iter()
        .filter(|(peer, v)| newest.members.contains(peer) && v.applied.is_some())
        .count();
    if without_me * 2 <= newest.members.len() {
        return None;
    }
    Some(not_a_member(me, newest))
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
            term: m.current_term,
            leader: m.current_leader == Some(m.id),
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
    let known: Vec<(u64, String)> = node
        .members()
        .into_iter()
        .filter(|m| m.id != me)
        .filter_map(|m| Some((m.id, m.peer_urls.into_iter().next()?)))
        .collect();
    let never_joined = known.is_empty() && own.index == 0;
    let peers = if never_joined {
        initial_peers(node)
    } else {
        known
    };
    let asks = peers.iter().map(|(id, url)| async move {
        let answer = node
            .router
            .ask_member(url, &ForwardRequest::Membership, timeout)
            .await;
        match answer {
            Ok(ForwardResponse::Membership(view)) => Some((*id, view)),
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
    let answers: Vec<(u64, MembershipView)> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if never_joined {
        return shows_never_joined(me, &answers);
    }
    answers
        .iter()
        .find_map(|(_, view)| shows_removed(own, me, view))
}

/// The other members of this member's `--initial-cluster`, by ID and peer
/// URL (none if it does not parse: start-up refuses such a config).
fn initial_peers(node: &Node) -> Vec<(u64, String)> {
    let me = node.member_id();
    let token = &node.config.initial_cluster_token;
    node.config
        .initial_members()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (identity::member_id(&m.peer_url, token), m.peer_url))
        .filter(|(id, _)| *id != me)
        .collect()
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
            term: 3,
            leader: false,
        }
    }

    fn leader_view(index: u64, members: &[u64], term: u64) -> MembershipView {
        MembershipView {
            term,
            leader: true,
            ..view(index, members)
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
            term: 3,
            leader: false,
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

    #[test]
    fn a_member_that_never_joined_needs_the_leader_and_a_majority_without_it() {
        let members = [1, 2, 3];
        // The leader alone, one of three: the others may hold our add.
        assert_eq!(
            shows_never_joined(ME, &[(1, leader_view(40, &members, 3))]),
            None
        );
        let why = shows_never_joined(
            ME,
            &[(1, leader_view(40, &members, 3)), (2, view(38, &[1, 2]))],
        )
        .expect("the leader and two of three without us");
        assert!(why.contains("log index 40"), "{why}");
        // A majority without the leader's word: its log may hold our add.
        assert_eq!(
            shows_never_joined(ME, &[(1, view(40, &members)), (2, view(40, &members))]),
            None
        );
        // A deposed leader (term 3) answers, and a member of term 4 knows
        // the newer leader, which did not answer.
        let newer = MembershipView {
            term: 4,
            ..view(40, &members)
        };
        assert_eq!(
            shows_never_joined(ME, &[(1, leader_view(40, &members, 3)), (2, newer)]),
            None
        );
        // Any answer with us in it, applied or on the way, decides nothing.
        let mut adding = view(40, &members);
        adding.latest_members.push(ME);
        let answers = [
            (1, leader_view(40, &members, 3)),
            (2, view(40, &members)),
            (3, adding),
        ];
        assert_eq!(shows_never_joined(ME, &answers), None);
        // Answers from outside the newest membership do not count.
        assert_eq!(
            shows_never_joined(
                ME,
                &[(1, leader_view(40, &members, 3)), (9, view(40, &members))]
            ),
            None
        );
        // Peers that applied no membership decide nothing.
        let unapplied = MembershipView {
            applied: None,
            latest_members: vec![1, 2, 3],
            term: 3,
            leader: true,
        };
        assert_eq!(
            shows_never_joined(ME, &[(1, unapplied.clone()), (2, unapplied)]),
            None
        );
    }
}
