//! Block claims (`cairn.v1.Claims`): a replicated dedup registry for data
//! blocks. A [`ClaimsClient`] is bound to a session (the lease owner) and a
//! namespace; [`RegisterBatcher`] batches registrations in the background.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::claims::ClaimsError> {
//! use cairn_client::claims::{ClaimKey, ClaimsClient, ClaimsConfig, OffloadStatus, RegisterEntry};
//! let claims = ClaimsClient::connect(ClaimsConfig::from_env()?).await?;
//! let keys = [ClaimKey::U64(0xa1), ClaimKey::U64(0xb2)];
//! let offload = claims.can_offload(&keys).await?; // an error if the cluster cannot answer
//! let batcher = claims.batcher();
//! for key in offload.keys_with(&keys, OffloadStatus::Granted) {
//!     // ... store the block, then:
//!     batcher.register(vec![RegisterEntry::new(key.clone(), "s3://bucket/a1")]).await?;
//! }
//! batcher.flush().await?; // everything registered so far is replicated
//! # Ok(()) }
//! ```
//!
//! Every claims call is safe to repeat (a re-asked `can_offload` refreshes
//! this session's own leases, a repeated `register` finds the entry stored),
//! so the client retries them on any `Unavailable`, through leader changes,
//! within [`ClaimsConfig::request_timeout`]. The visible effects of a try
//! whose answer was lost: an entry it stored reports `AlreadyStored`, and
//! entries it removed are not counted by the repeated `remove`.

mod batcher;
mod cache;
mod config;
mod error;
mod types;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairn::v1 as pb;
use tonic::transport::Channel;

pub use batcher::{FlushReport, RegisterBatcher};
pub use cache::StoredCache;
pub use config::{parse_eviction, parse_key_kind, ClaimsConfig, ClaimsConfigBuilder, IGNORED_ENV};
pub use error::ClaimsError;
pub use types::*;

use crate::auth::AuthChannel;
use crate::client::Client;
use crate::options::ClientOptions;
use crate::registry::Session;
use crate::retry::CallKind;

/// Claims calls for one session in one namespace. Cheap to clone; clones
/// share the session, the cache and the connection.
#[derive(Clone)]
pub struct ClaimsClient {
    client: Client,
    /// The lease owner: every lease this client is granted belongs to it.
    session_id: i64,
    /// The session when this client created it (kept alive while any clone
    /// lives); `None` when the caller owns it.
    session: Option<Arc<Session>>,
    namespace: String,
    /// Known-stored keys; `None` when disabled.
    cache: Option<Arc<Mutex<StoredCache>>>,
    /// Batching settings for [`batcher`](Self::batcher).
    config: Arc<ClaimsConfig>,
}

impl std::fmt::Debug for ClaimsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsClient")
            .field("session", &format_args!("{:x}", self.session_id))
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl ClaimsClient {
    /// Connect to `config.endpoints`, create a session of
    /// `config.session_ttl_secs` (kept alive in the background until the
    /// last clone is dropped, or [`close`](Self::close)), and create the
    /// namespace if `config.create` says so.
    pub async fn connect(config: ClaimsConfig) -> Result<ClaimsClient, ClaimsError> {
        let options = ClientOptions {
            request_timeout: config.request_timeout,
            credentials: config.credentials.clone(),
            ..ClientOptions::default()
        };
        let ns = config.namespace.clone();
        let client = Client::connect(config.endpoints.clone(), options)
            .await
            .map_err(|e| ClaimsError::from_client(e, &ns, 0))?;
        let session = Session::create(&client, config.session_ttl_secs)
            .await
            .map_err(|e| ClaimsError::from_client(e, &ns, 0))?;
        let mut c = ClaimsClient::new(&client, session.id(), config);
        c.session = Some(Arc::new(session));
        if let Some(ns) = c.config.create.clone() {
            c.create_namespace(&ns).await?;
        }
        Ok(c)
    }

    /// A client for an existing session (see [`Session`]); the caller keeps
    /// the session alive. `config.endpoints` and `config.create` are not
    /// used.
    pub fn new(client: &Client, session_id: i64, config: ClaimsConfig) -> ClaimsClient {
        let cache = (config.cache_entries > 0)
            .then(|| Arc::new(Mutex::new(StoredCache::new(config.cache_entries))));
        ClaimsClient {
            client: client.clone(),
            session_id,
            session: None,
            namespace: config.namespace.clone(),
            cache,
            config: Arc::new(config),
        }
    }

    /// The lease owner.
    pub fn session_id(&self) -> i64 {
        self.session_id
    }

    /// The session this client created, if it did.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_deref()
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn config(&self) -> &ClaimsConfig {
        &self.config
    }

    /// The same session and settings in another namespace.
    pub fn with_namespace(&self, namespace: impl Into<String>) -> ClaimsClient {
        let mut config = (*self.config).clone();
        config.namespace = namespace.into();
        let cache = (config.cache_entries > 0)
            .then(|| Arc::new(Mutex::new(StoredCache::new(config.cache_entries))));
        ClaimsClient {
            client: self.client.clone(),
            session_id: self.session_id,
            session: self.session.clone(),
            namespace: config.namespace.clone(),
            cache,
            config: Arc::new(config),
        }
    }

    /// End the session this client created: its leases are released at
    /// once, and clones (e.g. a batcher's) see it gone. A client for a
    /// caller's session leaves that session alone.
    pub async fn close(self) -> Result<(), ClaimsError> {
        let (ns, id) = (self.namespace.clone(), self.session_id);
        let result = match self.session.map(Arc::try_unwrap) {
            None => return Ok(()),
            Some(Ok(session)) => session.close().await,
            // Still shared: end it through its lease.
            Some(Err(_shared)) => self.client.lease_revoke(id).await.map(drop),
        };
        result.map_err(|e| ClaimsError::from_client(e, &ns, id))
    }

    /// A register batcher over a clone of this client (see
    /// [`RegisterBatcher`]), with the config's batch size, flush interval
    /// and queue bound.
    pub fn batcher(&self) -> RegisterBatcher {
        RegisterBatcher::start(self.clone())
    }

    fn err(&self, e: crate::ClientError) -> ClaimsError {
        ClaimsError::from_client(e, &self.namespace, self.session_id)
    }

    fn raw(&self, ch: Channel) -> pb::claims_client::ClaimsClient<AuthChannel> {
        let o = &self.client.inner.options;
        pb::claims_client::ClaimsClient::new(self.client.authed(ch))
            .max_decoding_message_size(o.max_response_bytes)
            .max_encoding_message_size(o.max_request_bytes)
    }

    fn cache(&self) -> Option<std::sync::MutexGuard<'_, StoredCache>> {
        self.cache
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Create this client's namespace; `true` if it already existed with
    /// the same configuration.
    pub async fn create_namespace(&self, config: &NamespaceConfig) -> Result<bool, ClaimsError> {
        let req = pb::CreateNamespaceRequest {
            namespace: self.namespace.clone(),
            config: Some(wire::config(config)),
        };
        let r = self
            .client
            .unary("claims create namespace", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.create_namespace(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.existed)
    }

    /// Per key, in request order: `Granted` (this session holds the lease
    /// now), `AlreadyStored` or `Leased`. Keys in the local cache are
    /// `AlreadyStored` without asking. Fails (never answers "offloadable")
    /// when the cluster cannot answer.
    pub async fn can_offload(&self, keys: &[ClaimKey]) -> Result<Offload, ClaimsError> {
        wire::check_count(keys.len())?;
        let mut statuses = vec![OffloadStatus::AlreadyStored; keys.len()];
        let ask: Vec<usize> = match self.cache() {
            Some(cache) => (0..keys.len())
                .filter(|i| !cache.contains(&keys[*i]))
                .collect(),
            None => (0..keys.len()).collect(),
        };
        if ask.is_empty() {
            return Ok(Offload {
                statuses,
                lease_ttl: Duration::ZERO,
            });
        }
        let asked: Vec<ClaimKey> = ask.iter().map(|i| keys[*i].clone()).collect();
        let req = pb::CanOffloadRequest {
            namespace: self.namespace.clone(),
            session_id: self.session_id,
            keys: Some(wire::key_list(&asked)?),
        };
        let r = self
            .client
            .unary("claims can offload", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.can_offload(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        let answered = wire::offload_statuses(r.statuses, asked.len())?;
        for (i, s) in ask.into_iter().zip(answered) {
            statuses[i] = s;
        }
        Ok(Offload {
            statuses,
            lease_ttl: Duration::from_millis(r.lease_ttl_ms),
        })
    }

    /// Record stored blocks now (one replicated command); see
    /// [`RegisterBatcher`] for batching. Releases this session's leases on
    /// the keys; never another session's (`LeasedByOther`).
    pub async fn register(&self, entries: &[RegisterEntry]) -> Result<Registered, ClaimsError> {
        wire::check_count(entries.len())?;
        let req = pb::ClaimsRegisterRequest {
            namespace: self.namespace.clone(),
            session_id: self.session_id,
            entries: entries.iter().map(wire::entry).collect(),
        };
        let r = self
            .client
            .unary("claims register", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.register(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        let statuses = wire::register_statuses(r.statuses, entries.len())?;
        if let Some(mut cache) = self.cache() {
            for (e, s) in entries.iter().zip(&statuses) {
                if *s == RegisterStatus::Stored {
                    cache.insert(e.key.clone(), e.value.clone(), e.metadata.clone());
                }
            }
        }
        Ok(Registered {
            revision: r.revision,
            statuses,
            evicted: r.evicted,
        })
    }

    /// The longest prefix of `keys` whose every key is stored, in order.
    /// A prefix found in the local cache is not asked again.
    pub async fn match_prefix(&self, keys: &[ClaimKey]) -> Result<Vec<Matched>, ClaimsError> {
        wire::check_count(keys.len())?;
        let mut found = Vec::new();
        if let Some(mut cache) = self.cache() {
            for (i, k) in keys.iter().enumerate() {
                let Some((value, metadata)) = cache.get(k) else {
                    break;
                };
                found.push(Matched {
                    index: i,
                    key: k.clone(),
                    value,
                    metadata,
                });
            }
        }
        let start = found.len();
        if start == keys.len() {
            return Ok(found);
        }
        let rest = self.lookup(&keys[start..], true).await?;
        found.extend(rest.into_iter().map(|mut m| {
            m.index += start;
            m
        }));
        Ok(found)
    }

    /// Every stored key of `keys`, in request order, misses skipped; each
    /// with its index in `keys`.
    pub async fn match_all(&self, keys: &[ClaimKey]) -> Result<Vec<Matched>, ClaimsError> {
        wire::check_count(keys.len())?;
        let mut found: Vec<Matched> = Vec::new();
        let mut ask = Vec::new();
        match self.cache() {
            Some(mut cache) => {
                for (i, k) in keys.iter().enumerate() {
                    match cache.get(k) {
                        Some((value, metadata)) => found.push(Matched {
                            index: i,
                            key: k.clone(),
                            value,
                            metadata,
                        }),
                        None => ask.push(i),
                    }
                }
            }
            None => ask = (0..keys.len()).collect(),
        }
        if !ask.is_empty() {
            let asked: Vec<ClaimKey> = ask.iter().map(|i| keys[*i].clone()).collect();
            for mut m in self.lookup(&asked, false).await? {
                m.index = ask[m.index];
                found.push(m);
            }
            found.sort_by_key(|m| m.index);
        }
        Ok(found)
    }

    async fn lookup(&self, keys: &[ClaimKey], prefix: bool) -> Result<Vec<Matched>, ClaimsError> {
        let req = pb::MatchRequest {
            namespace: self.namespace.clone(),
            keys: Some(wire::key_list(keys)?),
        };
        let r = self
            .client
            .unary("claims match", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move {
                    if prefix {
                        c.match_prefix(r).await
                    } else {
                        c.match_all(r).await
                    }
                }
            })
            .await
            .map_err(|e| self.err(e))?;
        let found: Vec<Matched> = r
            .matches
            .into_iter()
            .map(wire::matched)
            .collect::<Result<_, _>>()?;
        if found.iter().any(|m| m.index >= keys.len()) {
            return Err(ClaimsError::Client(crate::ClientError::Protocol(
                "match index out of range".into(),
            )));
        }
        if let Some(mut cache) = self.cache() {
            for m in &found {
                cache.insert(m.key.clone(), m.value.clone(), m.metadata.clone());
            }
        }
        Ok(found)
    }

    /// Remove entries and release leases on `keys` (whoever holds them);
    /// also forgets them in the local cache.
    pub async fn remove(&self, keys: &[ClaimKey]) -> Result<Removed, ClaimsError> {
        let req = pb::ClaimsKeysRequest {
            namespace: self.namespace.clone(),
            keys: Some(wire::key_list(keys)?),
        };
        if let Some(mut cache) = self.cache() {
            keys.iter().for_each(|k| cache.remove(k));
        }
        let r = self
            .client
            .unary("claims remove", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.remove(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        Ok(Removed {
            removed: r.removed,
            leases_released: r.leases_released,
        })
    }

    /// Mark stored entries as used now (eviction takes them last); returns
    /// how many of `keys` are stored.
    pub async fn touch(&self, keys: &[ClaimKey]) -> Result<u64, ClaimsError> {
        let req = pb::ClaimsKeysRequest {
            namespace: self.namespace.clone(),
            keys: Some(wire::key_list(keys)?),
        };
        let r = self
            .client
            .unary("claims touch", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.touch(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.present)
    }

    /// This namespace's counters.
    pub async fn stats(&self) -> Result<ClaimsStats, ClaimsError> {
        let mut all = self.stats_of(&self.namespace).await?;
        all.pop().ok_or_else(|| {
            ClaimsError::Client(crate::ClientError::Protocol("no stats returned".into()))
        })
    }

    /// Counters of every namespace.
    pub async fn stats_all(&self) -> Result<Vec<ClaimsStats>, ClaimsError> {
        self.stats_of("").await
    }

    async fn stats_of(&self, namespace: &str) -> Result<Vec<ClaimsStats>, ClaimsError> {
        let req = pb::StatsRequest {
            namespace: namespace.to_string(),
        };
        let r = self
            .client
            .unary("claims stats", CallKind::Read, req, |ch, r| {
                let mut c = self.raw(ch);
                async move { c.stats(r).await }
            })
            .await
            .map_err(|e| self.err(e))?;
        Ok(r.namespaces.into_iter().map(wire::stats).collect())
    }
}
