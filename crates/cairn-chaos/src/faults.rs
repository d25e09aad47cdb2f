//! The fault schedule of a run ([`plan`], a pure function of the seed) and
//! its injection into a [`ProcCluster`] ([`Injector`]).
//!
//! One fault at a time, each undone before the next starts:
//!
//! | kind | what | needs |
//! |---|---|---|
//! | `KillRandom` / `KillLeader` | SIGKILL, restart on the same data dir after `down` | – |
//! | `KillMajority` | SIGKILL a majority at once, the leader among them (quorum lost); restart them after `down` | – |
//! | `KillAll` | SIGKILL every member at once (a whole-cluster crash: every member recovers from its own disk); restart them after `down` | – |
//! | `PowerCut` / `PowerCutAll` | a power cut of a random member or of every member at once: SIGSTOP, its disk loses every write not synced ([`crate::power`]), SIGKILL, restart after `down`; opt-in (`--faults power-cut,power-cut-all`), not in [`FaultKind::ALL`] | root, `mkfs.ext4`, loop mounts |
//! | `DiskFail` | the disk of a random member fails under it while it runs (every IO fails with EIO, unsynced writes lost); the member must exit non-zero by itself within 20 s; disk repaired, member restarted after `down`; opt-in (`--faults disk-fail`) | as the power cuts |
//! | `PauseLeader` | SIGSTOP, SIGCONT after `down` (3–6 election timeouts) | – |
//! | `IsolateLeader` | cut the leader from every other member | a [`NetLab`](crate::netns::NetLab) |
//! | `SplitMinority` | cut a random minority (with or without the leader) from the majority | a lab |
//! | `BridgeNode` | split the others in two halves that cannot talk, one member sees both | a lab |
//! | `OneWay` | one member cannot reach another while the other way works (the leader's messages to a follower, or a follower's to the leader, are held); opt-in (`--faults one-way`), not in [`FaultKind::ALL`] | a lab; one-way at the message level only through the proxies (a blackhole route alone also stops the TCP connections the other side opens) |
//! | `Degrade` | delay + jitter + loss on what one member sends: `tc netem` in a lab with `sch_netem`, else the userspace proxies of [`crate::proxy`] (loss as stalls) | – |
//! | `Reconfigure` | `MemberRemove` a voter, wait until it stops by itself (exit 0: a removed member does), wipe it, `MemberAdd` it back as a learner with a new peer URL (new ID), start it, `MemberPromote` it | – |
//!
//! Partitions cut member-to-member traffic only: clients (the test
//! process, in the root namespace) still reach every member, so the
//! minority side keeps receiving requests it cannot commit.

use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{self, ProcCluster, ELECTION_TIMEOUT_MS};
use crate::lease_check::Outages;
use crate::membership;
use crate::proxy::Degrade;

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL a random member, restart it after `down`.
    KillRandom,
    /// SIGKILL the current leader, restart it after `down`.
    KillLeader,
    /// SIGKILL a majority at once, the leader among them, restart them
    /// after `down`: nothing can commit meanwhile, and the members that
    /// come back must agree on every entry a client saw acknowledged.
    KillMajority,
    /// SIGKILL every member at once, restart them after `down`. No member
    /// can catch up from another: each must recover every acknowledged
    /// write it held from its own log and state files.
    KillAll,
    /// Cut the power to a random member (its unsynced writes are lost),
    /// restart it after `down`.
    PowerCut,
    /// Cut the power to every member at once, restart them after `down`:
    /// an acknowledged write survives only if a majority synced it.
    PowerCutAll,
    /// The disk of a random member fails while it runs; it must stop by
    /// itself, and is restarted on the repaired disk after `down`.
    DiskFail,
    /// SIGSTOP the current leader, SIGCONT it after `down` (always longer
    /// than the election timeout).
    PauseLeader,
    /// Cut the leader off from every other member for `down`.
    IsolateLeader,
    /// Cut a minority off from the majority for `down`.
    SplitMinority,
    /// Two halves that cannot talk, one member in touch with both.
    BridgeNode,
    /// One direction between the leader and a follower cut for `down`:
    /// what one sends the other never gets, while the other way works.
    OneWay,
    /// Delay, jitter and loss on one member's outgoing packets.
    Degrade,
    /// Remove a voter, re-add it as a fresh learner, promote it.
    Reconfigure,
}

impl FaultKind {
    pub const PROCESS: [FaultKind; 3] = [
        FaultKind::KillRandom,
        FaultKind::KillLeader,
        FaultKind::PauseLeader,
    ];
    pub const PARTITION: [FaultKind; 3] = [
        FaultKind::IsolateLeader,
        FaultKind::SplitMinority,
        FaultKind::BridgeNode,
    ];
    /// Losing quorum: `--faults kill-majority,kill-all` asks for these alone.
    pub const QUORUM_LOSS: [FaultKind; 2] = [FaultKind::KillMajority, FaultKind::KillAll];
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillRandom,
        FaultKind::KillLeader,
        FaultKind::KillMajority,
        FaultKind::KillAll,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::SplitMinority,
        FaultKind::BridgeNode,
        FaultKind::Degrade,
        FaultKind::Reconfigure,
    ];

    /// Needs the members in network namespaces (`Degrade` does not: it
    /// falls back to the userspace proxies of [`crate::proxy`]).
    pub fn needs_lab(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::SplitMinority
                | FaultKind::BridgeNode
                | FaultKind::OneWay
        )
    }

    /// Needs each member's data dir on its own file system
    /// ([`crate::power::PowerDisks`]).
    pub fn needs_disks(self) -> bool {
        matches!(
            self,
            FaultKind::PowerCut | FaultKind::PowerCutAll | FaultKind::DiskFail
        )
    }

    /// Parses the `--faults` names of the campaign binary.
    pub fn parse(name: &str) -> Option<FaultKind> {
        Some(match name {
            "kill" => FaultKind::KillRandom,
            "kill-leader" => FaultKind::KillLeader,
            "kill-majority" => FaultKind::KillMajority,
            "kill-all" => FaultKind::KillAll,
            "power-cut" => FaultKind::PowerCut,
            "power-cut-all" => FaultKind::PowerCutAll,
            "disk-fail" => FaultKind::DiskFail,
            "pause-leader" => FaultKind::PauseLeader,
            "isolate-leader" => FaultKind::IsolateLeader,
            "split" => FaultKind::SplitMinority,
            "bridge" => FaultKind::BridgeNode,
            "one-way" => FaultKind::OneWay,
            "degrade" => FaultKind::Degrade,
            "reconfigure" => FaultKind::Reconfigure,
            _ => return None,
        })
    }
}

/// One planned fault; the leader is resolved when it is injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// Offset from the start of the workload.
    pub at: Duration,
    pub kind: FaultKind,
    /// How long the fault lasts (not used by `Reconfigure`).
    pub down: Duration,
    /// Member index (random choices), and fallback when no leader is known.
    pub pick: usize,
    /// A second random draw: the minority size / side for splits, the
    /// severity for `Degrade`.
    pub shape: u64,
}

impl fmt::Display for PlannedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t={:.3}s {:?} pick #{} for {}ms",
            self.at.as_secs_f64(),
            self.kind,
            self.pick,
            self.down.as_millis()
        )
    }
}

/// The fault schedule of a run: a pure function of the seed, the member
/// count, the duration and the allowed kinds.
pub fn plan(
    seed: u64,
    members: usize,
    duration: Duration,
    kinds: &[FaultKind],
) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut t = Duration::from_millis(rng.random_range(500..1500));
    // Leave the last second fault-free.
    let end = duration.saturating_sub(Duration::from_secs(1));
    while t < end && out.len() < 1_000 {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let down = match kind {
            FaultKind::PauseLeader => Duration::from_millis(
                rng.random_range(3 * ELECTION_TIMEOUT_MS..6 * ELECTION_TIMEOUT_MS),
            ),
            FaultKind::IsolateLeader
            | FaultKind::SplitMinority
            | FaultKind::BridgeNode
            | FaultKind::OneWay => Duration::from_millis(
                rng.random_range(2 * ELECTION_TIMEOUT_MS..8 * ELECTION_TIMEOUT_MS),
            ),
            FaultKind::Degrade => Duration::from_millis(rng.random_range(1000..3000)),
            // Takes as long as it takes; the gap after it is what counts.
            FaultKind::Reconfigure => Duration::from_millis(500),
            FaultKind::KillRandom
            | FaultKind::KillLeader
            | FaultKind::KillMajority
            | FaultKind::KillAll
            | FaultKind::PowerCut
            | FaultKind::PowerCutAll
            | FaultKind::DiskFail => Duration::from_millis(rng.random_range(200..1500)),
        };
        let pick = rng.random_range(0..members.max(1));
        let shape = rng.random();
        out.push(PlannedFault {
            at: t,
            kind,
            down,
            pick,
            shape,
        });
        t += down + Duration::from_millis(rng.random_range(300..1500));
    }
    out
}

/// Injects planned faults into a cluster and logs what it did.
pub struct Injector<'a> {
    pub cluster: &'a mut ProcCluster,
    pub rt: &'a tokio::runtime::Runtime,
    /// Member IDs by slot; updated when a slot is re-added.
    pub ids: Vec<u64>,
    /// What was injected, with resolved targets (for failure reports).
    pub log: Vec<String>,
    /// Where quorum losses are recorded, in ns since `origin`, for the
    /// lease checks (no leader, no expiry).
    pub outages: Outages,
    pub origin: Instant,
}

const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a member whose disk failed may go on before it stops: its next
/// log append fails (the leader appends a tick entry every tick interval
/// even when idle), and the server shuts down on the storage error.
const DISK_FAILED_EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a removed member may take to find out and stop: it asks its
/// peers within an election timeout or two of losing its leader; a
/// loaded machine running a debug build needs the margin.
const REMOVED_EXIT_TIMEOUT: Duration = Duration::from_secs(20);

impl Injector<'_> {
    fn names(&self) -> Vec<String> {
        self.cluster
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// The leader as the members report it now, if one is known.
    fn leader_now(&self) -> Option<usize> {
        let urls = self.cluster.client_urls();
        self.rt
            .block_on(harness::find_leader(&urls, &self.ids, STATUS_TIMEOUT))
    }

    fn leader_or(&self, pick: usize) -> (usize, &'static str) {
        match self.leader_now() {
            Some(l) => (l, "leader"),
            None => (pick % self.cluster.len(), "no leader known; random"),
        }
    }

    /// Takes `targets` down with `stop`, waits `down`, starts them again;
    /// with `quorum_lost`, the time they were down is recorded as an outage
    /// (no leader can expire leases meanwhile: see [`Outages`]).
    fn down_then_restart(
        &mut self,
        targets: &[usize],
        down: Duration,
        quorum_lost: bool,
        stop: impl FnOnce(&mut ProcCluster) -> Result<(), String>,
    ) -> Result<(), String> {
        if quorum_lost {
            self.outages.begin(self.origin.elapsed().as_nanos() as u64);
        }
        let stopped = stop(self.cluster);
        std::thread::sleep(down);
        let restarted =
            stopped.and_then(|()| targets.iter().try_for_each(|i| self.cluster.spawn(*i)));
        if quorum_lost {
            self.outages.end(self.origin.elapsed().as_nanos() as u64);
        }
        restarted
    }

    /// Injects `f`, waits `f.down`, undoes it. `Err` is a harness or
    /// availability problem (the run fails with it).
    pub fn inject(&mut self, f: &PlannedFault, t: Duration) -> Result<(), String> {
        let n = self.cluster.len();
        let names = self.names();
        let t = t.as_secs_f64();
        let down = f.down.as_millis();
        match f.kind {
            FaultKind::KillRandom | FaultKind::KillLeader => {
                let (target, how) = if f.kind == FaultKind::KillRandom {
                    (f.pick % n, "random")
                } else {
                    self.leader_or(f.pick)
                };
                self.log.push(format!(
                    "t={t:.3}s SIGKILL {} ({how}), restart after {down}ms",
                    names[target]
                ));
                self.cluster.kill(target);
                std::thread::sleep(f.down);
                self.cluster.spawn(target)
            }
            FaultKind::KillMajority | FaultKind::KillAll => {
                let (targets, how) = if f.kind == FaultKind::KillAll {
                    ((0..n).collect(), "all".to_string())
                } else {
                    let (leader, how) = self.leader_or(f.pick);
                    (
                        majority_with(leader, f.shape, n),
                        format!("majority with the {how}"),
                    )
                };
                let shown: Vec<&str> = targets.iter().map(|i| names[*i].as_str()).collect();
                self.log.push(format!(
                    "t={t:.3}s SIGKILL {} at once ({how}), restart after {down}ms",
                    shown.join(",")
                ));
                self.down_then_restart(&targets, f.down, true, |c| {
                    c.kill_all(&targets);
                    Ok(())
                })
            }
            FaultKind::PowerCut | FaultKind::PowerCutAll => {
                let targets: Vec<usize> = if f.kind == FaultKind::PowerCutAll {
                    (0..n).collect()
                } else {
                    vec![f.pick % n]
                };
                let shown: Vec<&str> = targets.iter().map(|i| names[*i].as_str()).collect();
                self.log.push(format!(
                    "t={t:.3}s power cut {} (unsynced writes lost), restart after {down}ms",
                    shown.join(",")
                ));
                self.down_then_restart(&targets, f.down, targets.len() > n / 2, |c| {
                    c.power_cut(&targets)
                })
            }
            FaultKind::DiskFail => {
                let target = f.pick % n;
                self.log.push(format!(
                    "t={t:.3}s disk of {} fails under it, restart after {down}ms",
                    names[target]
                ));
                self.cluster.fail_disk(target)?;
                let (status, took) = self
                    .cluster
                    .wait_exit_status(target, DISK_FAILED_EXIT_TIMEOUT)
                    .map_err(|e| format!("a member whose disk failed must stop: {e}"))?;
                if status.success() {
                    return Err(format!(
                        "{} exited 0 after its disk failed: a storage failure must exit non-zero",
                        names[target]
                    ));
                }
                if let Some(last) = self.log.last_mut() {
                    last.push_str(&format!(
                        "; it stopped by itself after {}ms ({status})",
                        took.as_millis()
                    ));
                }
                self.cluster.repair_disk(target)?;
                std::thread::sleep(f.down);
                self.cluster.spawn(target)
            }
            FaultKind::PauseLeader => {
                let (target, how) = self.leader_or(f.pick);
                self.log.push(format!(
                    "t={t:.3}s SIGSTOP {} ({how}), SIGCONT after {down}ms",
                    names[target]
                ));
                self.cluster.pause(target)?;
                std::thread::sleep(f.down);
                // Who leads now, as the others see it (the paused member
                // does not answer)?
                let now = self.leader_now();
                if let Some(last) = self.log.last_mut() {
                    last.push_str(&match now {
                        Some(l) if l == target => {
                            "; others still follow it before SIGCONT".to_string()
                        }
                        Some(l) => format!("; leader before SIGCONT: {}", names[l]),
                        None => "; no leader known before SIGCONT".to_string(),
                    });
                }
                self.cluster.resume(target)
            }
            FaultKind::IsolateLeader | FaultKind::SplitMinority | FaultKind::BridgeNode => {
                let (left, right, what) = self.sides(f)?;
                let show = |s: &[usize]| {
                    s.iter()
                        .map(|i| names[*i].as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                self.log.push(format!(
                    "t={t:.3}s partition {what}: [{}] | [{}] for {down}ms",
                    show(&left),
                    show(&right)
                ));
                let lab = self.cluster.net.as_mut().ok_or("partition without a lab")?;
                let mut cut = lab.split(&left, &right);
                // Peer traffic through proxies bypasses the member-to-member
                // routes: the proxies hold it instead.
                if let Some(p) = &self.cluster.proxies {
                    cut = cut.and(p.split(&left, &right));
                }
                self.hold_and_heal(f, cut, &names)
            }
            FaultKind::OneWay => {
                let (l, how) = self.leader_or(f.pick);
                let other = (l + 1 + (f.shape as usize >> 1) % (n - 1).max(1)) % n;
                let (from, to) = if f.shape.is_multiple_of(2) {
                    (l, other)
                } else {
                    (other, l)
                };
                self.log.push(format!(
                    "t={t:.3}s one-way: {} cannot reach {} ({how}: {}), the other way works, for {down}ms",
                    names[from], names[to], names[l]
                ));
                let lab = self.cluster.net.as_mut().ok_or("partition without a lab")?;
                let mut cut = lab.cut_one_way(from, to);
                if let Some(p) = &self.cluster.proxies {
                    cut = cut.and(p.cut_one_way(from, to));
                }
                self.hold_and_heal(f, cut, &names)
            }
            FaultKind::Degrade => {
                let target = f.pick % n;
                let delay_ms = 20 + f.shape % 130;
                let jitter_ms = delay_ms / 4;
                let loss = ((f.shape >> 16) % 20) as u32;
                let netem = self
                    .cluster
                    .net
                    .as_ref()
                    .is_some_and(|l| l.netem_unavailable().is_none());
                let how = if netem {
                    "netem"
                } else if self.cluster.proxies.is_some() {
                    "proxy (stalls for loss)"
                } else {
                    return Err("degrade without netem or proxies".into());
                };
                self.log.push(format!(
                    "t={t:.3}s degrade {} via {how}: delay {delay_ms}ms ±{jitter_ms}ms, loss {loss}% for {down}ms",
                    names[target]
                ));
                if netem {
                    let lab = self.cluster.net.as_mut().ok_or("netem without a lab")?;
                    let res = lab.degrade(target, delay_ms, jitter_ms, loss);
                    std::thread::sleep(f.down);
                    let lab = self.cluster.net.as_mut().ok_or("netem without a lab")?;
                    return res.and(lab.heal());
                }
                let p = self.cluster.proxies.as_ref().ok_or("no proxies")?;
                let before = p.counters();
                p.degrade(Degrade {
                    target,
                    delay_ms,
                    jitter_ms,
                    loss_percent: loss,
                });
                std::thread::sleep(f.down);
                p.heal();
                let after = p.counters();
                if let Some(last) = self.log.last_mut() {
                    last.push_str(&format!(
                        "; {} chunks delayed, {} stalled",
                        after.0 - before.0,
                        after.1 - before.1
                    ));
                }
                Ok(())
            }
            FaultKind::Reconfigure => self.reconfigure(f.pick % n, t),
        }
    }

    /// Holds a partition (`cut`: whether installing it worked) for
    /// `f.down`, notes the leader before the heal, and heals.
    fn hold_and_heal(
        &mut self,
        f: &PlannedFault,
        cut: Result<(), String>,
        names: &[String],
    ) -> Result<(), String> {
        std::thread::sleep(f.down);
        let now = self.leader_now();
        if let Some(last) = self.log.last_mut() {
            last.push_str(&match now {
                Some(l) => format!("; leader before heal: {}", names[l]),
                None => "; no leader known before heal".to_string(),
            });
        }
        if let Some(p) = &self.cluster.proxies {
            p.heal();
        }
        let lab = self.cluster.net.as_mut().ok_or("partition without a lab")?;
        let healed = lab.heal();
        cut.and(healed)
    }

    /// The two sides of a partition fault; members in neither side (the
    /// bridge) talk to both.
    fn sides(&self, f: &PlannedFault) -> Result<(Vec<usize>, Vec<usize>, String), String> {
        let n = self.cluster.len();
        let all: Vec<usize> = (0..n).collect();
        let rotate = |first: usize| -> Vec<usize> { (0..n).map(|k| (first + k) % n).collect() };
        Ok(match f.kind {
            FaultKind::IsolateLeader => {
                let (l, how) = self.leader_or(f.pick);
                let rest = all.into_iter().filter(|i| *i != l).collect();
                (vec![l], rest, format!("isolate {how}"))
            }
            FaultKind::SplitMinority => {
                // Minority of size 1..=(n-1)/2, starting at the leader
                // half of the time.
                let (start, how) = if f.shape.is_multiple_of(2) {
                    self.leader_or(f.pick)
                } else {
                    (f.pick % n, "random")
                };
                let size = 1 + (f.shape / 2) as usize % ((n - 1) / 2).max(1);
                let order = rotate(start);
                let (minority, majority) = order.split_at(size.min(n - 1));
                (
                    minority.to_vec(),
                    majority.to_vec(),
                    format!("minority of {size} from {how}"),
                )
            }
            _ => {
                // Bridge: member `pick`; the others split in two halves.
                let bridge = f.pick % n;
                let others: Vec<usize> = rotate(bridge).into_iter().skip(1).collect();
                let (a, b) = others.split_at(others.len() / 2);
                let name = &self.cluster.members[bridge].name;
                (a.to_vec(), b.to_vec(), format!("{name} bridges"))
            }
        })
    }

    /// Removes the voter in slot `slot`, re-adds the slot as a fresh
    /// learner and promotes it, all through the Cluster API while the
    /// workload runs.
    fn reconfigure(&mut self, slot: usize, t: f64) -> Result<(), String> {
        let old_name = self.cluster.members[slot].name.clone();
        let old_id = self.ids[slot];
        let others: Vec<String> = self
            .cluster
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != slot)
            .map(|(_, m)| m.client_url())
            .collect();
        let started = Instant::now();
        let deadline = || Instant::now() + membership::STEP_TIMEOUT;
        self.log.push(format!(
            "t={t:.3}s reconfigure: remove {old_name} ({old_id:x})"
        ));
        self.rt
            .block_on(membership::remove(&others, old_id, deadline()))?;
        // A removed member finds out and stops by itself, exit 0, as etcd's
        // does (even if it never received the entry that removed it).
        let stopped = self
            .cluster
            .wait_exit(slot, REMOVED_EXIT_TIMEOUT)
            .map_err(|e| format!("removed member {old_name} did not stop by itself: {e}"))?;
        self.cluster.replace(slot)?;
        let peer = self.cluster.members[slot].peer_url();
        let new_name = self.cluster.members[slot].name.clone();
        let new_id = self
            .rt
            .block_on(membership::add_learner(&others, &peer, deadline()))?;
        self.cluster.spawn(slot)?;
        self.rt
            .block_on(membership::promote(&others, new_id, deadline()))?;
        self.ids[slot] = new_id;
        if let Some(last) = self.log.last_mut() {
            last.push_str(&format!(
                " (it stopped by itself in {}ms), add learner {new_name} ({new_id:x}) at {peer}, promote: done in {}ms",
                stopped.as_millis(),
                started.elapsed().as_millis()
            ));
        }
        Ok(())
    }
}

/// The members of a `KillMajority` fault: `first` (the leader) and then,
/// in an order `shape` rotates, as many others as make a majority of `n`.
fn majority_with(first: usize, shape: u64, n: usize) -> Vec<usize> {
    let others: Vec<usize> = (0..n).filter(|i| *i != first).collect();
    let skip = if others.is_empty() {
        0
    } else {
        (shape % others.len() as u64) as usize
    };
    let mut out = vec![first];
    out.extend(others.iter().cycle().skip(skip).take(n / 2));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_a_function_of_the_seed() {
        let d = Duration::from_secs(30);
        let all = &FaultKind::ALL;
        assert_eq!(plan(7, 3, d, all), plan(7, 3, d, all));
        assert_ne!(plan(7, 3, d, all), plan(8, 3, d, all));
        for f in plan(7, 3, d, all) {
            assert!(f.at < d);
            assert!(f.pick < 3);
            if f.kind == FaultKind::PauseLeader || FaultKind::PARTITION.contains(&f.kind) {
                assert!(f.down > Duration::from_millis(ELECTION_TIMEOUT_MS));
            }
        }
    }

    #[test]
    fn plan_uses_only_the_allowed_kinds() {
        let d = Duration::from_secs(60);
        let p = plan(3, 5, d, &FaultKind::PARTITION);
        assert!(!p.is_empty());
        assert!(p.iter().all(|f| FaultKind::PARTITION.contains(&f.kind)));
        assert!(plan(3, 5, d, &[]).is_empty());
        let q = plan(3, 3, d, &FaultKind::QUORUM_LOSS);
        assert!(q.iter().all(|f| FaultKind::QUORUM_LOSS.contains(&f.kind)));
        assert!(FaultKind::QUORUM_LOSS
            .iter()
            .all(|k| FaultKind::ALL.contains(k)));
    }

    #[test]
    fn fault_names_parse() {
        for (name, kind) in [
            ("kill", FaultKind::KillRandom),
            ("kill-majority", FaultKind::KillMajority),
            ("kill-all", FaultKind::KillAll),
            ("isolate-leader", FaultKind::IsolateLeader),
            ("reconfigure", FaultKind::Reconfigure),
            ("one-way", FaultKind::OneWay),
            ("power-cut", FaultKind::PowerCut),
            ("power-cut-all", FaultKind::PowerCutAll),
            ("disk-fail", FaultKind::DiskFail),
        ] {
            assert_eq!(FaultKind::parse(name), Some(kind));
        }
        assert_eq!(FaultKind::parse("nope"), None);
    }

    #[test]
    fn a_killed_majority_holds_the_leader_and_no_member_twice() {
        for n in [3usize, 5, 7] {
            for leader in 0..n {
                for shape in 0..2 * n as u64 {
                    let m = majority_with(leader, shape, n);
                    assert_eq!(m[0], leader);
                    assert_eq!(m.len(), n / 2 + 1, "a majority of {n}");
                    let mut sorted = m.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    assert_eq!(sorted.len(), m.len(), "{m:?}");
                    assert!(m.iter().all(|i| *i < n));
                }
            }
        }
    }
}
