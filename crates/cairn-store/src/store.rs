//! `Store`: applies commands to the keyspace and leases, answers reads, and
//! records what changed so the storage layer can persist exactly that.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::AuthState;
use crate::claims::{Claims, ClaimsChanges, ClaimsReply, ClaimsSnapshot};
use crate::command::*;
use crate::error::StoreError;
use crate::kv::{Event, KeyRange, KeyValue};
use crate::kv_hash::{HashCursor, HashProgress};
use crate::lease::{LeaseRecord, Leases, MAX_LEASE_TTL_SECS, MIN_LEASE_TTL_SECS};
use crate::mvcc::{KeySpace, Record, Wants};
use crate::revision::Revision;
use crate::txn;

/// Scalar state persisted beside the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoreMeta {
    pub revision: i64,
    pub compact_revision: i64,
    /// Cluster time in ms: the largest `now_ms` any command carried.
    pub now_ms: u64,
    /// Counter behind generated lease IDs.
    pub lease_id_counter: u64,
    pub alarms: Vec<(u64, AlarmKind)>,
}

/// What changed since the last `take_changes`, for persistence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Each record added, with its key: persisting it needs no search of
    /// the revision log.
    pub records_added: Vec<(Revision, Arc<[u8]>)>,
    pub records_removed: Vec<Revision>,
    /// Leases granted, kept alive or removed; look each up to tell which.
    pub leases: BTreeSet<i64>,
    /// Claim slots and namespaces changed.
    pub claims: ClaimsChanges,
    /// The auth state changed (it is persisted whole; it is small).
    pub auth: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.records_added.is_empty()
            && self.records_removed.is_empty()
            && self.leases.is_empty()
            && self.claims.is_empty()
            && !self.auth
    }
}

/// The whole state, for Raft snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoreSnapshot {
    pub meta: StoreMeta,
    pub records: Vec<(Vec<u8>, Record)>,
    pub leases: Vec<LeaseRecord>,
    pub claims: ClaimsSnapshot,
    pub auth: AuthState,
}

/// A snapshot as versions before auth encoded it (no `auth`): decoded so
/// snapshots those versions wrote or send still load, with auth off.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSnapshotBeforeAuth {
    pub meta: StoreMeta,
    pub records: Vec<(Vec<u8>, Record)>,
    pub leases: Vec<LeaseRecord>,
    pub claims: ClaimsSnapshot,
}

impl From<StoreSnapshotBeforeAuth> for StoreSnapshot {
    fn from(s: StoreSnapshotBeforeAuth) -> Self {
        StoreSnapshot {
            meta: s.meta,
            records: s.records,
            leases: s.leases,
            claims: s.claims,
            auth: AuthState::default(),
        }
    }
}

/// What applying a command produced: the client's answer and the events for
/// watchers (in revision order; one command may span several revisions
/// only when a tick expires several leases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub result: CommandResult,
    pub events: Vec<Event>,
}

/// A lease as `LeaseTimeToLive` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl_secs: i64,
    /// Time left at the store's cluster time; may be ≤ 0 if a tick is due.
    pub remaining_ms: i64,
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Store {
    kv: KeySpace,
    leases: Leases,
    claims: Claims,
    auth: AuthState,
    meta: StoreMeta,
    changes: Changes,
    /// Set while no watcher listens (see [`Store::set_events_wanted`]):
    /// writes then build no events. Not state: replicas differing in it
    /// hold the same data and answer alike.
    skip_events: bool,
    /// Tells a hash in steps that another store took this one's place.
    incarnation: crate::kv_hash::Incarnation,
}

/// Changes made at one revision, in progress.
struct Write {
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl Store {
    pub fn new() -> Self {
        Store::default()
    }

    pub fn revision(&self) -> i64 {
        self.meta.revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.meta.compact_revision
    }

    pub fn now_ms(&self) -> u64 {
        self.meta.now_ms
    }

    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// Approximate bytes held (keys, values and per-record overhead, all
    /// retained history included): what the quota is checked against.
    pub fn size_bytes(&self) -> u64 {
        self.kv.size_bytes()
    }

    pub fn alarms(&self) -> &[(u64, AlarmKind)] {
        &self.meta.alarms
    }

    /// A CORRUPT alarm is raised (see `cairn-server/src/corruption.rs`):
    /// clients may neither write nor read, lease expiry stops.
    pub fn corrupt(&self) -> bool {
        self.alarmed(AlarmKind::Corrupt)
    }

    fn no_space(&self) -> bool {
        self.alarmed(AlarmKind::NoSpace)
    }

    /// Some member raised an alarm of `kind`.
    fn alarmed(&self, kind: AlarmKind) -> bool {
        self.meta.alarms.iter().any(|(_, a)| *a == kind)
    }

    /// Whether writes build events for watchers ([`Applied::events`]).
    /// Without a watcher they are dropped unread, and each one copies the
    /// written key and value and the previous version's. Client answers
    /// (`prev_kv`) are built either way. On by default.
    pub fn set_events_wanted(&mut self, wanted: bool) {
        self.skip_events = !wanted;
    }

    pub fn apply(&mut self, cmd: &Command) -> Applied {
        let mut events = Vec::new();
        if self.needs_user(cmd) {
            return Applied {
                result: CommandResult::Error(StoreError::UserEmpty),
                events,
            };
        }
        let result = match self.apply_inner(cmd, &mut events) {
            Ok(r) => r,
            Err(e) => CommandResult::Error(e),
        };
        Applied { result, events }
    }

    fn apply_inner(
        &mut self,
        cmd: &Command,
        events: &mut Vec<Event>,
    ) -> Result<CommandResult, StoreError> {
        if self.corrupt()
            && matches!(
                cmd,
                Command::Put(_)
                    | Command::DeleteRange(_)
                    | Command::Txn(_)
                    | Command::Compact { .. }
                    | Command::LeaseGrant { .. }
                    | Command::LeaseRevoke { .. }
                    | Command::Registry(_)
                    | Command::Claims(_)
            )
        {
            return Err(StoreError::Corrupt);
        }
        Ok(match cmd {
            Command::Put(p) => {
                if self.no_space() {
                    return Err(StoreError::NoSpace);
                }
                self.check_put(p)?;
                let mut w = self.begin();
                let resp = self.put(p, &mut w);
                self.finish(w, events);
                CommandResult::Put(PutResponse {
                    revision: self.meta.revision,
                    ..resp
                })
            }
            Command::DeleteRange(d) => {
                if d.range.start.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
                self.check_delete_reserved(&d.range)?;
                let mut w = self.begin();
                let resp = self.delete(d, &mut w);
                self.finish(w, events);
                CommandResult::DeleteRange(DeleteRangeResponse {
                    revision: self.meta.revision,
                    ..resp
                })
            }
            Command::Txn(t) => CommandResult::Txn(self.txn(t, events)?),
            Command::Compact { revision } => {
                self.compact(*revision)?;
                CommandResult::Compact {
                    revision: self.meta.revision,
                }
            }
            Command::LeaseGrant {
                id,
                ttl_secs,
                now_ms,
            } => {
                self.advance_time(*now_ms);
                CommandResult::LeaseGrant(self.lease_grant(*id, *ttl_secs)?)
            }
            Command::LeaseRevoke { id } => {
                if !self.leases.contains(*id) {
                    return Err(StoreError::LeaseNotFound);
                }
                self.revoke(*id, events);
                CommandResult::LeaseRevoke {
                    revision: self.meta.revision,
                }
            }
            Command::LeaseKeepAlive { id, now_ms } => {
                self.advance_time(*now_ms);
                let ttl_secs = self
                    .leases
                    .get(*id)
                    .ok_or(StoreError::LeaseNotFound)?
                    .record
                    .ttl_secs;
                self.leases.set_deadline(*id, self.deadline(ttl_secs));
                self.changes.leases.insert(*id);
                CommandResult::LeaseKeepAlive(LeaseKeepAliveResponse {
                    revision: self.meta.revision,
                    id: *id,
                    ttl_secs,
                })
            }
            Command::Tick {
                now_ms,
                max_expiries,
            } => {
                self.advance_time(*now_ms);
                // While corrupt nothing is deleted, expired leases' keys
                // included (etcd's corrupt cluster revokes no lease).
                let expired = if self.corrupt() {
                    Vec::new()
                } else {
                    self.leases.due(self.meta.now_ms, *max_expiries as usize)
                };
                for id in &expired {
                    self.revoke(*id, events);
                }
                CommandResult::Tick {
                    revision: self.meta.revision,
                    expired,
                }
            }
            Command::Alarm {
                action,
                member_id,
                alarm,
            } => {
                let entry = (*member_id, *alarm);
                match action {
                    AlarmAction::Activate => {
                        if !self.meta.alarms.contains(&entry) {
                            self.meta.alarms.push(entry);
                            self.meta.alarms.sort();
                        }
                    }
                    AlarmAction::Deactivate => self.meta.alarms.retain(|a| *a != entry),
                }
                CommandResult::Alarm {
                    revision: self.meta.revision,
                }
            }
            Command::Registry(c) => {
                CommandResult::Registry(crate::registry::apply(self, c, events))
            }
            Command::Claims(c) => CommandResult::Claims(self.apply_claims(c)),
            Command::Auth(c) => {
                if self.auth.enabled {
                    // Sent without a user while auth is on (an edge that had
                    // not yet applied the enable): only `As` from an admin.
                    return Err(StoreError::UserEmpty);
                }
                self.apply_auth(c)?
            }
            Command::As { user, command } => {
                if self.auth.enabled {
                    let leases = &self.leases;
                    self.auth.check_command(user, command, |id| {
                        leases
                            .get(id)
                            .map(|l| l.keys.iter().cloned().collect())
                            .unwrap_or_default()
                    })?;
                    if let Command::Auth(c) = command.as_ref() {
                        return self.apply_auth(c);
                    }
                }
                if matches!(command.as_ref(), Command::As { .. }) {
                    return Err(StoreError::PermissionDenied);
                }
                return self.apply_inner(command, events);
            }
        })
    }

    fn apply_auth(&mut self, c: &crate::auth::AuthCommand) -> Result<CommandResult, StoreError> {
        self.auth.apply(c)?;
        self.changes.auth = true;
        Ok(CommandResult::Auth {
            revision: self.meta.revision,
            auth_revision: self.auth.revision,
        })
    }

    /// Users, roles, permissions, and whether auth is on.
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// Whether a client command sent without a user must be refused: auth
    /// is on, and the command is one the edge sends as [`Command::As`]
    /// whenever it sees auth on. Ticks, the alarms a member raises and
    /// automatic compactions are the cluster's own and pass.
    fn needs_user(&self, cmd: &Command) -> bool {
        self.auth.enabled
            && matches!(
                cmd,
                Command::Put(_)
                    | Command::DeleteRange(_)
                    | Command::Txn(_)
                    | Command::LeaseGrant { .. }
                    | Command::LeaseRevoke { .. }
                    | Command::LeaseKeepAlive { .. }
                    | Command::Registry(_)
                    | Command::Claims(_)
            )
    }

    /// Registry writes: `puts` then `deletes`, all at one revision (none
    /// if nothing changed), past the reserved-prefix guard. Returns the
    /// store revision after.
    pub(crate) fn write_reserved(
        &mut self,
        puts: Vec<PutRequest>,
        deletes: &[Vec<u8>],
        events: &mut Vec<Event>,
    ) -> i64 {
        let mut w = self.begin();
        for p in &puts {
            self.put(p, &mut w);
        }
        for key in deletes {
            self.delete_key(key, &mut w, None);
        }
        self.finish(w, events);
        self.meta.revision
    }

    pub(crate) fn space_exceeded(&self) -> bool {
        self.no_space()
    }

    /// etcd-API deletes may span the reserved prefix (e.g. "every key")
    /// only while they would delete no registry record.
    fn check_delete_reserved(&self, range: &KeyRange) -> Result<(), StoreError> {
        let reserved = KeyRange::prefix(crate::registry::RESERVED_PREFIX);
        let overlaps = if range.is_single() {
            reserved.contains(&range.start)
        } else {
            range.start.as_slice() < reserved.end.as_slice()
                && range
                    .upper()
                    .is_none_or(|end| end > crate::registry::RESERVED_PREFIX)
        };
        if overlaps
            && self
                .kv
                .live_keys(range)
                .iter()
                .any(|k| crate::registry::is_reserved(k))
        {
            return Err(StoreError::ReservedPrefix);
        }
        Ok(())
    }

    /// A claims command that is accepted takes exactly one revision, so it
    /// is ordered with every other write; one that is refused takes none.
    fn apply_claims(&mut self, c: &crate::claims::ClaimsCommand) -> crate::claims::ClaimsResult {
        if let Some(now_ms) = c.now_ms() {
            self.advance_time(now_ms);
        }
        let leases = &self.leases;
        let output = self
            .claims
            .apply(c, self.meta.now_ms, |id| leases.contains(id))?;
        self.meta.revision += 1;
        Ok(ClaimsReply {
            revision: self.meta.revision,
            output,
        })
    }

    /// The block-claims registry, for reads.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    fn begin(&self) -> Write {
        Write {
            main: self.meta.revision + 1,
            sub: 0,
            events: Vec::new(),
        }
    }

    /// Commit a write: the revision advances only if something changed.
    fn finish(&mut self, w: Write, events: &mut Vec<Event>) {
        // Every record written took a sub-revision.
        if w.sub > 0 {
            self.meta.revision = w.main;
            events.extend(w.events);
        }
    }

    /// Cluster time moves on (never back); claim leases that ran out by
    /// then end with it, so that every state persisted counts them.
    fn advance_time(&mut self, now_ms: u64) {
        self.meta.now_ms = self.meta.now_ms.max(now_ms);
        self.claims.advance(self.meta.now_ms);
    }

    fn deadline(&self, ttl_secs: i64) -> u64 {
        self.meta
            .now_ms
            .saturating_add((ttl_secs as u64).saturating_mul(1000))
    }

    fn check_put(&self, p: &PutRequest) -> Result<(), StoreError> {
        if p.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if crate::registry::is_reserved(&p.key) {
            return Err(StoreError::ReservedPrefix);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(StoreError::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(StoreError::LeaseProvided);
        }
        if (p.ignore_value || p.ignore_lease) && self.kv.current(&p.key).is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains(p.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }

    /// Infallible once `check_put` passed.
    fn put(&mut self, p: &PutRequest, w: &mut Write) -> PutResponse {
        let rev = Revision::new(w.main, w.sub);
        w.sub += 1;
        let main = w.main;
        let leases = &mut self.leases;
        let wants = Wants {
            event: !self.skip_events,
            prev_kv: p.prev_kv,
        };
        let pushed = self.kv.push_with(&p.key, wants, |current| {
            // What the new record takes from the current one; its value
            // is copied only when the request keeps it.
            let lease = match current {
                Some(c) if p.ignore_lease => c.lease,
                _ => p.lease,
            };
            let (create_revision, version, value) = match current {
                Some(c) => {
                    if c.lease != lease {
                        leases.detach(c.lease, &p.key);
                    }
                    let value = if p.ignore_value {
                        c.value.to_vec()
                    } else {
                        p.value.clone()
                    };
                    (c.create_revision, c.version + 1, value)
                }
                None => (main, 1, p.value.clone()),
            };
            if lease != 0 {
                leases.attach(lease, &p.key);
            }
            Record::new(rev, create_revision, version, value, lease, false)
        });
        self.changes.records_added.push((rev, pushed.key));
        w.events.extend(pushed.event);
        PutResponse {
            revision: w.main,
            prev_kv: pushed.prev_kv,
        }
    }

    fn delete(&mut self, d: &DeleteRangeRequest, w: &mut Write) -> DeleteRangeResponse {
        let keys = self.kv.live_keys(&d.range);
        let mut prev_kvs = Vec::new();
        for key in &keys {
            self.delete_key(key, w, d.prev_kv.then_some(&mut prev_kvs));
        }
        DeleteRangeResponse {
            revision: w.main,
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    fn delete_key(&mut self, key: &[u8], w: &mut Write, prev_kvs: Option<&mut Vec<KeyValue>>) {
        let Some(current) = self.kv.current(key) else {
            return;
        };
        let lease = current.lease;
        let rev = Revision::new(w.main, w.sub);
        w.sub += 1;
        let record = Record::new(rev, 0, 0, Vec::new(), 0, true);
        self.leases.detach(lease, key);
        let wants = Wants {
            event: !self.skip_events,
            prev_kv: prev_kvs.is_some(),
        };
        let pushed = self.kv.push(key, wants, record);
        self.changes.records_added.push((rev, pushed.key));
        if let (Some(out), Some(prev)) = (prev_kvs, pushed.prev_kv) {
            out.push(prev);
        }
        w.events.extend(pushed.event);
    }

    fn compact(&mut self, revision: i64) -> Result<(), StoreError> {
        if revision <= self.meta.compact_revision {
            return Err(StoreError::Compacted {
                compact_revision: self.meta.compact_revision,
            });
        }
        if revision > self.meta.revision {
            return Err(StoreError::FutureRevision {
                current_revision: self.meta.revision,
            });
        }
        let removed = self.kv.compact(revision);
        self.changes.records_removed.extend(removed);
        self.meta.compact_revision = revision;
        Ok(())
    }

    fn lease_grant(&mut self, id: i64, ttl_secs: i64) -> Result<LeaseGrantResponse, StoreError> {
        if self.no_space() {
            return Err(StoreError::NoSpace);
        }
        if ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(StoreError::LeaseTtlTooLarge { ttl_secs });
        }
        if id < 0 {
            return Err(StoreError::LeaseNotFound);
        }
        let ttl_secs = ttl_secs.max(MIN_LEASE_TTL_SECS);
        let id = if id == 0 {
            self.generate_lease_id()
        } else {
            id
        };
        if self.leases.contains(id) {
            return Err(StoreError::LeaseExists);
        }
        self.leases.insert(LeaseRecord {
            id,
            ttl_secs,
            deadline_ms: self.deadline(ttl_secs),
        });
        self.changes.leases.insert(id);
        Ok(LeaseGrantResponse {
            revision: self.meta.revision,
            id,
            ttl_secs,
        })
    }

    /// Lease IDs look random (as etcd's do) but come from a counter, so
    /// every replica picks the same one.
    fn generate_lease_id(&mut self) -> i64 {
        loop {
            self.meta.lease_id_counter += 1;
            let id = (splitmix64(self.meta.lease_id_counter) >> 1) as i64;
            if id != 0 && !self.leases.contains(id) {
                return id;
            }
        }
    }

    /// Remove a lease and delete its keys, all at one revision.
    fn revoke(&mut self, id: i64, events: &mut Vec<Event>) {
        let Some(lease) = self.leases.remove(id) else {
            return;
        };
        self.changes.leases.insert(id);
        // The session ends: its claim leases end in the same apply.
        self.claims.release_session(id);
        let mut w = self.begin();
        for key in &lease.keys {
            self.delete_key(key, &mut w, None);
        }
        self.finish(w, events);
    }

    fn txn(&mut self, t: &TxnRequest, events: &mut Vec<Event>) -> Result<TxnResponse, StoreError> {
        txn::check_duplicate_keys(t)?;
        if self.no_space() && txn::has_put(t) {
            return Err(StoreError::NoSpace);
        }
        // Like etcd, decide every compare (nested ones too) against the
        // state before the txn, then check the ops on that path, then run
        // them; so a txn that fails a check changes nothing.
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        self.check_txn(t, &mut path.iter().copied())?;
        let mut w = self.begin();
        let mut resp = self.exec_txn(t, &mut path.iter().copied(), &mut w);
        self.finish(w, events);
        set_txn_revision(&mut resp, self.meta.revision);
        Ok(resp)
    }

    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let head = self.meta.revision;
        let ok = t.compare.iter().all(|c| self.compare_holds(c, head));
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(nested) = op {
                self.txn_path(nested, path);
            }
        }
    }

    fn check_txn(
        &self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<(), StoreError> {
        let ok = path.next().unwrap_or(false);
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::DeleteRange(d) if d.range.start.is_empty() => {
                    return Err(StoreError::EmptyKey)
                }
                RequestOp::DeleteRange(d) => self.check_delete_reserved(&d.range)?,
                RequestOp::Range(r) => {
                    self.read_revision(r, self.meta.revision)?;
                }
                RequestOp::Txn(nested) => self.check_txn(nested, path)?,
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        t: &TxnRequest,
        path: &mut impl Iterator<Item = bool>,
        w: &mut Write,
    ) -> TxnResponse {
        let succeeded = path.next().unwrap_or(false);
        let mut responses = Vec::new();
        for op in if succeeded { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, w)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d, w)),
                // Reads inside a txn see the txn's own earlier writes.
                RequestOp::Range(r) => {
                    let head = if w.sub == 0 {
                        self.meta.revision
                    } else {
                        w.main
                    };
                    ResponseOp::Range(self.range_at(r, head).unwrap_or_default())
                }
                RequestOp::Txn(nested) => ResponseOp::Txn(self.exec_txn(nested, path, w)),
            });
        }
        TxnResponse {
            revision: w.main,
            succeeded,
            responses,
        }
    }

    fn compare_holds(&self, c: &Compare, head: i64) -> bool {
        // At the head every record is current and holds its value, so no
        // read fails.
        let kvs: Vec<KeyValue> = self
            .kv
            .range_at(&c.range, head)
            .filter_map(Result::ok)
            .collect();
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_))
                && compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    /// Read keys at the current revision or an older retained one.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        self.range_at(req, self.meta.revision)
    }

    fn read_revision(&self, req: &RangeRequest, head: i64) -> Result<i64, StoreError> {
        if req.range.start.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let rev = if req.revision <= 0 {
            head
        } else {
            req.revision
        };
        if rev > head {
            return Err(StoreError::FutureRevision {
                current_revision: head,
            });
        }
        if rev < self.meta.compact_revision {
            return Err(StoreError::Compacted {
                compact_revision: self.meta.compact_revision,
            });
        }
        Ok(rev)
    }

    fn range_at(&self, req: &RangeRequest, head: i64) -> Result<RangeResponse, StoreError> {
        let rev = self.read_revision(req, head)?;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let mut sort_order = req.sort_order;
        if req.sort_target != SortTarget::Key && sort_order == SortOrder::None {
            sort_order = SortOrder::Ascend;
        }
        let sorted = sort_order != SortOrder::None
            && !(sort_order == SortOrder::Ascend && req.sort_target == SortTarget::Key);
        let limit = if req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };

        let count;
        let mut kvs = Vec::new();
        if req.count_only && !filtered {
            count = self.kv.count_at(&req.range, rev) as i64;
        } else if !filtered && !sorted {
            let (first, all) = self
                .kv
                .range_counted(&req.range, rev, limit.saturating_add(1))?;
            kvs = first;
            count = all as i64;
        } else {
            kvs = self
                .kv
                .range_at(&req.range, rev)
                .collect::<Result<_, _>>()?;
            count = kvs.len() as i64;
            kvs.retain(|kv| passes_filters(req, kv));
            sort_kvs(&mut kvs, sort_order, req.sort_target);
        }
        let more = kvs.len() > limit;
        kvs.truncate(limit);
        if req.count_only {
            kvs.clear();
        } else if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            revision: head,
            kvs,
            more,
            count,
        })
    }

    /// Events for watchers from revision `from` on, at most about
    /// `max_events` (never splitting a revision). Returns the events and
    /// the revision to continue from.
    pub fn events_since(
        &self,
        from: i64,
        range: &KeyRange,
        max_events: usize,
    ) -> Result<(Vec<Event>, i64), StoreError> {
        if from < self.meta.compact_revision {
            return Err(StoreError::Compacted {
                compact_revision: self.meta.compact_revision,
            });
        }
        self.kv
            .events(from.max(1), self.meta.revision, range, max_events)
    }

    pub fn lease_info(&self, id: i64) -> Option<LeaseInfo> {
        let lease = self.leases.get(id)?;
        Some(LeaseInfo {
            id,
            granted_ttl_secs: lease.record.ttl_secs,
            remaining_ms: lease.record.deadline_ms as i64 - self.meta.now_ms as i64,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.ids().collect()
    }

    /// Earliest lease deadline (cluster ms), so the leader knows when a tick
    /// would expire something.
    pub fn next_lease_deadline_ms(&self) -> Option<u64> {
        self.leases.next_deadline_ms()
    }

    /// A hash of every key version at or below `revision` that compaction
    /// kept, equal on replicas that applied the same log. Returns the hash
    /// and the compact revision it covers from. In one go: a caller that
    /// holds a lock for it should take it in steps
    /// ([`Store::hash_kv_step`]), which gives the same hash.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), StoreError> {
        let mut cursor = self.hash_cursor(revision)?;
        match self.hash_kv_step(&mut cursor, usize::MAX)? {
            HashProgress::Done {
                hash,
                compact_revision,
            } => Ok((hash, compact_revision)),
            other => unreachable!("one step over an unchanged store hashes it all: {other:?}"),
        }
    }

    /// Begins a [`Store::hash_kv`] at `revision` (0: the head) to be taken
    /// in steps; refused as the one-shot hash would be.
    pub fn hash_cursor(&self, revision: i64) -> Result<HashCursor, StoreError> {
        HashCursor::begin(
            revision,
            self.meta.revision,
            self.meta.compact_revision,
            self.incarnation.get(),
        )
    }

    /// Hashes up to `max_records` (> 0) more records into `cursor`. Writes
    /// applied between steps do not change the hash; a compaction asks for
    /// a restart ([`HashProgress::Restart`]).
    pub fn hash_kv_step(
        &self,
        cursor: &mut HashCursor,
        max_records: usize,
    ) -> Result<HashProgress, StoreError> {
        cursor.step(
            &self.kv,
            self.meta.revision,
            self.meta.compact_revision,
            self.incarnation.get(),
            max_records,
        )
    }

    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.changes);
        changes.claims = self.claims.take_changes();
        changes
    }

    pub fn record_at(&self, rev: Revision) -> Option<(&[u8], &Record)> {
        self.kv.record_at(rev)
    }

    /// The record at `rev` of `key` (as [`Changes::records_added`] names
    /// it), if it is still retained.
    pub fn record_of(&self, key: &[u8], rev: Revision) -> Option<(&[u8], &Record)> {
        self.kv.record_of(key, rev)
    }

    pub fn lease_record(&self, id: i64) -> Option<&LeaseRecord> {
        self.leases.get(id).map(|l| &l.record)
    }

    /// The whole state, for a Raft snapshot; values dropped from memory
    /// are read back.
    pub fn snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        let mut records = Vec::with_capacity(self.kv.record_count());
        self.kv.walk_held(i64::MAX, |k, r| {
            records.push((k.to_vec(), r.clone()));
            Ok(())
        })?;
        Ok(StoreSnapshot {
            meta: self.meta.clone(),
            records,
            leases: self.leases.records().cloned().collect(),
            claims: self.claims.snapshot(),
            auth: self.auth.clone(),
        })
    }

    /// Reads values dropped from memory back from `source`, and lets
    /// [`Store::drop_history_values`] drop them.
    pub fn set_history(&mut self, source: std::sync::Arc<dyn crate::HistoryValues>) {
        self.kv.set_history(source);
    }

    /// Drops from memory the values of records superseded by a newer
    /// version of their key, at revisions up to `revision`: the caller's
    /// [`crate::HistoryValues`] must be able to read them back (the storage
    /// layer has persisted them). Changes no state a command or a read can
    /// see. Does nothing before [`Store::set_history`].
    pub fn drop_history_values(&mut self, revision: i64) {
        self.kv.drop_values_through(revision);
    }

    /// How many superseded records still hold their value in memory.
    pub fn superseded_values_held(&self) -> usize {
        self.kv.superseded_held()
    }

    /// Rebuild from persisted parts (a snapshot, or what storage kept).
    pub fn restore(
        meta: StoreMeta,
        records: impl IntoIterator<Item = (Vec<u8>, Record)>,
        leases: impl IntoIterator<Item = LeaseRecord>,
    ) -> Store {
        let mut store = Store {
            meta,
            ..Default::default()
        };
        for (key, record) in records {
            store.kv.insert_restored(key, record);
        }
        store.kv.finish_restore();
        for lease in leases {
            store.leases.insert(lease);
        }
        let attached: Vec<(i64, Vec<u8>)> = store
            .kv
            .live_keys(&KeyRange::new(vec![0], vec![0]))
            .into_iter()
            .filter_map(|k| store.kv.current(&k).map(|r| (r.lease, k.clone())))
            .filter(|(lease, _)| *lease != 0)
            .collect();
        for (lease, key) in attached {
            store.leases.attach(lease, &key);
        }
        store
    }

    pub fn from_snapshot(snapshot: StoreSnapshot) -> Store {
        let mut store = Store::restore(snapshot.meta, snapshot.records, snapshot.leases);
        store.restore_claims(snapshot.claims);
        store.auth = snapshot.auth;
        store
    }

    /// Replace the auth state (after `restore`, from its persisted row).
    pub fn restore_auth(&mut self, auth: AuthState) {
        self.auth = auth;
    }

    /// Replace the claims state (after `restore`, from persisted rows).
    pub fn restore_claims(&mut self, snapshot: ClaimsSnapshot) {
        self.claims = Claims::restore(snapshot.namespaces, snapshot.slots, self.meta.now_ms);
    }
}

fn set_txn_revision(resp: &mut TxnResponse, revision: i64) {
    resp.revision = revision;
    for op in &mut resp.responses {
        match op {
            ResponseOp::Range(r) => r.revision = revision,
            ResponseOp::Put(r) => r.revision = revision,
            ResponseOp::DeleteRange(r) => r.revision = revision,
            ResponseOp::Txn(t) => set_txn_revision(t, revision),
        }
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    if order == SortOrder::None {
        return;
    }
    kvs.sort_by(|a, b| {
        let ord = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            ord.reverse()
        } else {
            ord
        }
    });
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
