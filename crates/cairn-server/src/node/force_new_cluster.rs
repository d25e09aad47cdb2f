//! `--force-new-cluster`: a member that outlived its cluster's quorum starts
//! as a cluster of one, on its own data.
//!
//! openraft has no call for this (a membership change needs a leader, and
//! a leader needs the quorum that is gone), so it is done to the log before
//! Raft starts: a membership entry naming this member alone is appended
//! after the last entry. openraft takes the last membership in the log as
//! the effective one at once, committed or not, so the member is then the
//! only voter: it elects itself, and its first entry as leader commits
//! everything in its log, the forced membership included.
//!
//! What this keeps and drops, compared with etcd's (which discards the
//! entries past its last known commit index and then commits a removal of
//! every other member): every entry this member holds is kept and
//! committed, so no write it acknowledged, or saw acknowledged, is lost;
//! entries that were never committed (their clients got a timeout, an
//! unknown outcome) are committed too, as a new leader's would be. The
//! member ID and cluster ID stay, as in etcd.
//!
//! The new entry takes the last entry's leader ID: openraft needs a log
//! whose leader IDs never decrease, and the vote this member already holds
//! is at least that term, so its election comes after it.

use std::collections::{BTreeMap, BTreeSet};

use cairn_raft::log_store::LogStore;
use cairn_raft::state_machine::StateMachineStore;
use cairn_raft::types::{CairnNode, Entry, LogId, Membership, NodeId, TypeConfig};
use openraft::entry::RaftEntry as _;
use openraft::storage::{IOFlushed, RaftLogStorage as _, StorageHelper};
use openraft::type_config::TypeConfigExt as _;

use super::StartError;

/// What [`force`] did, for the start's log line and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// The membership was `dropped` members more than this one; the entry at
    /// `index` now names this member alone.
    Alone { index: u64, dropped: Vec<NodeId> },
    /// This member was already the only one: nothing written.
    AlreadyAlone,
}

/// Append a membership of `me` alone to `log`, unless the effective
/// membership already is that. `me_node` describes this member as its
/// config does now (a survivor may have moved).
pub async fn force(
    log: &mut LogStore,
    sm: &mut StateMachineStore,
    me: NodeId,
    me_node: CairnNode,
) -> Result<Forced, StartError> {
    let storage =
        |e: &dyn std::fmt::Display| StartError::Storage(format!("force-new-cluster: {e}"));
    let state = StorageHelper::new(log, sm)
        .with_id(me)
        .get_membership()
        .await
        .map_err(|e| storage(&e))?;
    let effective = state.effective().membership();
    let others: Vec<NodeId> = effective
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != me)
        .collect();
    let voters: BTreeSet<NodeId> = effective.voter_ids().collect();
    if others.is_empty() && voters == BTreeSet::from([me]) {
        return Ok(Forced::AlreadyAlone);
    }
    let last = log
        .get_log_state()
        .await
        .map_err(|e| storage(&e))?
        .last_log_id
        .ok_or_else(|| {
            StartError::Storage(
                "force-new-cluster: this member's log is empty: it never joined a cluster, \
                 so there is nothing to keep (start it without the flag)"
                    .into(),
            )
        })?;
    // Keep what the cluster knew of this member (its client URLs until it
    // publishes them again), with its name and peer URL as configured now.
    let node = match effective.get_node(&me) {
        Some(known) => CairnNode {
            client_urls: if me_node.client_urls.is_empty() {
                known.client_urls.clone()
            } else {
                me_node.client_urls
            },
            ..me_node
        },
        None => me_node,
    };
    let alone = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]))
        .map_err(|e| storage(&e))?;
    let index = last.index() + 1;
    let entry = Entry::new_membership(LogId::new(*last.committed_leader_id(), index), alone);
    let (tx, rx) = TypeConfig::oneshot();
    log.append([entry], IOFlushed::signal(tx))
        .await
        .map_err(|e| storage(&e))?;
    rx.await
        .map_err(|_| storage(&"the log writer stopped before the entry was synced"))?
        .map_err(|e| storage(&e))?;
    Ok(Forced::Alone {
        index,
        dropped: others,
    })
}
