//! Claim lease deadlines: which leases end when, counted, not listed.
//!
//! Why counts: a lease that runs out is never looked up. Every lease one
//! `CanOffload` grants has the same deadline (now + TTL), session and
//! namespace, so a deadline's bucket keeps how many of each (namespace,
//! session)'s leases ending then are still live. When cluster time passes
//! a deadline, its bucket goes, and its counts become the namespaces'
//! `expired` and leave the namespaces' and sessions' live counts — a few
//! additions per request, however many keys it granted. The slots of the
//! ended leases stay where they are: a slot whose deadline has passed
//! *is* no lease (every reader checks), and a later grant or register of
//! the key reuses it, or a sweep reclaims it (`slot_table`). Ending each
//! lease by its slot had cost a cache miss and a page walk per key on
//! every member, half as much again as granting it (criterion
//! `expire_10000_steady_4m`: 2.15 ms for 10,000 leases).
//!
//! A lease that ends early (converted, released, refreshed) takes one off
//! its (namespace, session)'s count in its deadline's bucket, found by the
//! (session, deadline) its slot holds. The grants stay in their bucket
//! too, as they were made (their keys shared with the session list and
//! the change list), so that the live leases can be listed: an entry is
//! live if its slot still holds a lease of that deadline.

use std::collections::BTreeMap;

use super::grants::SharedGrant;
use super::types::ClaimKey;

#[derive(Debug, Clone, Default)]
pub(super) struct Deadlines {
    buckets: BTreeMap<u64, Bucket>,
    /// Live leases: the sum of every bucket's counts.
    live: usize,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Grants ending at this deadline; some of their keys perhaps ended
    /// early (stale).
    grants: Vec<SharedGrant>,
    /// Live leases ending at this deadline, per (namespace, session):
    /// a handful per bucket (one per request ending at this millisecond).
    holders: Vec<Holder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub namespace: u32,
    pub session_id: i64,
    /// Live leases of this namespace and session ending at the deadline.
    pub live: usize,
}

impl Bucket {
    fn holder(&mut self, namespace: u32, session_id: i64) -> Option<&mut Holder> {
        self.holders
            .iter_mut()
            .find(|h| h.namespace == namespace && h.session_id == session_id)
    }

    /// Every entry, each once, in (namespace, key) order; some perhaps
    /// stale.
    fn entries(&self) -> Vec<(u32, ClaimKey)> {
        let mut entries: Vec<(u32, ClaimKey)> = self
            .grants
            .iter()
            .flat_map(|g| g.keys.iter().map(|key| (g.namespace, key)))
            .collect();
        entries.sort_unstable();
        entries.dedup();
        entries
    }
}

impl Deadlines {
    /// The grant's leases now end at its deadline (one bucket lookup for
    /// all its keys).
    pub fn insert(&mut self, grant: SharedGrant) {
        let n = grant.keys.len();
        if n == 0 {
            return;
        }
        self.live += n;
        let bucket = self.buckets.entry(grant.deadline_ms).or_default();
        match bucket.holder(grant.namespace, grant.session_id) {
            Some(holder) => holder.live += n,
            None => bucket.holders.push(Holder {
                namespace: grant.namespace,
                session_id: grant.session_id,
                live: n,
            }),
        }
        bucket.grants.push(grant);
    }

    /// A live lease of this session in this namespace ending at
    /// `deadline_ms` ended early; its entry goes stale.
    pub fn end(&mut self, deadline_ms: u64, namespace: u32, session_id: i64) {
        let Some(bucket) = self.buckets.get_mut(&deadline_ms) else {
            debug_assert!(false, "no bucket for a live lease ending at {deadline_ms}");
            return;
        };
        if let Some(holder) = bucket.holder(namespace, session_id) {
            if holder.live > 0 {
                holder.live -= 1;
                self.live -= 1;
            }
        }
    }

    /// Number of live leases.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Every lease ending at or before `now_ms` ends: the buckets go, and
    /// `expired` is told each (namespace, session)'s count of leases still
    /// live in them. Returns how many leases ended. Costs a few steps per
    /// grant, never a slot lookup.
    pub fn advance(&mut self, now_ms: u64, mut expired: impl FnMut(Holder)) -> usize {
        let mut ended = 0;
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() > now_ms {
                break;
            }
            for holder in entry.remove().holders {
                if holder.live > 0 {
                    ended += holder.live;
                    expired(holder);
                }
            }
        }
        self.live -= ended;
        ended
    }

    /// The earliest deadline of a live lease.
    pub fn first(&self) -> Option<u64> {
        self.buckets
            .iter()
            .find(|(_, b)| b.holders.iter().any(|h| h.live > 0))
            .map(|(d, _)| *d)
    }

    /// A deadline no live lease ends before: the earliest bucket's, ended
    /// leases included (so it may lag the true earliest). `None` when no
    /// bucket is left, so no lease is live.
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

    fn k(n: u64) -> ClaimKey {
        ClaimKey::U64(n)
    }

    /// A grant of `keys` in namespace `ns` to `session` ending at `deadline`.
    fn grant(deadline: u64, ns: u32, session: i64, keys: &[u64]) -> SharedGrant {
        SharedGrant::new(Grant {
            session_id: session,
            namespace: ns,
            deadline_ms: deadline,
            keys: KeyList::U64(keys.to_vec()),
        })
    }

    fn holder(namespace: u32, session_id: i64, live: usize) -> Holder {
        Holder {
            namespace,
            session_id,
            live,
        }
    }

    /// The holders `advance` reports, in order.
    fn advance(d: &mut Deadlines, now_ms: u64) -> Vec<Holder> {
        let mut expired = Vec::new();
        let n = d.advance(now_ms, |h| expired.push(h));
        assert_eq!(n, expired.iter().map(|h| h.live).sum::<usize>());
        expired
    }

    #[test]
    fn passing_a_deadline_ends_its_live_leases_by_namespace_and_session() {
        let mut d = Deadlines::default();
        d.insert(grant(10, 1, 7, &[1, 2, 3]));
        d.insert(grant(10, 2, 7, &[4]));
        d.insert(grant(10, 1, 7, &[9]));
        d.insert(grant(20, 1, 8, &[5, 6]));
        assert_eq!(d.len(), 7);
        // One of (ns 1, session 7)'s leases ending at 10 was converted.
        d.end(10, 1, 7);
        assert_eq!(d.len(), 6);
        assert_eq!((d.first(), d.floor()), (Some(10), Some(10)));

        assert_eq!(advance(&mut d, 9), vec![]);
        assert_eq!(
            advance(&mut d, 10),
            vec![holder(1, 7, 3), holder(2, 7, 1)],
            "a deadline equal to now has passed"
        );
        assert_eq!(d.len(), 2);
        assert_eq!((d.first(), d.floor()), (Some(20), Some(20)));

        // Both leases ending at 20 end early: nothing left to expire, but
        // the bucket stays until its time (floor lags, first does not).
        d.end(20, 1, 8);
        d.end(20, 1, 8);
        assert_eq!(d.len(), 0);
        assert_eq!((d.first(), d.floor()), (None, Some(20)));
        assert_eq!(advance(&mut d, 30), vec![]);
        assert_eq!(d.floor(), None);
        assert!(d.buckets.is_empty());
    }

    #[test]
    fn an_early_end_of_an_unknown_holder_changes_no_count() {
        let mut d = Deadlines::default();
        d.insert(grant(10, 1, 7, &[1]));
        d.end(10, 1, 99);
        d.end(10, 2, 7);
        assert_eq!(d.len(), 1);
        d.end(10, 1, 7);
        d.end(10, 1, 7);
        assert_eq!(d.len(), 0, "never below zero");
    }

    #[test]
    fn entries_list_each_key_of_a_deadline_once_in_order() {
        let mut d = Deadlines::default();
        d.insert(grant(20, 1, 7, &[5]));
        d.insert(grant(10, 2, 7, &[1]));
        d.insert(grant(10, 1, 7, &[9, 3]));
        // Released and granted again at the same deadline: listed twice.
        d.insert(grant(10, 1, 7, &[3]));
        let listed: Vec<(u64, u32, ClaimKey)> = d.entries().collect();
        assert_eq!(
            listed,
            vec![(10, 1, k(3)), (10, 1, k(9)), (10, 2, k(1)), (20, 1, k(5))]
        );
    }
}
