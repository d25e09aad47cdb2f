//! Automatic compaction, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`: without it the keyspace keeps every
//! revision of every key until the quota raises NOSPACE.
//!
//! * `periodic`: keep at least `retention` of history. Every member samples
//!   its revision at intervals; the leader compacts, once per period
//!   (`retention`, at most an hour), to the newest sample at least
//!   `retention` old. Samples of a follower are as good as the leader's (a
//!   member's revision trails the cluster's, which only makes the target
//!   older), so a new leader compacts without a new wait.
//! * `revision`: keep the last `retention` revisions, checked every five
//!   minutes (etcd's interval).
//!
//! The decisions are a pure function of (time, revision) observations
//! ([`Planner`]); the task around it reads the clock and proposes an
//! ordinary `Compact` command.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Command, CommandResult, StoreError};

use crate::error::ServerError;
use crate::node::Node;

/// How often revision mode looks (etcd's `revInterval`).
const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// The longest time between two periodic compactions.
const MAX_PERIOD: Duration = Duration::from_secs(3600);
/// Most samples kept: long retentions sample less often.
const MAX_SAMPLES: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep at least this much history (time).
    Periodic(Duration),
    /// Keep at least this many revisions.
    Revisions(i64),
}

impl AutoCompaction {
    /// etcd's flags: `mode` is `periodic` or `revision`; `retention` is a
    /// duration (`30m`, `1h30m`, `500ms`; a bare number is hours) in
    /// periodic mode and a count in revision mode; `0` turns it off.
    pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
        let retention = retention.trim();
        match mode {
            "periodic" => {
                let d = if let Ok(hours) = retention.parse::<u64>() {
                    Duration::from_secs(hours.saturating_mul(3600))
                } else {
                    parse_duration(retention).ok_or_else(|| {
                        format!("{retention:?} is not a duration (e.g. 30m, 1h, 90s)")
                    })?
                };
                Ok(if d.is_zero() {
                    AutoCompaction::Off
                } else {
                    AutoCompaction::Periodic(d)
                })
            }
            "revision" => match retention.parse::<i64>() {
                Ok(0) => Ok(AutoCompaction::Off),
                Ok(n) if n > 0 => Ok(AutoCompaction::Revisions(n)),
                _ => Err(format!("{retention:?} is not a revision count")),
            },
            other => Err(format!("{other:?} is not periodic or revision")),
        }
    }

    /// How often the task observes the revision.
    fn sample_interval(self) -> Option<Duration> {
        match self {
            AutoCompaction::Off => None,
            AutoCompaction::Periodic(retention) => Some(
                (retention.min(MAX_PERIOD) / 10)
                    .max(retention / MAX_SAMPLES)
                    .max(Duration::from_millis(10)),
            ),
            AutoCompaction::Revisions(_) => Some(REVISION_CHECK_INTERVAL),
        }
    }
}

/// `1h30m`, `45s`, `500ms`: Go's duration syntax for whole units.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return None,
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// What to compact to, and when, from observations of the revision.
#[derive(Debug)]
pub struct Planner {
    policy: AutoCompaction,
    /// (ms since start, revision), oldest first; at most one older than
    /// the retention window is kept.
    samples: VecDeque<(u64, i64)>,
    /// The store's compact revision as last known: never compact to it or
    /// below again.
    compacted: i64,
    /// No periodic compaction before this.
    next_at_ms: u64,
}

impl Planner {
    pub fn new(policy: AutoCompaction) -> Planner {
        Planner {
            policy,
            samples: VecDeque::new(),
            compacted: 0,
            next_at_ms: 0,
        }
    }

    /// The store compacted to `revision` (by us or anyone).
    pub fn compacted(&mut self, revision: i64) {
        self.compacted = self.compacted.max(revision);
    }

    /// Note that the revision was `revision` at `now_ms`; returns what to
    /// compact to now, if anything.
    pub fn observe(&mut self, now_ms: u64, revision: i64) -> Option<i64> {
        match self.policy {
            AutoCompaction::Off => None,
            AutoCompaction::Revisions(keep) => {
                let target = revision - keep;
                (target > self.compacted).then_some(target)
            }
            AutoCompaction::Periodic(retention) => {
                let retention_ms = retention.as_millis() as u64;
                self.samples.push_back((now_ms, revision));
                let cutoff = now_ms.checked_sub(retention_ms)?;
                // Keep one sample at or before the cutoff: the target.
                while self.samples.get(1).is_some_and(|(t, _)| *t <= cutoff) {
                    self.samples.pop_front();
                }
                let (t, target) = *self.samples.front()?;
                if t > cutoff || now_ms < self.next_at_ms || target <= self.compacted {
                    return None;
                }
                self.next_at_ms = now_ms + retention.min(MAX_PERIOD).as_millis() as u64;
                Some(target)
            }
        }
    }
}

/// Observes the revision on every member and compacts while this member
/// leads. Ends when the node is gone.
pub async fn run(node: std::sync::Weak<Node>, policy: AutoCompaction) {
    let Some(interval) = policy.sample_interval() else {
        return;
    };
    let started = tokio::time::Instant::now();
    let mut planner = Planner::new(policy);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(node) = node.upgrade() else { return };
        let (revision, compacted) = {
            let store = node.store();
            (store.revision(), store.compact_revision())
        };
        planner.compacted(compacted);
        let now_ms = started.elapsed().as_millis() as u64;
        let Some(target) = planner.observe(now_ms, revision) else {
            continue;
        };
        if node.raft.is_leader() {
            compact(&node, target, &mut planner).await;
        }
    }
}

async fn compact(node: &Arc<Node>, revision: i64, planner: &mut Planner) {
    match node.write(Command::Compact { revision }).await {
        Ok(CommandResult::Compact { .. }) => {
            planner.compacted(revision);
            tracing::info!("auto-compacted to revision {revision}");
        }
        Err(ServerError::Store(StoreError::Compacted { compact_revision })) => {
            planner.compacted(compact_revision)
        }
        // Not leading any more, or shutting down: the next leader's turn.
        other => tracing::debug!("auto-compaction to {revision}: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_etcd_s() {
        let p = |m, r| AutoCompaction::parse(m, r);
        assert_eq!(p("periodic", "0"), Ok(AutoCompaction::Off));
        assert_eq!(
            p("periodic", "1"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(3600))),
            "a bare number is hours"
        );
        assert_eq!(
            p("periodic", "1h30m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(5400)))
        );
        assert_eq!(
            p("periodic", "500ms"),
            Ok(AutoCompaction::Periodic(Duration::from_millis(500)))
        );
        assert_eq!(p("revision", "1000"), Ok(AutoCompaction::Revisions(1000)));
        assert_eq!(p("revision", "0"), Ok(AutoCompaction::Off));
        for (m, r) in [
            ("periodic", "5x"),
            ("periodic", "m"),
            ("periodic", ""),
            ("revision", "-3"),
            ("revision", "1h"),
            ("hourly", "1"),
        ] {
            assert!(p(m, r).is_err(), "{m} {r}");
        }
    }

    #[test]
    fn periodic_keeps_the_retention_window_and_compacts_once_a_period() {
        // Retention 10 s; samples every second, the revision +100 a second.
        let mut p = Planner::new(AutoCompaction::Periodic(Duration::from_secs(10)));
        let mut done = Vec::new();
        for s in 0..=35u64 {
            if let Some(target) = p.observe(s * 1000, s as i64 * 100) {
                p.compacted(target);
                done.push((s, target));
            }
        }
        // At 10 s the only old-enough revision is 0 (nothing to do); from
        // then on each compaction keeps exactly the last 10 s (the
        // revision of 10 s before), once every 10 s.
        assert_eq!(done, vec![(11, 100), (21, 1100), (31, 2100)]);
        assert!(p.samples.len() <= 12, "old samples are dropped");
    }

    #[test]
    fn periodic_never_compacts_what_is_younger_than_the_retention() {
        let mut p = Planner::new(AutoCompaction::Periodic(Duration::from_secs(10)));
        // Irregular samples, revisions rising.
        let times = [0u64, 3_000, 9_500, 10_200, 14_000, 25_000, 26_000, 41_000];
        for (i, t) in times.iter().enumerate() {
            if let Some(target) = p.observe(*t, (i as i64 + 1) * 10) {
                // The target was observed at least 10 s before now.
                let seen_at = times[(target / 10 - 1) as usize];
                assert!(
                    seen_at + 10_000 <= *t,
                    "{target} seen at {seen_at}, now {t}"
                );
                p.compacted(target);
            }
        }
        assert!(p.compacted > 0);
    }

    #[test]
    fn revision_mode_keeps_the_last_n_and_skips_what_is_done() {
        let mut p = Planner::new(AutoCompaction::Revisions(100));
        assert_eq!(p.observe(0, 50), None);
        assert_eq!(p.observe(1, 150), Some(50));
        p.compacted(50);
        assert_eq!(p.observe(2, 150), None, "nothing new");
        // Someone compacted further by hand.
        p.compacted(400);
        assert_eq!(p.observe(3, 450), None);
        assert_eq!(p.observe(4, 600), Some(500));
    }

    #[test]
    fn off_never_compacts() {
        let mut p = Planner::new(AutoCompaction::Off);
        assert_eq!(p.observe(1 << 40, 1 << 40), None);
        assert_eq!(AutoCompaction::Off.sample_interval(), None);
    }
}
