//! Linearizability checking.
//!
//! # Algorithm
//!
//! This is the Wing & Gong search with Lowe's memoisation, in the form used
//! by [Porcupine](https://github.com/anishathalye/porcupine):
//!
//! 1. **Partitioning.** The history is split by key and every partition is
//!    checked on its own. This is sound and complete because the keys are
//!    independent registers: linearizability is *local* (Herlihy & Wing) —
//!    a history of a composition of independent objects is linearizable iff
//!    the sub-history of every object is. (Every operation touches exactly
//!    one key; multi-key transactions would need a joint model.)
//!
//! 2. **Events.** Each determinate operation yields a *call* event at
//!    `invoke_ns` and a *return* event at `complete_ns`; an indeterminate one
//!    only a call (its return is at +infinity). Events are sorted by time,
//!    calls before returns at equal times (so operations that merely touch
//!    are treated as concurrent — the permissive choice), and threaded into
//!    a doubly linked list.
//!
//! 3. **Search.** Walking the list from the front, the search tries to
//!    linearize the next call whose operation is still pending: it applies
//!    the operation to the [`Model`] with its recorded output. If the model
//!    accepts, the operation is *lifted* out of the list (call and return),
//!    pushed on a stack and the walk restarts from the front. Reaching a
//!    return event means that operation has not been linearized yet although
//!    every later operation is invoked after it returned, so the last choice
//!    is undone (backtrack: pop, unlift, continue after the popped call).
//!    Backtracking past the empty stack means no linearization exists.
//!    One reduction: if a read-only operation (see [`Model::is_read_only`])
//!    can take effect at the current node, it is the only choice tried
//!    there — moving an eligible no-op to the front of any valid
//!    continuation keeps it valid.
//!
//! 4. **Memo.** A search node is fully described by the *set* of linearized
//!    operations and the model state. Before descending, the node is
//!    recorded; if it was seen before, its subtree has been (or is being)
//!    explored and it is skipped. This turns the factorial search into one
//!    bounded by the number of distinct (set, state) pairs, roughly
//!    `ops × 2^concurrency × states` — polynomial in the history length,
//!    exponential only in the number of operations in flight at once on
//!    one key. The set is a bitset with an incrementally maintained hash.
//!
//! 5. **Indeterminate operations** (no known result) are handled like
//!    Porcupine's: their return is at +infinity and their output is
//!    unconstrained (the model is stepped with `output = None`), so they may
//!    be linearized at any point after their invocation. The search succeeds
//!    as soon as every *determinate* operation is linearized: indeterminate
//!    operations not yet placed are taken never to have happened (equivalent
//!    to taking effect after everything else, which nobody observed).
//!    Indeterminate read-only operations (e.g. a timed-out get) constrain
//!    nothing and are dropped. Since a pending indeterminate operation never
//!    blocks anything, a node is *dominated* by another with the same
//!    determinate set and state but a subset of its indeterminate
//!    operations linearized; the memo keeps, per (determinate set, state),
//!    the minimal indeterminate sets seen and skips dominated nodes. This
//!    keeps the cost of never-completed operations (which stay pending
//!    forever) from multiplying the search space.
//!
//! 6. **Budget.** Every search step is counted against a caller-supplied
//!    [`Budget`] (steps and/or wall time), so adversarial histories end in
//!    [`CheckResult::Timeout`] instead of hanging.
//!
//! 7. **Minimisation.** An illegal partition is shrunk before reporting (see
//!    [`Violation`]). Only reductions that keep the result a valid proof are
//!    used — "the small history is illegal" must imply "the recorded history
//!    is illegal", which naive op-dropping does not guarantee (dropping a
//!    `put` makes a later read of its value look like a read of a value
//!    never written):
//!    * *cut the tail* at a time `T`: drop operations invoked at or after
//!      `T`, and turn operations still pending at `T` into indeterminate ones
//!      (a relaxation);
//!    * *cut the head* at a time `T0` such that every determinate operation
//!      invoked before it also completed before it: those operations are
//!      replaced by synthetic, concurrent, instantaneous setup writes of the
//!      (few) states possible right after the last of them, so the check
//!      resumes from exactly those states (indeterminate operations invoked
//!      before `T0` are kept, as they may still take effect);
//!    * *drop read-only operations* (gets, failed CAS, delete of an absent
//!      key): removing a no-op from a linearizable history leaves it
//!      linearizable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

use crate::history::{Call, History, HistoryError, Operation, Ret};
use crate::model::{Model, Register};

/// Limits for one check. `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Wall-clock limit.
    pub max_duration: Option<Duration>,
    /// Limit on search steps (one step = one attempt to linearize or undo
    /// one operation). Deterministic, unlike the wall-clock limit.
    pub max_steps: Option<u64>,
}

impl Budget {
    pub const UNLIMITED: Budget = Budget {
        max_duration: None,
        max_steps: None,
    };

    pub fn time(d: Duration) -> Self {
        Budget {
            max_duration: Some(d),
            max_steps: None,
        }
    }

    pub fn steps(n: u64) -> Self {
        Budget {
            max_duration: None,
            max_steps: Some(n),
        }
    }

    pub fn with_time(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }

    pub fn with_steps(mut self, n: u64) -> Self {
        self.max_steps = Some(n);
        self
    }
}

/// Counts search steps against a [`Budget`].
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    deadline: Option<Instant>,
    limit: u64,
    used: u64,
    exhausted: bool,
}

impl Meter {
    pub(crate) fn new(budget: &Budget) -> Self {
        Meter {
            deadline: budget.max_duration.map(|d| Instant::now() + d),
            limit: budget.max_steps.unwrap_or(u64::MAX),
            used: 0,
            exhausted: false,
        }
    }

    /// Counts one step; `false` once the budget is exhausted.
    #[inline]
    pub(crate) fn tick(&mut self) -> bool {
        if self.exhausted {
            return false;
        }
        self.used += 1;
        if self.used > self.limit {
            self.exhausted = true;
        } else if self.used & 0x3ff == 0 {
            if let Some(d) = self.deadline {
                if Instant::now() >= d {
                    self.exhausted = true;
                }
            }
        }
        !self.exhausted
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.exhausted || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// A meter for a sub-task: at most `cap` more steps, same deadline.
    pub(crate) fn child(&self, cap: u64) -> Meter {
        Meter {
            deadline: self.deadline,
            limit: cap.min(self.limit.saturating_sub(self.used)),
            used: 0,
            exhausted: self.exhausted,
        }
    }

    /// Charges the steps a child used; exhausts this meter if the child ran
    /// out because of this meter's limits.
    pub(crate) fn absorb(&mut self, child: &Meter) {
        self.used = self.used.saturating_add(child.used);
        if self.used >= self.limit || self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.exhausted = true;
        }
    }
}

/// One operation as seen by the generic checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<I, O> {
    pub input: I,
    /// Invocation time.
    pub invoke: u64,
    /// `Some((complete, output))` if the outcome is known; `None` for an
    /// indeterminate operation (return at +infinity, output unconstrained).
    pub ret: Option<(u64, O)>,
}

impl<I, O> Entry<I, O> {
    pub fn is_determinate(&self) -> bool {
        self.ret.is_some()
    }
}

/// Outcome of checking one partition with the generic checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `longest_prefix` is the longest sequence of
    /// operations (indices into the entries, in linearization order) that
    /// the search managed to linearize.
    Illegal {
        longest_prefix: Vec<usize>,
    },
    /// The budget ran out first.
    Timeout,
}

/// Set of operations, with an incrementally maintained hash.
#[derive(Clone, Debug)]
struct Bitset {
    words: Box<[u64]>,
    hash: u64,
}

fn mix(i: usize) -> u64 {
    // splitmix64 finaliser
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset {
            words: vec![0; n.div_ceil(64)].into_boxed_slice(),
            hash: 0,
        }
    }

    fn set(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.hash ^= mix(i);
    }

    fn clear(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.hash ^= mix(i);
    }

    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(a, b)| a & !b == 0)
    }
}

impl PartialEq for Bitset {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.words == other.words
    }
}

impl Eq for Bitset {}

impl Hash for Bitset {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

const HEAD: usize = 0;
const TAIL: usize = 1;
const FIRST_NODE: usize = 2;

/// How an operation takes part in the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Known result: must be linearized; index into the determinate bitset.
    Det(usize),
    /// Unknown result: may be linearized; index into the indeterminate set.
    Ind(usize),
    /// Unknown result and read-only: can never matter, left out.
    Skip,
}

/// The event list and the data to run the search over it.
///
/// Determinate operations contribute a call and a return event;
/// indeterminate ones only a call (their return would be at +infinity, after
/// which nothing is left to check).
struct Search<'a, M: Model> {
    model: &'a M,
    entries: &'a [Entry<M::Input, M::Output>],
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation of each node.
    node_op: Vec<usize>,
    is_call: Vec<bool>,
    /// Return node of each determinate operation.
    ret_node: Vec<usize>,
    class: Vec<Class>,
    /// Determinate ops that can never change the state.
    read_only: Vec<bool>,
    n_det: usize,
    n_ind: usize,
}

enum Mode {
    /// Stop at the first linearization.
    Check,
    /// Explore everything and collect the states right after the last
    /// determinate operation is linearized.
    Collect,
}

enum SearchEnd<S> {
    Linearizable,
    Exhausted {
        longest_prefix: Vec<usize>,
        finals: HashSet<S>,
    },
    Timeout,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, entries: &'a [Entry<M::Input, M::Output>]) -> Self {
        let n = entries.len();
        let mut class = Vec::with_capacity(n);
        let (mut n_det, mut n_ind) = (0, 0);
        for e in entries {
            class.push(match &e.ret {
                Some(_) => {
                    n_det += 1;
                    Class::Det(n_det - 1)
                }
                None if model.is_read_only(&e.input, None) => Class::Skip,
                None => {
                    n_ind += 1;
                    Class::Ind(n_ind - 1)
                }
            });
        }
        // (time, kind, op): kind 0 = call, 1 = return. Calls sort before
        // returns at equal times (touching operations are concurrent).
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
        for (i, e) in entries.iter().enumerate() {
            match (&e.ret, class[i]) {
                (_, Class::Skip) => {}
                (Some((c, _)), _) => {
                    events.push((e.invoke, 0, i));
                    events.push(((*c).max(e.invoke), 1, i));
                }
                (None, _) => events.push((e.invoke, 0, i)),
            }
        }
        events.sort_unstable();
        let nodes = FIRST_NODE + events.len();
        let mut next: Vec<usize> = (0..nodes).map(|i| i + 1).collect();
        let mut prev: Vec<usize> = (0..nodes).map(|i| i.saturating_sub(1)).collect();
        // Order: HEAD, events..., TAIL.
        next[HEAD] = if events.is_empty() { TAIL } else { FIRST_NODE };
        if let Some(last) = nodes.checked_sub(1).filter(|&l| l >= FIRST_NODE) {
            next[last] = TAIL;
            prev[TAIL] = last;
            prev[FIRST_NODE] = HEAD;
        } else {
            prev[TAIL] = HEAD;
        }
        let mut node_op = vec![usize::MAX; nodes];
        let mut is_call = vec![false; nodes];
        let mut ret_node = vec![0; n];
        for (pos, &(_, kind, op)) in events.iter().enumerate() {
            let node = FIRST_NODE + pos;
            node_op[node] = op;
            is_call[node] = kind == 0;
            if kind == 1 {
                ret_node[op] = node;
            }
        }
        let read_only = entries
            .iter()
            .map(|e| match &e.ret {
                Some((_, o)) => model.is_read_only(&e.input, Some(o)),
                None => false,
            })
            .collect();
        Search {
            model,
            entries,
            next,
            prev,
            node_op,
            is_call,
            ret_node,
            class,
            read_only,
            n_det,
            n_ind,
        }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        self.prev[n] = node;
    }

    /// Removes a linearized operation's events from the list.
    fn lift(&mut self, call: usize) {
        let op = self.node_op[call];
        self.unlink(call);
        if matches!(self.class[op], Class::Det(_)) {
            self.unlink(self.ret_node[op]);
        }
    }

    /// Undoes [`lift`](Self::lift) (must be called in reverse order).
    fn unlift(&mut self, call: usize) {
        let op = self.node_op[call];
        if matches!(self.class[op], Class::Det(_)) {
            self.relink(self.ret_node[op]);
        }
        self.relink(call);
    }

    fn run(&mut self, init: M::State, meter: &mut Meter, mode: Mode) -> SearchEnd<M::State> {
        let mut finals = HashSet::new();
        if self.n_det == 0 {
            return match mode {
                Mode::Check => SearchEnd::Linearizable,
                Mode::Collect => {
                    finals.insert(init);
                    SearchEnd::Exhausted {
                        longest_prefix: Vec::new(),
                        finals,
                    }
                }
            };
        }
        let mut run = Run {
            state: init,
            det: Bitset::new(self.n_det),
            ind: Bitset::new(self.n_ind),
            memo: Memo::default(),
            stack: Vec::new(),
            det_done: 0,
            best: Vec::new(),
            agree: 0,
        };

        let mut action = Action::Fresh;
        loop {
            if !meter.tick() {
                return SearchEnd::Timeout;
            }
            let pushed = match action {
                Action::Fresh => {
                    // A read-only operation that can take effect now may
                    // as well go first: moving it to the front of any
                    // linearization from here keeps it valid (it is
                    // eligible now, so nothing pending must precede it, and
                    // it changes no state). So it is the only choice tried.
                    let mut node = self.next[HEAD];
                    let mut forced = None;
                    while self.is_call[node] {
                        let op = self.node_op[node];
                        if self.read_only[op] && self.step(&run.state, op).is_some() {
                            forced = Some(node);
                            break;
                        }
                        node = self.next[node];
                    }
                    match forced {
                        Some(node) => {
                            if !run.try_push(self, node, true) {
                                action = Action::Backtrack;
                                continue;
                            }
                            node
                        }
                        None => {
                            action = Action::Scan(self.next[HEAD]);
                            continue;
                        }
                    }
                }
                Action::Scan(node) => {
                    if !self.is_call[node] {
                        // A return event (or the tail): every op invoked
                        // later must follow it, so it must be linearized
                        // before we can continue. Backtrack.
                        action = Action::Backtrack;
                        continue;
                    }
                    // Read-only ops were tried by the `Fresh` pass already.
                    if self.read_only[self.node_op[node]] || !run.try_push(self, node, false) {
                        action = Action::Scan(self.next[node]);
                        continue;
                    }
                    node
                }
                Action::Backtrack => {
                    let Some((node, forced)) = run.pop(self) else {
                        return SearchEnd::Exhausted {
                            longest_prefix: run.best,
                            finals,
                        };
                    };
                    // Siblings of a forced op need not be tried.
                    action = if forced {
                        Action::Backtrack
                    } else {
                        Action::Scan(self.next[node])
                    };
                    continue;
                }
            };

            // Just linearized the op at `pushed`.
            if !matches!(self.class[self.node_op[pushed]], Class::Det(_))
                || run.det_done < self.n_det
            {
                action = Action::Fresh;
                continue;
            }
            match mode {
                Mode::Check => return SearchEnd::Linearizable,
                // Record, then backtrack: placing more indeterminate
                // operations after the last determinate one changes
                // nothing observable.
                Mode::Collect => {
                    finals.insert(run.state.clone());
                    action = Action::Backtrack;
                }
            }
        }
    }

    fn step(&self, state: &M::State, op: usize) -> Option<M::State> {
        let e = &self.entries[op];
        self.model
            .step(state, &e.input, e.ret.as_ref().map(|(_, o)| o))
    }
}

#[derive(Clone, Copy)]
enum Action {
    /// Arrived at a new search node: look for a forced read-only op, else
    /// scan from the front.
    Fresh,
    /// Try the candidates from this list node on.
    Scan(usize),
    /// Undo the last choice.
    Backtrack,
}

/// Identity hasher for keys that are already well-mixed hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct MemoEntry<S> {
    det: Bitset,
    state: S,
    /// Visited indeterminate sets, none a subset of another.
    ind: Vec<Bitset>,
}

/// The visited search nodes, keyed by a hash of (determinate set, state) so
/// that lookups need no cloning.
struct Memo<S> {
    buckets: HashMap<u64, Vec<MemoEntry<S>>, BuildHasherDefault<IdHasher>>,
}

impl<S> Default for Memo<S> {
    fn default() -> Self {
        Memo {
            buckets: HashMap::default(),
        }
    }
}

impl<S: Clone + Eq + Hash> Memo<S> {
    /// Records a visit to (det, ind, state); `false` if that node (or one
    /// dominating it) was visited before.
    fn visit(&mut self, det: &Bitset, ind: &Bitset, state: &S) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut h);
        let key = det.hash ^ h.finish();
        let bucket = self.buckets.entry(key).or_default();
        match bucket
            .iter_mut()
            .find(|e| e.det == *det && e.state == *state)
        {
            Some(e) => {
                if e.ind.iter().any(|s| s.is_subset_of(ind)) {
                    return false;
                }
                e.ind.retain(|s| !ind.is_subset_of(s));
                e.ind.push(ind.clone());
            }
            None => bucket.push(MemoEntry {
                det: det.clone(),
                state: state.clone(),
                ind: vec![ind.clone()],
            }),
        }
        true
    }
}

/// Mutable state of one search run.
struct Run<S> {
    state: S,
    det: Bitset,
    ind: Bitset,
    /// For each (determinate set, state), the indeterminate sets visited
    /// with it. A node whose indeterminate set is a superset of a visited
    /// one is dominated (it has a subset of the choices, since unlinearized
    /// indeterminate operations never block anything) and is skipped. With
    /// no indeterminate operations this is exactly the classic
    /// (linearized set, state) memo.
    memo: Memo<S>,
    /// (call node, state before it, forced)
    stack: Vec<(usize, S, bool)>,
    det_done: usize,
    /// Longest stack seen (as op indices) and how many of its leading
    /// entries the current stack still shares.
    best: Vec<usize>,
    agree: usize,
}

impl<S: Clone + Eq + Hash> Run<S> {
    fn set(&mut self, class: Class, on: bool) {
        let (bits, i) = match class {
            Class::Det(i) => (&mut self.det, i),
            Class::Ind(i) => (&mut self.ind, i),
            Class::Skip => unreachable!("skipped ops are not in the list"),
        };
        if on {
            bits.set(i)
        } else {
            bits.clear(i)
        }
    }

    /// Linearizes the op at call `node` if the model allows it and the
    /// resulting search node is not known (or dominated).
    fn try_push<M: Model<State = S>>(
        &mut self,
        search: &mut Search<'_, M>,
        node: usize,
        forced: bool,
    ) -> bool {
        let op = search.node_op[node];
        let Some(new_state) = search.step(&self.state, op) else {
            return false;
        };
        let class = search.class[op];
        self.set(class, true);
        if !self.memo.visit(&self.det, &self.ind, &new_state) {
            self.set(class, false);
            return false;
        }

        let old_state = std::mem::replace(&mut self.state, new_state);
        self.stack.push((node, old_state, forced));
        let depth = self.stack.len();
        if self.agree == depth - 1 && self.best.get(self.agree) == Some(&op) {
            self.agree += 1;
        }
        if depth > self.best.len() {
            self.best.truncate(self.agree);
            let agree = self.agree;
            self.best.extend(
                self.stack[agree..]
                    .iter()
                    .map(|&(c, _, _)| search.node_op[c]),
            );
            self.agree = depth;
        }
        search.lift(node);
        if matches!(class, Class::Det(_)) {
            self.det_done += 1;
        }
        true
    }

    /// Undoes the last choice; returns its call node and whether it was
    /// forced.
    fn pop<M: Model<State = S>>(&mut self, search: &mut Search<'_, M>) -> Option<(usize, bool)> {
        let (node, old_state, forced) = self.stack.pop()?;
        self.agree = self.agree.min(self.stack.len());
        self.state = old_state;
        let class = search.class[search.node_op[node]];
        self.set(class, false);
        if matches!(class, Class::Det(_)) {
            self.det_done -= 1;
        }
        search.unlift(node);
        Some((node, forced))
    }
}

pub(crate) fn check_with_meter<M: Model>(
    model: &M,
    init: M::State,
    entries: &[Entry<M::Input, M::Output>],
    meter: &mut Meter,
) -> Verdict {
    match Search::new(model, entries).run(init, meter, Mode::Check) {
        SearchEnd::Linearizable => Verdict::Linearizable,
        SearchEnd::Exhausted { longest_prefix, .. } => Verdict::Illegal { longest_prefix },
        SearchEnd::Timeout => Verdict::Timeout,
    }
}

/// All states the model can be in right after the last determinate entry
/// of a linearization (indeterminate entries before it linearized or not;
/// the ones not linearized may still take effect later); `None` on timeout.
/// Empty if the entries are not linearizable.
pub(crate) fn final_states<M: Model>(
    model: &M,
    init: M::State,
    entries: &[Entry<M::Input, M::Output>],
    meter: &mut Meter,
) -> Option<HashSet<M::State>> {
    match Search::new(model, entries).run(init, meter, Mode::Collect) {
        SearchEnd::Exhausted { finals, .. } => Some(finals),
        SearchEnd::Linearizable => unreachable!("collect mode never stops early"),
        SearchEnd::Timeout => None,
    }
}

/// Checks one partition (one independent object) against `model`, starting
/// from `init`. This is the generic entry point for models other than the
/// key/value register.
pub fn check_entries<M: Model>(
    model: &M,
    init: M::State,
    entries: &[Entry<M::Input, M::Output>],
    budget: &Budget,
) -> Verdict {
    check_with_meter(model, init, entries, &mut Meter::new(budget))
}

/// Converts register operations into checker entries.
pub fn entries_of(ops: &[Operation]) -> Vec<Entry<Call, Ret>> {
    ops.iter()
        .map(|o| Entry {
            input: o.call.clone(),
            invoke: o.invoke_ns,
            ret: match (&o.result, o.complete_ns) {
                (Some(r), Some(c)) => Some((c, r.clone())),
                _ => None,
            },
        })
        .collect()
}

/// Checks the operations of a single key (all `key` fields are ignored)
/// against the [`Register`] model.
pub fn check_register(ops: &[Operation], budget: &Budget) -> Verdict {
    check_entries(&Register, None, &entries_of(ops), budget)
}

/// Options for [`check_history`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Budget for the whole check (all partitions together).
    pub budget: Budget,
    /// Shrink an illegal partition before reporting it.
    pub minimize: bool,
    /// Separate budget for minimisation; when it runs out the smallest
    /// failing history found so far is reported.
    pub minimize_budget: Budget,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            budget: Budget::time(Duration::from_secs(60)),
            minimize: true,
            minimize_budget: Budget::time(Duration::from_secs(10)).with_steps(50_000_000),
        }
    }
}

impl CheckOptions {
    pub fn with_budget(budget: Budget) -> Self {
        CheckOptions {
            budget,
            ..Default::default()
        }
    }

    pub fn without_minimize(mut self) -> Self {
        self.minimize = false;
        self
    }
}

/// Result of [`check_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// Every partition is linearizable.
    Ok,
    /// Some partition is not linearizable.
    Illegal(Box<Violation>),
    /// No violation found, but these keys could not be decided within the
    /// budget (timed out or not reached).
    Timeout { keys: Vec<String> },
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, CheckResult::Timeout { .. })
    }

    pub fn violation(&self) -> Option<&Violation> {
        match self {
            CheckResult::Illegal(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => f.write_str("linearizable"),
            CheckResult::Illegal(v) => write!(f, "{v}"),
            CheckResult::Timeout { keys } => {
                write!(
                    f,
                    "undecided (budget exhausted) for {} key(s): {keys:?}",
                    keys.len()
                )
            }
        }
    }
}

/// A non-linearizable partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// Every recorded operation on `key`, sorted by invocation.
    pub partition: Vec<Operation>,
    /// A small failing sub-history, sorted by invocation. It is
    /// self-contained (it can be re-checked on its own) and a valid proof:
    /// it being illegal implies the partition is illegal. It may start with
    /// synthetic, concurrent writes of client
    /// [`crate::history::SETUP_CLIENT`] that stand for the possible states
    /// left by the operations before them (one write: the state was
    /// uniquely determined); operations that were still in flight where the
    /// tail was cut are
    /// shown as indeterminate (`-> ?`). Equal to `partition` when
    /// minimisation is disabled.
    pub ops: Vec<Operation>,
    /// Longest linearizable prefix the search found in `ops`: indices into
    /// `ops`, in linearization order.
    pub linearized_prefix: Vec<usize>,
    /// Why the search got stuck after that prefix.
    pub explanation: String,
}

impl Violation {
    /// The minimised failing history, e.g. to save and re-check.
    pub fn history(&self) -> History {
        History::new(self.ops.clone())
    }

    /// The whole partition as a history.
    pub fn partition_history(&self) -> History {
        History::new(self.partition.clone())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "linearizability violation on key {:?}: {} of {} operation(s) shown",
            self.key,
            self.ops.len(),
            self.partition.len()
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  #{i:<3} {op}")?;
        }
        let order: Vec<String> = self
            .linearized_prefix
            .iter()
            .map(|i| format!("#{i}"))
            .collect();
        writeln!(f, "longest linearizable prefix: [{}]", order.join(", "))?;
        write!(f, "{}", self.explanation)
    }
}

/// Describes why no operation can follow `prefix` in `ops`.
pub(crate) fn explain(ops: &[Operation], prefix: &[usize]) -> String {
    let model = Register;
    let entries = entries_of(ops);
    let mut state = model.init();
    for &i in prefix {
        let e = &entries[i];
        match model.step(&state, &e.input, e.ret.as_ref().map(|(_, o)| o)) {
            Some(s) => state = s,
            None => return "internal error: prefix does not replay".into(),
        }
    }
    let fmt_state = |s: &Option<String>| match s {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    };
    let mut done = vec![false; ops.len()];
    for &i in prefix {
        done[i] = true;
    }
    let deadline = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !done[*i])
        .filter_map(|(_, e)| e.ret.as_ref().map(|(c, _)| *c))
        .min();
    let mut out = format!(
        "no linearization exists; the longest partial one found orders {} of {} operations, \
         after which the value is {} and no remaining operation can take effect next:",
        prefix.len(),
        ops.len(),
        fmt_state(&state)
    );
    let Some(deadline) = deadline else {
        return out + " (nothing left?)";
    };
    for (i, e) in entries.iter().enumerate() {
        if done[i] || e.invoke > deadline {
            continue;
        }
        let why = match model.step(&state, &e.input, e.ret.as_ref().map(|(_, o)| o)) {
            None => format!("impossible when the value is {}", fmt_state(&state)),
            Some(_) => "possible, but every continuation fails".to_string(),
        };
        out.push_str(&format!("\n  #{i} {}: {why}", ops[i]));
    }
    out
}

/// Checks a whole history: partitions by key and checks each partition
/// against the [`Register`] model within `opts.budget` (smallest partitions
/// first). The first illegal partition found is minimised and reported.
pub fn check_history(history: &History, opts: &CheckOptions) -> Result<CheckResult, HistoryError> {
    history.validate()?;
    let mut partitions: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for op in &history.ops {
        partitions
            .entry(op.key.as_str())
            .or_default()
            .push(op.clone());
    }
    let mut partitions: Vec<(&str, Vec<Operation>)> = partitions.into_iter().collect();
    partitions.sort_by_key(|(k, ops)| (ops.len(), *k));

    let mut meter = Meter::new(&opts.budget);
    let mut undecided = Vec::new();
    for (key, mut ops) in partitions {
        ops.sort_by_key(|o| o.invoke_ns);
        let entries = entries_of(&ops);
        let before = meter.used();
        match check_with_meter(&Register, None, &entries, &mut meter) {
            Verdict::Linearizable => {}
            Verdict::Timeout => undecided.push(key.to_string()),
            Verdict::Illegal { longest_prefix } => {
                let used = meter.used() - before;
                let (small, prefix) = if opts.minimize {
                    let mut mmeter = Meter::new(&opts.minimize_budget);
                    crate::minimize::minimize(&ops, used, &mut mmeter)
                } else {
                    (ops.clone(), longest_prefix)
                };
                let explanation = explain(&small, &prefix);
                return Ok(CheckResult::Illegal(Box::new(Violation {
                    key: key.to_string(),
                    partition: ops,
                    ops: small,
                    linearized_prefix: prefix,
                    explanation,
                })));
            }
        }
    }
    if undecided.is_empty() {
        Ok(CheckResult::Ok)
    } else {
        undecided.sort();
        Ok(CheckResult::Timeout { keys: undecided })
    }
}
