//! Long chaos campaigns against real `cairn` processes.
//!
//! ```text
//! cargo build -p cairn
//! cargo run -p cairn-chaos --bin chaos -- --seeds 20 --duration 60 --members 5
//! cargo run -p cairn-chaos --bin chaos -- --seed 1234 --duration 10   # reproduce one seed
//! ```
//!
//! Options: `--seeds N` (runs seeds `first-seed .. first-seed+N`),
//! `--first-seed S` (default 1), `--seed S` (exactly one seed),
//! `--duration SECS` (per seed, default 30), `--members 3|5` (default 3),
//! `--clients K` (default 4), `--keys K` (default 5), `--check-budget
//! SECS` (default 60), `--faults a,b,...` (default: all; names:
//! `kill`, `kill-leader`, `pause-leader`, `isolate-leader`, `split`,
//! `bridge`, `degrade`, `reconfigure`). Partition faults need root
//! (network namespaces) and are skipped with a printed reason otherwise;
//! delay/loss uses `tc netem` where it exists, else userspace TCP proxies
//! (printed). `--tls`: members run TLS on both ports with client and
//! peer certificates required (certificates made per run); with
//! `--auth` too, auth is on and every client runs as the user its
//! certificate names. The binary is located as described in
//! `cairn_chaos::harness` (`CAIRN_BIN`, `$CARGO_TARGET_DIR/debug/cairn`,
//! `target/debug/cairn`). Exit status 1 if any seed failed.

use std::process::ExitCode;
use std::time::Duration;

use cairn_chaos::campaign::{run, Config};
use cairn_chaos::faults::FaultKind;

fn usage() -> ExitCode {
    eprintln!(
        "usage: chaos [--seeds N] [--first-seed S] [--seed S] [--duration SECS] \
         [--members 3|5] [--clients K] [--keys K] [--check-budget SECS] \
         [--snapshot-entries N (0: the members' default)] [--tls [--auth]] \
         [--faults kill,kill-leader,kill-majority,kill-all,pause-leader,isolate-leader,split,bridge,degrade,reconfigure,one-way,power-cut,power-cut-all,disk-fail]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seeds = 1u64;
    let mut first = 1u64;
    let mut cfg = Config::short(1);
    cfg.duration = Duration::from_secs(30);
    cfg.max_ops_per_client = 100_000;
    cfg.check_budget = Duration::from_secs(60);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--tls" {
            cfg.tls = true;
            i += 1;
            continue;
        }
        if args[i] == "--auth" {
            cfg.auth = true;
            i += 1;
            continue;
        }
        if args[i] == "--faults" {
            let Some(list) = args.get(i + 1) else {
                return usage();
            };
            let parsed: Option<Vec<FaultKind>> = list.split(',').map(FaultKind::parse).collect();
            match parsed {
                Some(kinds) if !kinds.is_empty() => cfg.faults = kinds,
                _ => {
                    eprintln!("unknown fault in {list:?}");
                    return usage();
                }
            }
            i += 2;
            continue;
        }
        let Some(v) = args.get(i + 1).and_then(|v| v.parse::<u64>().ok()) else {
            eprintln!("missing or invalid value for {}", args[i]);
            return usage();
        };
        match args[i].as_str() {
            "--seeds" => seeds = v,
            "--first-seed" => first = v,
            "--seed" => {
                first = v;
                seeds = 1;
            }
            "--duration" => cfg.duration = Duration::from_secs(v),
            "--members" => cfg.members = v as usize,
            "--clients" => cfg.clients = v as usize,
            "--keys" => cfg.keys = v as usize,
            "--check-budget" => cfg.check_budget = Duration::from_secs(v),
            "--snapshot-entries" => cfg.snapshot_entries = (v > 0).then_some(v),
            _ => return usage(),
        }
        i += 2;
    }
    if cfg.members == 0 || cfg.clients == 0 || cfg.keys == 0 {
        return usage();
    }
    let (mut failed, mut undecided) = (Vec::new(), Vec::new());
    for seed in first..first.saturating_add(seeds) {
        cfg.seed = seed;
        match run(&cfg) {
            Ok(report) => {
                println!("{report}");
                for s in &report.schedule {
                    println!("    {s}");
                }
                if !report.undecided_keys.is_empty() {
                    undecided.push(seed);
                }
            }
            Err(failure) => {
                println!("{failure}");
                failed.push(seed);
            }
        }
    }
    println!(
        "campaign: {seeds} seed(s), {} failed {failed:?}, {} undecided {undecided:?}",
        failed.len(),
        undecided.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
