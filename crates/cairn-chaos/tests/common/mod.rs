//! Shared test helpers: compact operation constructors, a deterministic
//! simulated key/value server that produces recorded histories (correct or
//! with planted bugs), and a brute-force reference checker.

#![allow(dead_code)]

use std::collections::HashMap;

use cairn_chaos::{Call, History, Model, Operation, Register, Ret};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const K: &str = "k";

pub fn put(client: u64, v: &str, invoke: u64, complete: u64) -> Operation {
    Operation::completed(
        client,
        K,
        Call::Put { value: v.into() },
        invoke,
        complete,
        Ret::Ok,
    )
}

pub fn put_unknown(client: u64, v: &str, invoke: u64) -> Operation {
    Operation::indeterminate(client, K, Call::Put { value: v.into() }, invoke)
}

pub fn get(client: u64, v: Option<&str>, invoke: u64, complete: u64) -> Operation {
    Operation::completed(
        client,
        K,
        Call::Get,
        invoke,
        complete,
        Ret::Value(v.map(str::to_string)),
    )
}

pub fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    ok: bool,
    invoke: u64,
    complete: u64,
) -> Operation {
    Operation::completed(
        client,
        K,
        Call::Cas {
            expected: expected.map(str::to_string),
            new: new.into(),
        },
        invoke,
        complete,
        Ret::Cas(ok),
    )
}

pub fn del(client: u64, existed: bool, invoke: u64, complete: u64) -> Operation {
    Operation::completed(
        client,
        K,
        Call::Delete,
        invoke,
        complete,
        Ret::Deleted(existed),
    )
}

pub fn on_key(mut op: Operation, key: &str) -> Operation {
    op.key = key.to_string();
    op
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bug {
    None,
    /// With probability `prob`, a read is served from the state as it was
    /// `lag` time units before its linearization point.
    StaleRead {
        prob: f64,
        lag: u64,
    },
    /// With probability `prob`, a put is acknowledged but not applied.
    LostWrite {
        prob: f64,
    },
    /// With probability `prob`, a CAS is sent with the value before the
    /// latest write as `expected`, and (wrongly) succeeds.
    StaleCas {
        prob: f64,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    pub clients: u64,
    pub keys: usize,
    pub ops: usize,
    /// Probability that the client never learns the outcome.
    pub indeterminate: f64,
    pub bug: Bug,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            clients: 10,
            keys: 5,
            ops: 2_000,
            indeterminate: 0.02,
            bug: Bug::None,
        }
    }
}

struct Planned {
    client: u64,
    key: String,
    kind: u8,
    invoke: u64,
    /// Linearization point; `None`: never takes effect.
    lin: Option<u64>,
    complete: u64,
    determinate: bool,
}

/// Generates a history from a simulated server whose state is a map updated
/// atomically at each operation's linearization point, chosen uniformly
/// inside the operation's interval. Without a bug the history is
/// linearizable by construction. Deterministic in `cfg.seed`.
pub fn simulate(cfg: &SimConfig) -> History {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let per_client = cfg.ops.div_ceil(cfg.clients as usize);
    let mut planned = Vec::with_capacity(cfg.ops);
    for client in 0..cfg.clients {
        let mut t: u64 = rng.random_range(0..100);
        for _ in 0..per_client {
            if planned.len() >= cfg.ops {
                break;
            }
            let key = format!("key{}", rng.random_range(0..cfg.keys));
            let kind = match rng.random_range(0..100) {
                0..40 => 0u8, // put
                40..75 => 1,  // get
                75..92 => 2,  // cas
                _ => 3,       // delete
            };
            let invoke = t + rng.random_range(1..50);
            let (lin, complete, determinate) = if rng.random_bool(cfg.indeterminate) {
                // The client gives up after a timeout; the operation may take
                // effect much later, or never.
                let give_up = invoke + 300;
                let lin = rng
                    .random_bool(0.5)
                    .then(|| invoke + rng.random_range(1..3_000));
                (lin, give_up, false)
            } else {
                let lin = invoke + rng.random_range(1..100);
                (Some(lin), lin + rng.random_range(1..100), true)
            };
            t = complete;
            planned.push(Planned {
                client,
                key,
                kind,
                invoke,
                lin,
                complete,
                determinate,
            });
        }
    }

    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].lin.is_some())
        .collect();
    order.sort_by_key(|&i| (planned[i].lin, i));

    let mut state: HashMap<String, Option<String>> = HashMap::new();
    // Per key: (time, value) after each change, for stale reads/CAS.
    let mut versions: HashMap<String, Vec<(u64, Option<String>)>> = HashMap::new();
    let mut results: Vec<Option<(Call, Ret)>> = vec![None; planned.len()];
    let mut calls: Vec<Option<Call>> = vec![None; planned.len()];
    let mut counter = 0u64;

    for i in order {
        let p = &planned[i];
        let lin = p.lin.expect("only applied ops");
        let cur = state.get(&p.key).cloned().flatten();
        let hist = versions.entry(p.key.clone()).or_default();
        counter += 1;
        let fresh = format!("c{}-{}", p.client, counter);
        // (call, ret, new value if the state changes)
        let (call, ret, write) = match p.kind {
            0 => {
                let lost = matches!(cfg.bug, Bug::LostWrite { prob } if p.determinate && rng.random_bool(prob));
                let write = (!lost).then(|| Some(fresh.clone()));
                (Call::Put { value: fresh }, Ret::Ok, write)
            }
            1 => {
                let v = match cfg.bug {
                    Bug::StaleRead { prob, lag } if rng.random_bool(prob) => {
                        let at = lin.saturating_sub(lag);
                        hist.iter()
                            .rev()
                            .find(|(t, _)| *t <= at)
                            .and_then(|(_, v)| v.clone())
                    }
                    _ => cur,
                };
                (Call::Get, Ret::Value(v), None)
            }
            2 => {
                let previous = (hist.len() >= 2).then(|| hist[hist.len() - 2].1.clone());
                let stale = matches!(cfg.bug, Bug::StaleCas { prob } if rng.random_bool(prob))
                    && previous.as_ref().is_some_and(|p| *p != cur);
                let (expected, ok) = if stale {
                    // Succeeds against the value before the latest write.
                    (previous.expect("checked"), true)
                } else {
                    let expected = if rng.random_bool(0.7) {
                        cur.clone()
                    } else if !hist.is_empty() && rng.random_bool(0.8) {
                        hist[rng.random_range(0..hist.len())].1.clone()
                    } else {
                        None
                    };
                    let ok = expected == cur;
                    (expected, ok)
                };
                let write = ok.then(|| Some(fresh.clone()));
                (
                    Call::Cas {
                        expected,
                        new: fresh,
                    },
                    Ret::Cas(ok),
                    write,
                )
            }
            _ => {
                let existed = cur.is_some();
                (Call::Delete, Ret::Deleted(existed), Some(None))
            }
        };
        if let Some(v) = write {
            hist.push((lin, v.clone()));
            state.insert(p.key.clone(), v);
        }
        calls[i] = Some(call.clone());
        results[i] = Some((call, ret));
    }

    let mut ops = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let call = match (&calls[i], p.kind) {
            (Some(c), _) => c.clone(),
            // Never applied: invent the request the client would have sent.
            (None, 0) => Call::Put {
                value: format!("lost-{i}"),
            },
            (None, 1) => Call::Get,
            (None, 2) => Call::Cas {
                expected: None,
                new: format!("lost-{i}"),
            },
            (None, _) => Call::Delete,
        };
        let result = if p.determinate {
            results[i].as_ref().map(|(_, r)| r.clone())
        } else {
            None
        };
        ops.push(Operation {
            client: p.client,
            key: p.key.clone(),
            call,
            invoke_ns: p.invoke,
            complete_ns: Some(p.complete),
            result,
        });
    }
    History::new(ops)
}

/// Reference checker: tries every subset of indeterminate operations and
/// every order that respects real time (`a` before `b` whenever `a`
/// completes strictly before `b` is invoked). Only for tiny histories.
pub fn brute_force_linearizable(ops: &[Operation]) -> bool {
    let indet: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].is_indeterminate())
        .collect();
    for mask in 0..(1u32 << indet.len()) {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|&i| match indet.iter().position(|&j| j == i) {
                Some(b) => mask & (1 << b) != 0,
                None => true,
            })
            .collect();
        let mut used = vec![false; ops.len()];
        if extend(ops, &chosen, &mut used, &None, 0) {
            return true;
        }
    }
    false
}

fn extend(
    ops: &[Operation],
    chosen: &[usize],
    used: &mut [bool],
    state: &Option<String>,
    depth: usize,
) -> bool {
    if depth == chosen.len() {
        return true;
    }
    for &i in chosen {
        if used[i] {
            continue;
        }
        // Some unused chosen op must precede i in real time?
        let blocked = chosen.iter().any(|&j| {
            !used[j]
                && j != i
                && ops[j]
                    .effective_complete_ns()
                    .is_some_and(|c| c < ops[i].invoke_ns)
        });
        if blocked {
            continue;
        }
        if let Some(next) = Register.step(state, &ops[i].call, ops[i].result.as_ref()) {
            used[i] = true;
            if extend(ops, chosen, used, &next, depth + 1) {
                used[i] = false;
                return true;
            }
            used[i] = false;
        }
    }
    false
}

/// A tiny random single-key history with arbitrary (often impossible)
/// results, values from a small alphabet and heavy overlap.
pub fn random_small(rng: &mut StdRng, n: usize) -> Vec<Operation> {
    let vals = ["a", "b", "c"];
    let pick = |rng: &mut StdRng| -> Option<String> {
        if rng.random_bool(0.25) {
            None
        } else {
            Some(vals[rng.random_range(0..vals.len())].to_string())
        }
    };
    (0..n)
        .map(|i| {
            let invoke = rng.random_range(0..20u64);
            let complete = invoke + rng.random_range(0..10u64);
            let (call, ret) = match rng.random_range(0..4) {
                0 => (
                    Call::Put {
                        value: vals[rng.random_range(0..vals.len())].to_string(),
                    },
                    Ret::Ok,
                ),
                1 => (Call::Get, Ret::Value(pick(rng))),
                2 => (
                    Call::Cas {
                        expected: pick(rng),
                        new: vals[rng.random_range(0..vals.len())].to_string(),
                    },
                    Ret::Cas(rng.random_bool(0.5)),
                ),
                _ => (
                    Call::Delete,
                    if rng.random_bool(0.2) {
                        Ret::Ok
                    } else {
                        Ret::Deleted(rng.random_bool(0.5))
                    },
                ),
            };
            let determinate = !rng.random_bool(0.2);
            Operation {
                client: i as u64,
                key: K.into(),
                call,
                invoke_ns: invoke,
                complete_ns: Some(complete),
                result: determinate.then_some(ret),
            }
        })
        .collect()
}
