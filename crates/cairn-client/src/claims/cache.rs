//! A bounded, least-recently-used cache of keys this client knows are
//! stored (with their value and metadata), so repeated `can_offload` and
//! `match_*` calls for hot blocks skip the server.
//!
//! It is a hint: an entry removed or evicted on the server by someone else
//! stays here until it is evicted locally. Blocks are content-addressed, so
//! "stored once" rarely becomes false; deployments that remove blocks from
//! several clients should keep the cache off (the default).

use std::collections::{BTreeMap, HashMap};

use super::types::ClaimKey;

#[derive(Debug)]
struct Cached {
    value: Vec<u8>,
    metadata: Vec<u8>,
    /// Its place in `by_use`.
    used: u64,
}

#[derive(Debug)]
pub struct StoredCache {
    /// Most entries kept; 0 disables the cache.
    capacity: usize,
    entries: HashMap<ClaimKey, Cached>,
    /// Use sequence number → key, oldest first: the eviction order.
    by_use: BTreeMap<u64, ClaimKey>,
    /// Next use sequence number.
    next_use: u64,
}

impl StoredCache {
    pub fn new(capacity: usize) -> Self {
        StoredCache {
            capacity,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            next_use: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value and metadata of a cached key, marking it used.
    pub fn get(&mut self, key: &ClaimKey) -> Option<(Vec<u8>, Vec<u8>)> {
        let seq = self.next_use;
        let c = self.entries.get_mut(key)?;
        self.by_use.remove(&c.used);
        c.used = seq;
        self.by_use.insert(seq, key.clone());
        self.next_use += 1;
        Some((c.value.clone(), c.metadata.clone()))
    }

    pub fn contains(&self, key: &ClaimKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Remember a stored key, evicting the least recently used beyond
    /// capacity.
    pub fn insert(&mut self, key: ClaimKey, value: Vec<u8>, metadata: Vec<u8>) {
        if self.capacity == 0 {
            return;
        }
        let used = self.next_use;
        self.next_use += 1;
        if let Some(old) = self.entries.insert(
            key.clone(),
            Cached {
                value,
                metadata,
                used,
            },
        ) {
            self.by_use.remove(&old.used);
        }
        self.by_use.insert(used, key);
        while self.entries.len() > self.capacity {
            let Some((_, victim)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
    }

    pub fn remove(&mut self, key: &ClaimKey) {
        if let Some(c) = self.entries.remove(key) {
            self.by_use.remove(&c.used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: u64) -> ClaimKey {
        ClaimKey::U64(v)
    }

    #[test]
    fn least_recently_used_goes_first_and_capacity_holds() {
        let mut c = StoredCache::new(2);
        c.insert(k(1), b"a".to_vec(), vec![]);
        c.insert(k(2), b"b".to_vec(), vec![]);
        assert_eq!(c.get(&k(1)), Some((b"a".to_vec(), vec![])));
        c.insert(k(3), b"c".to_vec(), vec![]);
        assert!(c.contains(&k(1)) && c.contains(&k(3)));
        assert!(!c.contains(&k(2)), "2 was least recently used");
        assert_eq!(c.len(), 2);
        // Re-inserting refreshes, never duplicates.
        c.insert(k(1), b"a2".to_vec(), vec![]);
        c.insert(k(4), b"d".to_vec(), vec![]);
        assert_eq!(c.len(), 2);
        assert!(c.contains(&k(1)) && c.contains(&k(4)));
        assert_eq!(c.by_use.len(), 2);
        c.remove(&k(1));
        assert!(!c.contains(&k(1)));
        assert_eq!(c.by_use.len(), 1);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = StoredCache::new(0);
        c.insert(k(1), vec![], vec![]);
        assert!(c.is_empty());
        assert_eq!(c.get(&k(1)), None);
    }
}
