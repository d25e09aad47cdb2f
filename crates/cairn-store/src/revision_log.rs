//! Every retained record's revision with its key, in revision order.
//!
//! Why not a `BTreeMap<Revision, key>`: revisions only grow, so writes
//! append at the end, and a B-tree filled in order leaves its nodes about
//! half full: ~60 bytes a record for a 32-byte entry, one record per
//! revision of history (hundreds of thousands in a member). A sorted
//! `VecDeque` holds the same entries in ~32 bytes plus its spare capacity,
//! appends without a search, and finds a revision by binary search.
//! Compaction, the only removal, rebuilds it in one pass.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::revision::Revision;

#[derive(Debug, Default, Clone)]
pub struct RevisionLog {
    /// Sorted by revision, no revision twice.
    entries: VecDeque<(Revision, Arc<[u8]>)>,
}

impl RevisionLog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where `rev` is, or would go.
    fn position(&self, rev: &Revision) -> usize {
        self.entries.partition_point(|(r, _)| r < rev)
    }

    /// Records `key` at `rev`, replacing what was there. A revision past
    /// the last (every write) is appended; an older one is put in place.
    pub fn insert(&mut self, rev: Revision, key: Arc<[u8]>) {
        if self.entries.back().is_none_or(|(last, _)| *last < rev) {
            self.entries.push_back((rev, key));
            return;
        }
        let at = self.position(&rev);
        match self.entries.get_mut(at) {
            Some(entry) if entry.0 == rev => entry.1 = key,
            _ => self.entries.insert(at, (rev, key)),
        }
    }

    /// Appends without keeping the order, for a restore that lists records
    /// in any order (by key, say: an insert in place would move half the
    /// log each time). [`RevisionLog::restore_order`] must follow before
    /// any other use.
    pub fn push_unordered(&mut self, rev: Revision, key: Arc<[u8]>) {
        self.entries.push_back((rev, key));
    }

    /// Sorts what [`RevisionLog::push_unordered`] appended; of entries at
    /// one revision the last appended stays, as [`RevisionLog::insert`]
    /// would have left it.
    pub fn restore_order(&mut self) {
        let mut entries: Vec<(Revision, Arc<[u8]>)> = std::mem::take(&mut self.entries).into();
        // Stable, and linear on an already sorted log.
        entries.sort_by_key(|(rev, _)| *rev);
        // `dedup_by` drops the later of two equal neighbours: hand its key
        // to the earlier one first.
        entries.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(&mut later.1, &mut earlier.1);
            }
            same
        });
        self.entries = entries.into();
    }

    pub fn get(&self, rev: &Revision) -> Option<&Arc<[u8]>> {
        match self.entries.get(self.position(rev)) {
            Some((r, key)) if r == rev => Some(key),
            _ => None,
        }
    }

    /// The entries at `from` and after, in order.
    pub fn range_from(&self, from: Revision) -> impl Iterator<Item = (&Revision, &Arc<[u8]>)> {
        self.entries
            .range(self.position(&from)..)
            .map(|(r, key)| (r, key))
    }

    /// The entries after `after` (every entry without), in order: where a
    /// walk that stopped at `after` resumes.
    pub fn range_after(
        &self,
        after: Option<Revision>,
    ) -> impl Iterator<Item = (&Revision, &Arc<[u8]>)> {
        let at = after.map_or(0, |rev| self.entries.partition_point(|(r, _)| *r <= rev));
        self.entries.range(at..).map(|(r, key)| (r, key))
    }

    /// Removes the entries at `sorted` (ascending) revisions, in one pass.
    pub fn remove_sorted(&mut self, sorted: &[Revision]) {
        if sorted.is_empty() {
            return;
        }
        let mut next = sorted.iter().peekable();
        self.entries.retain(|(r, _)| {
            while next.next_if(|s| *s < r).is_some() {}
            next.next_if(|s| *s == r).is_none()
        });
        // Compaction may have freed most of it for good.
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64, sub: i64) -> Revision {
        Revision::new(main, sub)
    }

    fn key(k: &str) -> Arc<[u8]> {
        Arc::from(k.as_bytes())
    }

    fn listed(log: &RevisionLog) -> Vec<(i64, i64, String)> {
        log.range_from(rev(0, 0))
            .map(|(r, k)| (r.main, r.sub, String::from_utf8(k.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn appends_inserts_in_order_and_replaces_like_a_map() {
        let mut log = RevisionLog::default();
        log.insert(rev(2, 0), key("a"));
        log.insert(rev(2, 1), key("b"));
        log.insert(rev(5, 0), key("c"));
        // Out of order: put in place.
        log.insert(rev(3, 0), key("d"));
        log.insert(rev(1, 0), key("e"));
        // The same revision again replaces its key.
        log.insert(rev(2, 1), key("f"));
        assert_eq!(
            listed(&log),
            [
                (1, 0, "e".into()),
                (2, 0, "a".into()),
                (2, 1, "f".into()),
                (3, 0, "d".into()),
                (5, 0, "c".into()),
            ]
        );
        assert_eq!(log.len(), 5);
        assert_eq!(log.get(&rev(3, 0)).map(|k| &k[..]), Some(&b"d"[..]));
        assert_eq!(log.get(&rev(4, 0)), None);
        assert_eq!(log.get(&rev(9, 0)), None);
        let from: Vec<i64> = log.range_from(rev(2, 1)).map(|(r, _)| r.main).collect();
        assert_eq!(from, [2, 3, 5]);
        assert_eq!(log.range_from(rev(6, 0)).count(), 0);
        let after: Vec<(i64, i64)> = log
            .range_after(Some(rev(2, 0)))
            .map(|(r, _)| (r.main, r.sub))
            .collect();
        assert_eq!(after, [(2, 1), (3, 0), (5, 0)]);
        // After a revision no entry has: from the next one that has.
        assert_eq!(log.range_after(Some(rev(4, 0))).count(), 1);
        assert_eq!(log.range_after(Some(rev(5, 0))).count(), 0);
        assert_eq!(log.range_after(None).count(), 5);
        let revs: Vec<i64> = log.range_after(None).map(|(r, _)| r.main).collect();
        assert_eq!(revs, [1, 2, 2, 3, 5]);
    }

    #[test]
    fn a_restore_in_any_order_ends_sorted_with_the_last_of_a_revision() {
        let mut log = RevisionLog::default();
        for (main, k) in [(4, "a"), (1, "b"), (3, "c"), (1, "d"), (2, "e")] {
            log.push_unordered(rev(main, 0), key(k));
        }
        log.restore_order();
        assert_eq!(
            listed(&log),
            [
                (1, 0, "d".into()),
                (2, 0, "e".into()),
                (3, 0, "c".into()),
                (4, 0, "a".into()),
            ]
        );
        log.insert(rev(5, 0), key("f"));
        assert_eq!(log.get(&rev(5, 0)).map(|k| &k[..]), Some(&b"f"[..]));
    }

    #[test]
    fn removes_exactly_the_given_revisions() {
        let mut log = RevisionLog::default();
        for main in 1..=10 {
            log.insert(rev(main, 0), key(&main.to_string()));
        }
        // Absent revisions (4.1, 11) are skipped; present ones go.
        log.remove_sorted(&[
            rev(1, 0),
            rev(4, 0),
            rev(4, 1),
            rev(7, 0),
            rev(10, 0),
            rev(11, 0),
        ]);
        let revs: Vec<i64> = log.range_after(None).map(|(r, _)| r.main).collect();
        assert_eq!(revs, [2, 3, 5, 6, 8, 9]);
        log.remove_sorted(&[]);
        assert_eq!(log.len(), 6);
        log.remove_sorted(&[
            rev(2, 0),
            rev(3, 0),
            rev(5, 0),
            rev(6, 0),
            rev(8, 0),
            rev(9, 0),
        ]);
        assert_eq!(log.len(), 0);
    }
}
