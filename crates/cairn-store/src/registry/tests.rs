//! Semantics tables: each row is a command, applied in order, and the
//! exact result it must give. Then the state the table must leave.

use super::keys::QueueKind::{Election, Lock};
use super::read;
use super::RegistryCommand as C;
use super::RegistryError as E;
use super::RegistryMode::{Duplicate, Unique};
use super::RegistryResult as R;
use super::*;
use crate::{Command, CommandResult, DeleteRangeRequest, KeyRange, PutRequest, Store, StoreError};

const A: i64 = 0xA;
const B: i64 = 0xB;
const GONE: i64 = 0xDEAD;

/// A store with sessions A and B (TTL 10 s) at revision 1, where the
/// grants take no revision.
fn store_with_sessions() -> Store {
    let mut s = Store::new();
    for id in [A, B] {
        s.apply(&Command::LeaseGrant {
            id,
            ttl_secs: 10,
            now_ms: 0,
        });
    }
    s
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn run(store: &mut Store, table: Vec<(C, R)>) {
    for (i, (cmd, want)) in table.into_iter().enumerate() {
        let got = match store.apply(&Command::Registry(cmd.clone())).result {
            CommandResult::Registry(r) => r,
            other => panic!("row {i}: {cmd:?} gave {other:?}"),
        };
        assert_eq!(got, want, "row {i}: {cmd:?}");
    }
}

fn create(registry: &str, mode: RegistryMode) -> C {
    C::CreateRegistry {
        registry: v(registry),
        mode,
    }
}

fn reg(registry: &str, key: &str, value: &str, session: i64) -> C {
    C::Register {
        registry: v(registry),
        key: v(key),
        value: v(value),
        session,
    }
}

fn reg_or_get(registry: &str, key: &str, value: &str, session: i64) -> C {
    C::RegisterOrGet {
        registry: v(registry),
        key: v(key),
        value: v(value),
        session,
    }
}

fn unreg(registry: &str, key: &str, session: i64) -> C {
    C::Unregister {
        registry: v(registry),
        key: v(key),
        session,
    }
}

fn update(registry: &str, key: &str, session: i64, expected: Option<&str>, value: &str) -> C {
    C::UpdateValue {
        registry: v(registry),
        key: v(key),
        session,
        expected: expected.map(v),
        value: v(value),
    }
}

fn entry(owner: i64, value: &str, create_revision: i64, mod_revision: i64) -> Entry {
    Entry {
        owner,
        value: v(value),
        create_revision,
        mod_revision,
    }
}

fn registered(revision: i64) -> R {
    R::Registered {
        revision,
        previous: None,
    }
}

#[test]
fn unique_mode_semantics() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (reg("u", "k", "1", A), R::Refused(E::UnknownRegistry)),
            (create("u", Unique), R::Created { revision: 1 }),
            (create("u", Unique), R::AlreadyExists { revision: 1 }),
            (
                create("u", Duplicate),
                R::Refused(E::ModeConflict { existing: Unique }),
            ),
            (reg("u", "k", "1", A), registered(2)),
            // One owner per key, whoever asks (the owner too).
            (
                reg("u", "k", "2", B),
                R::AlreadyRegistered {
                    owner: A,
                    value: v("1"),
                },
            ),
            (
                reg("u", "k", "2", A),
                R::AlreadyRegistered {
                    owner: A,
                    value: v("1"),
                },
            ),
            (
                reg_or_get("u", "k", "3", B),
                R::Existing {
                    revision: 2,
                    entries: vec![entry(A, "1", 2, 2)],
                },
            ),
            (reg_or_get("u", "k2", "3", B), registered(3)),
            (reg("u", "k", "1", GONE), R::Refused(E::SessionNotFound)),
            // Only the owner's own entry can be removed or changed.
            (unreg("u", "k", B), R::NotRegistered),
            (update("u", "k", B, None, "x"), R::NotRegistered),
            (
                update("u", "k", A, Some("0"), "x"),
                R::ValueMismatch { current: v("1") },
            ),
            (
                update("u", "k", A, Some("1"), "x"),
                R::Updated {
                    revision: 4,
                    previous: v("1"),
                },
            ),
            (
                update("u", "k", A, None, "y"),
                R::Updated {
                    revision: 5,
                    previous: v("x"),
                },
            ),
            (unreg("u", "k", A), R::Unregistered { revision: 6 }),
            (unreg("u", "k", A), R::NotRegistered),
            (reg("u", "k", "b", B), registered(7)),
        ],
    );
    assert_eq!(read::lookup(&s, b"u", b"k"), vec![entry(B, "b", 7, 7)]);
    assert_eq!(read::count(&s, b"u", b"k"), 1);
    assert_eq!(read::keys_of(&s, b"u", B), vec![v("k"), v("k2")]);
    assert_eq!(read::keys_of(&s, b"u", A), Vec::<Vec<u8>>::new());
    assert_eq!(read::mode(&s, b"u"), Some(Unique));
    assert_eq!(read::mode(&s, b"nope"), None);
}

#[test]
fn duplicate_mode_semantics() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("d", Duplicate), R::Created { revision: 1 }),
            (reg("d", "k", "a", A), registered(2)),
            (reg("d", "k", "b", B), registered(3)),
            // Re-register by the same session replaces its value.
            (
                reg("d", "k", "a2", A),
                R::Registered {
                    revision: 4,
                    previous: Some(v("a")),
                },
            ),
            (
                reg_or_get("d", "k", "c", B),
                R::Existing {
                    revision: 4,
                    entries: vec![entry(A, "a2", 2, 4), entry(B, "b", 3, 3)],
                },
            ),
            (reg_or_get("d", "other", "c", B), registered(5)),
            (
                update("d", "k", B, Some("b"), "b2"),
                R::Updated {
                    revision: 6,
                    previous: v("b"),
                },
            ),
            (unreg("d", "k", A), R::Unregistered { revision: 7 }),
            (unreg("d", "k", A), R::NotRegistered),
            (update("d", "k", A, None, "z"), R::NotRegistered),
        ],
    );
    assert_eq!(read::lookup(&s, b"d", b"k"), vec![entry(B, "b2", 3, 6)]);
    assert_eq!(read::count(&s, b"d", b"k"), 1);
    assert_eq!(read::keys_of(&s, b"d", B), vec![v("k"), v("other")]);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![(create("u", Unique), R::Created { revision: 1 })],
    );
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    run(
        &mut s,
        vec![
            (
                create("a/b", Unique),
                R::Refused(E::Invalid("registry name: must not contain '/'".into())),
            ),
            (
                create("", Unique),
                R::Refused(E::Invalid("registry name: must not be empty".into())),
            ),
            (
                reg("u", "", "v", A),
                R::Refused(E::Invalid("key: must not be empty".into())),
            ),
            (
                reg("u", &long, "v", A),
                R::Refused(E::Invalid("key: longer than 1024 bytes".into())),
            ),
        ],
    );
    assert_eq!(s.revision(), 1);
}

#[test]
fn keys_containing_slashes_do_not_mix() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("d", Duplicate), R::Created { revision: 1 }),
            (reg("d", "a", "1", A), registered(2)),
            (reg("d", "a/b", "2", A), registered(3)),
            (reg("d", "a/000000000000000b", "3", B), registered(4)),
        ],
    );
    assert_eq!(read::count(&s, b"d", b"a"), 1);
    assert_eq!(read::count(&s, b"d", b"a/b"), 1);
    assert_eq!(
        read::lookup(&s, b"d", b"a/000000000000000b"),
        vec![entry(B, "3", 4, 4)]
    );
}

#[test]
fn a_name_no_registry_can_have_reads_as_empty() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("u", Unique), R::Created { revision: 1 }),
            (reg("u", "k0/k1", "1", A), registered(2)),
        ],
    );
    assert_eq!(read::count(&s, b"u", b"k0/k1"), 1);
    // Read as a prefix, "u/k0" reached into u's keys under "k0/".
    assert_eq!(read::lookup(&s, b"u/k0", b"k1"), vec![]);
    assert_eq!(read::count(&s, b"u/k0", b"k1"), 0);
    assert_eq!(read::keys_of(&s, b"u/k0", A), Vec::<Vec<u8>>::new());
    assert_eq!(read::list(&s, b"u/k0", b"", None, 10), Page::default());
    assert_eq!(read::list(&s, b"", b"", None, 10), Page::default());
}

#[test]
fn listing_pages_through_a_prefix() {
    let mut s = store_with_sessions();
    let mut table = vec![(create("d", Duplicate), R::Created { revision: 1 })];
    for (i, key) in ["p1", "p2", "p3", "q1"].iter().enumerate() {
        table.push((reg("d", key, "v", A), registered(i as i64 + 2)));
    }
    run(&mut s, table);
    let first = read::list(&s, b"d", b"p", None, 2);
    let keys: Vec<_> = first.entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![v("p1"), v("p2")]);
    let second = read::list(&s, b"d", b"p", first.next.as_deref(), 2);
    let keys: Vec<_> = second.entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![v("p3")]);
    assert_eq!(second.next, None);
}

fn join(kind: QueueKind, name: &str, session: i64, value: &str) -> C {
    C::Join {
        kind,
        name: v(name),
        session,
        value: v(value),
    }
}

fn leave(kind: QueueKind, name: &str, session: i64, token: i64) -> C {
    C::Leave {
        kind,
        name: v(name),
        session,
        token,
    }
}

#[test]
fn locks_queue_fifo_with_fencing_tokens() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (
                join(Lock, "L", A, ""),
                R::Joined {
                    revision: 1,
                    token: 1,
                    head: true,
                },
            ),
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 2,
                    token: 2,
                    head: false,
                },
            ),
            // Joining again reports the same place (written again, see
            // `an_abandoned_wait_leaves_only_a_place_nobody_joined_since`).
            (
                join(Lock, "L", A, ""),
                R::Joined {
                    revision: 3,
                    token: 1,
                    head: true,
                },
            ),
            (leave(Lock, "L", B, 1), R::NotHeld),
            (leave(Lock, "L", A, 2), R::NotHeld),
            (leave(Lock, "L", A, 1), R::Left { revision: 4 }),
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 5,
                    token: 2,
                    head: true,
                },
            ),
            (
                join(Lock, "L", A, ""),
                R::Joined {
                    revision: 6,
                    token: 6,
                    head: false,
                },
            ),
            (join(Lock, "L", GONE, ""), R::Refused(E::SessionNotFound)),
        ],
    );
    let q = read::queue(&s, Lock, b"L");
    assert_eq!(
        q.iter().map(|w| (w.session, w.token)).collect::<Vec<_>>(),
        vec![(B, 2), (A, 6)]
    );
    // Lock and election namespaces are separate.
    assert!(read::head(&s, Election, b"L").is_none());
}

/// A wait abandoned on one connection while the same session joins again
/// on another (a client's retry) must not take the place from the retry:
/// `Abandon` leaves only a place nobody joined (or wrote) since its own
/// call's `Join`.
#[test]
fn an_abandoned_wait_leaves_only_a_place_nobody_joined_since() {
    let abandon = |session, token, joined_at| C::Abandon {
        kind: Lock,
        name: v("L"),
        session,
        token,
        joined_at,
    };
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (
                join(Lock, "L", A, ""),
                R::Joined {
                    revision: 1,
                    token: 1,
                    head: true,
                },
            ),
            // B's first call joins at 2 and is abandoned; its retry joins
            // again at 3 before the first call's abandonment is applied.
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 2,
                    token: 2,
                    head: false,
                },
            ),
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 3,
                    token: 2,
                    head: false,
                },
            ),
            (abandon(B, 2, 2), R::NotHeld),
            // The retry, abandoned in turn, leaves.
            (abandon(B, 2, 3), R::Left { revision: 4 }),
            // Abandoned before any retry: left, and a retry queues anew.
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 5,
                    token: 5,
                    head: false,
                },
            ),
            (abandon(B, 5, 5), R::Left { revision: 6 }),
            (
                join(Lock, "L", B, ""),
                R::Joined {
                    revision: 7,
                    token: 7,
                    head: false,
                },
            ),
            // Another session's place, or another token, is never touched.
            (abandon(A, 7, 7), R::NotHeld),
            (abandon(B, 1, 7), R::NotHeld),
        ],
    );
    let q = read::queue(&s, Lock, b"L");
    assert_eq!(
        q.iter().map(|w| (w.session, w.token)).collect::<Vec<_>>(),
        vec![(A, 1), (B, 7)]
    );
}

#[test]
fn elections_proclaim_only_by_the_leader() {
    let mut s = store_with_sessions();
    let proclaim = |session, token, value: &str| C::Proclaim {
        name: v("E"),
        session,
        token,
        value: v(value),
    };
    run(
        &mut s,
        vec![
            (
                join(Election, "E", A, "a"),
                R::Joined {
                    revision: 1,
                    token: 1,
                    head: true,
                },
            ),
            (
                join(Election, "E", B, "b"),
                R::Joined {
                    revision: 2,
                    token: 2,
                    head: false,
                },
            ),
            (proclaim(B, 2, "b2"), R::NotLeader),
            (proclaim(A, 2, "a2"), R::NotHeld),
            (proclaim(A, 1, "a2"), R::Proclaimed { revision: 3 }),
            (leave(Election, "E", A, 1), R::Left { revision: 4 }),
            (proclaim(B, 2, "b2"), R::Proclaimed { revision: 5 }),
        ],
    );
    let leader = read::head(&s, Election, b"E").unwrap();
    assert_eq!((leader.session, leader.token), (B, 2));
    assert_eq!(leader.value, v("b2"));
}

#[test]
fn ending_a_session_removes_everything_it_owns_in_one_revision() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("u", Unique), R::Created { revision: 1 }),
            (create("d", Duplicate), R::Created { revision: 2 }),
            (reg("u", "mine", "1", A), registered(3)),
            (reg("d", "shared", "a", A), registered(4)),
            (reg("d", "shared", "b", B), registered(5)),
            (
                join(Lock, "L", A, ""),
                R::Joined {
                    revision: 6,
                    token: 6,
                    head: true,
                },
            ),
            (
                join(Election, "E", A, "a"),
                R::Joined {
                    revision: 7,
                    token: 7,
                    head: true,
                },
            ),
        ],
    );
    // Session A expires (only A's deadline has passed: B is kept alive).
    s.apply(&Command::LeaseKeepAlive {
        id: B,
        now_ms: 5_000,
    });
    let applied = s.apply(&Command::Tick {
        now_ms: 10_000,
        max_expiries: 10,
    });
    assert_eq!(
        applied.result,
        CommandResult::Tick {
            revision: 8,
            expired: vec![A]
        }
    );
    assert_eq!(applied.events.len(), 4);
    assert!(applied.events.iter().all(|e| e.kv.mod_revision == 8));
    assert_eq!(read::count(&s, b"u", b"mine"), 0);
    assert_eq!(read::lookup(&s, b"d", b"shared"), vec![entry(B, "b", 5, 5)]);
    assert!(read::head(&s, Lock, b"L").is_none());
    assert!(read::head(&s, Election, b"E").is_none());
    // Registries (no lease) stay.
    assert_eq!(read::mode(&s, b"u"), Some(Unique));
}

#[test]
fn etcd_writes_to_the_reserved_prefix_are_refused() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("u", Unique), R::Created { revision: 1 }),
            (reg("u", "k", "1", A), registered(2)),
        ],
    );
    let entry_key = keys::entry_key(b"u", b"k", A);
    let refused = |s: &mut Store, cmd: Command| {
        assert_eq!(
            s.apply(&cmd).result,
            CommandResult::Error(StoreError::ReservedPrefix),
            "{cmd:?}"
        );
    };
    refused(
        &mut s,
        Command::Put(PutRequest {
            key: entry_key.clone(),
            value: v("forged"),
            ..Default::default()
        }),
    );
    refused(
        &mut s,
        Command::Put(PutRequest {
            key: keys::mode_key(b"new"),
            value: v("unique"),
            ..Default::default()
        }),
    );
    refused(
        &mut s,
        Command::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(entry_key.clone()),
            prev_kv: false,
        }),
    );
    // "Every key" spans the prefix and would delete records: refused.
    refused(
        &mut s,
        Command::DeleteRange(DeleteRangeRequest {
            range: KeyRange::prefix(""),
            prev_kv: false,
        }),
    );
    refused(
        &mut s,
        Command::Txn(crate::TxnRequest {
            success: vec![crate::RequestOp::Put(PutRequest {
                key: entry_key,
                value: v("forged"),
                ..Default::default()
            })],
            ..Default::default()
        }),
    );
    assert_eq!(s.revision(), 2);
    // Reads are allowed, and deletes that miss the prefix still work.
    assert_eq!(read::lookup(&s, b"u", b"k"), vec![entry(A, "1", 2, 2)]);
    s.apply(&Command::Put(PutRequest {
        key: v("plain"),
        value: v("1"),
        ..Default::default()
    }));
    let r = s.apply(&Command::DeleteRange(DeleteRangeRequest {
        range: KeyRange::prefix("pl"),
        prev_kv: false,
    }));
    assert!(matches!(r.result, CommandResult::DeleteRange(d) if d.deleted == 1));
}

#[test]
fn a_spanning_delete_is_allowed_while_no_record_exists() {
    let mut s = store_with_sessions();
    s.apply(&Command::Put(PutRequest {
        key: v("a"),
        value: v("1"),
        ..Default::default()
    }));
    let r = s.apply(&Command::DeleteRange(DeleteRangeRequest {
        range: KeyRange::prefix(""),
        prev_kv: false,
    }));
    assert!(matches!(r.result, CommandResult::DeleteRange(d) if d.deleted == 1));
}

#[test]
fn registry_state_survives_snapshot_and_restore() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("u", Unique), R::Created { revision: 1 }),
            (reg("u", "k", "1", A), registered(2)),
        ],
    );
    let restored = Store::from_snapshot(s.snapshot().unwrap());
    assert_eq!(
        read::lookup(&restored, b"u", b"k"),
        vec![entry(A, "1", 2, 2)]
    );
    assert_eq!(read::keys_of(&restored, b"u", A), vec![v("k")]);
}

#[test]
fn over_quota_adding_is_refused_but_removing_is_not() {
    let mut s = store_with_sessions();
    run(
        &mut s,
        vec![
            (create("u", Unique), R::Created { revision: 1 }),
            (reg("u", "k", "1", A), registered(2)),
        ],
    );
    s.apply(&Command::Alarm {
        action: crate::AlarmAction::Activate,
        member_id: 0,
        alarm: crate::AlarmKind::NoSpace,
    });
    run(
        &mut s,
        vec![
            (reg("u", "k2", "1", A), R::Refused(E::NoSpace)),
            (join(Lock, "L", A, ""), R::Refused(E::NoSpace)),
            (unreg("u", "k", A), R::Unregistered { revision: 3 }),
        ],
    );
}
