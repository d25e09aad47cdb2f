//! Claim leases by the session holding them, to release them all in the
//! apply that ends the session.
//!
//! Why lists and not a hash set per session: a set insert when a lease is
//! granted and a remove when it ends were two cache misses per key (a set
//! of every live lease, keyed by random block hashes), as many as the slot
//! map itself costs. A grant appends to its session's list instead, and a
//! lease that ends leaves its entry stale; only a count of the session's
//! live leases changes. Releasing checks each entry against its slot.
//!
//! A list compacts itself when it is more than twice the live count:
//! first by time alone, dropping entries whose deadline has passed (such
//! a lease is not live any more whatever its slot says: time's passing
//! ended it), which needs no lookup; only if that leaves it still more than four
//! times the live count (a session refreshing the same keys again and
//! again) are entries checked against their slots. So a list stays
//! O(live leases) in size at O(1) amortized cost per grant.
//!
//! A list holds the session's [`Grant`]s, not keys: one entry per request,
//! its keys packed and shared with the deadline index.

use std::collections::BTreeMap;

use super::grants::{Grant, KeyList, SharedGrant};
use super::types::ClaimKey;

/// A list of this many keys or fewer is never compacted.
const MIN_COMPACT_LEN: usize = 64;

#[derive(Debug, Clone, Default)]
pub(super) struct SessionLeases {
    by_session: BTreeMap<i64, Held>,
}

#[derive(Debug, Clone, Default)]
struct Held {
    /// Every grant to the session since the last compaction; some of
    /// their keys perhaps ended (stale) or granted again later.
    grants: Vec<SharedGrant>,
    /// Keys in `grants`.
    len: usize,
    /// How many of the session's leases are live.
    live: usize,
}

impl SessionLeases {
    /// The grant's session now holds leases on its keys; it is `now_ms`.
    /// `holds(id, key)` says whether the session holds a lease on a key
    /// (to compact its list).
    pub fn add(&mut self, grant: SharedGrant, now_ms: u64, holds: impl Fn(u32, &ClaimKey) -> bool) {
        let n = grant.keys.len();
        if n == 0 {
            return;
        }
        let session_id = grant.session_id;
        let held = self.by_session.entry(session_id).or_default();
        held.grants.push(grant);
        held.len += n;
        held.live += n;
        if held.len <= MIN_COMPACT_LEN || held.len <= 2 * held.live {
            return;
        }
        held.grants.retain(|g| g.deadline_ms > now_ms);
        held.len = held.grants.iter().map(|g| g.keys.len()).sum();
        if held.len > 4 * held.live {
            let mut keys: Vec<(u64, u32, ClaimKey)> = held
                .grants
                .iter()
                .flat_map(|g| g.keys.iter().map(|key| (g.deadline_ms, g.namespace, key)))
                .filter(|(_, id, key)| holds(*id, key))
                .collect();
            keys.sort_unstable_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
            keys.dedup_by(|a, b| (a.1, &a.2) == (b.1, &b.2));
            held.len = keys.len();
            held.grants = regroup(session_id, keys);
        }
    }

    /// `count` of the session's leases ended (their entries go stale).
    pub fn ended(&mut self, session_id: i64, count: usize) {
        if let Some(held) = self.by_session.get_mut(&session_id) {
            held.live = held.live.saturating_sub(count);
            if held.live == 0 {
                self.by_session.remove(&session_id);
            }
        }
    }

    /// The session ended: every entry it had, stale ones included (check
    /// each against its slot), each key at most once.
    pub fn take(&mut self, session_id: i64) -> Vec<(u32, ClaimKey)> {
        let mut keys: Vec<(u32, ClaimKey)> = self
            .by_session
            .remove(&session_id)
            .map(|h| {
                h.grants
                    .iter()
                    .flat_map(|g| g.keys.iter().map(|key| (g.namespace, key)))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Live leases of the session.
    pub fn live(&self, session_id: i64) -> usize {
        self.by_session.get(&session_id).map_or(0, |h| h.live)
    }
}

/// `(deadline, namespace, key)` entries as grants, one per deadline and
/// namespace.
pub(super) fn regroup(session_id: i64, mut keys: Vec<(u64, u32, ClaimKey)>) -> Vec<SharedGrant> {
    keys.sort_by_key(|(deadline, id, _)| (*deadline, *id));
    let mut grants: Vec<SharedGrant> = Vec::new();
    let mut at = 0;
    while at < keys.len() {
        let (deadline_ms, namespace, _) = keys[at];
        let run = keys[at..]
            .iter()
            .take_while(|(d, id, _)| (*d, *id) == (deadline_ms, namespace))
            .count();
        let mut list = KeyList::with_capacity(run, Some(&keys[at].2));
        for (_, _, key) in &keys[at..at + run] {
            list.push(key);
        }
        grants.push(SharedGrant::new(Grant {
            session_id,
            namespace,
            deadline_ms,
            keys: list,
        }));
        at += run;
    }
    grants
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_past_their_deadline_go_without_a_slot_lookup() {
        let mut s = SessionLeases::default();
        let no_lookup = |_: u32, _: &ClaimKey| panic!("looked up");
        // Leases granted each ms for 10 ms, expiring after 10 ms; each
        // ends (ticks) when due.
        for now in 0..1_000u64 {
            for k in 0..10 {
                s.add(grant(5, now + 10, &[now * 10 + k]), now, no_lookup);
            }
            if now >= 10 {
                for _ in 0..10 {
                    s.ended(5, 1);
                }
            }
        }
        assert_eq!(s.live(5), 100);
        assert!(s.by_session[&5].len <= 2 * 100 + 10);
    }

    use super::*;
    use std::cell::RefCell;

    /// A grant to `session` of `keys` in namespace 1, ending at `deadline`.
    fn grant(session: i64, deadline: u64, keys: &[u64]) -> SharedGrant {
        SharedGrant::new(Grant {
            session_id: session,
            namespace: 1,
            deadline_ms: deadline,
            keys: KeyList::U64(keys.to_vec()),
        })
    }

    #[test]
    fn regrouping_makes_one_grant_per_deadline_and_namespace() {
        let grants = regroup(
            9,
            vec![
                (20, 1, ClaimKey::U64(4)),
                (10, 2, ClaimKey::U64(3)),
                (10, 1, ClaimKey::U64(2)),
                (20, 1, ClaimKey::U64(1)),
            ],
        );
        let got: Vec<(u64, u32, Vec<ClaimKey>)> = grants
            .iter()
            .map(|g| (g.deadline_ms, g.namespace, g.keys.iter().collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (10, 1, vec![ClaimKey::U64(2)]),
                (10, 2, vec![ClaimKey::U64(3)]),
                (20, 1, vec![ClaimKey::U64(4), ClaimKey::U64(1)]),
            ]
        );
        assert!(grants.iter().all(|g| g.session_id == 9));
    }
    use std::collections::BTreeSet;

    #[test]
    fn lists_stay_near_the_live_count_and_release_every_live_lease() {
        let holding: RefCell<BTreeSet<u64>> = RefCell::default();
        let holds = |_: u32, key: &ClaimKey| match key {
            ClaimKey::U64(k) => holding.borrow().contains(k),
            _ => false,
        };
        let mut s = SessionLeases::default();
        // Grant 0..1000, end every lease but the multiples of 10, and
        // refresh those (end + grant again) a few times.
        // All deadlines lie ahead: only the slot check can compact.
        for k in 0..1000u64 {
            holding.borrow_mut().insert(k);
            s.add(grant(7, 1_000, &[k]), 0, holds);
            if k % 10 != 0 {
                holding.borrow_mut().remove(&k);
                s.ended(7, 1);
            }
        }
        for _ in 0..5 {
            for k in (0..1000u64).step_by(10) {
                s.ended(7, 1);
                s.add(grant(7, 1_000, &[k]), 0, holds);
            }
        }
        assert_eq!(s.live(7), 100);
        let held = s.by_session[&7].len;
        assert!(held <= 4 * 100 + 1, "list of {held} for 100 live leases");
        let taken = s.take(7);
        let live: Vec<_> = taken.iter().filter(|(id, k)| holds(*id, k)).collect();
        assert_eq!(live.len(), 100);
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "each key once");
        assert_eq!(s.live(7), 0);
        assert!(s.take(7).is_empty());
    }

    #[test]
    fn a_session_whose_leases_all_ended_is_forgotten() {
        let mut s = SessionLeases::default();
        s.add(grant(3, 10, &[1]), 0, |_, _| true);
        s.add(grant(3, 10, &[2]), 0, |_, _| true);
        s.ended(3, 1);
        assert_eq!(s.live(3), 1);
        s.ended(3, 1);
        assert!(s.by_session.is_empty());
    }
}
