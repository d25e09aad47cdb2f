//! Generates the wire types from `proto/` with protox (pure Rust; no
//! `protoc` needed) and tonic-prost-build.

use std::env;
use std::path::PathBuf;

use prost::Message as _;

/// Every file we compile, relative to `proto/`. Imported files would be
/// pulled in anyway; listing them keeps the descriptor set complete.
const PROTOS: &[&str] = &[
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "cairn/raft/v1/raft.proto",
    "cairn/v1/registry.proto",
    "cairn/v1/claims.proto",
];

/// Name of the encoded `FileDescriptorSet` in `OUT_DIR`.
const DESCRIPTOR_FILE: &str = "cairn_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }

    let fds = protox::compile(PROTOS, [&proto_dir])?;

    // The descriptor set offered for gRPC reflection: no source info, to keep
    // it small.
    let mut reflection = fds.clone();
    for file in &mut reflection.file {
        file.source_code_info = None;
    }
    std::fs::write(out_dir.join(DESCRIPTOR_FILE), reflection.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    Ok(())
}
