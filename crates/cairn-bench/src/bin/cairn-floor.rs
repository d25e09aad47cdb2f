//! `cairn-floor`: the least one client's replicated write can take on this
//! machine (see `cairn_bench::floor`), to hold `cairn bench`'s put c=1 row
//! and etcd's against.
//!
//! ```text
//! cairn-floor run                      # 3 members, synced writes
//! cairn-floor run --no-sync            # the wake-ups and hops alone
//! cairn-floor run --members 1          # one write + sync, one hop
//! cairn-floor grpc-cluster             # gRPC replicas; prints the leader's
//!                                      # URL for `cairn-bench --workload put`
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_bench::floor::{self, Cluster, ClusterOptions, Disk, Role};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-floor",
    version,
    about = "The floor under one client's replicated write"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a leader and its followers as processes and time writes.
    Run {
        /// Where the replicas' log files go (created if missing).
        #[arg(long, default_value = "target/floor")]
        dir: PathBuf,
        /// Replicas, one of them the leader; odd.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// Writes to time, one at a time.
        #[arg(long, default_value_t = 5_000)]
        writes: u64,
        /// Stop earlier than `--writes` after this long.
        #[arg(long, default_value = "10s", value_parser = cairn_bench::parse_duration)]
        duration: Duration,
        /// Bytes per write (cairn bench's default value size).
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
        /// Each replica's log file, filled with zeros before the run.
        #[arg(long, default_value_t = 64)]
        file_mib: u64,
        /// Do not sync writes.
        #[arg(long)]
        no_sync: bool,
        /// Print one JSON line instead of the table row.
        #[arg(long)]
        json: bool,
    },
    /// Start a leader and its followers speaking etcd's `KV.Put` over
    /// gRPC, print the leader's URL, and keep them until killed (the
    /// replicas end with this process).
    GrpcCluster {
        /// Where the replicas' log files go (created if missing).
        #[arg(long, default_value = "target/floor")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        members: usize,
        #[arg(long, default_value_t = 64)]
        file_mib: u64,
        #[arg(long)]
        no_sync: bool,
    },
    /// One replica (started by `run`); prints its address, then serves.
    Replica {
        /// Its log file.
        #[arg(long)]
        log: PathBuf,
        #[arg(long, default_value_t = 64)]
        file_mib: u64,
        #[arg(long)]
        no_sync: bool,
        /// A follower to replicate to; none makes this replica a follower.
        #[arg(long)]
        follower: Vec<String>,
        /// Serve etcd's `KV.Put` over gRPC instead of the bare framing.
        #[arg(long)]
        grpc: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-floor: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Replica {
            log,
            file_mib,
            no_sync,
            follower,
            grpc,
        } => {
            end_with_parent();
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let disk = Disk {
                path: log,
                file_bytes: file_mib << 20,
                sync: !no_sync,
            };
            if grpc {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                return runtime.block_on(async move {
                    let kv = floor::grpc::FloorReplica::new(&disk, &follower).await?;
                    listener.set_nonblocking(true)?;
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    // Ready only once connected to its followers.
                    println!("{}", listener.local_addr()?);
                    floor::grpc::serve(listener, kv).await
                });
            }
            println!("{}", listener.local_addr()?);
            let role = if follower.is_empty() {
                Role::Follower
            } else {
                Role::Leader {
                    followers: follower,
                }
            };
            floor::serve(listener, &role, &disk)
        }
        Cmd::GrpcCluster {
            dir,
            members,
            file_mib,
            no_sync,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let options = ClusterOptions {
                file_mib,
                sync: !no_sync,
                grpc: true,
            };
            let cluster = Cluster::start(&std::env::current_exe()?, &dir, members, &options)?;
            println!("http://{}", cluster.leader);
            loop {
                std::thread::park();
            }
        }
        Cmd::Run {
            dir,
            members,
            writes,
            duration,
            value_bytes,
            file_mib,
            no_sync,
            json,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let exe = std::env::current_exe()?;
            let options = ClusterOptions {
                file_mib,
                sync: !no_sync,
                grpc: false,
            };
            let cluster = Cluster::start(&exe, &dir, members, &options)?;
            let report = floor::drive(&cluster.leader, writes, value_bytes, duration)?;
            drop(cluster);
            print_report(members, !no_sync, &report, json);
            Ok(())
        }
    }
}

/// One line: JSON (`--json`, beside `cairn-bench`'s rows) or for people.
fn print_report(members: usize, sync: bool, report: &floor::FloorReport, json: bool) {
    let s = report.latency.summary();
    if json {
        let line = serde_json::json!({
            "probe": "floor",
            "members": members,
            "sync": sync,
            "writes": report.writes,
            "ops_per_sec": (report.rate() * 10.0).round() / 10.0,
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
            "mean_ms": (s.mean_ms * 1000.0).round() / 1000.0,
        });
        println!("{line}");
    } else {
        println!(
            "floor members={members} sync={}: {} writes, {:.0}/s, p50 {:.3} ms, p99 {:.3} ms, \
             max {:.3} ms, mean {:.3} ms",
            if sync { "yes" } else { "no" },
            report.writes,
            report.rate(),
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.mean_ms
        );
    }
}

/// A replica is killed when the process that started it ends, however it
/// ends: `grpc-cluster` is stopped with a signal, which runs no destructor.
fn end_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes
    // only this process's own death signal.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}
