//! `cairn bench`: a load generator for any server speaking the etcd v3 gRPC
//! API — Cairn or etcd — with the same client code (the generated tonic
//! clients of `cairn-proto`, over N HTTP/2 connections).
//!
//! Workloads: `put`, `range-l` (linearizable), `range-s` (serializable),
//! `txn-cas` (compare-and-put), `lease` (grant + revoke), `watch` (fan-out
//! to many watchers), `suite` (the standard table) and `failover` (SIGKILL
//! the leader, time until the first acknowledged write) and `claims`
//! (Cairn's block-claims API: offload, register, match per batch size).
//! Each row reports
//! ops/s, p50 / p99 / max latency and errors, as a table and as JSON lines.
//!
//! With `--compare FILE...` it runs nothing and prints a side-by-side table
//! of the rows in those JSON-lines files instead (see `bench/compare.sh`).

pub mod claims;
pub mod conn;
pub mod driver;
pub mod floor;
pub mod hist;
pub mod report;
pub mod workloads;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::conn::Pool;
use crate::driver::Limits;
use crate::report::Row;
use crate::workloads::Params;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Put random keys of the key space.
    Put,
    /// Linearizable single-key gets.
    #[value(name = "range-l")]
    RangeL,
    /// Serializable single-key gets.
    #[value(name = "range-s")]
    RangeS,
    /// Txn: if mod_revision(own key) == last seen { put } else { get }.
    #[value(name = "txn-cas")]
    TxnCas,
    /// LeaseGrant then LeaseRevoke (one op = both).
    Lease,
    /// Watch fan-out: `--watchers` watchers, `--watch-writers` writers.
    Watch,
    /// Every row of the standard table, in order.
    Suite,
    /// SIGKILL the leader with `--kill-cmd`; time to the first acked write.
    Failover,
    /// Cairn only: CanOffload, Register and MatchPrefix rows for each of
    /// `--claims-batches` keys per request.
    Claims,
}

/// Flags of `cairn bench` / `cairn-bench`.
///
/// `endpoints` is not a flag here, so it cannot clash with `cairn`'s
/// global `--endpoints`: the caller fills it in (empty means
/// `http://127.0.0.1:2379`).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Client URLs of the servers under test (set by the caller from its
    /// own `--endpoints` flag).
    #[arg(skip)]
    pub endpoints: Vec<String>,
    /// How to dial `https://` endpoints (set by the caller from its own
    /// TLS flags; see [`conn::tls_config`]).
    #[arg(skip)]
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Who to log in as, for servers with auth on (set by the caller from
    /// its own `--user` flag; the same user for every row: give it
    /// read-write on the keys the rows use).
    #[arg(skip)]
    pub login: Option<conn::Login>,
    /// What to run.
    #[arg(long, value_enum, default_value = "suite")]
    pub workload: Workload,
    /// Concurrent clients (default: 1 for put, 64 for the others; the suite
    /// uses its fixed table and ignores this).
    #[arg(long)]
    pub clients: Option<usize>,
    /// HTTP/2 connections, round-robin over the endpoints; clients are
    /// spread round-robin over them. Never more than the clients.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Time limit of each row (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Operation limit of each row; 0 for none (the time limit still holds).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Pace each row to this many operations per second in all; 0 for as
    /// fast as the clients go (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Keys are `<prefix><n>` with n drawn uniformly from 0..key-space.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Prefix of every key the tool writes.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Find the leader with Maintenance.Status and send everything there.
    #[arg(long)]
    pub target_leader: bool,
    /// Watchers of the watch row.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Put clients feeding the watch row.
    #[arg(long, default_value_t = 4)]
    pub watch_writers: usize,
    /// TTL of the leases the lease row grants, in seconds.
    #[arg(long, default_value_t = 60)]
    pub lease_ttl: i64,
    /// Do not write the key space before the range rows.
    #[arg(long)]
    pub no_prefill: bool,
    /// Give up on one request after this long (counted as an error).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub op_timeout: Duration,
    /// Keys per request of the claims rows, comma-separated (1..=10000).
    #[arg(long, value_delimiter = ',', default_value = "16,1000", value_parser = claims::parse_batch)]
    pub claims_batches: Vec<usize>,
    /// Lease TTL of the claims rows' namespace, in ms (the server accepts
    /// 1000 and up). With a short one, leases the offload row grants
    /// expire during the run, as in a steady state; with the default, they
    /// all pile up.
    #[arg(long, default_value_t = 30_000)]
    pub claims_lease_ttl_ms: u64,
    /// Shell command that SIGKILLs the leader (failover workload). It gets
    /// BENCH_LEADER_ENDPOINT, BENCH_LEADER_PORT and BENCH_LEADER_ID (hex).
    #[arg(long)]
    pub kill_cmd: Option<String>,
    /// Name of the server under test, in every row.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// JSON lines on stdout (one object per row); the table goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    pub json_file: Option<PathBuf>,
    /// Run nothing: print a comparison of the rows in these JSON-lines
    /// files (mean over repeated rounds, ratios against --baseline).
    #[arg(long, num_args = 1..)]
    pub compare: Vec<PathBuf>,
    /// Server label the ratios of --compare are taken against.
    #[arg(long, default_value = "etcd")]
    pub baseline: String,
}

impl Default for BenchArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: BenchArgs,
        }
        P::parse_from(["cairn-bench"]).a
    }
}

/// `2s`, `500ms`, `1m`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 10s, 500ms, 1m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("bad duration unit {u:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The rows of the standard table: workload and clients (for the watch
/// row, watchers; `--watchers` overrides it).
pub const SUITE: [(Workload, usize); 8] = [
    (Workload::Put, 1),
    (Workload::Put, 64),
    (Workload::Put, 256),
    (Workload::RangeL, 64),
    (Workload::RangeS, 64),
    (Workload::TxnCas, 64),
    (Workload::Lease, 64),
    (Workload::Watch, 100),
];

/// Prints rows as they complete (JSON) and the table at the end.
struct Output<'a> {
    args: &'a BenchArgs,
    rows: Vec<Row>,
}

impl Output<'_> {
    fn push(&mut self, row: Row) -> anyhow::Result<()> {
        let line = row.to_json_line();
        if self.args.json {
            println!("{line}");
        } else {
            eprintln!(
                "  {} {}: {} ops/s, p50 {} ms, p99 {} ms, {} errors",
                row.server,
                row.name(),
                report::fmt_rate(row.ops_per_sec),
                report::fmt_ms(row.p50_ms),
                report::fmt_ms(row.p99_ms),
                row.errors
            );
        }
        if let Some(path) = &self.args.json_file {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        self.rows.push(row);
        Ok(())
    }

    fn finish(&self) {
        let t = report::table(&self.rows);
        if self.args.json {
            eprint!("{t}");
        } else {
            print!("{t}");
        }
    }
}

/// Run what `args` asks for and print the results.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !args.compare.is_empty() {
        let mut rows = Vec::new();
        for path in &args.compare {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            rows.extend(report::parse_json_lines(&text));
        }
        if rows.is_empty() {
            bail!("no result rows in {:?}", args.compare);
        }
        print!("{}", report::compare(&rows, &args.baseline));
        return Ok(());
    }

    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the current operations");
            driver::request_stop();
        }
    });

    if let Some(tls) = &args.tls {
        conn::use_tls(tls.clone());
    }
    let mut endpoints: Vec<String> = args
        .endpoints
        .iter()
        .map(|e| conn::normalize_endpoint(e))
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        endpoints.push("http://127.0.0.1:2379".into());
    }
    if let Some(login) = &args.login {
        conn::log_in(&endpoints[0], login, args.op_timeout).await?;
    }
    let params = Params {
        label: args.label.clone(),
        key_prefix: args.key_prefix.clone(),
        key_space: args.key_space.max(1),
        val_size: args.val_size,
        limits: Limits {
            duration: args.duration,
            count: args.count,
            rate: args.rate,
            op_timeout: args.op_timeout,
        },
    };
    let mut out = Output {
        args: &args,
        rows: Vec::new(),
    };

    if args.workload == Workload::Failover {
        let Some(kill) = &args.kill_cmd else {
            bail!("--workload failover needs --kill-cmd");
        };
        let row = workloads::failover(&endpoints, kill, &params).await?;
        out.push(row)?;
        out.finish();
        return Ok(());
    }

    let targets = if args.target_leader {
        let leader = conn::find_leader(&endpoints, Duration::from_secs(10)).await?;
        eprintln!(
            "target: leader {:x} at {}",
            leader.member_id, leader.endpoint
        );
        vec![leader.endpoint]
    } else {
        endpoints
    };

    if args.workload == Workload::Claims {
        let clients = args.clients.unwrap_or(16).max(1);
        let pool = Pool::open(&targets, args.conns.clamp(1, clients), args.op_timeout).await?;
        for batch in args.claims_batches.iter().copied() {
            if driver::stop_requested() {
                break;
            }
            eprintln!(
                "{}: claims with {clients} clients over {} connections, {batch} keys per request, {:?} per row",
                args.label,
                pool.len(),
                args.duration
            );
            let ttl_ms = args.claims_lease_ttl_ms;
            for row in claims::rows(&pool, clients, batch, ttl_ms, &params).await? {
                out.push(row)?;
            }
        }
        out.finish();
        return Ok(());
    }

    let plan: Vec<(Workload, usize)> = match args.workload {
        Workload::Suite => SUITE
            .iter()
            .map(|&(w, c)| {
                (
                    w,
                    if w == Workload::Watch {
                        args.watchers
                    } else {
                        c
                    },
                )
            })
            .collect(),
        w => {
            let default = match w {
                Workload::Put => 1,
                Workload::Watch => args.watchers,
                _ => 64,
            };
            vec![(w, args.clients.unwrap_or(default).max(1))]
        }
    };
    let mut prefilled = args.no_prefill;
    for (i, (w, clients)) in plan.iter().copied().enumerate() {
        if driver::stop_requested() {
            break;
        }
        if i > 0 {
            // Let the previous row's backlog (compaction, fsyncs) settle.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let streams = if w == Workload::Watch {
            clients.max(args.watch_writers)
        } else {
            clients
        };
        let conns = args.conns.clamp(1, streams.max(1));
        let pool = Pool::open(&targets, conns, args.op_timeout).await?;
        let clients_label = if w == Workload::Watch {
            format!("{clients} watchers, {} writers", args.watch_writers)
        } else {
            format!("{clients} clients")
        };
        eprintln!(
            "{}: {:?} with {clients_label} over {} connections for {:?}{}",
            args.label,
            w,
            pool.len(),
            args.duration,
            if args.count > 0 {
                format!(" or {} ops", args.count)
            } else {
                String::new()
            }
        );
        if matches!(w, Workload::RangeL | Workload::RangeS) && !prefilled {
            let n = workloads::prefill(&pool, &params, Duration::from_secs(120)).await?;
            eprintln!("  prefilled {n} keys");
            prefilled = true;
        }
        let row = match w {
            Workload::Put => workloads::put(&pool, clients, &params).await,
            Workload::RangeL => workloads::range(&pool, clients, false, &params).await,
            Workload::RangeS => workloads::range(&pool, clients, true, &params).await,
            Workload::TxnCas => workloads::txn_cas(&pool, clients, &params).await,
            Workload::Lease => workloads::lease(&pool, clients, args.lease_ttl, &params).await,
            Workload::Watch => {
                workloads::watch_fanout(&pool, clients, args.watch_writers, &params).await
            }
            Workload::Suite | Workload::Failover | Workload::Claims => {
                unreachable!("not a row")
            }
        };
        out.push(row)?;
    }
    out.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn defaults() {
        let a = BenchArgs::default();
        assert_eq!(a.workload, Workload::Suite);
        assert_eq!(a.val_size, 256);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert!(a.endpoints.is_empty());
    }

    /// `cairn` has a global `--endpoints` (and `-w`, `--dial-timeout`,
    /// `--command-timeout`); `cairn bench` must not clash with them.
    #[test]
    fn fits_under_a_cli_with_global_endpoints() {
        #[derive(Parser)]
        struct Cli {
            #[arg(long, global = true, value_delimiter = ',')]
            endpoints: Vec<String>,
            #[arg(short = 'w', long, global = true)]
            write_out: Option<String>,
            #[arg(long, global = true)]
            dial_timeout: Option<String>,
            #[arg(long, global = true)]
            command_timeout: Option<String>,
            #[command(subcommand)]
            cmd: Cmd,
        }
        #[derive(Subcommand)]
        enum Cmd {
            Bench(BenchArgs),
        }
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "cairn",
            "--endpoints",
            "a:1,b:2",
            "bench",
            "--workload",
            "txn-cas",
            "--clients",
            "3",
            "--duration",
            "2s",
            "--json",
        ]);
        let Cmd::Bench(b) = cli.cmd;
        assert_eq!(cli.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(b.workload, Workload::TxnCas);
        assert_eq!(b.clients, Some(3));
        assert!(b.json);
    }
}
