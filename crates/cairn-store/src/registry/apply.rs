//! Applying registry commands: validate, read, decide, write one revision.

use super::keys::{self, QueueKind, MAX_NAME_BYTES};
use super::read;
use super::{RegistryCommand as C, RegistryError, RegistryMode, RegistryResult as R};
use crate::command::PutRequest;
use crate::kv::Event;
use crate::store::Store;

type Refusal = Result<(), RegistryError>;

fn invalid(what: &str, why: &str) -> RegistryError {
    RegistryError::Invalid(format!("{what}: {why}"))
}

fn check_name(what: &'static str, name: &[u8]) -> Refusal {
    if name.is_empty() {
        return Err(invalid(what, "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(invalid(what, "longer than 1024 bytes"));
    }
    Ok(())
}

fn check_registry_name(name: &[u8]) -> Refusal {
    check_name("registry name", name)?;
    // Length is checked above; what is left of the rule is the '/'.
    if !keys::is_registry_name(name) {
        return Err(invalid("registry name", "must not contain '/'"));
    }
    Ok(())
}

fn check_session(store: &Store, session: i64) -> Refusal {
    if store.lease_record(session).is_none() {
        return Err(RegistryError::SessionNotFound);
    }
    Ok(())
}

/// Validate a command that names a registry, key and session; return the
/// registry's mode.
fn check_entry_command(
    store: &Store,
    registry: &[u8],
    key: &[u8],
    session: i64,
) -> Result<RegistryMode, RegistryError> {
    check_registry_name(registry)?;
    check_name("key", key)?;
    let mode = read::mode(store, registry).ok_or(RegistryError::UnknownRegistry)?;
    check_session(store, session)?;
    Ok(mode)
}

fn put(key: Vec<u8>, value: Vec<u8>, lease: i64) -> PutRequest {
    PutRequest {
        key,
        value,
        lease,
        ..Default::default()
    }
}

/// Apply one registry command. Refusals change nothing.
pub fn apply(store: &mut Store, cmd: &C, events: &mut Vec<Event>) -> R {
    match apply_checked(store, cmd, events) {
        Ok(r) => r,
        Err(e) => R::Refused(e),
    }
}

fn apply_checked(store: &mut Store, cmd: &C, events: &mut Vec<Event>) -> Result<R, RegistryError> {
    if cmd.adds_data() && store.space_exceeded() {
        return Err(RegistryError::NoSpace);
    }
    match cmd {
        C::CreateRegistry { registry, mode } => {
            check_registry_name(registry)?;
            match read::mode(store, registry) {
                Some(existing) if existing == *mode => Ok(R::AlreadyExists {
                    revision: store.revision(),
                }),
                Some(existing) => Err(RegistryError::ModeConflict { existing }),
                None => {
                    let p = put(keys::mode_key(registry), mode.as_bytes().to_vec(), 0);
                    let revision = store.write_reserved(vec![p], &[], events);
                    Ok(R::Created { revision })
                }
            }
        }
        C::Register {
            registry,
            key,
            value,
            session,
        } => {
            let mode = check_entry_command(store, registry, key, *session)?;
            let entries = read::lookup(store, registry, key);
            Ok(register(
                store, mode, registry, key, value, *session, &entries, events,
            ))
        }
        C::RegisterOrGet {
            registry,
            key,
            value,
            session,
        } => {
            let mode = check_entry_command(store, registry, key, *session)?;
            let entries = read::lookup(store, registry, key);
            if !entries.is_empty() {
                return Ok(R::Existing {
                    revision: store.revision(),
                    entries,
                });
            }
            Ok(register(
                store, mode, registry, key, value, *session, &entries, events,
            ))
        }
        C::Unregister {
            registry,
            key,
            session,
        } => {
            check_entry_command(store, registry, key, *session)?;
            if !read::lookup(store, registry, key)
                .iter()
                .any(|e| e.owner == *session)
            {
                return Ok(R::NotRegistered);
            }
            let k = keys::entry_key(registry, key, *session);
            let revision = store.write_reserved(Vec::new(), &[k], events);
            Ok(R::Unregistered { revision })
        }
        C::UpdateValue {
            registry,
            key,
            session,
            expected,
            value,
        } => {
            check_entry_command(store, registry, key, *session)?;
            let Some(own) = read::lookup(store, registry, key)
                .into_iter()
                .find(|e| e.owner == *session)
            else {
                return Ok(R::NotRegistered);
            };
            if expected.as_ref().is_some_and(|e| *e != own.value) {
                return Ok(R::ValueMismatch { current: own.value });
            }
            let k = keys::entry_key(registry, key, *session);
            let revision = store.write_reserved(vec![put(k, value.clone(), *session)], &[], events);
            Ok(R::Updated {
                revision,
                previous: own.value,
            })
        }
        C::Join {
            kind,
            name,
            session,
            value,
        } => {
            check_name("name", name)?;
            check_session(store, *session)?;
            join(store, *kind, name, *session, value, events)
        }
        C::Leave {
            kind,
            name,
            session,
            token,
        } => {
            check_name("name", name)?;
            check_session(store, *session)?;
            Ok(leave(
                store,
                *kind,
                name,
                *session,
                *token,
                i64::MAX,
                events,
            ))
        }
        C::Abandon {
            kind,
            name,
            session,
            token,
            joined_at,
        } => {
            check_name("name", name)?;
            check_session(store, *session)?;
            Ok(leave(
                store, *kind, name, *session, *token, *joined_at, events,
            ))
        }
        C::Proclaim {
            name,
            session,
            token,
            value,
        } => {
            check_name("name", name)?;
            check_session(store, *session)?;
            let queue = read::queue(store, QueueKind::Election, name);
            if !queue
                .iter()
                .any(|w| w.session == *session && w.token == *token)
            {
                return Ok(R::NotHeld);
            }
            if queue.first().is_none_or(|w| w.session != *session) {
                return Ok(R::NotLeader);
            }
            let k = keys::queue_key(QueueKind::Election, name, *session);
            let revision = store.write_reserved(vec![put(k, value.clone(), *session)], &[], events);
            Ok(R::Proclaimed { revision })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn register(
    store: &mut Store,
    mode: RegistryMode,
    registry: &[u8],
    key: &[u8],
    value: &[u8],
    session: i64,
    entries: &[super::Entry],
    events: &mut Vec<Event>,
) -> R {
    let own = entries.iter().find(|e| e.owner == session);
    if mode == RegistryMode::Unique {
        if let Some(first) = entries.first() {
            return R::AlreadyRegistered {
                owner: first.owner,
                value: first.value.clone(),
            };
        }
    }
    let previous = own.map(|e| e.value.clone());
    let k = keys::entry_key(registry, key, session);
    let revision = store.write_reserved(vec![put(k, value.to_vec(), session)], &[], events);
    R::Registered { revision, previous }
}

/// Removes `session`'s place in a queue if it has `token` and was last
/// written at or before `written_by` (`i64::MAX`: whenever).
fn leave(
    store: &mut Store,
    kind: QueueKind,
    name: &[u8],
    session: i64,
    token: i64,
    written_by: i64,
    events: &mut Vec<Event>,
) -> R {
    let queue = read::queue(store, kind, name);
    let held = queue
        .iter()
        .any(|w| w.session == session && w.token == token && w.mod_revision <= written_by);
    if !held {
        return R::NotHeld;
    }
    let k = keys::queue_key(kind, name, session);
    let revision = store.write_reserved(Vec::new(), &[k], events);
    R::Left { revision }
}

/// Take a place in the queue, or report the place the session has.
fn join(
    store: &mut Store,
    kind: QueueKind,
    name: &[u8],
    session: i64,
    value: &[u8],
    events: &mut Vec<Event>,
) -> Result<R, RegistryError> {
    let queue = read::queue(store, kind, name);
    if let Some(pos) = queue.iter().position(|w| w.session == session) {
        // Joined again (a retry on another connection): the place is kept,
        // and written again with its value, so that an `Abandon` of an
        // earlier call that joined it does not take it from this one.
        let w = &queue[pos];
        let k = keys::queue_key(kind, name, session);
        let revision = store.write_reserved(vec![put(k, w.value.clone(), session)], &[], events);
        return Ok(R::Joined {
            revision,
            token: w.token,
            head: pos == 0,
        });
    }
    let k = keys::queue_key(kind, name, session);
    let revision = store.write_reserved(vec![put(k, value.to_vec(), session)], &[], events);
    Ok(R::Joined {
        revision,
        token: revision,
        head: queue.is_empty(),
    })
}
