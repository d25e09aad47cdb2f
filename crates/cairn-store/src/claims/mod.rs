//! Block claims: a replicated dedup registry.
//!
//! Workers ask which block hashes they may store (`can_offload` grants a
//! lease to their session), record the blocks they stored (`register`),
//! and look up stored blocks (`match_prefix`, `match_all`). The data lives
//! outside the MVCC keyspace: millions of hashes, no history needed.
//!
//! Rules (all decided in the state machine, deterministically):
//! * A key holds at most one slot: a lease (one session storing it) or a
//!   stored entry. A lease ends by its holder's register (`converted`),
//!   by running out of time (`expired`: counted in the apply that moves
//!   cluster time past its deadline, its slot reused or reclaimed later;
//!   see `deadlines`), by `remove` or by its session ending (`released`,
//!   in the same apply as the session's end).
//! * A lease is live while `now_ms < deadline_ms`, with `now_ms` the
//!   leader-stamped cluster time of the command being applied.
//! * `register` by a session that does not hold a live lease someone else
//!   holds is refused for that entry (`LeasedByOther`): nothing changes,
//!   the holder keeps its lease. A key with no live lease may be
//!   registered by anyone (e.g. after the lease expired).
//! * Capacity counts stored entries and is never exceeded: a register into
//!   a full namespace evicts the policy's next victim first, or is refused
//!   per entry (`RejectedFull`) under policy `None`.
//! * Every accepted claims command takes exactly one store revision (the
//!   Store does that); a rejected one changes nothing.

mod deadlines;
mod grants;
mod namespace;
mod packed_keys;
mod sessions;
mod slot_table;
pub mod spare_buckets;
mod types;

use std::collections::{BTreeMap, BTreeSet};

use deadlines::Deadlines;
use sessions::SessionLeases;

use serde::{Deserialize, Serialize};

pub use grants::{Grant, KeyList, LeaseChanges, LeaseChangesPart};
pub use namespace::{NamespaceRow, Slot, StoredEntry};
pub use types::*;

use grants::SharedGrant;
use namespace::Namespace;

/// What changed since the last `take_changes`, for persistence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimsChanges {
    /// Keys whose stored entry was added, changed or removed: look each
    /// up to tell an upsert from a delete. Sorted, each once. (Collected
    /// as a list and sorted once by `take_changes`: a B-tree insert per
    /// touched key cost more.)
    pub stored: Vec<(u32, ClaimKey)>,
    /// Keys whose lease was granted, refreshed or ended, with the lease
    /// each holds then (`None`: none), in the order of the changes: a
    /// key's last is its lease now. Recorded as the lease changes, so
    /// persisting leases needs no slot lookup: that lookup, a cache miss
    /// per key in a map of millions, was a quarter of a member's CPU under
    /// `CanOffload` load.
    pub leases: LeaseChanges,
    pub namespaces: BTreeSet<u32>,
}

/// (namespace id, key, (session, deadline) of the lease it holds now or
/// `None`).
pub type LeaseChange = (u32, ClaimKey, Option<(i64, u64)>);

impl ClaimsChanges {
    pub fn is_empty(&self) -> bool {
        self.stored.is_empty() && self.leases.is_empty() && self.namespaces.is_empty()
    }
}

/// The whole claims state, for snapshots and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsSnapshot {
    pub namespaces: Vec<NamespaceRow>,
    pub slots: Vec<(u32, ClaimKey, Slot)>,
}

#[derive(Debug, Clone, Default)]
pub struct Claims {
    /// Cluster time the leases have been brought to: every lease ending
    /// at or before it has ended (and was counted), whatever its slot
    /// still says.
    now_ms: u64,
    by_name: BTreeMap<String, u32>,
    spaces: BTreeMap<u32, Namespace>,
    /// Live leases counted by deadline across namespaces, to end them as
    /// time passes (see `advance`).
    deadlines: Deadlines,
    /// Leases held by each session, released when the session ends (in
    /// any order: releasing one lease does not affect another).
    by_session: SessionLeases,
    changes: ClaimsChanges,
}

impl Claims {
    /// Cluster time is now `now_ms` (it never goes back): the leases
    /// ending at or before it end, counted per namespace and session from
    /// their deadlines' buckets, without touching a slot.
    pub fn advance(&mut self, now_ms: u64) {
        if now_ms <= self.now_ms {
            return;
        }
        self.now_ms = now_ms;
        let (spaces, by_session, changes) =
            (&mut self.spaces, &mut self.by_session, &mut self.changes);
        self.deadlines.advance(now_ms, |ended| {
            if let Some(ns) = spaces.get_mut(&ended.namespace) {
                let n = ended.live as u64;
                ns.leases = ns.leases.saturating_sub(n);
                ns.row.counters.expired += n;
                changes.namespaces.insert(ended.namespace);
            }
            by_session.ended(ended.session_id, ended.live);
        });
    }

    /// Apply one command at cluster time `now_ms`. `session_alive` says
    /// whether a session (an etcd lease of the store) exists.
    pub fn apply(
        &mut self,
        cmd: &ClaimsCommand,
        now_ms: u64,
        session_alive: impl Fn(i64) -> bool,
    ) -> Result<ClaimsOutput, ClaimsError> {
        self.advance(now_ms);
        let now_ms = self.now_ms;
        match cmd {
            ClaimsCommand::CreateNamespace { name, config } => self.create(name, config),
            ClaimsCommand::CanOffload {
                namespace,
                session_id,
                keys,
                ..
            }
            | ClaimsCommand::CanOffloadListed {
                namespace,
                session_id,
                keys,
                ..
            } => {
                let id = self.checked(namespace, keys.iter())?;
                if !session_alive(*session_id) {
                    return Err(ClaimsError::SessionNotFound(*session_id));
                }
                Ok(self.can_offload(id, *session_id, keys, now_ms))
            }
            ClaimsCommand::Register {
                namespace,
                session_id,
                entries,
                ..
            } => {
                let id = self.checked(namespace, entries.iter().map(|e| &e.key))?;
                check_entries(self.spaces[&id].config(), entries)?;
                Ok(self.register(id, *session_id, entries, now_ms))
            }
            ClaimsCommand::Remove {
                namespace, keys, ..
            } => {
                let id = self.checked(namespace, keys.iter())?;
                Ok(self.remove(id, keys))
            }
            ClaimsCommand::Touch {
                namespace, keys, ..
            } => {
                let id = self.checked(namespace, keys.iter())?;
                Ok(self.touch(id, keys))
            }
        }
    }

    fn create(
        &mut self,
        name: &str,
        config: &NamespaceConfig,
    ) -> Result<ClaimsOutput, ClaimsError> {
        check_name(name)?;
        check_config(config)?;
        if let Some(id) = self.by_name.get(name) {
            return if self.spaces[id].config() == config {
                Ok(ClaimsOutput::Created { existed: true })
            } else {
                Err(ClaimsError::NamespaceExists(name.to_string()))
            };
        }
        if self.spaces.len() >= MAX_NAMESPACES {
            return Err(ClaimsError::TooManyNamespaces);
        }
        let id = self.spaces.keys().next_back().map_or(1, |last| last + 1);
        self.by_name.insert(name.to_string(), id);
        self.spaces.insert(
            id,
            Namespace::new(NamespaceRow {
                id,
                name: name.to_string(),
                config: config.clone(),
                counters: ClaimCounters::default(),
                next_touch_seq: 0,
            }),
        );
        self.changes.namespaces.insert(id);
        Ok(ClaimsOutput::Created { existed: false })
    }

    /// Resolve a namespace and validate a request's keys against it.
    fn checked<'a>(
        &self,
        namespace: &str,
        keys: impl ExactSizeIterator<Item = &'a ClaimKey>,
    ) -> Result<u32, ClaimsError> {
        let id = self.namespace_id(namespace)?;
        check_keys(self.spaces[&id].config(), keys)?;
        Ok(id)
    }

    fn namespace_id(&self, name: &str) -> Result<u32, ClaimsError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| ClaimsError::NamespaceNotFound(name.to_string()))
    }

    fn ns(&mut self, id: u32) -> &mut Namespace {
        self.changes.namespaces.insert(id);
        self.spaces.get_mut(&id).expect("namespace id resolved")
    }

    /// One pass over the keys, one slot-map probe each (the probe is a
    /// cache miss in a map of millions, and it was three: expiry check,
    /// status, insert); the grants then go to the deadline buckets, the
    /// session's list and the change list in one call each.
    fn can_offload(
        &mut self,
        id: u32,
        session_id: i64,
        keys: &[ClaimKey],
        now_ms: u64,
    ) -> ClaimsOutput {
        let ns = self.ns(id);
        let deadline_ms = now_ms.saturating_add(ns.config().lease_ttl_ms);
        let counters = &mut ns.row.counters;
        let mut statuses = Vec::with_capacity(keys.len());
        let mut granted = KeyList::with_capacity(keys.len(), keys.first());
        // Deadlines of the session's leases this request refreshed.
        let mut refreshed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            ns.slots.prefetch_ahead(keys, i, |k| k);
            let (slot, fresh) = ns.slots.get_or_insert(
                key,
                || Slot::Leased {
                    session_id,
                    deadline_ms,
                },
                |slot| slot.is_ended_lease(now_ms),
            );
            let status = match slot {
                _ if fresh => {
                    ns.leases += 1;
                    counters.granted += 1;
                    granted.push(key);
                    OffloadStatus::Granted
                }
                Slot::Stored(_) => {
                    counters.already_stored += 1;
                    OffloadStatus::AlreadyStored
                }
                Slot::Leased {
                    session_id: holder,
                    deadline_ms: until,
                } => {
                    if *until <= now_ms {
                        // Ran out (and was counted expired when time
                        // passed its deadline): granted afresh.
                        ns.leases += 1;
                        counters.granted += 1;
                    } else if *holder != session_id {
                        counters.denied += 1;
                        statuses.push(OffloadStatus::Leased);
                        continue;
                    } else {
                        counters.refreshed += 1;
                        if *until == deadline_ms {
                            // Granted by this very request (the key is
                            // repeated) or one at the same instant: the
                            // lease already is what it would become.
                            statuses.push(OffloadStatus::Granted);
                            continue;
                        }
                        refreshed.push(*until);
                    }
                    *holder = session_id;
                    *until = deadline_ms;
                    granted.push(key);
                    OffloadStatus::Granted
                }
            };
            statuses.push(status);
        }
        for until in refreshed {
            self.deadlines.end(until, id, session_id);
            self.by_session.ended(session_id, 1);
        }
        if !granted.is_empty() {
            granted.shrink();
            let grant = SharedGrant::new(Grant {
                session_id,
                namespace: id,
                deadline_ms,
                keys: granted,
            });
            self.changes.leases.push_grant(grant.clone());
            self.deadlines.insert(grant.clone());
            let spaces = &self.spaces;
            self.by_session.add(grant, now_ms, |id, key| {
                lease_of(spaces, now_ms, id, key).is_some_and(|(s, _)| s == session_id)
            });
        }
        ClaimsOutput::CanOffload {
            statuses,
            lease_deadline_ms: deadline_ms,
        }
    }

    fn register(
        &mut self,
        id: u32,
        session_id: i64,
        entries: &[RegisterEntry],
        now_ms: u64,
    ) -> ClaimsOutput {
        let mut statuses = Vec::with_capacity(entries.len());
        let mut evicted = 0;
        for (i, entry) in entries.iter().enumerate() {
            self.spaces[&id]
                .slots
                .prefetch_ahead(entries, i, |e| &e.key);
            // A lease that ran out is no lease: the entry takes its slot.
            let own_lease = match self.spaces[&id].slots.get(&entry.key) {
                Some(Slot::Stored(_)) => {
                    statuses.push(RegisterStatus::AlreadyStored);
                    continue;
                }
                Some(Slot::Leased {
                    session_id: s,
                    deadline_ms,
                }) if *deadline_ms > now_ms && *s != session_id => {
                    statuses.push(RegisterStatus::LeasedByOther);
                    continue;
                }
                Some(Slot::Leased { deadline_ms, .. }) => *deadline_ms > now_ms,
                None => false,
            };
            let Some(n) = self.make_room(id) else {
                statuses.push(RegisterStatus::RejectedFull);
                continue;
            };
            evicted += n;
            if own_lease {
                self.drop_lease(id, &entry.key);
                self.ns(id).row.counters.converted += 1;
            }
            let ns = self.ns(id);
            ns.row.counters.registered += 1;
            let parent = ns.insert_entry(entry);
            self.changes.stored.push((id, entry.key.clone()));
            if let Some(p) = parent {
                self.changes.stored.push((id, p));
            }
            statuses.push(RegisterStatus::Stored);
        }
        ClaimsOutput::Register { statuses, evicted }
    }

    /// Evict until one more entry fits; `None` if it cannot fit.
    fn make_room(&mut self, id: u32) -> Option<u64> {
        let mut evicted = 0;
        while self.spaces[&id].entries >= self.spaces[&id].config().capacity {
            let victim = self.spaces[&id].next_victim()?;
            self.remove_entry(id, &victim);
            self.ns(id).row.counters.evicted += 1;
            evicted += 1;
        }
        Some(evicted)
    }

    fn remove_entry(&mut self, id: u32, key: &ClaimKey) -> bool {
        let Some(parent) = self.ns(id).remove_entry(key) else {
            return false;
        };
        self.changes.stored.push((id, key.clone()));
        if let Some(p) = parent {
            self.changes.stored.push((id, p));
        }
        true
    }

    fn remove(&mut self, id: u32, keys: &[ClaimKey]) -> ClaimsOutput {
        let (mut removed, mut leases_released) = (0, 0);
        for key in keys {
            if self.remove_entry(id, key) {
                removed += 1;
                self.ns(id).row.counters.removed += 1;
            } else if self.drop_lease(id, key).is_some() {
                leases_released += 1;
                self.ns(id).row.counters.released += 1;
            }
        }
        ClaimsOutput::Remove {
            removed,
            leases_released,
        }
    }

    fn touch(&mut self, id: u32, keys: &[ClaimKey]) -> ClaimsOutput {
        let mut present = 0;
        for key in keys {
            if self.ns(id).touch(key) {
                self.changes.stored.push((id, key.clone()));
                present += 1;
            }
        }
        ClaimsOutput::Touch { present }
    }

    /// End the key's live lease early (a lease that ran out is left to
    /// its deadline's count): the slot goes, the counts drop, the change
    /// is recorded. Returns the holder.
    fn drop_lease(&mut self, id: u32, key: &ClaimKey) -> Option<i64> {
        self.end_lease(id, key, None)
    }

    /// The one way a live lease ends early, if `holder` (when given)
    /// holds it; returns the holder.
    fn end_lease(&mut self, id: u32, key: &ClaimKey, holder: Option<i64>) -> Option<i64> {
        let now_ms = self.now_ms;
        let ns = self.spaces.get_mut(&id)?;
        let (session_id, deadline_ms) =
            ns.remove_lease_if(key, |s, d| d > now_ms && holder.is_none_or(|h| h == s))?;
        self.changes.namespaces.insert(id);
        self.changes.leases.push((id, key.clone(), None));
        self.deadlines.end(deadline_ms, id, session_id);
        self.by_session.ended(session_id, 1);
        Some(session_id)
    }

    /// A session ended: release every live claim lease it held.
    pub fn release_session(&mut self, session_id: i64) -> u64 {
        let mut released = 0;
        for (id, key) in self.by_session.take(session_id) {
            // The entry may be stale: the key since leased by another
            // session, stored, or its lease ran out.
            if self.end_lease(id, &key, Some(session_id)).is_some() {
                self.ns(id).row.counters.released += 1;
                released += 1;
            }
        }
        released
    }

    /// Earliest claim lease deadline (cluster ms).
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first()
    }

    /// The longest prefix of `keys` that is stored, in order.
    pub fn match_prefix(
        &self,
        namespace: &str,
        keys: &[ClaimKey],
    ) -> Result<Vec<StoredView>, ClaimsError> {
        let ns = &self.spaces[&self.checked(namespace, keys.iter())?];
        Ok(keys
            .iter()
            .enumerate()
            .map_while(|(i, k)| {
                ns.slots.prefetch_ahead(keys, i, |k| k);
                ns.stored(k).map(|e| view(k, e))
            })
            .collect())
    }

    /// Every stored key of `keys`, in request order, with its index in the
    /// request; misses are skipped.
    pub fn match_all(
        &self,
        namespace: &str,
        keys: &[ClaimKey],
    ) -> Result<Vec<(u32, StoredView)>, ClaimsError> {
        let ns = &self.spaces[&self.checked(namespace, keys.iter())?];
        Ok(keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                ns.slots.prefetch_ahead(keys, i, |k| k);
                ns.stored(k).map(|e| (i as u32, view(k, e)))
            })
            .collect())
    }

    pub fn stats(&self, namespace: &str) -> Result<NamespaceStats, ClaimsError> {
        Ok(stats_of(&self.spaces[&self.namespace_id(namespace)?]))
    }

    /// Stats of every namespace, by name.
    pub fn all_stats(&self) -> Vec<NamespaceStats> {
        self.by_name
            .values()
            .map(|id| stats_of(&self.spaces[id]))
            .collect()
    }

    /// Claim leases held by a session (for tests and tools).
    pub fn leases_of(&self, session_id: i64) -> usize {
        self.by_session.live(session_id)
    }

    /// Every claim lease: (namespace id, key, session, deadline), earliest
    /// deadline first.
    pub fn leases(&self) -> impl Iterator<Item = (u32, ClaimKey, i64, u64)> + '_ {
        let (spaces, now_ms) = (&self.spaces, self.now_ms);
        // One slot lookup per entry: it tells a live entry from a stale one
        // and gives the holder.
        self.deadlines
            .entries()
            .filter_map(
                move |(deadline_ms, id, key)| match lease_of(spaces, now_ms, id, &key)? {
                    (session_id, d) if d == deadline_ms => Some((id, key, session_id, deadline_ms)),
                    _ => None,
                },
            )
    }

    /// Every claim lease ending before this deadline has ended (expired,
    /// converted, released or refreshed); `None`: no lease is live. Cheap
    /// (no slot lookups) and conservative: it may lag the earliest live
    /// deadline, never pass it.
    pub fn lease_floor_ms(&self) -> Option<u64> {
        self.deadlines.floor()
    }

    /// Number of claim leases, all namespaces.
    pub fn lease_count(&self) -> usize {
        self.deadlines.len()
    }

    /// The key's slot; `None` for a lease that ran out.
    pub fn slot(&self, id: u32, key: &ClaimKey) -> Option<&Slot> {
        let slot = self.spaces.get(&id)?.slots.get(key)?;
        (!slot.is_ended_lease(self.now_ms)).then_some(slot)
    }

    pub fn namespace_row(&self, id: u32) -> Option<&NamespaceRow> {
        self.spaces.get(&id).map(|ns| &ns.row)
    }

    pub fn take_changes(&mut self) -> ClaimsChanges {
        let mut changes = std::mem::take(&mut self.changes);
        changes.stored.sort_unstable();
        changes.stored.dedup();
        changes
    }

    /// The namespaces and every slot but those of leases that ran out.
    pub fn snapshot(&self) -> ClaimsSnapshot {
        let now_ms = self.now_ms;
        ClaimsSnapshot {
            namespaces: self.spaces.values().map(|ns| ns.row.clone()).collect(),
            slots: self
                .spaces
                .values()
                .flat_map(|ns| {
                    let mut slots: Vec<_> = ns
                        .slots
                        .iter()
                        .filter(|(_, slot)| !slot.is_ended_lease(now_ms))
                        .collect();
                    slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    slots
                        .into_iter()
                        .map(move |(k, s)| (ns.row.id, k, s.clone()))
                })
                .collect(),
        }
    }

    /// Rebuild from persisted rows at cluster time `now_ms`; indexes are
    /// derived. Leases that ran out by then are left out: their expiry
    /// was counted in the namespace rows when time passed them.
    pub fn restore(
        namespaces: impl IntoIterator<Item = NamespaceRow>,
        slots: impl IntoIterator<Item = (u32, ClaimKey, Slot)>,
        now_ms: u64,
    ) -> Claims {
        let mut claims = Claims {
            now_ms,
            ..Claims::default()
        };
        for row in namespaces {
            claims.by_name.insert(row.name.clone(), row.id);
            claims.spaces.insert(row.id, Namespace::new(row));
        }
        // Leases by session, as grants of one deadline and namespace each.
        let mut leases: BTreeMap<i64, Vec<(u64, u32, ClaimKey)>> = BTreeMap::new();
        for (id, key, slot) in slots {
            let Some(ns) = claims.spaces.get_mut(&id) else {
                continue;
            };
            if slot.is_ended_lease(now_ms) {
                continue;
            }
            if let Slot::Leased {
                session_id,
                deadline_ms,
            } = &slot
            {
                leases
                    .entry(*session_id)
                    .or_default()
                    .push((*deadline_ms, id, key.clone()));
            }
            ns.restore_slot(key, slot);
        }
        for (session_id, keys) in leases {
            for grant in sessions::regroup(session_id, keys) {
                claims.deadlines.insert(grant.clone());
                // Restored leases are live and distinct: nothing to compact.
                claims.by_session.add(grant, 0, |_, _| true);
            }
        }
        claims
    }
}

/// The (session, deadline) of the live lease `key` of namespace `id`
/// holds at `now_ms`, if it holds one.
fn lease_of(
    spaces: &BTreeMap<u32, Namespace>,
    now_ms: u64,
    id: u32,
    key: &ClaimKey,
) -> Option<(i64, u64)> {
    match spaces.get(&id)?.slots.get(key)? {
        Slot::Leased {
            session_id,
            deadline_ms,
        } if *deadline_ms > now_ms => Some((*session_id, *deadline_ms)),
        _ => None,
    }
}

fn view(key: &ClaimKey, e: &StoredEntry) -> StoredView {
    StoredView {
        key: key.clone(),
        value: e.value.clone(),
        metadata: e.metadata.clone(),
    }
}

fn stats_of(ns: &Namespace) -> NamespaceStats {
    NamespaceStats {
        name: ns.row.name.clone(),
        config: ns.row.config.clone(),
        entries: ns.entries,
        active_leases: ns.leases,
        counters: ns.row.counters,
    }
}

fn check_name(name: &str) -> Result<(), ClaimsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:".contains(c);
    if name.is_empty() || name.len() > MAX_NAMESPACE_NAME_BYTES || !name.chars().all(ok_char) {
        return Err(ClaimsError::InvalidName(format!(
            "{name:?}: 1..={MAX_NAMESPACE_NAME_BYTES} bytes of [A-Za-z0-9._-/:]"
        )));
    }
    Ok(())
}

fn check_config(c: &NamespaceConfig) -> Result<(), ClaimsError> {
    let bad = |what: String| Err(ClaimsError::InvalidConfig(what));
    if c.capacity == 0 || c.capacity > MAX_CAPACITY {
        return bad(format!("capacity {} not in 1..={MAX_CAPACITY}", c.capacity));
    }
    if !(MIN_CLAIM_TTL_MS..=MAX_CLAIM_TTL_MS).contains(&c.lease_ttl_ms) {
        return bad(format!(
            "lease TTL {} ms not in {MIN_CLAIM_TTL_MS}..={MAX_CLAIM_TTL_MS}",
            c.lease_ttl_ms
        ));
    }
    if c.key_kind == KeyKind::Bytes && !(1..=MAX_KEY_BYTES).contains(&c.max_key_bytes) {
        return bad(format!(
            "max key bytes {} not in 1..={MAX_KEY_BYTES}",
            c.max_key_bytes
        ));
    }
    for (what, v) in [
        ("max value bytes", c.max_value_bytes),
        ("max metadata bytes", c.max_metadata_bytes),
    ] {
        if v > MAX_VALUE_BYTES_CEILING {
            return bad(format!("{what} {v} > {MAX_VALUE_BYTES_CEILING}"));
        }
    }
    Ok(())
}

fn check_key(c: &NamespaceConfig, index: usize, key: &ClaimKey) -> Result<(), ClaimsError> {
    if key.kind() != c.key_kind {
        return Err(ClaimsError::WrongKeyKind {
            index,
            expected: c.key_kind,
            got: key.kind(),
        });
    }
    if let ClaimKey::Bytes(b) = key {
        if b.is_empty() || b.len() > c.max_key_bytes as usize {
            return Err(ClaimsError::KeyTooLong {
                index,
                len: b.len(),
                max: c.max_key_bytes,
            });
        }
    }
    Ok(())
}

fn check_keys<'a>(
    c: &NamespaceConfig,
    keys: impl ExactSizeIterator<Item = &'a ClaimKey>,
) -> Result<(), ClaimsError> {
    match keys.len() {
        0 => return Err(ClaimsError::EmptyRequest),
        n if n > MAX_KEYS_PER_REQUEST => return Err(ClaimsError::TooManyKeys { count: n }),
        _ => {}
    }
    for (i, key) in keys.enumerate() {
        check_key(c, i, key)?;
    }
    Ok(())
}

fn check_entries(c: &NamespaceConfig, entries: &[RegisterEntry]) -> Result<(), ClaimsError> {
    for (index, e) in entries.iter().enumerate() {
        if let Some(p) = &e.parent {
            check_key(c, index, p)?;
        }
        for (what, len, max) in [
            ("value", e.value.len(), c.max_value_bytes),
            ("metadata", e.metadata.len(), c.max_metadata_bytes),
        ] {
            if len > max as usize {
                return Err(ClaimsError::ValueTooLong {
                    index,
                    what: what.to_string(),
                    len,
                    max,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
