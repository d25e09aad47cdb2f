//! Wire ⇄ store conversions for the claims service, and the edge checks
//! done before anything is proposed.

use cairn_proto::cairn::v1 as pb;
use cairn_store::claims::{
    ClaimKey, ClaimsError, EvictionPolicy, KeyKind, NamespaceConfig, NamespaceStats, OffloadStatus,
    RegisterEntry, RegisterStatus, StoredView, DEFAULT_CLAIM_TTL_MS, MAX_KEYS_PER_REQUEST,
    MAX_KEY_BYTES,
};
use tonic::Status;

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

pub fn error_status(e: ClaimsError) -> Status {
    let msg = e.to_string();
    match e {
        ClaimsError::NamespaceNotFound(_) | ClaimsError::SessionNotFound(_) => {
            Status::not_found(msg)
        }
        ClaimsError::NamespaceExists(_) => Status::already_exists(msg),
        ClaimsError::TooManyNamespaces => Status::resource_exhausted(msg),
        _ => Status::invalid_argument(msg),
    }
}

fn check_count(n: usize) -> Result<(), Status> {
    if n == 0 {
        return Err(error_status(ClaimsError::EmptyRequest));
    }
    if n > MAX_KEYS_PER_REQUEST {
        return Err(error_status(ClaimsError::TooManyKeys { count: n }));
    }
    Ok(())
}

fn u128_key(b: &[u8]) -> Result<ClaimKey, Status> {
    let bytes: [u8; 16] = b
        .try_into()
        .map_err(|_| invalid(format!("a u128 key is 16 bytes, got {}", b.len())))?;
    Ok(ClaimKey::U128(u128::from_be_bytes(bytes)))
}

/// A key list of one kind, checked for count (kind and length are checked
/// by the store against the namespace).
pub fn keys(list: Option<pb::KeyList>) -> Result<Vec<ClaimKey>, Status> {
    let list = list.unwrap_or_default();
    let kinds = [
        !list.u64s.is_empty(),
        !list.u128s.is_empty(),
        !list.bytes.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(invalid("keys of more than one kind in one request"));
    }
    check_count(list.u64s.len() + list.u128s.len() + list.bytes.len())?;
    if !list.u64s.is_empty() {
        return Ok(list.u64s.into_iter().map(ClaimKey::U64).collect());
    }
    if !list.u128s.is_empty() {
        return list.u128s.iter().map(|b| u128_key(b)).collect();
    }
    Ok(list.bytes.into_iter().map(ClaimKey::Bytes).collect())
}

pub fn key(k: Option<pb::Key>) -> Result<ClaimKey, Status> {
    match k.and_then(|k| k.kind) {
        Some(pb::key::Kind::U64(v)) => Ok(ClaimKey::U64(v)),
        Some(pb::key::Kind::U128(b)) => u128_key(&b),
        Some(pb::key::Kind::Bytes(b)) => Ok(ClaimKey::Bytes(b)),
        None => Err(invalid("key is not provided")),
    }
}

pub fn key_to_wire(k: ClaimKey) -> pb::Key {
    let kind = match k {
        ClaimKey::U64(v) => pb::key::Kind::U64(v),
        ClaimKey::U128(v) => pb::key::Kind::U128(v.to_be_bytes().to_vec()),
        ClaimKey::Bytes(b) => pb::key::Kind::Bytes(b),
    };
    pb::Key { kind: Some(kind) }
}

pub fn entries(list: Vec<pb::RegisterEntry>) -> Result<Vec<RegisterEntry>, Status> {
    check_count(list.len())?;
    list.into_iter()
        .map(|e| {
            Ok(RegisterEntry {
                key: key(e.key)?,
                value: e.value,
                metadata: e.metadata,
                parent: e.parent.map(|p| key(Some(p))).transpose()?,
                position: e.position,
            })
        })
        .collect()
}

pub fn config(c: Option<pb::NamespaceConfig>) -> Result<NamespaceConfig, Status> {
    let c = c.ok_or_else(|| invalid("namespace config is not provided"))?;
    let eviction = match pb::EvictionPolicy::try_from(c.eviction) {
        Ok(pb::EvictionPolicy::None) => EvictionPolicy::None,
        Ok(pb::EvictionPolicy::Tail) => EvictionPolicy::Tail,
        Ok(pb::EvictionPolicy::Positional) => EvictionPolicy::Positional,
        Err(_) => return Err(invalid(format!("unknown eviction policy {}", c.eviction))),
    };
    let key_kind = match pb::KeyKind::try_from(c.key_kind) {
        Ok(pb::KeyKind::U64) => KeyKind::U64,
        Ok(pb::KeyKind::U128) => KeyKind::U128,
        Ok(pb::KeyKind::Bytes) => KeyKind::Bytes,
        Err(_) => return Err(invalid(format!("unknown key kind {}", c.key_kind))),
    };
    Ok(NamespaceConfig {
        capacity: c.capacity,
        lease_ttl_ms: if c.lease_ttl_ms == 0 {
            DEFAULT_CLAIM_TTL_MS
        } else {
            c.lease_ttl_ms
        },
        eviction,
        key_kind,
        max_key_bytes: if c.max_key_bytes == 0 {
            MAX_KEY_BYTES
        } else {
            c.max_key_bytes
        },
        max_value_bytes: c.max_value_bytes,
        max_metadata_bytes: c.max_metadata_bytes,
    })
}

pub fn config_to_wire(c: &NamespaceConfig) -> pb::NamespaceConfig {
    pb::NamespaceConfig {
        capacity: c.capacity,
        lease_ttl_ms: c.lease_ttl_ms,
        eviction: match c.eviction {
            EvictionPolicy::None => pb::EvictionPolicy::None,
            EvictionPolicy::Tail => pb::EvictionPolicy::Tail,
            EvictionPolicy::Positional => pb::EvictionPolicy::Positional,
        } as i32,
        key_kind: match c.key_kind {
            KeyKind::U64 => pb::KeyKind::U64,
            KeyKind::U128 => pb::KeyKind::U128,
            KeyKind::Bytes => pb::KeyKind::Bytes,
        } as i32,
        max_key_bytes: c.max_key_bytes,
        max_value_bytes: c.max_value_bytes,
        max_metadata_bytes: c.max_metadata_bytes,
    }
}

pub fn offload_status(s: OffloadStatus) -> i32 {
    let wire = match s {
        OffloadStatus::Granted => pb::OffloadStatus::Granted,
        OffloadStatus::AlreadyStored => pb::OffloadStatus::AlreadyStored,
        OffloadStatus::Leased => pb::OffloadStatus::Leased,
    };
    wire as i32
}

pub fn register_status(s: RegisterStatus) -> i32 {
    let wire = match s {
        RegisterStatus::Stored => pb::RegisterStatus::Stored,
        RegisterStatus::AlreadyStored => pb::RegisterStatus::AlreadyStored,
        RegisterStatus::LeasedByOther => pb::RegisterStatus::LeasedByOther,
        RegisterStatus::RejectedFull => pb::RegisterStatus::RejectedFull,
    };
    wire as i32
}

pub fn matched(index: u32, v: StoredView) -> pb::Match {
    pb::Match {
        index,
        key: Some(key_to_wire(v.key)),
        value: v.value,
        metadata: v.metadata,
    }
}

pub fn stats_to_wire(s: NamespaceStats, reads: (u64, u64)) -> pb::NamespaceStats {
    let c = s.counters;
    pb::NamespaceStats {
        config: Some(config_to_wire(&s.config)),
        namespace: s.name,
        entries: s.entries,
        active_leases: s.active_leases,
        granted: c.granted,
        refreshed: c.refreshed,
        denied: c.denied,
        already_stored: c.already_stored,
        expired: c.expired,
        released: c.released,
        converted: c.converted,
        registered: c.registered,
        evicted: c.evicted,
        removed: c.removed,
        match_hits: reads.0,
        match_misses: reads.1,
    }
}
