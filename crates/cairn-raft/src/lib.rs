//! Cairn's Raft plumbing: the openraft type configuration, the redb-backed
//! log store, and the gRPC transport between peers.

mod apply_thread;
mod claims_rows;
pub mod cluster_check;
pub mod coalesce;
pub mod encoding;
pub mod forward_frame;
pub mod leader_watch;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod peer_service;
pub mod snapshot_data;
pub mod snapshot_file;
pub mod state_machine;
pub mod thread_priority;
pub mod types;
