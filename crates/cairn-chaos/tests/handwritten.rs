//! Hand-written histories with known verdicts.

mod common;

use cairn_chaos::{
    check_entries, check_history, check_register, Budget, Call, CheckOptions, CheckResult, Entry,
    History, HistoryError, Model, Operation, Ret, Verdict,
};
use common::*;

fn check(ops: Vec<Operation>) -> CheckResult {
    let h = History::new(ops);
    check_history(&h, &CheckOptions::with_budget(Budget::steps(10_000_000))).expect("valid history")
}

#[track_caller]
fn assert_legal(ops: Vec<Operation>) {
    let h = History::new(ops.clone());
    let r = check(ops);
    assert!(r.is_ok(), "expected linearizable, got:\n{r}\nhistory:\n{h}");
}

#[track_caller]
fn assert_illegal(ops: Vec<Operation>) -> cairn_chaos::Violation {
    let h = History::new(ops.clone());
    let r = check(ops);
    let v = r
        .violation()
        .unwrap_or_else(|| panic!("expected a violation, got {r}\nhistory:\n{h}"))
        .clone();
    // The reported (minimised) history must be illegal on its own.
    let again = check_history(&v.history(), &CheckOptions::default()).unwrap();
    assert!(again.is_illegal(), "minimised history is not illegal:\n{v}");
    v
}

#[test]
fn empty_history_is_linearizable() {
    assert_legal(vec![]);
}

#[test]
fn sequential_ok() {
    assert_legal(vec![
        get(1, None, 0, 1),
        put(1, "a", 2, 3),
        get(2, Some("a"), 4, 5),
        cas(1, Some("a"), "b", true, 6, 7),
        cas(2, Some("a"), "c", false, 8, 9),
        get(3, Some("b"), 10, 11),
        del(1, true, 12, 13),
        del(2, false, 14, 15),
        get(3, None, 16, 17),
        cas(3, None, "d", true, 18, 19),
        get(1, Some("d"), 20, 21),
    ]);
}

#[test]
fn concurrent_overlapping_ok() {
    // Two concurrent puts; later reads agree on the one that won.
    assert_legal(vec![
        put(1, "a", 0, 100),
        put(2, "b", 10, 90),
        get(3, Some("a"), 20, 30),
        get(4, Some("b"), 40, 50), // b after a, both still in flight
        get(3, Some("b"), 110, 120),
    ]);
    // A read overlapping a put may see either value.
    assert_legal(vec![
        put(1, "a", 0, 10),
        put(2, "b", 20, 60),
        get(3, Some("a"), 25, 30),
        get(4, Some("b"), 30, 40),
        get(5, Some("b"), 70, 80),
    ]);
    // Operations that merely touch are concurrent.
    assert_legal(vec![put(1, "a", 0, 10), get(2, None, 10, 20)]);
}

#[test]
fn reads_go_back_in_time_illegal() {
    // Once a read saw the concurrent write, a later read cannot miss it.
    assert_illegal(vec![
        put(1, "a", 0, 100),
        get(2, Some("a"), 10, 20),
        get(3, None, 30, 40),
    ]);
}

#[test]
fn stale_read_after_completed_write_illegal() {
    let v = assert_illegal(vec![
        put(1, "a", 0, 10),
        put(1, "b", 20, 30),
        get(2, Some("a"), 40, 50),
    ]);
    assert_eq!(v.key, K);
    assert!(v.explanation.contains("impossible"), "{v}");
}

#[test]
fn lost_write_illegal() {
    // put(b) is acknowledged but never visible; reads keep returning a.
    let v = assert_illegal(vec![
        put(1, "a", 0, 10),
        get(2, Some("a"), 12, 18),
        put(3, "b", 20, 30),
        get(2, Some("a"), 40, 50),
        get(4, Some("a"), 60, 70),
        get(2, Some("a"), 80, 90),
    ]);
    // Minimisation keeps only what is needed: the two puts and one read.
    assert!(v.ops.len() <= 3, "{v}");
}

#[test]
fn read_of_value_never_written_illegal() {
    assert_illegal(vec![put(1, "a", 0, 10), get(2, Some("zzz"), 5, 15)]);
    assert_illegal(vec![get(2, Some("zzz"), 5, 15)]);
}

#[test]
fn two_successful_cas_from_same_value_illegal() {
    assert_illegal(vec![
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 30),
        cas(3, Some("a"), "c", true, 40, 50),
    ]);
    // Concurrent, too: only one of them can see "a".
    assert_illegal(vec![
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 50),
        cas(3, Some("a"), "c", true, 20, 50),
    ]);
    // Legal if "a" is written again in between.
    assert_legal(vec![
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 30),
        put(1, "a", 32, 38),
        cas(3, Some("a"), "c", true, 40, 50),
    ]);
}

#[test]
fn failed_cas_and_delete_results_are_checked() {
    // A CAS that fails although the value matched.
    assert_illegal(vec![
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", false, 20, 30),
    ]);
    // Delete reporting a missing key that exists.
    assert_illegal(vec![put(1, "a", 0, 10), del(2, false, 20, 30)]);
    // Delete reporting an existing key on an empty register.
    assert_illegal(vec![del(2, true, 20, 30)]);
    // Unconstrained delete.
    assert_legal(vec![
        put(1, "a", 0, 10),
        Operation::completed(2, K, Call::Delete, 20, 30, Ret::Ok),
        get(1, None, 40, 50),
    ]);
}

#[test]
fn indeterminate_put_that_shows_up_is_legal() {
    assert_legal(vec![
        put(1, "a", 0, 10),
        put_unknown(2, "b", 20),
        get(3, Some("a"), 30, 40),
        get(3, Some("b"), 1_000, 1_010),
        get(1, Some("b"), 2_000, 2_010),
    ]);
}

#[test]
fn indeterminate_put_that_never_shows_up_is_legal() {
    assert_legal(vec![
        put(1, "a", 0, 10),
        put_unknown(2, "b", 20),
        get(3, Some("a"), 30, 40),
        get(3, Some("a"), 1_000, 1_010),
    ]);
    // With the give-up time recorded.
    let mut op = put_unknown(2, "b", 20);
    op.complete_ns = Some(25);
    assert_legal(vec![
        put(1, "a", 0, 10),
        op,
        get(3, Some("a"), 1_000, 1_010),
    ]);
}

#[test]
fn indeterminate_put_cannot_take_effect_twice_or_early() {
    // Visible, then gone again without another write: illegal.
    assert_illegal(vec![
        put(1, "a", 0, 10),
        put_unknown(2, "b", 20),
        get(3, Some("b"), 30, 40),
        get(3, Some("a"), 50, 60),
    ]);
    // Observed before it was invoked: illegal.
    assert_illegal(vec![get(3, Some("b"), 0, 10), put_unknown(2, "b", 20)]);
}

#[test]
fn indeterminate_cas_may_or_may_not_apply() {
    let unknown_cas = Operation::indeterminate(
        2,
        K,
        Call::Cas {
            expected: Some("a".into()),
            new: "b".into(),
        },
        20,
    );
    assert_legal(vec![
        put(1, "a", 0, 10),
        unknown_cas.clone(),
        get(3, Some("b"), 30, 40),
    ]);
    assert_legal(vec![
        put(1, "a", 0, 10),
        unknown_cas.clone(),
        get(3, Some("a"), 30, 40),
    ]);
    // It can only apply while the value is "a".
    assert_illegal(vec![
        put(1, "x", 0, 10),
        unknown_cas,
        get(3, Some("b"), 30, 40),
    ]);
}

#[test]
fn keys_are_independent() {
    let v = assert_illegal(vec![
        on_key(put(1, "a", 0, 10), "x"),
        on_key(get(2, Some("a"), 20, 30), "x"),
        on_key(put(1, "a", 0, 10), "y"),
        // Same value, different key: a stale read on y only.
        on_key(put(1, "b", 40, 50), "y"),
        on_key(get(2, Some("a"), 60, 70), "y"),
        on_key(get(2, None, 60, 70), "z"),
    ]);
    assert_eq!(v.key, "y");
    assert!(v.ops.iter().all(|o| o.key == "y"));
    assert_legal(vec![
        on_key(put(1, "a", 0, 10), "x"),
        on_key(get(2, None, 20, 30), "y"),
        on_key(get(2, Some("a"), 20, 30), "x"),
    ]);
}

#[test]
fn minimisation_summarises_the_prefix_and_drops_reads() {
    // A long legal sequential prefix, then a stale read, then more traffic.
    let mut ops = Vec::new();
    let mut t = 0;
    for i in 0..200 {
        ops.push(put(1, &format!("v{i}"), t, t + 5));
        ops.push(get(2, Some(&format!("v{i}")), t + 6, t + 9));
        t += 10;
    }
    ops.push(put(1, "new", t, t + 5));
    ops.push(get(2, Some("v199"), t + 10, t + 15)); // stale
    t += 20;
    for i in 0..100 {
        ops.push(get(3, Some("new"), t, t + 5));
        ops.push(put(3, &format!("w{i}"), t + 6, t + 9));
        t += 10;
    }
    let v = assert_illegal(ops);
    assert_eq!(v.partition.len(), 602);
    // Everything up to the put of "new" is quiescent-sequential with a
    // unique final state, so it collapses into one setup write; the reads
    // of the tail are dropped: setup("new"), then the stale read.
    assert_eq!(v.ops.len(), 2, "{v}");
    assert_eq!(v.ops[0].client, cairn_chaos::SETUP_CLIENT);
    assert_eq!(
        v.ops[0].call,
        Call::Put {
            value: "new".into()
        }
    );
    let text = v.to_string();
    assert!(text.contains("setup: put(\"k\", \"new\") -> ok"), "{text}");
    assert!(text.contains("client 2: get(\"k\") -> \"v199\""), "{text}");
    assert!(
        text.contains("impossible when the value is \"new\""),
        "{text}"
    );
    println!("{text}");
}

#[test]
fn minimisation_can_be_disabled() {
    let ops = vec![
        put(1, "a", 0, 10),
        get(3, Some("a"), 11, 12),
        put(1, "b", 20, 30),
        get(2, Some("a"), 40, 50),
    ];
    let r = check_history(
        &History::new(ops),
        &CheckOptions::default().without_minimize(),
    )
    .unwrap();
    let v = r.violation().expect("illegal");
    assert_eq!(v.ops.len(), 4);
    assert_eq!(v.ops, v.partition);
    // The longest prefix found linearizes everything but the stale read.
    assert_eq!(v.linearized_prefix.len(), 3);
}

#[test]
fn display_format() {
    let op = put(7, "v", 100, 250);
    assert_eq!(
        op.to_string(),
        "[100..250] client 7: put(\"k\", \"v\") -> ok"
    );
    assert_eq!(
        get(1, None, 1, 2).to_string(),
        "[1..2] client 1: get(\"k\") -> absent"
    );
    assert_eq!(
        cas(1, None, "x", true, 1, 2).to_string(),
        "[1..2] client 1: cas(\"k\", absent -> \"x\") -> true"
    );
    assert_eq!(
        put_unknown(3, "z", 5).to_string(),
        "[5..?] client 3: put(\"k\", \"z\") -> ?"
    );
    assert_eq!(
        del(1, false, 1, 2).to_string(),
        "[1..2] client 1: delete(\"k\") -> false"
    );
}

#[test]
fn malformed_histories_are_rejected() {
    let mut bad = put(1, "a", 10, 5);
    let r = check_history(&History::new(vec![bad.clone()]), &CheckOptions::default());
    assert!(matches!(
        r,
        Err(HistoryError::CompleteBeforeInvoke { index: 0, .. })
    ));
    bad.complete_ns = None;
    let r = check_history(&History::new(vec![bad]), &CheckOptions::default());
    assert!(matches!(
        r,
        Err(HistoryError::ResultWithoutCompletion { index: 0 })
    ));
    let mismatched = Operation::completed(1, K, Call::Get, 0, 1, Ret::Cas(true));
    let r = check_history(
        &History::new(vec![put(1, "a", 0, 1), mismatched]),
        &CheckOptions::default(),
    );
    assert!(matches!(
        r,
        Err(HistoryError::MismatchedResult { index: 1, .. })
    ));
    // Strict validation catches a client with two operations in flight.
    let h = History::new(vec![put(1, "a", 0, 10), get(1, None, 5, 15)]);
    assert!(h.validate().is_ok());
    assert!(matches!(
        h.validate_strict(),
        Err(HistoryError::OverlappingClientOps { client: 1, .. })
    ));
}

#[test]
fn register_partition_api() {
    let ops = vec![put(1, "a", 0, 10), get(2, Some("b"), 20, 30)];
    assert!(matches!(
        check_register(&ops, &Budget::UNLIMITED),
        Verdict::Illegal { .. }
    ));
    assert_eq!(
        check_register(&ops[..1], &Budget::UNLIMITED),
        Verdict::Linearizable
    );
}

/// The checker is generic: a counter whose `add` returns the new total.
#[test]
fn generic_model_counter() {
    struct Counter;
    impl Model for Counter {
        type State = i64;
        type Input = i64;
        type Output = i64;
        fn init(&self) -> i64 {
            0
        }
        fn step(&self, s: &i64, add: &i64, out: Option<&i64>) -> Option<i64> {
            let n = s + add;
            match out {
                Some(o) if *o != n => None,
                _ => Some(n),
            }
        }
    }
    let e = |add, invoke, complete, total| Entry {
        input: add,
        invoke,
        ret: Some((complete, total)),
    };
    // Concurrent adds: totals 1 and 3 in either order are fine.
    let legal = [e(1, 0, 10, 3), e(2, 0, 10, 2)];
    assert_eq!(
        check_entries(&Counter, 0, &legal, &Budget::UNLIMITED),
        Verdict::Linearizable
    );
    // Sequential adds cannot both see the total 1.
    let illegal = [e(1, 0, 10, 1), e(0, 20, 30, 1), e(2, 40, 50, 1)];
    match check_entries(&Counter, 0, &illegal, &Budget::UNLIMITED) {
        Verdict::Illegal { longest_prefix } => assert_eq!(longest_prefix, vec![0, 1]),
        v => panic!("{v:?}"),
    }
    // An indeterminate add may be counted or not.
    let unknown = Entry {
        input: 5,
        invoke: 0,
        ret: None,
    };
    let both = [unknown.clone(), e(1, 20, 30, 6)];
    assert_eq!(
        check_entries(&Counter, 0, &both, &Budget::UNLIMITED),
        Verdict::Linearizable
    );
    let neither = [unknown, e(1, 20, 30, 1)];
    assert_eq!(
        check_entries(&Counter, 0, &neither, &Budget::UNLIMITED),
        Verdict::Linearizable
    );
}
