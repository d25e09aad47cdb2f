//! Claims state machine tests, through `Store::apply` as the server uses it.

use super::*;
use crate::{Command, CommandResult, Store};

const NS: &str = "blocks";

struct World {
    store: Store,
    now_ms: u64,
}

impl World {
    fn new(config: NamespaceConfig) -> World {
        let mut w = World {
            store: Store::new(),
            now_ms: 1_000,
        };
        w.ok(ClaimsCommand::CreateNamespace {
            name: NS.into(),
            config,
        });
        w
    }

    fn with_policy(capacity: u64, eviction: EvictionPolicy) -> World {
        World::new(NamespaceConfig {
            capacity,
            eviction,
            ..Default::default()
        })
    }

    fn run(&mut self, c: ClaimsCommand) -> ClaimsResult {
        match self.store.apply(&Command::Claims(c)).result {
            CommandResult::Claims(r) => r,
            other => panic!("unexpected result {other:?}"),
        }
    }

    fn ok(&mut self, c: ClaimsCommand) -> ClaimsOutput {
        self.run(c).expect("claims command").output
    }

    fn session(&mut self, ttl_secs: i64) -> i64 {
        match self
            .store
            .apply(&Command::LeaseGrant {
                id: 0,
                ttl_secs,
                now_ms: self.now_ms,
            })
            .result
        {
            CommandResult::LeaseGrant(g) => g.id,
            other => panic!("lease grant: {other:?}"),
        }
    }

    fn offload(&mut self, session_id: i64, keys: &[u64]) -> Vec<OffloadStatus> {
        match self.ok(ClaimsCommand::CanOffload {
            namespace: NS.into(),
            session_id,
            keys: keys.iter().map(|k| ClaimKey::U64(*k)).collect(),
            now_ms: self.now_ms,
        }) {
            ClaimsOutput::CanOffload { statuses, .. } => statuses,
            other => panic!("{other:?}"),
        }
    }

    /// (entries removed, leases released).
    fn remove(&mut self, keys: &[u64]) -> (u64, u64) {
        match self.ok(ClaimsCommand::Remove {
            namespace: NS.into(),
            keys: World::keys(keys),
            now_ms: self.now_ms,
        }) {
            ClaimsOutput::Remove {
                removed,
                leases_released,
            } => (removed, leases_released),
            other => panic!("{other:?}"),
        }
    }

    /// Stored entries present.
    fn touch(&mut self, keys: &[u64]) -> u64 {
        match self.ok(ClaimsCommand::Touch {
            namespace: NS.into(),
            keys: World::keys(keys),
            now_ms: self.now_ms,
        }) {
            ClaimsOutput::Touch { present } => present,
            other => panic!("{other:?}"),
        }
    }

    fn register_chain(
        &mut self,
        session_id: i64,
        entries: &[(u64, Option<u64>)],
    ) -> Vec<RegisterStatus> {
        let entries = entries
            .iter()
            .map(|(k, parent)| RegisterEntry {
                key: ClaimKey::U64(*k),
                value: format!("v{k}").into_bytes(),
                metadata: Vec::new(),
                parent: parent.map(ClaimKey::U64),
                position: None,
            })
            .collect();
        self.register_entries(session_id, entries)
    }

    fn register_entries(
        &mut self,
        session_id: i64,
        entries: Vec<RegisterEntry>,
    ) -> Vec<RegisterStatus> {
        match self.ok(ClaimsCommand::Register {
            namespace: NS.into(),
            session_id,
            entries,
            now_ms: self.now_ms,
        }) {
            ClaimsOutput::Register { statuses, .. } => statuses,
            other => panic!("{other:?}"),
        }
    }

    fn register(&mut self, session_id: i64, keys: &[u64]) -> Vec<RegisterStatus> {
        let entries: Vec<(u64, Option<u64>)> = keys.iter().map(|k| (*k, None)).collect();
        self.register_chain(session_id, &entries)
    }

    fn tick(&mut self, advance_ms: u64) {
        self.now_ms += advance_ms;
        self.store.apply(&Command::Tick {
            now_ms: self.now_ms,
            max_expiries: 100,
        });
    }

    fn stored_keys(&self) -> Vec<u64> {
        let all: Vec<ClaimKey> = (0..200).map(ClaimKey::U64).collect();
        self.store
            .claims()
            .match_all(NS, &all)
            .unwrap()
            .into_iter()
            .map(|(_, v)| match v.key {
                ClaimKey::U64(k) => k,
                _ => unreachable!(),
            })
            .collect()
    }

    fn stats(&self) -> NamespaceStats {
        self.store.claims().stats(NS).unwrap()
    }

    fn keys(keys: &[u64]) -> Vec<ClaimKey> {
        keys.iter().map(|k| ClaimKey::U64(*k)).collect()
    }
}

use OffloadStatus::{AlreadyStored as Stored_, Granted, Leased};
use RegisterStatus::{AlreadyStored, LeasedByOther, RejectedFull, Stored};

#[test]
fn every_offload_status_transition() {
    let mut w = World::new(NamespaceConfig::default());
    let (a, b) = (w.session(60), w.session(60));
    // free → granted; held by other → leased; own re-ask → granted (refresh)
    assert_eq!(w.offload(a, &[1, 2]), vec![Granted, Granted]);
    assert_eq!(w.offload(b, &[1, 3]), vec![Leased, Granted]);
    assert_eq!(w.offload(a, &[1]), vec![Granted]);
    // holder registers → stored; everyone now sees AlreadyStored
    assert_eq!(w.register(a, &[1]), vec![Stored]);
    assert_eq!(w.offload(a, &[1]), vec![Stored_]);
    assert_eq!(w.offload(b, &[1]), vec![Stored_]);
    assert_eq!(w.register(b, &[1]), vec![AlreadyStored]);
    let s = w.stats();
    assert_eq!(s.entries, 1);
    assert_eq!(s.active_leases, 2, "a holds 2, b holds 3");
    assert_eq!(
        s.counters,
        ClaimCounters {
            granted: 3,
            refreshed: 1,
            denied: 1,
            already_stored: 2,
            converted: 1,
            registered: 1,
            ..Default::default()
        }
    );
}

/// Logs written before keys were packed hold `CanOffload` with listed
/// keys at the variant index `CanOffloadListed` now has: such an entry
/// still decodes and applies exactly as the packed command does.
#[test]
fn a_can_offload_from_an_old_log_applies_as_a_packed_one() {
    let offload = |listed: bool, session_id, keys: &[u64]| {
        let keys = keys.iter().map(|k| ClaimKey::U64(*k)).collect();
        let (namespace, now_ms) = (NS.to_string(), 1_000);
        if listed {
            ClaimsCommand::CanOffloadListed {
                namespace,
                session_id,
                keys,
                now_ms,
            }
        } else {
            ClaimsCommand::CanOffload {
                namespace,
                session_id,
                keys,
                now_ms,
            }
        }
    };
    // The variant indexes are the log format: pinned.
    let encoded = |c: &ClaimsCommand| postcard::to_allocvec(c).unwrap();
    assert_eq!(encoded(&offload(true, 7, &[1]))[0], 1);
    assert_eq!(encoded(&offload(false, 7, &[1]))[0], 5);
    // The listed form: index, namespace, session (zigzag), count, then a
    // tagged varint per key, then now_ms.
    let mut old = vec![1, 6];
    old.extend_from_slice(NS.as_bytes());
    old.extend_from_slice(&[14, 2, 0, 1, 0, 2, 0xe8, 0x07]);
    let decoded: ClaimsCommand = postcard::from_bytes(&old).unwrap();
    assert_eq!(decoded, offload(true, 7, &[1, 2]));

    let mut answers = Vec::new();
    for listed in [true, false] {
        let mut w = World::new(NamespaceConfig::default());
        let (a, b) = (w.session(60), w.session(60));
        let mut statuses = Vec::new();
        for (session, keys) in [(a, &[1, 2][..]), (b, &[2, 3]), (a, &[1])] {
            let cmd = offload(listed, session, keys);
            let cmd: ClaimsCommand = postcard::from_bytes(&encoded(&cmd)).unwrap();
            match w.ok(cmd) {
                ClaimsOutput::CanOffload { statuses: s, .. } => statuses.push(s),
                other => panic!("{other:?}"),
            }
        }
        answers.push((statuses, w.stats()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(
        answers[0].0,
        vec![vec![Granted, Granted], vec![Leased, Granted], vec![Granted]]
    );
}

#[test]
fn lease_expires_at_deadline_and_refresh_extends_it() {
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 10_000,
        ..Default::default()
    });
    let (a, b) = (w.session(600), w.session(600));
    assert_eq!(w.offload(a, &[7, 8]), vec![Granted, Granted]);
    w.now_ms += 6_000;
    assert_eq!(w.offload(a, &[7]), vec![Granted], "refresh 7 at t+6s");
    w.now_ms += 4_000; // t+10s: 8 expired (lazily on access), 7 lives to t+16s
    assert_eq!(w.offload(b, &[7, 8]), vec![Leased, Granted]);
    assert_eq!(w.stats().counters.expired, 1);
    w.now_ms += 5_999;
    assert_eq!(w.offload(b, &[7]), vec![Leased], "1 ms before the deadline");
    w.now_ms += 1;
    assert_eq!(w.offload(b, &[7]), vec![Granted], "at the deadline");
    assert_eq!(w.stats().counters.expired, 2);
}

#[test]
fn tick_expires_due_claim_leases_without_access() {
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 5_000,
        ..Default::default()
    });
    let a = w.session(600);
    w.offload(a, &[1, 2, 3]);
    w.tick(4_999);
    assert_eq!(w.stats().active_leases, 3);
    w.tick(1);
    let s = w.stats();
    assert_eq!((s.active_leases, s.counters.expired), (0, 3));
    assert_eq!(w.store.claims().leases_of(a), 0);
    assert_eq!(w.store.claims().next_deadline_ms(), None);
}

#[test]
fn register_after_expiry_by_another_session_stores_the_entry() {
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 2_000,
        ..Default::default()
    });
    let (a, b) = (w.session(600), w.session(600));
    w.offload(a, &[5]);
    w.now_ms += 2_000;
    assert_eq!(w.register(b, &[5]), vec![Stored]);
    // The late holder's register is a duplicate now.
    assert_eq!(w.register(a, &[5]), vec![AlreadyStored]);
    let c = w.stats().counters;
    assert_eq!((c.expired, c.converted, c.registered), (1, 0, 1));
}

#[test]
fn register_without_any_lease_stores_the_entry() {
    let mut w = World::new(NamespaceConfig::default());
    assert_eq!(w.register(0, &[9]), vec![Stored]);
    assert_eq!(w.stored_keys(), vec![9]);
}

#[test]
fn non_holder_register_is_refused_and_the_holders_lease_stays() {
    let mut w = World::new(NamespaceConfig::default());
    let (a, b) = (w.session(60), w.session(60));
    w.offload(a, &[4]);
    let before = w.store.revision();
    assert_eq!(w.register(b, &[4]), vec![LeasedByOther]);
    assert_eq!(
        w.store.revision(),
        before + 1,
        "accepted command, per-entry refusal"
    );
    assert_eq!(w.stored_keys(), Vec::<u64>::new());
    assert_eq!(w.offload(b, &[4]), vec![Leased], "a still holds it");
    assert_eq!(w.store.claims().leases_of(a), 1);
    assert_eq!(w.register(a, &[4]), vec![Stored]);
}

#[test]
fn ending_a_session_releases_its_claim_leases_in_the_same_apply() {
    let mut w = World::new(NamespaceConfig::default());
    let (a, b) = (w.session(60), w.session(2));
    w.offload(a, &[1, 2]);
    w.offload(b, &[3]);
    w.store.apply(&Command::LeaseRevoke { id: a });
    assert_eq!(w.store.claims().leases_of(a), 0);
    assert_eq!(w.offload(b, &[1, 2]), vec![Granted, Granted]);
    // b's session (etcd lease, 2 s) expires in a tick: its claims go too.
    w.tick(2_000);
    assert_eq!(w.store.claims().leases_of(b), 0);
    let s = w.stats();
    assert_eq!((s.active_leases, s.counters.released), (0, 5));
    let c = w.session(60);
    assert_eq!(w.offload(c, &[1, 2, 3]), vec![Granted; 3]);
}

#[test]
fn can_offload_needs_a_live_session() {
    let mut w = World::new(NamespaceConfig::default());
    let err = w
        .run(ClaimsCommand::CanOffload {
            namespace: NS.into(),
            session_id: 42,
            keys: World::keys(&[1]),
            now_ms: w.now_ms,
        })
        .unwrap_err();
    assert_eq!(err, ClaimsError::SessionNotFound(42));
}

#[test]
fn bad_input_gets_a_precise_error_and_changes_nothing() {
    let mut w = World::new(NamespaceConfig {
        key_kind: KeyKind::Bytes,
        max_key_bytes: 4,
        max_value_bytes: 3,
        ..Default::default()
    });
    let a = w.session(60);
    let bytes = |b: &[u8]| ClaimKey::Bytes(b.to_vec());
    let entry = |key: ClaimKey, value: &[u8]| RegisterEntry {
        key,
        value: value.to_vec(),
        metadata: Vec::new(),
        parent: None,
        position: None,
    };
    let offload = |ns: &str, keys: Vec<ClaimKey>| ClaimsCommand::CanOffload {
        namespace: ns.into(),
        session_id: a,
        keys,
        now_ms: 5_000,
    };
    let cases: Vec<(ClaimsCommand, ClaimsError)> = vec![
        (offload(NS, vec![]), ClaimsError::EmptyRequest),
        (
            offload(NS, vec![bytes(b"k"); MAX_KEYS_PER_REQUEST + 1]),
            ClaimsError::TooManyKeys {
                count: MAX_KEYS_PER_REQUEST + 1,
            },
        ),
        (
            offload(NS, vec![bytes(b"ok"), ClaimKey::U64(1)]),
            ClaimsError::WrongKeyKind {
                index: 1,
                expected: KeyKind::Bytes,
                got: KeyKind::U64,
            },
        ),
        (
            offload(NS, vec![bytes(b"12345")]),
            ClaimsError::KeyTooLong {
                index: 0,
                len: 5,
                max: 4,
            },
        ),
        (
            offload(NS, vec![bytes(b"")]),
            ClaimsError::KeyTooLong {
                index: 0,
                len: 0,
                max: 4,
            },
        ),
        (
            offload("nope", vec![bytes(b"k")]),
            ClaimsError::NamespaceNotFound("nope".into()),
        ),
        (
            ClaimsCommand::Register {
                namespace: NS.into(),
                session_id: a,
                entries: vec![entry(bytes(b"a"), b"ok"), entry(bytes(b"b"), b"long")],
                now_ms: 5_000,
            },
            ClaimsError::ValueTooLong {
                index: 1,
                what: "value".into(),
                len: 4,
                max: 3,
            },
        ),
        (
            ClaimsCommand::CreateNamespace {
                name: NS.into(),
                config: NamespaceConfig::default(),
            },
            ClaimsError::NamespaceExists(NS.into()),
        ),
        (
            ClaimsCommand::CreateNamespace {
                name: "x".into(),
                config: NamespaceConfig {
                    capacity: 0,
                    ..Default::default()
                },
            },
            ClaimsError::InvalidConfig(format!("capacity 0 not in 1..={MAX_CAPACITY}")),
        ),
        (
            ClaimsCommand::CreateNamespace {
                name: "bad name".into(),
                config: NamespaceConfig::default(),
            },
            ClaimsError::InvalidName("\"bad name\": 1..=128 bytes of [A-Za-z0-9._-/:]".into()),
        ),
    ];
    for (cmd, want) in cases {
        let before = (w.store.snapshot().unwrap(), w.store.revision());
        assert_eq!(w.run(cmd.clone()).unwrap_err(), want, "{cmd:?}");
        w.store.take_changes();
        let mut after = w.store.snapshot().unwrap();
        after.meta.now_ms = before.0.meta.now_ms; // time may advance
        assert_eq!((after, w.store.revision()), before, "{cmd:?} changed state");
    }
}

#[test]
fn each_accepted_claims_command_takes_one_revision() {
    let mut w = World::new(NamespaceConfig::default());
    assert_eq!(w.store.revision(), 1, "create");
    let a = w.session(60);
    w.offload(a, &[1, 2, 3]);
    w.register(a, &[1, 2, 3]);
    w.touch(&[1]);
    assert_eq!(w.store.revision(), 4);
}

#[test]
fn tail_eviction_takes_the_deepest_leaf_then_the_least_recently_touched() {
    let mut w = World::with_policy(4, EvictionPolicy::Tail);
    // chain 1 → 2 → 3, and a root 10
    w.register_chain(0, &[(1, None), (2, Some(1)), (3, Some(2)), (10, None)]);
    assert_eq!(w.register(0, &[20]), vec![Stored]);
    assert_eq!(
        w.stored_keys(),
        vec![1, 2, 10, 20],
        "3 was the deepest leaf"
    );
    // 2 is now a leaf at depth 1: deeper than roots 10, 20
    w.register(0, &[21]);
    assert_eq!(w.stored_keys(), vec![1, 10, 20, 21]);
    // only roots left: least recently touched first; touch 1 so 10 goes
    assert_eq!(w.touch(&[1, 99]), 1);
    w.register(0, &[22]);
    assert_eq!(w.stored_keys(), vec![1, 20, 21, 22]);
    assert_eq!(w.stats().counters.evicted, 3);
}

#[test]
fn tail_eviction_never_takes_a_parent_before_its_children() {
    let mut w = World::with_policy(3, EvictionPolicy::Tail);
    w.register_chain(0, &[(1, None), (2, Some(1)), (3, Some(2))]);
    w.register(0, &[4]);
    assert_eq!(w.stored_keys(), vec![1, 2, 4]);
    w.register(0, &[5]);
    assert_eq!(w.stored_keys(), vec![1, 4, 5]);
}

#[test]
fn positional_eviction_takes_the_highest_position_then_lru() {
    let mut w = World::with_policy(3, EvictionPolicy::Positional);
    let entry = |k: u64, position: u64| RegisterEntry {
        key: ClaimKey::U64(k),
        value: vec![],
        metadata: vec![],
        parent: None,
        position: Some(position),
    };
    w.register_entries(0, vec![entry(1, 5), entry(2, 9), entry(3, 9)]);
    w.register_entries(0, vec![entry(4, 0)]);
    assert_eq!(
        w.stored_keys(),
        vec![1, 3, 4],
        "2: position 9, touched before 3"
    );
    w.register_entries(0, vec![entry(5, 1)]);
    assert_eq!(w.stored_keys(), vec![1, 4, 5]);
    w.register_entries(0, vec![entry(6, 1)]);
    assert_eq!(w.stored_keys(), vec![4, 5, 6], "1 had position 5");
}

#[test]
fn policy_none_refuses_when_full_and_keeps_the_lease() {
    let mut w = World::with_policy(2, EvictionPolicy::None);
    let a = w.session(60);
    w.offload(a, &[1, 2, 3]);
    assert_eq!(
        w.register(a, &[1, 2, 3]),
        vec![Stored, Stored, RejectedFull]
    );
    assert_eq!(w.store.claims().leases_of(a), 1, "3 still leased to a");
    // (entries removed, leases released)
    assert_eq!(w.remove(&[1, 3, 77]), (1, 1));
    assert_eq!(w.register(a, &[3]), vec![Stored]);
    assert_eq!(w.stored_keys(), vec![2, 3]);
}

#[test]
fn match_prefix_stops_at_the_first_miss_and_match_all_skips_misses() {
    let mut w = World::new(NamespaceConfig::default());
    w.register(0, &[1, 2, 4]);
    let c = w.store.claims();
    let prefix = c.match_prefix(NS, &World::keys(&[1, 2, 3, 4])).unwrap();
    assert_eq!(
        prefix.iter().map(|v| v.value.clone()).collect::<Vec<_>>(),
        vec![b"v1".to_vec(), b"v2".to_vec()]
    );
    let all = c.match_all(NS, &World::keys(&[4, 3, 1])).unwrap();
    assert_eq!(
        all.iter()
            .map(|(i, v)| (*i, v.key.clone()))
            .collect::<Vec<_>>(),
        vec![(0, ClaimKey::U64(4)), (2, ClaimKey::U64(1))]
    );
    assert!(c.match_prefix(NS, &World::keys(&[3])).unwrap().is_empty());
}

/// A small deterministic generator for the randomised invariant tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn random_ops(w: &mut World, sessions: &[i64], seed: u64, steps: usize, check: impl Fn(&World)) {
    let mut rng = Lcg(seed);
    for _ in 0..steps {
        let s = sessions[rng.next(sessions.len() as u64) as usize];
        let keys: Vec<u64> = (0..1 + rng.next(6)).map(|_| rng.next(40)).collect();
        match rng.next(5) {
            0 => {
                w.offload(s, &keys);
            }
            1 => {
                let chain: Vec<(u64, Option<u64>)> = keys
                    .iter()
                    .map(|k| (*k, (rng.next(2) == 0).then(|| rng.next(40))))
                    .collect();
                w.register_chain(s, &chain);
            }
            2 => {
                w.touch(&keys);
            }
            3 => {
                w.remove(&keys);
            }
            // Time passes by a tick, or by the next command's stamp alone.
            _ if rng.next(2) == 0 => w.tick(rng.next(3_000)),
            _ => w.now_ms += rng.next(3_000),
        }
        check(w);
    }
}

fn check_invariants(w: &World) {
    let s = w.stats();
    assert!(s.entries <= s.config.capacity, "capacity exceeded: {s:?}");
    let snap = w.store.claims().snapshot();
    let stored = snap
        .slots
        .iter()
        .filter(|(_, _, s)| matches!(s, Slot::Stored(_)))
        .count() as u64;
    assert_eq!(stored, s.entries);
    assert_eq!(snap.slots.len() as u64 - stored, s.active_leases);
    let c = s.counters;
    // Every lease created ended in exactly one way or is still there.
    assert_eq!(
        c.granted,
        c.expired + c.released + c.converted + s.active_leases,
        "{c:?}"
    );
    assert_eq!(c.registered, c.evicted + c.removed + s.entries, "{c:?}");
}

/// A replica restored from a snapshot now (which holds no slot of a lease
/// that ran out) counts, lists and holds the same.
fn check_restored(w: &World, sessions: &[i64]) {
    let copy = Store::from_snapshot(w.store.snapshot().unwrap());
    let (live, restored) = (w.store.claims(), copy.claims());
    assert_eq!(restored.stats(NS).unwrap(), live.stats(NS).unwrap());
    assert_eq!(
        restored.leases().collect::<Vec<_>>(),
        live.leases().collect::<Vec<_>>()
    );
    assert_eq!(restored.lease_count(), live.lease_count());
    assert_eq!(restored.next_deadline_ms(), live.next_deadline_ms());
    for &session in sessions {
        assert_eq!(restored.leases_of(session), live.leases_of(session));
    }
}

/// Each session's live-lease count (what releasing it relies on) matches
/// the slots it holds.
fn check_session_counts(w: &World, sessions: &[i64]) {
    let snap = w.store.claims().snapshot();
    for &session in sessions {
        let held = snap
            .slots
            .iter()
            .filter(
                |(_, _, s)| matches!(s, Slot::Leased { session_id, .. } if *session_id == session),
            )
            .count();
        assert_eq!(
            w.store.claims().leases_of(session),
            held,
            "session {session}"
        );
    }
}

#[test]
fn capacity_is_never_exceeded_and_counters_balance_for_every_policy() {
    for eviction in [
        EvictionPolicy::None,
        EvictionPolicy::Tail,
        EvictionPolicy::Positional,
    ] {
        for seed in 1..=5 {
            let mut w = World::new(NamespaceConfig {
                capacity: 12,
                eviction,
                lease_ttl_ms: 4_000,
                ..Default::default()
            });
            let sessions = [w.session(3_600), w.session(3_600), w.session(3_600)];
            random_ops(&mut w, &sessions, seed, 400, |w| {
                check_invariants(w);
                check_session_counts(w, &sessions);
                check_restored(w, &sessions);
            });
        }
    }
}

#[test]
fn a_restored_store_holds_the_same_claims_and_evicts_the_same_way() {
    for eviction in [EvictionPolicy::Tail, EvictionPolicy::Positional] {
        let mut w = World::new(NamespaceConfig {
            capacity: 10,
            eviction,
            ..Default::default()
        });
        let sessions = [w.session(3_600), w.session(3_600)];
        random_ops(&mut w, &sessions, 7, 300, |_| {});
        let bytes = postcard::to_allocvec(&w.store.snapshot().unwrap()).unwrap();
        let mut copy = World {
            store: Store::from_snapshot(postcard::from_bytes(&bytes).unwrap()),
            now_ms: w.now_ms,
        };
        assert_eq!(copy.store.snapshot().unwrap(), w.store.snapshot().unwrap());
        // The same further commands give the same answers and state.
        for seed in 8..10 {
            let mut rng = Lcg(seed);
            for _ in 0..50 {
                let keys: Vec<u64> = (0..4).map(|_| 100 + rng.next(60)).collect();
                let chain: Vec<(u64, Option<u64>)> = keys
                    .iter()
                    .map(|k| (*k, Some(k.saturating_sub(1))))
                    .collect();
                assert_eq!(
                    w.register_chain(sessions[0], &chain),
                    copy.register_chain(sessions[0], &chain)
                );
                assert_eq!(
                    w.offload(sessions[1], &keys),
                    copy.offload(sessions[1], &keys)
                );
            }
        }
        assert_eq!(copy.store.snapshot().unwrap(), w.store.snapshot().unwrap());
    }
}

#[test]
fn changes_name_every_slot_and_namespace_touched() {
    let mut w = World::new(NamespaceConfig::default());
    let a = w.session(60);
    w.store.take_changes();
    w.offload(a, &[2, 1, 3]);
    w.register(a, &[1]);
    w.offload(a, &[3]);
    let changes = w.store.take_changes().claims;
    assert_eq!(changes.stored, vec![(1, ClaimKey::U64(1))]);
    let lease = |k| match w.store.claims().slot(1, &ClaimKey::U64(k)) {
        Some(Slot::Leased {
            session_id,
            deadline_ms,
        }) => Some((*session_id, *deadline_ms)),
        _ => None,
    };
    // The first offload's lease, which 2 still holds.
    let a_lease = lease(2);
    assert_eq!(
        changes.leases.iter().collect::<Vec<_>>(),
        vec![
            (1, ClaimKey::U64(2), a_lease),
            (1, ClaimKey::U64(1), a_lease),
            (1, ClaimKey::U64(3), a_lease),
            (1, ClaimKey::U64(1), None),
        ],
        "in order; offloading 3 again at the same instant changed nothing"
    );
    // Replayed in order, the changes leave each key as it is now.
    let mut last = BTreeMap::new();
    for (_, key, l) in changes.leases.iter() {
        last.insert(key, l);
    }
    for k in [1, 2, 3] {
        assert_eq!(last[&ClaimKey::U64(k)], lease(k), "key {k}");
    }
    assert!(a_lease.is_some_and(|(s, _)| s == a) && lease(3) == a_lease);
    assert_eq!(changes.namespaces, [1].into_iter().collect());
}

#[test]
fn passing_a_deadline_ends_all_its_leases_alike_on_a_restored_replica() {
    // More leases than one request holds share a deadline, granted in a
    // scrambled key order; a replica restored from a snapshot learned
    // them in another order and must end and count them alike.
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 1_000,
        ..Default::default()
    });
    let session = w.session(3_600);
    let mut rng = Lcg(42);
    for _ in 0..3 {
        let keys: Vec<u64> = (0..4_000).map(|_| rng.next(1 << 40)).collect();
        w.offload(session, &keys);
    }
    let leases = w.store.claims().lease_count();
    assert!(leases > MAX_KEYS_PER_REQUEST, "{leases}");
    let mut copy = World {
        store: Store::from_snapshot(w.store.snapshot().unwrap()),
        now_ms: w.now_ms,
    };
    assert_eq!(copy.store.claims().lease_count(), leases);
    w.tick(999);
    copy.tick(999);
    assert_eq!(copy.store.snapshot().unwrap(), w.store.snapshot().unwrap());
    w.tick(1);
    copy.tick(1);
    for world in [&w, &copy] {
        let s = world.stats();
        assert_eq!((s.active_leases, s.counters.expired), (0, leases as u64));
        assert_eq!(world.store.claims().lease_count(), 0);
        assert_eq!(world.store.claims().leases_of(session), 0);
        assert_eq!(world.store.claims().leases().count(), 0);
    }
    // The ended leases' slots are still in `w`, none in the copy: the
    // snapshots leave them out alike.
    let snap = w.store.snapshot().unwrap();
    assert!(snap.claims.slots.is_empty());
    assert_eq!(copy.store.snapshot().unwrap(), snap);
}

#[test]
fn a_lease_that_ran_out_is_no_lease_to_any_command() {
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 1_000,
        ..Default::default()
    });
    let (a, b) = (w.session(600), w.session(600));
    w.offload(a, &[1, 2, 3, 4]);
    // No tick: the next command's time passes the deadline.
    w.now_ms += 1_000;
    assert_eq!(w.remove(&[1]), (0, 0), "nothing to remove or release");
    assert_eq!(w.touch(&[2]), 0);
    assert_eq!(w.store.claims().slot(1, &ClaimKey::U64(3)), None);
    assert_eq!(w.register(b, &[3]), vec![Stored]);
    assert_eq!(w.offload(b, &[4]), vec![Granted]);
    w.store.apply(&Command::LeaseRevoke { id: a });
    let s = w.stats();
    let c = s.counters;
    assert_eq!(
        (c.expired, c.released, c.converted, c.granted, c.removed),
        (4, 0, 0, 5, 0),
        "each of a's leases ended once, by running out"
    );
    assert_eq!(s.active_leases, 1);
    assert_eq!(w.store.claims().leases_of(b), 1);
    assert_eq!(w.store.claims().leases_of(a), 0);
    assert_eq!(w.stored_keys(), vec![3]);
    assert_eq!(
        w.store.claims().leases().collect::<Vec<_>>(),
        vec![(1, ClaimKey::U64(4), b, w.now_ms + 1_000)]
    );
}

#[test]
fn a_key_twice_in_one_request_is_one_lease() {
    let mut w = World::new(NamespaceConfig::default());
    let a = w.session(600);
    assert_eq!(w.offload(a, &[5, 5, 6]), vec![Granted, Granted, Granted]);
    assert_eq!(w.store.claims().lease_count(), 2);
    assert_eq!(w.store.claims().leases().count(), 2);
    // Both expire (the session lives on), and the count comes back to
    // zero, not below or above.
    w.tick(NamespaceConfig::default().lease_ttl_ms);
    assert_eq!(w.store.claims().lease_count(), 0);
    assert_eq!(w.store.claims().leases().count(), 0);
}

#[test]
fn refreshing_repeated_and_expired_keys_keeps_every_session_releasable() {
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 1_000,
        ..Default::default()
    });
    let (a, b) = (w.session(600), w.session(600));
    assert_eq!(w.offload(a, &[1]), vec![Granted]);
    // a's only lease refreshed twice in one request, with a fresh key.
    assert_eq!(w.offload(a, &[1, 2, 1]), vec![Granted; 3]);
    assert_eq!(w.store.claims().leases_of(a), 2);
    // a's leases run out; b takes key 1 over without a tick (the
    // command's time ends both of a's).
    w.now_ms += 1_000;
    assert_eq!(w.offload(b, &[1, 1]), vec![Granted; 2]);
    assert_eq!(
        (w.store.claims().leases_of(a), w.store.claims().leases_of(b)),
        (0, 1)
    );
    let s = w.stats();
    assert_eq!(
        (s.counters.granted, s.counters.refreshed, s.counters.expired),
        (3, 3, 2)
    );
    w.store.apply(&Command::LeaseRevoke { id: b });
    assert_eq!(w.store.claims().leases_of(b), 0);
    assert_eq!(w.offload(a, &[1]), vec![Granted], "b's lease was released");
    check_invariants(&w);
}

#[test]
fn a_tick_ends_exactly_the_live_due_leases_among_stale_entries() {
    // Five leases due at one deadline, three of whose entries have gone
    // stale by then: 3 was stored, 4 refreshed to a later deadline, 2
    // stored, removed and leased by `b` until later. Only 1 and 5 end.
    let mut w = World::new(NamespaceConfig {
        lease_ttl_ms: 5_000,
        ..Default::default()
    });
    let a = w.session(600);
    let b = w.session(600);
    w.offload(a, &[5, 4, 3, 2, 1]);
    w.register(a, &[3, 2]);
    w.remove(&[2]);
    w.tick(2_000);
    w.offload(a, &[4]);
    w.offload(b, &[2]);
    w.store.take_changes();
    let before = w.stats();
    assert_eq!(before.active_leases, 4);

    w.tick(3_000);
    let after = w.stats();
    assert_eq!(after.active_leases, 2, "4 (refreshed) and 2 (b's) stay");
    assert_eq!(after.counters.expired - before.counters.expired, 2);
    assert_eq!(w.store.claims().lease_count(), 2);
    assert_eq!(w.store.claims().leases_of(a), 1);
    assert_eq!(w.store.claims().leases_of(b), 1);
    // Running out is recorded as the namespace's counters only: the
    // lease log's rows say when each lease ends.
    let changes = w.store.take_changes().claims;
    assert!(changes.leases.is_empty());
    assert_eq!(changes.namespaces, [1].into_iter().collect());
    assert_eq!(w.offload(b, &[1, 5, 4]), {
        use OffloadStatus::*;
        vec![Granted, Granted, Leased]
    });
}
