//! `cairn`: run a member (`cairn serve`) or talk to a cluster, etcdctl
//! style (`cairn get`, `cairn put`, `cairn member list`, ...).

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cmd::GlobalArgs;

/// mimalloc instead of the system allocator: allocation and free were ~14 %
/// of a busy member's CPU under glibc malloc (perf, put c=256). Built with
/// `no_thp` (Cargo.toml), which turns transparent huge pages off for the
/// process: a growing claims map faulted in a 2 MiB page at a time, ~1.3 ms
/// of zeroing inside one apply (1-client offload p99 13 ms, 6–7 without),
/// and a member's peak RSS was 145 MiB instead of 116–119 after put c=64.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: a replicated registry speaking the etcd v3 API"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a member of a Cairn cluster.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Read a key or a range of keys.
    Get(cmd::get::GetArgs),
    /// Write a key.
    Put(cmd::put::PutArgs),
    /// Delete a key or a range of keys.
    Del(cmd::del::DelArgs),
    /// Print the changes to a key or range until interrupted.
    Watch(cmd::watch::WatchArgs),
    /// Discard the key-value history before a revision.
    Compact(cmd::compact::CompactArgs),
    /// Lease commands (IDs in hex).
    #[command(subcommand)]
    Lease(cmd::lease::LeaseCommand),
    /// Cluster membership commands (IDs in hex).
    #[command(subcommand)]
    Member(cmd::member::MemberCommand),
    /// Status of every endpoint.
    Status(cmd::status::StatusArgs),
    /// Alarm commands.
    #[command(subcommand)]
    Alarm(cmd::alarm::AlarmCommand),
    /// Hand leadership to another voting member.
    MoveLeader(cmd::move_leader::MoveLeaderArgs),
    /// Save or restore a backup.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::SnapshotCommand),
    /// Cairn registries: names owned by sessions (unique or duplicate).
    #[command(subcommand)]
    Name(cmd::name::NameCommand),
    /// Block claims: which data blocks are stored or being stored.
    #[command(subcommand)]
    Claims(cmd::claims::ClaimsCommand),
    /// Run COMMAND while holding a lock (fencing token in CAIRN_LOCK_TOKEN).
    Lock(cmd::lock::LockArgs),
    /// Campaign in an election and lead until interrupted.
    Elect(cmd::elect::ElectArgs),
    /// Write a key only with a fencing token no older than any seen before.
    FencedPut(cmd::fenced_put::FencedPutArgs),
    /// Authentication on, off, or its status.
    #[command(subcommand)]
    Auth(cmd::auth::AuthCommand),
    /// User commands (with authentication on, as root).
    #[command(subcommand)]
    User(cmd::user::UserCommand),
    /// Role and permission commands (with authentication on, as root).
    #[command(subcommand)]
    Role(cmd::role::RoleCommand),
    /// Load-test any etcd v3 server (Cairn or etcd) with the same client code.
    Bench(Box<cairn_bench::BenchArgs>),
}

fn main() -> ExitCode {
    // Before parsing: clap reads the `CAIRN_*` variables these set. Still
    // one thread, so setting variables races nothing.
    let etcd_env = if std::env::args().nth(1).as_deref() == Some("serve") {
        let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
        let args: Vec<String> = std::env::args().collect();
        if let Some(file) = cmd::etcd_config_file::path(&args, |name| env.get(name).cloned()) {
            match cmd::etcd_config_file::read(std::path::Path::new(&file)) {
                // The file's settings win over `ETCD_*` variables, as in
                // etcd (which then ignores its variables).
                Ok(vars) => env.extend(vars),
                Err(e) => {
                    eprintln!("Error: --config-file {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let adopted = cmd::etcd_env::adopt(env);
        for (name, value) in &adopted.set {
            std::env::set_var(name, value);
        }
        adopted
    } else {
        cmd::etcd_env::Adopted::default()
    };
    let cli = Cli::parse();
    // Built here rather than by `#[tokio::main]`: a member sizes its
    // runtime from its flags.
    let mut builder = match &cli.command {
        Command::Serve(args) => match cmd::serve::worker_threads(args) {
            // One thread: see `cmd::serve::default_worker_threads`.
            Ok(1) => tokio::runtime::Builder::new_current_thread(),
            Ok(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
            Err(e) => {
                eprintln!("Error: refusing to start: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all();
    match builder.build() {
        Ok(runtime) => runtime.block_on(run(cli, etcd_env)),
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, etcd_env: cmd::etcd_env::Adopted) -> ExitCode {
    let default_level = match &cli.command {
        Command::Serve(args) => args.effective_log_level(),
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_directives(default_level)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    for (name, _) in &etcd_env.set {
        tracing::info!("{name} taken from its ETCD_ form");
    }
    for name in &etcd_env.ignored {
        tracing::warn!("{name} ignored: no such Cairn setting, or set by a CAIRN_ variable");
    }

    let g = &cli.global;
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(*args).await,
        Command::Get(args) => cmd::get::run(g, args).await,
        Command::Put(args) => cmd::put::run(g, args).await,
        Command::Del(args) => cmd::del::run(g, args).await,
        Command::Watch(args) => cmd::watch::run(g, args).await,
        Command::Compact(args) => cmd::compact::run(g, args).await,
        Command::Lease(c) => cmd::lease::run(g, c).await,
        Command::Member(c) => cmd::member::run(g, c).await,
        Command::Status(args) => cmd::status::run(g, args).await,
        Command::Alarm(c) => cmd::alarm::run(g, c).await,
        Command::MoveLeader(args) => cmd::move_leader::run(g, args).await,
        Command::Snapshot(c) => cmd::snapshot::run(g, c).await,
        Command::Name(c) => cmd::name::run(g, c).await,
        Command::Claims(c) => cmd::claims::run(g, c).await,
        Command::Lock(args) => cmd::lock::run(g, args).await,
        Command::Elect(args) => cmd::elect::run(g, args).await,
        Command::FencedPut(args) => cmd::fenced_put::run(g, args).await,
        Command::Auth(c) => cmd::auth::run(g, c).await,
        Command::User(c) => cmd::user::run(g, c).await,
        Command::Role(c) => cmd::role::run(g, c).await,
        Command::Bench(mut args) => {
            args.endpoints = g.endpoints.clone();
            match (g.bench_tls(), g.credentials()) {
                (Ok(tls), Ok(login)) => {
                    args.tls = tls;
                    args.login = login.map(|c| cairn_bench::conn::Login {
                        name: c.user,
                        password: c.password,
                    });
                    cairn_bench::run(*args).await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("Error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// The log filter without `RUST_LOG`: `level` everywhere, except that at
/// `info` and `warn` openraft's warning for each failed attempt to reach a
/// member (a heartbeat, a replication stream: tens a second for a member
/// that is down) is left out. Cairn's peer transport logs when a member
/// becomes unreachable and when it answers again instead
/// (`cairn_raft::network`). `--log-level debug` shows them all.
fn default_directives(level: &str) -> String {
    const PER_ATTEMPT: [&str; 3] = [
        "openraft::core::heartbeat=error",
        "openraft::replication=error",
        "openraft::engine::handler::replication_handler=error",
    ];
    match level {
        "info" | "warn" => std::iter::once(level)
            .chain(PER_ATTEMPT)
            .collect::<Vec<_>>()
            .join(","),
        _ => level.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::default_directives;

    #[test]
    fn per_attempt_peer_warnings_are_left_out_below_debug() {
        let info = default_directives("info");
        assert!(info.starts_with("info,"), "{info}");
        assert!(info.contains("openraft::core::heartbeat=error"), "{info}");
        tracing_subscriber::EnvFilter::try_new(&info).expect("valid directives");
        assert_eq!(default_directives("debug"), "debug");
        assert_eq!(default_directives("error"), "error");
    }
}
