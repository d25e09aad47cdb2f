//! Protobuf and gRPC wire types for Cairn.
//!
//! * The etcd v3 client API — [`mvccpb`], [`authpb`], [`etcdserverpb`],
//!   [`v3lockpb`], [`v3electionpb`] — with the same packages, services,
//!   messages and field numbers as etcd, so etcdctl and etcd client
//!   libraries talk to Cairn unchanged.
//! * Cairn's own peer transport, [`raft::v1`].
//! * [`status`]: how callers read a failed call's status.
//!
//! Each module holds the prost messages of one protobuf package plus the
//! tonic `*_client` and `*_server` modules for its services. Modules are
//! nested as the packages are, so the generated cross-package paths (e.g.
//! `super::mvccpb::KeyValue` inside [`etcdserverpb`]) resolve.

pub mod status;

/// Keys, values and watch events (`mvccpb`).
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// Users, roles and permissions (`authpb`).
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// The etcd v3 services: KV, Watch, Lease, Cluster, Maintenance, Auth
/// (`etcdserverpb`).
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// The Lock service used by `etcdctl lock` (`v3lockpb`).
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// The Election service used by `etcdctl elect` (`v3electionpb`).
#[allow(clippy::all, clippy::pedantic, clippy::nursery)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Cairn's peer-to-peer transport (`cairn.raft.v1`).
pub mod raft {
    /// Version 1 of the peer transport.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
    pub mod v1 {
        tonic::include_proto!("cairn.raft.v1");
    }
}

/// Cairn's native API (`cairn.v1`).
pub mod cairn {
    /// Version 1: sessions, registries, locks and elections
    /// (`registry.proto`), block claims (`claims.proto`).
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)]
    pub mod v1 {
        tonic::include_proto!("cairn.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file in this crate,
/// for serving gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptor.bin"));
