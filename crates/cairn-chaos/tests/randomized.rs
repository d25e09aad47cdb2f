//! Randomized histories from a simulated server: correct ones must pass,
//! ones with planted bugs must be caught. All seeded; the seed is printed on
//! failure.

mod common;

use std::time::{Duration, Instant};

use cairn_chaos::{check_history, Budget, CheckOptions, CheckResult, History};
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn opts() -> CheckOptions {
    CheckOptions::with_budget(Budget::time(Duration::from_secs(60)))
}

fn run(cfg: &SimConfig) -> (History, CheckResult) {
    let h = simulate(cfg);
    h.validate_strict()
        .unwrap_or_else(|e| panic!("generator bug (seed {}): {e}", cfg.seed));
    let r = check_history(&h, &opts()).unwrap();
    (h, r)
}

#[test]
fn correct_server_histories_are_linearizable() {
    for seed in 0..40 {
        let mut cfg = SimConfig::new(seed);
        cfg.keys = 1 + (seed as usize % 6);
        cfg.indeterminate = [0.0, 0.02, 0.1][seed as usize % 3];
        let (h, r) = run(&cfg);
        assert!(
            r.is_ok(),
            "seed {seed}: correct history rejected ({} ops):\n{r}",
            h.len()
        );
    }
}

#[test]
fn correct_server_high_contention_single_key() {
    for seed in 100..110 {
        let cfg = SimConfig {
            keys: 1,
            clients: 10,
            ops: 1_000,
            indeterminate: 0.03,
            ..SimConfig::new(seed)
        };
        let (_, r) = run(&cfg);
        assert!(r.is_ok(), "seed {seed}: {r}");
    }
}

#[track_caller]
fn assert_caught(cfg: &SimConfig) {
    let (h, r) = run(cfg);
    let seed = cfg.seed;
    let v = match &r {
        CheckResult::Illegal(v) => v,
        other => panic!("seed {seed}: planted bug {:?} not caught: {other}", cfg.bug),
    };
    // The minimised history must itself be illegal (it is a proof) and,
    // after a JSON round trip, still be.
    let json = v.history().to_json();
    let reloaded = History::from_json(&json).unwrap();
    let again = check_history(&reloaded, &opts()).unwrap();
    assert!(
        again.is_illegal(),
        "seed {seed}: minimised history not illegal:\n{v}"
    );
    let determinate = v.ops.iter().filter(|o| !o.is_indeterminate()).count();
    println!(
        "seed {seed}: {:?}: key {:?}, {} of {} ops ({determinate} determinate)",
        cfg.bug,
        v.key,
        v.ops.len(),
        v.partition.len()
    );
    assert!(
        determinate <= 20,
        "seed {seed}: minimised history unexpectedly large ({} of {} ops):\n{v}",
        v.ops.len(),
        v.partition.len()
    );
    assert!(v.ops.len() < v.partition.len());
    // Sanity: the partition is what the history holds for the key.
    assert_eq!(
        v.partition.len(),
        h.ops.iter().filter(|o| o.key == v.key).count()
    );
}

#[test]
fn stale_reads_are_caught() {
    for seed in 0..20 {
        let cfg = SimConfig {
            bug: Bug::StaleRead {
                prob: 0.02,
                lag: 400,
            },
            ..SimConfig::new(1_000 + seed)
        };
        assert_caught(&cfg);
    }
}

#[test]
fn lost_writes_are_caught() {
    for seed in 0..20 {
        let cfg = SimConfig {
            bug: Bug::LostWrite { prob: 0.05 },
            ..SimConfig::new(2_000 + seed)
        };
        assert_caught(&cfg);
    }
}

#[test]
fn stale_cas_is_caught() {
    for seed in 0..20 {
        let cfg = SimConfig {
            bug: Bug::StaleCas { prob: 0.05 },
            ..SimConfig::new(3_000 + seed)
        };
        assert_caught(&cfg);
    }
}

#[test]
fn one_stale_read_in_a_big_history_is_found_and_shrunk() {
    let cfg = SimConfig {
        ops: 5_000,
        keys: 10,
        bug: Bug::StaleRead {
            prob: 0.001,
            lag: 1_000,
        },
        ..SimConfig::new(4_242)
    };
    let (_, r) = run(&cfg);
    let v = r.violation().unwrap_or_else(|| panic!("seed 4242: {r}"));
    println!("{v}");
    assert!(v.ops.len() <= 8, "{v}");
}

/// Agreement with a brute-force reference on tiny random histories with
/// arbitrary results (about half of them illegal), including indeterminate
/// operations and touching intervals. Also checks that minimised histories
/// are illegal according to the reference.
#[test]
fn agrees_with_brute_force_on_small_histories() {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut legal, mut illegal) = (0, 0);
    for case in 0..4_000 {
        let n = 1 + case % 7;
        let ops = random_small(&mut rng, n);
        let expected = brute_force_linearizable(&ops);
        let h = History::new(ops.clone());
        let r = check_history(&h, &CheckOptions::default()).unwrap();
        match (&r, expected) {
            (CheckResult::Ok, true) => legal += 1,
            (CheckResult::Illegal(v), false) => {
                illegal += 1;
                assert!(
                    !brute_force_linearizable(&v.ops),
                    "case {case}: minimised history is linearizable:\n{v}\noriginal:\n{h}"
                );
            }
            _ => panic!("case {case}: checker says {r}, brute force says {expected}\n{h}"),
        }
    }
    println!("legal {legal}, illegal {illegal}");
    assert!(
        legal > 500 && illegal > 500,
        "legal {legal}, illegal {illegal}"
    );
}

/// 10,000 operations over 20 keys from 10 clients.
#[test]
fn performance_10k_ops() {
    let cfg = SimConfig {
        ops: 10_000,
        keys: 20,
        clients: 10,
        indeterminate: 0.01,
        ..SimConfig::new(99)
    };
    let h = simulate(&cfg);
    let start = Instant::now();
    let r = check_history(&h, &opts()).unwrap();
    let elapsed = start.elapsed();
    println!("checked {} ops in {elapsed:?}", h.len());
    assert!(r.is_ok(), "{r}");
    if !cfg!(debug_assertions) {
        assert!(elapsed < Duration::from_secs(1), "too slow: {elapsed:?}");
    }
}
