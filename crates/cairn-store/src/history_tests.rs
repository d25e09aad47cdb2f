//! Values dropped from memory read back through `HistoryValues`: every
//! read answers as if nothing was dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::*;

/// What a storage layer persisted, plus how often it was asked.
#[derive(Default)]
pub(crate) struct Persisted {
    pub(crate) values: Mutex<HashMap<Revision, Vec<u8>>>,
    pub(crate) reads: AtomicUsize,
}

impl HistoryValues for Persisted {
    fn values(&self, revs: &[Revision]) -> Result<Vec<Vec<u8>>, String> {
        self.reads.fetch_add(revs.len(), Ordering::Relaxed);
        let values = self.values.lock().unwrap();
        revs.iter()
            .map(|rev| {
                values
                    .get(rev)
                    .cloned()
                    .ok_or_else(|| format!("no row {rev:?}"))
            })
            .collect()
    }
}

impl Persisted {
    /// Persists what `store` changed, as the state machine does.
    pub(crate) fn persist(&self, store: &mut Store) {
        let changes = store.take_changes();
        let mut values = self.values.lock().unwrap();
        for (rev, key) in changes.records_added {
            if let Some((_, r)) = store.record_of(&key, rev) {
                values.insert(rev, r.value.to_vec());
            }
        }
        for rev in changes.records_removed {
            values.remove(&rev);
        }
    }
}

pub(crate) fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn all() -> KeyRange {
    KeyRange::new(vec![0], vec![0])
}

fn at(store: &Store, rev: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .range(&RangeRequest {
            range: all(),
            revision: rev,
            ..Default::default()
        })
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

/// The same history twice: one store keeps every value, the other drops
/// what it may after each command.
pub(crate) fn twins(cmds: &[Command]) -> (Store, Store, Arc<Persisted>) {
    let persisted = Arc::new(Persisted::default());
    let mut kept = Store::new();
    let mut dropping = Store::new();
    dropping.set_history(persisted.clone());
    for cmd in cmds {
        assert_eq!(kept.apply(cmd), dropping.apply(cmd));
        persisted.persist(&mut dropping);
        dropping.drop_history_values(dropping.revision());
    }
    (kept, dropping, persisted)
}

fn history() -> Vec<Command> {
    vec![
        put("a", "a1"),
        put("b", "b1"),
        put("a", "a2"),
        Command::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single("b"),
            prev_kv: true,
        }),
        put("b", "b2"),
        put("a", "a3"),
        put("c", "c1"),
    ]
}

#[test]
fn superseded_values_are_dropped_and_every_read_answers_the_same() {
    let (kept, dropping, persisted) = twins(&history());
    assert_eq!(
        dropping.superseded_values_held(),
        0,
        "all candidates dropped"
    );
    let reads_before = persisted.reads.load(Ordering::Relaxed);
    assert_eq!(at(&dropping, 0), at(&kept, 0));
    assert_eq!(
        persisted.reads.load(Ordering::Relaxed),
        reads_before,
        "current values are in memory"
    );
    for rev in 1..=dropping.revision() {
        assert_eq!(at(&dropping, rev), at(&kept, rev), "range at {rev}");
    }
    assert!(persisted.reads.load(Ordering::Relaxed) > reads_before);
    assert_eq!(
        dropping.events_since(1, &all(), 100),
        kept.events_since(1, &all(), 100)
    );
    assert_eq!(dropping.hash_kv(3), kept.hash_kv(3));
    assert_eq!(dropping.hash_kv(0), kept.hash_kv(0));
    assert_eq!(dropping.snapshot(), kept.snapshot());
    assert_eq!(dropping.size_bytes(), kept.size_bytes());
}

#[test]
fn dropping_waits_for_the_persisted_revision_and_survives_compaction() {
    let persisted = Arc::new(Persisted::default());
    let mut s = Store::new();
    s.set_history(persisted.clone());
    for cmd in history() {
        s.apply(&cmd);
    }
    // Nothing persisted yet: nothing may be dropped.
    s.drop_history_values(0);
    assert_eq!(at(&s, 1), vec![(b"a".to_vec(), b"a1".to_vec())]);
    assert_eq!(persisted.reads.load(Ordering::Relaxed), 0);
    persisted.persist(&mut s);
    s.drop_history_values(2);
    assert_eq!(
        s.superseded_values_held(),
        1,
        "a1 and b1 dropped, a2 (rev 3) held"
    );
    assert_eq!(
        at(&s, 3),
        vec![
            (b"a".to_vec(), b"a2".to_vec()),
            (b"b".to_vec(), b"b1".to_vec()),
        ]
    );
    s.apply(&Command::Compact { revision: 5 });
    persisted.persist(&mut s);
    s.drop_history_values(s.revision());
    assert_eq!(s.superseded_values_held(), 0);
    assert_eq!(
        at(&s, 5),
        vec![
            (b"a".to_vec(), b"a2".to_vec()),
            (b"b".to_vec(), b"b2".to_vec()),
        ]
    );
}

#[test]
fn a_value_storage_cannot_read_back_is_an_error_not_an_empty_value() {
    let (_, mut dropping, persisted) = twins(&history());
    persisted.values.lock().unwrap().clear();
    let err = dropping
        .range(&RangeRequest {
            range: KeyRange::single("a"),
            revision: 1,
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HistoryUnavailable { revision: 1, .. }),
        "{err:?}"
    );
    assert!(dropping.snapshot().is_err());
    // Writes go on: they read current values only.
    dropping.apply(&put("a", "a4"));
    assert_eq!(at(&dropping, 0)[0].1, b"a4");
}

#[test]
fn a_restored_store_drops_the_values_its_rows_hold() {
    let (kept, _, _) = twins(&history());
    let persisted = Arc::new(Persisted::default());
    let snap = kept.snapshot().unwrap();
    for (_, r) in &snap.records {
        persisted
            .values
            .lock()
            .unwrap()
            .insert(r.rev, r.value.to_vec());
    }
    let mut restored = Store::from_snapshot(snap);
    restored.set_history(persisted.clone());
    assert_eq!(restored.superseded_values_held(), 3, "a1, b1, a2");
    restored.drop_history_values(restored.revision());
    assert_eq!(restored.superseded_values_held(), 0);
    for rev in 1..=kept.revision() {
        assert_eq!(at(&restored, rev), at(&kept, rev));
    }
}

#[test]
fn without_a_history_source_nothing_is_dropped() {
    let mut s = Store::new();
    for cmd in history() {
        s.apply(&cmd);
    }
    s.drop_history_values(s.revision());
    assert_eq!(s.superseded_values_held(), 3);
    assert!(s
        .snapshot()
        .unwrap()
        .records
        .iter()
        .all(|(_, r)| !r.is_dropped()));
}

#[test]
fn a_record_encodes_as_rows_written_before_values_could_be_dropped() {
    // Rows and snapshots of earlier versions hold this layout (the value
    // a sequence of `u8`; now a byte string, which postcard writes the
    // same); the record must decode them and encode the same bytes.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Earlier {
        rev: Revision,
        create_revision: i64,
        version: i64,
        value: Vec<u8>,
        lease: i64,
        tombstone: bool,
    }
    // A short value and one whose length takes two varint bytes.
    let long: Vec<u8> = (0..=255u8).cycle().take(400).collect();
    for value in [b"value".to_vec(), long] {
        let earlier = Earlier {
            rev: Revision::new(7, 2),
            create_revision: 5,
            version: 3,
            value: value.clone(),
            lease: 9,
            tombstone: false,
        };
        let bytes = postcard::to_allocvec(&earlier).unwrap();
        let record: Record = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            record,
            Record::new(Revision::new(7, 2), 5, 3, value.clone(), 9, false)
        );
        assert_eq!(postcard::to_allocvec(&record).unwrap(), bytes);
        // The state machine's record rows: (key, record).
        assert_eq!(
            postcard::to_allocvec(&(serde_bytes::Bytes::new(b"k/1"), &record)).unwrap(),
            postcard::to_allocvec(&(b"k/1".to_vec(), &earlier)).unwrap()
        );
    }
}

#[test]
fn whole_history_walks_read_back_across_chunks() {
    let cmds: Vec<Command> = (0..3_000)
        .map(|i| put(&format!("k{}", i % 50), &format!("v{i}")))
        .collect();
    let (kept, dropping, persisted) = twins(&cmds);
    assert_eq!(dropping.superseded_values_held(), 0);
    let before = persisted.reads.load(Ordering::Relaxed);
    assert_eq!(dropping.snapshot(), kept.snapshot());
    assert_eq!(
        persisted.reads.load(Ordering::Relaxed) - before,
        3_000 - 50,
        "each dropped value read once"
    );
    assert_eq!(dropping.hash_kv(1_500), kept.hash_kv(1_500));
    assert_eq!(dropping.hash_kv(0), kept.hash_kv(0));
}

#[test]
fn a_persisted_record_is_dropped_as_it_is_superseded_a_fresh_one_waits() {
    let persisted = Arc::new(Persisted::default());
    let mut s = Store::new();
    s.set_history(persisted.clone());
    s.apply(&put("a", "a1"));
    s.apply(&put("b", "b1"));
    persisted.persist(&mut s);
    s.drop_history_values(2);
    // a1 (rev 1) is persisted: superseding it drops its value at once,
    // nothing is queued.
    s.apply(&put("a", "a2"));
    assert_eq!(s.superseded_values_held(), 0);
    // a2 (rev 3) is not persisted yet: it is queued, not dropped.
    s.apply(&put("a", "a3"));
    assert_eq!(s.superseded_values_held(), 1);
    persisted.persist(&mut s);
    assert_eq!(at(&s, 1), vec![(b"a".to_vec(), b"a1".to_vec())]);
    assert_eq!(persisted.reads.load(Ordering::Relaxed), 1, "a1 read back");
    assert_eq!(
        at(&s, 3),
        vec![
            (b"a".to_vec(), b"a2".to_vec()),
            (b"b".to_vec(), b"b1".to_vec())
        ]
    );
    assert_eq!(persisted.reads.load(Ordering::Relaxed), 1, "a2 in memory");
    s.drop_history_values(s.revision());
    assert_eq!(s.superseded_values_held(), 0);
}
