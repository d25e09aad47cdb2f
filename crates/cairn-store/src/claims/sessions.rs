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
//! a lease is not live any more whatever its slot says, and `Tick` ends
//! it), which needs no lookup; only if that leaves it still more than four
//! times the live count (a session refreshing the same keys again and
//! again) are entries checked against their slots. So a list stays
//! O(live leases) in size at O(1) amortized cost per grant.
//!
//! A list is kept in chunks of [`CHUNK`] entries, not one `Vec`: a worker
//! holding a million leases had a 48 MB vector, and the apply that
//! doubled it copied half of that and faulted in the rest.

use std::collections::BTreeMap;

use super::types::ClaimKey;

/// A list this long or shorter is never compacted.
const MIN_COMPACT_LEN: usize = 64;
/// Entries per chunk of a list.
const CHUNK: usize = 4_096;

/// (deadline, namespace, key) of a lease granted to a session.
type Entry = (u64, u32, ClaimKey);

#[derive(Debug, Clone, Default)]
pub(super) struct SessionLeases {
    by_session: BTreeMap<i64, Held>,
}

#[derive(Debug, Clone, Default)]
struct Held {
    /// (deadline, namespace, key) of every lease granted to the session
    /// since the last compaction, some perhaps ended (stale) or repeated.
    keys: Chunks,
    /// How many of the session's leases are live.
    live: usize,
}

impl SessionLeases {
    /// `session_id` now holds leases on these `(deadline_ms, namespace,
    /// key)` entries; it is `now_ms`. `holds(id, key)` says whether the
    /// session holds a lease on a key (to compact its list). A request's
    /// grants come in one call: one map lookup, one compaction check.
    pub fn add(
        &mut self,
        session_id: i64,
        entries: impl IntoIterator<Item = Entry>,
        now_ms: u64,
        holds: impl Fn(u32, &ClaimKey) -> bool,
    ) {
        let held = self.by_session.entry(session_id).or_default();
        for entry in entries {
            held.keys.push(entry);
            held.live += 1;
        }
        if held.keys.len() <= MIN_COMPACT_LEN || held.keys.len() <= 2 * held.live {
            return;
        }
        held.keys.retain(|(deadline, _, _)| *deadline > now_ms);
        if held.keys.len() > 4 * held.live {
            let mut keys = std::mem::take(&mut held.keys).into_vec();
            keys.retain(|(_, id, key)| holds(*id, key));
            keys.sort_unstable_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
            keys.dedup_by(|a, b| (a.1, &a.2) == (b.1, &b.2));
            held.keys = Chunks::from_vec(keys);
        }
    }

    /// One of the session's leases ended (its entry goes stale).
    pub fn ended(&mut self, session_id: i64) {
        if let Some(held) = self.by_session.get_mut(&session_id) {
            held.live = held.live.saturating_sub(1);
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
                h.keys
                    .into_vec()
                    .into_iter()
                    .map(|(_, id, key)| (id, key))
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

/// A list in chunks of [`CHUNK`] entries: pushing never moves what is
/// already there.
#[derive(Debug, Clone, Default)]
struct Chunks {
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, entry: Entry) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(entry),
            // The first chunk grows as a `Vec` does, so that a session
            // with a few leases holds a few entries' room, not a chunk's
            // (196 KB); the list's later chunks are whole at once.
            _ => {
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(entry);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Keeps the entries `keep` accepts, in order, packed into full chunks
    /// again.
    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let mut kept = Chunks::default();
        for chunk in std::mem::take(&mut self.chunks) {
            for entry in chunk {
                if keep(&entry) {
                    kept.push(entry);
                }
            }
        }
        *self = kept;
    }

    fn into_vec(self) -> Vec<Entry> {
        let mut all = Vec::with_capacity(self.len);
        for chunk in self.chunks {
            all.extend(chunk);
        }
        all
    }

    fn from_vec(entries: Vec<Entry>) -> Chunks {
        let mut chunks = Chunks::default();
        for entry in entries {
            chunks.push(entry);
        }
        chunks
    }
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
                s.add(
                    5,
                    [(now + 10, 1, ClaimKey::U64(now * 10 + k))],
                    now,
                    no_lookup,
                );
            }
            if now >= 10 {
                for _ in 0..10 {
                    s.ended(5);
                }
            }
        }
        assert_eq!(s.live(5), 100);
        assert!(s.by_session[&5].keys.len() <= 2 * 100 + 10);
    }

    use super::*;
    use std::cell::RefCell;
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
            s.add(7, [(1_000, 1, ClaimKey::U64(k))], 0, holds);
            if k % 10 != 0 {
                holding.borrow_mut().remove(&k);
                s.ended(7);
            }
        }
        for _ in 0..5 {
            for k in (0..1000u64).step_by(10) {
                s.ended(7);
                s.add(7, [(1_000, 1, ClaimKey::U64(k))], 0, holds);
            }
        }
        assert_eq!(s.live(7), 100);
        let held = s.by_session[&7].keys.len();
        assert!(held <= 4 * 100 + 1, "list of {held} for 100 live leases");
        let taken = s.take(7);
        let live: Vec<_> = taken.iter().filter(|(id, k)| holds(*id, k)).collect();
        assert_eq!(live.len(), 100);
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "each key once");
        assert_eq!(s.live(7), 0);
        assert!(s.take(7).is_empty());
    }

    #[test]
    fn a_list_over_many_chunks_keeps_its_order_through_retain() {
        let n = 3 * CHUNK + 5;
        let mut c = Chunks::default();
        for i in 0..n as u64 {
            c.push((i, 1, ClaimKey::U64(i)));
        }
        assert_eq!((c.len(), c.chunks.len()), (n, 4));
        assert!(
            c.chunks.iter().all(|ch| ch.capacity() == CHUNK),
            "full chunks"
        );
        c.retain(|(d, _, _)| d % 3 == 0);
        assert_eq!(c.len(), n.div_ceil(3));
        assert!(
            c.chunks.iter().rev().skip(1).all(|ch| ch.len() == CHUNK),
            "packed"
        );
        let all = c.into_vec();
        assert_eq!(all.len(), n.div_ceil(3));
        assert!(all.windows(2).all(|w| w[0].0 + 3 == w[1].0), "in order");
    }

    #[test]
    fn a_short_list_holds_room_for_its_entries_not_a_chunk() {
        let mut c = Chunks::default();
        for i in 0..3u64 {
            c.push((i, 1, ClaimKey::U64(i)));
        }
        assert!(c.chunks[0].capacity() < 16, "{}", c.chunks[0].capacity());
    }

    #[test]
    fn a_session_whose_leases_all_ended_is_forgotten() {
        let mut s = SessionLeases::default();
        s.add(3, [(10, 1, ClaimKey::U64(1))], 0, |_, _| true);
        s.add(3, [(10, 1, ClaimKey::U64(2))], 0, |_, _| true);
        s.ended(3);
        assert_eq!(s.live(3), 1);
        s.ended(3);
        assert!(s.by_session.is_empty());
    }
}
