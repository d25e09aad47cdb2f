//! The keyspace hash taken in steps: the same hash as in one go, whatever
//! the step size, the writes between steps or where values live; a
//! compaction between steps asks for a restart instead of a hash.

use crate::history_tests::{put, twins, Persisted};
use crate::*;

fn del(key: &str) -> Command {
    Command::DeleteRange(DeleteRangeRequest {
        range: KeyRange::single(key),
        prev_kv: false,
    })
}

/// A txn that always succeeds: puts `put` and deletes `delete` at one
/// revision.
fn txn(put: &str, delete: &str) -> Command {
    Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: put.into(),
                value: format!("txn {put}").into_bytes(),
                ..Default::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                range: KeyRange::single(delete),
                prev_kv: false,
            }),
        ],
        failure: vec![],
    })
}

/// Puts over 20 keys, with deletes, txns (several records at one
/// revision) and a compaction among them.
fn mixed_history() -> Vec<Command> {
    let mut cmds = Vec::new();
    for i in 0..120 {
        cmds.push(put(&format!("k{}", i % 20), &format!("v{i}")));
        if i % 7 == 3 {
            cmds.push(del(&format!("k{}", (i + 5) % 20)));
        }
        if i % 11 == 5 {
            cmds.push(txn(&format!("k{}", (i + 1) % 20), &format!("k{}", i % 20)));
        }
        if i == 60 {
            cmds.push(Command::Compact { revision: 40 });
        }
    }
    cmds
}

fn store_of(cmds: &[Command]) -> Store {
    let mut s = Store::new();
    for cmd in cmds {
        s.apply(cmd);
    }
    s
}

#[test]
fn the_hash_of_a_known_history_is_the_one_earlier_versions_computed() {
    // Members of different versions compare hashes: the value must not
    // change. Computed by the one-shot hash before hashing in steps.
    let s = store_of(&mixed_history());
    assert_eq!(s.hash_kv(0), Ok((100851327, 40)));
    assert_eq!(s.hash_kv(100), Ok((1046057410, 40)));
}

const STEP_SIZES: [usize; 4] = [1, 2, 7, 4096];

/// The hash at `revision` of an unchanging `s` in steps of `max_records`,
/// and how many steps it took.
fn stepped(s: &Store, revision: i64, max_records: usize) -> ((u32, i64), usize) {
    let mut cursor = s.hash_cursor(revision).unwrap();
    for steps in 1.. {
        match s.hash_kv_step(&mut cursor, max_records).unwrap() {
            HashProgress::More => {}
            HashProgress::Done {
                hash,
                compact_revision,
            } => return ((hash, compact_revision), steps),
            restart => panic!("nothing changed, yet {restart:?}"),
        }
    }
    unreachable!()
}

fn ok(s: &mut Store, cmd: &Command) {
    let result = s.apply(cmd).result;
    assert!(
        !matches!(result, CommandResult::Error(_)),
        "{cmd:?}: {result:?}"
    );
}

/// The writes applied before step `i`: over keys the hash covers and new
/// ones, puts, deletes, a txn, and a lease's keys revoked with it.
fn writes_before_step(i: usize) -> Vec<Command> {
    let lease = 1_000 + i as i64;
    match i % 5 {
        0 => vec![put("k3", &format!("over {i}"))],
        1 => vec![put(&format!("new{i}"), "fresh")],
        2 => vec![del(&format!("k{}", i % 20))],
        // i % 20 is 3, 8, 13 or 18: never the key deleted.
        3 => vec![txn(&format!("k{}", i % 20), "k0")],
        _ => vec![
            Command::LeaseGrant {
                id: lease,
                ttl_secs: 60,
                now_ms: 0,
            },
            Command::Put(PutRequest {
                key: b"k9".to_vec(),
                value: b"leased".to_vec(),
                lease,
                ..Default::default()
            }),
            Command::LeaseRevoke { id: lease },
        ],
    }
}

#[test]
fn any_step_size_gives_the_one_shot_hash() {
    let s = store_of(&mixed_history());
    for revision in [0, 40, 41, 77, s.revision()] {
        let want = s.hash_kv(revision).unwrap();
        for size in STEP_SIZES {
            let (got, steps) = stepped(&s, revision, size);
            assert_eq!(got, want, "at {revision} in steps of {size}");
            if size == 1 && revision == 0 {
                assert!(steps > 50, "{steps} steps of one record");
            }
        }
    }
    assert_eq!(stepped(&s, 0, 4096).1, 1, "a small store in one step");
    let empty = Store::new();
    for size in STEP_SIZES {
        assert_eq!(stepped(&empty, 0, size).0, empty.hash_kv(0).unwrap());
    }
}

#[test]
fn writes_between_steps_leave_the_hash_at_its_revision_unchanged() {
    for size in STEP_SIZES {
        let mut s = store_of(&mixed_history());
        let revision = s.revision();
        let want = s.hash_kv(revision).unwrap();
        let mut cursor = s.hash_cursor(0).unwrap();
        let mut i = 0;
        let got = loop {
            assert!(i < 1_000, "no end in {i} steps of {size}");
            for cmd in writes_before_step(i) {
                ok(&mut s, &cmd);
            }
            i += 1;
            match s.hash_kv_step(&mut cursor, size).unwrap() {
                HashProgress::More => {}
                HashProgress::Done {
                    hash,
                    compact_revision,
                } => break (hash, compact_revision),
                restart => panic!("no compaction, yet {restart:?}"),
            }
        };
        assert_eq!(got, want, "in steps of {size}, {i} of them");
        assert!(s.revision() > revision, "writes went on");
        assert_eq!(s.hash_kv(revision).unwrap(), want, "in one go after them");
        assert_ne!(s.hash_kv(0).unwrap(), want, "they changed the head");
    }
}

#[test]
fn a_compaction_between_steps_asks_for_a_restart_not_a_hash() {
    let mut s = store_of(&mixed_history());
    let revision = s.revision();
    let mut cursor = s.hash_cursor(revision).unwrap();
    assert_eq!(s.hash_kv_step(&mut cursor, 7), Ok(HashProgress::More));
    ok(&mut s, &Command::Compact { revision: 90 });
    let restart = Ok(HashProgress::Restart {
        compact_revision: 90,
    });
    assert_eq!(s.hash_kv_step(&mut cursor, 7), restart);
    assert_eq!(s.hash_kv_step(&mut cursor, 4096), restart, "and stays so");
    // Begun again, it hashes what the compaction kept.
    assert_eq!(stepped(&s, revision, 7).0, s.hash_kv(revision).unwrap());

    // A compaction before the first step counts too.
    let mut cursor = s.hash_cursor(revision).unwrap();
    ok(&mut s, &put("k1", "past the revision"));
    let past = s.revision();
    ok(&mut s, &Command::Compact { revision: past });
    assert!(matches!(
        s.hash_kv_step(&mut cursor, 4096),
        Ok(HashProgress::Restart { .. })
    ));
    // Compacted past the revision: begun again, it is refused.
    assert_eq!(
        s.hash_cursor(revision).unwrap_err(),
        StoreError::Compacted {
            compact_revision: past
        }
    );
}

#[test]
fn an_older_state_put_in_the_stores_place_asks_for_a_restart() {
    let cmds = mixed_history();
    let s = store_of(&cmds);
    let older = store_of(&cmds[..cmds.len() - 10]);
    assert_eq!(older.compact_revision(), s.compact_revision());
    let mut cursor = s.hash_cursor(0).unwrap();
    assert_eq!(s.hash_kv_step(&mut cursor, 7), Ok(HashProgress::More));
    assert_eq!(
        older.hash_kv_step(&mut cursor, 7),
        Ok(HashProgress::Restart {
            compact_revision: 40
        })
    );
}

#[test]
fn a_newer_state_put_in_the_stores_place_asks_for_a_restart_too() {
    // As a snapshot installed between two steps: same compact revision,
    // the hashed revision still there, but another store.
    let cmds = mixed_history();
    let s = store_of(&cmds[..cmds.len() - 10]);
    let newer = store_of(&cmds);
    assert_eq!(newer.compact_revision(), s.compact_revision());
    let mut cursor = s.hash_cursor(0).unwrap();
    assert_eq!(s.hash_kv_step(&mut cursor, 7), Ok(HashProgress::More));
    assert!(matches!(
        newer.hash_kv_step(&mut cursor, 7),
        Ok(HashProgress::Restart { .. })
    ));
    // A copy is another store too; the store itself goes on.
    let mut cursor = s.hash_cursor(0).unwrap();
    assert_eq!(s.hash_kv_step(&mut cursor, 7), Ok(HashProgress::More));
    assert!(matches!(
        s.clone().hash_kv_step(&mut cursor.clone(), 7),
        Ok(HashProgress::Restart { .. })
    ));
    assert_eq!(s.hash_kv_step(&mut cursor, 7), Ok(HashProgress::More));
}

#[test]
fn a_hash_is_refused_as_a_read_at_its_revision_would_be() {
    let s = store_of(&mixed_history());
    let head = s.revision();
    let future = StoreError::FutureRevision {
        current_revision: head,
    };
    let compacted = StoreError::Compacted {
        compact_revision: 40,
    };
    assert_eq!(s.hash_cursor(head + 1).unwrap_err(), future);
    assert_eq!(s.hash_kv(head + 1), Err(future));
    assert_eq!(s.hash_cursor(39).unwrap_err(), compacted);
    assert_eq!(s.hash_kv(39), Err(compacted));
    assert_eq!(s.hash_cursor(0).unwrap().revision(), head, "0: the head");
    assert_eq!(s.hash_cursor(-3).unwrap().revision(), head);
}

#[test]
fn dropped_values_hash_as_values_in_memory_in_any_step_size() {
    let (kept, dropping, _) = twins(&mixed_history());
    assert_eq!(dropping.superseded_values_held(), 0, "all dropped");
    assert_eq!(dropping.hash_kv(0), Ok((100851327, 40)));
    // Past a read-back chunk (1,024 records), most of them dropped.
    let cmds: Vec<Command> = (0..3_000)
        .map(|i| put(&format!("k{}", i % 50), &format!("v{i}")))
        .collect();
    let (kept_long, dropping_long, persisted) = twins(&cmds);
    for (kept, dropping, revisions) in [
        (&kept, &dropping, [0, 41, 77]),
        (&kept_long, &dropping_long, [0, 1, 1_500]),
    ] {
        for revision in revisions {
            let want = kept.hash_kv(revision).unwrap();
            for size in STEP_SIZES {
                assert_eq!(
                    stepped(dropping, revision, size).0,
                    want,
                    "at {revision} in steps of {size}"
                );
            }
        }
    }
    assert!(persisted.reads.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[test]
fn values_dropped_between_steps_hash_as_before() {
    let persisted = std::sync::Arc::new(Persisted::default());
    let mut s = Store::new();
    s.set_history(persisted.clone());
    for i in 0..200 {
        ok(&mut s, &put(&format!("k{}", i % 10), &format!("v{i}")));
    }
    persisted.persist(&mut s);
    assert!(s.superseded_values_held() > 150, "held until dropped");
    let want = s.hash_kv(0).unwrap();
    let mut cursor = s.hash_cursor(0).unwrap();
    let mut i = 0;
    let got = loop {
        assert!(i < 1_000, "no end in {i} steps");
        ok(&mut s, &put("k1", &format!("after {i}")));
        persisted.persist(&mut s);
        s.drop_history_values(s.revision());
        i += 1;
        match s.hash_kv_step(&mut cursor, 7).unwrap() {
            HashProgress::More => {}
            HashProgress::Done {
                hash,
                compact_revision,
            } => break (hash, compact_revision),
            restart => panic!("{restart:?}"),
        }
    };
    assert_eq!(s.superseded_values_held(), 0);
    assert_eq!(got, want);
}
