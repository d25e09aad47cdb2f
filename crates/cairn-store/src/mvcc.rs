//! The multi-version keyspace: every key's history, the global revision
//! log, reads at any retained revision, compaction and event replay.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::kv::{Event, EventKind, KeyRange, KeyValue};
use crate::revision::Revision;

/// One version of one key, as kept in history and persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub rev: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
    /// A delete: the key does not exist from this revision on.
    pub tombstone: bool,
}

impl Record {
    fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }

    /// Approximate bytes this record costs, for the quota.
    pub fn footprint(&self, key: &[u8]) -> u64 {
        (key.len() + self.value.len() + 48) as u64
    }
}

#[derive(Debug, Default, Clone)]
pub struct KeySpace {
    /// Each key's versions, oldest first.
    keys: BTreeMap<Vec<u8>, Vec<Record>>,
    /// Every retained record by revision, pointing at its key: the
    /// history that watches replay and persistence mirrors.
    log: BTreeMap<Revision, Vec<u8>>,
    size_bytes: u64,
}

impl KeySpace {
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn record_count(&self) -> usize {
        self.log.len()
    }

    /// The key's value as of `rev` (inclusive), if it existed then.
    pub fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let history = self.keys.get(key)?;
        live_at(history, rev).map(|r| r.to_kv(key))
    }

    /// Current live record of `key`.
    pub fn current(&self, key: &[u8]) -> Option<&Record> {
        self.keys.get(key)?.last().filter(|r| !r.tombstone)
    }

    /// Keys in `range` live at `rev`, in key order.
    pub fn range_at<'a>(
        &'a self,
        range: &'a KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = KeyValue> + 'a {
        self.key_iter(range)
            .filter_map(move |(key, history)| live_at(history, rev).map(|r| r.to_kv(key)))
    }

    fn key_iter<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Vec<Record>)> + 'a> {
        if range.is_single() {
            return Box::new(self.keys.get_key_value(&range.start).into_iter());
        }
        let upper = match range.upper() {
            Some(end) if end <= range.start.as_slice() => return Box::new(std::iter::empty()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        Box::new(
            self.keys
                .range((Bound::Included(range.start.clone()), upper)),
        )
    }

    /// Live keys in `range` now (used by deletes and lease revocation).
    pub fn live_keys(&self, range: &KeyRange) -> Vec<Vec<u8>> {
        self.key_iter(range)
            .filter(|(_, h)| h.last().is_some_and(|r| !r.tombstone))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Append a record; returns the event it represents.
    pub fn push(&mut self, key: &[u8], record: Record) -> Event {
        let history = self.keys.entry(key.to_vec()).or_default();
        let prev = history
            .last()
            .filter(|r| !r.tombstone)
            .map(|r| r.to_kv(key));
        let event = event_of(key, &record, prev);
        self.size_bytes += record.footprint(key);
        self.log.insert(record.rev, key.to_vec());
        history.push(record);
        event
    }

    /// Drop history older than `rev`, keeping each key's state at `rev`.
    /// Returns the revisions removed.
    pub fn compact(&mut self, rev: i64) -> Vec<Revision> {
        let mut removed = Vec::new();
        let mut emptied = Vec::new();
        for (key, history) in self.keys.iter_mut() {
            // Index of the newest record at or before `rev`.
            let keep_from = match history.iter().rposition(|r| r.rev.main <= rev) {
                Some(i) => i,
                None => continue,
            };
            let drop_through = if history[keep_from].tombstone && history[keep_from].rev.main < rev
            {
                keep_from + 1
            } else {
                keep_from
            };
            for r in history.drain(..drop_through) {
                self.size_bytes -= r.footprint(key);
                self.log.remove(&r.rev);
                removed.push(r.rev);
            }
            if history.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        removed.sort();
        removed
    }

    /// Events with revision in `[from, to]` whose key is in `range`, in
    /// revision order. Stops after `max_events` events but never inside a
    /// revision, so one revision's events stay together. Returns the events
    /// and the next revision to read from.
    pub fn events(
        &self,
        from: i64,
        to: i64,
        range: &KeyRange,
        max_events: usize,
    ) -> (Vec<Event>, i64) {
        let mut out = Vec::new();
        let mut next = from;
        for (rev, key) in self.log.range(Revision::new(from, 0)..) {
            if rev.main > to {
                break;
            }
            if out.len() >= max_events && rev.main != next - 1 {
                return (out, rev.main);
            }
            next = rev.main + 1;
            if !range.contains(key) {
                continue;
            }
            if let Some(e) = self.event_at(key, *rev) {
                out.push(e);
            }
        }
        (out, to.saturating_add(1).max(from))
    }

    fn event_at(&self, key: &[u8], rev: Revision) -> Option<Event> {
        let history = self.keys.get(key)?;
        let i = history.binary_search_by(|r| r.rev.cmp(&rev)).ok()?;
        let prev = i
            .checked_sub(1)
            .map(|p| &history[p])
            .filter(|r| !r.tombstone)
            .map(|r| r.to_kv(key));
        Some(event_of(key, &history[i], prev))
    }

    /// The record at `rev` with its key, for persistence.
    pub fn record_at(&self, rev: Revision) -> Option<(&[u8], &Record)> {
        let key = self.log.get(&rev)?;
        let history = self.keys.get(key)?;
        let i = history.binary_search_by(|r| r.rev.cmp(&rev)).ok()?;
        Some((key.as_slice(), &history[i]))
    }

    /// Every retained record in revision order.
    pub fn records(&self) -> impl Iterator<Item = (&[u8], &Record)> + '_ {
        self.log.keys().filter_map(|rev| self.record_at(*rev))
    }

    /// Rebuild from persisted records (any order).
    pub fn insert_restored(&mut self, key: Vec<u8>, record: Record) {
        self.size_bytes += record.footprint(&key);
        self.log.insert(record.rev, key.clone());
        let history = self.keys.entry(key).or_default();
        let at = history.partition_point(|r| r.rev < record.rev);
        history.insert(at, record);
    }
}

fn live_at(history: &[Record], rev: i64) -> Option<&Record> {
    let i = history.partition_point(|r| r.rev.main <= rev);
    let r = history.get(i.checked_sub(1)?)?;
    (!r.tombstone).then_some(r)
}

fn event_of(key: &[u8], record: &Record, prev_kv: Option<KeyValue>) -> Event {
    if record.tombstone {
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                mod_revision: record.rev.main,
                ..Default::default()
            },
            prev_kv,
        }
    } else {
        Event {
            kind: EventKind::Put,
            kv: record.to_kv(key),
            prev_kv,
        }
    }
}
