//! The initial corruption check (etcd's
//! `--experimental-initial-corrupt-check`): a member that starts on data
//! of its own compares its keyspace hash with the other members' before it
//! serves clients, and refuses to start when a majority of them hold
//! another keyspace, so a member whose data went bad while it was down
//! does not serve it.
//!
//! Unlike etcd, which asks its peers before its Raft starts, at the
//! revision the member stopped at, a Cairn member first catches up with
//! the leader (a read barrier): the others answer only revisions they have
//! reached and compaction kept, so one revision on every member's head is
//! the one most likely to be compared. And where etcd refuses on any
//! mismatch, this check refuses only when a strict majority of the
//! members compared share another hash (as the online check decides who
//! is corrupt): with no majority, which side is wrong is not known, and
//! the member starts with a warning (the online check, if on, goes on
//! comparing).

use std::time::Duration;

use crate::corruption::{majority_unlike, peer_hashes, MemberHash};
use crate::kv_hash::hash_in_steps;
use crate::node::{Node, StartError};

/// Election timeouts to wait for a leader to catch up with before the
/// check is given up (the member then starts unchecked, with a warning):
/// a member restarted while most of the cluster is down must not hang.
const CATCH_UP_ELECTIONS: u64 = 20;
/// The pause between two tries to catch up.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Runs the check on `node`, which started on data of its own: an error if
/// a majority of the members hold another keyspace, or if this member
/// cannot hash its own. Skipped, with a warning, if no leader is reached.
pub async fn run(node: &Node) -> Result<(), StartError> {
    let wait = Duration::from_millis(CATCH_UP_ELECTIONS * node.config.election_timeout_ms);
    if let Err(e) = catch_up(node, wait).await {
        tracing::warn!("initial corruption check skipped: not caught up within {wait:?}: {e}");
        return Ok(());
    }
    let own = hash_in_steps(&node.store, 0)
        .await
        .map_err(|e| StartError::Storage(format!("initial corruption check: cannot hash: {e}")))?;
    let me = MemberHash {
        member_id: node.member_id(),
        hash: own.hash,
        compact_revision: own.compact_revision,
    };
    let others = peer_hashes(node, own.revision).await;
    if let Some(majority_hash) = majority_unlike(me, &others) {
        return Err(StartError::Corrupt {
            member_id: me.member_id,
            revision: own.revision,
            hash: me.hash,
            majority_hash,
        });
    }
    let unlike: Vec<String> = others
        .iter()
        .filter(|m| m.hash != me.hash && m.compact_revision == me.compact_revision)
        .map(|m| format!("{:x}", m.member_id))
        .collect();
    if unlike.is_empty() {
        tracing::info!(
            "initial corruption check passed at revision {}: {} other members agree",
            own.revision,
            others.len()
        );
    } else {
        tracing::warn!(
            "initial corruption check at revision {}: members {} hold another keyspace, \
             but no majority does; starting",
            own.revision,
            unlike.join(", ")
        );
    }
    Ok(())
}

/// Waits until this member has applied everything committed when it asks
/// (a read barrier through whoever leads), for at most `wait`.
async fn catch_up(node: &Node, wait: Duration) -> Result<(), crate::ServerError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match node.read_barrier().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + RETRY_PAUSE >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!("initial corruption check: not caught up yet: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
