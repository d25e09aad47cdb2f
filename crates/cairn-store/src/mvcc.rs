//! The multi-version keyspace: every key's history, the global revision
//! log, reads at any retained revision, compaction and event replay.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::history::{HistorySource, HistoryValues};
use crate::kv::{Event, EventKind, KeyRange, KeyValue};
use crate::revision::Revision;
use crate::revision_log::RevisionLog;

/// One version of one key, as kept in history and persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub rev: Revision,
    pub create_revision: i64,
    pub version: i64,
    /// Empty once dropped from memory (see `dropped_len`). A boxed slice,
    /// not a `Vec`: history keeps a record per revision, and the capacity
    /// word was 8 of its bytes (postcard encodes both the same).
    #[serde(with = "serde_bytes")]
    pub value: Box<[u8]>,
    pub lease: i64,
    /// The length of `value` when it was dropped from memory, to be read
    /// back through [`HistoryValues`]; 0 while it is held (an empty value
    /// is never dropped). Never persisted: every stored copy holds its
    /// value.
    #[serde(skip)]
    dropped_len: u32,
    /// A delete: the key does not exist from this revision on.
    pub tombstone: bool,
}

impl Record {
    pub fn new(
        rev: Revision,
        create_revision: i64,
        version: i64,
        value: Vec<u8>,
        lease: i64,
        tombstone: bool,
    ) -> Record {
        Record {
            rev,
            create_revision,
            version,
            value: value.into_boxed_slice(),
            lease,
            dropped_len: 0,
            tombstone,
        }
    }

    /// Whether the value was dropped from memory.
    pub fn is_dropped(&self) -> bool {
        self.dropped_len > 0
    }

    fn value_len(&self) -> usize {
        if self.is_dropped() {
            self.dropped_len as usize
        } else {
            self.value.len()
        }
    }

    /// This record holding `value` again (read back).
    fn with_value(&self, value: Vec<u8>) -> Record {
        Record {
            value: value.into_boxed_slice(),
            dropped_len: 0,
            ..self.clone()
        }
    }

    /// Approximate bytes this record costs, for the quota.
    pub fn footprint(&self, key: &[u8]) -> u64 {
        (key.len() + self.value_len() + 48) as u64
    }
}

/// Frees a superseded record's value; reads fetch it from the history.
fn drop_value(r: &mut Record) {
    // Values are at most a request's size, far below 4 GiB.
    if !r.is_dropped() && !r.value.is_empty() && r.value.len() <= u32::MAX as usize {
        r.dropped_len = r.value.len() as u32;
        r.value = Box::default();
    }
}

/// What a write to the keyspace must give back besides the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    /// The event for watchers. Building one copies the key and value, new
    /// and old; with no watcher, nobody reads it.
    pub event: bool,
    /// The key's previous live version, for the client's answer.
    pub prev_kv: bool,
}

impl Wants {
    /// The event and the previous version, as asked, from the previous
    /// version `prev` (built only if one of them is asked for).
    fn answer(
        self,
        key: &[u8],
        record: &Record,
        prev: impl FnOnce() -> Option<KeyValue>,
    ) -> (Option<Event>, Option<KeyValue>) {
        let prev = if self.event || self.prev_kv {
            prev()
        } else {
            None
        };
        if !self.event {
            return (None, prev);
        }
        let answer = if self.prev_kv { prev.clone() } else { None };
        (Some(event_of(key, record, prev)), answer)
    }
}

/// What [`KeySpace::push`] gives back.
#[derive(Debug)]
pub struct Pushed {
    /// The key as the keyspace holds it (shared with its records).
    pub key: Arc<[u8]>,
    pub event: Option<Event>,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Default, Clone)]
pub struct KeySpace {
    /// Each key's versions, oldest first. Keys are shared with `log`
    /// (one allocation per key, not one per revision).
    keys: BTreeMap<Arc<[u8]>, History>,
    /// Every retained record by revision, pointing at its key: the
    /// history that watches replay and persistence mirrors.
    log: RevisionLog,
    size_bytes: u64,
    /// Records superseded by a newer version of their key, in revision
    /// order, whose values are still in memory: the candidates for
    /// [`KeySpace::drop_values_through`].
    superseded: VecDeque<Revision>,
    /// Where dropped values are read back from; none: never drop.
    history: HistorySource,
    /// The revision [`KeySpace::drop_values_through`] was last given: a
    /// record at or below it that [`KeySpace::push`] supersedes is
    /// persisted, so its value is dropped at once instead of queued (no
    /// second lookup of its key later).
    dropped_through: i64,
}

impl KeySpace {
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn record_count(&self) -> usize {
        self.log.len()
    }

    /// Reads values dropped from memory back from `source`, and lets
    /// [`KeySpace::drop_values_through`] drop them.
    pub fn set_history(&mut self, source: Arc<dyn HistoryValues>) {
        self.history = HistorySource(Some(source));
    }

    /// Drops from memory the values of superseded records at revisions up
    /// to `main` (inclusive), which the caller guarantees its
    /// [`HistoryValues`] can read back. Current values are never dropped:
    /// applying commands reads them. Does nothing without a source.
    pub fn drop_values_through(&mut self, main: i64) {
        if self.history.0.is_none() {
            return;
        }
        self.dropped_through = self.dropped_through.max(main);
        while let Some(rev) = self.superseded.front().copied() {
            if rev.main > main {
                break;
            }
            self.superseded.pop_front();
            // Compaction may have removed it meanwhile.
            let Some(key) = self.log.get(&rev) else {
                continue;
            };
            let Some(history) = self.keys.get_mut(key) else {
                continue;
            };
            let Ok(i) = history.binary_search_by(|r| r.rev.cmp(&rev)) else {
                continue;
            };
            if i + 1 == history.len() {
                continue;
            }
            drop_value(&mut history[i]);
        }
    }

    /// How many records hold their value in memory though superseded.
    pub fn superseded_held(&self) -> usize {
        self.superseded.len()
    }

    /// The record as a key-value, its value read back if it was dropped.
    fn kv_of(&self, key: &[u8], r: &Record) -> Result<KeyValue, StoreError> {
        if r.is_dropped() {
            Ok(held_kv(key, &self.held(r)?))
        } else {
            Ok(held_kv(key, r))
        }
    }

    /// The record with its value in memory (read back if dropped).
    fn held(&self, r: &Record) -> Result<Record, StoreError> {
        if !r.is_dropped() {
            return Ok(r.clone());
        }
        let value = self.read_back(&[r.rev])?.pop().unwrap_or_default();
        Ok(r.with_value(value))
    }

    /// The first `max` keys in `range` live at `rev`, and how many there
    /// were in all, in one pass.
    pub fn range_counted(
        &self,
        range: &KeyRange,
        rev: i64,
        max: usize,
    ) -> Result<(Vec<KeyValue>, usize), StoreError> {
        let mut kvs = Vec::new();
        let mut count = 0;
        for (key, history) in self.key_iter(range) {
            if let Some(r) = live_at(history, rev) {
                count += 1;
                if kvs.len() < max {
                    kvs.push(self.kv_of(key, r)?);
                }
            }
        }
        Ok((kvs, count))
    }

    /// How many keys in `range` were live at `rev` (no value is read).
    pub fn count_at(&self, range: &KeyRange, rev: i64) -> usize {
        self.key_iter(range)
            .filter(|(_, history)| live_at(history, rev).is_some())
            .count()
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
    ) -> impl Iterator<Item = Result<KeyValue, StoreError>> + 'a {
        self.key_iter(range)
            .filter_map(move |(key, history)| live_at(history, rev).map(|r| self.kv_of(key, r)))
    }

    fn key_iter<'a>(&'a self, range: &'a KeyRange) -> KeyIter<'a> {
        if range.is_single() {
            return Box::new(self.keys.get_key_value(range.start.as_slice()).into_iter());
        }
        let upper = match range.upper() {
            Some(end) if end <= range.start.as_slice() => return Box::new(std::iter::empty()),
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        Box::new(
            self.keys
                .range::<[u8], _>((Bound::Included(range.start.as_slice()), upper)),
        )
    }

    /// `key` as stored (shared), or a new one.
    fn shared_key(&self, key: &[u8]) -> Arc<[u8]> {
        match self.keys.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(key),
        }
    }

    /// Live keys in `range` now (used by deletes and lease revocation).
    pub fn live_keys(&self, range: &KeyRange) -> Vec<Vec<u8>> {
        self.key_iter(range)
            .filter(|(_, h)| h.last().is_some_and(|r| !r.tombstone))
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    /// Append a record; returns the key as the keyspace holds it and what
    /// `wants` asked for. One search of the key map for a key that exists.
    pub fn push(&mut self, key: &[u8], wants: Wants, record: Record) -> Pushed {
        self.push_with(key, wants, |_| record)
    }

    /// Append the record `make` builds from the key's current live record
    /// (none: the key is new or deleted). The same search of the key map
    /// serves both, so a put looks its key up once, not twice (each search
    /// was ~5 % of a member's CPU under puts: every comparison reads a key
    /// from the heap).
    pub fn push_with(
        &mut self,
        key: &[u8],
        wants: Wants,
        make: impl FnOnce(Option<&Record>) -> Record,
    ) -> Pushed {
        let (shared, rev, footprint, event, prev_kv) = match self.keys.get_mut(key) {
            Some(history) => {
                let record = make(history.last().filter(|r| !r.tombstone));
                let (rev, footprint) = (record.rev, record.footprint(key));
                // The current record always holds its value.
                let prev = history.last_mut().filter(|r| !r.tombstone);
                let (event, prev_kv) =
                    wants.answer(key, &record, || prev.as_deref().map(|r| held_kv(key, r)));
                if let Some(prev) = prev {
                    if self.history.0.is_some() && prev.rev.main <= self.dropped_through {
                        drop_value(prev);
                    } else {
                        self.superseded.push_back(prev.rev);
                    }
                }
                history.push(record);
                (Arc::clone(&history.key), rev, footprint, event, prev_kv)
            }
            None => {
                let record = make(None);
                let (rev, footprint) = (record.rev, record.footprint(key));
                let shared: Arc<[u8]> = Arc::from(key);
                let (event, prev_kv) = wants.answer(key, &record, || None);
                let history = History {
                    key: Arc::clone(&shared),
                    records: vec![record],
                };
                self.keys.insert(Arc::clone(&shared), history);
                (shared, rev, footprint, event, prev_kv)
            }
        };
        self.size_bytes += footprint;
        self.log.insert(rev, Arc::clone(&shared));
        Pushed {
            key: shared,
            event,
            prev_kv,
        }
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
        self.log.remove_sorted(&removed);
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
    ) -> Result<(Vec<Event>, i64), StoreError> {
        let mut out = Vec::new();
        let mut next = from;
        for (rev, key) in self.log.range_from(Revision::new(from, 0)) {
            if rev.main > to {
                break;
            }
            if out.len() >= max_events && rev.main != next - 1 {
                return Ok((out, rev.main));
            }
            next = rev.main + 1;
            if !range.contains(key) {
                continue;
            }
            if let Some(e) = self.event_at(key, *rev)? {
                out.push(e);
            }
        }
        Ok((out, to.saturating_add(1).max(from)))
    }

    fn event_at(&self, key: &[u8], rev: Revision) -> Result<Option<Event>, StoreError> {
        let Some(history) = self.keys.get(key) else {
            return Ok(None);
        };
        let Ok(i) = history.binary_search_by(|r| r.rev.cmp(&rev)) else {
            return Ok(None);
        };
        let prev = i
            .checked_sub(1)
            .map(|p| &history[p])
            .filter(|r| !r.tombstone)
            .map(|r| self.kv_of(key, r))
            .transpose()?;
        let record = self.held(&history[i])?;
        Ok(Some(event_of(key, &record, prev)))
    }

    /// The record at `rev` with its key, for persistence.
    pub fn record_at(&self, rev: Revision) -> Option<(&[u8], &Record)> {
        let key = self.log.get(&rev)?;
        self.record_of(key, rev)
    }

    /// The record at `rev` of `key`, without the search of the revision
    /// log [`KeySpace::record_at`] needs; the newest record (a write just
    /// applied) is found without a search of the key's history.
    pub fn record_of<'a>(&'a self, key: &[u8], rev: Revision) -> Option<(&'a [u8], &'a Record)> {
        let (key, history) = self.keys.get_key_value(key)?;
        let record = match history.last() {
            Some(last) if last.rev == rev => last,
            _ => &history[history.binary_search_by(|r| r.rev.cmp(&rev)).ok()?],
        };
        Some((key, record))
    }

    /// Every retained record at or below `max_rev`, in revision order, to
    /// `f`, with its value in memory: dropped values are read back a chunk
    /// of records at a time (one [`HistoryValues::values`] call per chunk).
    pub fn walk_held(
        &self,
        max_rev: i64,
        f: impl FnMut(&[u8], &Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.walk_held_after(None, max_rev, usize::MAX, f)
            .map(|_| ())
    }

    /// As [`KeySpace::walk_held`], but from the first record after `after`
    /// (the first retained one without) and at most `max_records` records,
    /// so a long walk can be taken in parts. Returns how many records were
    /// walked: fewer than `max_records` when none is left at or below
    /// `max_rev`.
    pub fn walk_held_after(
        &self,
        after: Option<Revision>,
        max_rev: i64,
        max_records: usize,
        mut f: impl FnMut(&[u8], &Record) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        const CHUNK: usize = 1024;
        let mut records = self
            .log
            .range_after(after)
            .take_while(|(rev, _)| rev.main <= max_rev)
            .filter_map(|(rev, key)| self.record_of(key, *rev))
            .take(max_records);
        let mut walked = 0;
        loop {
            let chunk: Vec<(&[u8], &Record)> = records.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                return Ok(walked);
            }
            walked += chunk.len();
            let dropped: Vec<Revision> = chunk
                .iter()
                .filter(|(_, r)| r.is_dropped())
                .map(|(_, r)| r.rev)
                .collect();
            let mut values = self.read_back(&dropped)?.into_iter();
            for (key, r) in chunk {
                if r.is_dropped() {
                    f(key, &r.with_value(values.next().unwrap_or_default()))?;
                } else {
                    f(key, r)?;
                }
            }
        }
    }

    /// The dropped values of the records at `revs`, in order.
    fn read_back(&self, revs: &[Revision]) -> Result<Vec<Vec<u8>>, StoreError> {
        if revs.is_empty() {
            return Ok(Vec::new());
        }
        let unavailable = |reason: String| StoreError::HistoryUnavailable {
            revision: revs[0].main,
            reason,
        };
        let values = match &self.history.0 {
            Some(source) => source.values(revs).map_err(unavailable)?,
            None => return Err(unavailable("no history source".into())),
        };
        if values.len() != revs.len() {
            return Err(unavailable(format!(
                "{} values read back for {} records",
                values.len(),
                revs.len()
            )));
        }
        Ok(values)
    }

    /// After the last [`KeySpace::insert_restored`]: puts the revision log
    /// in order, and makes every record but each key's last a candidate
    /// for dropping its value.
    pub fn finish_restore(&mut self) {
        self.log.restore_order();
        let mut revs: Vec<Revision> = self
            .keys
            .values()
            .flat_map(|h| h[..h.len().saturating_sub(1)].iter())
            .filter(|r| !r.tombstone && !r.is_dropped())
            .map(|r| r.rev)
            .collect();
        revs.sort_unstable();
        self.superseded = revs.into();
    }

    /// Rebuild from persisted records (any order); call
    /// [`KeySpace::finish_restore`] after the last.
    pub fn insert_restored(&mut self, key: Vec<u8>, record: Record) {
        self.size_bytes += record.footprint(&key);
        let shared = self.shared_key(&key);
        self.log.push_unordered(record.rev, shared.clone());
        let history = self
            .keys
            .entry(Arc::clone(&shared))
            .or_insert_with(|| History {
                key: shared,
                records: Vec::new(),
            });
        let at = history.partition_point(|r| r.rev < record.rev);
        history.insert(at, record);
    }
}

/// Keys of a range with their histories, in key order.
type KeyIter<'a> = Box<dyn Iterator<Item = (&'a Arc<[u8]>, &'a History)> + 'a>;

/// A key's versions, oldest first, and the key as the map holds it: a
/// write finds both with one `get_mut` (a `range_mut` over one key, which
/// also yields the key, descends twice as far; ~2 % of a member's CPU
/// under puts).
#[derive(Debug, Clone)]
struct History {
    key: Arc<[u8]>,
    records: Vec<Record>,
}

impl std::ops::Deref for History {
    type Target = Vec<Record>;
    fn deref(&self) -> &Vec<Record> {
        &self.records
    }
}

impl std::ops::DerefMut for History {
    fn deref_mut(&mut self) -> &mut Vec<Record> {
        &mut self.records
    }
}

fn live_at(history: &[Record], rev: i64) -> Option<&Record> {
    let i = history.partition_point(|r| r.rev.main <= rev);
    let r = history.get(i.checked_sub(1)?)?;
    (!r.tombstone).then_some(r)
}

/// A record known to hold its value (current ones do) as a key-value.
fn held_kv(key: &[u8], r: &Record) -> KeyValue {
    debug_assert!(!r.is_dropped(), "current values stay in memory");
    KeyValue {
        key: key.to_vec(),
        create_revision: r.create_revision,
        mod_revision: r.rev.main,
        version: r.version,
        value: r.value.to_vec(),
        lease: r.lease,
    }
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
            kv: held_kv(key, record),
            prev_kv,
        }
    }
}
