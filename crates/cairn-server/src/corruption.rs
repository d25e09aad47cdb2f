//! Online corruption check (etcd's `--experimental-corrupt-check-time`):
//! every interval the leader hashes its keyspace at its current revision
//! (`HashKV`), asks every other member for its hash at the same revision
//! over the peer port, and raises the replicated CORRUPT alarm on the
//! members whose hash the majority does not share. While the alarm is
//! raised the state machine refuses writes and the client port refuses
//! reads (etcd's "corrupt cluster"), so a diverged replica's state spreads
//! no further; `alarm disarm` lifts it once the operator has acted.
//!
//! A member hashes only what it has applied: asked for a revision it has
//! not reached yet, it waits a moment (followers trail the leader by
//! milliseconds), then gives up for this round. Hashes are compared only
//! between members that report the same compact revision: a compaction
//! applied between two hashes changes what is hashed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cairn_store::{AlarmAction, AlarmKind, Command};

use crate::error::ServerError;
use crate::kv_hash::hash_in_steps;
use crate::node::forward::{ForwardRequest, ForwardResponse};
use crate::node::Node;

/// Rounds that compared hashes, and rounds that found a member corrupt
/// (process-wide, for `/metrics`).
static CHECKS: AtomicU64 = AtomicU64::new(0);
static DETECTED: AtomicU64 = AtomicU64::new(0);

/// Rounds that compared hashes so far, in this process.
pub fn checks_run() -> u64 {
    CHECKS.load(Relaxed)
}

/// The counters in Prometheus text.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP cairn_corruption_checks_total Rounds of the corruption check this member ran as leader.\n\
         # TYPE cairn_corruption_checks_total counter\n\
         cairn_corruption_checks_total {}\n\
         # HELP cairn_corruption_detected_total Rounds that found a member's keyspace unlike the majority's.\n\
         # TYPE cairn_corruption_detected_total counter\n\
         cairn_corruption_detected_total {}",
        CHECKS.load(Relaxed),
        DETECTED.load(Relaxed)
    );
}

/// How long a member waits to reach the revision it is asked to hash.
pub const REACH_WAIT: Duration = Duration::from_secs(2);
/// How long the leader waits for each member's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// One member's hash of the keyspace at the checked revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHash {
    pub member_id: u64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// The members to raise the CORRUPT alarm for, given the leader's hash and
/// the others' (those that answered). Pure.
///
/// Members with another compact revision than the leader's are left out.
/// Of the rest (the leader included), the members outside the strict
/// majority that shares one hash are corrupt; without such a majority
/// (two members disagree, or three ways), every one that differs from the
/// leader is named, and the leader too: which side is wrong is not known.
pub fn corrupt_members(leader: MemberHash, others: &[MemberHash]) -> Vec<u64> {
    let compared = compared_with(leader, others);
    if compared.iter().all(|m| m.hash == leader.hash) {
        return Vec::new();
    }
    let mut corrupt: Vec<u64> = match majority_hash(&compared) {
        Some(h) => compared
            .iter()
            .filter(|m| m.hash != h)
            .map(|m| m.member_id)
            .collect(),
        None => compared
            .iter()
            .filter(|m| m.hash != leader.hash || m.member_id == leader.member_id)
            .map(|m| m.member_id)
            .collect(),
    };
    corrupt.sort_unstable();
    corrupt
}

/// The hash a strict majority of the members compared share when it is
/// not `own`'s: this member is then the odd one out. Compared are `own`
/// and those of `others` at its compact revision, as in
/// [`corrupt_members`]; without such a majority (two members that differ,
/// or no answer) nothing is known. Pure.
pub fn majority_unlike(own: MemberHash, others: &[MemberHash]) -> Option<u32> {
    majority_hash(&compared_with(own, others)).filter(|h| *h != own.hash)
}

/// `own` and those of `others` at its compact revision: hashes of other
/// compact revisions cover other records.
fn compared_with(own: MemberHash, others: &[MemberHash]) -> Vec<MemberHash> {
    std::iter::once(own)
        .chain(
            others
                .iter()
                .copied()
                .filter(|m| m.compact_revision == own.compact_revision),
        )
        .collect()
}

/// The hash more than half of `compared` share, if one is.
fn majority_hash(compared: &[MemberHash]) -> Option<u32> {
    compared
        .iter()
        .map(|m| m.hash)
        .find(|h| compared.iter().filter(|m| m.hash == *h).count() * 2 > compared.len())
}

/// Runs the check every `interval` while this member leads; ends when
/// the node is gone.
pub async fn run(node: Weak<Node>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: let the cluster settle first.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else { return };
        if !node.raft.is_leader() {
            continue;
        }
        match check(&node).await {
            Ok(corrupt) if corrupt.is_empty() => {}
            Ok(corrupt) => {
                DETECTED.fetch_add(1, Relaxed);
                for member_id in corrupt {
                    tracing::error!(
                        "corruption check: member {member_id:x} holds another keyspace than the majority; raising CORRUPT"
                    );
                    let alarm = Command::Alarm {
                        action: AlarmAction::Activate,
                        member_id,
                        alarm: AlarmKind::Corrupt,
                    };
                    if let Err(e) = node.write(alarm).await {
                        tracing::warn!("could not raise CORRUPT for {member_id:x}: {e}");
                    }
                }
            }
            Err(e) => tracing::debug!("corruption check skipped: {e}"),
        }
    }
}

/// One round: the members found corrupt (empty if all agree).
pub async fn check(node: &Arc<Node>) -> Result<Vec<u64>, ServerError> {
    // At the head: what every member has applied or soon will.
    let own = hash_in_steps(&node.store, 0).await?;
    let revision = own.revision;
    let leader = MemberHash {
        member_id: node.member_id(),
        hash: own.hash,
        compact_revision: own.compact_revision,
    };
    let others = peer_hashes(node, revision).await;
    CHECKS.fetch_add(1, Relaxed);
    Ok(corrupt_members(leader, &others))
}

/// The other members' hashes at `revision`, of those that answered within
/// [`ASK_TIMEOUT`] (one behind waits up to [`REACH_WAIT`] to reach it).
pub async fn peer_hashes(node: &Node, revision: i64) -> Vec<MemberHash> {
    let own_id = node.member_id();
    let peers: Vec<(u64, String)> = node
        .members()
        .into_iter()
        .filter(|m| m.id != own_id)
        .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.clone())))
        .collect();
    let asks = peers.iter().map(|(id, url)| async move {
        let answer = node
            .router
            .ask_member(url, &ForwardRequest::HashKv { revision }, ASK_TIMEOUT)
            .await;
        match answer {
            Ok(ForwardResponse::HashKv {
                hash,
                compact_revision,
            }) => Some(MemberHash {
                member_id: *id,
                hash,
                compact_revision,
            }),
            // Down, behind, or a version without the check: not this round.
            other => {
                tracing::debug!("corruption check: no hash from {id:x}: {other:?}");
                None
            }
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A member's answer to the leader's [`ForwardRequest::HashKv`]: its hash
/// at `revision` once it has applied that far. Bounded in time: it waits
/// at most [`REACH_WAIT`] to reach the revision, and hashes for at most
/// [`ASK_TIMEOUT`], after which the leader has stopped listening.
pub async fn hash_at(node: &Node, revision: i64) -> Result<ForwardResponse, ServerError> {
    let deadline = tokio::time::Instant::now() + REACH_WAIT;
    loop {
        let reached = node.store().revision() >= revision;
        if reached {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ServerError::Timeout);
        }
        // Bounded: at most REACH_WAIT of 10 ms naps, only while behind.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hashed = tokio::time::timeout(ASK_TIMEOUT, hash_in_steps(&node.store, revision))
        .await
        .map_err(|_| ServerError::Timeout)??;
    Ok(ForwardResponse::HashKv {
        hash: hashed.hash,
        compact_revision: hashed.compact_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(member_id: u64, hash: u32) -> MemberHash {
        MemberHash {
            member_id,
            hash,
            compact_revision: 5,
        }
    }

    #[test]
    fn the_odd_one_out_is_named() {
        // (leader, others, corrupt)
        let cases: Vec<(MemberHash, Vec<MemberHash>, Vec<u64>)> = vec![
            (m(1, 7), vec![m(2, 7), m(3, 7)], vec![]),
            (m(1, 7), vec![m(2, 7), m(3, 8)], vec![3]),
            // The leader is the odd one.
            (m(1, 9), vec![m(2, 7), m(3, 7)], vec![1]),
            (
                m(1, 7),
                vec![m(2, 7), m(3, 8), m(4, 7), m(5, 9)],
                vec![3, 5],
            ),
            // No majority: the leader and everyone unlike it.
            (m(1, 7), vec![m(2, 8)], vec![1, 2]),
            (m(1, 7), vec![m(2, 8), m(3, 9)], vec![1, 2, 3]),
            // Alone, or nobody answered: nothing to compare.
            (m(1, 7), vec![], vec![]),
        ];
        for (leader, others, want) in cases {
            assert_eq!(
                corrupt_members(leader, &others),
                want,
                "{leader:?} {others:?}"
            );
        }
    }

    #[test]
    fn a_member_learns_it_is_the_odd_one_out_only_from_a_majority() {
        // (own, others, the majority's hash if own is unlike it)
        let cases: Vec<(MemberHash, Vec<MemberHash>, Option<u32>)> = vec![
            (m(1, 7), vec![m(2, 7), m(3, 7)], None),
            (m(1, 9), vec![m(2, 7), m(3, 7)], Some(7)),
            // Another is the odd one: not this member.
            (m(1, 7), vec![m(2, 7), m(3, 8)], None),
            // Two of five unlike: no majority against it.
            (m(1, 7), vec![m(2, 8), m(3, 8), m(4, 7), m(5, 7)], None),
            (m(1, 7), vec![m(2, 8), m(3, 8), m(4, 8), m(5, 7)], Some(8)),
            // Two members that differ, three ways, or nobody answered.
            (m(1, 7), vec![m(2, 8)], None),
            (m(1, 7), vec![m(2, 8), m(3, 9)], None),
            (m(1, 7), vec![], None),
        ];
        for (own, others, want) in cases {
            assert_eq!(majority_unlike(own, &others), want, "{own:?} {others:?}");
        }
        // Members at another compact revision are not counted.
        let compacted_since = |member_id| MemberHash {
            member_id,
            hash: 8,
            compact_revision: 9,
        };
        assert_eq!(
            majority_unlike(m(1, 7), &[compacted_since(2), compacted_since(3)]),
            None
        );
    }

    #[test]
    fn another_compact_revision_is_not_compared() {
        let compacted_since = MemberHash {
            member_id: 3,
            hash: 8,
            compact_revision: 9,
        };
        assert_eq!(
            corrupt_members(m(1, 7), &[m(2, 7), compacted_since]),
            Vec::<u64>::new()
        );
    }
}
