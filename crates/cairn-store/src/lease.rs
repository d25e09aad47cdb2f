//! Leases: a TTL, a deadline in cluster time, and the keys attached.
//!
//! Deadlines are kept in an ordered index so expiring the due leases costs
//! O(log n) each, whatever the number of live leases.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Smallest TTL granted; a shorter request is raised to this, as etcd does
/// (it would otherwise expire during an ordinary leader election).
pub const MIN_LEASE_TTL_SECS: i64 = 2;
/// Largest TTL accepted (etcd's limit).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub id: i64,
    /// TTL granted, in seconds.
    pub ttl_secs: i64,
    /// Cluster time (ms) at which the lease expires unless kept alive.
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub record: LeaseRecord,
    /// Keys currently attached; derived from the keyspace, not persisted.
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Leases {
    by_id: BTreeMap<i64, Lease>,
    by_deadline: BTreeSet<(u64, i64)>,
}

impl Leases {
    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.by_id.keys().copied()
    }

    pub fn records(&self) -> impl Iterator<Item = &LeaseRecord> + '_ {
        self.by_id.values().map(|l| &l.record)
    }

    pub fn insert(&mut self, record: LeaseRecord) {
        self.by_deadline.insert((record.deadline_ms, record.id));
        self.by_id.insert(
            record.id,
            Lease {
                record,
                keys: BTreeSet::new(),
            },
        );
    }

    pub fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(lease.record.deadline_ms, id));
        Some(lease)
    }

    pub fn set_deadline(&mut self, id: i64, deadline_ms: u64) -> bool {
        let Some(lease) = self.by_id.get_mut(&id) else {
            return false;
        };
        self.by_deadline.remove(&(lease.record.deadline_ms, id));
        lease.record.deadline_ms = deadline_ms;
        self.by_deadline.insert((deadline_ms, id));
        true
    }

    pub fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Up to `max` leases whose deadline is at or before `now_ms`, earliest first.
    pub fn due(&self, now_ms: u64, max: usize) -> Vec<i64> {
        self.by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Earliest deadline of any lease, so the leader knows when to tick.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.iter().next().map(|(d, _)| *d)
    }
}
