//! The Cairn server: one member of a Cairn cluster.
//!
//! Architecture invariant: only this crate (and `cairn-proto`) knows gRPC
//! and the etcd wire types; it converts them to `cairn_store` types at the
//! edge. The store it drives stays free of IO, clocks and randomness.

pub mod auth;
pub mod authority_fix;
pub mod clock;
pub mod compactor;
pub mod config;
pub mod corruption;
pub mod error;
pub mod initial_check;
pub mod kv_hash;
pub mod leader_hint;
pub mod node;
pub mod proposer;
pub mod require_leader;
pub mod restore;
pub mod saved_clock;
pub mod watch_hub;

pub use config::ServerConfig;
pub use error::ServerError;
pub use node::Node;
pub mod serve;
pub mod services;
pub mod tls;
