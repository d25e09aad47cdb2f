//! Cairn's native registry API (`cairn.v1`): sessions with automatic
//! keepalive, unique/duplicate registries, locks and elections with
//! fencing tokens. Only Cairn serves it (etcd does not).
//!
//! ```no_run
//! # async fn demo(client: cairn_client::Client) -> Result<(), cairn_client::ClientError> {
//! use cairn_client::registry::{Mode, Registered, Session};
//! let session = Session::create(&client, 10).await?;
//! client.create_registry("services", Mode::Unique).await?;
//! match client.register(session.id(), "services", "db", "10.0.0.7:5432").await? {
//!     Registered::Registered { .. } => println!("we are the db"),
//!     Registered::AlreadyRegistered { owner, .. } => println!("db is session {owner:x}"),
//!     Registered::Existing(_) => unreachable!("only register_or_get finds existing"),
//! }
//! session.close().await?; // the name goes at once
//! # Ok(()) }
//! ```

mod names;
mod queue;
mod session;

pub use names::{EventKind, RegistryEvent, RegistryWatch};
pub use queue::{LeaderObserver, LockGuard};
pub use session::{Session, SessionState};

use cairn_proto::cairn::v1 as pb;
use tonic::transport::Channel;

use crate::auth::AuthChannel;
use crate::client::Client;

/// How many entries a key of a registry may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Unique,
    Duplicate,
}

/// One (key, session) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The owning session.
    pub owner: i64,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl From<pb::Entry> for Entry {
    fn from(e: pb::Entry) -> Self {
        Entry {
            owner: e.owner,
            value: e.value,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
        }
    }
}

/// What `register` / `register_or_get` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Written. `previous`: the caller's value it replaced (duplicate mode).
    Registered {
        revision: i64,
        previous: Option<Vec<u8>>,
    },
    /// Unique mode: the key has another (or the caller's own) entry.
    AlreadyRegistered { owner: i64, value: Vec<u8> },
    /// `register_or_get`: the key had entries; nothing was written.
    Existing(Vec<Entry>),
}

/// What `update_value` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    Updated {
        revision: i64,
        previous: Vec<u8>,
    },
    NotRegistered,
    /// `expected` did not match; the current value.
    Mismatch {
        current: Vec<u8>,
    },
}

/// One page of [`Client::list_entries`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub entries: Vec<(Vec<u8>, Entry)>,
    /// Pass to the next call; `None` after the last page.
    pub next_cursor: Option<Vec<u8>>,
}

/// The leader of an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub session: i64,
    pub value: Vec<u8>,
    /// Its fencing token (the revision that queued it).
    pub fencing_token: i64,
}

impl From<pb::ElectionLeader> for Leader {
    fn from(l: pb::ElectionLeader) -> Self {
        Leader {
            session: l.session_id,
            value: l.value,
            fencing_token: l.fencing_token,
        }
    }
}

impl Client {
    pub(crate) fn session_raw(
        &self,
        ch: Channel,
    ) -> pb::session_client::SessionClient<AuthChannel> {
        let o = &self.inner.options;
        pb::session_client::SessionClient::new(self.authed(ch))
            .max_decoding_message_size(o.max_response_bytes)
            .max_encoding_message_size(o.max_request_bytes)
    }

    pub(crate) fn registry_raw(
        &self,
        ch: Channel,
    ) -> pb::registry_client::RegistryClient<AuthChannel> {
        let o = &self.inner.options;
        pb::registry_client::RegistryClient::new(self.authed(ch))
            .max_decoding_message_size(o.max_response_bytes)
            .max_encoding_message_size(o.max_request_bytes)
    }

    pub(crate) fn lock_raw(&self, ch: Channel) -> pb::lock_client::LockClient<AuthChannel> {
        let o = &self.inner.options;
        pb::lock_client::LockClient::new(self.authed(ch))
            .max_decoding_message_size(o.max_response_bytes)
            .max_encoding_message_size(o.max_request_bytes)
    }

    pub(crate) fn election_raw(
        &self,
        ch: Channel,
    ) -> pb::election_client::ElectionClient<AuthChannel> {
        let o = &self.inner.options;
        pb::election_client::ElectionClient::new(self.authed(ch))
            .max_decoding_message_size(o.max_response_bytes)
            .max_encoding_message_size(o.max_request_bytes)
    }
}
