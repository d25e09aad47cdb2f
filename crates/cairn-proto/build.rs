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

/// Packages that also get proto3 JSON (serde) impls: the etcd API, served
/// as JSON by the gateway.
const JSON_PACKAGES: &[&str] = &[
    ".mvccpb",
    ".authpb",
    ".etcdserverpb",
    ".v3lockpb",
    ".v3electionpb",
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

    // proto3 JSON (serde) for the etcd packages, as etcd's gateway speaks
    // it: the proto field names (`create_revision`), 64-bit integers as
    // strings, bytes as base64, defaults left out. Both the proto and the
    // JSON (camelCase) names are accepted on input.
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .preserve_proto_field_names()
        .out_dir(&out_dir)
        .build(JSON_PACKAGES)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    Ok(())
}
