//! `cairn-bench`: the standalone form of `cairn bench`.

use std::process::ExitCode;

use clap::Parser;

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
    #[command(flatten)]
    bench: cairn_bench::BenchArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut args = cli.bench;
    args.endpoints = cli.endpoints;
    match cairn_bench::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
