//! `cairn-bench`: the standalone form of `cairn bench`.

use std::process::ExitCode;

use clap::Parser;

/// The load generator shares the machine with the servers it measures, so
/// every cycle it spends is one they lack: with glibc's malloc, ~10 % of
/// its CPU went to `malloc`/`free`; mimalloc is what `cairn` uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-bench",
    version,
    about = "Load generator for any etcd v3 API server (Cairn or etcd)"
)]
struct Cli {
    /// Comma-separated client URLs of the servers under test.
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// CA certificate (PEM) of TLS servers.
    #[arg(long, env = "CAIRN_CACERT")]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (PEM), with `--key`, for servers that ask.
    #[arg(long, env = "CAIRN_CERT", requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--cert`.
    #[arg(long, env = "CAIRN_KEY", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// `name:password` to log in as, for servers with auth on.
    #[arg(long, env = "CAIRN_USER", hide_env_values = true)]
    user: Option<cairn_bench::conn::Login>,
    #[command(flatten)]
    bench: cairn_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut args = cli.bench;
    args.endpoints = cli.endpoints;
    args.login = cli.user;
    if let Some(ca) = &cli.cacert {
        let identity = cli.cert.as_deref().zip(cli.key.as_deref());
        match cairn_bench::conn::tls_config(ca, identity) {
            Ok(tls) => args.tls = Some(tls),
            Err(e) => {
                eprintln!("cairn-bench: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    match cairn_bench::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
