//! One claims namespace: its slots (a lease or a stored entry per key) and
//! the eviction index over stored entries.
//!
//! The eviction index is a `BTreeSet` ordered by (rank descending, touch
//! sequence, key), so the next victim is its first element and every
//! insert, touch and removal costs O(log n). `touch_seq` comes from a
//! per-namespace counter, never a clock: every replica orders the same.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hash};

use serde::{Deserialize, Serialize};

use super::slot_table::Table;
use super::types::*;

/// What a key of a namespace holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    /// A session is storing the block.
    Leased { session_id: i64, deadline_ms: u64 },
    /// Boxed: a lease is 16 bytes, an entry ~100, and every slot of the
    /// map is as big as its largest kind. Millions of leases in 144-byte
    /// buckets made each shard's growth copy and fault in 2.25 times the
    /// memory (serde encodes a box as its content: rows are unchanged).
    Stored(Box<StoredEntry>),
}

impl Slot {
    /// Whether this is a lease that ran out by `now_ms`: no lease any
    /// more, a slot not yet reused or reclaimed (see `deadlines`).
    pub fn is_ended_lease(&self, now_ms: u64) -> bool {
        matches!(self, Slot::Leased { deadline_ms, .. } if *deadline_ms <= now_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    /// Parent this entry was linked to (it was stored when this one was
    /// registered); `None` for a chain root.
    pub parent: Option<ClaimKey>,
    /// Chain depth: the linked parent's depth + 1, or 0.
    pub depth: u32,
    /// Rank for the `Positional` policy.
    pub position: u64,
    /// Entries registered while this one was stored that link to it and
    /// still exist; a `Tail` victim must have none. Persisted, so a
    /// restored replica orders victims exactly as a live one.
    pub children: u32,
    /// When this entry was last registered or touched, in this namespace's
    /// touch sequence.
    pub touch_seq: u64,
}

/// A namespace's persisted scalars (its row in storage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRow {
    pub id: u32,
    pub name: String,
    pub config: NamespaceConfig,
    pub counters: ClaimCounters,
    /// Next touch sequence number to hand out.
    pub next_touch_seq: u64,
}

type EvictKey = (Reverse<u64>, u64, ClaimKey);

/// How far ahead of the key it works on a request prefetches: enough
/// misses in flight to cover memory's latency, near enough that the lines
/// are still in cache when their turn comes.
pub(crate) const PREFETCH_AHEAD: usize = 8;

/// Shards of [`SlotMap`]; at most 256 (a shard index is a byte).
const SLOT_SHARDS: usize = 256;

/// The slots of a namespace, by key.
///
/// Hashed, not ordered: keys are block hashes looked up one by one, and a
/// lookup in a B-tree of millions of random keys costs a cache miss per
/// level (it topped the offload profile). Sharded, so that growing never
/// rehashes the whole map in one apply: a single table of millions of
/// slots stalls every replica for hundreds of milliseconds when it
/// doubles; a shard is 1/256 of that.
///
/// Shards get **unequal shares** of the keys, shard `i` about `2^(i/256)`
/// times the first's: with equal shares every shard doubled within the
/// same few requests (an offload of 1,000 keys spreads ~4 over each), so
/// one apply in a hundred paid for dozens of rehashes and the fresh pages
/// they fault in. With shares spread over a factor of two, the shards'
/// doubling points spread evenly over each doubling of the map: about
/// `256 × keys added / keys held / ln 2` rehashes per request, each of
/// 1/256 of the map. Nothing iterates the map except
/// [`super::Claims::snapshot`], which sorts.
///
/// Hashed with foldhash under fixed seeds, not SipHash under random ones:
/// keys are already hashes, SipHash was 5 % of an offload's apply, and a
/// fixed seed keeps the store free of randomness (the map's order matters
/// to nothing, but memory layout is then the same in every run).
#[derive(Debug, Clone, Default)]
pub struct SlotMap {
    /// One map per key kind, so a slot keeps its key in its own type: a
    /// `u64` block hash and its slot take a 32-byte bucket, where the
    /// `ClaimKey` enum (16-byte aligned for `u128`) made every bucket 64
    /// bytes. The bucket write is a cache miss per granted key, and each
    /// shard's growth copies and faults in every bucket: half the bytes,
    /// half the cost. A namespace uses one of the three.
    u64s: Shards<u64>,
    u128s: Shards<u128>,
    bytes: Shards<Box<[u8]>>,
}

/// The hasher of claims' hash maps: fast, fixed seed.
pub(super) type FixedHash = foldhash::fast::FixedState;

/// Seed of the shard choice; the tables use another, so that the keys of
/// one shard still spread over its buckets (both take a hash's top bits).
const SHARD_SEED: u64 = 0x005e_ed0f_c1a1;

/// Bits of the shard hash that pick a shard through [`shard_table`].
const SHARD_TABLE_BITS: u32 = 16;

/// Shard of each value of a hash's top [`SHARD_TABLE_BITS`] bits: shard
/// `i` gets a run of values as long as its share (see [`SlotMap`]).
fn shard_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let size = 1usize << SHARD_TABLE_BITS;
        let weight = |i: usize| (i as f64 / SLOT_SHARDS as f64).exp2();
        let total: f64 = (0..SLOT_SHARDS).map(weight).sum();
        let mut table = Vec::with_capacity(size);
        let mut below = 0.0;
        for shard in 0..SLOT_SHARDS {
            below += weight(shard);
            // Where this shard's run ends; the last one ends at `size`.
            let end = if shard + 1 == SLOT_SHARDS {
                size
            } else {
                (below / total * size as f64).round() as usize
            };
            table.resize(end.max(table.len()), shard as u8);
        }
        table
    })
}

/// The slots of one key kind in [`SLOT_SHARDS`] maps; none allocated
/// until the first insert.
#[derive(Debug, Clone)]
struct Shards<K> {
    maps: Vec<Table<K>>,
}

impl<K> Default for Shards<K> {
    fn default() -> Self {
        Shards { maps: Vec::new() }
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Shards<K> {
    fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
        let h = FixedHash::with_seed(SHARD_SEED).hash_one(key);
        shard_table()[(h >> (64 - SHARD_TABLE_BITS)) as usize] as usize
    }

    fn map<Q>(&self, key: &Q) -> Option<&Table<K>>
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        self.maps.get(Self::shard_of(key))
    }

    fn map_mut<Q>(&mut self, key: &Q) -> Option<&mut Table<K>>
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        self.maps.get_mut(Self::shard_of(key))
    }

    /// The key's map, allocating the shards on first use.
    fn map_for_insert<Q>(&mut self, key: &Q) -> &mut Table<K>
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        if self.maps.is_empty() {
            self.maps = vec![Table::default(); SLOT_SHARDS];
        }
        &mut self.maps[Self::shard_of(key)]
    }

    fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&Slot>
    where
        K: Borrow<Q>,
    {
        self.map(key)?.get(key)
    }

    fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut Slot>
    where
        K: Borrow<Q>,
    {
        self.map_mut(key)?.get_mut(key)
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<Slot>
    where
        K: Borrow<Q>,
    {
        self.map_mut(key)?.remove(key)
    }

    fn insert(&mut self, key: K, slot: Slot) -> Option<Slot> {
        self.map_for_insert(&key).insert(key, slot)
    }

    /// The key's slot, made by `vacant` if it had none; whether it was.
    fn get_or_insert(
        &mut self,
        key: K,
        vacant: impl FnOnce() -> Slot,
        reclaimable: impl Fn(&Slot) -> bool,
    ) -> (&mut Slot, bool) {
        self.map_for_insert(&key)
            .get_or_insert(key, vacant, reclaimable)
    }

    fn prefetch<Q: Hash + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some(map) = self.map(key) {
            map.prefetch(key);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &Slot)> {
        self.maps.iter().flat_map(|m| m.iter())
    }

    #[cfg(test)]
    fn capacities(&self) -> Vec<usize> {
        self.maps.iter().map(|m| m.capacity()).collect()
    }
}

impl SlotMap {
    pub fn get(&self, key: &ClaimKey) -> Option<&Slot> {
        match key {
            ClaimKey::U64(k) => self.u64s.get(k),
            ClaimKey::U128(k) => self.u128s.get(k),
            ClaimKey::Bytes(k) => self.bytes.get(k.as_slice()),
        }
    }

    pub fn get_mut(&mut self, key: &ClaimKey) -> Option<&mut Slot> {
        match key {
            ClaimKey::U64(k) => self.u64s.get_mut(k),
            ClaimKey::U128(k) => self.u128s.get_mut(k),
            ClaimKey::Bytes(k) => self.bytes.get_mut(k.as_slice()),
        }
    }

    pub fn insert(&mut self, key: ClaimKey, slot: Slot) -> Option<Slot> {
        match key {
            ClaimKey::U64(k) => self.u64s.insert(k, slot),
            ClaimKey::U128(k) => self.u128s.insert(k, slot),
            ClaimKey::Bytes(k) => self.bytes.insert(k.into_boxed_slice(), slot),
        }
    }

    /// The key's slot, made by `vacant` if it had none, and whether it
    /// was made: one probe where a lookup and an insert took two. A shard
    /// that is full drops its `reclaimable` slots before it grows.
    pub fn get_or_insert(
        &mut self,
        key: &ClaimKey,
        vacant: impl FnOnce() -> Slot,
        reclaimable: impl Fn(&Slot) -> bool,
    ) -> (&mut Slot, bool) {
        match key {
            ClaimKey::U64(k) => self.u64s.get_or_insert(*k, vacant, reclaimable),
            ClaimKey::U128(k) => self.u128s.get_or_insert(*k, vacant, reclaimable),
            ClaimKey::Bytes(k) => {
                self.bytes
                    .get_or_insert(k.as_slice().into(), vacant, reclaimable)
            }
        }
    }

    /// Before working on item `i` of a request's `items` (in order, from
    /// 0): prefetches the buckets of the keys [`PREFETCH_AHEAD`] places
    /// on, so that the cache misses of random keys in a big table overlap
    /// instead of each stalling the apply in turn.
    pub fn prefetch_ahead<T>(&self, items: &[T], i: usize, key: impl Fn(&T) -> &ClaimKey) {
        if i == 0 {
            for item in items.iter().take(PREFETCH_AHEAD) {
                self.prefetch(key(item));
            }
        }
        if let Some(item) = items.get(i + PREFETCH_AHEAD) {
            self.prefetch(key(item));
        }
    }

    /// Starts loading the bucket `key` would be in (a hint: never faults).
    pub fn prefetch(&self, key: &ClaimKey) {
        match key {
            ClaimKey::U64(k) => self.u64s.prefetch(k),
            ClaimKey::U128(k) => self.u128s.prefetch(k),
            ClaimKey::Bytes(k) => self.bytes.prefetch(k.as_slice()),
        }
    }

    pub fn remove(&mut self, key: &ClaimKey) -> Option<Slot> {
        match key {
            ClaimKey::U64(k) => self.u64s.remove(k),
            ClaimKey::U128(k) => self.u128s.remove(k),
            ClaimKey::Bytes(k) => self.bytes.remove(k.as_slice()),
        }
    }

    /// Every slot, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (ClaimKey, &Slot)> {
        let u64s = self.u64s.iter().map(|(k, s)| (ClaimKey::U64(*k), s));
        let u128s = self.u128s.iter().map(|(k, s)| (ClaimKey::U128(*k), s));
        let bytes = self
            .bytes
            .iter()
            .map(|(k, s)| (ClaimKey::Bytes(k.to_vec()), s));
        u64s.chain(u128s).chain(bytes)
    }

    /// Slots each shard has room for before it grows (for tests).
    #[cfg(test)]
    fn capacities(&self) -> Vec<usize> {
        let mut caps = self.u64s.capacities();
        caps.extend(self.u128s.capacities());
        caps.extend(self.bytes.capacities());
        caps
    }
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub row: NamespaceRow,
    pub slots: SlotMap,
    /// Stored entries (the capacity counts these).
    pub entries: u64,
    /// Live leases (slots of leases that ran out are not counted: their
    /// deadline's passing counted them as expired).
    pub leases: u64,
    /// Eviction candidates, next victim first.
    evict_order: BTreeSet<EvictKey>,
}

impl Namespace {
    pub fn new(row: NamespaceRow) -> Self {
        Namespace {
            row,
            slots: SlotMap::default(),
            entries: 0,
            leases: 0,
            evict_order: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &NamespaceConfig {
        &self.row.config
    }

    fn index(&mut self, key: &ClaimKey, entry: &StoredEntry) {
        index(&mut self.evict_order, self.row.config.eviction, key, entry);
    }

    fn unindex(&mut self, key: &ClaimKey, entry: &StoredEntry) {
        unindex(&mut self.evict_order, self.row.config.eviction, key, entry);
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.row.next_touch_seq;
        self.row.next_touch_seq += 1;
        seq
    }

    /// Put a slot back while restoring (indexes rebuilt, nothing counted).
    pub fn restore_slot(&mut self, key: ClaimKey, slot: Slot) {
        match &slot {
            Slot::Leased { .. } => self.leases += 1,
            Slot::Stored(e) => {
                self.entries += 1;
                index(&mut self.evict_order, self.row.config.eviction, &key, e);
            }
        }
        self.slots.insert(key, slot);
    }

    /// Remove the key's lease if `which(session, deadline)` holds;
    /// returns its (session, deadline).
    pub fn remove_lease_if(
        &mut self,
        key: &ClaimKey,
        which: impl FnOnce(i64, u64) -> bool,
    ) -> Option<(i64, u64)> {
        match self.slots.get(key) {
            Some(Slot::Leased {
                session_id,
                deadline_ms,
            }) if which(*session_id, *deadline_ms) => {
                let out = (*session_id, *deadline_ms);
                self.slots.remove(key);
                self.leases -= 1;
                Some(out)
            }
            _ => None,
        }
    }

    /// Store a new entry into a free slot (the caller made room). Returns
    /// the parent key whose row changed, if any.
    pub fn insert_entry(&mut self, entry: &RegisterEntry) -> Option<ClaimKey> {
        let mut depth = 0;
        let mut linked = None;
        if let Some(parent_key) = &entry.parent {
            if parent_key != &entry.key {
                let policy = self.row.config.eviction;
                if let Some(Slot::Stored(parent)) = self.slots.get_mut(parent_key) {
                    unindex(&mut self.evict_order, policy, parent_key, parent);
                    parent.children = parent.children.saturating_add(1);
                    depth = parent.depth.saturating_add(1);
                    index(&mut self.evict_order, policy, parent_key, parent);
                    linked = Some(parent_key.clone());
                }
            }
        }
        let stored = StoredEntry {
            value: entry.value.clone(),
            metadata: entry.metadata.clone(),
            parent: linked.clone(),
            depth,
            position: entry.position.unwrap_or(depth as u64),
            children: 0,
            touch_seq: self.next_seq(),
        };
        self.index(&entry.key, &stored);
        self.slots
            .insert(entry.key.clone(), Slot::Stored(Box::new(stored)));
        self.entries += 1;
        linked
    }

    /// Remove a stored entry; returns the parent key whose row changed.
    pub fn remove_entry(&mut self, key: &ClaimKey) -> Option<Option<ClaimKey>> {
        if !matches!(self.slots.get(key), Some(Slot::Stored(_))) {
            return None;
        }
        let Some(Slot::Stored(entry)) = self.slots.remove(key) else {
            return None;
        };
        self.unindex(key, &entry);
        self.entries -= 1;
        let Some(parent_key) = entry.parent else {
            return Some(None);
        };
        let policy = self.row.config.eviction;
        if let Some(Slot::Stored(parent)) = self.slots.get_mut(&parent_key) {
            unindex(&mut self.evict_order, policy, &parent_key, parent);
            parent.children = parent.children.saturating_sub(1);
            index(&mut self.evict_order, policy, &parent_key, parent);
            return Some(Some(parent_key));
        }
        Some(None)
    }

    /// Mark a stored entry as just used; false if not stored.
    pub fn touch(&mut self, key: &ClaimKey) -> bool {
        if !matches!(self.slots.get(key), Some(Slot::Stored(_))) {
            return false;
        }
        let seq = self.next_seq();
        let policy = self.row.config.eviction;
        if let Some(Slot::Stored(entry)) = self.slots.get_mut(key) {
            unindex(&mut self.evict_order, policy, key, entry);
            entry.touch_seq = seq;
            index(&mut self.evict_order, policy, key, entry);
        }
        true
    }

    /// The entry the policy evicts next, if any.
    pub fn next_victim(&self) -> Option<ClaimKey> {
        self.evict_order.iter().next().map(|(_, _, k)| k.clone())
    }

    pub fn stored(&self, key: &ClaimKey) -> Option<&StoredEntry> {
        match self.slots.get(key) {
            Some(Slot::Stored(e)) => Some(e),
            _ => None,
        }
    }
}

/// Rank for eviction, or `None` when the entry is not a candidate.
fn rank(policy: EvictionPolicy, entry: &StoredEntry) -> Option<u64> {
    match policy {
        EvictionPolicy::None => None,
        EvictionPolicy::Tail => (entry.children == 0).then_some(entry.depth as u64),
        EvictionPolicy::Positional => Some(entry.position),
    }
}

fn index(order: &mut BTreeSet<EvictKey>, policy: EvictionPolicy, key: &ClaimKey, e: &StoredEntry) {
    if let Some(r) = rank(policy, e) {
        order.insert((Reverse(r), e.touch_seq, key.clone()));
    }
}

fn unindex(
    order: &mut BTreeSet<EvictKey>,
    policy: EvictionPolicy,
    key: &ClaimKey,
    e: &StoredEntry,
) {
    if let Some(r) = rank(policy, e) {
        order.remove(&(Reverse(r), e.touch_seq, key.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(n: i64) -> Slot {
        Slot::Leased {
            session_id: n,
            deadline_ms: 0,
        }
    }

    #[test]
    fn slot_map_finds_what_it_holds_across_shards() {
        let mut m = SlotMap::default();
        assert_eq!(m.iter().count(), 0);
        for k in 0..2_000u64 {
            assert_eq!(m.insert(ClaimKey::U64(k), lease(k as i64)), None);
        }
        m.insert(ClaimKey::Bytes(b"abc".to_vec()), lease(-1));
        assert_eq!(m.iter().count(), 2_001);
        assert!(m.u64s.maps.iter().all(|s| s.len() > 0), "keys spread");
        assert_eq!(m.get(&ClaimKey::U64(1_234)), Some(&lease(1_234)));
        assert_eq!(m.get(&ClaimKey::Bytes(b"abc".to_vec())), Some(&lease(-1)));
        assert_eq!(m.remove(&ClaimKey::U64(7)), Some(lease(7)));
        assert_eq!(m.get(&ClaimKey::U64(7)), None);
        if let Some(Slot::Leased { deadline_ms, .. }) = m.get_mut(&ClaimKey::U64(8)) {
            *deadline_ms = 99;
        }
        assert_eq!(
            m.get(&ClaimKey::U64(8)),
            Some(&Slot::Leased {
                session_id: 8,
                deadline_ms: 99
            })
        );
        assert_eq!(m.iter().count(), 2_000);
    }
}

#[cfg(test)]
mod slot_map_tests {
    use super::*;

    /// Keys inserted 1,000 per request, like `CanOffload`: the most slots
    /// one request rehashed (the new capacity of each shard that grew),
    /// and the rehashes in all.
    fn rehashes_per_request(map: &mut SlotMap, requests: u64) -> (usize, usize) {
        let mut worst = 0;
        let mut all = 0;
        let mut before = map.capacities();
        for r in 0..requests {
            for k in r * 1_000..(r + 1) * 1_000 {
                // Keys are block hashes: spread them like ones.
                let key = ClaimKey::U128(
                    u128::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
                );
                let lease = Slot::Leased {
                    session_id: 1,
                    deadline_ms: 0,
                };
                map.insert(key, lease);
            }
            let after = map.capacities();
            let grown = before.iter().zip(&after).filter(|(b, a)| a > b);
            worst = worst.max(grown.clone().map(|(_, a)| *a).sum::<usize>());
            all += grown.count();
            before = after;
        }
        (worst, all)
    }

    #[test]
    fn shards_grow_at_different_requests_not_all_at_once() {
        let mut map = SlotMap::default();
        let (worst, all) = rehashes_per_request(&mut map, 1_000);
        // A million keys: every shard doubled about 9 times. With equal
        // shares the shards doubled within the same ~20 requests, and the
        // worst request rehashed ~79,000 slots; here ~21,000.
        assert!(all > 256 * 8, "{all} rehashes");
        assert!(worst <= 30_000, "one request rehashed {worst} slots");
    }

    #[test]
    fn every_shard_takes_a_share_growing_by_index() {
        let table = shard_table();
        assert_eq!(table.len(), 1 << SHARD_TABLE_BITS);
        let mut counts = vec![0usize; SLOT_SHARDS];
        for s in table {
            counts[*s as usize] += 1;
        }
        assert!(
            table.windows(2).all(|w| w[0] <= w[1]),
            "runs in shard order"
        );
        let (first, last) = (counts[0] as f64, counts[SLOT_SHARDS - 1] as f64);
        assert!(
            first > 100.0 && (1.9..2.1).contains(&(last / first)),
            "{first} {last}"
        );
    }

    #[test]
    fn a_lease_slot_with_a_u64_key_fits_in_32_bytes() {
        assert!(std::mem::size_of::<(u64, Slot)>() <= 32);
    }
}
