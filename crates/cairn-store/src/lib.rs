//! Cairn's replicated state machine.
//!
//! Architecture invariant: this crate does no IO, reads no clock and draws no
//! random numbers. Time arrives as `Command::Tick`; everything else is a
//! function of the commands applied so far. Two replicas that apply the same
//! commands hold byte-identical state.

pub mod auth;
pub mod claims;
pub mod command;
pub mod error;
pub mod history;
pub mod kv;
pub mod kv_hash;

pub use command::*;
pub use error::StoreError;
pub use kv::{prefix_end, Event, EventKind, KeyRange, KeyValue};
pub mod lease;
pub mod mvcc;
pub mod registry;
pub mod revision;
mod revision_log;
pub mod store;
pub mod txn;

pub use history::HistoryValues;
pub use kv_hash::{HashCursor, HashProgress};
pub use lease::{LeaseRecord, MAX_LEASE_TTL_SECS, MIN_LEASE_TTL_SECS};
pub use mvcc::Record;
pub use revision::Revision;
pub use store::{
    Applied, Changes, LeaseInfo, Store, StoreMeta, StoreSnapshot, StoreSnapshotBeforeAuth,
};

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod kv_hash_tests;
#[cfg(test)]
mod tests;
