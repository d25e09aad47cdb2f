//! The registry: named entries, locks and elections owned by sessions.
//!
//! A session is a lease; every record a session owns is a key attached to
//! that lease (layout in [`keys`]), so when the session ends (revoke or
//! expiry) the lease machinery deletes all of them in one revision. Each
//! [`RegistryCommand`] is applied atomically: it reads the keyspace, decides,
//! and writes at most one revision. No clock and no liveness check is
//! involved: a session is alive exactly while its lease exists.

mod apply;
pub mod keys;
pub mod read;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use apply::apply;
pub use keys::{is_registry_name, is_reserved, QueueKind, MAX_NAME_BYTES, RESERVED_PREFIX};
pub use read::{Entry, Page, Waiter};

/// How many entries one key of a registry may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryMode {
    /// One owner per key.
    Unique,
    /// Any number of sessions per key, one entry per (key, session).
    Duplicate,
}

impl RegistryMode {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            RegistryMode::Unique => b"unique",
            RegistryMode::Duplicate => b"duplicate",
        }
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            b"unique" => Some(RegistryMode::Unique),
            b"duplicate" => Some(RegistryMode::Duplicate),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    /// Create a registry; creating it again with the same mode is a no-op.
    CreateRegistry {
        registry: Vec<u8>,
        mode: RegistryMode,
    },
    /// Add `session`'s entry for `key`. Unique mode: refused with the
    /// current owner if any entry exists. Duplicate mode: a second
    /// register by the same session replaces its value.
    Register {
        registry: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
        session: i64,
    },
    /// Register unless the key already has entries; then return them
    /// ("start or find the existing one").
    RegisterOrGet {
        registry: Vec<u8>,
        key: Vec<u8>,
        value: Vec<u8>,
        session: i64,
    },
    /// Remove `session`'s own entry for `key` (never another's).
    Unregister {
        registry: Vec<u8>,
        key: Vec<u8>,
        session: i64,
    },
    /// Replace the value of `session`'s own entry, if it currently equals
    /// `expected` (when given): compare-and-set in one command.
    UpdateValue {
        registry: Vec<u8>,
        key: Vec<u8>,
        session: i64,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    },
    /// Queue `session` for a lock or as an election candidate. The oldest
    /// waiter holds the lock / leads; its token is its create revision.
    Join {
        kind: QueueKind,
        name: Vec<u8>,
        session: i64,
        value: Vec<u8>,
    },
    /// Leave a queue (unlock, resign), only with the token it was given.
    Leave {
        kind: QueueKind,
        name: Vec<u8>,
        session: i64,
        token: i64,
    },
    /// The election leader updates its value.
    Proclaim {
        name: Vec<u8>,
        session: i64,
        token: i64,
        value: Vec<u8>,
    },
    /// Leave a queue place whose wait was abandoned (the client went away
    /// or the call failed), unless the place was joined again or written
    /// after `joined_at`, the revision the abandoned call's `Join` answered
    /// with. A session's place is one key, and joining is idempotent: a
    /// client that retries on another connection gets the same place, and
    /// a plain `Leave` from the abandoned call landing after that retry's
    /// `Join` took the place from under it (the retry failed as if its
    /// session had ended, or was told it held the lock and then did not).
    /// Last in the enum: log entries written before it decode as before.
    Abandon {
        kind: QueueKind,
        name: Vec<u8>,
        session: i64,
        token: i64,
        joined_at: i64,
    },
}

impl RegistryCommand {
    /// True for commands that can add data, refused while over quota
    /// (unregister and leave must stay possible then: they free space).
    pub fn adds_data(&self) -> bool {
        !matches!(
            self,
            RegistryCommand::Unregister { .. }
                | RegistryCommand::Leave { .. }
                | RegistryCommand::Abandon { .. }
        )
    }

    /// The operation's name, for logs (never keys or values).
    pub fn op_name(&self) -> &'static str {
        match self {
            RegistryCommand::CreateRegistry { .. } => "CreateRegistry",
            RegistryCommand::Register { .. } => "Register",
            RegistryCommand::RegisterOrGet { .. } => "RegisterOrGet",
            RegistryCommand::Unregister { .. } => "Unregister",
            RegistryCommand::UpdateValue { .. } => "UpdateValue",
            RegistryCommand::Join { .. } => "Join",
            RegistryCommand::Leave { .. } => "Leave",
            RegistryCommand::Proclaim { .. } => "Proclaim",
            RegistryCommand::Abandon { .. } => "Abandon",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryResult {
    Created {
        revision: i64,
    },
    /// The registry exists already with the mode asked for.
    AlreadyExists {
        revision: i64,
    },
    /// The entry was written. `previous` is the value a duplicate-mode
    /// re-register by the same session replaced.
    Registered {
        revision: i64,
        previous: Option<Vec<u8>>,
    },
    /// Unique mode: the key has an owner.
    AlreadyRegistered {
        owner: i64,
        value: Vec<u8>,
    },
    /// `RegisterOrGet` found entries for the key and wrote nothing.
    Existing {
        revision: i64,
        entries: Vec<Entry>,
    },
    Unregistered {
        revision: i64,
    },
    /// The session has no entry for that key.
    NotRegistered,
    Updated {
        revision: i64,
        previous: Vec<u8>,
    },
    /// `UpdateValue`'s `expected` did not match.
    ValueMismatch {
        current: Vec<u8>,
    },
    /// In the queue with fencing token `token`; `head` when it holds the
    /// lock (leads) right now. `revision` is the store revision after.
    Joined {
        revision: i64,
        token: i64,
        head: bool,
    },
    Left {
        revision: i64,
    },
    /// No queue entry of this session with that token.
    NotHeld,
    Proclaimed {
        revision: i64,
    },
    /// The candidate is queued but does not lead.
    NotLeader,
    Refused(RegistryError),
}

/// Why a registry command was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("registry not found")]
    UnknownRegistry,
    #[error("registry exists with mode {existing:?}")]
    ModeConflict { existing: RegistryMode },
    #[error("session not found (expired or closed)")]
    SessionNotFound,
    /// A name or key is empty, too long or badly formed.
    #[error("invalid {0}")]
    Invalid(String),
    #[error("database space exceeded")]
    NoSpace,
}
