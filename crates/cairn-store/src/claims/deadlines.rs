//! Claim lease deadlines, for expiry in deadline order.
//!
//! Why buckets and not a `BTreeSet<(deadline, namespace, key)>`: every
//! lease one `CanOffload` grants has the same deadline (now + TTL), and the
//! set's insert and remove per key were 16 % of an offload's apply (a
//! B-tree walk with key comparisons each). Here a grant appends to its
//! deadline's bucket, and a lease that ends early (converted, released,
//! refreshed) is not looked up at all: its entry goes stale and is skipped
//! when its bucket comes due, by asking the slot whether it still holds a
//! lease with that deadline.
//!
//! Expiry order is canonical, (deadline, namespace, key) as the B-tree
//! had it: a bucket is sorted (and deduplicated) before it is expired
//! from. Replicas must agree on it, because a tick expires at most a
//! bounded number of leases, and a replica restored from a snapshot fills
//! its buckets in another order than one that applied every grant.

use std::collections::BTreeMap;

use super::grants::SharedGrant;
use super::namespace::PREFETCH_AHEAD;
use super::types::ClaimKey;

#[derive(Debug, Clone, Default)]
pub(super) struct Deadlines {
    buckets: BTreeMap<u64, Bucket>,
    /// Live leases (entries not stale), kept by the callers' inserts and
    /// removes.
    live: usize,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Grants ending at this deadline not yet merged into `sorted` (a
    /// grant is merged when its bucket comes due, which most never do:
    /// their leases end first and the bucket is then all stale).
    grants: Vec<SharedGrant>,
    /// Entries of merged grants, sorted by (namespace, key), each once;
    /// some perhaps stale.
    sorted: Vec<(u32, ClaimKey)>,
}

impl Bucket {
    /// Merges the pending grants into `sorted`.
    fn sort(&mut self) {
        if self.grants.is_empty() {
            return;
        }
        for grant in self.grants.drain(..) {
            let id = grant.namespace;
            self.sorted.extend(grant.keys.iter().map(|key| (id, key)));
        }
        self.sorted.sort_unstable();
        self.sorted.dedup();
    }

    /// Every entry, merged or not, each once, in (namespace, key) order.
    fn entries(&self) -> Vec<(u32, ClaimKey)> {
        let mut merged = self.clone();
        merged.sort();
        merged.sorted
    }

    fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.sorted.is_empty()
    }
}

/// Ends the leases [`Deadlines::take_due`] finds due.
///
/// Each lease ends as soon as it is found live, while its slot is still in
/// cache and its page in the TLB, and the slots [`PREFETCH_AHEAD`] entries
/// on are prefetched meanwhile: due keys are random and long cold. Found
/// first and ended after the scan, the leases of a 10,000-lease tick were
/// looked up twice, each a miss, one at a time (criterion
/// `expire_10000_steady_4m`: 4.26 ms, now 2.4).
pub trait DueLeases {
    /// Starts loading what [`end`](Self::end) will read for this entry.
    fn prefetch(&self, id: u32, key: &ClaimKey);
    /// Ends the key's lease if it ends at `deadline_ms`; false when the
    /// entry is stale (the lease ended earlier, or was renewed).
    fn end(&mut self, deadline_ms: u64, id: u32, key: &ClaimKey) -> bool;
}

impl Deadlines {
    /// The grant's leases now end at its deadline (one bucket lookup for
    /// all its keys).
    pub fn insert(&mut self, grant: SharedGrant) {
        if grant.keys.is_empty() {
            return;
        }
        self.live += grant.keys.len();
        self.buckets
            .entry(grant.deadline_ms)
            .or_default()
            .grants
            .push(grant);
    }

    /// A lease ended before its deadline; its entry goes stale.
    pub fn remove(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Number of live leases.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Ends up to `max` live leases due at `now_ms`, in (deadline,
    /// namespace, key) order, through `leases` (which tells a live entry
    /// from a stale one), and returns how many it ended. Stale entries of
    /// the buckets read are dropped, and buckets emptied go.
    pub fn take_due(&mut self, now_ms: u64, max: usize, leases: &mut impl DueLeases) -> usize {
        let mut ended = 0;
        while ended < max {
            let Some(mut entry) = self.buckets.first_entry() else {
                break;
            };
            let deadline = *entry.key();
            if deadline > now_ms {
                break;
            }
            let bucket = entry.get_mut();
            bucket.sort();
            let mut taken = 0;
            for (id, key) in bucket.sorted.iter().take(PREFETCH_AHEAD) {
                leases.prefetch(*id, key);
            }
            for (i, (id, key)) in bucket.sorted.iter().enumerate() {
                if ended >= max {
                    break;
                }
                if let Some((id, key)) = bucket.sorted.get(i + PREFETCH_AHEAD) {
                    leases.prefetch(*id, key);
                }
                taken += 1;
                if leases.end(deadline, *id, key) {
                    ended += 1;
                }
            }
            bucket.sorted.drain(..taken);
            if bucket.is_empty() {
                entry.remove();
            }
        }
        self.live = self.live.saturating_sub(ended);
        ended
    }

    /// The earliest deadline of a live lease.
    pub fn first(&self, is_live: impl Fn(u64, u32, &ClaimKey) -> bool) -> Option<u64> {
        self.buckets
            .iter()
            .find(|(d, b)| {
                b.sorted.iter().any(|(id, key)| is_live(**d, *id, key))
                    || b.grants
                        .iter()
                        .any(|g| g.keys.iter().any(|key| is_live(**d, g.namespace, &key)))
            })
            .map(|(d, _)| *d)
    }

    /// A deadline no live lease ends before: the earliest bucket's, stale
    /// entries included (no lookups, so it may lag the true earliest).
    /// `None` when no bucket is left, so no lease is live.
    pub fn floor(&self) -> Option<u64> {
        self.buckets.keys().next().copied()
    }

    /// Every entry, live or stale, each once, as (deadline, namespace,
    /// key) in that order; the caller tells live from stale (one slot
    /// lookup per entry, which is what this costs).
    pub fn entries(&self) -> impl Iterator<Item = (u64, u32, ClaimKey)> + '_ {
        self.buckets
            .iter()
            .flat_map(|(d, b)| b.entries().into_iter().map(move |(id, key)| (*d, id, key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::grants::{Grant, KeyList};
    use std::collections::BTreeSet;

    /// Records the entries `is_live` calls live as ended.
    struct Check<F> {
        is_live: F,
        ended: Vec<(u32, ClaimKey)>,
    }

    impl<F: Fn(u64, u32, &ClaimKey) -> bool> DueLeases for Check<F> {
        fn prefetch(&self, _: u32, _: &ClaimKey) {}

        fn end(&mut self, deadline_ms: u64, id: u32, key: &ClaimKey) -> bool {
            let live = (self.is_live)(deadline_ms, id, key);
            if live {
                self.ended.push((id, key.clone()));
            }
            live
        }
    }

    /// The leases `take_due` ends, in order.
    fn due(
        d: &mut Deadlines,
        now_ms: u64,
        max: usize,
        is_live: impl Fn(u64, u32, &ClaimKey) -> bool,
    ) -> Vec<(u32, ClaimKey)> {
        let mut check = Check {
            is_live,
            ended: Vec::new(),
        };
        let n = d.take_due(now_ms, max, &mut check);
        assert_eq!(n, check.ended.len());
        check.ended
    }

    fn k(n: u64) -> ClaimKey {
        ClaimKey::U64(n)
    }

    /// A grant of `keys` in namespace `ns` ending at `deadline`.
    fn grant(deadline: u64, ns: u32, keys: &[u64]) -> SharedGrant {
        SharedGrant::new(Grant {
            session_id: 1,
            namespace: ns,
            deadline_ms: deadline,
            keys: KeyList::U64(keys.to_vec()),
        })
    }

    #[test]
    fn due_leases_come_in_deadline_namespace_key_order_skipping_stale_ones() {
        let mut d = Deadlines::default();
        // (deadline, ns, key) in a scrambled order, one repeated.
        for (deadline, ns, key) in [(20, 1, 5), (10, 2, 1), (10, 1, 9), (10, 1, 3), (20, 1, 5)] {
            d.insert(grant(deadline, ns, &[key]));
        }
        // The second grant of (20, 1, 5) refreshed the first: one live.
        d.remove();
        let live: BTreeSet<(u64, u32, ClaimKey)> = [(10, 2, 1), (10, 1, 3), (10, 1, 9), (20, 1, 5)]
            .into_iter()
            .map(|(d, ns, key)| (d, ns, k(key)))
            .collect();
        let is_live = |dl: u64, id: u32, key: &ClaimKey| live.contains(&(dl, id, key.clone()));
        assert_eq!(d.len(), 4);
        assert_eq!(d.first(is_live), Some(10));
        let listed: Vec<(u64, u32, ClaimKey)> = d
            .entries()
            .filter(|(dl, id, key)| is_live(*dl, *id, key))
            .collect();
        assert_eq!(listed, live.iter().cloned().collect::<Vec<_>>());
        assert_eq!(d.entries().count(), 4, "the repeat listed once");

        assert_eq!(due(&mut d, 9, 10, is_live), vec![]);
        assert_eq!(due(&mut d, 25, 2, is_live), vec![(1, k(3)), (1, k(9))]);
        assert_eq!(due(&mut d, 25, 10, is_live), vec![(2, k(1)), (1, k(5))]);
        assert_eq!(due(&mut d, 25, 10, is_live), vec![]);
        assert!(d.buckets.is_empty());
    }

    #[test]
    fn a_stale_entry_is_skipped_and_does_not_count_against_the_bound() {
        let mut d = Deadlines::default();
        d.insert(grant(10, 1, &[1]));
        d.insert(grant(10, 1, &[2, 3]));
        // k(1) was converted to a stored entry: stale.
        d.remove();
        let is_live = |_: u64, _: u32, key: &ClaimKey| *key != k(1);
        assert_eq!(d.first(is_live), Some(10));
        assert_eq!(due(&mut d, 10, 2, is_live), vec![(1, k(2)), (1, k(3))]);
        assert!(d.buckets.is_empty());
        // The two it ended are no longer counted.
        assert_eq!(d.len(), 0);
        let none = |_: u64, _: u32, _: &ClaimKey| false;
        d.insert(grant(30, 1, &[4]));
        d.remove();
        assert_eq!(d.first(none), None);
        assert_eq!(d.len(), 0);
    }
}
