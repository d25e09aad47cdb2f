//! Requests to `cairn.v1.Claims`, and the model of each client's private
//! namespace.
//!
//! Codes a correct server gives (services/claims/convert.rs
//! `error_status`): NotFound for a namespace or session that does not
//! exist, AlreadyExists for a namespace created again with another
//! configuration (the one conflict the service names so), InvalidArgument
//! for every malformed request (names, configurations, key lists of no,
//! too many, mixed or wrong-kind keys, values over the namespace's
//! limits), OutOfRange for a message over the 16 MiB decode limit.
//! ResourceExhausted (too many namespaces) cannot happen here: the run
//! makes a dozen.

use std::collections::BTreeMap;

use cairn_proto::cairn::v1 as pb;
use cairn_store::claims::{
    DEFAULT_CLAIM_TTL_MS, MAX_CAPACITY, MAX_CLAIM_TTL_MS, MAX_KEYS_PER_REQUEST, MAX_KEY_BYTES,
    MAX_NAMESPACE_NAME_BYTES, MAX_VALUE_BYTES_CEILING, MIN_CLAIM_TTL_MS,
};
use rand::seq::IndexedRandom;
use rand::Rng;
use tonic::Code;

use super::*;

const REFUSALS: &[Code] = &[Code::InvalidArgument, Code::NotFound];
const CREATE_REFUSALS: &[Code] = &[Code::InvalidArgument, Code::AlreadyExists];
/// Over the claims service's decode limit (16 MiB).
const OVER_DECODE_LIMIT: usize = 17 * 1024 * 1024;
/// Keys of the private namespace's model: few, so they are re-asked.
const PRIVATE_KEYS: u64 = 24;

const U64: i32 = pb::KeyKind::U64 as i32;
const U128: i32 = pb::KeyKind::U128 as i32;
const BYTES: i32 = pb::KeyKind::Bytes as i32;

/// The namespaces every client uses, made before the load: each key kind
/// and eviction policy, small capacities so that registers evict, and a
/// 1 s lease TTL so that claims run out during the load.
pub fn shared_namespaces() -> Vec<(String, pb::NamespaceConfig)> {
    vec![
        (
            "s64".into(),
            pb::NamespaceConfig {
                capacity: 40,
                lease_ttl_ms: 1_000,
                eviction: pb::EvictionPolicy::Tail as i32,
                key_kind: U64,
                max_key_bytes: 0,
                max_value_bytes: 256,
                max_metadata_bytes: 64,
            },
        ),
        (
            "s128".into(),
            pb::NamespaceConfig {
                capacity: 16,
                // The defaults: the stored configuration says 30 s, 256.
                lease_ttl_ms: 0,
                eviction: pb::EvictionPolicy::Positional as i32,
                key_kind: U128,
                max_key_bytes: 0,
                max_value_bytes: 64,
                max_metadata_bytes: 0,
            },
        ),
        (
            "sb".into(),
            pb::NamespaceConfig {
                capacity: 16,
                lease_ttl_ms: 5_000,
                eviction: pb::EvictionPolicy::None as i32,
                key_kind: BYTES,
                max_key_bytes: 16,
                max_value_bytes: 32,
                max_metadata_bytes: 32,
            },
        ),
    ]
}

/// The private namespace of a client's model.
pub fn private_namespace_config() -> pb::NamespaceConfig {
    pb::NamespaceConfig {
        capacity: 100_000,
        lease_ttl_ms: 1_000,
        eviction: pb::EvictionPolicy::None as i32,
        key_kind: U64,
        max_key_bytes: 0,
        max_value_bytes: 256,
        max_metadata_bytes: 64,
    }
}

/// A configuration as the service stores it (zeros are defaults).
fn normalized(c: &pb::NamespaceConfig) -> pb::NamespaceConfig {
    let mut c = *c;
    if c.lease_ttl_ms == 0 {
        c.lease_ttl_ms = DEFAULT_CLAIM_TTL_MS;
    }
    if c.max_key_bytes == 0 {
        c.max_key_bytes = MAX_KEY_BYTES;
    }
    c
}

/// Whether the store takes this configuration (claims `check_config`).
fn config_valid(c: &pb::NamespaceConfig) -> bool {
    let c = normalized(c);
    (0..=2).contains(&c.eviction)
        && (0..=2).contains(&c.key_kind)
        && (1..=MAX_CAPACITY).contains(&c.capacity)
        && (MIN_CLAIM_TTL_MS..=MAX_CLAIM_TTL_MS).contains(&c.lease_ttl_ms)
        && (c.key_kind != BYTES || (1..=MAX_KEY_BYTES).contains(&c.max_key_bytes))
        && c.max_value_bytes <= MAX_VALUE_BYTES_CEILING
        && c.max_metadata_bytes <= MAX_VALUE_BYTES_CEILING
}

fn name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAMESPACE_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
}

fn u64_key(k: u64) -> pb::Key {
    pb::Key {
        kind: Some(pb::key::Kind::U64(k)),
    }
}

/// What the run knows of a key list it sends.
#[derive(Debug, Clone, Copy)]
struct ListShape {
    count: usize,
    /// The service must refuse it whatever the namespace.
    malformed: bool,
    /// Its keys are of this kind (when well-formed).
    kind: i32,
    /// Over the decode limit.
    oversized: bool,
}

impl Fuzzer {
    /// A namespace name: mostly a shared one; its configuration if known.
    fn namespace(&mut self) -> (String, Option<pb::NamespaceConfig>) {
        let shared = shared_namespaces();
        if !self.hostile || self.rng.random_bool(0.5) {
            let (name, config) = shared.choose(&mut self.rng).expect("namespaces").clone();
            return (name, Some(normalized(&config)));
        }
        let name = match self.rng.random_range(0..7) {
            0 => String::new(),
            1 => "no-such".into(),
            2 => "a b".into(),
            3 => "é".into(),
            4 => "n".repeat(MAX_NAMESPACE_NAME_BYTES + 1),
            _ => format!("x{}", self.rng.random_range(0..4)),
        };
        (name, None)
    }

    fn one_key(&mut self, kind: i32) -> Vec<u8> {
        match kind {
            U128 => (self.rng.random_range(0..24u128)).to_be_bytes().to_vec(),
            _ => format!("b{}", self.rng.random_range(0..24)).into_bytes(),
        }
    }

    /// A key list of `kind` (the namespace's when known), well-formed or
    /// (hostile) not.
    fn key_list(&mut self, kind: i32) -> (pb::KeyList, ListShape) {
        let mut shape = ListShape {
            count: 0,
            malformed: false,
            kind,
            oversized: false,
        };
        let n = self.rng.random_range(1..=8);
        let mut list = pb::KeyList::default();
        let fill = |f: &mut Self, list: &mut pb::KeyList, kind: i32, n: usize| match kind {
            U64 => list
                .u64s
                .extend((0..n).map(|_| f.rng.random_range(0..48u64))),
            U128 => list.u128s.extend((0..n).map(|_| f.one_key(U128))),
            _ => list.bytes.extend((0..n).map(|_| f.one_key(BYTES))),
        };
        fill(self, &mut list, kind, n);
        shape.count = n;
        if !self.hostile || self.rng.random_bool(0.4) {
            return (list, shape);
        }
        match self.rng.random_range(0..10) {
            0 => {
                list = pb::KeyList::default();
                shape.count = 0;
                shape.malformed = true;
            }
            1 => {
                list = pb::KeyList {
                    u64s: (0..=MAX_KEYS_PER_REQUEST as u64).collect(),
                    ..Default::default()
                };
                shape = ListShape {
                    count: MAX_KEYS_PER_REQUEST + 1,
                    malformed: true,
                    kind: U64,
                    oversized: false,
                };
            }
            2 => {
                // Two kinds at once.
                let other = if kind == U64 { BYTES } else { U64 };
                fill(self, &mut list, other, 1);
                shape.malformed = true;
            }
            3 => {
                list = pb::KeyList {
                    u128s: vec![vec![7; 15]],
                    ..Default::default()
                };
                shape = ListShape {
                    count: 1,
                    malformed: true,
                    kind: U128,
                    oversized: false,
                };
            }
            4 => {
                // Another kind than the namespace's.
                let other = [U64, U128, BYTES]
                    .into_iter()
                    .find(|k| *k != kind)
                    .expect("kinds");
                list = pb::KeyList::default();
                fill(self, &mut list, other, n);
                shape.kind = other;
            }
            5 => {
                list.bytes = vec![Vec::new(), vec![b'b'; MAX_KEY_BYTES as usize + 1]];
                list.u64s.clear();
                list.u128s.clear();
                shape = ListShape {
                    count: 2,
                    malformed: false,
                    kind: BYTES,
                    oversized: false,
                };
            }
            6 if self.rng.random_ratio(1, 20) => {
                list = pb::KeyList {
                    bytes: vec![vec![b'h'; 256]; OVER_DECODE_LIMIT / 256],
                    ..Default::default()
                };
                shape.oversized = true;
            }
            7 => {
                // The most keys a request takes, all new or re-asked.
                list = pb::KeyList {
                    u64s: (0..MAX_KEYS_PER_REQUEST as u64)
                        .map(|i| 1_000 + i % 5_000)
                        .collect(),
                    ..Default::default()
                };
                shape = ListShape {
                    count: MAX_KEYS_PER_REQUEST,
                    malformed: false,
                    kind: U64,
                    oversized: false,
                };
            }
            _ => {
                // Duplicates.
                match kind {
                    U64 => list.u64s.extend(list.u64s.clone()),
                    U128 => list.u128s.extend(list.u128s.clone()),
                    _ => list.bytes.extend(list.bytes.clone()),
                }
                shape.count *= 2;
            }
        }
        (list, shape)
    }

    /// Whether a well-formed list fits `config` (its kind, its key length).
    fn fits(list: &pb::KeyList, shape: &ListShape, config: &pb::NamespaceConfig) -> bool {
        !shape.malformed
            && shape.kind == config.key_kind
            && list
                .bytes
                .iter()
                .all(|b| !b.is_empty() && b.len() <= config.max_key_bytes as usize)
    }

    fn claims_codes(shape: &ListShape) -> &'static [Code] {
        if shape.oversized {
            TOO_BIG
        } else {
            REFUSALS
        }
    }

    pub async fn create_namespace(&mut self) {
        let (namespace, known) = self.namespace();
        let mut config = known.unwrap_or_else(private_namespace_config);
        if self.rng.random_bool(0.5) {
            let pick = |f: &mut Self, values: &[u64]| *values.choose(&mut f.rng).expect("values");
            config.capacity = pick(self, &[0, 1, 10, MAX_CAPACITY, MAX_CAPACITY + 1, u64::MAX]);
            config.lease_ttl_ms = pick(
                self,
                &[
                    0,
                    1,
                    999,
                    1_000,
                    30_000,
                    MAX_CLAIM_TTL_MS,
                    MAX_CLAIM_TTL_MS + 1,
                    u64::MAX,
                ],
            );
            config.eviction = *[0, 1, 2, 3, -1].choose(&mut self.rng).expect("policies");
            config.key_kind = *[0, 1, 2, 7].choose(&mut self.rng).expect("kinds");
            config.max_key_bytes = *[0, 1, 16, 256, 257, u32::MAX]
                .choose(&mut self.rng)
                .expect("lengths");
            config.max_value_bytes = *[0, 64, 65_536, 65_537, u32::MAX]
                .choose(&mut self.rng)
                .expect("lengths");
        }
        let without_config = self.hostile && self.rng.random_ratio(1, 10);
        let request = pb::CreateNamespaceRequest {
            namespace,
            config: (!without_config).then_some(config),
        };
        let mut claims = self.client().claims;
        let answer = self
            .settle(
                &request,
                CREATE_REFUSALS,
                claims.create_namespace(request.clone()),
            )
            .await;
        let valid = !without_config && name_valid(&request.namespace) && config_valid(&config);
        let same = known.as_ref().map(|k| *k == normalized(&config));
        let ok = match (&answer, same) {
            (Ok(r), Some(true)) => valid && r.existed,
            (Ok(_), Some(false)) => false,
            (Ok(_), None) => valid,
            (Err(s), _) if !valid => s.code() == Code::InvalidArgument,
            // A shared namespace asked with its own configuration is there.
            (Err(_), Some(true)) => false,
            (Err(s), _) => s.code() == Code::AlreadyExists,
        };
        if !ok {
            self.fail(
                &request,
                format_args!(
                    "answered {answer:?} (configuration valid: {valid}, same as the shared one: {same:?})"
                ),
            );
        }
    }

    pub async fn can_offload(&mut self) {
        let (namespace, config) = self.namespace();
        let kind = config.as_ref().map_or(U64, |c| c.key_kind);
        let (keys, shape) = self.key_list(kind);
        let request = pb::CanOffloadRequest {
            namespace,
            session_id: self.session(),
            keys: Some(keys.clone()),
        };
        let mut claims = self.client().claims;
        let Ok(resp) = self
            .settle(
                &describe(&request),
                Self::claims_codes(&shape),
                claims.can_offload(request.clone()),
            )
            .await
        else {
            return;
        };
        let fits = config.as_ref().is_none_or(|c| Self::fits(&keys, &shape, c));
        let ttl = config.as_ref().map_or(MAX_CLAIM_TTL_MS, |c| c.lease_ttl_ms);
        let statuses_ok = resp.statuses.len() == shape.count
            && resp.statuses.iter().all(|s| (1..=3).contains(s))
            && resp.lease_ttl_ms <= ttl;
        if shape.malformed || shape.oversized || !fits || !statuses_ok {
            self.fail(
                &describe(&request),
                format_args!("answered {}", describe(&resp)),
            );
        }
    }

    fn register_entries(&mut self, kind: i32) -> (Vec<pb::RegisterEntry>, bool) {
        let n = if self.hostile && self.rng.random_ratio(1, 15) {
            *[0, MAX_KEYS_PER_REQUEST + 1]
                .choose(&mut self.rng)
                .expect("counts")
        } else {
            self.rng.random_range(1..=6)
        };
        let mut malformed = n == 0 || n > MAX_KEYS_PER_REQUEST;
        let mut entries: Vec<pb::RegisterEntry> = Vec::with_capacity(n);
        for i in 0..n {
            let key = match kind {
                U64 => u64_key(self.rng.random_range(0..48)),
                U128 => pb::Key {
                    kind: Some(pb::key::Kind::U128(self.one_key(U128))),
                },
                _ => pb::Key {
                    kind: Some(pb::key::Kind::Bytes(self.one_key(BYTES))),
                },
            };
            let parent = match self.rng.random_range(0..5) {
                0 | 1 => entries.last().and_then(|e| e.key.clone()),
                2 => Some(key.clone()),
                3 if self.hostile => Some(pb::Key { kind: None }),
                _ => None,
            };
            if parent.as_ref().is_some_and(|p| p.kind.is_none()) {
                malformed = true;
            }
            let key = if self.hostile && i > 0 && self.rng.random_ratio(1, 20) {
                malformed = true;
                None
            } else {
                Some(key)
            };
            let position = match self.rng.random_range(0..4) {
                0 => Some(self.rng.random_range(0..10)),
                1 if self.hostile => Some(u64::MAX),
                _ => None,
            };
            // Long values only in short lists: 10,001 of them would pass
            // the decode limit, which is not what that list is about.
            let value = if n <= 6 && self.hostile && self.rng.random_ratio(1, 10) {
                vec![b'v'; self.rng.random_range(257..=70_000)]
            } else {
                format!("c{}:{i}", self.client).into_bytes()
            };
            entries.push(pb::RegisterEntry {
                key,
                value,
                metadata: if self.rng.random_bool(0.3) {
                    self.not_utf8()
                } else {
                    Vec::new()
                },
                parent,
                position,
            });
        }
        (entries, malformed)
    }

    pub async fn claims_register(&mut self) {
        let (namespace, config) = self.namespace();
        let kind = config.as_ref().map_or(U64, |c| c.key_kind);
        let (entries, malformed) = self.register_entries(kind);
        let request = pb::ClaimsRegisterRequest {
            namespace,
            session_id: self.session(),
            entries,
        };
        let mut claims = self.client().claims;
        let Ok(resp) = self
            .settle(
                &describe(&request),
                REFUSALS,
                claims.register(request.clone()),
            )
            .await
        else {
            return;
        };
        let stored = resp
            .statuses
            .iter()
            .filter(|s| **s == pb::RegisterStatus::Stored as i32)
            .count() as u64;
        let rejected_full = resp
            .statuses
            .contains(&(pb::RegisterStatus::RejectedFull as i32));
        let too_long = |c: &pb::NamespaceConfig| {
            request.entries.iter().any(|e| {
                e.value.len() > c.max_value_bytes as usize
                    || e.metadata.len() > c.max_metadata_bytes as usize
            })
        };
        // Positional eviction always finds a victim in a full namespace.
        let positional = config
            .as_ref()
            .is_some_and(|c| c.eviction == pb::EvictionPolicy::Positional as i32);
        let fine = !malformed
            && !config.as_ref().is_some_and(too_long)
            && resp.statuses.len() == request.entries.len()
            && resp.statuses.iter().all(|s| (1..=4).contains(s))
            && resp.evicted <= stored
            && !(positional && rejected_full);
        if !fine {
            self.fail(
                &describe(&request),
                format_args!("answered {}", describe(&resp)),
            );
        }
    }

    pub async fn match_keys(&mut self, prefix: bool) {
        let (namespace, config) = self.namespace();
        let kind = config.as_ref().map_or(U64, |c| c.key_kind);
        let (keys, shape) = self.key_list(kind);
        let request = pb::MatchRequest {
            namespace,
            keys: Some(keys.clone()),
        };
        let mut claims = self.client().claims;
        let (shown, codes) = (describe(&request), Self::claims_codes(&shape));
        let answer = if prefix {
            let call = claims.match_prefix(request.clone());
            self.settle(&shown, codes, call).await
        } else {
            let call = claims.match_all(request.clone());
            self.settle(&shown, codes, call).await
        };
        let Ok(resp) = answer else {
            return;
        };
        let key_at = |i: usize| -> Option<pb::Key> {
            let kind = if let Some(k) = keys.u64s.get(i) {
                pb::key::Kind::U64(*k)
            } else if let Some(k) = keys.u128s.get(i) {
                pb::key::Kind::U128(k.clone())
            } else {
                pb::key::Kind::Bytes(keys.bytes.get(i)?.clone())
            };
            Some(pb::Key { kind: Some(kind) })
        };
        let indexes_ok = if prefix {
            resp.matches
                .iter()
                .enumerate()
                .all(|(i, m)| m.index as usize == i)
        } else {
            resp.matches.windows(2).all(|w| w[0].index < w[1].index)
        };
        let keys_ok = resp
            .matches
            .iter()
            .all(|m| m.key.is_some() && m.key == key_at(m.index as usize));
        let fits = config.as_ref().is_none_or(|c| Self::fits(&keys, &shape, c));
        if shape.malformed || shape.oversized || !fits || !indexes_ok || !keys_ok {
            self.fail(
                &describe(&request),
                format_args!("answered {}", describe(&resp)),
            );
        }
    }

    pub async fn remove_or_touch(&mut self, remove: bool) {
        let (namespace, config) = self.namespace();
        let kind = config.as_ref().map_or(U64, |c| c.key_kind);
        let (keys, shape) = self.key_list(kind);
        let request = pb::ClaimsKeysRequest {
            namespace,
            keys: Some(keys.clone()),
        };
        let mut claims = self.client().claims;
        let codes = Self::claims_codes(&shape);
        let counted = if remove {
            self.settle(&describe(&request), codes, claims.remove(request.clone()))
                .await
                .map(|r| r.removed + r.leases_released)
        } else {
            self.settle(&describe(&request), codes, claims.touch(request.clone()))
                .await
                .map(|r| r.present)
        };
        let Ok(counted) = counted else {
            return;
        };
        let fits = config.as_ref().is_none_or(|c| Self::fits(&keys, &shape, c));
        if shape.malformed || shape.oversized || !fits || counted > shape.count as u64 {
            self.fail(
                &describe(&request),
                format_args!("answered a count of {counted}"),
            );
        }
    }

    pub async fn stats(&mut self) {
        let namespace = if self.rng.random_bool(0.3) {
            String::new()
        } else {
            self.namespace().0
        };
        let request = pb::StatsRequest { namespace };
        let mut claims = self.client().claims;
        let Ok(resp) = self
            .settle(&request, &[Code::NotFound], claims.stats(request.clone()))
            .await
        else {
            return;
        };
        let over = resp.namespaces.iter().any(|n| {
            n.config
                .as_ref()
                .is_none_or(|c| n.entries > c.capacity || !config_valid(c))
        });
        let one = request.namespace.is_empty() || resp.namespaces.len() == 1;
        if over || !one {
            self.fail(&request, format_args!("answered {}", describe(&resp)));
        }
    }

    /// The private namespace, which only this client writes: which keys
    /// are stored is known exactly, so CanOffload's `ALREADY_STORED`,
    /// Register's statuses and another member's MatchAll are checked
    /// against it.
    pub async fn private_claims(&mut self) {
        let Some(session_id) = self.own_session().await else {
            return;
        };
        let namespace = self.private_namespace();
        let n = self.rng.random_range(1..=6);
        let keys: Vec<u64> = (0..n)
            .map(|_| self.rng.random_range(0..PRIVATE_KEYS))
            .collect();
        let request = pb::CanOffloadRequest {
            namespace: namespace.clone(),
            session_id,
            keys: Some(pb::KeyList {
                u64s: keys.clone(),
                ..Default::default()
            }),
        };
        let mut claims = self.client().claims;
        match self
            .settle(
                &request,
                &[Code::NotFound],
                claims.can_offload(request.clone()),
            )
            .await
        {
            Ok(resp) => {
                let already = pb::OffloadStatus::AlreadyStored as i32;
                let as_modelled = resp.statuses.len() == keys.len()
                    && keys
                        .iter()
                        .zip(&resp.statuses)
                        .all(|(k, s)| (*s == already) == self.stored.contains_key(k));
                if !as_modelled {
                    self.fail(
                        &request,
                        format_args!(
                            "answered {resp:?}; stored are {:?}",
                            self.stored.keys().collect::<Vec<_>>()
                        ),
                    );
                }
            }
            Err(_) => {
                if !self.confirm_gone(session_id).await {
                    self.fail(&request, "refused, but the session lives");
                }
            }
        }
        if self.rng.random_bool(0.2) {
            self.private_remove(&keys).await;
        } else {
            self.private_store(session_id, &keys).await;
        }
        self.check_private_matches().await;
    }

    async fn private_store(&mut self, session_id: i64, keys: &[u64]) {
        let entries: Vec<pb::RegisterEntry> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| pb::RegisterEntry {
                key: Some(u64_key(*k)),
                value: format!("p{}:{k}:{}:{i}", self.client, self.index).into_bytes(),
                ..Default::default()
            })
            .collect();
        let request = pb::ClaimsRegisterRequest {
            namespace: self.private_namespace(),
            session_id,
            entries: entries.clone(),
        };
        let mut claims = self.client().claims;
        let Ok(resp) = self
            .settle(&request, &[], claims.register(request.clone()))
            .await
        else {
            return;
        };
        if resp.statuses.len() != entries.len() {
            self.fail(&request, format_args!("answered {resp:?}"));
        }
        let mut model: BTreeMap<u64, Vec<u8>> = self.stored.clone();
        for ((k, entry), status) in keys.iter().zip(&entries).zip(&resp.statuses) {
            let fine = match pb::RegisterStatus::try_from(*status) {
                Ok(pb::RegisterStatus::Stored) => model.insert(*k, entry.value.clone()).is_none(),
                Ok(pb::RegisterStatus::AlreadyStored) => model.contains_key(k),
                // Another own session's claim on it is live.
                Ok(pb::RegisterStatus::LeasedByOther) => !model.contains_key(k),
                _ => false,
            };
            if !fine {
                self.fail(
                    &request,
                    format_args!(
                        "answered {resp:?}; stored were {:?}",
                        self.stored.keys().collect::<Vec<_>>()
                    ),
                );
            }
        }
        self.stored = model;
    }

    async fn private_remove(&mut self, keys: &[u64]) {
        let request = pb::ClaimsKeysRequest {
            namespace: self.private_namespace(),
            keys: Some(pb::KeyList {
                u64s: keys.to_vec(),
                ..Default::default()
            }),
        };
        let mut claims = self.client().claims;
        let Ok(resp) = self
            .settle(&request, &[], claims.remove(request.clone()))
            .await
        else {
            return;
        };
        let mut distinct = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let were_stored = distinct
            .iter()
            .filter(|k| self.stored.contains_key(k))
            .count() as u64;
        if resp.removed != were_stored {
            self.fail(
                &request,
                format_args!(
                    "answered {resp:?}; stored were {:?}",
                    self.stored.keys().collect::<Vec<_>>()
                ),
            );
        }
        for k in &distinct {
            self.stored.remove(k);
        }
    }

    /// Another member's MatchAll of every private key finds exactly the
    /// model's entries.
    async fn check_private_matches(&mut self) {
        let request = pb::MatchRequest {
            namespace: self.private_namespace(),
            keys: Some(pb::KeyList {
                u64s: (0..PRIVATE_KEYS).collect(),
                ..Default::default()
            }),
        };
        let resp = must!(self, self.other(1).claims, match_all, request.clone());
        let found: BTreeMap<u64, Vec<u8>> = resp
            .matches
            .iter()
            .map(|m| (u64::from(m.index), m.value.clone()))
            .collect();
        if found != self.stored {
            self.fail(
                &request,
                format_args!("another member has {found:?}, the model {:?}", self.stored),
            );
        }
    }
}
