//! Typed registry calls: create, register, lookup, watch.

use cairn_proto::cairn::v1 as pb;
use tonic::codec::Streaming;

use super::{Entry, Mode, Page, Registered, Updated};
use crate::client::Client;
use crate::error::ClientError;
use crate::retry::CallKind;

/// The kind of a registry change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Registered,
    Unregistered,
    ValueChanged,
}

/// One change of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEvent {
    pub kind: EventKind,
    pub key: Vec<u8>,
    pub owner: i64,
    /// The new value, or the removed one for `Unregistered`.
    pub value: Vec<u8>,
    /// `ValueChanged`: the value before.
    pub previous_value: Vec<u8>,
    pub revision: i64,
}

/// A stream of registry events. Resume after a break with
/// `start_revision = last_revision() + 1`.
pub struct RegistryWatch {
    inbound: Streaming<pb::WatchResponse>,
    last_revision: i64,
}

impl RegistryWatch {
    /// The next batch of events (one or more revisions); `None` when the
    /// server ended the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<RegistryEvent>>, ClientError> {
        let Some(resp) = self
            .inbound
            .message()
            .await
            .map_err(|s| ClientError::rpc("registry watch", s))?
        else {
            return Ok(None);
        };
        self.last_revision = resp.revision;
        Ok(Some(resp.events.into_iter().map(event_from_wire).collect()))
    }

    /// The revision the stream has delivered up to.
    pub fn last_revision(&self) -> i64 {
        self.last_revision
    }
}

fn event_from_wire(e: pb::RegistryEvent) -> RegistryEvent {
    use pb::registry_event::Kind;
    let kind = match Kind::try_from(e.kind) {
        Ok(Kind::Unregistered) => EventKind::Unregistered,
        Ok(Kind::ValueChanged) => EventKind::ValueChanged,
        _ => EventKind::Registered,
    };
    RegistryEvent {
        kind,
        key: e.key,
        owner: e.owner,
        value: e.value,
        previous_value: e.previous_value,
        revision: e.revision,
    }
}

fn registered_from_wire(r: pb::RegisterResponse) -> Registered {
    use pb::register_response::Outcome;
    match Outcome::try_from(r.outcome) {
        Ok(Outcome::AlreadyRegistered) => Registered::AlreadyRegistered {
            owner: r.owner,
            value: r.owner_value,
        },
        Ok(Outcome::Existing) => {
            Registered::Existing(r.entries.into_iter().map(Entry::from).collect())
        }
        _ => Registered::Registered {
            revision: r.revision,
            previous: r.previous,
        },
    }
}

impl Client {
    /// Create a registry; `false` if it already existed with this mode.
    pub async fn create_registry(
        &self,
        registry: impl Into<Vec<u8>>,
        mode: Mode,
    ) -> Result<bool, ClientError> {
        let mode = match mode {
            Mode::Unique => pb::Mode::Unique,
            Mode::Duplicate => pb::Mode::Duplicate,
        };
        let req = pb::CreateRegistryRequest {
            registry: registry.into(),
            mode: mode as i32,
        };
        let r = self
            .unary("create registry", CallKind::Write, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.create_registry(r).await }
            })
            .await?;
        Ok(r.created)
    }

    /// Register `key` for `session` with `value`.
    pub async fn register(
        &self,
        session: i64,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Registered, ClientError> {
        let req = pb::RegisterRequest {
            registry: registry.into(),
            key: key.into(),
            value: value.into(),
            session_id: session,
        };
        let r = self
            .unary("register", CallKind::Write, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.register(r).await }
            })
            .await?;
        Ok(registered_from_wire(r))
    }

    /// Register unless `key` has entries; then return them, in one call.
    pub async fn register_or_get(
        &self,
        session: i64,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Registered, ClientError> {
        let req = pb::RegisterRequest {
            registry: registry.into(),
            key: key.into(),
            value: value.into(),
            session_id: session,
        };
        let r = self
            .unary("register or get", CallKind::Write, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.register_or_get(r).await }
            })
            .await?;
        Ok(registered_from_wire(r))
    }

    /// Remove the session's own entry; `false` if it had none.
    pub async fn unregister(
        &self,
        session: i64,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<bool, ClientError> {
        let req = pb::UnregisterRequest {
            registry: registry.into(),
            key: key.into(),
            session_id: session,
        };
        let r = self
            .unary("unregister", CallKind::Write, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.unregister(r).await }
            })
            .await?;
        Ok(r.unregistered)
    }

    /// Compare-and-set the session's own entry (server-side, atomic).
    pub async fn update_value(
        &self,
        session: i64,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Updated, ClientError> {
        use pb::update_value_response::Outcome;
        let req = pb::UpdateValueRequest {
            registry: registry.into(),
            key: key.into(),
            session_id: session,
            expected,
            value: value.into(),
        };
        let r = self
            .unary("update value", CallKind::Write, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.update_value(r).await }
            })
            .await?;
        Ok(match Outcome::try_from(r.outcome) {
            Ok(Outcome::Updated) => Updated::Updated {
                revision: r.revision,
                previous: r.value,
            },
            Ok(Outcome::ValueMismatch) => Updated::Mismatch { current: r.value },
            _ => Updated::NotRegistered,
        })
    }

    /// Every entry of `key`, oldest first (linearizable).
    pub async fn lookup(
        &self,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Vec<Entry>, ClientError> {
        let req = pb::LookupRequest {
            registry: registry.into(),
            key: key.into(),
        };
        let r = self
            .unary("lookup", CallKind::Read, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.lookup(r).await }
            })
            .await?;
        Ok(r.entries.into_iter().map(Entry::from).collect())
    }

    pub async fn count(
        &self,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<i64, ClientError> {
        let req = pb::LookupRequest {
            registry: registry.into(),
            key: key.into(),
        };
        let r = self
            .unary("count", CallKind::Read, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.count(r).await }
            })
            .await?;
        Ok(r.count)
    }

    /// The keys `session` holds in `registry`.
    pub async fn registry_keys(
        &self,
        registry: impl Into<Vec<u8>>,
        session: i64,
    ) -> Result<Vec<Vec<u8>>, ClientError> {
        let req = pb::KeysRequest {
            registry: registry.into(),
            session_id: session,
        };
        let r = self
            .unary("keys", CallKind::Read, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.keys(r).await }
            })
            .await?;
        Ok(r.keys)
    }

    /// Entries whose key starts with `key_prefix`, a page at a time.
    pub async fn list_entries(
        &self,
        registry: impl Into<Vec<u8>>,
        key_prefix: impl Into<Vec<u8>>,
        cursor: Option<Vec<u8>>,
        limit: i64,
    ) -> Result<Page, ClientError> {
        let req = pb::ListRequest {
            registry: registry.into(),
            key_prefix: key_prefix.into(),
            cursor: cursor.unwrap_or_default(),
            limit,
        };
        let r = self
            .unary("list", CallKind::Read, req, |ch, r| {
                let mut c = self.registry_raw(ch);
                async move { c.list(r).await }
            })
            .await?;
        Ok(Page {
            entries: r
                .entries
                .into_iter()
                .filter_map(|e| Some((e.key, Entry::from(e.entry?))))
                .collect(),
            next_cursor: (!r.next_cursor.is_empty()).then_some(r.next_cursor),
        })
    }

    /// Watch a registry (or one key when `key` is non-empty) from
    /// `start_revision` (0: from now on).
    pub async fn watch_registry(
        &self,
        registry: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        start_revision: i64,
    ) -> Result<RegistryWatch, ClientError> {
        let req = pb::WatchRequest {
            registry: registry.into(),
            key: key.into(),
            start_revision,
        };
        let inbound = self
            .with_retry("registry watch", CallKind::Read, |ch, _| {
                let mut c = self.registry_raw(ch);
                let req = req.clone();
                async move { c.watch(req).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(RegistryWatch {
            inbound,
            last_revision: start_revision.saturating_sub(1),
        })
    }
}
