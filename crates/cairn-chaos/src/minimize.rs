//! Shrinking an illegal partition into a small, still-illegal history.
//!
//! Every reduction preserves "the reduced history is illegal ⇒ the original
//! is illegal" (see the module docs of [`crate::checker`]); a candidate is
//! kept only if the checker confirms it illegal within the budget.

use crate::checker::{check_with_meter, entries_of, final_states, Meter, Verdict};
use crate::history::{Call, Operation, Ret, SETUP_CLIENT};
use crate::model::{Model, Register};

/// Upper bound on candidate checks per minimisation.
const MAX_ATTEMPTS: usize = 2_000;
/// Most possible states a head cut may summarise.
const MAX_SETUP: usize = 8;
/// Rounds of (cut tail, cut head, drop reads).
const MAX_ROUNDS: usize = 4;

struct Minimizer<'m> {
    meter: &'m mut Meter,
    /// Step cap for one candidate check.
    cap: u64,
    attempts: usize,
}

impl Minimizer<'_> {
    fn out_of_budget(&self) -> bool {
        self.attempts >= MAX_ATTEMPTS || self.meter.exhausted()
    }

    /// The verdict for `ops`, or `None` if out of budget.
    fn verdict(&mut self, ops: &[Operation]) -> Option<Verdict> {
        if self.out_of_budget() {
            return None;
        }
        self.attempts += 1;
        let mut child = self.meter.child(self.cap);
        let v = check_with_meter(&Register, None, &entries_of(ops), &mut child);
        self.meter.absorb(&child);
        match v {
            Verdict::Timeout => None,
            v => Some(v),
        }
    }

    /// `true` only if `ops` is confirmed illegal.
    fn illegal(&mut self, ops: &[Operation]) -> bool {
        matches!(self.verdict(ops), Some(Verdict::Illegal { .. }))
    }

    /// Drops operations invoked at or after some time `T` and makes the
    /// operations still pending at `T` indeterminate; picks the smallest `T`
    /// that keeps the history illegal (binary search).
    fn cut_tail(&mut self, ops: Vec<Operation>) -> Vec<Operation> {
        let mut times: Vec<u64> = ops.iter().map(|o| o.invoke_ns).collect();
        times.sort_unstable();
        times.dedup();
        if times.len() < 2 {
            return ops;
        }
        let cands = &times[1..];
        // Invariant: cutting at cands[hi] (or not at all, hi == len) is illegal.
        let (mut lo, mut hi) = (0, cands.len());
        let mut best = None;
        while lo < hi && !self.out_of_budget() {
            let mid = lo + (hi - lo) / 2;
            let cut = truncate(&ops, cands[mid]);
            if self.illegal(&cut) {
                hi = mid;
                best = Some(cut);
            } else {
                lo = mid + 1;
            }
        }
        best.unwrap_or(ops)
    }

    /// At a point where every determinate operation invoked before it has
    /// completed, replaces those operations with setup writes of the few
    /// states possible right after the last of them (indeterminate
    /// operations invoked before the point are kept: they may still take
    /// effect later); picks the latest such point that keeps the history
    /// illegal.
    fn cut_head(&mut self, ops: Vec<Operation>) -> Vec<Operation> {
        let cands = head_cut_points(&ops);
        // Not monotone (the prefix must have a unique final state), so try
        // the latest cut first and walk backwards.
        for &(k, at) in cands.iter().rev() {
            if self.out_of_budget() {
                break;
            }
            if let Some(cut) = self.head_cut(&ops, k, at) {
                if self.illegal(&cut) {
                    return cut;
                }
            }
        }
        ops
    }

    fn head_cut(&mut self, ops: &[Operation], k: usize, at: u64) -> Option<Vec<Operation>> {
        if self.out_of_budget() {
            return None;
        }
        self.attempts += 1;
        let mut child = self.meter.child(self.cap);
        let finals = final_states(&Register, None, &entries_of(&ops[..k]), &mut child);
        self.meter.absorb(&child);
        let finals = finals?;
        if finals.is_empty() || finals.len() > MAX_SETUP {
            return None;
        }
        let mut finals: Vec<Option<String>> = finals.into_iter().collect();
        finals.sort();
        let key = ops[k].key.clone();
        let mut out = Vec::with_capacity(ops.len() - k + finals.len());
        // One instantaneous write per possible state, all at the same
        // instant (so concurrent: any of them may be the last). A lone
        // absent state is the initial state and needs no setup.
        if finals != [None] {
            for state in finals {
                let call = match state {
                    Some(value) => Call::Put { value },
                    None => Call::Delete,
                };
                out.push(Operation::completed(
                    SETUP_CLIENT,
                    key.clone(),
                    call,
                    at,
                    at,
                    Ret::Ok,
                ));
            }
        }
        // Indeterminate operations from before the cut may still take
        // effect after it; read-only ones never matter.
        out.extend(
            ops[..k]
                .iter()
                .filter(|o| o.is_indeterminate() && !Register.is_read_only(&o.call, None))
                .cloned(),
        );
        out.extend_from_slice(&ops[k..]);
        Some(out)
    }

    /// Removes read-only operations, in shrinking chunks (ddmin-style).
    fn drop_reads(&mut self, mut ops: Vec<Operation>) -> Vec<Operation> {
        let read_only = |ops: &[Operation]| -> Vec<usize> {
            ops.iter()
                .enumerate()
                .filter(|(_, o)| Register.is_read_only(&o.call, o.result.as_ref()))
                .map(|(i, _)| i)
                .collect()
        };
        let mut chunk = read_only(&ops).len().div_ceil(2).max(1);
        loop {
            let mut start = 0;
            loop {
                let ro = read_only(&ops);
                if start >= ro.len() || self.out_of_budget() {
                    break;
                }
                let drop: Vec<usize> = ro[start..(start + chunk).min(ro.len())].to_vec();
                let cand: Vec<Operation> = ops
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| drop.binary_search(i).is_err())
                    .map(|(_, o)| o.clone())
                    .collect();
                if self.illegal(&cand) {
                    ops = cand;
                } else {
                    start += chunk;
                }
            }
            if chunk == 1 || self.out_of_budget() {
                return ops;
            }
            chunk = chunk.div_ceil(2);
        }
    }
}

/// Candidate head cuts `(k, at)`: every determinate op in `ops[..k]`
/// completed (at the latest at `at`) before `ops[k]` (and everything after
/// it, `ops` being sorted by invocation) is invoked.
fn head_cut_points(ops: &[Operation]) -> Vec<(usize, u64)> {
    let mut cands = Vec::new();
    let mut max_complete = None::<u64>;
    for k in 1..ops.len() {
        if let Some(c) = ops[k - 1].effective_complete_ns() {
            max_complete = Some(max_complete.map_or(c, |m| m.max(c)));
        }
        if let Some(m) = max_complete {
            if m < ops[k].invoke_ns {
                cands.push((k, m));
            }
        }
    }
    cands
}

/// The history cut at time `t`: operations invoked at or after `t` are
/// dropped; operations invoked before `t` that had not completed before `t`
/// become indeterminate.
fn truncate(ops: &[Operation], t: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.invoke_ns < t)
        .map(|o| match o.effective_complete_ns() {
            Some(c) if c < t => o.clone(),
            _ => Operation {
                complete_ns: None,
                result: None,
                ..o.clone()
            },
        })
        .collect()
}

/// Shrinks the illegal partition `ops` (sorted by invocation). Returns the
/// smallest illegal history found (sorted by invocation) and the longest
/// linearizable prefix of it. `first_check_steps` is what the original check
/// cost; each candidate check may use a multiple of it.
pub(crate) fn minimize(
    ops: &[Operation],
    first_check_steps: u64,
    meter: &mut Meter,
) -> (Vec<Operation>, Vec<usize>) {
    let mut m = Minimizer {
        meter,
        cap: first_check_steps.saturating_mul(8).max(200_000),
        attempts: 0,
    };
    let mut cur = ops.to_vec();
    for _ in 0..MAX_ROUNDS {
        let before = cur.len();
        cur = m.cut_tail(cur);
        cur = m.cut_head(cur);
        // Setup writes and carried-over indeterminate ops come first, out of
        // invocation order; the cuts need it sorted.
        cur.sort_by_key(|o| o.invoke_ns);
        cur = m.drop_reads(cur);
        if cur.len() == before || m.out_of_budget() {
            break;
        }
    }
    // Recompute the prefix for the final history (one more check, with
    // its own small allowance so an exhausted budget still yields it).
    let mut meter = Meter::new(&crate::checker::Budget::steps(m.cap));
    match check_with_meter(&Register, None, &entries_of(&cur), &mut meter) {
        Verdict::Illegal { longest_prefix } => (cur, longest_prefix),
        // Only possible for the unreduced input whose check was cut short;
        // it is known illegal, just without a prefix.
        _ => (cur, Vec::new()),
    }
}

#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    use super::common::{brute_force_linearizable, random_small};
    use super::*;
    use crate::checker::Budget;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Soundness of every reduction: applied to a *linearizable* history it
    /// must give a linearizable history (so a reduced history that is
    /// illegal proves the original illegal). Checked with the brute-force
    /// reference, independent of the search.
    #[test]
    fn reductions_preserve_linearizability() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut meter = Meter::new(&Budget::UNLIMITED);
        let mut m = Minimizer {
            meter: &mut meter,
            cap: u64::MAX,
            attempts: 0,
        };
        let mut checked = 0;
        for case in 0..6_000 {
            let mut ops = random_small(&mut rng, 2 + case % 7);
            ops.sort_by_key(|o| o.invoke_ns);
            if !brute_force_linearizable(&ops) {
                continue;
            }
            checked += 1;
            let mut times: Vec<u64> = ops.iter().map(|o| o.invoke_ns).collect();
            times.dedup();
            for t in times {
                let cut = truncate(&ops, t);
                assert!(
                    brute_force_linearizable(&cut),
                    "case {case}: tail cut at {t}:\n{ops:#?}\n=>\n{cut:#?}"
                );
            }
            for (k, at) in head_cut_points(&ops) {
                m.attempts = 0;
                if let Some(cut) = m.head_cut(&ops, k, at) {
                    assert!(
                        brute_force_linearizable(&cut),
                        "case {case}: head cut at {k}:\n{ops:#?}\n=>\n{cut:#?}"
                    );
                }
            }
            for i in 0..ops.len() {
                if Register.is_read_only(&ops[i].call, ops[i].result.as_ref()) {
                    let mut fewer = ops.clone();
                    fewer.remove(i);
                    assert!(
                        brute_force_linearizable(&fewer),
                        "case {case}: dropping #{i}:\n{ops:#?}"
                    );
                }
            }
        }
        assert!(checked > 1_000, "only {checked} legal cases");
    }
}
