//! Sequential specifications.
//!
//! A [`Model`] describes the behaviour of an object when operations are
//! applied one at a time. The checker searches for an order of the recorded
//! operations (consistent with real time) in which every operation's recorded
//! output is one the model allows.

use std::fmt::Debug;
use std::hash::Hash;

use crate::history::{Call, Ret, Value};

/// A deterministic sequential specification.
///
/// `step` returns the state after applying `input` in `state` *given that
/// the operation returned `output`*, or `None` if that output is impossible
/// in that state. `output == None` means the output is unknown (an
/// indeterminate operation): the model must then return the state the
/// operation leads to whatever it returned, and for soundness it must agree
/// with the known-output case: if `step(s, i, Some(o)) == Some(t)` then
/// `step(s, i, None) == Some(t)`.
///
/// The model is deterministic: one successor state per (state, input,
/// output). States are hashed for the checker's memo, so keep them small.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies one operation; `None` if `output` is impossible in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// `true` only if the operation can never change the state: every
    /// successful `step` with this input/output returns the state unchanged.
    /// The minimiser may drop such operations, which is sound because
    /// removing a no-op from a linearizable history leaves it linearizable.
    /// The default (`false`) is always safe.
    fn is_read_only(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }
}

/// A single register per key, absent initially: `put` sets, `get` returns
/// the current value, `cas` succeeds iff the current value equals `expected`
/// (`None`: absent), `delete` removes the key and reports whether it existed
/// (`Ret::Ok` for a delete leaves that unconstrained).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Register;

impl Model for Register {
    type State = Value;
    type Input = Call;
    type Output = Ret;

    fn init(&self) -> Value {
        None
    }

    fn step(&self, state: &Value, input: &Call, output: Option<&Ret>) -> Option<Value> {
        match (input, output) {
            (Call::Put { value }, None | Some(Ret::Ok)) => Some(Some(value.clone())),
            (Call::Get, None) => Some(state.clone()),
            (Call::Get, Some(Ret::Value(v))) => (v == state).then(|| state.clone()),
            (Call::Cas { expected, new }, None) => Some(if expected == state {
                Some(new.clone())
            } else {
                state.clone()
            }),
            (Call::Cas { expected, new }, Some(Ret::Cas(ok))) => match (*ok, expected == state) {
                (true, true) => Some(Some(new.clone())),
                (false, false) => Some(state.clone()),
                _ => None,
            },
            (Call::Delete, None | Some(Ret::Ok)) => Some(None),
            (Call::Delete, Some(Ret::Deleted(existed))) => {
                (*existed == state.is_some()).then_some(None)
            }
            // A result of the wrong kind is never possible.
            _ => None,
        }
    }

    fn is_read_only(&self, input: &Call, output: Option<&Ret>) -> bool {
        matches!(
            (input, output),
            (Call::Get, _)
                | (Call::Cas { .. }, Some(Ret::Cas(false)))
                | (Call::Delete, Some(Ret::Deleted(false)))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Some(v.to_string())
    }

    #[test]
    fn register_steps() {
        let m = Register;
        let put = Call::Put { value: "a".into() };
        assert_eq!(m.step(&None, &put, Some(&Ret::Ok)), Some(s("a")));
        assert_eq!(m.step(&None, &put, Some(&Ret::Cas(true))), None);

        assert_eq!(
            m.step(&s("a"), &Call::Get, Some(&Ret::Value(s("a")))),
            Some(s("a"))
        );
        assert_eq!(m.step(&s("a"), &Call::Get, Some(&Ret::Value(None))), None);
        assert_eq!(
            m.step(&None, &Call::Get, Some(&Ret::Value(None))),
            Some(None)
        );

        let cas = Call::Cas {
            expected: s("a"),
            new: "b".into(),
        };
        assert_eq!(m.step(&s("a"), &cas, Some(&Ret::Cas(true))), Some(s("b")));
        assert_eq!(m.step(&s("a"), &cas, Some(&Ret::Cas(false))), None);
        assert_eq!(m.step(&s("x"), &cas, Some(&Ret::Cas(false))), Some(s("x")));
        assert_eq!(m.step(&s("x"), &cas, Some(&Ret::Cas(true))), None);
        assert_eq!(m.step(&s("a"), &cas, None), Some(s("b")));
        assert_eq!(m.step(&None, &cas, None), Some(None));
        let cas_absent = Call::Cas {
            expected: None,
            new: "n".into(),
        };
        assert_eq!(
            m.step(&None, &cas_absent, Some(&Ret::Cas(true))),
            Some(s("n"))
        );

        assert_eq!(
            m.step(&s("a"), &Call::Delete, Some(&Ret::Deleted(true))),
            Some(None)
        );
        assert_eq!(
            m.step(&s("a"), &Call::Delete, Some(&Ret::Deleted(false))),
            None
        );
        assert_eq!(
            m.step(&None, &Call::Delete, Some(&Ret::Deleted(false))),
            Some(None)
        );
        assert_eq!(m.step(&s("a"), &Call::Delete, Some(&Ret::Ok)), Some(None));
    }

    /// Soundness requirement of the trait: a known output's successor equals
    /// the unknown-output successor.
    #[test]
    fn unknown_output_agrees_with_known() {
        let m = Register;
        let states = [None, s("a"), s("b")];
        let calls = [
            Call::Put { value: "a".into() },
            Call::Get,
            Call::Cas {
                expected: s("a"),
                new: "b".into(),
            },
            Call::Cas {
                expected: None,
                new: "a".into(),
            },
            Call::Delete,
        ];
        let rets = [
            Ret::Ok,
            Ret::Value(None),
            Ret::Value(s("a")),
            Ret::Value(s("b")),
            Ret::Cas(true),
            Ret::Cas(false),
            Ret::Deleted(true),
            Ret::Deleted(false),
        ];
        for st in &states {
            for c in &calls {
                for r in &rets {
                    if let Some(t) = m.step(st, c, Some(r)) {
                        assert_eq!(m.step(st, c, None), Some(t.clone()), "{st:?} {c:?} {r:?}");
                        if m.is_read_only(c, Some(r)) {
                            assert_eq!(&t, st);
                        }
                    }
                }
                if m.is_read_only(c, None) {
                    assert_eq!(m.step(st, c, None).as_ref(), Some(st));
                }
            }
        }
    }
}
