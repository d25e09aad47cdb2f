//! `cairn.v1.Registry`: unique and duplicate registries of named entries.

use std::sync::Arc;

use cairn_proto::cairn::v1 as pb;
use cairn_proto::cairn::v1::registry_server::Registry;
use cairn_store::registry::RegistryResult as R;
use cairn_store::registry::{keys, read, Entry, RegistryCommand as C, RegistryMode};
use cairn_store::{Event, EventKind, KeyRange};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::wait::{stopped, Watch};
use super::{apply, check_size, unexpected};
use crate::auth::Caller;
use crate::node::Node;
use crate::services::Limits;
use crate::watch_hub::WatchMessage;

/// Entries per `List` page when the request names no limit, and the most
/// one page may hold.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Watch responses queued per stream.
const WATCH_STREAM_QUEUE: usize = 16;

pub struct RegistryService {
    node: Arc<Node>,
    limits: Limits,
}

impl RegistryService {
    pub fn new(node: Arc<Node>, limits: Limits) -> Self {
        RegistryService { node, limits }
    }

    async fn register(
        &self,
        caller: &Caller,
        req: pb::RegisterRequest,
        or_get: bool,
    ) -> Result<pb::RegisterResponse, Status> {
        check_size(&self.limits, &req)?;
        let (registry, key, value, session) = (req.registry, req.key, req.value, req.session_id);
        let cmd = if or_get {
            C::RegisterOrGet {
                registry,
                key,
                value,
                session,
            }
        } else {
            C::Register {
                registry,
                key,
                value,
                session,
            }
        };
        use pb::register_response::Outcome;
        Ok(match apply(&self.node, caller, cmd).await? {
            R::Registered { revision, previous } => pb::RegisterResponse {
                outcome: Outcome::Registered as i32,
                revision,
                previous,
                ..Default::default()
            },
            R::AlreadyRegistered { owner, value } => pb::RegisterResponse {
                outcome: Outcome::AlreadyRegistered as i32,
                revision: self.node.store().revision(),
                owner,
                owner_value: value,
                ..Default::default()
            },
            R::Existing { revision, entries } => pb::RegisterResponse {
                outcome: Outcome::Existing as i32,
                revision,
                entries: entries.into_iter().map(entry_to_wire).collect(),
                ..Default::default()
            },
            other => return Err(unexpected("register", &other)),
        })
    }
}

fn entry_to_wire(e: Entry) -> pb::Entry {
    pb::Entry {
        owner: e.owner,
        value: e.value,
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
    }
}

/// A keyspace event under a registry as a registry event; `only_key`
/// keeps one key's entries.
fn event_to_wire(registry: &[u8], only_key: &[u8], ev: &Event) -> Option<pb::RegistryEvent> {
    use pb::registry_event::Kind;
    let (key, owner) = keys::entry_of(registry, &ev.kv.key)?;
    if !only_key.is_empty() && key != only_key {
        return None;
    }
    let previous = ev.prev_kv.as_ref().map(|p| p.value.clone());
    let (kind, value, previous_value) = match (ev.kind, previous) {
        (EventKind::Put, None) => (Kind::Registered, ev.kv.value.clone(), Vec::new()),
        (EventKind::Put, Some(prev)) => (Kind::ValueChanged, ev.kv.value.clone(), prev),
        (EventKind::Delete, prev) => (Kind::Unregistered, prev.unwrap_or_default(), Vec::new()),
    };
    Some(pb::RegistryEvent {
        kind: kind as i32,
        key: key.to_vec(),
        owner,
        value,
        previous_value,
        revision: ev.kv.mod_revision,
    })
}

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn create_registry(
        &self,
        request: Request<pb::CreateRegistryRequest>,
    ) -> Result<Response<pb::CreateRegistryResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let mode = match pb::Mode::try_from(req.mode) {
            Ok(pb::Mode::Unique) => RegistryMode::Unique,
            Ok(pb::Mode::Duplicate) => RegistryMode::Duplicate,
            _ => {
                return Err(Status::invalid_argument(
                    "cairn: mode must be UNIQUE or DUPLICATE",
                ))
            }
        };
        let cmd = C::CreateRegistry {
            registry: req.registry,
            mode,
        };
        match apply(&self.node, &caller, cmd).await? {
            R::Created { revision } => Ok(Response::new(pb::CreateRegistryResponse {
                created: true,
                revision,
            })),
            R::AlreadyExists { revision } => Ok(Response::new(pb::CreateRegistryResponse {
                created: false,
                revision,
            })),
            other => Err(unexpected("create registry", &other)),
        }
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        Ok(Response::new(
            RegistryService::register(self, &caller, request.into_inner(), false).await?,
        ))
    }

    async fn register_or_get(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        Ok(Response::new(
            RegistryService::register(self, &caller, request.into_inner(), true).await?,
        ))
    }

    async fn unregister(
        &self,
        request: Request<pb::UnregisterRequest>,
    ) -> Result<Response<pb::UnregisterResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let cmd = C::Unregister {
            registry: req.registry,
            key: req.key,
            session: req.session_id,
        };
        match apply(&self.node, &caller, cmd).await? {
            R::Unregistered { revision } => Ok(Response::new(pb::UnregisterResponse {
                unregistered: true,
                revision,
            })),
            R::NotRegistered => Ok(Response::new(pb::UnregisterResponse {
                unregistered: false,
                revision: self.node.store().revision(),
            })),
            other => Err(unexpected("unregister", &other)),
        }
    }

    async fn update_value(
        &self,
        request: Request<pb::UpdateValueRequest>,
    ) -> Result<Response<pb::UpdateValueResponse>, Status> {
        let caller = super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        check_size(&self.limits, &req)?;
        let cmd = C::UpdateValue {
            registry: req.registry,
            key: req.key,
            session: req.session_id,
            expected: req.expected,
            value: req.value,
        };
        use pb::update_value_response::Outcome;
        let revision_now = || self.node.store().revision();
        let resp = match apply(&self.node, &caller, cmd).await? {
            R::Updated { revision, previous } => pb::UpdateValueResponse {
                outcome: Outcome::Updated as i32,
                revision,
                value: previous,
            },
            R::NotRegistered => pb::UpdateValueResponse {
                outcome: Outcome::NotRegistered as i32,
                revision: revision_now(),
                value: Vec::new(),
            },
            R::ValueMismatch { current } => pb::UpdateValueResponse {
                outcome: Outcome::ValueMismatch as i32,
                revision: revision_now(),
                value: current,
            },
            other => return Err(unexpected("update value", &other)),
        };
        Ok(Response::new(resp))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let store = self.node.store();
        Ok(Response::new(pb::LookupResponse {
            entries: read::lookup(&store, &req.registry, &req.key)
                .into_iter()
                .map(entry_to_wire)
                .collect(),
            revision: store.revision(),
        }))
    }

    async fn count(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let store = self.node.store();
        Ok(Response::new(pb::CountResponse {
            count: read::count(&store, &req.registry, &req.key) as i64,
            revision: store.revision(),
        }))
    }

    async fn keys(
        &self,
        request: Request<pb::KeysRequest>,
    ) -> Result<Response<pb::KeysResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        self.node.read_barrier().await?;
        let store = self.node.store();
        Ok(Response::new(pb::KeysResponse {
            keys: read::keys_of(&store, &req.registry, req.session_id),
            revision: store.revision(),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        let limit = match usize::try_from(req.limit) {
            Ok(0) => DEFAULT_PAGE,
            Ok(n) => n.min(MAX_PAGE),
            Err(_) => {
                return Err(Status::invalid_argument(
                    "cairn: limit must not be negative",
                ))
            }
        };
        self.node.read_barrier().await?;
        let store = self.node.store();
        let cursor = (!req.cursor.is_empty()).then_some(req.cursor.as_slice());
        let page = read::list(&store, &req.registry, &req.key_prefix, cursor, limit);
        Ok(Response::new(pb::ListResponse {
            entries: page
                .entries
                .into_iter()
                .map(|(key, e)| pb::KeyEntry {
                    key,
                    entry: Some(entry_to_wire(e)),
                })
                .collect(),
            next_cursor: page.next.unwrap_or_default(),
            revision: store.revision(),
        }))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        super::caller(&self.node, &request).await?;
        let req = request.into_inner();
        // A name with '/' would watch another registry's entries.
        if !keys::is_registry_name(&req.registry) {
            return Err(Status::invalid_argument(
                "cairn: invalid registry name: 1 to 1024 bytes without '/'",
            ));
        }
        let range = if req.key.is_empty() {
            KeyRange::prefix(keys::registry_prefix(&req.registry))
        } else {
            KeyRange::prefix(keys::name_prefix(&req.registry, &req.key))
        };
        let mut watch = Watch::new(&self.node, &[range], req.start_revision)?;
        let (tx, rx) = mpsc::channel(WATCH_STREAM_QUEUE);
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = tx.closed() => return,
                    _ = stopped(&node) => return,
                    m = watch.next() => m,
                };
                let resp = match msg {
                    Ok(WatchMessage::Events {
                        revision, events, ..
                    }) => {
                        let events: Vec<_> = events
                            .iter()
                            .filter_map(|e| event_to_wire(&req.registry, &req.key, e))
                            .collect();
                        if events.is_empty() {
                            continue;
                        }
                        Ok(pb::WatchResponse { events, revision })
                    }
                    Ok(WatchMessage::Compacted { .. }) => continue,
                    Err(e) => Err(e),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
