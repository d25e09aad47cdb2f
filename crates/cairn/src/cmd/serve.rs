//! `cairn serve`: run a member. With no flags, a single-node cluster with
//! data in `./cairn-data`, clients on 127.0.0.1:2379, peers on :2380.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cairn_server::config::{ClusterState, ServerConfig};
use cairn_server::tls::Port;

/// Every setting is optional here: given ones override the environment
/// (`CAIRN_*`, read by clap), which overrides `--config`, which overrides
/// the defaults.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file with settings (field names as in `ServerConfig`).
    #[arg(long, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Member name, unique in the cluster.
    #[arg(long, env = "CAIRN_NAME")]
    pub name: Option<String>,
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the Raft log lives instead of `<data-dir>/raft-wal`, as etcd's
    /// `--wal-dir` (a disk of its own for the log's fsyncs).
    #[arg(long, env = "CAIRN_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// Address for the etcd-compatible client API.
    #[arg(long, env = "CAIRN_LISTEN_CLIENT")]
    pub listen_client: Option<SocketAddr>,
    /// etcd's form of `--listen-client`: `http://IP:PORT` (`https://` with
    /// TLS), comma-separated to serve clients on several addresses.
    #[arg(
        long,
        env = "CAIRN_LISTEN_CLIENT_URLS",
        conflicts_with = "listen_client"
    )]
    pub listen_client_urls: Option<String>,
    /// etcd's `--listen-metrics-urls`: `http://IP:PORT`, comma-separated,
    /// serving only `GET /health` and `GET /metrics` (plain HTTP).
    #[arg(long, env = "CAIRN_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// Address for the peer (Raft) API.
    #[arg(long, env = "CAIRN_LISTEN_PEER")]
    pub listen_peer: Option<SocketAddr>,
    /// etcd's form of `--listen-peer`: one `http(s)://IP:PORT`.
    #[arg(long, env = "CAIRN_LISTEN_PEER_URLS", conflicts_with = "listen_peer")]
    pub listen_peer_urls: Option<String>,
    /// Client URLs told to clients and members, comma-separated (also
    /// taken as etcd's `--advertise-client-urls`).
    #[arg(long, alias = "advertise-client-urls", env = "CAIRN_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// The peer URL other members dial (also taken as etcd's
    /// `--initial-advertise-peer-urls`, with one URL).
    #[arg(
        long,
        alias = "initial-advertise-peer-urls",
        env = "CAIRN_ADVERTISE_PEER"
    )]
    pub advertise_peer: Option<String>,
    /// `name=http://host:port,...`: the first members (bootstrap only).
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap, `existing` to join after `member add`.
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_STATE")]
    pub initial_cluster_state: Option<ClusterState>,
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER_TOKEN")]
    pub initial_cluster_token: Option<String>,
    #[arg(
        long,
        alias = "heartbeat-interval",
        env = "CAIRN_HEARTBEAT_INTERVAL_MS"
    )]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, alias = "election-timeout", env = "CAIRN_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    #[arg(long, env = "CAIRN_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    #[arg(long, env = "CAIRN_MAX_TXN_OPS")]
    pub max_txn_ops: Option<usize>,
    /// Most watchers one watch stream may hold (default 100000).
    #[arg(long, env = "CAIRN_MAX_WATCHERS_PER_STREAM")]
    pub max_watchers_per_stream: Option<usize>,
    /// Most watchers all client watch streams on this member may hold
    /// (default 1000000).
    #[arg(long, env = "CAIRN_MAX_WATCHERS")]
    pub max_watchers: Option<usize>,
    #[arg(long, env = "CAIRN_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<u64>,
    /// Fewest applied entries between automatic snapshots; a snapshot also
    /// waits for as much new log as the last one holds, up to 4 times this.
    #[arg(long, alias = "snapshot-count", env = "CAIRN_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    #[arg(long, env = "CAIRN_TICK_INTERVAL_MS")]
    pub tick_interval_ms: Option<u64>,
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// redb page cache size.
    #[arg(long, env = "CAIRN_STORAGE_CACHE_BYTES")]
    pub storage_cache_bytes: Option<usize>,
    /// Longest the leader holds a commit-index-only message to a follower
    /// back, hoping to send it with the next entries (0: at once).
    #[arg(long, env = "CAIRN_COMMIT_NOTICE_DELAY_MS")]
    pub commit_notice_delay_ms: Option<u64>,
    /// TLS on the client port: its certificate, PEM (with `--key-file`).
    #[arg(long, env = "CAIRN_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of `--cert-file`, PEM.
    #[arg(long, env = "CAIRN_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The CA that signs client certificates (with `--client-cert-auth`).
    #[arg(long, env = "CAIRN_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `--trusted-ca-file`.
    #[arg(long, env = "CAIRN_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,
    /// Certificate revocation lists, PEM: client certificates they list
    /// are refused (read again when the file changes).
    #[arg(long, env = "CAIRN_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// TLS between members: this member's certificate, PEM, shown on its
    /// peer port and when it dials others (with `--peer-key-file` and
    /// `--peer-trusted-ca-file`).
    #[arg(long, env = "CAIRN_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of `--peer-cert-file`, PEM.
    #[arg(long, env = "CAIRN_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA that signs the members' certificates.
    #[arg(long, env = "CAIRN_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peer calls without a certificate signed by
    /// `--peer-trusted-ca-file`.
    #[arg(long, env = "CAIRN_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,
    /// Revocation lists for the members' certificates on the peer port.
    #[arg(long, env = "CAIRN_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// The common name a member's certificate must carry for the peer
    /// port to take its calls (with `--peer-client-cert-auth`).
    #[arg(long, env = "CAIRN_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// TLS on the client port with a self-signed certificate this member
    /// generates under `<data-dir>/fixtures/client/` (reused at later
    /// starts) when no `--cert-file` is given, as etcd's `--auto-tls`.
    #[arg(long, env = "CAIRN_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: Option<bool>,
    /// The same for the peer port (`<data-dir>/fixtures/peer/`); members
    /// then dial each other without checking certificates.
    #[arg(long, env = "CAIRN_PEER_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: Option<bool>,
    /// The TLS cipher suites both ports allow, as etcd's: Go's (IANA's)
    /// names, comma-separated, e.g.
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`
    /// (rustls has the ECDHE AES-GCM and ChaCha20-Poly1305 ones; CBC and
    /// RSA key exchange names are left out with a warning). As in etcd (Go), a list of
    /// TLS 1.2 suites leaves TLS 1.3 on with all its suites; naming TLS
    /// 1.3 suites (`TLS_AES_128_GCM_SHA256`, ...) keeps only those.
    #[arg(long, env = "CAIRN_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,
    /// The oldest TLS version both ports speak: `TLS1.2` (default) or
    /// `TLS1.3` (etcd's flag; its TLS1.0 and TLS1.1 are refused, as rustls
    /// does not speak them).
    #[arg(long, env = "CAIRN_TLS_MIN_VERSION")]
    pub tls_min_version: Option<String>,
    /// The newest TLS version both ports speak: `TLS1.3` (default) or
    /// `TLS1.2`.
    #[arg(long, env = "CAIRN_TLS_MAX_VERSION")]
    pub tls_max_version: Option<String>,
    /// How many years a generated certificate is valid (default 1).
    #[arg(long, env = "CAIRN_SELF_SIGNED_CERT_VALIDITY")]
    pub self_signed_cert_validity: Option<u32>,
    /// How often the client port pings a quiet HTTP/2 connection to find
    /// clients gone without closing it (`2h`; etcd's name).
    #[arg(long, env = "CAIRN_GRPC_KEEPALIVE_INTERVAL", value_parser = super::parse_duration)]
    pub grpc_keepalive_interval: Option<std::time::Duration>,
    /// How long an unanswered ping waits before the connection is closed
    /// (`20s`; etcd's name).
    #[arg(long, env = "CAIRN_GRPC_KEEPALIVE_TIMEOUT", value_parser = super::parse_duration)]
    pub grpc_keepalive_timeout: Option<std::time::Duration>,
    /// How often a quiet watcher that asked for progress notifications
    /// gets one (`10m`; also taken as etcd's
    /// `--experimental-watch-progress-notify-interval`).
    #[arg(
        long,
        alias = "experimental-watch-progress-notify-interval",
        env = "CAIRN_WATCH_PROGRESS_NOTIFY_INTERVAL",
        value_parser = super::parse_duration
    )]
    pub watch_progress_notify_interval: Option<std::time::Duration>,
    /// Which auth tokens to issue, as etcd's `--auth-token`: `simple` (the
    /// default; Cairn's own signed tokens, taken by every member) or
    /// `jwt,sign-method=RS256,pub-key=FILE,priv-key=FILE,ttl=5m`.
    #[arg(long, env = "CAIRN_AUTH_TOKEN")]
    pub auth_token: Option<String>,
    /// How long a `simple` token from `Authenticate` is good for, in
    /// seconds (etcd `--auth-token-ttl`, also taken; default 300).
    #[arg(long, alias = "auth-token-ttl", env = "CAIRN_AUTH_TOKEN_TTL_SECS")]
    pub auth_token_ttl_secs: Option<u64>,
    /// PBKDF2-HMAC-SHA256 iterations for new passwords (default 300000).
    #[arg(long, env = "CAIRN_AUTH_PASSWORD_ITERATIONS")]
    pub auth_password_iterations: Option<u32>,
    /// `periodic` (keep a time window of history) or `revision` (keep a
    /// number of revisions), as etcd.
    #[arg(long, env = "CAIRN_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<String>,
    /// History to keep: a duration in periodic mode (`30m`, `1h`; a bare
    /// number is hours), a count in revision mode; `0` keeps everything.
    #[arg(long, env = "CAIRN_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// How often the leader compares the members' keyspace hashes and
    /// raises CORRUPT on one unlike the majority, in ms (0: off).
    #[arg(long, env = "CAIRN_CORRUPT_CHECK_INTERVAL_MS")]
    pub corrupt_check_interval_ms: Option<u64>,
    /// The same as a duration (`5m`), under etcd's name for it.
    #[arg(
        long,
        env = "CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        value_parser = super::parse_duration,
        conflicts_with = "corrupt_check_interval_ms"
    )]
    pub experimental_corrupt_check_time: Option<std::time::Duration>,
    /// At start, once caught up with the leader, compare this member's
    /// keyspace hash with the others' and refuse to serve if a majority
    /// hold another (etcd's `--experimental-initial-corrupt-check`, also
    /// taken under that name).
    #[arg(
        long,
        alias = "experimental-initial-corrupt-check",
        env = "CAIRN_INITIAL_CORRUPT_CHECK",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub initial_corrupt_check: Option<bool>,
    /// Start on this data dir as a cluster of one, dropping every other
    /// member (etcd's `--force-new-cluster`): recovery after a lost quorum.
    /// Take it off again once the member runs.
    #[arg(
        long,
        env = "CAIRN_FORCE_NEW_CLUSTER",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub force_new_cluster: Option<bool>,
    /// Origins whose browser pages may read the client port's HTTP answers
    /// (JSON gateway, `/health`, `/metrics`), comma-separated: `*` (the
    /// default) for any, or origins such as `https://ui.example.com`
    /// (etcd's `--cors`).
    #[arg(long, env = "CAIRN_CORS")]
    pub cors: Option<String>,
    /// Host names plain-HTTP requests to the client port may name in
    /// `Host`, comma-separated (etcd's `--host-whitelist`): `*` (the
    /// default) for any; e.g. `localhost,127.0.0.1` refuses, with 421,
    /// pages of other sites whose names were made to resolve to this
    /// member (DNS rebinding). Not checked over TLS.
    #[arg(long, env = "CAIRN_HOST_WHITELIST")]
    pub host_whitelist: Option<String>,
    /// etcd's YAML configuration file (`etcd.conf.yml`): its settings are
    /// read as the `ETCD_*` variables of the same names before the flags
    /// are parsed (`cmd/etcd_config_file.rs`), so this field only lets
    /// the flag through. Flags and `CAIRN_*` variables win over it.
    #[arg(long, env = "CAIRN_CONFIG_FILE")]
    pub config_file: Option<std::path::PathBuf>,
    /// How much the member logs when `RUST_LOG` is not set: `debug`,
    /// `info` (the default), `warn` or `error` (etcd's `--log-level`;
    /// its `panic` and `fatal` log errors only here). A process setting,
    /// so not in `--config`.
    #[arg(long, env = "CAIRN_LOG_LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<&'static str>,
    /// etcd 3.4's `--debug` (`ETCD_DEBUG`): debug-level logging, as
    /// `--log-level debug`; an explicit `--log-level` wins.
    #[arg(
        long,
        env = "CAIRN_DEBUG",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub debug: Option<bool>,
    /// Threads of the async runtime that serves clients and peers
    /// (default: half the CPUs, at least one; see [`worker_threads`]); with
    /// one, tokio's current-thread scheduler.
    /// A process setting, so not in `--config`.
    #[arg(long, env = "CAIRN_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    #[command(flatten)]
    pub etcd_only: super::etcd_only_flags::EtcdOnlyFlags,
}

impl ServeArgs {
    /// The level the member logs at when `RUST_LOG` is not set.
    pub fn effective_log_level(&self) -> &'static str {
        match (self.log_level, self.debug) {
            (Some(level), _) => level,
            (None, Some(true)) => "debug",
            (None, _) => "info",
        }
    }
}

/// A `tracing` level from etcd's `--log-level` names.
/// etcd's form of a list flag: comma-separated, spaces around entries
/// dropped, empty entries (a trailing comma) naming nothing.
fn comma_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_log_level(s: &str) -> Result<&'static str, String> {
    match s {
        "debug" => Ok("debug"),
        "info" => Ok("info"),
        "warn" => Ok("warn"),
        "error" | "dpanic" | "panic" | "fatal" => Ok("error"),
        _ => Err(format!(
            "{s:?}: one of debug, info, warn, error, panic, fatal"
        )),
    }
}

/// The URLs of an etcd-style listen flag (`http(s)://IP:PORT`,
/// comma-separated; empty entries skipped) with their addresses: at least
/// one. `localhost` is 127.0.0.1; other names are refused, as a member
/// binds addresses, not names.
fn listen_urls<'a>(flag: &str, urls: &'a str) -> anyhow::Result<Vec<(&'a str, SocketAddr)>> {
    let parsed = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|url| {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| {
                    anyhow::anyhow!("--{flag}: {url:?} must start with http:// or https://")
                })?;
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let rest = match rest.strip_prefix("localhost:") {
                Some(port) => format!("127.0.0.1:{port}"),
                None => rest.to_string(),
            };
            let addr = rest.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "--{flag}: {url:?} is not scheme://IP:PORT (an IP address, not a name)"
                )
            })?;
            Ok((url, addr))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!parsed.is_empty(), "--{flag} names no URL");
    Ok(parsed)
}

/// The async runtime's threads for a member when none are asked for: half
/// the CPUs, at least one.
///
/// Why not one per CPU (tokio's default): a member keeps busy threads of
/// its own beside the runtime (the log's writer and its fsyncs, the row
/// writer, checkpoints, a follower's applies), and most of the runtime's
/// work is a chain of hand-offs that does not run in parallel (a request's
/// task, the proposer, the Raft core, each follower's replication, the
/// connections). With a worker per CPU, each hand-off woke an idle worker
/// to steal the task, and on a VM that keeps a woken thread on the
/// waker's CPU the two took turns on one CPU. 1-client puts to the leader
/// on the 2-CPU VM of BENCHMARKS.md, one worker against two: 23 context
/// switches per put across the three members instead of 37.5, 715–721
/// instead of 846–900 µs of server CPU per put, p50 0.61–0.64 instead of
/// 0.70 ms; puts at 64 and 256 clients the same within the noise, the
/// watch row's puts 1.93K / 1.97K against 1.56K / 1.84K per second.
///
/// One thread means tokio's current-thread scheduler (`main.rs`), not the
/// multi-thread one with a single worker: the same one thread runs every
/// task, without the work-stealing scheduler's shared queues and idle
/// bookkeeping. Three pairs of `cairn bench --workload suite` on fresh
/// clusters (BENCHMARKS.md, session 23): put c=64 +13–16 %, c=256
/// +6–10 %, txn +13–28 %, lease +6–61 %, range-l +10–21 %, watch −2 to
/// +15 %; put c=1 and range-s (client-bound) within the noise.
pub fn default_worker_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// The worker threads to build the runtime with: `--worker-threads` if
/// given; otherwise tokio's own `TOKIO_WORKER_THREADS` if set (a value
/// that is not a positive number is refused here, where tokio would
/// panic); otherwise [`default_worker_threads`].
pub fn worker_threads(args: &ServeArgs) -> anyhow::Result<usize> {
    if let Some(n) = args.worker_threads {
        return Ok(usize::from(n));
    }
    if let Some(v) = std::env::var_os("TOKIO_WORKER_THREADS") {
        return v
            .to_str()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| {
                anyhow::anyhow!("TOKIO_WORKER_THREADS must be a positive number, not {v:?}")
            });
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(default_worker_threads(cpus))
}

impl ServeArgs {
    pub fn to_config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => ServerConfig::from_toml_file(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        set!(
            name,
            data_dir,
            listen_client,
            listen_peer,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token,
            heartbeat_interval_ms,
            election_timeout_ms,
            max_request_bytes,
            max_txn_ops,
            max_watchers_per_stream,
            max_watchers,
            quota_backend_bytes,
            snapshot_entries,
            tick_interval_ms,
            request_timeout_ms,
            storage_cache_bytes,
            commit_notice_delay_ms,
            client_cert_auth,
            peer_client_cert_auth,
            auth_token,
            auto_tls,
            peer_auto_tls,
            auth_token_ttl_secs,
            auth_password_iterations,
            auto_compaction_mode,
            auto_compaction_retention,
            corrupt_check_interval_ms,
            initial_corrupt_check,
            force_new_cluster
        );
        macro_rules! set_optional {
            ($($field:ident),*) => { $( if self.$field.is_some() { c.$field = self.$field.clone(); } )* };
        }
        set_optional!(
            wal_dir,
            advertise_client,
            advertise_peer,
            cert_file,
            key_file,
            trusted_ca_file,
            peer_cert_file,
            peer_key_file,
            peer_trusted_ca_file,
            client_crl_file,
            peer_crl_file,
            peer_cert_allowed_cn,
            tls_min_version,
            tls_max_version
        );
        // Listen URLs whose scheme must follow their port's TLS, checked
        // once the config is whole.
        let mut listened: Vec<(&str, Port, &str)> = Vec::new();
        if let Some(urls) = &self.listen_client_urls {
            let flag = "listen-client-urls";
            let parsed = listen_urls(flag, urls)?;
            listened.extend(parsed.iter().map(|(url, _)| (flag, Port::Client, *url)));
            let mut addrs = parsed.into_iter().map(|(_, addr)| addr);
            c.listen_client = addrs.next().expect("listen_urls gives at least one");
            c.listen_client_also = addrs.collect();
        }
        if let Some(urls) = &self.listen_metrics_urls {
            let parsed = listen_urls("listen-metrics-urls", urls)?;
            anyhow::ensure!(
                parsed.iter().all(|(url, _)| !url.starts_with("https://")),
                "--listen-metrics-urls: only http:// is served there (keep it on loopback or a \
                 private network; the client port serves /metrics over TLS)"
            );
            c.listen_metrics = parsed.into_iter().map(|(_, addr)| addr).collect();
        }
        if let Some(url) = &self.listen_peer_urls {
            let flag = "listen-peer-urls";
            let parsed = listen_urls(flag, url)?;
            anyhow::ensure!(
                parsed.len() == 1,
                "--listen-peer-urls: a member listens for peers on one address, not {}",
                parsed.len()
            );
            listened.push((flag, Port::Peer, parsed[0].0));
            c.listen_peer = parsed[0].1;
        }
        if let Some(cors) = &self.cors {
            c.cors = comma_list(cors);
        }
        if let Some(hosts) = &self.host_whitelist {
            c.host_whitelist = comma_list(hosts);
        }
        if let Some(suites) = &self.cipher_suites {
            c.cipher_suites = comma_list(suites);
        }
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(d) = self.grpc_keepalive_interval {
            c.grpc_keepalive_interval_ms = ms(d);
        }
        if let Some(d) = self.grpc_keepalive_timeout {
            c.grpc_keepalive_timeout_ms = ms(d);
        }
        if let Some(d) = self.watch_progress_notify_interval {
            c.watch_progress_notify_interval_ms = ms(d);
        }
        if let Some(years) = self.self_signed_cert_validity {
            c.self_signed_cert_validity_years = years;
        }
        if let Some(every) = self.experimental_corrupt_check_time {
            c.corrupt_check_interval_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        }
        c.validate()?;
        // A listen URL's scheme says whether its port runs TLS, as the
        // advertised ones do.
        for (flag, port, url) in listened {
            c.check_port_scheme(port, url)
                .map_err(|reason| anyhow::anyhow!("--{flag}: {reason}"))?;
        }
        Ok(c)
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.to_config().context("refusing to start")?;
    for flag in args.etcd_only.given() {
        tracing::warn!("{flag} ignored: an etcd setting with no use in Cairn");
    }
    let server = cairn_server::serve::start(config)
        .await
        .context("starting cairn")?;
    tracing::info!(
        member = %format!("{:x}", server.node.member_id()),
        client = %server.client_addr,
        peer = %server.peer_addr,
        "cairn is serving"
    );
    // A member whose Raft stopped on a storage error (a full disk, a
    // failed fsync) serves nothing more: exit with the reason, as etcd
    // does, so that a supervisor restarts it once the disk is fixed (it
    // recovers from its log; nothing acknowledged depended on the failed
    // write).
    // A member removed from the cluster stops too, and exits 0 as etcd's
    // does: there is nothing for a supervisor to restart.
    let failed = tokio::select! {
        asked = super::stop_signal() => {
            asked.context("waiting for a signal to stop")?;
            tracing::info!("shutting down");
            None
        }
        why = server.node.raft_failed() => Some(format!("raft stopped: {why}")),
        why = server.node.removed() => {
            tracing::warn!("removed from the cluster: {why}; shutting down");
            None
        }
    };
    if let Some(why) = &failed {
        tracing::error!("{why}; shutting down");
    }
    server.shutdown().await;
    failed.map_or(Ok(()), |why| Err(anyhow::anyhow!(why)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn a_member_runs_on_half_the_cpus_and_at_least_one() {
        let picks: Vec<usize> = [1, 2, 3, 4, 16].map(default_worker_threads).into();
        assert_eq!(picks, [1, 1, 1, 2, 8]);
        let args = Cli::try_parse_from(["serve", "--worker-threads", "3"]).unwrap();
        assert_eq!(worker_threads(&args.serve).unwrap(), 3);
        assert!(
            Cli::try_parse_from(["serve", "--worker-threads", "0"]).is_err(),
            "a runtime needs a thread"
        );
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cairn.toml");
        std::fs::write(
            &file,
            "name = \"from-file\"\nmax_txn_ops = 7\nsnapshot_entries = 11\n",
        )
        .unwrap();
        // The only test in this binary that touches CAIRN_* variables.
        std::env::set_var("CAIRN_MAX_TXN_OPS", "9");
        std::env::set_var("CAIRN_NAME", "from-env");
        let cli = Cli::parse_from([
            "cairn",
            "--config",
            file.to_str().unwrap(),
            "--name",
            "from-flag",
        ]);
        let config = cli.serve.to_config().unwrap();
        std::env::remove_var("CAIRN_MAX_TXN_OPS");
        std::env::remove_var("CAIRN_NAME");
        assert_eq!(config.name, "from-flag", "flag wins over env and file");
        assert_eq!(config.max_txn_ops, 9, "env wins over file");
        assert_eq!(config.snapshot_entries, 11, "file wins over default");
        assert_eq!(config.heartbeat_interval_ms, 100, "default");
    }

    /// An etcd member's flags, as a systemd unit for etcd passes them.
    #[test]
    fn etcds_url_and_timing_flags_are_taken() {
        let config = Cli::parse_from([
            "cairn",
            "--name",
            "n1",
            "--listen-client-urls",
            "http://127.0.0.1:2379,http://0.0.0.0:12379/",
            "--listen-peer-urls",
            "http://localhost:2380",
            "--advertise-client-urls",
            "http://10.0.0.1:2379,http://n1.example:2379",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380",
            "--initial-cluster",
            "n1=http://10.0.0.1:2380",
            "--heartbeat-interval",
            "150",
            "--election-timeout",
            "1500",
            "--snapshot-count",
            "20000",
            "--auth-token-ttl",
            "60",
            "--listen-metrics-urls",
            "http://127.0.0.1:2381",
            "--wal-dir",
            "/fast/wal",
            "--grpc-keepalive-interval",
            "1h",
            "--grpc-keepalive-timeout",
            "10s",
            "--experimental-watch-progress-notify-interval",
            "5s",
        ])
        .serve
        .to_config()
        .unwrap();
        assert_eq!(config.listen_client, "127.0.0.1:2379".parse().unwrap());
        assert_eq!(
            config.listen_client_also,
            vec!["0.0.0.0:12379".parse().unwrap()]
        );
        assert_eq!(config.listen_peer, "127.0.0.1:2380".parse().unwrap());
        assert_eq!(
            config.advertise_client_urls(),
            ["http://10.0.0.1:2379", "http://n1.example:2379"]
        );
        assert_eq!(config.advertise_client_url(), "http://10.0.0.1:2379");
        assert_eq!(config.advertise_peer_url(), "http://10.0.0.1:2380");
        assert_eq!(
            (config.heartbeat_interval_ms, config.election_timeout_ms),
            (150, 1500)
        );
        assert_eq!(config.snapshot_entries, 20000);
        assert_eq!(config.auth_token_ttl_secs, 60);
        assert_eq!(
            config.listen_metrics,
            vec!["127.0.0.1:2381".parse().unwrap()]
        );
        assert_eq!(config.wal_dir, Some("/fast/wal".into()));
        assert_eq!(
            (
                config.grpc_keepalive_interval_ms,
                config.grpc_keepalive_timeout_ms
            ),
            (3_600_000, 10_000)
        );
        assert_eq!(config.watch_progress_notify_interval_ms, 5_000);
    }

    #[test]
    fn the_log_level_takes_etcds_names() {
        let level =
            |l: &str| Cli::try_parse_from(["cairn", "--log-level", l]).map(|c| c.serve.log_level);
        assert_eq!(level("debug").unwrap(), Some("debug"));
        assert_eq!(level("warn").unwrap(), Some("warn"));
        assert_eq!(level("fatal").unwrap(), Some("error"));
        assert!(level("verbose").is_err());
    }

    #[test]
    fn etcds_debug_flag_means_debug_logging_unless_a_level_is_given() {
        let level = |args: &[&str]| {
            let mut argv = vec!["cairn"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|c| c.serve.effective_log_level())
        };
        assert_eq!(level(&[]).unwrap(), "info");
        assert_eq!(level(&["--debug"]).unwrap(), "debug");
        assert_eq!(level(&["--debug=true"]).unwrap(), "debug");
        assert_eq!(level(&["--debug=false"]).unwrap(), "info");
        assert_eq!(level(&["--debug", "--log-level", "warn"]).unwrap(), "warn");
        assert!(level(&["--debug=maybe"]).is_err());
    }

    #[test]
    fn etcd_listen_urls_that_cannot_be_served_are_refused() {
        for (args, says) in [
            (
                &["--listen-client-urls", "https://127.0.0.1:2379"][..],
                "TLS is off",
            ),
            (
                &["--listen-client-urls", "http://db.example:2379"],
                "not a name",
            ),
            (&["--listen-client-urls", "unix://sock"], "must start with"),
            (&["--listen-client-urls", ","], "names no URL"),
            (
                &["--listen-metrics-urls", "https://127.0.0.1:2381"],
                "only http://",
            ),
            (
                &[
                    "--listen-peer-urls",
                    "http://127.0.0.1:1,http://127.0.0.1:2",
                ],
                "one address",
            ),
            (
                &["--advertise-client-urls", "http://a:1,b:2"],
                "advertise-client",
            ),
        ] {
            let cli = Cli::parse_from(["cairn"].iter().chain(args));
            let err = format!("{:#}", cli.serve.to_config().unwrap_err());
            assert!(err.contains(says), "{args:?}: {err}");
        }
        let both = Cli::try_parse_from([
            "cairn",
            "--listen-client",
            "127.0.0.1:1",
            "--listen-client-urls",
            "http://127.0.0.1:2",
        ]);
        assert!(both.is_err(), "one form or the other");
    }

    #[test]
    fn crl_files_are_etcds_flags() {
        let args = [
            "cairn",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "--trusted-ca-file",
            "ca.pem",
            "--client-cert-auth",
            "--client-crl-file",
            "crl.pem",
        ];
        let config = Cli::parse_from(args).serve.to_config().unwrap();
        assert_eq!(config.client_crl_file, Some(PathBuf::from("crl.pem")));
        assert_eq!(config.peer_crl_file, None);
        // Without client certificates there is nothing to check.
        let without_auth = args.iter().filter(|a| **a != "--client-cert-auth");
        let err = Cli::parse_from(without_auth).serve.to_config().unwrap_err();
        assert!(err.to_string().contains("client-crl-file"), "{err}");
    }

    /// etcd's `--cors` and `--host-whitelist`: comma lists, `*` by
    /// default; an origin that is not `scheme://host[:port]` is refused by
    /// the flag's name.
    #[test]
    fn cors_and_host_whitelist_flags_are_etcds() {
        let config = |args: &[&str]| {
            let args = std::iter::once("cairn").chain(args.iter().copied());
            Cli::parse_from(args).serve.to_config()
        };
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.cors, c.host_whitelist),
            (vec!["*".into()], vec!["*".into()])
        );
        let c = config(&[
            "--cors",
            "https://ui.example, http://10.0.0.1:8080,",
            "--host-whitelist",
            "localhost,127.0.0.1",
        ])
        .unwrap();
        assert_eq!(c.cors, ["https://ui.example", "http://10.0.0.1:8080"]);
        assert_eq!(c.host_whitelist, ["localhost", "127.0.0.1"]);
        let err = config(&["--cors", "ui.example"]).unwrap_err().to_string();
        assert!(err.contains("cors") && err.contains("ui.example"), "{err}");
    }

    #[test]
    fn auto_tls_flags_are_etcds() {
        let config = |args: &[&str]| {
            let args = std::iter::once("cairn").chain(args.iter().copied());
            Cli::parse_from(args).serve.to_config()
        };
        let c = config(&[]).unwrap();
        assert!(!c.auto_tls && !c.peer_auto_tls);
        assert_eq!(c.self_signed_cert_validity_years, 1);
        let c = config(&[
            "--auto-tls",
            "--peer-auto-tls",
            "--self-signed-cert-validity",
            "2",
        ])
        .unwrap();
        assert!(c.client_self_signed() && c.peer_self_signed());
        assert_eq!(c.self_signed_cert_validity_years, 2);
        assert!(c.advertise_client_url().starts_with("https://"));
        let err = config(&["--peer-auto-tls", "--peer-client-cert-auth"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("peer-client-cert-auth"), "{err}");
    }

    /// A CIS-hardened etcd unit's TLS flags are taken; ones rustls cannot
    /// honour are refused, naming the flag and the value.
    #[test]
    fn etcds_tls_hardening_flags_are_taken_or_refused_by_name() {
        let config = |args: &[&str]| {
            let tls = ["cairn", "--cert-file", "c.pem", "--key-file", "k.pem"];
            Cli::parse_from(tls.iter().chain(args)).serve.to_config()
        };
        let c = config(&[
            "--cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305,",
            "--tls-min-version",
            "TLS1.2",
            "--tls-max-version",
            "TLS1.3",
        ])
        .unwrap();
        assert_eq!(
            c.cipher_suites,
            [
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"
            ]
        );
        assert_eq!(c.tls_min_version.as_deref(), Some("TLS1.2"));
        assert_eq!(c.tls_max_version.as_deref(), Some("TLS1.3"));
        let c = config(&[]).unwrap();
        assert!(c.cipher_suites.is_empty() && c.tls_min_version.is_none());
        for (args, says) in [
            (
                &["--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"][..],
                &[
                    "cipher-suites",
                    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                    "rustls does not offer",
                ][..],
            ),
            (
                &["--cipher-suites", "TLS_NO_SUCH_SUITE"],
                &["cipher-suites", "TLS_NO_SUCH_SUITE"],
            ),
            (
                &["--tls-min-version", "TLS1.0"],
                &["tls-min-version", "TLS1.0"],
            ),
            (
                &["--tls-max-version", "TLS1.1"],
                &["tls-max-version", "TLS1.1"],
            ),
            (
                &["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
                &["tls-min-version", "above"],
            ),
            (
                &[
                    "--tls-min-version",
                    "TLS1.3",
                    "--cipher-suites",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                ],
                &["cipher-suites", "only TLS1.3"],
            ),
        ] {
            let err = format!("{:#}", config(args).unwrap_err());
            for said in says {
                assert!(err.contains(said), "{args:?}: {err}");
            }
        }
    }

    /// A listen URL list with an empty entry (a trailing comma) is taken
    /// with TLS on: the scheme check skips it, as the parsing does.
    #[test]
    fn a_trailing_comma_in_tls_listen_urls_is_skipped() {
        let with_tls = |urls: &str| {
            Cli::parse_from([
                "cairn",
                "--cert-file",
                "c.pem",
                "--key-file",
                "k.pem",
                "--listen-client-urls",
                urls,
            ])
            .serve
            .to_config()
        };
        let config = with_tls("https://127.0.0.1:1, ,").unwrap();
        assert_eq!(config.listen_client, "127.0.0.1:1".parse().unwrap());
        assert!(config.listen_client_also.is_empty());
        // A URL that does break the rule is still named.
        let err = with_tls("https://127.0.0.1:1,http://127.0.0.1:2/")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--listen-client-urls")
                && err.contains("\"http://127.0.0.1:2\"")
                && err.contains("TLS is on"),
            "{err}"
        );
    }

    #[test]
    fn the_initial_corrupt_check_and_force_new_cluster_are_flags_off_by_default() {
        let config = |args: &[&str]| {
            let args = std::iter::once("cairn").chain(args.iter().copied());
            Cli::parse_from(args).serve.to_config().unwrap()
        };
        assert!(!config(&[]).force_new_cluster);
        assert!(config(&["--force-new-cluster"]).force_new_cluster);
        assert!(!config(&["--force-new-cluster", "false"]).force_new_cluster);
        assert!(!config(&[]).initial_corrupt_check);
        assert!(config(&["--initial-corrupt-check"]).initial_corrupt_check);
        assert!(config(&["--initial-corrupt-check", "true"]).initial_corrupt_check);
        assert!(!config(&["--initial-corrupt-check", "false"]).initial_corrupt_check);
        assert!(config(&["--experimental-initial-corrupt-check"]).initial_corrupt_check);
        // etcd's name for the online check's interval takes a duration.
        let every = |args: &[&str]| config(args).corrupt_check_interval_ms;
        assert_eq!(every(&["--experimental-corrupt-check-time", "5m"]), 300_000);
        assert_eq!(every(&["--corrupt-check-interval-ms", "1500"]), 1_500);
        assert_eq!(every(&[]), 0);
    }

    #[test]
    fn invalid_settings_are_refused_with_the_setting_named() {
        let cli = Cli::parse_from(["cairn", "--election-timeout-ms", "10"]);
        let err = cli.serve.to_config().unwrap_err().to_string();
        assert!(err.contains("election-timeout-ms"), "{err}");
    }

    #[test]
    fn the_commit_notice_delay_is_a_flag_bounded_by_the_heartbeat() {
        let cli = Cli::parse_from(["cairn", "--commit-notice-delay-ms", "0"]);
        assert_eq!(cli.serve.to_config().unwrap().commit_notice_delay_ms, 0);
        let cli = Cli::parse_from(["cairn", "--commit-notice-delay-ms", "500"]);
        let err = cli.serve.to_config().unwrap_err().to_string();
        assert!(err.contains("commit-notice-delay-ms"), "{err}");
    }
}
