//! Plain types of the claims registry: keys, namespace configuration,
//! commands, answers and errors. Wire forms live in cairn-proto.

use serde::{Deserialize, Serialize};

/// Most keys (or entries) one request may carry; such a request is one
/// replicated command.
pub const MAX_KEYS_PER_REQUEST: usize = 10_000;
/// Longest `Bytes` key accepted by any namespace.
pub const MAX_KEY_BYTES: u32 = 256;
/// Ceiling for a namespace's value and metadata limits.
pub const MAX_VALUE_BYTES_CEILING: u32 = 64 * 1024;
/// Ceiling for a namespace's capacity, so memory stays bounded.
pub const MAX_CAPACITY: u64 = 100_000_000;
/// Bounds of a claim lease TTL.
pub const MIN_CLAIM_TTL_MS: u64 = 1_000;
pub const MAX_CLAIM_TTL_MS: u64 = 24 * 3_600 * 1_000;
/// Default claim lease TTL (the reference hub's 30 s).
pub const DEFAULT_CLAIM_TTL_MS: u64 = 30_000;
/// Most namespaces in a cluster, and the longest name.
pub const MAX_NAMESPACES: usize = 1_024;
pub const MAX_NAMESPACE_NAME_BYTES: usize = 128;

/// A block hash. A namespace accepts only the kind it was created with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ClaimKey {
    U64(u64),
    U128(u128),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl ClaimKey {
    pub fn kind(&self) -> KeyKind {
        match self {
            ClaimKey::U64(_) => KeyKind::U64,
            ClaimKey::U128(_) => KeyKind::U128,
            ClaimKey::Bytes(_) => KeyKind::Bytes,
        }
    }
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimKey::U64(v) => write!(f, "{v:#018x}"),
            ClaimKey::U128(v) => write!(f, "{v:#034x}"),
            ClaimKey::Bytes(b) => {
                for byte in b {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    U64,
    U128,
    Bytes,
}

/// Which stored entry makes room when a namespace is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvictionPolicy {
    /// Never evict: a register into a full namespace is refused per entry.
    None,
    /// Deepest leaf of the parent chains first, then least recently touched.
    Tail,
    /// Highest position first, then least recently touched.
    Positional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceConfig {
    /// Most stored entries; leases do not count.
    pub capacity: u64,
    /// How long a claim lease lives without a refresh, in cluster ms.
    pub lease_ttl_ms: u64,
    pub eviction: EvictionPolicy,
    pub key_kind: KeyKind,
    /// Longest `Bytes` key (≤ `MAX_KEY_BYTES`); ignored for integer kinds.
    pub max_key_bytes: u32,
    /// Longest value of a stored entry.
    pub max_value_bytes: u32,
    /// Longest metadata of a stored entry.
    pub max_metadata_bytes: u32,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        NamespaceConfig {
            capacity: 1_000_000,
            lease_ttl_ms: DEFAULT_CLAIM_TTL_MS,
            eviction: EvictionPolicy::None,
            key_kind: KeyKind::U64,
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: 1_024,
            max_metadata_bytes: 1_024,
        }
    }
}

/// One block to record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterEntry {
    pub key: ClaimKey,
    /// Where the block is (e.g. an object-store location), opaque here.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
    /// The previous block of the chain; links only if already stored.
    pub parent: Option<ClaimKey>,
    /// Position for the `Positional` policy; defaults to the chain depth.
    pub position: Option<u64>,
}

/// Replicated claims commands. Each carries the leader's cluster time so
/// lease deadlines are decided identically on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimsCommand {
    CreateNamespace {
        name: String,
        config: NamespaceConfig,
    },
    /// `CanOffload` as logs written before its keys were packed hold it:
    /// decoded and applied, never proposed (same fields, same apply).
    CanOffloadListed {
        namespace: String,
        session_id: i64,
        keys: Vec<ClaimKey>,
        now_ms: u64,
    },
    Register {
        namespace: String,
        session_id: i64,
        entries: Vec<RegisterEntry>,
        now_ms: u64,
    },
    Remove {
        namespace: String,
        keys: Vec<ClaimKey>,
        now_ms: u64,
    },
    Touch {
        namespace: String,
        keys: Vec<ClaimKey>,
        now_ms: u64,
    },
    /// Last, so that the variants before keep their index in old logs.
    CanOffload {
        namespace: String,
        session_id: i64,
        /// Written packed (see [`super::packed_keys`]).
        #[serde(with = "super::packed_keys")]
        keys: Vec<ClaimKey>,
        now_ms: u64,
    },
}

impl ClaimsCommand {
    /// Cluster time carried, if any.
    pub fn now_ms(&self) -> Option<u64> {
        match self {
            ClaimsCommand::CreateNamespace { .. } => None,
            ClaimsCommand::CanOffload { now_ms, .. }
            | ClaimsCommand::CanOffloadListed { now_ms, .. }
            | ClaimsCommand::Register { now_ms, .. }
            | ClaimsCommand::Remove { now_ms, .. }
            | ClaimsCommand::Touch { now_ms, .. } => Some(*now_ms),
        }
    }

    /// Keys (or entries) the request names.
    pub fn keys_touched(&self) -> usize {
        match self {
            ClaimsCommand::CreateNamespace { .. } => 1,
            ClaimsCommand::CanOffload { keys, .. }
            | ClaimsCommand::CanOffloadListed { keys, .. }
            | ClaimsCommand::Remove { keys, .. }
            | ClaimsCommand::Touch { keys, .. } => keys.len(),
            ClaimsCommand::Register { entries, .. } => entries.len(),
        }
    }

    /// Replace the cluster time carried, if the command carries one.
    pub fn restamp(&mut self, at_ms: u64) {
        match self {
            ClaimsCommand::CreateNamespace { .. } => {}
            ClaimsCommand::CanOffload { now_ms, .. }
            | ClaimsCommand::CanOffloadListed { now_ms, .. }
            | ClaimsCommand::Register { now_ms, .. }
            | ClaimsCommand::Remove { now_ms, .. }
            | ClaimsCommand::Touch { now_ms, .. } => *now_ms = at_ms,
        }
    }
}

/// Answer to `can_offload` for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OffloadStatus {
    /// The caller's session now holds the lease (new or refreshed).
    Granted,
    /// The block is stored: skip it.
    AlreadyStored,
    /// Another session holds a live lease.
    Leased,
}

/// Answer to `register` for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterStatus {
    /// Recorded (the caller's own lease, if any, was released).
    Stored,
    /// Already recorded; nothing changed.
    AlreadyStored,
    /// Another session holds a live lease on the key: refused, nothing
    /// changed, that session's lease stays.
    LeasedByOther,
    /// The namespace is full and its policy is `None`.
    RejectedFull,
}

/// A successful claims command's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimsOutput {
    Created {
        /// The namespace existed with the same configuration.
        existed: bool,
    },
    CanOffload {
        statuses: Vec<OffloadStatus>,
        /// Cluster time at which the granted leases expire.
        lease_deadline_ms: u64,
    },
    Register {
        statuses: Vec<RegisterStatus>,
        /// Entries evicted to make room.
        evicted: u64,
    },
    Remove {
        /// Stored entries removed.
        removed: u64,
        /// Leases released (any holder).
        leases_released: u64,
    },
    Touch {
        /// Keys that are stored (and were touched).
        present: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsReply {
    /// Store revision after the command (each accepted claims command
    /// takes exactly one).
    pub revision: i64,
    pub output: ClaimsOutput,
}

/// What a claims command produced: a rejected command changed nothing.
pub type ClaimsResult = Result<ClaimsReply, ClaimsError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("claims namespace {0:?} not found")]
    NamespaceNotFound(String),
    #[error("claims namespace {0:?} exists with a different configuration")]
    NamespaceExists(String),
    #[error("too many claims namespaces (max {MAX_NAMESPACES})")]
    TooManyNamespaces,
    #[error("invalid namespace name: {0}")]
    InvalidName(String),
    #[error("invalid namespace configuration: {0}")]
    InvalidConfig(String),
    #[error("the request has no keys")]
    EmptyRequest,
    #[error("{count} keys in one request (max {MAX_KEYS_PER_REQUEST})")]
    TooManyKeys { count: usize },
    #[error("key #{index} is {got:?}, the namespace holds {expected:?} keys")]
    WrongKeyKind {
        index: usize,
        expected: KeyKind,
        got: KeyKind,
    },
    #[error("key #{index} is {len} bytes (max {max})")]
    KeyTooLong { index: usize, len: usize, max: u32 },
    #[error("entry #{index}: {what} is {len} bytes (max {max})")]
    ValueTooLong {
        index: usize,
        /// "value" or "metadata".
        what: String,
        len: usize,
        max: u32,
    },
    #[error("session {0} not found (expired or never granted)")]
    SessionNotFound(i64),
}

/// Counters of one namespace, replicated and persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClaimCounters {
    /// `Granted` answers that created a lease.
    pub granted: u64,
    /// `Granted` answers that refreshed the caller's live lease.
    pub refreshed: u64,
    /// `Leased` answers (another session holds the key).
    pub denied: u64,
    /// `AlreadyStored` answers to `can_offload`.
    pub already_stored: u64,
    /// Leases that ran out of time.
    pub expired: u64,
    /// Leases ended by their session ending or by `remove`.
    pub released: u64,
    /// Leases turned into stored entries by their holder's register.
    pub converted: u64,
    /// Entries stored by register.
    pub registered: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Entries removed by `remove`.
    pub removed: u64,
}

/// A namespace's stats as the API reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    pub name: String,
    pub config: NamespaceConfig,
    /// Stored entries now.
    pub entries: u64,
    /// Lease slots now (a lease past its deadline counts until a command
    /// or tick collects it, at most one tick interval).
    pub active_leases: u64,
    pub counters: ClaimCounters,
}

/// A stored entry as reads return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    pub key: ClaimKey,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub metadata: Vec<u8>,
}
