//! Conversions between the claims types and `cairn.v1` wire messages, and
//! the checks done before a request is sent.

use cairn_proto::cairn::v1 as pb;

use super::error::ClaimsError;
use super::types::*;

fn invalid(msg: impl Into<String>) -> ClaimsError {
    ClaimsError::InvalidArgument(msg.into())
}

/// Refuse what the server would refuse for its size alone.
pub fn check_count(n: usize) -> Result<(), ClaimsError> {
    if n == 0 {
        return Err(invalid("the request has no keys"));
    }
    if n > MAX_KEYS_PER_REQUEST {
        return Err(invalid(format!(
            "{n} keys in one request (max {MAX_KEYS_PER_REQUEST})"
        )));
    }
    Ok(())
}

/// A key list of one kind.
pub fn key_list(keys: &[ClaimKey]) -> Result<pb::KeyList, ClaimsError> {
    check_count(keys.len())?;
    let kind = keys[0].kind();
    let mut list = pb::KeyList::default();
    for (i, k) in keys.iter().enumerate() {
        match k {
            ClaimKey::U64(v) => list.u64s.push(*v),
            ClaimKey::U128(v) => list.u128s.push(v.to_be_bytes().to_vec()),
            ClaimKey::Bytes(b) => list.bytes.push(b.clone()),
        }
        if k.kind() != kind {
            return Err(invalid(format!(
                "key #{i} is {:?}, key #0 is {kind:?}: one kind per request",
                k.kind()
            )));
        }
    }
    Ok(list)
}

pub fn key(k: &ClaimKey) -> pb::Key {
    let kind = match k {
        ClaimKey::U64(v) => pb::key::Kind::U64(*v),
        ClaimKey::U128(v) => pb::key::Kind::U128(v.to_be_bytes().to_vec()),
        ClaimKey::Bytes(b) => pb::key::Kind::Bytes(b.clone()),
    };
    pb::Key { kind: Some(kind) }
}

pub fn key_from(k: Option<pb::Key>) -> Result<ClaimKey, ClaimsError> {
    let protocol = |m: String| ClaimsError::Client(crate::ClientError::Protocol(m));
    match k.and_then(|k| k.kind) {
        Some(pb::key::Kind::U64(v)) => Ok(ClaimKey::U64(v)),
        Some(pb::key::Kind::U128(b)) => {
            let bytes: [u8; 16] = b
                .as_slice()
                .try_into()
                .map_err(|_| protocol(format!("u128 key of {} bytes", b.len())))?;
            Ok(ClaimKey::U128(u128::from_be_bytes(bytes)))
        }
        Some(pb::key::Kind::Bytes(b)) => Ok(ClaimKey::Bytes(b)),
        None => Err(protocol("match without a key".into())),
    }
}

pub fn entry(e: &RegisterEntry) -> pb::RegisterEntry {
    pb::RegisterEntry {
        key: Some(key(&e.key)),
        value: e.value.clone(),
        metadata: e.metadata.clone(),
        parent: e.parent.as_ref().map(key),
        position: e.position,
    }
}

pub fn config(c: &NamespaceConfig) -> pb::NamespaceConfig {
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

pub fn config_from(c: Option<pb::NamespaceConfig>) -> NamespaceConfig {
    let c = c.unwrap_or_default();
    NamespaceConfig {
        capacity: c.capacity,
        lease_ttl_ms: c.lease_ttl_ms,
        eviction: match pb::EvictionPolicy::try_from(c.eviction) {
            Ok(pb::EvictionPolicy::Tail) => EvictionPolicy::Tail,
            Ok(pb::EvictionPolicy::Positional) => EvictionPolicy::Positional,
            _ => EvictionPolicy::None,
        },
        key_kind: match pb::KeyKind::try_from(c.key_kind) {
            Ok(pb::KeyKind::U128) => KeyKind::U128,
            Ok(pb::KeyKind::Bytes) => KeyKind::Bytes,
            _ => KeyKind::U64,
        },
        max_key_bytes: c.max_key_bytes,
        max_value_bytes: c.max_value_bytes,
        max_metadata_bytes: c.max_metadata_bytes,
    }
}

/// Statuses must be one per key, each known.
pub fn offload_statuses(
    wire: Vec<i32>,
    expected: usize,
) -> Result<Vec<OffloadStatus>, ClaimsError> {
    let bad = |m: String| ClaimsError::Client(crate::ClientError::Protocol(m));
    if wire.len() != expected {
        return Err(bad(format!("{} statuses for {expected} keys", wire.len())));
    }
    wire.into_iter()
        .map(|s| match pb::OffloadStatus::try_from(s) {
            Ok(pb::OffloadStatus::Granted) => Ok(OffloadStatus::Granted),
            Ok(pb::OffloadStatus::AlreadyStored) => Ok(OffloadStatus::AlreadyStored),
            Ok(pb::OffloadStatus::Leased) => Ok(OffloadStatus::Leased),
            _ => Err(bad(format!("unknown offload status {s}"))),
        })
        .collect()
}

pub fn register_statuses(
    wire: Vec<i32>,
    expected: usize,
) -> Result<Vec<RegisterStatus>, ClaimsError> {
    let bad = |m: String| ClaimsError::Client(crate::ClientError::Protocol(m));
    if wire.len() != expected {
        return Err(bad(format!(
            "{} statuses for {expected} entries",
            wire.len()
        )));
    }
    wire.into_iter()
        .map(|s| match pb::RegisterStatus::try_from(s) {
            Ok(pb::RegisterStatus::Stored) => Ok(RegisterStatus::Stored),
            Ok(pb::RegisterStatus::AlreadyStored) => Ok(RegisterStatus::AlreadyStored),
            Ok(pb::RegisterStatus::LeasedByOther) => Ok(RegisterStatus::LeasedByOther),
            Ok(pb::RegisterStatus::RejectedFull) => Ok(RegisterStatus::RejectedFull),
            _ => Err(bad(format!("unknown register status {s}"))),
        })
        .collect()
}

pub fn matched(m: pb::Match) -> Result<Matched, ClaimsError> {
    Ok(Matched {
        index: m.index as usize,
        key: key_from(m.key)?,
        value: m.value,
        metadata: m.metadata,
    })
}

pub fn stats(s: pb::NamespaceStats) -> ClaimsStats {
    ClaimsStats {
        config: config_from(s.config),
        namespace: s.namespace,
        entries: s.entries,
        active_leases: s.active_leases,
        granted: s.granted,
        refreshed: s.refreshed,
        denied: s.denied,
        already_stored: s.already_stored,
        expired: s.expired,
        released: s.released,
        converted: s.converted,
        registered: s.registered,
        evicted: s.evicted,
        removed: s.removed,
        match_hits: s.match_hits,
        match_misses: s.match_misses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_are_one_kind_and_bounded() {
        let l = key_list(&[ClaimKey::U64(1), ClaimKey::U64(2)]).unwrap();
        assert_eq!(l.u64s, vec![1, 2]);
        let l = key_list(&[ClaimKey::U128(1 << 64)]).unwrap();
        assert_eq!(l.u128s[0][7], 1, "big-endian");
        let err = key_list(&[ClaimKey::U64(1), ClaimKey::Bytes(vec![1])]).unwrap_err();
        assert!(err.to_string().contains("key #1 is Bytes"), "{err}");
        assert!(key_list(&[]).is_err());
        let many = vec![ClaimKey::U64(0); MAX_KEYS_PER_REQUEST + 1];
        assert!(key_list(&many)
            .unwrap_err()
            .to_string()
            .contains("10001 keys"));
        assert_eq!(
            key_from(Some(key(&ClaimKey::U128(u128::MAX - 5)))).unwrap(),
            ClaimKey::U128(u128::MAX - 5)
        );
    }

    #[test]
    fn statuses_must_match_the_request() {
        assert!(offload_statuses(vec![1, 2, 3], 3).is_ok());
        assert!(offload_statuses(vec![1, 2], 3).is_err());
        assert!(offload_statuses(vec![0], 1).is_err(), "unspecified");
        assert_eq!(
            register_statuses(vec![3], 1).unwrap(),
            vec![RegisterStatus::LeasedByOther]
        );
    }
}
