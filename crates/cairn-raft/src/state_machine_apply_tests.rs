//! Which thread applies a batch, and that it makes no difference to the
//! state.

use cairn_store::{Command, PutRequest};
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderId;

use super::*;
use crate::log_store::LogStore;
use crate::types::{Entry, IOFlushed, LeaderId, Request};

fn put(index: u64) -> Entry {
    let leader = <LeaderId as RaftLeaderId>::new(1, 1).to_committed();
    let cmd = Command::Put(PutRequest {
        key: format!("k{index:04}").into_bytes(),
        value: vec![7; 16],
        ..Default::default()
    });
    Entry::new_normal(LogId::new(leader, index), Request::from(cmd))
}

/// A state machine writing through `log`'s writer, and the log holding
/// entries `1..=appended`.
async fn member(dir: &tempfile::TempDir, appended: u64) -> (LogStore, StateMachineStore) {
    let db = Arc::new(Database::create(dir.path().join("db")).unwrap());
    let mut log = LogStore::open(db.clone(), &dir.path().join("wal")).unwrap();
    let (tx, rx) = TypeConfig::oneshot();
    log.append((1..=appended).map(put), IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
    let sm = StateMachineStore::open(db, &dir.path().join("snapshot"))
        .unwrap()
        .with_writer(log.state_writer());
    (log, sm)
}

/// Applies entries `range` as one batch that no client waits for (a
/// follower's).
async fn apply_unwaited(sm: &mut StateMachineStore, range: std::ops::RangeInclusive<u64>) {
    let batch = range.map(|i| Ok((put(i), None)));
    sm.apply(futures::stream::iter(batch)).await.unwrap();
}

fn keyspace(sm: &StateMachineStore) -> cairn_store::StoreSnapshot {
    sm.shared_store().read().unwrap().snapshot().unwrap()
}

#[tokio::test]
async fn a_long_batch_nobody_waits_for_goes_to_the_apply_thread_with_the_same_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let keys = BACKGROUND_APPLY_KEYS as u64;
    let (_log, mut sm) = member(&dir, keys).await;
    apply_unwaited(&mut sm, 1..=keys).await;
    assert_eq!(sm.applied_in_background, 1);

    // The same entries applied on the caller's thread, one at a time.
    let other = tempfile::tempdir().unwrap();
    let (_other_log, mut inline) = member(&other, keys).await;
    for i in 1..=keys {
        apply_unwaited(&mut inline, i..=i).await;
    }
    assert_eq!(inline.applied_in_background, 0, "one key is not worth it");
    assert_eq!(keyspace(&sm), keyspace(&inline));
    assert_eq!(keyspace(&sm).meta.revision, keys as i64);
    assert_eq!(sm.applied.map(|l| l.index), Some(keys));
}

#[tokio::test]
async fn a_member_far_behind_its_log_applies_at_normal_priority() {
    let keys = BACKGROUND_APPLY_KEYS as u64;
    let behind = BACKGROUND_APPLY_MAX_BEHIND;
    // One entry more than may wait behind a background apply.
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut far) = member(&dir, keys + behind + 1).await;
    apply_unwaited(&mut far, 1..=keys).await;
    assert_eq!(far.applied_in_background, 0);
    // Just as many as may wait.
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut near) = member(&dir, keys + behind).await;
    apply_unwaited(&mut near, 1..=keys).await;
    assert_eq!(near.applied_in_background, 1);
}

#[test]
fn a_batch_goes_where_it_holds_up_least() {
    use ApplyPlace::*;
    let small = BACKGROUND_APPLY_KEYS - 1;
    let medium = BACKGROUND_APPLY_KEYS;
    let long = LONG_APPLY_KEYS;
    // (keys, a client waits, near the log's end) -> place
    let cases = [
        (small, false, true, Here),
        (medium, false, true, Background),
        (long, false, true, Background),
        (medium, false, false, Here),
        (long, false, false, Long),
        (small, true, true, Here),
        (medium, true, true, Here),
        (long, true, true, Long),
        (long, true, false, Long),
    ];
    for (keys, waited_for, near, place) in cases {
        assert_eq!(
            apply_place(keys, waited_for, near),
            place,
            "{keys} keys, waited for: {waited_for}, near: {near}"
        );
    }
}

#[tokio::test]
async fn a_long_batch_far_behind_the_log_goes_to_the_long_apply_thread_with_the_same_outcome() {
    let keys = LONG_APPLY_KEYS as u64;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut far) = member(&dir, keys + BACKGROUND_APPLY_MAX_BEHIND + 1).await;
    apply_unwaited(&mut far, 1..=keys).await;
    assert_eq!(
        (far.applied_on_long_apply_thread, far.applied_in_background),
        (1, 0)
    );

    let other = tempfile::tempdir().unwrap();
    let (_other_log, mut inline) = member(&other, keys).await;
    for i in (1..=keys).step_by(64) {
        apply_unwaited(&mut inline, i..=i + 63).await;
    }
    assert_eq!(inline.applied_on_long_apply_thread, 0);
    assert_eq!(keyspace(&far), keyspace(&inline));
    assert_eq!(far.applied.map(|l| l.index), Some(keys));
}
