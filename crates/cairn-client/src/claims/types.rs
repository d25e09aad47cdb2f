//! Plain types of the claims API (the wire forms stay in `wire.rs`).

use std::time::Duration;

/// Most keys (or entries) one request may carry: the server applies such a
/// request as one replicated command.
pub const MAX_KEYS_PER_REQUEST: usize = 10_000;

/// A block hash. A namespace accepts only the kind it was created with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimKey {
    U64(u64),
    U128(u128),
    Bytes(Vec<u8>),
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

/// Hex, as the CLI prints keys: `0x` and 16 / 32 digits for integers, bare
/// hex for bytes.
impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimKey::U64(v) => write!(f, "{v:#018x}"),
            ClaimKey::U128(v) => write!(f, "{v:#034x}"),
            ClaimKey::Bytes(b) => b.iter().try_for_each(|byte| write!(f, "{byte:02x}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    U64,
    U128,
    Bytes,
}

/// Which stored entry makes room when a namespace is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Never evict: a register into a full namespace is refused per entry.
    None,
    /// Deepest leaf of the parent chains first, then least recently touched.
    Tail,
    /// Highest position first, then least recently touched.
    Positional,
}

/// A namespace's fixed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Most stored entries (leases do not count).
    pub capacity: u64,
    /// How long a granted lease lives without a refresh.
    pub lease_ttl_ms: u64,
    pub eviction: EvictionPolicy,
    pub key_kind: KeyKind,
    /// Longest `Bytes` key (at most 256); ignored for integer kinds.
    pub max_key_bytes: u32,
    /// Longest value of a stored entry.
    pub max_value_bytes: u32,
    /// Longest metadata of a stored entry.
    pub max_metadata_bytes: u32,
}

impl Default for NamespaceConfig {
    /// The reference hub's defaults: 1M entries, 30 s leases, u64 keys.
    fn default() -> Self {
        NamespaceConfig {
            capacity: 1_000_000,
            lease_ttl_ms: 30_000,
            eviction: EvictionPolicy::None,
            key_kind: KeyKind::U64,
            max_key_bytes: 256,
            max_value_bytes: 1_024,
            max_metadata_bytes: 1_024,
        }
    }
}

/// Answer to `can_offload` for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffloadStatus {
    /// This session holds the lease now (new or refreshed): store the block,
    /// then register it.
    Granted,
    /// Stored already: skip it.
    AlreadyStored,
    /// Another session holds a live lease: it is storing the block.
    Leased,
}

/// What `can_offload` answered, per key in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offload {
    pub statuses: Vec<OffloadStatus>,
    /// How long the granted leases live from the answer (zero when nothing
    /// was asked of the server because the local cache answered).
    pub lease_ttl: Duration,
}

impl Offload {
    /// The keys whose status is `status`, in request order.
    pub fn keys_with<'a>(
        &'a self,
        keys: &'a [ClaimKey],
        status: OffloadStatus,
    ) -> impl Iterator<Item = &'a ClaimKey> + 'a {
        keys.iter()
            .zip(&self.statuses)
            .filter(move |(_, s)| **s == status)
            .map(|(k, _)| k)
    }
}

/// One block to record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterEntry {
    pub key: ClaimKey,
    /// Where the block is (e.g. an object-store location); opaque to Cairn.
    pub value: Vec<u8>,
    pub metadata: Vec<u8>,
    /// The previous block of the chain (linked if stored), for `tail`.
    pub parent: Option<ClaimKey>,
    /// Position for `positional`; the chain depth when absent.
    pub position: Option<u64>,
}

impl RegisterEntry {
    /// An entry with a value and nothing else.
    pub fn new(key: ClaimKey, value: impl Into<Vec<u8>>) -> Self {
        RegisterEntry {
            key,
            value: value.into(),
            metadata: Vec::new(),
            parent: None,
            position: None,
        }
    }
}

/// Answer to `register` for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterStatus {
    /// Recorded; this session's lease on the key (if any) is released.
    Stored,
    /// Already recorded (by anyone, or by an earlier try of this request
    /// whose answer was lost); nothing changed.
    AlreadyStored,
    /// Another session holds a live lease on the key: refused, nothing
    /// changed, that session keeps its lease.
    LeasedByOther,
    /// The namespace is full and its policy is `none`.
    RejectedFull,
}

/// What `register` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub revision: i64,
    /// Per entry, in request order.
    pub statuses: Vec<RegisterStatus>,
    /// Entries evicted to make room.
    pub evicted: u64,
}

/// A stored entry found by `match_prefix` / `match_all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// Index of the key in the request.
    pub index: usize,
    pub key: ClaimKey,
    pub value: Vec<u8>,
    pub metadata: Vec<u8>,
}

/// What `remove` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Stored entries removed.
    pub removed: u64,
    /// Leases released (whoever held them).
    pub leases_released: u64,
}

/// Counters of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsStats {
    pub namespace: String,
    pub config: NamespaceConfig,
    pub entries: u64,
    pub active_leases: u64,
    pub granted: u64,
    pub refreshed: u64,
    pub denied: u64,
    pub already_stored: u64,
    pub expired: u64,
    pub released: u64,
    pub converted: u64,
    pub registered: u64,
    pub evicted: u64,
    pub removed: u64,
    /// Keys found by match requests on the answering member since it
    /// started (reads are not replicated).
    pub match_hits: u64,
    pub match_misses: u64,
}
