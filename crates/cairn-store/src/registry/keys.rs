//! Where registry records live in the keyspace.
//!
//! Everything is under [`RESERVED_PREFIX`] (`"\0cairn/"`). etcd clients may
//! read it; writes through the etcd API are refused (see
//! `Store::check_put`), so only registry commands change it.
//!
//! | record | key | value | lease |
//! |---|---|---|---|
//! | registry mode | `\0cairn/reg/<registry>` | `unique` / `duplicate` | none |
//! | name entry | `\0cairn/name/<registry>/<key>/<session:016x>` | the entry's value | the session |
//! | lock waiter | `\0cairn/lock/<name>/<session:016x>` | empty | the session |
//! | candidate | `\0cairn/elect/<name>/<session:016x>` | the candidate's value | the session |
//!
//! Keys and lock/election names are arbitrary bytes: an entry is found by
//! its fixed-length suffix (`/` + 16 hex digits), so `key` may itself
//! contain `/`. Registry names may not, so `<registry>/` is unambiguous.

use crate::kv::KeyRange;

/// The prefix reserved for registry records.
pub const RESERVED_PREFIX: &[u8] = b"\0cairn/";
/// Longest registry name, key or lock/election name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Length of the `/<session:016x>` suffix of owned records.
const SESSION_SUFFIX_LEN: usize = 17;

/// Whether `name` can name a registry: 1 to [`MAX_NAME_BYTES`] bytes
/// without `/`, so that `<registry>/` starts no other registry's entries.
pub fn is_registry_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.contains(&b'/')
}

/// True when `key` lies in the reserved prefix.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = RESERVED_PREFIX.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn mode_key(registry: &[u8]) -> Vec<u8> {
    join(&[b"reg/", registry])
}

/// `\0cairn/name/<registry>/`: every entry of a registry.
pub fn registry_prefix(registry: &[u8]) -> Vec<u8> {
    join(&[b"name/", registry, b"/"])
}

/// `\0cairn/name/<registry>/<key>/`: the entries of one key (and of keys
/// that extend `key/`; see [`entry_of`]).
pub fn name_prefix(registry: &[u8], key: &[u8]) -> Vec<u8> {
    join(&[b"name/", registry, b"/", key, b"/"])
}

pub fn entry_key(registry: &[u8], key: &[u8], session: i64) -> Vec<u8> {
    owned_key(name_prefix(registry, key), session)
}

/// The queue prefix of a lock (`election == false`) or an election.
pub fn queue_prefix(kind: QueueKind, name: &[u8]) -> Vec<u8> {
    let tag: &[u8] = match kind {
        QueueKind::Lock => b"lock/",
        QueueKind::Election => b"elect/",
    };
    join(&[tag, name, b"/"])
}

pub fn queue_key(kind: QueueKind, name: &[u8], session: i64) -> Vec<u8> {
    owned_key(queue_prefix(kind, name), session)
}

fn owned_key(mut prefix: Vec<u8>, session: i64) -> Vec<u8> {
    prefix.extend_from_slice(format!("{:016x}", session as u64).as_bytes());
    prefix
}

/// Splits `rest` (a stored key without its registry/queue prefix) into the
/// user key and the owning session; `None` if it is not an owned record.
pub fn split_owned(rest: &[u8]) -> Option<(&[u8], i64)> {
    if rest.len() < SESSION_SUFFIX_LEN {
        return None;
    }
    let (key, suffix) = rest.split_at(rest.len() - SESSION_SUFFIX_LEN);
    let hex = suffix.strip_prefix(b"/")?;
    if !hex.iter().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let session = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()? as i64;
    Some((key, session))
}

/// The user key and session of a stored entry key under `registry`.
pub fn entry_of<'a>(registry: &[u8], stored: &'a [u8]) -> Option<(&'a [u8], i64)> {
    let prefix = registry_prefix(registry);
    split_owned(stored.strip_prefix(prefix.as_slice())?)
}

/// The owning session of a queue key directly under `prefix`.
pub fn queue_session(prefix: &[u8], stored: &[u8]) -> Option<i64> {
    let rest = stored.strip_prefix(prefix)?;
    // `/` + 16 hex digits, but the queue prefix already ends with `/`.
    if rest.len() != SESSION_SUFFIX_LEN - 1 {
        return None;
    }
    let text = std::str::from_utf8(rest).ok()?;
    u64::from_str_radix(text, 16).ok().map(|v| v as i64)
}

pub fn prefix_range(prefix: Vec<u8>) -> KeyRange {
    KeyRange::prefix(prefix)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QueueKind {
    Lock,
    Election,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_round_trip_even_with_slashes_in_the_key() {
        for key in [&b"a"[..], b"a/b", b"x/0000000000000001", b"\xff\x00"] {
            let stored = entry_key(b"reg", key, 0x1234);
            assert!(is_reserved(&stored));
            assert_eq!(entry_of(b"reg", &stored), Some((key, 0x1234)));
        }
        let negative = entry_key(b"reg", b"k", -2);
        assert_eq!(entry_of(b"reg", &negative), Some((&b"k"[..], -2)));
        assert_eq!(entry_of(b"other", &negative), None);
    }

    #[test]
    fn queue_keys_parse_back_to_their_session() {
        let p = queue_prefix(QueueKind::Lock, b"job");
        let k = queue_key(QueueKind::Lock, b"job", 7);
        assert_eq!(k, b"\0cairn/lock/job/0000000000000007".to_vec());
        assert_eq!(queue_session(&p, &k), Some(7));
        // A waiter of lock "job/x" is not a waiter of lock "job".
        let nested = queue_key(QueueKind::Lock, b"job/x", 7);
        assert_eq!(queue_session(&p, &nested), None);
    }
}
