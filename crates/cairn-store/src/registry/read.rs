//! Registry queries: pure reads of the keyspace at the current revision.

use serde::{Deserialize, Serialize};

use super::keys::{self, QueueKind};
use super::RegistryMode;
use crate::command::RangeRequest;
use crate::kv::{prefix_end, KeyRange, KeyValue};
use crate::store::Store;

/// One (key, session) entry of a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The owning session (lease ID).
    pub owner: i64,
    pub value: Vec<u8>,
    /// Revision that created the entry.
    pub create_revision: i64,
    /// Revision of the entry's last value change.
    pub mod_revision: i64,
}

/// One page of a prefix listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// (key, entry) pairs in stored-key order.
    pub entries: Vec<(Vec<u8>, Entry)>,
    /// Opaque cursor for the next page; `None` when this was the last.
    pub next: Option<Vec<u8>>,
}

/// A lock waiter or election candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub session: i64,
    /// Create revision of its queue key: FIFO order and fencing token.
    pub token: i64,
    pub value: Vec<u8>,
    /// Revision of its last value change (proclaim).
    pub mod_revision: i64,
}

fn scan(store: &Store, range: KeyRange, limit: i64) -> (Vec<KeyValue>, bool) {
    let resp = store
        .range(&RangeRequest {
            range,
            limit,
            ..Default::default()
        })
        // Only a compacted or future revision fails; we read the current one.
        .unwrap_or_default();
    (resp.kvs, resp.more)
}

fn entry(kv: &KeyValue, owner: i64) -> Entry {
    Entry {
        owner,
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

/// The registry's mode, `None` if it does not exist.
pub fn mode(store: &Store, registry: &[u8]) -> Option<RegistryMode> {
    let (kvs, _) = scan(store, KeyRange::single(keys::mode_key(registry)), 0);
    kvs.first()
        .and_then(|kv| RegistryMode::from_bytes(&kv.value))
}

/// Every entry of `key`, oldest first.
///
/// A name no registry can have (see [`keys::is_registry_name`]) holds
/// nothing: read as a prefix, `u/k0` would have reported registry `u`'s
/// entries of keys under `k0/` as its own (so for every read below).
pub fn lookup(store: &Store, registry: &[u8], key: &[u8]) -> Vec<Entry> {
    if !keys::is_registry_name(registry) {
        return Vec::new();
    }
    let prefix = keys::name_prefix(registry, key);
    let (kvs, _) = scan(store, KeyRange::prefix(prefix), 0);
    let mut out: Vec<Entry> = kvs
        .iter()
        .filter_map(|kv| match keys::entry_of(registry, &kv.key) {
            Some((k, owner)) if k == key => Some(entry(kv, owner)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|e| e.create_revision);
    out
}

pub fn count(store: &Store, registry: &[u8], key: &[u8]) -> usize {
    lookup(store, registry, key).len()
}

/// The keys `session` holds in `registry`, in key order.
pub fn keys_of(store: &Store, registry: &[u8], session: i64) -> Vec<Vec<u8>> {
    if !keys::is_registry_name(registry) {
        return Vec::new();
    }
    let Some(info) = store.lease_info(session) else {
        return Vec::new();
    };
    info.keys
        .iter()
        .filter_map(|stored| keys::entry_of(registry, stored))
        .filter(|(_, owner)| *owner == session)
        .map(|(k, _)| k.to_vec())
        .collect()
}

/// Entries whose key starts with `key_prefix`, at most `limit` (≥ 1),
/// continuing after `cursor` (from a previous page).
pub fn list(
    store: &Store,
    registry: &[u8],
    key_prefix: &[u8],
    cursor: Option<&[u8]>,
    limit: usize,
) -> Page {
    if !keys::is_registry_name(registry) {
        return Page::default();
    }
    let mut start = keys::registry_prefix(registry);
    start.extend_from_slice(key_prefix);
    let end = prefix_end(&start);
    if let Some(c) = cursor {
        // Resume strictly after the cursor, never before the prefix.
        let mut after = c.to_vec();
        after.push(0);
        if after > start {
            start = after;
        }
    }
    let limit = limit.max(1);
    let (kvs, more) = scan(
        store,
        KeyRange::new(start, end),
        i64::try_from(limit).unwrap_or(i64::MAX),
    );
    let next = if more {
        kvs.last().map(|kv| kv.key.clone())
    } else {
        None
    };
    let entries = kvs
        .iter()
        .filter_map(|kv| {
            let (k, owner) = keys::entry_of(registry, &kv.key)?;
            Some((k.to_vec(), entry(kv, owner)))
        })
        .collect();
    Page { entries, next }
}

/// The queue of a lock or election, oldest (holder / leader) first.
pub fn queue(store: &Store, kind: QueueKind, name: &[u8]) -> Vec<Waiter> {
    let prefix = keys::queue_prefix(kind, name);
    let (kvs, _) = scan(store, KeyRange::prefix(prefix.clone()), 0);
    let mut out: Vec<Waiter> = kvs
        .iter()
        .filter_map(|kv| {
            Some(Waiter {
                session: keys::queue_session(&prefix, &kv.key)?,
                token: kv.create_revision,
                value: kv.value.clone(),
                mod_revision: kv.mod_revision,
            })
        })
        .collect();
    out.sort_by_key(|w| w.token);
    out
}

/// The lock holder / election leader, if any.
pub fn head(store: &Store, kind: QueueKind, name: &[u8]) -> Option<Waiter> {
    queue(store, kind, name).into_iter().next()
}
