//! Pure state-machine tests: commands in, results and state out.

use crate::*;

fn put(key: &str, value: &str) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn put_lease(key: &str, lease: i64) -> Command {
    Command::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
}

fn del(range: KeyRange) -> Command {
    Command::DeleteRange(DeleteRangeRequest {
        range,
        prev_kv: true,
    })
}

fn get(store: &Store, key: &str) -> Option<KeyValue> {
    store
        .range(&RangeRequest {
            range: KeyRange::single(key),
            ..Default::default()
        })
        .unwrap()
        .kvs
        .pop()
}

fn range(store: &Store, req: RangeRequest) -> RangeResponse {
    store.range(&req).unwrap()
}

fn ok(store: &mut Store, cmd: Command) -> CommandResult {
    let r = store.apply(&cmd).result;
    assert!(
        !matches!(r, CommandResult::Error(_)),
        "{cmd:?} failed: {r:?}"
    );
    r
}

fn err(store: &mut Store, cmd: Command) -> StoreError {
    match store.apply(&cmd).result {
        CommandResult::Error(e) => e,
        other => panic!("{cmd:?} should fail, got {other:?}"),
    }
}

fn seeded(keys: &[(&str, &str)]) -> Store {
    let mut s = Store::new();
    for (k, v) in keys {
        ok(&mut s, put(k, v));
    }
    s
}

#[test]
fn puts_advance_one_global_revision_and_track_versions() {
    let mut s = Store::new();
    ok(&mut s, put("a", "1"));
    ok(&mut s, put("b", "1"));
    ok(&mut s, put("a", "2"));
    let a = get(&s, "a").unwrap();
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (1, 3, 2, &b"2"[..])
    );
    assert_eq!(s.revision(), 3);
    // Delete resets the generation: version and create_revision start over.
    ok(&mut s, del(KeyRange::single("a")));
    assert!(get(&s, "a").is_none());
    ok(&mut s, put("a", "3"));
    let a = get(&s, "a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
}

#[test]
fn put_options_prev_kv_ignore_value_ignore_lease() {
    let mut s = seeded(&[("k", "old")]);
    let r = ok(
        &mut s,
        Command::Put(PutRequest {
            key: "k".into(),
            value: "new".into(),
            prev_kv: true,
            ..Default::default()
        }),
    );
    let CommandResult::Put(p) = r else { panic!() };
    assert_eq!(p.prev_kv.unwrap().value, b"old");
    let CommandResult::LeaseGrant(l) = ok(
        &mut s,
        Command::LeaseGrant {
            id: 7,
            ttl_secs: 10,
            now_ms: 0,
        },
    ) else {
        panic!()
    };
    ok(
        &mut s,
        Command::Put(PutRequest {
            key: "k".into(),
            lease: l.id,
            ignore_value: true,
            ..Default::default()
        }),
    );
    let k = get(&s, "k").unwrap();
    assert_eq!((k.value.as_slice(), k.lease), (&b"new"[..], 7));
    ok(
        &mut s,
        Command::Put(PutRequest {
            key: "k".into(),
            value: "x".into(),
            ignore_lease: true,
            ..Default::default()
        }),
    );
    assert_eq!(get(&s, "k").unwrap().lease, 7);

    let rev = s.revision();
    assert_eq!(
        err(
            &mut s,
            Command::Put(PutRequest {
                key: "nope".into(),
                ignore_value: true,
                ..Default::default()
            })
        ),
        StoreError::KeyNotFound
    );
    assert_eq!(
        err(
            &mut s,
            Command::Put(PutRequest {
                key: "k".into(),
                value: "v".into(),
                ignore_value: true,
                ..Default::default()
            })
        ),
        StoreError::ValueProvided
    );
    assert_eq!(err(&mut s, put_lease("k", 99)), StoreError::LeaseNotFound);
    assert_eq!(err(&mut s, put("", "v")), StoreError::EmptyKey);
    assert_eq!(s.revision(), rev, "rejected commands change nothing");
}

#[test]
fn range_limit_more_count_sort_and_filters() {
    let s = seeded(&[("a", "3"), ("b", "2"), ("c", "1"), ("d", "0"), ("e", "9")]);
    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::new("a", "e"),
            limit: 2,
            ..Default::default()
        },
    );
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert!(r.more);
    assert_eq!(r.count, 4);

    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::new("a", vec![0]),
            ..Default::default()
        },
    );
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));

    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::prefix(""),
            sort_target: SortTarget::Value,
            limit: 2,
            ..Default::default()
        },
    );
    // Empty prefix means every key; sort by value ascending by default when target != key.
    assert_eq!(
        r.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(),
        vec![b"0".to_vec(), b"1".to_vec()]
    );
    assert!(r.more);

    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::new("a", vec![0]),
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            limit: 1,
            ..Default::default()
        },
    );
    assert_eq!(r.kvs[0].key, b"e");

    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::new("a", vec![0]),
            min_mod_revision: 2,
            max_mod_revision: 3,
            ..Default::default()
        },
    );
    assert_eq!(
        r.kvs.iter().map(|kv| kv.mod_revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(r.count, 5, "count is before filters, as in etcd");

    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::prefix("a"),
            keys_only: true,
            ..Default::default()
        },
    );
    assert!(r.kvs[0].value.is_empty());
    let r = range(
        &s,
        RangeRequest {
            range: KeyRange::new("a", vec![0]),
            count_only: true,
            ..Default::default()
        },
    );
    assert_eq!((r.kvs.len(), r.count), (0, 5));
}

#[test]
fn historical_reads_compaction_and_revision_errors() {
    let mut s = seeded(&[("k", "1"), ("k", "2"), ("k", "3")]);
    let at = |s: &Store, rev| {
        s.range(&RangeRequest {
            range: KeyRange::single("k"),
            revision: rev,
            ..Default::default()
        })
    };
    assert_eq!(at(&s, 1).unwrap().kvs[0].value, b"1");
    assert_eq!(at(&s, 2).unwrap().kvs[0].value, b"2");
    assert_eq!(
        at(&s, 4),
        Err(StoreError::FutureRevision {
            current_revision: 3
        })
    );
    ok(&mut s, Command::Compact { revision: 2 });
    assert_eq!(
        at(&s, 1),
        Err(StoreError::Compacted {
            compact_revision: 2
        })
    );
    assert_eq!(
        at(&s, 2).unwrap().kvs[0].value,
        b"2",
        "the state at the compact revision is kept"
    );
    assert_eq!(
        err(&mut s, Command::Compact { revision: 2 }),
        StoreError::Compacted {
            compact_revision: 2
        }
    );
    assert_eq!(
        err(&mut s, Command::Compact { revision: 9 }),
        StoreError::FutureRevision {
            current_revision: 3
        }
    );
    let changes = s.take_changes();
    assert_eq!(changes.records_removed, vec![Revision::new(1, 0)]);
}

#[test]
fn compaction_drops_deleted_keys_entirely() {
    let mut s = seeded(&[("a", "1")]);
    ok(&mut s, del(KeyRange::single("a")));
    ok(&mut s, put("b", "1"));
    let before = s.size_bytes();
    ok(&mut s, Command::Compact { revision: 3 });
    assert!(s.size_bytes() < before);
    assert_eq!(s.snapshot().unwrap().records.len(), 1, "only b@3 remains");
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        range: KeyRange::single(key),
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Command {
    Command::Txn(TxnRequest {
        compare,
        success,
        failure,
    })
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
}

#[test]
fn txn_compare_table() {
    use CompareResult::*;
    use CompareTarget::*;
    let s = seeded(&[("k", "b"), ("k", "c")]); // k: version 2, create 1, mod 2
    let cases = [
        (cmp("k", Equal, Version(2)), true),
        (cmp("k", Greater, Version(1)), true),
        (cmp("k", Less, Version(2)), false),
        (cmp("k", NotEqual, Version(2)), false),
        (cmp("k", Equal, Create(1)), true),
        (cmp("k", Equal, Mod(2)), true),
        (cmp("k", Greater, Value(b"b".to_vec())), true),
        (cmp("k", Equal, Value(b"c".to_vec())), true),
        (cmp("k", Equal, Lease(0)), true),
        // A missing key compares as zeros, except on value where it fails.
        (cmp("missing", Equal, Version(0)), true),
        (cmp("missing", Equal, Create(0)), true),
        (cmp("missing", Equal, Value(vec![])), false),
        (cmp("missing", NotEqual, Value(b"x".to_vec())), false),
    ];
    for (c, expect) in cases {
        let mut s = s.clone();
        let CommandResult::Txn(r) = ok(&mut s, txn(vec![c.clone()], vec![], vec![])) else {
            panic!()
        };
        assert_eq!(r.succeeded, expect, "{c:?}");
    }
}

#[test]
fn txn_compare_over_a_range_needs_every_key() {
    let s = seeded(&[("p/a", "1"), ("p/b", "1"), ("p/c", "2")]);
    let c = Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Value(b"1".to_vec()),
        range: KeyRange::prefix("p/"),
    };
    let mut s1 = s.clone();
    let CommandResult::Txn(r) = ok(&mut s1, txn(vec![c], vec![], vec![])) else {
        panic!()
    };
    assert!(!r.succeeded);
    let c = Compare {
        result: CompareResult::Greater,
        target: CompareTarget::Create(0),
        range: KeyRange::prefix("p/"),
    };
    let mut s2 = s;
    let CommandResult::Txn(r) = ok(&mut s2, txn(vec![c], vec![], vec![])) else {
        panic!()
    };
    assert!(r.succeeded);
}

#[test]
fn txn_branches_share_one_revision_and_reads_see_earlier_writes() {
    let mut s = seeded(&[("x", "0")]);
    let ops = vec![
        op_put("a", "1"),
        op_put("b", "2"),
        RequestOp::Range(RangeRequest {
            range: KeyRange::single("a"),
            ..Default::default()
        }),
    ];
    let c = cmp(
        "x",
        CompareResult::Equal,
        CompareTarget::Value(b"0".to_vec()),
    );
    let CommandResult::Txn(r) = ok(&mut s, txn(vec![c], ops, vec![op_put("f", "f")])) else {
        panic!()
    };
    assert!(r.succeeded);
    assert_eq!(r.revision, 2);
    let ResponseOp::Range(rr) = &r.responses[2] else {
        panic!()
    };
    assert_eq!(rr.kvs[0].value, b"1");
    assert_eq!(get(&s, "a").unwrap().mod_revision, 2);
    assert_eq!(get(&s, "b").unwrap().mod_revision, 2);
    assert!(get(&s, "f").is_none());
}

#[test]
fn txn_read_only_does_not_advance_revision() {
    let mut s = seeded(&[("x", "0")]);
    let read = RequestOp::Range(RangeRequest {
        range: KeyRange::single("x"),
        ..Default::default()
    });
    let CommandResult::Txn(r) = ok(&mut s, txn(vec![], vec![read], vec![])) else {
        panic!()
    };
    assert_eq!((r.revision, s.revision()), (1, 1));
}

#[test]
fn nested_txn_and_atomic_rejection() {
    let mut s = seeded(&[("x", "0")]);
    let inner = TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Version(1))],
        success: vec![op_put("inner", "yes")],
        failure: vec![op_put("inner", "no")],
    };
    let CommandResult::Txn(r) = ok(
        &mut s,
        txn(
            vec![],
            vec![op_put("outer", "1"), RequestOp::Txn(inner)],
            vec![],
        ),
    ) else {
        panic!()
    };
    let ResponseOp::Txn(ir) = &r.responses[1] else {
        panic!()
    };
    assert!(ir.succeeded);
    assert_eq!(get(&s, "inner").unwrap().value, b"yes");

    // A bad op anywhere on the path rejects the whole txn, nothing written.
    let rev = s.revision();
    let bad = txn(
        vec![],
        vec![
            op_put("ok", "1"),
            RequestOp::Put(PutRequest {
                key: "k".into(),
                lease: 5,
                ..Default::default()
            }),
        ],
        vec![],
    );
    assert_eq!(err(&mut s, bad), StoreError::LeaseNotFound);
    assert!(get(&s, "ok").is_none());
    assert_eq!(s.revision(), rev);
    assert_eq!(
        err(
            &mut s,
            txn(vec![], vec![op_put("a", "1"), op_put("a", "2")], vec![])
        ),
        StoreError::DuplicateKey
    );
}

#[test]
fn lease_keys_go_with_the_lease_in_one_revision() {
    let mut s = Store::new();
    ok(
        &mut s,
        Command::LeaseGrant {
            id: 1,
            ttl_secs: 5,
            now_ms: 1000,
        },
    );
    ok(&mut s, put_lease("a", 1));
    ok(&mut s, put_lease("b", 1));
    ok(&mut s, put("c", "keep"));
    assert_eq!(
        s.lease_info(1).unwrap().keys,
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    let applied = s.apply(&Command::LeaseRevoke { id: 1 });
    assert_eq!(applied.events.len(), 2);
    assert!(applied
        .events
        .iter()
        .all(|e| e.kv.mod_revision == 4 && e.kind == EventKind::Delete));
    assert!(get(&s, "a").is_none() && get(&s, "c").is_some());
    assert_eq!(
        err(&mut s, Command::LeaseRevoke { id: 1 }),
        StoreError::LeaseNotFound
    );
}

#[test]
fn lease_grant_rules() {
    let mut s = Store::new();
    let CommandResult::LeaseGrant(g) = ok(
        &mut s,
        Command::LeaseGrant {
            id: 0,
            ttl_secs: 1,
            now_ms: 0,
        },
    ) else {
        panic!()
    };
    assert!(g.id > 0, "generated id is positive");
    assert_eq!(g.ttl_secs, MIN_LEASE_TTL_SECS, "TTL raised to the minimum");
    assert_eq!(
        err(
            &mut s,
            Command::LeaseGrant {
                id: g.id,
                ttl_secs: 5,
                now_ms: 0
            }
        ),
        StoreError::LeaseExists
    );
    assert!(matches!(
        err(
            &mut s,
            Command::LeaseGrant {
                id: 9,
                ttl_secs: MAX_LEASE_TTL_SECS + 1,
                now_ms: 0
            }
        ),
        StoreError::LeaseTtlTooLarge { .. }
    ));
    // Generated IDs are deterministic: another store picks the same one.
    let mut t = Store::new();
    let CommandResult::LeaseGrant(g2) = ok(
        &mut t,
        Command::LeaseGrant {
            id: 0,
            ttl_secs: 5,
            now_ms: 0,
        },
    ) else {
        panic!()
    };
    assert_eq!(g.id, g2.id);
}

#[test]
fn ticks_expire_due_leases_and_keepalive_extends() {
    let mut s = Store::new();
    ok(
        &mut s,
        Command::LeaseGrant {
            id: 1,
            ttl_secs: 10,
            now_ms: 0,
        },
    );
    ok(
        &mut s,
        Command::LeaseGrant {
            id: 2,
            ttl_secs: 10,
            now_ms: 0,
        },
    );
    ok(&mut s, put_lease("k1", 1));
    ok(
        &mut s,
        Command::LeaseKeepAlive {
            id: 2,
            now_ms: 5_000,
        },
    );
    let CommandResult::Tick { expired, .. } = ok(
        &mut s,
        Command::Tick {
            now_ms: 9_999,
            max_expiries: 100,
        },
    ) else {
        panic!()
    };
    assert!(expired.is_empty());
    let CommandResult::Tick { expired, .. } = ok(
        &mut s,
        Command::Tick {
            now_ms: 10_000,
            max_expiries: 100,
        },
    ) else {
        panic!()
    };
    assert_eq!(expired, vec![1]);
    assert!(get(&s, "k1").is_none());
    assert_eq!(s.lease_info(2).unwrap().remaining_ms, 5_000);
    // Time never goes backwards.
    ok(
        &mut s,
        Command::Tick {
            now_ms: 1,
            max_expiries: 100,
        },
    );
    assert_eq!(s.now_ms(), 10_000);
}

#[test]
fn expiry_storm_is_rate_limited_per_tick() {
    let mut s = Store::new();
    for id in 1..=10 {
        ok(
            &mut s,
            Command::LeaseGrant {
                id,
                ttl_secs: 2,
                now_ms: 0,
            },
        );
        ok(&mut s, put_lease(&format!("k{id}"), id));
    }
    let CommandResult::Tick { expired, .. } = ok(
        &mut s,
        Command::Tick {
            now_ms: 60_000,
            max_expiries: 4,
        },
    ) else {
        panic!()
    };
    assert_eq!(expired.len(), 4);
    assert_eq!(s.lease_ids().len(), 6);
    // Each expired lease deletes its keys at its own revision.
    let revs: Vec<i64> = (1..=4).map(|i| 10 + i).collect();
    assert_eq!(s.revision(), *revs.last().unwrap());
}

#[test]
fn watch_history_is_ordered_grouped_and_compaction_aware() {
    let mut s = Store::new();
    ok(&mut s, put("a", "1"));
    ok(
        &mut s,
        txn(vec![], vec![op_put("b", "1"), op_put("c", "1")], vec![]),
    );
    ok(&mut s, del(KeyRange::single("a")));
    let (events, next) = s
        .events_since(1, &KeyRange::new(vec![0], vec![0]), 1000)
        .unwrap();
    let shape: Vec<(i64, EventKind)> = events.iter().map(|e| (e.kv.mod_revision, e.kind)).collect();
    assert_eq!(
        shape,
        vec![
            (1, EventKind::Put),
            (2, EventKind::Put),
            (2, EventKind::Put),
            (3, EventKind::Delete)
        ]
    );
    assert_eq!(next, 4);
    assert_eq!(events[3].prev_kv.as_ref().unwrap().value, b"1");
    // A page limit never splits a revision.
    let (events, next) = s
        .events_since(2, &KeyRange::new(vec![0], vec![0]), 1)
        .unwrap();
    assert_eq!((events.len(), next), (2, 3));
    let (events, _) = s.events_since(1, &KeyRange::single("c"), 1000).unwrap();
    assert_eq!(events.len(), 1);
    ok(&mut s, Command::Compact { revision: 3 });
    assert_eq!(
        s.events_since(2, &KeyRange::single("c"), 10),
        Err(StoreError::Compacted {
            compact_revision: 3
        })
    );
}

#[test]
fn snapshot_restore_round_trip_preserves_state_and_hash() {
    let mut s = Store::new();
    ok(
        &mut s,
        Command::LeaseGrant {
            id: 3,
            ttl_secs: 30,
            now_ms: 100,
        },
    );
    ok(&mut s, put_lease("l", 3));
    ok(&mut s, put("a", "1"));
    ok(&mut s, put("a", "2"));
    ok(&mut s, del(KeyRange::single("a")));
    ok(&mut s, Command::Compact { revision: 2 });
    let snap = s.snapshot().unwrap();
    let bytes = postcard::to_allocvec(&snap).unwrap();
    let restored = Store::from_snapshot(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(restored.hash_kv(0), s.hash_kv(0));
    assert_eq!(restored.meta(), s.meta());
    assert_eq!(restored.lease_info(3), s.lease_info(3));
    assert_eq!(restored.size_bytes(), s.size_bytes());
    let mut r2 = restored;
    // Both continue identically.
    for st in [&mut s, &mut r2] {
        st.apply(&put("z", "1"));
    }
    assert_eq!(r2.hash_kv(0), s.hash_kv(0));
}

#[test]
fn nospace_alarm_blocks_puts_but_not_deletes() {
    let mut s = seeded(&[("a", "1")]);
    ok(
        &mut s,
        Command::Alarm {
            action: AlarmAction::Activate,
            member_id: 1,
            alarm: AlarmKind::NoSpace,
        },
    );
    assert_eq!(err(&mut s, put("b", "1")), StoreError::NoSpace);
    assert_eq!(
        err(&mut s, txn(vec![], vec![op_put("b", "1")], vec![])),
        StoreError::NoSpace
    );
    assert_eq!(
        err(
            &mut s,
            Command::LeaseGrant {
                id: 0,
                ttl_secs: 5,
                now_ms: 0
            }
        ),
        StoreError::NoSpace
    );
    ok(&mut s, del(KeyRange::single("a")));
    ok(
        &mut s,
        Command::Alarm {
            action: AlarmAction::Deactivate,
            member_id: 1,
            alarm: AlarmKind::NoSpace,
        },
    );
    ok(&mut s, put("b", "1"));
}

#[test]
fn changes_list_what_to_persist() {
    let mut s = Store::new();
    ok(&mut s, put("a", "1"));
    ok(
        &mut s,
        Command::LeaseGrant {
            id: 4,
            ttl_secs: 5,
            now_ms: 0,
        },
    );
    let c = s.take_changes();
    let a: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"a"[..]);
    assert_eq!(c.records_added, vec![(Revision::new(1, 0), a)]);
    assert_eq!(c.leases.into_iter().collect::<Vec<_>>(), vec![4]);
    assert!(s.take_changes().is_empty());
}

#[test]
fn a_record_is_found_by_key_and_revision_newest_or_older() {
    let mut s = seeded(&[("a", "1"), ("b", "x"), ("a", "2"), ("a", "3")]);
    let added: Vec<_> = s.take_changes().records_added;
    assert_eq!(added.len(), 4);
    for (rev, key) in &added {
        let (found_key, record) = s.record_of(key, *rev).expect("just added");
        assert_eq!(found_key, &key[..]);
        assert_eq!(record.rev, *rev);
        assert_eq!(s.record_at(*rev).map(|(_, r)| r.rev), Some(*rev));
    }
    // The newest record of "a" and an older one, by their revisions.
    assert_eq!(s.record_of(b"a", Revision::new(4, 0)).unwrap().1.version, 3);
    assert_eq!(s.record_of(b"a", Revision::new(1, 0)).unwrap().1.version, 1);
    // A revision of another key, and a key never written.
    assert!(s.record_of(b"a", Revision::new(2, 0)).is_none());
    assert!(s.record_of(b"c", Revision::new(1, 0)).is_none());
}

#[test]
fn restamp_replaces_the_time_of_commands_that_carry_one() {
    use crate::claims::{ClaimKey, ClaimsCommand};
    let mut timed = vec![
        Command::LeaseGrant {
            id: 0,
            ttl_secs: 5,
            now_ms: 1,
        },
        Command::LeaseKeepAlive { id: 7, now_ms: 1 },
        Command::Tick {
            now_ms: 1,
            max_expiries: 10,
        },
        Command::Claims(ClaimsCommand::CanOffload {
            namespace: "ns".into(),
            session_id: 7,
            keys: vec![ClaimKey::U64(1)],
            now_ms: 1,
        }),
    ];
    for c in &mut timed {
        c.restamp(9_000);
        let at = match c {
            Command::LeaseGrant { now_ms, .. }
            | Command::LeaseKeepAlive { now_ms, .. }
            | Command::Tick { now_ms, .. } => *now_ms,
            Command::Claims(c) => c.now_ms().unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at, 9_000, "{c:?}");
    }
    let mut untimed = put("k", "v");
    untimed.restamp(9_000);
    assert_eq!(untimed, put("k", "v"));
}

#[test]
fn without_events_a_store_answers_and_changes_exactly_as_with_them() {
    let with_prev = |key: &str, value: &str| {
        Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: true,
            ..Default::default()
        })
    };
    let keep_value = Command::Put(PutRequest {
        key: "a".into(),
        ignore_value: true,
        ..Default::default()
    });
    let commands = vec![
        put("a", "1"),
        with_prev("a", "2"),
        with_prev("new", "n"),
        keep_value,
        Command::LeaseGrant {
            id: 7,
            ttl_secs: 5,
            now_ms: 0,
        },
        put_lease("leased", 7),
        txn(
            vec![cmp("a", CompareResult::Equal, CompareTarget::Version(3))],
            vec![
                op_put("t", "1"),
                RequestOp::Range(RangeRequest {
                    range: KeyRange::single("t"),
                    ..Default::default()
                }),
            ],
            vec![],
        ),
        // A txn whose branch writes nothing: the revision stays.
        txn(vec![], vec![], vec![]),
        del(KeyRange::prefix("n")),
        Command::LeaseRevoke { id: 7 },
        with_prev("a", "3"),
    ];
    let mut with = Store::new();
    let mut without = Store::new();
    without.set_events_wanted(false);
    let mut events_with = 0;
    for cmd in &commands {
        let a = with.apply(cmd);
        let b = without.apply(cmd);
        assert_eq!(a.result, b.result, "{cmd:?}");
        assert!(b.events.is_empty(), "{cmd:?} built events");
        events_with += a.events.len();
        assert_eq!(with.revision(), without.revision(), "{cmd:?}");
        assert_eq!(with.take_changes(), without.take_changes(), "{cmd:?}");
    }
    assert_eq!(events_with, 9, "puts, the txn's put, two deletes");
    assert_eq!(with.snapshot().unwrap(), without.snapshot().unwrap());
    // Turned back on, events flow again.
    without.set_events_wanted(true);
    assert_eq!(without.apply(&put("a", "4")).events.len(), 1);
}

#[test]
fn a_corrupt_alarm_stops_every_change_until_disarmed() {
    let mut s = Store::new();
    s.apply(&Command::LeaseGrant {
        id: 7,
        ttl_secs: 1,
        now_ms: 0,
    });
    s.apply(&put_lease("leased", 7));
    let alarm = |action| Command::Alarm {
        action,
        member_id: 2,
        alarm: AlarmKind::Corrupt,
    };
    s.apply(&alarm(AlarmAction::Activate));
    assert!(s.corrupt());
    let rev = s.revision();
    for cmd in [
        put("k", "v"),
        del(KeyRange::single("leased")),
        Command::Compact { revision: 1 },
        Command::LeaseGrant {
            id: 8,
            ttl_secs: 10,
            now_ms: 0,
        },
        Command::LeaseRevoke { id: 7 },
    ] {
        assert_eq!(
            s.apply(&cmd).result,
            CommandResult::Error(StoreError::Corrupt),
            "{cmd:?}"
        );
    }
    // Time goes on, but an expired lease deletes nothing.
    s.apply(&Command::Tick {
        now_ms: 5_000,
        max_expiries: 10,
    });
    assert_eq!(s.revision(), rev);
    assert!(get(&s, "leased").is_some());
    // Disarmed: the lease expires at the next tick, writes go again.
    s.apply(&alarm(AlarmAction::Deactivate));
    s.apply(&Command::Tick {
        now_ms: 5_100,
        max_expiries: 10,
    });
    assert!(get(&s, "leased").is_none());
    assert!(matches!(
        s.apply(&put("k", "v")).result,
        CommandResult::Put(_)
    ));
}
