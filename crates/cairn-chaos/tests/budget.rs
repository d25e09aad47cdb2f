//! Pathological histories must end in `Timeout` within the budget.

mod common;

use std::time::{Duration, Instant};

use cairn_chaos::{
    check_history, check_register, Budget, CheckOptions, History, Operation, Verdict,
};
use common::*;

/// `n` fully concurrent puts of distinct values plus a concurrent read of a
/// value nobody wrote: illegal, but proving it means exploring every subset
/// of the puts (2^n search nodes).
fn adversarial(n: usize, key: &str) -> Vec<Operation> {
    let mut ops: Vec<Operation> = (0..n)
        .map(|i| on_key(put(i as u64, &format!("v{i}"), i as u64, 1_000_000), key))
        .collect();
    ops.push(on_key(get(n as u64, Some("nobody"), 0, 1_000_000), key));
    ops
}

#[test]
fn step_budget_stops_exponential_search() {
    let ops = adversarial(200, "k");
    let start = Instant::now();
    let v = check_register(&ops, &Budget::steps(2_000_000));
    assert_eq!(v, Verdict::Timeout);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn time_budget_stops_exponential_search() {
    let h = History::new(adversarial(300, "k"));
    let start = Instant::now();
    let r = check_history(
        &h,
        &CheckOptions::with_budget(Budget::time(Duration::from_millis(300))),
    )
    .unwrap();
    let elapsed = start.elapsed();
    assert!(r.is_timeout(), "{r}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[test]
fn timeout_lists_undecided_keys_and_still_reports_violations() {
    // "a" is pathological, "b" is plainly illegal, "c" fine.
    let mut ops = adversarial(100, "a");
    ops.push(on_key(put(1, "x", 0, 10), "b"));
    ops.push(on_key(get(2, Some("y"), 20, 30), "b"));
    ops.push(on_key(put(1, "x", 0, 10), "c"));
    let budget = Budget::steps(500_000);
    // Small partitions are checked first, so the violation on "b" is found
    // before "a" exhausts the budget.
    let r = check_history(
        &History::new(ops.clone()),
        &CheckOptions::with_budget(budget),
    )
    .unwrap();
    assert_eq!(r.violation().map(|v| v.key.as_str()), Some("b"), "{r}");

    // Without the violation: Timeout naming the undecided key.
    ops.retain(|o| o.key != "b");
    let r = check_history(&History::new(ops), &CheckOptions::with_budget(budget)).unwrap();
    match r {
        cairn_chaos::CheckResult::Timeout { keys } => assert_eq!(keys, vec!["a".to_string()]),
        other => panic!("{other}"),
    }
}

#[test]
fn moderate_concurrency_is_not_a_problem() {
    // The same shape with a correct read is found quickly.
    let mut ops = adversarial(200, "k");
    ops.last_mut().unwrap().result = Some(cairn_chaos::Ret::Value(Some("v7".into())));
    assert_eq!(
        check_register(&ops, &Budget::steps(2_000_000)),
        Verdict::Linearizable
    );
}
