//! Recorded client histories.
//!
//! A [`History`] is a flat list of [`Operation`]s, each describing one client
//! request against one key: what was asked ([`Call`]), when the request was
//! sent (`invoke_ns`), and — if the client learned the outcome — when the
//! answer arrived (`complete_ns`) and what it was ([`Ret`]).
//!
//! An operation whose `result` is `None` is *indeterminate*: the client timed
//! out, the connection broke, or the process crashed before an answer
//! arrived. Such an operation may have taken effect at any point after its
//! invocation (even long after the client gave up, e.g. when a proposal sits
//! in the Raft log), or never. `complete_ns` of an indeterminate operation is
//! informational only (the moment the client gave up) and is ignored by the
//! checker.
//!
//! Histories serialize to JSON so that a failing run can be saved and
//! re-checked later ([`History::to_json`], [`History::from_json`],
//! [`History::save`], [`History::load`]).
//!
//! Concurrent clients record into a shared [`Recorder`], which stamps
//! monotonic nanoseconds relative to one [`Instant`] origin.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The value of a register: `None` means the key is absent.
pub type Value = Option<String>;

/// Client id used for the synthetic "setup" operation that a minimised
/// violation starts with when the prefix of the history before it was
/// summarised into a single write (see [`crate::checker::Violation`]).
pub const SETUP_CLIENT: u64 = u64::MAX;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// Unconditionally set the key to `value`.
    Put { value: String },
    /// Read the key.
    Get,
    /// Compare-and-set: if the current value equals `expected` (`None`:
    /// the key is absent) set it to `new`, otherwise do nothing.
    Cas {
        expected: Option<String>,
        new: String,
    },
    /// Remove the key.
    Delete,
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// Acknowledged without further information (`Put`; also accepted for
    /// `Delete` when the client does not know whether the key existed).
    Ok,
    /// Result of a `Get`: the value read, `None` if absent.
    Value(Option<String>),
    /// Result of a `Cas`: whether the swap happened.
    Cas(bool),
    /// Result of a `Delete`: whether the key existed.
    Deleted(bool),
}

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    /// Logical client (one client issues its operations sequentially).
    pub client: u64,
    /// The key; each key is an independent register.
    pub key: String,
    /// The request.
    pub call: Call,
    /// Nanoseconds since the recording origin when the request was sent.
    pub invoke_ns: u64,
    /// Nanoseconds since the origin when the answer arrived (or, for an
    /// indeterminate operation, when the client gave up, if known).
    #[serde(default)]
    pub complete_ns: Option<u64>,
    /// The answer; `None` means indeterminate (unknown outcome).
    #[serde(default)]
    pub result: Option<Ret>,
}

impl Operation {
    /// An operation that completed with a known result.
    pub fn completed(
        client: u64,
        key: impl Into<String>,
        call: Call,
        invoke_ns: u64,
        complete_ns: u64,
        result: Ret,
    ) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            invoke_ns,
            complete_ns: Some(complete_ns),
            result: Some(result),
        }
    }

    /// An operation whose outcome is unknown (it may or may not have taken
    /// effect, at any time after `invoke_ns`).
    pub fn indeterminate(client: u64, key: impl Into<String>, call: Call, invoke_ns: u64) -> Self {
        Operation {
            client,
            key: key.into(),
            call,
            invoke_ns,
            complete_ns: None,
            result: None,
        }
    }

    /// Whether the outcome of this operation is unknown.
    pub fn is_indeterminate(&self) -> bool {
        self.result.is_none()
    }

    /// Completion time as seen by the checker: `None` (= +infinity) for
    /// indeterminate operations.
    pub fn effective_complete_ns(&self) -> Option<u64> {
        match self.result {
            Some(_) => self.complete_ns,
            None => None,
        }
    }
}

fn fmt_value(f: &mut fmt::Formatter<'_>, v: &Option<String>) -> fmt::Result {
    match v {
        Some(s) => write!(f, "{s:?}"),
        None => f.write_str("absent"),
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Put { value } => write!(f, "put({value:?})"),
            Call::Get => f.write_str("get()"),
            Call::Cas { expected, new } => {
                f.write_str("cas(")?;
                fmt_value(f, expected)?;
                write!(f, " -> {new:?})")
            }
            Call::Delete => f.write_str("delete()"),
        }
    }
}

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ret::Ok => f.write_str("ok"),
            Ret::Value(v) => fmt_value(f, v),
            Ret::Cas(b) | Ret::Deleted(b) => write!(f, "{b}"),
        }
    }
}

impl fmt::Display for Operation {
    /// `[invoke..complete] client N: put(k, "v") -> ok`; an indeterminate
    /// operation shows `?` for the unknown parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}..", self.invoke_ns)?;
        match (self.complete_ns, &self.result) {
            (Some(c), Some(_)) => write!(f, "{c}]")?,
            (Some(c), None) => write!(f, "?({c})]")?,
            (None, _) => f.write_str("?]")?,
        }
        if self.client == SETUP_CLIENT {
            f.write_str(" setup: ")?;
        } else {
            write!(f, " client {}: ", self.client)?;
        }
        let k = &self.key;
        match &self.call {
            Call::Put { value } => write!(f, "put({k:?}, {value:?})")?,
            Call::Get => write!(f, "get({k:?})")?,
            Call::Cas { expected, new } => {
                write!(f, "cas({k:?}, ")?;
                fmt_value(f, expected)?;
                write!(f, " -> {new:?})")?;
            }
            Call::Delete => write!(f, "delete({k:?})")?,
        }
        match &self.result {
            Some(r) => write!(f, " -> {r}"),
            None => f.write_str(" -> ?"),
        }
    }
}

/// A malformed history (a harness bug rather than a server bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// `complete_ns < invoke_ns`.
    #[error("operation #{index} completes ({complete_ns}) before it is invoked ({invoke_ns})")]
    CompleteBeforeInvoke {
        index: usize,
        invoke_ns: u64,
        complete_ns: u64,
    },
    /// A result without a completion time.
    #[error("operation #{index} has a result but no completion time")]
    ResultWithoutCompletion { index: usize },
    /// A result of the wrong kind for the call (e.g. `Cas(true)` for a `Get`).
    #[error("operation #{index}: result {ret:?} does not fit call {call:?}")]
    MismatchedResult { index: usize, call: Call, ret: Ret },
    /// A client has two operations in flight at once. Only reported by
    /// [`History::validate_strict`].
    #[error("client {client} has overlapping operations #{first} and #{second}")]
    OverlappingClientOps {
        client: u64,
        first: usize,
        second: usize,
    },
}

/// A recorded history: every operation of every client, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    pub fn new(ops: Vec<Operation>) -> Self {
        History { ops }
    }

    pub fn push(&mut self, op: Operation) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks the structural invariants the checker relies on: completion
    /// not before invocation, results only with a completion time, and
    /// result kinds matching their calls.
    pub fn validate(&self) -> Result<(), HistoryError> {
        for (index, op) in self.ops.iter().enumerate() {
            if let Some(c) = op.complete_ns {
                if c < op.invoke_ns {
                    return Err(HistoryError::CompleteBeforeInvoke {
                        index,
                        invoke_ns: op.invoke_ns,
                        complete_ns: c,
                    });
                }
            }
            if let Some(ret) = &op.result {
                if op.complete_ns.is_none() {
                    return Err(HistoryError::ResultWithoutCompletion { index });
                }
                let fits = matches!(
                    (&op.call, ret),
                    (Call::Put { .. }, Ret::Ok)
                        | (Call::Get, Ret::Value(_))
                        | (Call::Cas { .. }, Ret::Cas(_))
                        | (Call::Delete, Ret::Deleted(_) | Ret::Ok)
                );
                if !fits {
                    return Err(HistoryError::MismatchedResult {
                        index,
                        call: op.call.clone(),
                        ret: ret.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate) plus: every client is sequential (its
    /// determinate operations do not overlap, and nothing follows an
    /// indeterminate operation of the same client unless the client
    /// recorded when it gave up). Useful to catch recorder misuse.
    pub fn validate_strict(&self) -> Result<(), HistoryError> {
        self.validate()?;
        let mut by_client: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
        for (i, op) in self.ops.iter().enumerate() {
            by_client.entry(op.client).or_default().push(i);
        }
        for (client, mut idx) in by_client {
            idx.sort_by_key(|&i| self.ops[i].invoke_ns);
            for w in idx.windows(2) {
                let (a, b) = (&self.ops[w[0]], &self.ops[w[1]]);
                let overlaps = match a.complete_ns {
                    Some(c) => c > b.invoke_ns,
                    None => true,
                };
                if overlaps {
                    return Err(HistoryError::OverlappingClientOps {
                        client,
                        first: w[0],
                        second: w[1],
                    });
                }
            }
        }
        Ok(())
    }

    /// The distinct keys, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.ops.iter().map(|o| o.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("history serializes")
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }

    pub fn save(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    pub fn load(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let s = std::fs::read_to_string(path)?;
        Self::from_json(&s).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for op in &self.ops {
            writeln!(f, "{op}")?;
        }
        Ok(())
    }
}

impl FromIterator<Operation> for History {
    fn from_iter<T: IntoIterator<Item = Operation>>(iter: T) -> Self {
        History {
            ops: iter.into_iter().collect(),
        }
    }
}

struct RecorderInner {
    origin: Instant,
    /// `None` marks a discarded slot (an operation known not to have taken
    /// effect).
    slots: Mutex<Vec<Option<Operation>>>,
}

/// Thread-safe history recorder shared by concurrent clients (threads or
/// async tasks; the lock is never held across an `.await`).
///
/// ```
/// use cairn_chaos::history::{Call, Recorder, Ret};
/// let rec = Recorder::new();
/// let op = rec.invoke(1, "k", Call::Put { value: "v".into() });
/// // ... send the request ...
/// op.complete(Ret::Ok);
/// assert_eq!(rec.history().len(), 1);
/// ```
///
/// Invocation is stamped *before* the caller sends the request and
/// completion *after* the answer has arrived, so the recorded interval
/// always contains the real one.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("origin", &self.inner.origin)
            .field("ops", &self.lock().len())
            .finish()
    }
}

impl Recorder {
    /// A recorder whose time origin is now.
    pub fn new() -> Self {
        Self::with_origin(Instant::now())
    }

    /// A recorder with an explicit time origin (e.g. shared with fault
    /// injection logs).
    pub fn with_origin(origin: Instant) -> Self {
        Recorder {
            inner: Arc::new(RecorderInner {
                origin,
                slots: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn origin(&self) -> Instant {
        self.inner.origin
    }

    /// Monotonic nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Operation>>> {
        // A panicking client must not make the history unreadable.
        self.inner.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the invocation of `call` by `client` on `key`, stamped now.
    /// Call this immediately before sending the request. Until resolved, the
    /// operation is indeterminate (also if the returned handle is dropped;
    /// then the drop time is recorded as the give-up time).
    pub fn invoke(&self, client: u64, key: impl Into<String>, call: Call) -> PendingOp {
        let key = key.into();
        let mut slots = self.lock();
        // Stamp under the lock so that slot order follows invocation order.
        let invoke_ns = self.now_ns();
        slots.push(Some(Operation::indeterminate(client, key, call, invoke_ns)));
        PendingOp {
            recorder: self.clone(),
            index: slots.len() - 1,
            resolved: false,
        }
    }

    /// Snapshot of everything recorded so far; operations still in flight
    /// appear as indeterminate (without a give-up time).
    pub fn history(&self) -> History {
        History {
            ops: self.lock().iter().flatten().cloned().collect(),
        }
    }

    /// Number of recorded (non-discarded) operations.
    pub fn len(&self) -> usize {
        self.lock().iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An operation that has been invoked but not yet resolved. Dropping it
/// without resolving it is the same as [`unknown`](Self::unknown): the
/// operation stays indeterminate, which is always safe.
#[must_use = "resolve the operation with complete(), unknown() or discard()"]
#[derive(Debug)]
pub struct PendingOp {
    recorder: Recorder,
    index: usize,
    resolved: bool,
}

impl PendingOp {
    /// Invocation time of this operation.
    pub fn invoke_ns(&self) -> u64 {
        self.recorder.lock()[self.index]
            .as_ref()
            .map_or(0, |o| o.invoke_ns)
    }

    fn resolve(&mut self, result: Option<Ret>) {
        self.resolved = true;
        let now = self.recorder.now_ns();
        if let Some(op) = self.recorder.lock()[self.index].as_mut() {
            op.complete_ns = Some(now.max(op.invoke_ns));
            op.result = result;
        }
    }

    /// The answer arrived: stamp the completion time now and record `ret`.
    pub fn complete(mut self, ret: Ret) {
        self.resolve(Some(ret));
    }

    /// The client gave up without knowing the outcome (timeout, broken
    /// connection): the operation stays indeterminate; the give-up time is
    /// kept for information.
    pub fn unknown(mut self) {
        self.resolve(None);
    }

    /// The operation definitely did not take effect (e.g. rejected before
    /// being proposed). It is removed from the history. Only use this when
    /// the server guarantees it; when in doubt use [`unknown`](Self::unknown).
    pub fn discard(mut self) {
        self.resolved = true;
        self.recorder.lock()[self.index] = None;
    }
}

impl Drop for PendingOp {
    fn drop(&mut self) {
        if !self.resolved {
            self.resolve(None);
        }
    }
}
