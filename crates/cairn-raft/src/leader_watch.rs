//! Fast failover when the leader's process dies.
//!
//! Raft notices a dead leader only when heartbeats stop for an election
//! timeout, and openraft's followers then still refuse to vote until the
//! leader lease (`election_timeout_max`) has run out: with a 1 s election
//! timeout, seconds pass before a new leader is elected. Yet when the
//! leader's *process* dies — a crash, SIGKILL, OOM, a shutdown — the kernel
//! closes its sockets, and a peer can know it at once.
//!
//! Each voter holds a `Presence` stream open to its leader. When it breaks,
//! the voter tries fresh TCP connections to the leader's peer address for a
//! few seconds (a process shutting down may still accept from its backlog
//! for a moment); once one is **refused**, nothing listens there any more,
//! and the voter acts:
//! it tells its own Raft, as a leadership transfer from the dead leader
//! would, that the lease no longer holds, and the voter chosen to succeed
//! (the lowest id among the remaining voters, the same choice on every
//! voter) starts an election at once whose vote requests are granted
//! without waiting for the lease.
//!
//! The successor may have less log than another voter (the dead leader's
//! last entries reached some followers only), or may not have seen the
//! leader die (it was restarting): then no vote goes to it from the voters
//! ahead of it. So every other voter, ranked by id, waits `rank` election
//! timeouts (the successor's vote requests have arrived or timed out by
//! then) and, if its vote is still the dead leader's (it granted no one)
//! and no leader has appeared, elects itself the same way. openraft orders
//! candidates of one term by id, so a later candidate of the same term
//! supersedes an earlier one where its log allows.
//!
//! A voter that cannot open the stream at all checks the same way, so a
//! leader that still answered the first probe while shutting down is
//! caught on the next attempt.
//!
//! A partitioned or paused leader breaks no connection (or the reconnect is
//! not refused), so the normal election timeout handles it: this path never
//! fires on mere silence. Safety does not depend on it either way: votes
//! still require an up-to-date log and one vote per term, and Cairn's reads
//! use ReadIndex (a quorum round), never the leader lease. A wrong guess
//! costs one needless election, nothing more.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::raft::TransferLeaderRequest;
use openraft::storage::RaftStateMachine;
use tokio::net::TcpStream;

use crate::network::NetworkFactory;
use crate::types::{CairnNode, NodeId, Raft, RaftMetrics, SnapshotData, TypeConfig, Vote};

/// How long opening the stream, or the reconnect probe, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long, after the stream broke, to look for proof either way.
const PROBE_WINDOW: Duration = Duration::from_secs(3);
/// Pause between two probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Pause before reopening a stream that could not be opened or ended
/// without the leader being gone, so a flapping peer costs little.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The leader as this node sees it.
#[derive(Clone, PartialEq)]
struct Followed {
    leader: NodeId,
    node: CairnNode,
    vote: Vote,
    voters: BTreeSet<NodeId>,
}

/// Runs until the local Raft stops. Spawn it once per node.
pub async fn run<SM>(raft: Raft<SM>, network: NetworkFactory)
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    let mut metrics = raft.metrics();
    loop {
        let Some(followed) = wait_for_leader(&mut metrics).await else {
            return;
        };
        let client = network.client(followed.leader, &followed.node);
        let mut stream = match client.presence(CONNECT_TIMEOUT).await {
            Ok(s) => s,
            Err(_) => {
                // A refused connection is proof here too: the stream may
                // have broken while the leader was shutting down, with the
                // probe still served from its backlog (`Probe::Alive`).
                // Anything else (a timeout, a reset): if it is dead, the
                // normal election timeout elects.
                if refuses_connections(&followed.node.peer_url).await
                    && current(&metrics).as_ref() == Some(&followed)
                {
                    succeed(&raft, &followed, &mut metrics).await;
                }
                pause_or_change(&mut metrics, &followed).await;
                continue;
            }
        };
        tokio::select! {
            _ = stream.next() => {}
            changed = leader_changed(&mut metrics, &followed) => {
                if !changed {
                    return;
                }
                continue;
            }
        }
        if current(&metrics).as_ref() != Some(&followed) {
            continue;
        }
        match probe(&client, &followed.node.peer_url).await {
            Probe::Alive => continue,
            Probe::Gone => succeed(&raft, &followed, &mut metrics).await,
            Probe::Unknown => {}
        }
        pause_or_change(&mut metrics, &followed).await;
    }
}

enum Probe {
    /// A new Presence stream opened: the leader serves.
    Alive,
    /// Connections are refused: nothing listens at the leader's address.
    Gone,
    /// Neither within [`PROBE_WINDOW`]; leave it to the election timeout.
    Unknown,
}

/// After the stream broke: is the leader's process gone? A process that is
/// shutting down may still complete TCP handshakes from its listen backlog
/// for a moment without serving, so keep asking for a short while.
async fn probe(client: &crate::network::PeerClient, peer_url: &str) -> Probe {
    let deadline = tokio::time::Instant::now() + PROBE_WINDOW;
    loop {
        if refuses_connections(peer_url).await {
            return Probe::Gone;
        }
        if client.presence(CONNECT_TIMEOUT).await.is_ok() {
            return Probe::Alive;
        }
        if tokio::time::Instant::now() >= deadline {
            return Probe::Unknown;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// The leader this node follows as a voter, if any.
fn current(
    metrics: &openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
) -> Option<Followed> {
    let m = metrics.borrow_watched();
    let leader = m.current_leader?;
    if leader == m.id || m.running_state.is_err() {
        return None;
    }
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&m.id) {
        return None;
    }
    let node = membership.get_node(&leader)?.clone();
    Some(Followed {
        leader,
        node,
        vote: m.vote,
        voters,
    })
}

/// Waits until this node follows a leader; `None` once Raft stopped.
async fn wait_for_leader(
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
) -> Option<Followed> {
    loop {
        if metrics.borrow_watched().running_state.is_err() {
            return None;
        }
        if let Some(f) = current(metrics) {
            return Some(f);
        }
        metrics.changed().await.ok()?;
    }
}

/// Resolves `true` when the followed leader (or its vote) changes, `false`
/// when Raft stopped.
async fn leader_changed(
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
    followed: &Followed,
) -> bool {
    loop {
        if metrics.changed().await.is_err() || metrics.borrow_watched().running_state.is_err() {
            return false;
        }
        if current(metrics).as_ref() != Some(followed) {
            return true;
        }
    }
}

async fn pause_or_change(
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
    followed: &Followed,
) {
    tokio::select! {
        _ = tokio::time::sleep(RETRY_PAUSE) => {}
        _ = leader_changed(metrics, followed) => {}
    }
}

/// True only when a TCP connection to `peer_url` is actively refused: no
/// process listens there. A timeout or any other error is not proof.
async fn refuses_connections(peer_url: &str) -> bool {
    let authority = peer_url
        .split_once("://")
        .map_or(peer_url, |(_, rest)| rest)
        .trim_end_matches('/');
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// The leader is gone: drop the lease here, and if this node is the chosen
/// successor, start an election that voters grant despite their lease. A
/// voter ranked after the successor elects itself if, `rank` election
/// timeouts later, it has granted no vote and no leader has appeared.
async fn succeed<SM>(
    raft: &Raft<SM>,
    followed: &Followed,
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
) where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    let me = metrics.borrow_watched().id;
    let ranked: Vec<NodeId> = followed
        .voters
        .iter()
        .copied()
        .filter(|id| *id != followed.leader)
        .collect();
    let (Some(&successor), Some(rank)) = (ranked.first(), ranked.iter().position(|id| *id == me))
    else {
        return;
    };
    tracing::info!(
        leader = followed.leader,
        successor,
        "leader's process is gone (connection closed, reconnect refused): electing without waiting for its lease"
    );
    transfer(raft, followed, successor).await;
    if rank == 0 {
        return;
    }
    let wait =
        Duration::from_millis(raft.config().election_timeout_min).saturating_mul(rank as u32);
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = voted_or_led(metrics, followed) => return,
    }
    if untouched(metrics, followed) {
        tracing::info!(
            leader = followed.leader,
            successor,
            "no vote went to the successor and no leader appeared: electing this voter"
        );
        transfer(raft, followed, me).await;
    }
}

/// Hands this node's Raft a leadership transfer from the dead leader to
/// `to`: the lease no longer holds here, and `to`, if it is this node,
/// elects.
async fn transfer<SM>(raft: &Raft<SM>, followed: &Followed, to: NodeId)
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    // `None`: no candidate is held to a log it already has; voters still
    // refuse a candidate whose log is behind theirs.
    let req = TransferLeaderRequest::new(followed.vote, to, None);
    if let Err(e) = raft.handle_transfer_leader(req).await {
        tracing::warn!("leader watch: {e}");
    }
}

/// Whether this node still holds the dead leader's vote and sees no other
/// leader: it has voted for no successor.
fn untouched(
    metrics: &openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
    followed: &Followed,
) -> bool {
    let m = metrics.borrow_watched();
    m.running_state.is_ok()
        && m.vote == followed.vote
        && m.current_leader.is_none_or(|l| l == followed.leader)
}

/// Resolves once this node voted (its vote moved) or follows another
/// leader, or Raft stopped.
async fn voted_or_led(
    metrics: &mut openraft::alias::WatchReceiverOf<TypeConfig, RaftMetrics>,
    followed: &Followed,
) {
    while untouched(metrics, followed) {
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
