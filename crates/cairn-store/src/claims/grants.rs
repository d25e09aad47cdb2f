//! The leases one request granted, kept once and shared.
//!
//! Every key a `CanOffload` grants needs three more records besides its
//! slot: an entry in its deadline's bucket (for expiry), one in its
//! session's list (for release) and a lease change (for persistence).
//! Kept per key, as `(namespace, ClaimKey)` tuples, that was ~160 bytes
//! of fresh memory per granted key in three places — at hundreds of
//! thousands of keys a second, a stream of page faults and cache misses
//! on every member. But the keys of one request share their namespace,
//! session and deadline, and a block hash is 8 bytes: one [`Grant`] holds
//! them packed, and all three records point at it.

use std::sync::Arc;

use super::types::ClaimKey;
use super::LeaseChange;

/// Leases one request granted to one session in one namespace, all ending
/// at the same deadline. Immutable once made: a lease that ends early
/// leaves its key here, and readers ask the slot whether it still holds
/// this lease (see `deadlines` and `sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub session_id: i64,
    pub namespace: u32,
    pub deadline_ms: u64,
    pub keys: KeyList,
}

/// Shared by the deadline index, the session's list and the change list.
pub type SharedGrant = Arc<Grant>;

impl Grant {
    /// `(namespace, key, Some((session, deadline)))` for every key: the
    /// lease changes the grant made, in grant order.
    pub fn changes(&self) -> impl ExactSizeIterator<Item = super::LeaseChange> + '_ {
        let lease = Some((self.session_id, self.deadline_ms));
        self.keys
            .iter()
            .map(move |key| (self.namespace, key, lease))
    }
}

/// Lease changes in the order they were made, so a key's last change is
/// its lease now. A request's grants stay one shared [`Grant`] here too
/// (not sorted, not a tuple per key: sorting them was 5 % of an offload's
/// apply, and replaying the log in order needs neither).
///
/// The lease-log row lists them as postcard encodes a `Vec<LeaseChange>`
/// (written by hand, a grant at a time: `cairn-raft`'s `claims_rows`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseChanges {
    parts: Vec<Part>,
    /// Changes in `parts`.
    len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    One(LeaseChange),
    Granted(SharedGrant),
}

/// A run of [`LeaseChanges`]: one change, or a grant's changes.
pub enum LeaseChangesPart<'a> {
    One(&'a LeaseChange),
    Granted(&'a Grant),
}

impl LeaseChanges {
    pub fn push(&mut self, change: LeaseChange) {
        self.parts.push(Part::One(change));
        self.len += 1;
    }

    pub fn push_grant(&mut self, grant: SharedGrant) {
        if !grant.keys.is_empty() {
            self.len += grant.keys.len();
            self.parts.push(Part::Granted(grant));
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The changes in runs, in order (to encode a grant's changes
    /// without building each).
    pub fn parts(&self) -> impl Iterator<Item = LeaseChangesPart<'_>> {
        self.parts.iter().map(|part| match part {
            Part::One(change) => LeaseChangesPart::One(change),
            Part::Granted(grant) => LeaseChangesPart::Granted(grant),
        })
    }

    /// Every change, in order.
    pub fn iter(&self) -> impl Iterator<Item = LeaseChange> + '_ {
        self.parts.iter().flat_map(|part| {
            let (one, grant) = match part {
                Part::One(change) => (Some(change.clone()), None),
                Part::Granted(grant) => (None, Some(grant.changes())),
            };
            one.into_iter().chain(grant.into_iter().flatten())
        })
    }

    /// The latest deadline of a lease these changes grant (0 if none).
    pub fn last_deadline_ms(&self) -> u64 {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Part::One((_, _, lease)) => lease.map(|(_, deadline)| deadline),
                Part::Granted(grant) => Some(grant.deadline_ms),
            })
            .max()
            .unwrap_or(0)
    }
}

/// Claim keys, packed by kind: a namespace's keys are all of one kind, so
/// a list of block hashes takes 8 bytes a key (a `ClaimKey` takes 32).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyList {
    U64(Vec<u64>),
    U128(Vec<u128>),
    /// Byte keys, or keys of more than one kind.
    Any(Vec<ClaimKey>),
}

impl Default for KeyList {
    fn default() -> Self {
        KeyList::U64(Vec::new())
    }
}

impl KeyList {
    /// An empty list with room for `n` keys of `first`'s kind.
    pub fn with_capacity(n: usize, first: Option<&ClaimKey>) -> KeyList {
        match first {
            Some(ClaimKey::U128(_)) => KeyList::U128(Vec::with_capacity(n)),
            Some(ClaimKey::Bytes(_)) => KeyList::Any(Vec::with_capacity(n)),
            _ => KeyList::U64(Vec::with_capacity(n)),
        }
    }

    pub fn push(&mut self, key: &ClaimKey) {
        match (&mut *self, key) {
            (KeyList::U64(keys), ClaimKey::U64(k)) => keys.push(*k),
            (KeyList::U128(keys), ClaimKey::U128(k)) => keys.push(*k),
            (KeyList::Any(keys), key) => keys.push(key.clone()),
            // A key of another kind than the list's: keep them all as
            // `ClaimKey`s (never in practice: a namespace has one kind).
            (list, key) => {
                let mut all: Vec<ClaimKey> = list.iter().collect();
                all.push(key.clone());
                *list = KeyList::Any(all);
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            KeyList::U64(keys) => keys.len(),
            KeyList::U128(keys) => keys.len(),
            KeyList::Any(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back room beyond the keys held, when that is most of it (a
    /// request whose keys were mostly denied).
    pub fn shrink(&mut self) {
        fn shrink<T>(keys: &mut Vec<T>) {
            if keys.capacity() > 2 * keys.len() {
                keys.shrink_to_fit();
            }
        }
        match self {
            KeyList::U64(keys) => shrink(keys),
            KeyList::U128(keys) => shrink(keys),
            KeyList::Any(keys) => shrink(keys),
        }
    }

    pub fn iter(&self) -> KeyIter<'_> {
        KeyIter { list: self, at: 0 }
    }
}

/// The keys of a [`KeyList`], in order.
pub struct KeyIter<'a> {
    list: &'a KeyList,
    at: usize,
}

impl Iterator for KeyIter<'_> {
    type Item = ClaimKey;

    fn next(&mut self) -> Option<ClaimKey> {
        let key = match self.list {
            KeyList::U64(keys) => ClaimKey::U64(*keys.get(self.at)?),
            KeyList::U128(keys) => ClaimKey::U128(*keys.get(self.at)?),
            KeyList::Any(keys) => keys.get(self.at)?.clone(),
        };
        self.at += 1;
        Some(key)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.list.len() - self.at;
        (left, Some(left))
    }
}

impl ExactSizeIterator for KeyIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_packs_one_kind_and_keeps_order_when_kinds_mix() {
        let mut list = KeyList::with_capacity(4, Some(&ClaimKey::U64(1)));
        list.push(&ClaimKey::U64(1));
        list.push(&ClaimKey::U64(2));
        assert!(matches!(list, KeyList::U64(_)));
        list.push(&ClaimKey::U128(3));
        assert!(matches!(list, KeyList::Any(_)));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            vec![ClaimKey::U64(1), ClaimKey::U64(2), ClaimKey::U128(3)]
        );
        let mut wide = KeyList::with_capacity(1, Some(&ClaimKey::U128(9)));
        wide.push(&ClaimKey::U128(9));
        assert!(matches!(wide, KeyList::U128(_)));
        assert_eq!(wide.iter().len(), 1);
    }

    #[test]
    fn lease_changes_list_in_order() {
        let mut changes = LeaseChanges::default();
        changes.push((1, ClaimKey::U64(7), None));
        changes.push_grant(Arc::new(Grant {
            session_id: 3,
            namespace: 1,
            deadline_ms: 50,
            keys: KeyList::U64(vec![7, 8]),
        }));
        changes.push((2, ClaimKey::U128(1), Some((4, 60))));
        let listed: Vec<LeaseChange> = changes.iter().collect();
        assert_eq!(
            listed,
            vec![
                (1, ClaimKey::U64(7), None),
                (1, ClaimKey::U64(7), Some((3, 50))),
                (1, ClaimKey::U64(8), Some((3, 50))),
                (2, ClaimKey::U128(1), Some((4, 60))),
            ]
        );
        assert_eq!((changes.len(), changes.last_deadline_ms()), (4, 60));
    }

    #[test]
    fn a_grant_lists_its_lease_changes_in_order() {
        let grant = Grant {
            session_id: 4,
            namespace: 2,
            deadline_ms: 90,
            keys: KeyList::U64(vec![5, 3]),
        };
        assert_eq!(
            grant.changes().collect::<Vec<_>>(),
            vec![
                (2, ClaimKey::U64(5), Some((4, 90))),
                (2, ClaimKey::U64(3), Some((4, 90)))
            ]
        );
    }
}
