//! Match hit/miss counters. Matches are reads served by one member without
//! Raft, so these counters are that member's, since it started; they are
//! not replicated state.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cairn_store::claims::MAX_NAMESPACES;

#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Namespace → (keys found, keys missed). Only namespaces that exist
    /// are counted, so the map is bounded by `MAX_NAMESPACES`.
    by_namespace: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl ReadCounters {
    pub fn add(&self, namespace: &str, hits: u64, misses: u64) {
        let mut map = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(namespace) && map.len() >= MAX_NAMESPACES {
            return;
        }
        let entry = map.entry(namespace.to_string()).or_default();
        entry.0 += hits;
        entry.1 += misses;
    }

    pub fn get(&self, namespace: &str) -> (u64, u64) {
        let map = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        map.get(namespace).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_namespace() {
        let r = ReadCounters::default();
        r.add("a", 3, 1);
        r.add("a", 1, 0);
        r.add("b", 0, 2);
        assert_eq!(
            (r.get("a"), r.get("b"), r.get("c")),
            ((4, 1), (0, 2), (0, 0))
        );
    }
}
