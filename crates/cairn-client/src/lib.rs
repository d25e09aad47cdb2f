//! Rust client for Cairn, a replicated registry speaking the etcd v3 gRPC
//! API (so it also talks to etcd).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::ClientError> {
//! use cairn_client::{Client, ClientOptions, GetOptions, PutOptions};
//! let client = Client::connect(
//!     vec!["http://127.0.0.1:2379".into(), "http://127.0.0.1:22379".into()],
//!     ClientOptions::default(),
//! )
//! .await?;
//! client.put("greeting", "hello", PutOptions::default()).await?;
//! let r = client.get("greet", GetOptions::prefix()).await?;
//! assert_eq!(r.kvs[0].value, b"hello");
//! # Ok(()) }
//! ```
//!
//! # Failover and retries
//!
//! The client keeps a lazily connected channel per endpoint and sends each
//! call to the current one. A failed try moves it to the next endpoint (or,
//! when a Cairn member names the leader in the `cairn-leader` metadata, to
//! the leader) and retries after an exponential, capped, jittered backoff,
//! within [`RetryPolicy::max_attempts`] tries and
//! [`ClientOptions::request_timeout`] overall. A follower's answers name
//! the leader (`cairn-leader` response header); the client then sends
//! everything there, so writes skip the follower's forwarding hop
//! ([`ClientOptions::follow_leader`], on by default).
//!
//! Reads are retried on any `Unavailable`. Writes are retried only when
//! they surely were not delivered (connection failures, `etcdserver: no
//! leader`, `etcdserver: not leader`); a write whose outcome is unknown
//! (`leader changed`, `request timed out`, a lost connection or a deadline)
//! fails with [`ClientError::OutcomeUnknown`] and is never repeated.
//!
//! # Authentication
//!
//! On a cluster with etcd authentication on, set
//! [`ClientOptions::credentials`]: the client logs in before its first
//! call, sends the token with every call and stream (one token for every
//! endpoint), and logs in again once when a member refuses it (expired,
//! password changed), repeating the refused call. The `auth_*`, `user_*`
//! and `role_*` methods manage users, roles and permissions.

mod auth;
pub mod claims;
mod client;
mod endpoints;
mod error;
mod lease;
mod options;
mod range;
pub mod registry;
mod retry;
mod snapshot;
mod txn;
mod types;
mod watch;

pub use auth::{
    AuthChannel, AuthStatusResponse, Permission, PermissionType, RoleGetResponse, RoleListResponse,
    TokenInterceptor, UserAddOptions, UserGetResponse, UserListResponse, TOKEN_METADATA_KEY,
};
pub use client::Client;
pub use endpoints::normalize_endpoint;
pub use error::ClientError;
pub use lease::{KeepAliveState, LeaseKeepAlive};
pub use options::{ClientOptions, Credentials, RetryPolicy, TlsOptions};
pub use range::prefix_range_end;
pub use retry::LEADER_METADATA_KEY;
pub use snapshot::{
    SnapshotInfo, SnapshotStream, SnapshotVerifier, SNAPSHOT_ALIGN, SNAPSHOT_HASH_LEN,
};
pub use txn::{Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResponse, TxnResponse};
pub use types::*;
pub use watch::WatchStream;

/// The wire types, for use with the raw clients.
pub use cairn_proto as proto;
/// The transport types of the raw clients.
pub use tonic;
