//! Requests to `cairn.v1.Registry`, and the model of each client's
//! private registry.
//!
//! Codes a correct server gives (services/registry/mod.rs `refused`):
//! NotFound for an unknown registry or a session that does not exist,
//! InvalidArgument for a bad name, key or limit or a request over
//! `max_request_bytes`, FailedPrecondition for a registry's mode conflict,
//! OutOfRange for a watch from a compacted revision and for a message over
//! the gRPC decode limit.

use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::etcdserverpb as etcd;
use futures::StreamExt;
use rand::seq::IndexedRandom;
use rand::Rng;
use tokio::time::Instant;
use tonic::Code;

use super::*;

const WATCH_READ: Duration = Duration::from_millis(150);

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

impl Fuzzer {
    /// Codes for a request that may carry an oversized value.
    pub fn entry_codes(&self, oversized: bool) -> &'static [Code] {
        if oversized {
            TOO_BIG
        } else {
            ENTRY_REFUSALS
        }
    }

    pub fn maybe_oversized(&mut self, value: &mut Vec<u8>) -> bool {
        if self.hostile && self.rng.random_ratio(1, 40) {
            *value = self.oversized_value();
            return true;
        }
        false
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
}
