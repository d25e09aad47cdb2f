//! Requests to `cairn.v1` Session, Registry, Lock and Election, and the
//! model of each client's private registry and election.
//!
//! Codes a correct server gives (services/registry/mod.rs `refused`):
//! NotFound for an unknown registry or a session that does not exist,
//! InvalidArgument for a bad name, key, TTL or limit or a request over
//! `max_request_bytes`, FailedPrecondition for a registry's mode conflict,
//! a waiter that lost its place and a proclaim without the lead,
//! OutOfRange for a TTL over the most a lease takes (the store's
//! `LeaseTtlTooLarge`), for a watch from a compacted revision and for a
//! message over the gRPC decode limit.

use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::etcdserverpb as etcd;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::*;

const INVALID: &[Code] = &[Code::InvalidArgument];
const NOT_FOUND: &[Code] = &[Code::NotFound];
const ENTRY_REFUSALS: &[Code] = &[Code::InvalidArgument, Code::NotFound];
const QUEUE_REFUSALS: &[Code] = &[
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
];
/// Reads take any bytes: nothing to refuse.
const READS: &[Code] = &[];
/// How long a registry watch stream is read.
const WATCH_READ: Duration = Duration::from_millis(150);
/// How long an Observe stream may take to say who leads.
const FIRST_OBSERVATION: Duration = Duration::from_secs(5);

/// A registry name the store takes: a name with '/' could never hold an
/// entry (`\0cairn/name/<registry>/` would be ambiguous).
fn valid_registry(name: &[u8]) -> bool {
    valid_name(name) && !name.contains(&b'/')
}

/// Codes a registry read may carry: none, or InvalidArgument for a
/// registry name no registry can have (a server may refuse those as
/// writes do, or answer that they hold nothing).
fn read_codes(registry: &[u8]) -> &'static [Code] {
    if valid_registry(registry) {
        READS
    } else {
        INVALID
    }
}

/// A registry name or key the store takes (services' `check_name`).
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= cairn_store::registry::MAX_NAME_BYTES
}

impl Fuzzer {
    /// Codes for a request that may carry an oversized value.
    fn entry_codes(&self, oversized: bool) -> &'static [Code] {
        if oversized {
            TOO_BIG
        } else {
            ENTRY_REFUSALS
        }
    }

    fn maybe_oversized(&mut self, value: &mut Vec<u8>) -> bool {
        if self.hostile && self.rng.random_ratio(1, 40) {
            *value = self.oversized_value();
            return true;
        }
        false
    }

    // --- Sessions --------------------------------------------------------

    pub async fn create_session(&mut self) {
        let ttl = self.ttl();
        self.create_session_with(ttl).await;
    }

    /// Creates a session of `ttl` seconds; its ID if it was created.
    async fn create_session_with(&mut self, ttl: i64) -> Option<i64> {
        let request = pb::CreateSessionRequest { ttl_secs: ttl };
        let allowed = match ttl {
            t if t <= 0 => INVALID,
            t if t > cairn_store::MAX_LEASE_TTL_SECS => &[Code::OutOfRange][..],
            _ => READS,
        };
        let sent = Instant::now();
        let mut session = self.client().session;
        let resp = self
            .settle(&request, allowed, session.create_session(request))
            .await
            .ok()?;
        if !allowed.is_empty() {
            self.fail(&request, format_args!("accepted: {resp:?}"));
        }
        let granted = ttl.max(cairn_store::MIN_LEASE_TTL_SECS);
        if resp.session_id <= 0 || resp.ttl_secs != granted || resp.revision <= 0 {
            self.fail(
                &request,
                format_args!("answered {resp:?}, expected a TTL of {granted}"),
            );
        }
        self.shared.record_session(resp.session_id);
        self.created.insert(resp.session_id);
        self.own.push(Own {
            id: resp.session_id,
            names: Default::default(),
            candidacy: None,
            abandoned: false,
        });
        // Another member knows it at once (linearizable read), unless its
        // TTL ran out since it was asked for (half a second of slack for
        // the leader's clock).
        let info = pb::SessionInfoRequest {
            session_id: resp.session_id,
        };
        let found = must!(self, self.other(1).session, session_info, info);
        let young =
            sent.elapsed() + Duration::from_millis(500) < Duration::from_secs(granted as u64);
        if young && (!found.found || found.granted_ttl_secs != granted) {
            self.fail(
                &request,
                format_args!("created {resp:?}, but another member answers {found:?}"),
            );
        }
        Some(resp.session_id)
    }

    /// One of this client's live sessions, made if it has none.
    pub async fn own_session(&mut self) -> Option<i64> {
        if self.own.is_empty() || self.rng.random_ratio(1, 10) {
            let ttl = self.rng.random_range(2..=6);
            return self.create_session_with(ttl).await;
        }
        self.own.choose(&mut self.rng).map(|o| o.id)
    }

    /// Whether an own session is gone (a linearizable read on another
    /// member); if so it is checked to have left nothing behind.
    pub async fn confirm_gone(&mut self, id: i64) -> bool {
        let request = pb::SessionInfoRequest { session_id: id };
        let info = must!(self, self.other(2).session, session_info, request);
        if !info.found {
            self.session_gone(id).await;
        }
        !info.found
    }

    /// A session that ended left nothing in the private registry and
    /// election: its owner's records go with it, in one revision.
    pub async fn check_gone(&mut self, own: &Own) {
        let registry = self.private_registry();
        for key in &own.names {
            let request = pb::LookupRequest {
                registry: registry.clone(),
                key: key.clone(),
            };
            let resp = must!(self, self.other(1).registry, lookup, request.clone());
            if resp.entries.iter().any(|e| e.owner == own.id) {
                self.fail(
                    &request,
                    format_args!(
                        "session {:x} ended, but its name is still there: {resp:?}",
                        own.id
                    ),
                );
            }
        }
        let request = pb::LeaderRequest {
            name: self.private_election(),
        };
        let resp = must!(self, self.other(2).election, leader, request.clone());
        if resp.leader.as_ref().is_some_and(|l| l.session_id == own.id) {
            self.fail(
                &request,
                format_args!("session {:x} ended, but still leads: {resp:?}", own.id),
            );
        }
        let request = pb::SessionInfoRequest { session_id: own.id };
        let info = must!(self, self.other(1).session, session_info, request);
        if info.found {
            self.fail(
                &request,
                format_args!("session {:x} ended, then was found: {info:?}", own.id),
            );
        }
    }

    /// A keepalive stream with a few requests on it, one answer each.
    pub async fn keep_alive(&mut self) {
        let count = self.rng.random_range(1..=3);
        let ids: Vec<i64> = (0..count).map(|_| self.session()).collect();
        let (tx, rx) = mpsc::channel(ids.len());
        for id in &ids {
            tx.send(pb::KeepAliveRequest { session_id: *id })
                .await
                .expect("room for every request");
        }
        let mut session = self.client().session;
        let Ok(mut answers) = self
            .settle(&ids, READS, session.keep_alive(ReceiverStream::new(rx)))
            .await
        else {
            return;
        };
        for id in &ids {
            let resp = match tokio::time::timeout(CALL_TIMEOUT, answers.next()).await {
                Err(_) => self.fail(&ids, "no keepalive answer"),
                Ok(None) => self.fail(&ids, "the keepalive stream ended unanswered"),
                Ok(Some(Err(status))) => {
                    // An error ends the stream.
                    self.judge(&ids, &status, READS);
                    return;
                }
                Ok(Some(Ok(resp))) => resp,
            };
            if resp.session_id != *id || (!resp.lost && resp.ttl_secs <= 0) {
                self.fail(&ids, format_args!("answered {resp:?} for session {id:x}"));
            }
            if !resp.lost && self.dead.contains(id) {
                self.fail(
                    &ids,
                    format_args!("session {id:x} ended, then was kept alive"),
                );
            }
            if resp.lost && self.own.iter().any(|o| o.id == *id) {
                // Lost is final: the session is gone for every member.
                self.session_gone(*id).await;
            }
        }
        drop(tx);
    }

    pub async fn close_session(&mut self) {
        let request = pb::CloseSessionRequest {
            session_id: self.session(),
        };
        let mut session = self.client().session;
        let answer = self
            .settle(&request, NOT_FOUND, session.close_session(request))
            .await;
        let id = request.session_id;
        match answer {
            Ok(resp) => {
                if resp.revision <= 0 || self.dead.contains(&id) {
                    self.fail(&request, format_args!("closed: {resp:?}"));
                }
                self.session_gone(id).await;
            }
            Err(s) if s.code() == Code::NotFound && self.own.iter().any(|o| o.id == id) => {
                if !self.confirm_gone(id).await {
                    self.fail(&request, "refused NotFound, but the session is there");
                }
            }
            Err(_) => {}
        }
    }

    pub async fn session_info(&mut self) {
        let request = pb::SessionInfoRequest {
            session_id: self.session(),
        };
        let mut session = self.client().session;
        let Ok(resp) = self
            .settle(&request, READS, session.session_info(request))
            .await
        else {
            return;
        };
        let id = request.session_id;
        let bad = if resp.found {
            resp.granted_ttl_secs < cairn_store::MIN_LEASE_TTL_SECS
                || resp.remaining_ms < 0
                || resp.remaining_ms > resp.granted_ttl_secs.saturating_mul(1000)
                || self.dead.contains(&id)
        } else {
            resp.granted_ttl_secs != 0 || resp.remaining_ms != 0
        };
        if bad || resp.revision <= 0 {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
        if !resp.found && self.own.iter().any(|o| o.id == id) {
            self.session_gone(id).await;
        }
    }

    // --- Registries ------------------------------------------------------

    pub async fn create_registry(&mut self) {
        let registry = self.registry_name();
        let mode = if self.hostile && self.rng.random_bool(0.3) {
            *[0, 3, -1, i32::MAX].choose(&mut self.rng).expect("modes")
        } else {
            self.rng.random_range(1..=2)
        };
        let request = pb::CreateRegistryRequest { registry, mode };
        let mut registry = self.client().registry;
        let Ok(resp) = self
            .settle(
                &request,
                &[Code::InvalidArgument, Code::FailedPrecondition],
                registry.create_registry(request.clone()),
            )
            .await
        else {
            return;
        };
        let name = &request.registry;
        // The shared ones exist with a mode of their own: asking for the
        // other one is a conflict. Names with '/' or empty are refused.
        let expected_mode = if name == UNIQUE {
            Some(pb::Mode::Unique as i32)
        } else if name == DUPLICATE {
            Some(pb::Mode::Duplicate as i32)
        } else {
            None
        };
        let refusable = !valid_name(name)
            || name.contains(&b'/')
            || !(1..=2).contains(&request.mode)
            || expected_mode.is_some_and(|m| m != request.mode);
        if refusable || (expected_mode.is_some() && resp.created) || resp.revision <= 0 {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
    }

    pub async fn register(&mut self, or_get: bool) {
        let mut request = pb::RegisterRequest {
            registry: self.registry_name(),
            key: self.name_key(),
            value: self.value(),
            session_id: self.session(),
        };
        let oversized = self.maybe_oversized(&mut request.value);
        let mut registry = self.client().registry;
        let allowed = self.entry_codes(oversized);
        let answer = if or_get {
            let call = registry.register_or_get(request.clone());
            self.settle(&request, allowed, call).await
        } else {
            let call = registry.register(request.clone());
            self.settle(&request, allowed, call).await
        };
        let Ok(resp) = answer else {
            return;
        };
        self.check_register(&request, &resp, or_get, oversized)
            .await;
    }

    /// A registry's mode as the keyspace has it now (a linearizable read
    /// on another member); `None` if it does not exist. Hostile
    /// CreateRegistry calls make registries of odd names, so existence is
    /// read, not assumed.
    async fn registry_mode(&self, name: &[u8]) -> Option<Vec<u8>> {
        if name == UNIQUE || name == self.private_registry() {
            return Some(b"unique".to_vec());
        }
        if name == DUPLICATE {
            return Some(b"duplicate".to_vec());
        }
        let request = etcd::RangeRequest {
            key: [super::etcd::RESERVED_PREFIX, b"reg/", name].concat(),
            ..Default::default()
        };
        let resp = must!(self, self.other(1).kv, range, request);
        resp.kvs.into_iter().next().map(|kv| kv.value)
    }

    async fn check_register(
        &self,
        request: &pb::RegisterRequest,
        resp: &pb::RegisterResponse,
        or_get: bool,
        oversized: bool,
    ) {
        use pb::register_response::Outcome;
        if oversized || !valid_name(&request.key) {
            self.fail(request, format_args!("accepted: {}", describe(resp)));
        }
        let Some(mode) = self.registry_mode(&request.registry).await else {
            self.fail(
                request,
                format_args!("accepted in a registry that does not exist: {resp:?}"),
            );
        };
        let unique = mode == b"unique";
        let ok = match Outcome::try_from(resp.outcome) {
            Ok(Outcome::Registered) => {
                resp.revision > 0 && ((!unique && !or_get) || resp.previous.is_none())
            }
            Ok(Outcome::AlreadyRegistered) => unique && !or_get && resp.owner != 0,
            Ok(Outcome::Existing) => {
                or_get
                    && !resp.entries.is_empty()
                    && (!unique || resp.entries.len() == 1)
                    && resp.entries.iter().all(|e| e.owner != 0)
            }
            _ => false,
        };
        if !ok {
            self.fail(request, format_args!("answered {}", describe(resp)));
        }
    }

    pub async fn unregister(&mut self) {
        let request = pb::UnregisterRequest {
            registry: self.registry_name(),
            key: self.name_key(),
            session_id: self.session(),
        };
        let mut registry = self.client().registry;
        let Ok(resp) = self
            .settle(
                &request,
                ENTRY_REFUSALS,
                registry.unregister(request.clone()),
            )
            .await
        else {
            return;
        };
        let exists = self.registry_mode(&request.registry).await.is_some();
        if !exists || !valid_name(&request.key) || resp.revision <= 0 {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
    }

    pub async fn update_value(&mut self) {
        let expected = match self.rng.random_range(0..3) {
            0 => None,
            1 => Some(self.value()),
            _ => Some(Vec::new()),
        };
        let mut request = pb::UpdateValueRequest {
            registry: self.registry_name(),
            key: self.name_key(),
            session_id: self.session(),
            expected,
            value: self.value(),
        };
        let oversized = self.maybe_oversized(&mut request.value);
        let mut registry = self.client().registry;
        let allowed = self.entry_codes(oversized);
        let Ok(resp) = self
            .settle(&request, allowed, registry.update_value(request.clone()))
            .await
        else {
            return;
        };
        use pb::update_value_response::Outcome;
        let outcome_ok = match Outcome::try_from(resp.outcome) {
            Ok(Outcome::Updated) => resp.revision > 0,
            Ok(Outcome::NotRegistered) => resp.value.is_empty(),
            Ok(Outcome::ValueMismatch) => request.expected.as_ref() != Some(&resp.value),
            _ => false,
        };
        let exists = self.registry_mode(&request.registry).await.is_some();
        if oversized || !outcome_ok || !exists || !valid_name(&request.key) {
            self.fail(&request, format_args!("answered {}", describe(&resp)));
        }
    }

    pub async fn lookup(&mut self) {
        let request = pb::LookupRequest {
            registry: self.registry_name(),
            key: self.name_key(),
        };
        let mut registry = self.client().registry;
        let Ok(resp) = self
            .settle(
                &request,
                read_codes(&request.registry),
                registry.lookup(request.clone()),
            )
            .await
        else {
            return;
        };
        let in_order = resp
            .entries
            .windows(2)
            .all(|w| w[0].create_revision < w[1].create_revision);
        let sane = resp.entries.iter().all(|e| {
            e.owner != 0 && e.create_revision <= e.mod_revision && e.mod_revision <= resp.revision
        });
        // Entries under another registry's prefix are not this one's.
        let foreign = !valid_registry(&request.registry) && !resp.entries.is_empty();
        if foreign || !in_order || !sane || (request.registry == UNIQUE && resp.entries.len() > 1) {
            self.fail(&request, format_args!("answered {}", describe(&resp)));
        }
    }

    pub async fn count_entries(&mut self) {
        let request = pb::LookupRequest {
            registry: self.registry_name(),
            key: self.name_key(),
        };
        let mut registry = self.client().registry;
        let Ok(resp) = self
            .settle(
                &request,
                read_codes(&request.registry),
                registry.count(request.clone()),
            )
            .await
        else {
            return;
        };
        let foreign = !valid_registry(&request.registry) && resp.count != 0;
        if foreign
            || resp.count < 0
            || (request.registry == UNIQUE && resp.count > 1)
            || resp.revision <= 0
        {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
    }

    pub async fn keys(&mut self) {
        let request = pb::KeysRequest {
            registry: self.registry_name(),
            session_id: self.session(),
        };
        let mut registry = self.client().registry;
        let Ok(resp) = self
            .settle(
                &request,
                read_codes(&request.registry),
                registry.keys(request.clone()),
            )
            .await
        else {
            return;
        };
        let dead = self.dead.contains(&request.session_id);
        let foreign = !valid_registry(&request.registry) && !resp.keys.is_empty();
        if foreign || resp.keys.iter().any(|k| !valid_name(k)) || (dead && !resp.keys.is_empty()) {
            self.fail(&request, format_args!("answered {}", describe(&resp)));
        }
    }

    pub async fn list(&mut self) {
        let limit = match self.rng.random_range(0..8) {
            0 | 1 => 0,
            2..=4 => self.rng.random_range(1..=3),
            5 if self.hostile => -self.rng.random_range(1..=5),
            6 if self.hostile => *[i64::MIN, i64::MAX].choose(&mut self.rng).expect("limits"),
            _ => 1,
        };
        let cursor = match self.rng.random_range(0..6) {
            0 if self.hostile => self.not_utf8(),
            1 if self.hostile => b"\0cairn/name/u/k9".to_vec(),
            _ => Vec::new(),
        };
        let key_prefix = match self.rng.random_range(0..4) {
            0 => b"k".to_vec(),
            1 if self.hostile => self.name_key(),
            _ => Vec::new(),
        };
        let request = pb::ListRequest {
            registry: self.registry_name(),
            key_prefix,
            cursor,
            limit,
        };
        let allowed = if limit < 0 {
            INVALID
        } else {
            read_codes(&request.registry)
        };
        let mut registry = self.client().registry;
        let Ok(first) = self
            .settle(&request, allowed, registry.list(request.clone()))
            .await
        else {
            return;
        };
        let page_size = match limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let foreign = !valid_registry(&request.registry) && !first.entries.is_empty();
        if foreign || limit < 0 || first.entries.len() > page_size {
            self.fail(&request, format_args!("answered {}", describe(&first)));
        }
        if first.next_cursor.is_empty() {
            return;
        }
        // The next page starts after the first one: no entry twice.
        let next = pb::ListRequest {
            cursor: first.next_cursor.clone(),
            ..request.clone()
        };
        let Ok(second) = self.settle(&next, READS, registry.list(next.clone())).await else {
            return;
        };
        let seen = |e: &pb::KeyEntry| (e.key.clone(), e.entry.as_ref().map(|e| e.owner));
        let repeated = second
            .entries
            .iter()
            .any(|e| first.entries.iter().any(|f| seen(f) == seen(e)));
        if repeated {
            self.fail(
                &next,
                format_args!(
                    "a page repeats the one before: {} then {}",
                    describe(&first),
                    describe(&second)
                ),
            );
        }
    }

    /// A registry watch read for a moment, then dropped.
    pub async fn registry_watch(&mut self) {
        let start_revision = match self.rng.random_range(0..6) {
            0..=2 => 0,
            3 => 1,
            4 if self.hostile => *[-1, i64::MIN, i64::MAX]
                .choose(&mut self.rng)
                .expect("revs"),
            _ => self.rng.random_range(1..=50),
        };
        let registry = if self.hostile && self.rng.random_bool(0.2) {
            Vec::new()
        } else {
            self.registry_name()
        };
        let key = if self.rng.random_bool(0.5) {
            Vec::new()
        } else {
            self.name_key()
        };
        let request = pb::WatchRequest {
            registry,
            key,
            start_revision,
        };
        // Empty registries are refused; a start the compaction passed is
        // OutOfRange, etcd's "required revision has been compacted".
        let allowed = &[Code::InvalidArgument, Code::OutOfRange];
        let mut registry = self.client().registry;
        let Ok(mut events) = self
            .settle(&request, allowed, registry.watch(request.clone()))
            .await
        else {
            return;
        };
        let foreign = !valid_registry(&request.registry);
        let until = Instant::now() + WATCH_READ;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, events.next()).await {
                Err(_) => break,
                Ok(None) => self.fail(&request, "the watch stream ended"),
                Ok(Some(Err(status))) => {
                    self.judge(&request, &status, allowed);
                    break;
                }
                Ok(Some(Ok(resp))) => {
                    let bad = foreign
                        || resp.events.is_empty()
                        || resp
                            .events
                            .iter()
                            .any(|e| !(1..=3).contains(&e.kind) || e.revision <= 0 || e.owner == 0);
                    if bad {
                        self.fail(&request, format_args!("sent {}", describe(&resp)));
                    }
                }
            }
        }
    }

    /// Registers `k0/<key>` in the shared unique registry, then reads it
    /// through the registry name `u/k0`, which no registry can have: the
    /// entry is `u`'s, and must not be reported as key `<key>` of another
    /// registry.
    pub async fn foreign_read(&mut self) {
        let Some(session_id) = self.own_session().await else {
            return;
        };
        let inner = NAME_KEYS.choose(&mut self.rng).expect("keys").to_vec();
        let request = pb::RegisterRequest {
            registry: UNIQUE.to_vec(),
            key: [&b"k0/"[..], &inner].concat(),
            value: self.value(),
            session_id,
        };
        let mut registry = self.client().registry;
        if self
            .settle(&request, NOT_FOUND, registry.register(request.clone()))
            .await
            .is_err()
        {
            return;
        }
        let foreign = [UNIQUE, b"/k0"].concat();
        let codes = read_codes(&foreign);
        let held = match self.rng.random_range(0..4) {
            0 => {
                let request = pb::LookupRequest {
                    registry: foreign,
                    key: inner,
                };
                let answer = self
                    .settle(&request, codes, registry.lookup(request.clone()))
                    .await;
                answer.map(|r| r.entries.len() as i64)
            }
            1 => {
                let request = pb::LookupRequest {
                    registry: foreign,
                    key: inner,
                };
                let answer = self
                    .settle(&request, codes, registry.count(request.clone()))
                    .await;
                answer.map(|r| r.count)
            }
            2 => {
                let request = pb::ListRequest {
                    registry: foreign,
                    ..Default::default()
                };
                let answer = self
                    .settle(&request, codes, registry.list(request.clone()))
                    .await;
                answer.map(|r| r.entries.len() as i64)
            }
            _ => {
                let request = pb::KeysRequest {
                    registry: foreign,
                    session_id,
                };
                let answer = self
                    .settle(&request, codes, registry.keys(request.clone()))
                    .await;
                answer.map(|r| r.keys.len() as i64)
            }
        };
        if let Ok(n @ 1..) = held {
            self.fail(
                &request,
                format_args!("registry \"u/k0\", which cannot exist, reported {n} of u's entries"),
            );
        }
    }

    // --- The private registry and election (the model) -----------------

    /// Registers a key of the private registry with an own session; the
    /// entry is then seen by another member, or its session is gone.
    pub async fn private_register(&mut self) {
        let Some(session_id) = self.own_session().await else {
            return;
        };
        let request = pb::RegisterRequest {
            registry: self.private_registry(),
            key: NAME_KEYS.choose(&mut self.rng).expect("keys").to_vec(),
            value: self.value(),
            session_id,
        };
        let mut registry = self.client().registry;
        let answer = self
            .settle(&request, NOT_FOUND, registry.register(request.clone()))
            .await;
        let resp = match answer {
            Ok(resp) => resp,
            Err(_) => {
                // Only a session that ended is refused here.
                if !self.confirm_gone(session_id).await {
                    self.fail(&request, "refused, but the session lives");
                }
                return;
            }
        };
        self.check_register(&request, &resp, false, false).await;
        use pb::register_response::Outcome;
        if resp.outcome == Outcome::AlreadyRegistered as i32 {
            if !self.created.contains(&resp.owner) {
                self.fail(
                    &request,
                    format_args!("only this client registers here, yet {resp:?}"),
                );
            }
            return;
        }
        if let Some(own) = self.own.iter_mut().find(|o| o.id == session_id) {
            own.names.insert(request.key.clone());
        }
        let lookup = pb::LookupRequest {
            registry: request.registry.clone(),
            key: request.key.clone(),
        };
        let seen = must!(self, self.other(1).registry, lookup, lookup.clone());
        let as_written = |e: &pb::Entry| {
            e.owner == session_id && e.create_revision == resp.revision && e.value == request.value
        };
        let fine = seen.revision >= resp.revision
            && match seen.entries.as_slice() {
                [] => self.confirm_gone(session_id).await,
                [entry] => as_written(entry) || self.confirm_gone(session_id).await,
                _ => false,
            };
        if !fine {
            self.fail(
                &request,
                format_args!(
                    "registered at {}, then another member looked it up: {}",
                    resp.revision,
                    describe(&seen)
                ),
            );
        }
    }

    /// Releases what an own session holds in the private registry and
    /// election, or closes the session: all of it is gone afterwards.
    pub async fn private_release(&mut self) {
        let Some(own) = self.own.choose(&mut self.rng).cloned() else {
            return;
        };
        let registry = self.private_registry();
        if let (Some(token), true) = (own.candidacy, self.rng.random_bool(0.3)) {
            let request = pb::ResignRequest {
                name: self.private_election(),
                session_id: own.id,
                fencing_token: token,
            };
            let mut election = self.client().election;
            let answer = self
                .settle(&request, NOT_FOUND, election.resign(request.clone()))
                .await;
            if !answer.is_ok_and(|r| r.resigned) && !self.confirm_gone(own.id).await {
                self.fail(
                    &request,
                    "the leader could not resign, yet its session lives",
                );
            }
            if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
                o.candidacy = None;
            }
            return;
        }
        if let (Some(key), true) = (own.names.first().cloned(), self.rng.random_bool(0.6)) {
            let request = pb::UnregisterRequest {
                registry,
                key: key.clone(),
                session_id: own.id,
            };
            let mut client = self.client().registry;
            let answer = self
                .settle(&request, NOT_FOUND, client.unregister(request.clone()))
                .await;
            if !answer.is_ok_and(|r| r.unregistered) && !self.confirm_gone(own.id).await {
                self.fail(
                    &request,
                    "an own name could not be released, yet its session lives",
                );
            }
            if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
                o.names.remove(&key);
            }
            let lookup = pb::LookupRequest {
                registry: self.private_registry(),
                key,
            };
            let seen = must!(self, self.other(1).registry, lookup, lookup.clone());
            if seen.entries.iter().any(|e| e.owner == own.id) {
                self.fail(
                    &lookup,
                    format_args!("released, but another member still has it: {seen:?}"),
                );
            }
            return;
        }
        let request = pb::CloseSessionRequest { session_id: own.id };
        let mut session = self.client().session;
        match self
            .settle(&request, NOT_FOUND, session.close_session(request))
            .await
        {
            Ok(_) => self.session_gone(own.id).await,
            Err(_) => {
                if !self.confirm_gone(own.id).await {
                    self.fail(&request, "refused NotFound, but the session lives");
                }
            }
        }
    }

    /// Campaigns in the private election with an own session (briefly:
    /// another own session may lead); the winner is then the leader every
    /// member reports, as long as its session lives.
    pub async fn private_campaign(&mut self) {
        let Some(own) = self.own.choose(&mut self.rng).cloned() else {
            self.own_session().await;
            return;
        };
        let name = self.private_election();
        if let Some(token) = own.candidacy {
            self.check_leads(&name, own.id, token).await;
            return;
        }
        if own.abandoned {
            return;
        }
        let request = pb::CampaignRequest {
            name: name.clone(),
            session_id: own.id,
            value: self.value(),
        };
        let wait = Duration::from_millis(self.rng.random_range(200..=1000));
        let mut election = self.client().election;
        let call = election.campaign(request.clone());
        let Ok(answer) = tokio::time::timeout(wait, call).await else {
            self.count("abandoned");
            if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
                o.abandoned = true;
            }
            return;
        };
        let resp = match answer.map(tonic::Response::into_inner) {
            Ok(resp) => resp,
            Err(status) => {
                // Refused only for a session gone (NotFound) or one that
                // lost its place while waiting (its session ended).
                self.judge(
                    &request,
                    &status,
                    &[Code::NotFound, Code::FailedPrecondition],
                );
                if !self.confirm_gone(own.id).await {
                    self.fail(&request, "refused, but the session lives");
                }
                return;
            }
        };
        self.count("Ok");
        if resp.fencing_token <= 0 || resp.revision < resp.fencing_token {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
        if let Some(o) = self.own.iter_mut().find(|o| o.id == own.id) {
            o.candidacy = Some(resp.fencing_token);
        }
        self.check_leads(&name, own.id, resp.fencing_token).await;
    }

    /// Another member reports `session` leading with `token`, or the
    /// session is gone.
    async fn check_leads(&mut self, name: &[u8], session: i64, token: i64) {
        let request = pb::LeaderRequest {
            name: name.to_vec(),
        };
        let resp = must!(self, self.other(1).election, leader, request.clone());
        let leads = resp
            .leader
            .as_ref()
            .is_some_and(|l| l.session_id == session && l.fencing_token == token);
        if !leads && !self.confirm_gone(session).await {
            self.fail(
                &request,
                format_args!(
                    "session {session:x} won with token {token} and lives, but another member reports {resp:?}"
                ),
            );
        }
    }

    // --- Shared locks and elections --------------------------------------

    fn queue_name(&mut self) -> Vec<u8> {
        if !self.hostile || self.rng.random_bool(0.5) {
            SHARED_QUEUES.choose(&mut self.rng).expect("names").to_vec()
        } else {
            self.name_key()
        }
    }

    /// Lock or Campaign, waited on briefly: a place someone holds makes
    /// it wait, and a call abandoned while waiting leaves its place.
    async fn take_place(&mut self, election: bool) {
        let name = self.queue_name();
        let session_id = self.session();
        let mut value = self.value();
        let oversized = election && self.maybe_oversized(&mut value);
        let request = pb::CampaignRequest {
            name: name.clone(),
            session_id,
            value,
        };
        let wait = Duration::from_millis(self.rng.random_range(50..=800));
        let client = self.client();
        let call = async {
            if election {
                let mut c = client.election;
                c.campaign(request.clone())
                    .await
                    .map(|r| r.map(|c| (c.fencing_token, c.revision)))
            } else {
                let mut c = client.lock;
                let lock = pb::LockRequest {
                    name: name.clone(),
                    session_id,
                };
                c.lock(lock)
                    .await
                    .map(|r| r.map(|l| (l.fencing_token, l.revision)))
            }
        };
        let Ok(answer) = tokio::time::timeout(wait, call).await else {
            self.count("abandoned");
            return;
        };
        let allowed = if oversized { TOO_BIG } else { QUEUE_REFUSALS };
        let (token, revision) = match answer.map(tonic::Response::into_inner) {
            Ok(r) => r,
            Err(status) => {
                self.judge(&request, &status, allowed);
                return;
            }
        };
        self.count("Ok");
        if oversized || !valid_name(&name) || token <= 0 || revision < token {
            self.fail(
                &request,
                format_args!("answered token {token} at revision {revision}"),
            );
        }
        self.shared
            .places
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Place {
                election,
                name,
                session: session_id,
                token,
            });
    }

    pub async fn lock(&mut self) {
        self.take_place(false).await;
    }

    pub async fn campaign(&mut self) {
        self.take_place(true).await;
    }

    /// A place handed out, maybe with a session or token that is not its
    /// own; or a random one.
    fn place(&mut self, election: bool) -> (Place, bool) {
        let places = self.shared.places.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<&Place> = places.iter().filter(|p| p.election == election).collect();
        let Some(place) = mine.choose(&mut self.rng).map(|p| (*p).clone()) else {
            drop(places);
            let place = Place {
                election,
                name: SHARED_QUEUES[0].to_vec(),
                session: self.session(),
                token: self.rng.random_range(1..=100),
            };
            return (place, false);
        };
        drop(places);
        match self.rng.random_range(0..3) {
            0 => (place, true),
            // Another session with the holder's token: never its place.
            1 => {
                let session = self.session();
                let wrong = session != place.session;
                (Place { session, ..place }, !wrong)
            }
            // The holder with a token it was not given.
            _ => {
                let token = match self.rng.random_range(0..3) {
                    0 => place.token + 1,
                    1 => place.token - 1,
                    _ => *[0, -1, i64::MAX].choose(&mut self.rng).expect("tokens"),
                };
                (Place { token, ..place }, false)
            }
        }
    }

    /// Unlock or Resign: released only by the holder's session with its
    /// token.
    pub async fn release_place(&mut self, election: bool) {
        let (place, rightful) = self.place(election);
        let client = self.client();
        let answer = if election {
            let request = pb::ResignRequest {
                name: place.name.clone(),
                session_id: place.session,
                fencing_token: place.token,
            };
            let mut c = client.election;
            self.settle(&place, ENTRY_REFUSALS, c.resign(request))
                .await
                .map(|r| r.resigned)
        } else {
            let request = pb::UnlockRequest {
                name: place.name.clone(),
                session_id: place.session,
                fencing_token: place.token,
            };
            let mut c = client.lock;
            self.settle(&place, ENTRY_REFUSALS, c.unlock(request))
                .await
                .map(|r| r.released)
        };
        if answer.is_ok_and(|released| released && !rightful) {
            self.fail(&place, "released by a session or token not its own");
        }
    }

    pub async fn proclaim(&mut self) {
        let (place, rightful) = self.place(true);
        let mut request = pb::ProclaimRequest {
            name: place.name.clone(),
            session_id: place.session,
            fencing_token: place.token,
            value: self.value(),
        };
        let oversized = self.maybe_oversized(&mut request.value);
        let allowed = if oversized { TOO_BIG } else { QUEUE_REFUSALS };
        let mut election = self.client().election;
        let answer = self
            .settle(&request, allowed, election.proclaim(request.clone()))
            .await;
        if answer.is_ok() && (oversized || !rightful) {
            self.fail(&request, "proclaimed by a session or token not leading");
        }
    }

    pub async fn leader(&mut self) {
        let request = pb::LeaderRequest {
            name: self.queue_name(),
        };
        let mut election = self.client().election;
        let Ok(resp) = self
            .settle(&request, READS, election.leader(request.clone()))
            .await
        else {
            return;
        };
        if let Some(l) = &resp.leader {
            if l.fencing_token <= 0 || l.fencing_token > resp.revision || l.session_id == 0 {
                self.fail(&request, format_args!("answered {}", describe(&resp)));
            }
        }
    }

    /// An Observe stream says who leads at once; then it is dropped.
    pub async fn observe(&mut self) {
        let request = pb::LeaderRequest {
            name: self.queue_name(),
        };
        let mut election = self.client().election;
        let Ok(mut stream) = self
            .settle(&request, READS, election.observe(request.clone()))
            .await
        else {
            return;
        };
        match tokio::time::timeout(FIRST_OBSERVATION, stream.next()).await {
            Err(_) => self.fail(&request, "Observe said nothing"),
            Ok(None) => self.fail(&request, "the Observe stream ended"),
            Ok(Some(Err(status))) => self.judge(&request, &status, READS),
            Ok(Some(Ok(resp))) => {
                if resp.revision <= 0 || resp.leader.is_some_and(|l| l.fencing_token <= 0) {
                    self.fail(&request, "Observe answered nonsense");
                }
            }
        }
    }
}
