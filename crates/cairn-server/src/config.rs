//! Node settings: defaults, the TOML file, validation.
//!
//! Precedence (applied by the binary): flags > `CAIRN_*` environment > TOML
//! file > these defaults. `validate` refuses a bad combination at start-up
//! with a message naming the setting.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tls::{Port, TlsFiles, TlsPolicy};

/// The names of a generated certificate and its key in
/// [`ServerConfig::self_signed_dir`], as etcd names them.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// The largest `max_request_bytes` taken. A request becomes one log entry,
/// and an entry must fit one peer message (64 MiB,
/// `cairn_raft::network::DEFAULT_MAX_MESSAGE_BYTES`) beside the replication
/// batch it ends (16 MiB, `cairn_raft::log_store::DEFAULT_REPLICATION_BATCH_BYTES`):
/// with 62 MiB allowed, a follower catching up over a 62 MiB entry could
/// not be sent it and stayed behind (`large_values.rs`; until a snapshot
/// replaced that part of the log). etcd recommends at most 10 MiB.
pub const MAX_REQUEST_BYTES_LIMIT: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Human-readable member name, unique in the cluster.
    pub name: String,
    /// Where the log, state and node identity live.
    pub data_dir: PathBuf,
    /// Where the Raft log's segment files live instead of
    /// `<data_dir>/raft-wal` (etcd's `--wal-dir`): a disk of their own
    /// keeps the log's fsyncs from queueing behind other writes.
    pub wal_dir: Option<PathBuf>,
    /// Address the etcd-compatible client API binds to.
    pub listen_client: SocketAddr,
    /// More addresses serving the client API, as etcd's
    /// `--listen-client-urls` lists several (e.g. loopback and a LAN
    /// address); the first of that list is `listen_client`.
    pub listen_client_also: Vec<SocketAddr>,
    /// Addresses serving only `GET /health` and `GET /metrics`, over plain
    /// HTTP (etcd's `--listen-metrics-urls`): for probes and scrapers that
    /// should not reach the client API or need its certificates.
    pub listen_metrics: Vec<SocketAddr>,
    /// Address the peer (Raft) API binds to.
    pub listen_peer: SocketAddr,
    /// Client URLs other members and clients are told, comma-separated
    /// (etcd's `--advertise-client-urls`); defaults to the listen address.
    /// The first is the one a follower names as the leader's.
    pub advertise_client: Option<String>,
    /// Peer URL other members dial; defaults to the listen address.
    pub advertise_peer: Option<String>,
    /// `name=peer_url,...` of the first members, for bootstrapping only; an
    /// initialised data dir ignores it.
    pub initial_cluster: String,
    /// `new` bootstraps the cluster; `existing` joins one that already added
    /// this member (`member add`).
    pub initial_cluster_state: ClusterState,
    /// Shared by members of one cluster; mixed into the cluster ID.
    pub initial_cluster_token: String,
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout; the upper is twice it.
    pub election_timeout_ms: u64,
    /// Largest client request accepted (etcd `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most ops in one txn branch (etcd `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Most watchers one watch stream may hold: each costs memory on the
    /// member, and a client asks for them. etcd has no bound; clients
    /// multiplex their watchers over few streams, so it is generous.
    pub max_watchers_per_stream: usize,
    /// Most watchers all client watch streams on this member may hold
    /// together.
    pub max_watchers: usize,
    /// Past this many bytes of keyspace a NOSPACE alarm is raised and
    /// writes that add data are refused.
    pub quota_backend_bytes: u64,
    /// Log entries applied between two snapshots (etcd
    /// `--snapshot-count`); the log behind a snapshot is purged. Also the
    /// entries kept behind a snapshot for followers that lag a little.
    pub snapshot_entries: u64,
    /// How often the leader advances cluster time (and expires leases).
    pub tick_interval_ms: u64,
    /// Most leases expired per tick, so an expiry storm cannot stall writes.
    pub max_lease_expiries_per_tick: u32,
    /// Budget for a client request that waits on a leader or consensus.
    pub request_timeout_ms: u64,
    /// redb's page cache. Reads are served from the in-memory keyspace and
    /// replication reads from the WAL, so the cache only holds pages the
    /// writes of state rows touch; redb's 1 GiB default would be most of a
    /// member's memory. 8 MiB: 64 MiB added ~75 MiB RSS per member and no
    /// throughput (put c=64, claims register; BENCHMARKS.md, session 6).
    pub storage_cache_bytes: usize,
    /// How long the leader may hold back a message that only tells a
    /// follower the new commit index, so it rides with the next entries
    /// instead of waking the follower on its own (0: send at once). Bounds
    /// how far a follower's serializable reads and watchers trail the
    /// commit when writes stop; linearizable reads are not delayed.
    pub commit_notice_delay_ms: u64,
    /// The client port's certificate (etcd `--cert-file`); with `key_file`
    /// it turns TLS on for clients.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (etcd `--key-file`).
    pub key_file: Option<PathBuf>,
    /// The CA that signs the certificates clients show (etcd
    /// `--trusted-ca-file`); used with `client_cert_auth`.
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate signed by `trusted_ca_file`
    /// (etcd `--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Certificate revocation lists, PEM: client certificates they list
    /// are refused at the handshake (etcd `--client-crl-file`). Read again
    /// when the file changes, so a revocation needs no restart.
    pub client_crl_file: Option<PathBuf>,
    /// The peer port's certificate (etcd `--peer-cert-file`), also shown
    /// when dialing other members; with `peer_key_file` and
    /// `peer_trusted_ca_file` it turns TLS on between members.
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of `peer_cert_file` (etcd `--peer-key-file`).
    pub peer_key_file: Option<PathBuf>,
    /// The CA that signs the members' certificates (etcd
    /// `--peer-trusted-ca-file`): a member dialed must show one.
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peer calls without a certificate signed by
    /// `peer_trusted_ca_file` (etcd `--peer-client-cert-auth`).
    pub peer_client_cert_auth: bool,
    /// Revocation lists for the certificates members show on the peer
    /// port (etcd `--peer-crl-file`).
    pub peer_crl_file: Option<PathBuf>,
    /// The common name a member's certificate must carry for the peer
    /// port to take its calls (etcd `--peer-cert-allowed-cn`; needs
    /// `peer_client_cert_auth`): the CA may sign other certificates too.
    pub peer_cert_allowed_cn: Option<String>,
    /// How often the client port pings a quiet HTTP/2 connection (etcd's
    /// `--grpc-keepalive-interval`, 2 h): a client gone without closing
    /// its connection (a host lost, a NAT forgetting it) is found, and its
    /// watchers and streams freed.
    pub grpc_keepalive_interval_ms: u64,
    /// How long an unanswered ping waits before the connection is closed
    /// (etcd's `--grpc-keepalive-timeout`, 20 s).
    pub grpc_keepalive_timeout_ms: u64,
    /// How often a watcher that asked for progress notifications and saw
    /// no event gets one (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 min; Kubernetes
    /// setups lower it to seconds).
    pub watch_progress_notify_interval_ms: u64,
    /// etcd `--auth-token`: `simple` (the default: Cairn's own signed
    /// tokens) or `jwt,sign-method=RS256,pub-key=FILE,priv-key=FILE,ttl=5m`
    /// (etcd's JWT tokens; see `auth::jwt`).
    pub auth_token: String,
    /// Serve the client port with a self-signed certificate this member
    /// generates under `<data_dir>/fixtures/client/` (and keeps for later
    /// starts) when no `cert_file`/`key_file` are given (etcd
    /// `--auto-tls`). Clients cannot check it against a CA: they skip the
    /// check or trust that certificate file.
    pub auto_tls: bool,
    /// The same for the peer port, under `<data_dir>/fixtures/peer/`
    /// (etcd `--peer-auto-tls`). The member then dials other members over
    /// TLS without checking their certificates, which are self-signed too:
    /// the links are encrypted but not authenticated.
    pub peer_auto_tls: bool,
    /// The cipher suites both ports serve and the peer port dials with,
    /// by Go's (IANA's) names (etcd `--cipher-suites`); empty: every suite
    /// rustls has. As in Go, a list of TLS 1.2 suites leaves TLS 1.3 on
    /// with all its suites; naming TLS 1.3 suites keeps only those
    /// (`tls::policy`). Hardening guides set it; a name rustls does not
    /// implement (CBC, RSA key exchange) is left out with a warning, and a
    /// list of nothing else is refused.
    pub cipher_suites: Vec<String>,
    /// The oldest TLS version either port speaks (etcd
    /// `--tls-min-version`): `TLS1.2` (unset) or `TLS1.3`.
    pub tls_min_version: Option<String>,
    /// The newest TLS version either port speaks (etcd
    /// `--tls-max-version`): `TLS1.3` (unset) or `TLS1.2`.
    pub tls_max_version: Option<String>,
    /// How long a generated certificate is valid, in years (etcd
    /// `--self-signed-cert-validity`). Counted from its generation; a
    /// member reuses the one it has until its files are deleted.
    pub self_signed_cert_validity_years: u32,
    /// How long a token from `Authenticate` is good for (etcd
    /// `--auth-token-ttl`; a JWT's is its `ttl=`); clients authenticate
    /// again when theirs ends.
    pub auth_token_ttl_secs: u64,
    /// PBKDF2 iterations for new password credentials: the cost of one
    /// login, and of each guess an attacker with the hashes makes.
    pub auth_password_iterations: u32,
    /// etcd `--auto-compaction-mode`: `periodic` (keep a time window of
    /// history) or `revision` (keep a number of revisions).
    pub auto_compaction_mode: String,
    /// etcd `--auto-compaction-retention`: a duration in periodic mode (a
    /// bare number is hours), a count in revision mode; `0` (the default,
    /// as etcd's) keeps every revision until a client compacts.
    pub auto_compaction_retention: String,
    /// How often the leader compares every member's keyspace hash and
    /// raises the CORRUPT alarm on one unlike the majority (etcd's
    /// `--experimental-corrupt-check-time`); 0, the default as in etcd,
    /// turns it off.
    pub corrupt_check_interval_ms: u64,
    /// At start, a member on data of its own compares its keyspace hash
    /// with the other members' once it has caught up with the leader, and
    /// refuses to start if a majority hold another (etcd's
    /// `--experimental-initial-corrupt-check`); off by default, as etcd's.
    pub initial_corrupt_check: bool,
    /// Start this member, on its existing data, as a cluster of one (etcd's
    /// `--force-new-cluster`): for a cluster that lost its quorum for good.
    /// The member keeps its ID, the cluster ID, every entry in its log and
    /// its keyspace, and drops every other member from the membership;
    /// `member add` then grows the cluster again. The dropped members must
    /// not come back with their old data (wipe it): two of them would
    /// still be a quorum of the old membership. As in etcd, every start
    /// with it set forces again (dropping members added since), so take it
    /// off once the member runs; a member already alone in its membership
    /// starts as usual. Ignored on an empty data dir.
    pub force_new_cluster: bool,
    /// Origins whose browser pages may read the client port's HTTP
    /// answers (etcd `--cors`): `*` (the default, as etcd's) for any, or
    /// `scheme://host[:port]` origins; empty allows any too
    /// (`services/http_access.rs`).
    pub cors: Vec<String>,
    /// Host names plain-HTTP requests to the client port may be addressed
    /// to (etcd `--host-whitelist`): `*` (the default) for any; e.g.
    /// `localhost,127.0.0.1` keeps pages of other sites out of a member on
    /// loopback (DNS rebinding). Not checked over TLS.
    pub host_whitelist: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    #[default]
    New,
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(ConfigError::Invalid {
                setting: "initial-cluster-state",
                reason: format!("{other:?} is neither \"new\" nor \"existing\""),
            }),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "default".into(),
            data_dir: PathBuf::from("cairn-data"),
            wal_dir: None,
            listen_client: "127.0.0.1:2379".parse().expect("literal address"),
            listen_client_also: Vec::new(),
            listen_metrics: Vec::new(),
            listen_peer: "127.0.0.1:2380".parse().expect("literal address"),
            advertise_client: None,
            advertise_peer: None,
            initial_cluster: String::new(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "cairn-cluster".into(),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_watchers_per_stream: 100_000,
            max_watchers: 1_000_000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            // etcd's --snapshot-count default. Each snapshot copies and
            // encodes the whole store, history included.
            snapshot_entries: 100_000,
            tick_interval_ms: 500,
            max_lease_expiries_per_tick: 1000,
            request_timeout_ms: 5000,
            storage_cache_bytes: 8 * 1024 * 1024,
            commit_notice_delay_ms: 2,
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
            client_crl_file: None,
            peer_cert_file: None,
            peer_key_file: None,
            peer_trusted_ca_file: None,
            peer_client_cert_auth: false,
            peer_crl_file: None,
            peer_cert_allowed_cn: None,
            grpc_keepalive_interval_ms: 2 * 3600 * 1000,
            grpc_keepalive_timeout_ms: 20_000,
            watch_progress_notify_interval_ms: 10 * 60 * 1000,
            auth_token: "simple".to_string(),
            auto_tls: false,
            peer_auto_tls: false,
            cipher_suites: Vec::new(),
            tls_min_version: None,
            tls_max_version: None,
            self_signed_cert_validity_years: 1,
            auth_token_ttl_secs: 300,
            auth_password_iterations: crate::auth::password::ITERATIONS,
            auto_compaction_mode: "periodic".into(),
            auto_compaction_retention: "0".into(),
            corrupt_check_interval_ms: 0,
            initial_corrupt_check: false,
            force_new_cluster: false,
            cors: vec!["*".to_string()],
            host_whitelist: vec!["*".to_string()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for Cairn: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// One member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_url: String,
}

impl ServerConfig {
    /// The automatic compaction the two settings ask for.
    /// `auth_token`, parsed (its key files are read at start).
    pub fn token_spec(&self) -> Result<crate::auth::token::TokenSpec, String> {
        crate::auth::token::TokenSpec::parse(&self.auth_token)
    }

    pub fn auto_compaction(&self) -> Result<crate::compactor::AutoCompaction, String> {
        crate::compactor::AutoCompaction::parse(
            &self.auto_compaction_mode,
            &self.auto_compaction_retention,
        )
    }

    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source: Box::new(source),
        })
    }

    /// The first of [`Self::advertise_client_urls`]: where a follower
    /// sends clients for the leader.
    pub fn advertise_client_url(&self) -> String {
        self.advertise_client_urls().swap_remove(0)
    }

    /// Every client URL this member advertises (in the member list); at
    /// least one.
    pub fn advertise_client_urls(&self) -> Vec<String> {
        let listed: Vec<String> = self
            .advertise_client
            .iter()
            .flat_map(|urls| urls.split(','))
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_string)
            .collect();
        if listed.is_empty() {
            vec![format!(
                "{}{}",
                scheme(self.client_tls().is_some()),
                self.listen_client
            )]
        } else {
            listed
        }
    }

    pub fn advertise_peer_url(&self) -> String {
        self.advertise_peer
            .clone()
            .unwrap_or_else(|| format!("{}{}", scheme(self.peer_tls().is_some()), self.listen_peer))
    }

    /// Whether the client port serves a certificate this member generates:
    /// `auto_tls` without certificate files (given files win, as in etcd).
    pub fn client_self_signed(&self) -> bool {
        self.client_tls().is_some_and(|f| f.self_signed)
    }

    /// Whether the peer port serves a certificate this member generates.
    pub fn peer_self_signed(&self) -> bool {
        self.peer_tls().is_some_and(|f| f.self_signed)
    }

    /// Where a port's generated certificate and key live (etcd's paths):
    /// `<data_dir>/fixtures/<port>/cert.pem` and `key.pem`.
    pub fn self_signed_dir(&self, port: Port) -> PathBuf {
        let port = match port {
            Port::Client => "client",
            Port::Peer => "peer",
        };
        self.data_dir.join("fixtures").join(port)
    }

    /// A port's certificate and key: the files given, or, with auto TLS
    /// and no files, the ones this member generates (then `true`); `None`
    /// without TLS.
    fn cert_and_key<'a>(
        &self,
        port: Port,
        files: (&'a Option<PathBuf>, &'a Option<PathBuf>),
        auto: bool,
    ) -> Option<(Cow<'a, Path>, Cow<'a, Path>, bool)> {
        match files {
            (Some(cert), Some(key)) => Some((cert.into(), key.into(), false)),
            (None, None) if auto => {
                let dir = self.self_signed_dir(port);
                Some((dir.join(CERT_FILE).into(), dir.join(KEY_FILE).into(), true))
            }
            _ => None,
        }
    }

    /// The client port's TLS files, when it serves TLS.
    pub fn client_tls(&self) -> Option<TlsFiles<'_>> {
        let files = (&self.cert_file, &self.key_file);
        let (cert, key, self_signed) = self.cert_and_key(Port::Client, files, self.auto_tls)?;
        let [cert_setting, key_setting] = match self_signed {
            true => ["auto-tls"; 2],
            false => ["cert-file", "key-file"],
        };
        Some(TlsFiles {
            settings: [
                cert_setting,
                key_setting,
                "trusted-ca-file",
                "client-crl-file",
            ],
            cert,
            key,
            self_signed,
            trusted_ca: self.trusted_ca_file.as_deref(),
            client_cert_auth: self.client_cert_auth,
            crl: self.client_crl_file.as_deref(),
            allowed_cn: None,
        })
    }

    /// The peer port's TLS files, when members talk TLS.
    pub fn peer_tls(&self) -> Option<TlsFiles<'_>> {
        let files = (&self.peer_cert_file, &self.peer_key_file);
        let (cert, key, self_signed) = self.cert_and_key(Port::Peer, files, self.peer_auto_tls)?;
        let [cert_setting, key_setting] = match self_signed {
            true => ["peer-auto-tls"; 2],
            false => ["peer-cert-file", "peer-key-file"],
        };
        Some(TlsFiles {
            settings: [
                cert_setting,
                key_setting,
                "peer-trusted-ca-file",
                "peer-crl-file",
            ],
            cert,
            key,
            self_signed,
            trusted_ca: self.peer_trusted_ca_file.as_deref(),
            client_cert_auth: self.peer_client_cert_auth,
            crl: self.peer_crl_file.as_deref(),
            allowed_cn: self.peer_cert_allowed_cn.as_deref(),
        })
    }

    /// The cipher suites and TLS versions both ports use, from
    /// `cipher_suites`, `tls_min_version` and `tls_max_version`.
    pub fn tls_policy(&self) -> Result<TlsPolicy, ConfigError> {
        TlsPolicy::parse(
            &self.cipher_suites,
            self.tls_min_version.as_deref(),
            self.tls_max_version.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid {
            setting: e.setting(),
            reason: e.to_string(),
        })
    }

    /// Parse `--initial-cluster`; empty means "just me".
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        if self.initial_cluster.trim().is_empty() {
            return Ok(vec![InitialMember {
                name: self.name.clone(),
                peer_url: self.advertise_peer_url(),
            }]);
        }
        let invalid = |reason: String| ConfigError::Invalid {
            setting: "initial-cluster",
            reason,
        };
        let mut members: Vec<InitialMember> = Vec::new();
        for part in self
            .initial_cluster
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| invalid(format!("{part:?} is not name=url")))?;
            check_url(url).map_err(|r| invalid(format!("{name}: {r}")))?;
            if members.iter().any(|m| m.name == name) {
                return Err(invalid(format!("member name {name:?} appears twice")));
            }
            if members.iter().any(|m| m.peer_url == url) {
                return Err(invalid(format!("peer URL {url:?} appears twice")));
            }
            members.push(InitialMember {
                name: name.to_string(),
                peer_url: url.to_string(),
            });
        }
        if !members.iter().any(|m| m.name == self.name) {
            return Err(invalid(format!(
                "this member's name {:?} is not in it",
                self.name
            )));
        }
        Ok(members)
    }

    /// Every check but whether URLs' schemes follow this process's TLS
    /// settings: for `cairn snapshot restore`, which serves nothing and
    /// names a TLS cluster's `https://` peers without its certificates.
    pub fn validate_for_restore(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        if self.name.is_empty() {
            return invalid("name", "must not be empty");
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat-interval-ms", "must be > 0");
        }
        if self.election_timeout_ms < 5 * self.heartbeat_interval_ms {
            return invalid(
                "election-timeout-ms",
                "must be at least 5 x heartbeat-interval-ms",
            );
        }
        if !(1024..=MAX_REQUEST_BYTES_LIMIT).contains(&self.max_request_bytes) {
            return invalid("max-request-bytes", "must be between 1 KiB and 32 MiB");
        }
        if self.max_txn_ops == 0 {
            return invalid("max-txn-ops", "must be > 0");
        }
        for origin in &self.cors {
            if let Err(e) = crate::services::http_access::check_origin(origin) {
                return invalid("cors", &e);
            }
        }
        if self.max_watchers_per_stream == 0 {
            return invalid("max-watchers-per-stream", "must be > 0");
        }
        if self.max_watchers < self.max_watchers_per_stream {
            return invalid("max-watchers", "must be at least max-watchers-per-stream");
        }
        if self.auth_token_ttl_secs == 0 || self.auth_token_ttl_secs > 30 * 24 * 3600 {
            return invalid(
                "auth-token-ttl-secs",
                "must be between 1 and 2592000 (30 days)",
            );
        }
        for (setting, ms) in [
            ("grpc-keepalive-interval", self.grpc_keepalive_interval_ms),
            ("grpc-keepalive-timeout", self.grpc_keepalive_timeout_ms),
            (
                "watch-progress-notify-interval",
                self.watch_progress_notify_interval_ms,
            ),
        ] {
            if ms == 0 || ms > 30 * 24 * 3600 * 1000 {
                return invalid(setting, "must be between 1 ms and 720 h");
            }
        }
        if let Err(e) = self.token_spec() {
            return invalid("auth-token", &e);
        }
        if self.auth_password_iterations == 0 {
            return invalid("auth-password-iterations", "must be > 0");
        }
        if let Err(e) = self.auto_compaction() {
            return invalid("auto-compaction-retention", &e);
        }
        if self.quota_backend_bytes == 0 {
            return invalid("quota-backend-bytes", "must be > 0");
        }
        if self.snapshot_entries == 0 {
            return invalid("snapshot-entries", "must be > 0");
        }
        if self.tick_interval_ms == 0 || self.tick_interval_ms > 10_000 {
            return invalid("tick-interval-ms", "must be between 1 and 10000");
        }
        if self.commit_notice_delay_ms > self.heartbeat_interval_ms {
            return invalid(
                "commit-notice-delay-ms",
                "must not exceed heartbeat-interval-ms",
            );
        }
        if self.storage_cache_bytes < 1024 * 1024 {
            return invalid("storage-cache-bytes", "must be at least 1 MiB");
        }
        if self.max_lease_expiries_per_tick == 0 {
            return invalid("max-lease-expiries-per-tick", "must be > 0");
        }
        if self.request_timeout_ms < 100 {
            return invalid("request-timeout-ms", "must be at least 100");
        }
        self.validate_tls()?;
        if self.advertise_client.is_some() {
            for url in self.advertise_client_urls() {
                if let Err(r) = check_url(&url) {
                    return invalid("advertise-client", &r);
                }
            }
        }
        if let Some(url) = &self.advertise_peer {
            if let Err(r) = check_url(url) {
                return invalid("advertise-peer", &r);
            }
        }
        self.initial_members()?;
        Ok(())
    }

    /// [`Self::validate_for_restore`], and every URL's scheme follows
    /// this member's TLS settings: what `cairn serve` checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_for_restore()?;
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        for url in self.advertise_client_urls() {
            if let Err(r) = self.check_port_scheme(Port::Client, &url) {
                return invalid("advertise-client", r);
            }
        }
        if let Err(r) = self.check_port_scheme(Port::Peer, &self.advertise_peer_url()) {
            return invalid("advertise-peer", r);
        }
        for m in self.initial_members()? {
            if let Err(r) = self.check_port_scheme(Port::Peer, &m.peer_url) {
                return invalid("initial-cluster", format!("{}: {r}", m.name));
            }
        }
        Ok(())
    }

    /// A URL of `port` (advertised, listened on, or a member's peer URL)
    /// is `scheme://host:port`, `https` exactly when that port runs TLS; a
    /// trailing `/` is taken, as etcd's listen URLs may end in one.
    pub fn check_port_scheme(&self, port: Port, url: &str) -> Result<(), String> {
        // The setting that turned the port's TLS on, or the ones that
        // would, for messages.
        let (tls, off) = match port {
            Port::Client => (
                self.client_tls().map(|f| f.settings[0]),
                "cert-file or auto-tls",
            ),
            Port::Peer => (
                self.peer_tls().map(|f| f.settings[0]),
                "peer-cert-file or peer-auto-tls",
            ),
        };
        check_scheme(url.strip_suffix('/').unwrap_or(url), tls, off)
    }

    /// Each port's TLS files come as a whole; the CA and client
    /// certificates only with TLS on.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_string(),
            })
        };
        // Flag names, the files, client-cert-auth, auto TLS, and whether
        // dialing with it (the peer port) needs the CA.
        for ([cert_s, key_s, ca_s, auth_s, auto_s], cert, key, ca, auth, auto, dials) in [
            (
                [
                    "cert-file",
                    "key-file",
                    "trusted-ca-file",
                    "client-cert-auth",
                    "auto-tls",
                ],
                &self.cert_file,
                &self.key_file,
                &self.trusted_ca_file,
                self.client_cert_auth,
                self.auto_tls,
                false,
            ),
            (
                [
                    "peer-cert-file",
                    "peer-key-file",
                    "peer-trusted-ca-file",
                    "peer-client-cert-auth",
                    "peer-auto-tls",
                ],
                &self.peer_cert_file,
                &self.peer_key_file,
                &self.peer_trusted_ca_file,
                self.peer_client_cert_auth,
                self.peer_auto_tls,
                true,
            ),
        ] {
            let tls_off = format!("needs {cert_s} and {key_s}, or {auto_s} (TLS on)");
            match (cert.is_some(), key.is_some()) {
                (true, false) => return invalid(key_s, &format!("is needed with {cert_s}")),
                (false, true) => return invalid(cert_s, &format!("is needed with {key_s}")),
                (false, false) if !auto && ca.is_some() => return invalid(ca_s, &tls_off),
                (false, false) if !auto && auth => return invalid(auth_s, &tls_off),
                _ => {}
            }
            // Every member's generated certificate is its own issuer: no
            // CA signs the others', so none can be asked for or checked.
            // (etcd takes these and then refuses every member's calls.)
            let self_signed = auto && cert.is_none();
            if dials && self_signed && auth {
                return invalid(
                    auth_s,
                    &format!("cannot be used with {auto_s}: no CA signs the members' self-signed certificates"),
                );
            }
            if dials && self_signed && ca.is_some() {
                return invalid(
                    ca_s,
                    &format!("is not used with {auto_s}: members dial each other without checking their self-signed certificates"),
                );
            }
            if auth && ca.is_none() {
                return invalid(
                    auth_s,
                    &format!("needs {ca_s}: the CA client certificates must be signed by"),
                );
            }
            if dials && cert.is_some() && ca.is_none() {
                return invalid(
                    ca_s,
                    "is needed with peer TLS: a member checks the members it dials with it",
                );
            }
        }
        self.tls_policy()?;
        if self.self_signed_cert_validity_years == 0 || self.self_signed_cert_validity_years > 100 {
            return invalid(
                "self-signed-cert-validity",
                "must be between 1 and 100 (years)",
            );
        }
        for (crl_s, crl, auth_s, auth) in [
            (
                "client-crl-file",
                &self.client_crl_file,
                "client-cert-auth",
                self.client_cert_auth,
            ),
            (
                "peer-crl-file",
                &self.peer_crl_file,
                "peer-client-cert-auth",
                self.peer_client_cert_auth,
            ),
        ] {
            if crl.is_some() && !auth {
                return invalid(
                    crl_s,
                    &format!("needs {auth_s}: only the certificates it asks for are checked"),
                );
            }
        }
        if let Some(cn) = &self.peer_cert_allowed_cn {
            if !self.peer_client_cert_auth {
                return invalid(
                    "peer-cert-allowed-cn",
                    "needs peer-client-cert-auth: only the certificates it asks for are checked",
                );
            }
            if cn.is_empty() {
                return invalid("peer-cert-allowed-cn", "must not be empty");
            }
        }
        Ok(())
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls {
        "https://"
    } else {
        "http://"
    }
}

/// A `scheme://host:port` URL; whether it is `https`.
fn check_url(url: &str) -> Result<bool, String> {
    let (rest, https) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} has no port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{url:?} is not {}host:port", scheme(https)));
    }
    Ok(https)
}

/// A URL of a port this member serves (or dials peers at) says https
/// exactly when that port runs TLS: `tls` names the setting that turned it
/// on, `off` the ones that would.
fn check_scheme(url: &str, tls: Option<&str>, off: &str) -> Result<(), String> {
    match (check_url(url)?, tls) {
        (true, None) => Err(format!("{url:?} is https:// but TLS is off (no {off})")),
        (false, Some(on)) => Err(format!("{url:?} is http:// but TLS is on ({on})")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn initial_cluster_is_parsed_and_checked() {
        let mut c = ServerConfig {
            name: "n2".into(),
            ..Default::default()
        };
        c.initial_cluster = "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2381".into();
        let m = c.initial_members().unwrap();
        assert_eq!(
            m[1],
            InitialMember {
                name: "n2".into(),
                peer_url: "http://127.0.0.1:2381".into()
            }
        );
        c.initial_cluster = "n1=http://127.0.0.1:2380".into();
        assert!(c.validate().unwrap_err().to_string().contains("not in it"));
        c.initial_cluster = "n2=127.0.0.1:2380".into();
        assert!(c.validate().unwrap_err().to_string().contains("http://"));
    }

    /// Each case spoils a config with TLS on both ports; the refusal must
    /// name the setting.
    #[test]
    fn auto_compaction_settings_are_checked_at_start() {
        let with = |mode: &str, retention: &str| ServerConfig {
            auto_compaction_mode: mode.into(),
            auto_compaction_retention: retention.into(),
            ..Default::default()
        };
        assert!(with("periodic", "1h").validate().is_ok());
        assert!(with("revision", "1000").validate().is_ok());
        for (mode, retention) in [("periodic", "soon"), ("revision", "1h"), ("daily", "1")] {
            let err = with(mode, retention).validate().unwrap_err().to_string();
            assert!(err.contains("auto-compaction-retention"), "{err}");
        }
    }

    #[test]
    fn tls_settings_come_whole_and_urls_follow_them() {
        let tls = || ServerConfig {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            trusted_ca_file: Some("ca.pem".into()),
            client_cert_auth: true,
            peer_cert_file: Some("pc.pem".into()),
            peer_key_file: Some("pk.pem".into()),
            peer_trusted_ca_file: Some("pca.pem".into()),
            peer_client_cert_auth: true,
            ..Default::default()
        };
        let c = tls();
        c.validate().unwrap();
        assert_eq!(c.advertise_client_url(), "https://127.0.0.1:2379");
        assert_eq!(c.advertise_peer_url(), "https://127.0.0.1:2380");
        assert_eq!(
            ServerConfig::default().advertise_peer_url(),
            "http://127.0.0.1:2380"
        );
        type Spoil = fn(&mut ServerConfig);
        let cases: Vec<(&str, Spoil)> = vec![
            ("key-file", |c| c.key_file = None),
            ("cert-file", |c| c.cert_file = None),
            ("client-cert-auth", |c| c.trusted_ca_file = None),
            ("trusted-ca-file", |c| {
                c.cert_file = None;
                c.key_file = None;
            }),
            ("peer-key-file", |c| c.peer_key_file = None),
            ("peer-trusted-ca-file", |c| {
                c.peer_trusted_ca_file = None;
                c.peer_client_cert_auth = false;
            }),
            ("peer-client-cert-auth", |c| {
                c.peer_cert_file = None;
                c.peer_key_file = None;
                c.peer_trusted_ca_file = None;
            }),
            ("client-crl-file", |c| {
                c.client_crl_file = Some("crl.pem".into());
                c.client_cert_auth = false;
            }),
            ("peer-crl-file", |c| {
                c.peer_crl_file = Some("crl.pem".into());
                c.peer_client_cert_auth = false;
            }),
            ("advertise-client", |c| {
                c.advertise_client = Some("http://h:1".into())
            }),
            ("advertise-peer", |c| {
                c.advertise_peer = Some("http://h:2".into())
            }),
            ("initial-cluster", |c| {
                c.initial_cluster = "default=http://h:2".into()
            }),
            ("advertise-client", |c| {
                c.cert_file = None;
                c.key_file = None;
                c.trusted_ca_file = None;
                c.client_cert_auth = false;
                c.advertise_client = Some("https://h:1".into());
            }),
        ];
        for (setting, spoil) in cases {
            let mut c = tls();
            spoil(&mut c);
            let err = c.validate().expect_err(setting).to_string();
            assert!(
                err.contains(&format!("setting {setting}:")),
                "{setting}: {err}"
            );
        }
        let mut c = tls();
        c.initial_cluster = "default=https://h:2,b=https://h:3".into();
        c.validate().unwrap();
        // A restore names a TLS cluster's peers without its certificates.
        let restore = ServerConfig {
            initial_cluster: "default=https://h:2,b=https://h:3".into(),
            advertise_peer: Some("https://h:2".into()),
            ..Default::default()
        };
        assert!(restore.validate().is_err());
        restore.validate_for_restore().unwrap();
    }

    /// etcd's hardening settings are validated with the rest, each
    /// refusal naming its setting.
    #[test]
    fn cipher_suites_and_tls_versions_are_checked() {
        let with = |suites: &[&str], min: Option<&str>, max: Option<&str>| ServerConfig {
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
            tls_min_version: min.map(str::to_string),
            tls_max_version: max.map(str::to_string),
            ..Default::default()
        };
        with(
            &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            Some("TLS1.2"),
            Some("TLS1.2"),
        )
        .validate()
        .unwrap();
        for (c, setting) in [
            (
                with(&["TLS_RSA_WITH_AES_128_CBC_SHA"], None, None),
                "cipher-suites",
            ),
            (with(&[], Some("TLS1.1"), None), "tls-min-version"),
            (with(&[], None, Some("SSL3")), "tls-max-version"),
            (with(&[], Some("TLS1.3"), Some("TLS1.2")), "tls-min-version"),
        ] {
            match c.validate() {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting),
                other => panic!("{setting}: {other:?}"),
            }
        }
    }

    #[test]
    fn auto_tls_turns_tls_on_with_a_certificate_in_the_data_dir() {
        let auto = || ServerConfig {
            data_dir: "/var/lib/cairn".into(),
            auto_tls: true,
            peer_auto_tls: true,
            initial_cluster: "default=https://127.0.0.1:2380,b=https://h:3".into(),
            ..Default::default()
        };
        let c = auto();
        c.validate().unwrap();
        assert_eq!(c.advertise_client_url(), "https://127.0.0.1:2379");
        assert_eq!(c.advertise_peer_url(), "https://127.0.0.1:2380");
        let client = c.client_tls().expect("client TLS on");
        assert!(client.self_signed);
        assert_eq!(client.settings[0], "auto-tls");
        assert_eq!(
            client.cert,
            std::path::Path::new("/var/lib/cairn/fixtures/client/cert.pem")
        );
        let peer = c.peer_tls().expect("peer TLS on");
        assert!(peer.self_signed);
        assert_eq!(
            peer.key,
            std::path::Path::new("/var/lib/cairn/fixtures/peer/key.pem")
        );

        // Given files win, as in etcd.
        let mut c = auto();
        c.cert_file = Some("c.pem".into());
        c.key_file = Some("k.pem".into());
        let client = c.client_tls().unwrap();
        assert!(!client.self_signed && !c.client_self_signed());
        assert_eq!(client.cert, std::path::Path::new("c.pem"));
        assert_eq!(client.settings[0], "cert-file");

        // Clients may still be asked for certificates from a CA.
        let mut c = auto();
        c.trusted_ca_file = Some("ca.pem".into());
        c.client_cert_auth = true;
        c.validate().unwrap();

        type Spoil = fn(&mut ServerConfig);
        let cases: Vec<(&str, &str, Spoil)> = vec![
            // No CA signs the members' own certificates.
            ("peer-client-cert-auth", "peer-auto-tls", |c| {
                c.peer_client_cert_auth = true
            }),
            ("peer-trusted-ca-file", "peer-auto-tls", |c| {
                c.peer_trusted_ca_file = Some("ca.pem".into())
            }),
            ("initial-cluster", "peer-auto-tls", |c| {
                c.initial_cluster = "default=http://127.0.0.1:2380".into()
            }),
            ("advertise-client", "auto-tls", |c| {
                c.advertise_client = Some("http://h:1".into())
            }),
            ("advertise-client", "cert-file or auto-tls", |c| {
                c.auto_tls = false;
                c.advertise_client = Some("https://h:1".into())
            }),
            ("self-signed-cert-validity", "years", |c| {
                c.self_signed_cert_validity_years = 0
            }),
        ];
        for (setting, says, spoil) in cases {
            let mut c = auto();
            spoil(&mut c);
            let err = c.validate().expect_err(setting).to_string();
            assert!(
                err.contains(&format!("setting {setting}:")) && err.contains(says),
                "{setting}: {err}"
            );
        }
    }

    #[test]
    fn bad_timing_is_refused_with_the_setting_named() {
        let c = ServerConfig {
            election_timeout_ms: 100,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("election-timeout-ms"));
        // A commit notice held past a heartbeat would trail the heartbeat
        // that carries the same commit index anyway.
        let c = ServerConfig {
            commit_notice_delay_ms: 101,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("commit-notice-delay-ms"));
    }

    #[test]
    fn a_request_limit_past_what_one_peer_message_carries_is_refused() {
        let limit = |bytes: usize| {
            ServerConfig {
                max_request_bytes: bytes,
                ..Default::default()
            }
            .validate()
        };
        assert!(limit(MAX_REQUEST_BYTES_LIMIT).is_ok());
        let refused = limit(MAX_REQUEST_BYTES_LIMIT + 1).unwrap_err().to_string();
        assert!(refused.contains("max-request-bytes"), "{refused}");
        assert!(limit(512).is_err());
    }

    #[test]
    fn watcher_bounds_are_checked() {
        let refused = |c: ServerConfig| c.validate().unwrap_err().to_string();
        let none_per_stream = ServerConfig {
            max_watchers_per_stream: 0,
            ..Default::default()
        };
        assert!(refused(none_per_stream).contains("max-watchers-per-stream"));
        let fewer_per_member = ServerConfig {
            max_watchers_per_stream: 10,
            max_watchers: 9,
            ..Default::default()
        };
        assert!(refused(fewer_per_member).contains("max-watchers"));
    }

    #[test]
    fn toml_with_unknown_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "name = \"x\"\nbogus = 1\n").unwrap();
        assert!(matches!(
            ServerConfig::from_toml_file(&p),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&p, "name = \"x\"\nmax_txn_ops = 7\n").unwrap();
        let c = ServerConfig::from_toml_file(&p).unwrap();
        assert_eq!(
            (c.name.as_str(), c.max_txn_ops, c.heartbeat_interval_ms),
            ("x", 7, 100)
        );
        // TLS settings by their field names, as the flags set them.
        std::fs::write(
            &p,
            "cert_file = \"c.pem\"\nkey_file = \"k.pem\"\ntrusted_ca_file = \"ca.pem\"\n\
             client_cert_auth = true\n",
        )
        .unwrap();
        let c = ServerConfig::from_toml_file(&p).unwrap();
        let tls = c.client_tls().expect("client TLS on");
        assert_eq!(tls.cert, std::path::Path::new("c.pem"));
        assert!(tls.client_cert_auth);
        assert_eq!(c.advertise_client_url(), "https://127.0.0.1:2379");
        std::fs::write(
            &p,
            "auto_tls = true\npeer_auto_tls = true\nself_signed_cert_validity_years = 3\n",
        )
        .unwrap();
        let c = ServerConfig::from_toml_file(&p).unwrap();
        assert!(c.client_self_signed() && c.peer_self_signed());
        assert_eq!(c.self_signed_cert_validity_years, 3);
    }
}
