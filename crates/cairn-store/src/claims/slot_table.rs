//! One shard of a namespace's slots: an open-addressing hash table with
//! linear probing and the (key, slot) pairs inline in its buckets.
//!
//! Not `hashbrown`: a claims request looks up thousands of random keys in
//! a table of millions, so each lookup is a cache miss, and that miss was
//! the largest single cost of applying `CanOffload`. Here a key's home
//! bucket is an address we can compute ahead of time, so a request
//! [`Table::prefetch`]es the keys a few places ahead of the one it works
//! on and the misses overlap instead of queueing one after another. The
//! pair lives in the bucket itself (a `u64` key and its slot fill 32
//! bytes, two per cache line), so one line answers the lookup where
//! hashbrown reads a control byte and then the bucket.
//!
//! Deletion shifts the following entries back (no tombstones), so a
//! probe ends at the first empty bucket however many keys came and went.
//! The table is deterministic: its layout follows from the keys and the
//! order they came in, never from a random seed.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use super::namespace::{FixedHash, Slot};
use super::spare_buckets::{self, SPARE_MIN_BUCKETS};

/// Buckets of a table's first allocation.
const MIN_BUCKETS: usize = 16;

/// A table grows when an insert would fill more than 3/4 of its buckets.
/// Linear probing for an absent key (every fresh grant) costs about
/// `(1 + 1 / (1 - load)²) / 2` buckets: 2.5 at half full, 8.5 at 3/4,
/// 13 at 4/5 — and the buckets are adjacent, two per cache line.
fn max_len(buckets: usize) -> usize {
    buckets / 4 * 3
}

/// Seed of the bucket hash; the shard choice uses another, so that the
/// keys of one shard still spread over its buckets.
const BUCKET_SEED: u64 = 0x0b0c_4e75;

#[derive(Debug, Clone)]
pub(super) struct Table<K> {
    /// A power of two many, or none before the first insert.
    buckets: Vec<Option<(K, Slot)>>,
    /// Occupied buckets.
    len: usize,
    /// `64 - log2(buckets)`: a hash's top bits pick the home bucket (the
    /// best-mixed bits of foldhash's multiply).
    shift: u32,
    /// The next, twice as large array was ordered from [`spare_buckets`].
    ordered: bool,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            buckets: Vec::new(),
            len: 0,
            shift: 64,
            ordered: false,
        }
    }
}

/// Where a probe for a key ended.
enum Probe {
    /// The key's bucket.
    Found(usize),
    /// The empty bucket where the key would go.
    Vacant(usize),
}

impl<K: Hash + Eq + Send + 'static> Table<K> {
    fn home<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        let hash = FixedHash::with_seed(BUCKET_SEED).hash_one(key);
        // `shift` is 64 only while there are no buckets (callers check).
        (hash >> self.shift) as usize
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// Probes from the key's home bucket; the table has buckets.
    fn probe<Q>(&self, key: &Q) -> Probe
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mask = self.mask();
        let mut at = self.home(key);
        // Ends: at most 3/4 of the buckets are occupied.
        loop {
            match &self.buckets[at] {
                None => return Probe::Vacant(at),
                Some((k, _)) if k.borrow() == key => return Probe::Found(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    fn find<Q>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.len == 0 {
            return None;
        }
        match self.probe(key) {
            Probe::Found(at) => Some(at),
            Probe::Vacant(_) => None,
        }
    }

    /// Asks the CPU to fetch the key's home bucket into cache, so that a
    /// lookup a little later finds it there. Changes nothing: a table
    /// that grows in between only makes the hint useless.
    #[inline]
    pub fn prefetch<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        if !self.buckets.is_empty() {
            prefetch_read(&self.buckets[self.home(key)]);
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&Slot>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self.find(key)?;
        self.buckets[at].as_ref().map(|(_, slot)| slot)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut Slot>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self.find(key)?;
        self.buckets[at].as_mut().map(|(_, slot)| slot)
    }

    pub fn insert(&mut self, key: K, slot: Slot) -> Option<Slot> {
        self.reserve_one();
        match self.probe(&key) {
            Probe::Found(at) => {
                let (_, old) = self.buckets[at]
                    .as_mut()
                    .expect("probed bucket is occupied");
                Some(std::mem::replace(old, slot))
            }
            Probe::Vacant(at) => {
                self.buckets[at] = Some((key, slot));
                self.len += 1;
                self.order_spare();
                None
            }
        }
    }

    /// The key's slot, made by `vacant` if it had none; whether it was.
    ///
    /// `reclaimable` tells slots that hold nothing any more (leases that
    /// ran out: see `deadlines`). When the table is full, they go first,
    /// in one sequential pass, and it grows only if that left it more
    /// than half full (so a pass comes at most once per `buckets / 4`
    /// inserts, as cheap per insert as growing).
    pub fn get_or_insert(
        &mut self,
        key: K,
        vacant: impl FnOnce() -> Slot,
        reclaimable: impl Fn(&Slot) -> bool,
    ) -> (&mut Slot, bool) {
        if self.len + 1 > max_len(self.buckets.len()) {
            self.sweep(&reclaimable);
            if self.len + 1 > self.buckets.len() / 2 {
                self.grow();
            }
        }
        let (at, fresh) = match self.probe(&key) {
            Probe::Found(at) => (at, false),
            Probe::Vacant(at) => {
                self.buckets[at] = Some((key, vacant()));
                self.len += 1;
                self.order_spare();
                (at, true)
            }
        };
        let (_, slot) = self.buckets[at]
            .as_mut()
            .expect("probed bucket is occupied");
        (slot, fresh)
    }

    /// Removes every reclaimable entry. An entry shifted back into a
    /// bucket just emptied is looked at again; an entry shifted from the
    /// table's start to its end (a run wrapping around) was looked at
    /// already. Each step moves on or removes one: at most `buckets +
    /// len` steps.
    fn sweep(&mut self, reclaimable: &impl Fn(&Slot) -> bool) {
        let mut at = 0;
        while at < self.buckets.len() {
            match &self.buckets[at] {
                Some((_, slot)) if reclaimable(slot) => {
                    self.remove_at(at);
                }
                _ => at += 1,
            }
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<Slot>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let at = self.find(key)?;
        Some(self.remove_at(at))
    }

    /// Empties an occupied bucket and shifts back every entry of the run
    /// after it that may sit there: one whose home is not between the
    /// hole and itself. The run ends at the first empty bucket.
    fn remove_at(&mut self, mut hole: usize) -> Slot {
        let (_, slot) = self.buckets[hole]
            .take()
            .expect("removing an occupied bucket");
        self.len -= 1;
        let mask = self.mask();
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let Some((k, _)) = &self.buckets[at] else {
                break;
            };
            let home = self.home(k);
            let from_home = at.wrapping_sub(home) & mask;
            let from_hole = at.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.buckets[hole] = self.buckets[at].take();
                hole = at;
            }
        }
        slot
    }

    /// Room for one more entry (it may already be there: then the table
    /// grew a little early, which changes nothing but memory).
    fn reserve_one(&mut self) {
        if self.len + 1 > max_len(self.buckets.len()) {
            self.grow();
        }
    }

    /// Past 5/8 full (it grows at 3/4), a big table orders its next array
    /// made ahead, once ([`spare_buckets`]).
    fn order_spare(&mut self) {
        let buckets = self.buckets.len();
        if !self.ordered && buckets >= SPARE_MIN_BUCKETS && self.len > buckets / 8 * 5 {
            // Ordered or over budget: either way, ask once per size.
            spare_buckets::order::<K>(buckets * 2);
            self.ordered = true;
        }
    }

    /// Twice the buckets, every entry moved to its new place.
    fn grow(&mut self) {
        let buckets = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let spare = if self.ordered {
            spare_buckets::take::<K>(buckets)
        } else {
            None
        };
        self.ordered = false;
        let fresh = spare.unwrap_or_else(|| {
            let mut fresh = Vec::with_capacity(buckets);
            fresh.resize_with(buckets, || None);
            fresh
        });
        let old = std::mem::replace(&mut self.buckets, fresh);
        self.shift = 64 - buckets.trailing_zeros();
        let mask = self.mask();
        for (key, slot) in old.into_iter().flatten() {
            let mut at = self.home(&key);
            while self.buckets[at].is_some() {
                at = (at + 1) & mask;
            }
            self.buckets[at] = Some((key, slot));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Slot)> {
        self.buckets.iter().flatten().map(|(k, s)| (k, s))
    }

    /// Entries it holds before the next insert grows it.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        max_len(self.buckets.len())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[inline]
fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and reads nothing
    // into the program; SSE is part of every x86_64 target.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lease(n: i64) -> Slot {
        Slot::Leased {
            session_id: n,
            deadline_ms: n as u64,
        }
    }

    /// splitmix64, so keys spread like block hashes.
    fn mix(n: u64) -> u64 {
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Every entry is reachable from its home bucket without crossing an
    /// empty one (what removal's back-shift must keep true).
    fn check_runs<K: Hash + Eq + Clone + Send + std::fmt::Debug + 'static>(t: &Table<K>) {
        assert_eq!(t.iter().count(), t.len);
        if t.buckets.is_empty() {
            return;
        }
        let mask = t.mask();
        for (at, bucket) in t.buckets.iter().enumerate() {
            if let Some((k, _)) = bucket {
                let mut i = t.home(k);
                while i != at {
                    assert!(t.buckets[i].is_some(), "{k:?} cut off from its home");
                    i = (i + 1) & mask;
                }
            }
        }
    }

    #[test]
    fn behaves_as_a_map_through_inserts_and_removals() {
        let mut table: Table<u64> = Table::default();
        let mut model: HashMap<u64, Slot> = HashMap::new();
        // Small key range: keys collide, repeat, go and come back.
        for step in 0..20_000u64 {
            let key = mix(step) % 3_000;
            match mix(step ^ 0xfeed) % 4 {
                0 => assert_eq!(table.remove(&key), model.remove(&key), "remove {key}"),
                1 => assert_eq!(
                    table.insert(key, lease(step as i64)),
                    model.insert(key, lease(step as i64))
                ),
                2 => {
                    let (slot, fresh) = table.get_or_insert(key, || lease(-1), |_| false);
                    assert_eq!(fresh, !model.contains_key(&key));
                    assert_eq!(slot, model.entry(key).or_insert(lease(-1)));
                }
                _ => assert_eq!(table.get(&key), model.get(&key)),
            }
            if step % 997 == 0 {
                check_runs(&table);
            }
        }
        check_runs(&table);
        assert_eq!(table.len(), model.len());
        for (k, slot) in &model {
            assert_eq!(table.get(k), Some(slot));
        }
    }

    #[test]
    fn removal_keeps_runs_that_wrap_around_the_end() {
        let mut table: Table<u64> = Table::default();
        table.reserve_one();
        assert_eq!(table.buckets.len(), MIN_BUCKETS);
        // Keys whose home is the last bucket: they take it and then the
        // first buckets, a run across the end.
        let last: Vec<u64> = (0..)
            .map(mix)
            .filter(|k| table.home(k) == MIN_BUCKETS - 1)
            .take(4)
            .collect();
        for (n, k) in last.iter().enumerate() {
            table.insert(*k, lease(n as i64));
        }
        assert!(table.buckets[2].is_some(), "the run wraps to bucket 2");
        assert_eq!(table.remove(&last[0]), Some(lease(0)));
        check_runs(&table);
        assert_eq!(table.remove(&last[2]), Some(lease(2)));
        check_runs(&table);
        assert_eq!(table.get(&last[1]), Some(&lease(1)));
        assert_eq!(table.get(&last[3]), Some(&lease(3)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn grows_past_three_quarters_and_keeps_every_entry() {
        let mut table: Table<u64> = Table::default();
        for n in 0..100_000u64 {
            table.insert(mix(n), lease(n as i64));
            assert!(table.len() <= table.capacity());
        }
        assert_eq!(table.buckets.len(), 1 << 18);
        check_runs(&table);
        for n in 0..100_000u64 {
            assert_eq!(table.get(&mix(n)), Some(&lease(n as i64)));
        }
    }

    #[test]
    fn a_full_table_drops_reclaimable_entries_before_it_grows() {
        let mut table: Table<u64> = Table::default();
        // Sessions below 0 mark reclaimable slots.
        let reclaimable =
            |slot: &Slot| matches!(slot, Slot::Leased { session_id, .. } if *session_id < 0);
        let n = 3 * 1024;
        // Filled by inserts that reclaim nothing (else each time it is
        // full the sweep would empty it).
        for k in 0..n {
            table.get_or_insert(mix(k), || lease(-(k as i64) - 1), |_| false);
        }
        let buckets = table.buckets.len();
        assert_eq!(table.len(), n as usize);
        // Filling it again with live entries reuses the reclaimed room:
        // the first insert past 3/4 sweeps, and the table stays its size.
        for k in n..2 * n {
            let (_, fresh) = table.get_or_insert(mix(k), || lease(k as i64), reclaimable);
            assert!(fresh);
        }
        assert_eq!(table.buckets.len(), buckets, "swept instead of grown");
        check_runs(&table);
        for k in 0..n {
            assert_eq!(table.get(&mix(k)), None, "{k} reclaimed");
        }
        for k in n..2 * n {
            assert_eq!(table.get(&mix(k)), Some(&lease(k as i64)));
        }
        // Live entries beyond half the buckets: the next full table grows.
        for k in 2 * n..3 * n {
            table.get_or_insert(mix(k), || lease(k as i64), reclaimable);
        }
        assert_eq!(table.buckets.len(), 2 * buckets);
        assert_eq!(table.len(), 2 * n as usize);
        check_runs(&table);
    }

    /// A key type of this test alone: the spare pool is process-wide and
    /// keyed by type, so other tests' tables cannot take its spares.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct SpareTestKey(u64);

    #[test]
    fn a_big_table_orders_its_next_array_and_grows_into_it() {
        use crate::claims::spare_buckets::{make_one_spare, spares_taken};
        use std::time::Duration;
        let mut table: Table<SpareTestKey> = Table::default();
        let mut n = 0u64;
        // Fill to just past 5/8 of SPARE_MIN_BUCKETS buckets: one order.
        while table.buckets.len() < SPARE_MIN_BUCKETS || table.len <= SPARE_MIN_BUCKETS / 8 * 5 {
            table.insert(SpareTestKey(mix(n)), lease(n as i64));
            n += 1;
        }
        assert!(table.ordered);
        assert_eq!(table.buckets.len(), SPARE_MIN_BUCKETS);
        // The maker (the server's thread) makes it; other tests may have
        // ordered too, so make until ours is among those made.
        while make_one_spare(Duration::from_millis(10)) {}
        let taken = spares_taken();
        while table.buckets.len() == SPARE_MIN_BUCKETS {
            table.insert(SpareTestKey(mix(n)), lease(n as i64));
            n += 1;
        }
        assert!(spares_taken() > taken, "the growth took the spare");
        assert!(!table.ordered);
        assert_eq!(table.len as u64, n);
        for i in 0..n {
            assert_eq!(table.get(&SpareTestKey(mix(i))), Some(&lease(i as i64)));
        }
        check_runs(&table);
    }

    #[test]
    fn without_a_spare_made_a_table_grows_on_its_own() {
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        struct Unmade(u64);
        let mut table: Table<Unmade> = Table::default();
        // No maker runs for this key type: the order stays unmade, the
        // growth allocates, and the order is dropped.
        for i in 0..(SPARE_MIN_BUCKETS as u64) {
            table.insert(Unmade(mix(i)), lease(i as i64));
        }
        assert_eq!(table.buckets.len(), SPARE_MIN_BUCKETS * 2);
        for i in 0..(SPARE_MIN_BUCKETS as u64) {
            assert!(table.get(&Unmade(mix(i))).is_some());
        }
    }

    #[test]
    fn byte_keys_are_found_by_slice() {
        let mut table: Table<Box<[u8]>> = Table::default();
        table.insert(b"abc".as_slice().into(), lease(1));
        assert_eq!(table.get(b"abc".as_slice()), Some(&lease(1)));
        table.prefetch(b"abc".as_slice());
        assert_eq!(table.remove(b"abc".as_slice()), Some(lease(1)));
        assert_eq!(table.get(b"abc".as_slice()), None);
        // Prefetching in an empty table is allowed and does nothing.
        table.prefetch(b"zzz".as_slice());
    }
}
