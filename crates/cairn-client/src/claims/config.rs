//! Claims client configuration: a builder, and the environment
//! (`CAIRN_CLAIMS_*`, falling back to the reference hub's `DYN_REGISTRY_*`
//! so existing deployments can switch).
//!
//! | Cairn variable                     | Reference variable (fallback)           | Field |
//! |------------------------------------|-----------------------------------------|-------|
//! | `CAIRN_CLAIMS_ENABLE`              | `DYN_REGISTRY_ENABLE`                   | `enabled` |
//! | `CAIRN_CLAIMS_ENDPOINTS` (a,b,c)   | — (see below)                           | `endpoints` |
//! | `CAIRN_CLAIMS_NAMESPACE`           | `DYN_REGISTRY_CLIENT_NAMESPACE`         | `namespace` |
//! | `CAIRN_CLAIMS_BATCH_SIZE`          | `DYN_REGISTRY_CLIENT_BATCH_SIZE`        | `batch_size` |
//! | `CAIRN_CLAIMS_FLUSH_INTERVAL_MS`   | `DYN_REGISTRY_CLIENT_BATCH_TIMEOUT_MS`  | `flush_interval` |
//! | `CAIRN_CLAIMS_REQUEST_TIMEOUT_MS`  | `DYN_REGISTRY_CLIENT_REQUEST_TIMEOUT_MS`| `request_timeout` |
//! | `CAIRN_CLAIMS_CACHE_ENTRIES`       | `DYN_REGISTRY_CLIENT_LOCAL_CACHE`       | `cache_entries` |
//! | `CAIRN_CLAIMS_SESSION_TTL_SECS`    | —                                       | `session_ttl_secs` |
//! | `CAIRN_CLAIMS_QUEUE_BATCHES`       | —                                       | `queue_batches` |
//! | `CAIRN_CLAIMS_CAPACITY`            | `DYN_REGISTRY_HUB_CAPACITY`             | `create.capacity` |
//! | `CAIRN_CLAIMS_LEASE_TTL_MS`        | `DYN_REGISTRY_HUB_LEASE_TIMEOUT_SECS` ×1000 | `create.lease_ttl_ms` |
//! | `CAIRN_CLAIMS_EVICTION`            | —                                       | `create.eviction` |
//! | `CAIRN_CLAIMS_KEY_KIND`            | —                                       | `create.key_kind` |
//!
//! Setting any of the namespace variables (capacity, lease TTL, eviction,
//! key kind) makes [`ClaimsClient::connect`](super::ClaimsClient::connect)
//! create the namespace (a no-op if it exists with that configuration).
//!
//! Ignored, with a warning from [`ClaimsConfig::ignored_env`]:
//! `DYN_REGISTRY_CLIENT_QUERY_ADDR` / `_REGISTER_ADDR` name the ZMQ hub's
//! sockets, not Cairn members (Cairn serves queries and registrations on
//! one gRPC endpoint per member; set `CAIRN_CLAIMS_ENDPOINTS`), and
//! `DYN_REGISTRY_HUB_QUERY_ADDR` / `_REGISTER_ADDR` are the hub's bind
//! addresses (members listen where `cairn serve` says).

use std::time::Duration;

use super::error::ClaimsError;
use super::types::{EvictionPolicy, KeyKind, NamespaceConfig, MAX_KEYS_PER_REQUEST};
use crate::options::Credentials;

/// Reference variables read by nothing here, and why.
pub const IGNORED_ENV: &[(&str, &str)] = &[
    (
        "DYN_REGISTRY_CLIENT_QUERY_ADDR",
        "a ZMQ hub address; set CAIRN_CLAIMS_ENDPOINTS to the members' client URLs",
    ),
    (
        "DYN_REGISTRY_CLIENT_REGISTER_ADDR",
        "a ZMQ hub address; Cairn takes registrations on the same gRPC endpoints as queries",
    ),
    (
        "DYN_REGISTRY_HUB_QUERY_ADDR",
        "the hub's bind address; members listen where `cairn serve --listen-client-urls` says",
    ),
    (
        "DYN_REGISTRY_HUB_REGISTER_ADDR",
        "the hub's bind address; members listen where `cairn serve --listen-client-urls` says",
    ),
];

/// How a [`ClaimsClient`](super::ClaimsClient) connects, batches and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsConfig {
    /// Whether the application should use the registry at all (the
    /// reference's `DYN_REGISTRY_ENABLE`); the client itself ignores it.
    pub enabled: bool,
    /// Client URLs of the cluster's members.
    pub endpoints: Vec<String>,
    /// The namespace every call of the client uses.
    pub namespace: String,
    /// A register batch is sent once it holds this many entries.
    pub batch_size: usize,
    /// ... or once its first entry has waited this long.
    pub flush_interval: Duration,
    /// Budget of one call, retries and failover included.
    pub request_timeout: Duration,
    /// Entries of the local cache of stored keys; 0 disables it.
    pub cache_entries: usize,
    /// TTL of the session `connect` creates: leases of a client that
    /// vanished are released this long after its last keepalive.
    pub session_ttl_secs: i64,
    /// Most batches waiting in the batcher's queue: beyond it,
    /// `RegisterBatcher::register` waits (backpressure).
    pub queue_batches: usize,
    /// Create the namespace with this configuration at `connect`.
    pub create: Option<NamespaceConfig>,
    /// Who `connect`'s client logs in as on a cluster with authentication
    /// on (see [`ClientOptions::credentials`](crate::ClientOptions::credentials)).
    pub credentials: Option<Credentials>,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        ClaimsConfig {
            enabled: false,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            namespace: "default".into(),
            batch_size: 100,
            flush_interval: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            cache_entries: 0,
            session_ttl_secs: 10,
            queue_batches: 64,
            create: None,
            credentials: None,
        }
    }
}

impl ClaimsConfig {
    pub fn builder() -> ClaimsConfigBuilder {
        ClaimsConfigBuilder(ClaimsConfig::default())
    }

    /// From the process environment (see the module docs); reference
    /// variables that mean nothing to Cairn are logged as warnings.
    pub fn from_env() -> Result<ClaimsConfig, ClaimsError> {
        let var = |name: &str| std::env::var(name).ok();
        for (name, why) in Self::ignored_env(var) {
            tracing::warn!(variable = name, "ignored: {why}");
        }
        Self::from_vars(var)
    }

    /// From any variable source (`from_env` uses the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<ClaimsConfig, ClaimsError> {
        let mut c = ClaimsConfig::default();
        // CAIRN_CLAIMS_* first, the reference name second.
        let get = |ours: &'static str, theirs: Option<&'static str>| {
            let v = var(ours).map(|v| (ours, v));
            v.or_else(|| theirs.and_then(|t| var(t).map(|v| (t, v))))
                .map(|(n, v)| (n, v.trim().to_string()))
        };
        if let Some((n, v)) = get("CAIRN_CLAIMS_ENABLE", Some("DYN_REGISTRY_ENABLE")) {
            c.enabled = parse_bool(n, &v)?;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_ENDPOINTS", None) {
            c.endpoints = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if c.endpoints.is_empty() {
                return Err(env_err(n, &v, "no endpoint given"));
            }
        }
        if let Some((n, v)) = get(
            "CAIRN_CLAIMS_NAMESPACE",
            Some("DYN_REGISTRY_CLIENT_NAMESPACE"),
        ) {
            if v.is_empty() {
                return Err(env_err(n, &v, "empty namespace"));
            }
            c.namespace = v;
        }
        if let Some((n, v)) = get(
            "CAIRN_CLAIMS_BATCH_SIZE",
            Some("DYN_REGISTRY_CLIENT_BATCH_SIZE"),
        ) {
            c.batch_size = parse_num(n, &v, 1, MAX_KEYS_PER_REQUEST as u64)? as usize;
        }
        if let Some((n, v)) = get(
            "CAIRN_CLAIMS_FLUSH_INTERVAL_MS",
            Some("DYN_REGISTRY_CLIENT_BATCH_TIMEOUT_MS"),
        ) {
            c.flush_interval = Duration::from_millis(parse_num(n, &v, 1, 60_000)?);
        }
        if let Some((n, v)) = get(
            "CAIRN_CLAIMS_REQUEST_TIMEOUT_MS",
            Some("DYN_REGISTRY_CLIENT_REQUEST_TIMEOUT_MS"),
        ) {
            c.request_timeout = Duration::from_millis(parse_num(n, &v, 1, 3_600_000)?);
        }
        if let Some((n, v)) = get(
            "CAIRN_CLAIMS_CACHE_ENTRIES",
            Some("DYN_REGISTRY_CLIENT_LOCAL_CACHE"),
        ) {
            c.cache_entries = parse_num(n, &v, 0, 100_000_000)? as usize;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_SESSION_TTL_SECS", None) {
            c.session_ttl_secs = parse_num(n, &v, 1, 86_400)? as i64;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_QUEUE_BATCHES", None) {
            c.queue_batches = parse_num(n, &v, 1, 65_536)? as usize;
        }
        let mut ns = NamespaceConfig::default();
        let mut create = false;
        if let Some((n, v)) = get("CAIRN_CLAIMS_CAPACITY", Some("DYN_REGISTRY_HUB_CAPACITY")) {
            ns.capacity = parse_num(n, &v, 1, u64::MAX)?;
            create = true;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_LEASE_TTL_MS", None) {
            ns.lease_ttl_ms = parse_num(n, &v, 1, u64::MAX)?;
            create = true;
        } else if let Some((n, v)) = get("DYN_REGISTRY_HUB_LEASE_TIMEOUT_SECS", None) {
            ns.lease_ttl_ms = parse_num(n, &v, 1, u64::MAX / 1000)? * 1000;
            create = true;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_EVICTION", None) {
            ns.eviction = parse_eviction(&v).map_err(|e| env_err(n, &v, &e))?;
            create = true;
        }
        if let Some((n, v)) = get("CAIRN_CLAIMS_KEY_KIND", None) {
            ns.key_kind = parse_key_kind(&v).map_err(|e| env_err(n, &v, &e))?;
            create = true;
        }
        c.create = create.then_some(ns);
        Ok(c)
    }

    /// Reference variables that are set but mean nothing to Cairn, with
    /// why: log them so an operator switching over knows.
    pub fn ignored_env(var: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
        IGNORED_ENV
            .iter()
            .filter(|(name, _)| var(name).is_some())
            .copied()
            .collect()
    }
}

/// Builds a [`ClaimsConfig`]; starts from the defaults.
#[derive(Debug, Clone)]
pub struct ClaimsConfigBuilder(ClaimsConfig);

impl ClaimsConfigBuilder {
    pub fn endpoints(mut self, endpoints: Vec<String>) -> Self {
        self.0.endpoints = endpoints;
        self
    }
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.0.namespace = namespace.into();
        self
    }
    /// Clamped to 1..=10,000 (one request).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.0.batch_size = n.clamp(1, MAX_KEYS_PER_REQUEST);
        self
    }
    pub fn flush_interval(mut self, d: Duration) -> Self {
        self.0.flush_interval = d.max(Duration::from_millis(1));
        self
    }
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.0.request_timeout = d;
        self
    }
    pub fn cache_entries(mut self, n: usize) -> Self {
        self.0.cache_entries = n;
        self
    }
    pub fn session_ttl_secs(mut self, secs: i64) -> Self {
        self.0.session_ttl_secs = secs.max(1);
        self
    }
    pub fn queue_batches(mut self, n: usize) -> Self {
        self.0.queue_batches = n.max(1);
        self
    }
    pub fn create(mut self, config: NamespaceConfig) -> Self {
        self.0.create = Some(config);
        self
    }
    pub fn enabled(mut self, on: bool) -> Self {
        self.0.enabled = on;
        self
    }
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.0.credentials = Some(credentials);
        self
    }
    pub fn build(self) -> ClaimsConfig {
        self.0
    }
}

fn env_err(var: &'static str, value: &str, reason: &str) -> ClaimsError {
    ClaimsError::Env {
        var,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_bool(var: &'static str, v: &str) -> Result<bool, ClaimsError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(env_err(var, v, "not a boolean (true/false/1/0)")),
    }
}

fn parse_num(var: &'static str, v: &str, min: u64, max: u64) -> Result<u64, ClaimsError> {
    let n: u64 = v
        .parse()
        .map_err(|_| env_err(var, v, "not a non-negative integer"))?;
    if n < min || n > max {
        return Err(env_err(var, v, &format!("not in {min}..={max}")));
    }
    Ok(n)
}

/// `none`, `tail` or `positional`.
pub fn parse_eviction(v: &str) -> Result<EvictionPolicy, String> {
    match v.to_ascii_lowercase().as_str() {
        "none" => Ok(EvictionPolicy::None),
        "tail" => Ok(EvictionPolicy::Tail),
        "positional" => Ok(EvictionPolicy::Positional),
        _ => Err("eviction is none, tail or positional".into()),
    }
}

/// `u64`, `u128` or `bytes`.
pub fn parse_key_kind(v: &str) -> Result<KeyKind, String> {
    match v.to_ascii_lowercase().as_str() {
        "u64" => Ok(KeyKind::U64),
        "u128" => Ok(KeyKind::U128),
        "bytes" => Ok(KeyKind::Bytes),
        _ => Err("key kind is u64, u128 or bytes".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<ClaimsConfig, ClaimsError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ClaimsConfig::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_set_gives_the_reference_defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c, ClaimsConfig::default());
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.flush_interval, Duration::from_millis(10));
        assert_eq!(c.request_timeout, Duration::from_millis(5000));
        assert_eq!(c.cache_entries, 0);
        assert!(!c.enabled);
        assert_eq!(c.create, None);
    }

    #[test]
    fn reference_variables_are_mapped() {
        let c = from(&[
            ("DYN_REGISTRY_ENABLE", "true"),
            ("DYN_REGISTRY_CLIENT_NAMESPACE", "kv-blocks"),
            ("DYN_REGISTRY_CLIENT_BATCH_SIZE", "50"),
            ("DYN_REGISTRY_CLIENT_BATCH_TIMEOUT_MS", "20"),
            ("DYN_REGISTRY_CLIENT_REQUEST_TIMEOUT_MS", "1500"),
            ("DYN_REGISTRY_CLIENT_LOCAL_CACHE", "4096"),
            ("DYN_REGISTRY_HUB_CAPACITY", "2000"),
            ("DYN_REGISTRY_HUB_LEASE_TIMEOUT_SECS", "60"),
            ("DYN_REGISTRY_CLIENT_QUERY_ADDR", "tcp://hub:5555"),
        ])
        .unwrap();
        assert!(c.enabled);
        assert_eq!(c.namespace, "kv-blocks");
        assert_eq!(c.batch_size, 50);
        assert_eq!(c.flush_interval, Duration::from_millis(20));
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.cache_entries, 4096);
        let ns = c.create.unwrap();
        assert_eq!(ns.capacity, 2000);
        assert_eq!(ns.lease_ttl_ms, 60_000);
        // The hub address does not become an endpoint.
        assert_eq!(c.endpoints, ClaimsConfig::default().endpoints);
    }

    #[test]
    fn cairn_variables_win_over_reference_ones() {
        let c = from(&[
            ("CAIRN_CLAIMS_ENDPOINTS", "http://a:2379, http://b:2379,"),
            ("CAIRN_CLAIMS_NAMESPACE", "ours"),
            ("DYN_REGISTRY_CLIENT_NAMESPACE", "theirs"),
            ("CAIRN_CLAIMS_BATCH_SIZE", "7"),
            ("DYN_REGISTRY_CLIENT_BATCH_SIZE", "50"),
            ("CAIRN_CLAIMS_LEASE_TTL_MS", "2500"),
            ("DYN_REGISTRY_HUB_LEASE_TIMEOUT_SECS", "60"),
            ("CAIRN_CLAIMS_EVICTION", "Positional"),
            ("CAIRN_CLAIMS_KEY_KIND", "u128"),
            ("CAIRN_CLAIMS_SESSION_TTL_SECS", "3"),
            ("CAIRN_CLAIMS_QUEUE_BATCHES", "8"),
        ])
        .unwrap();
        assert_eq!(c.endpoints, vec!["http://a:2379", "http://b:2379"]);
        assert_eq!(c.namespace, "ours");
        assert_eq!(c.batch_size, 7);
        assert_eq!(c.session_ttl_secs, 3);
        assert_eq!(c.queue_batches, 8);
        let ns = c.create.unwrap();
        assert_eq!(ns.lease_ttl_ms, 2500);
        assert_eq!(ns.eviction, EvictionPolicy::Positional);
        assert_eq!(ns.key_kind, KeyKind::U128);
        assert_eq!(ns.capacity, NamespaceConfig::default().capacity);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value, needle) in [
            (
                "DYN_REGISTRY_CLIENT_BATCH_SIZE",
                "lots",
                "not a non-negative integer",
            ),
            ("CAIRN_CLAIMS_BATCH_SIZE", "0", "not in 1..=10000"),
            ("CAIRN_CLAIMS_BATCH_SIZE", "10001", "not in 1..=10000"),
            ("DYN_REGISTRY_ENABLE", "maybe", "not a boolean"),
            ("CAIRN_CLAIMS_ENDPOINTS", " , ", "no endpoint"),
            ("CAIRN_CLAIMS_EVICTION", "lru", "none, tail or positional"),
            ("CAIRN_CLAIMS_KEY_KIND", "u32", "u64, u128 or bytes"),
            (
                "DYN_REGISTRY_HUB_CAPACITY",
                "-1",
                "not a non-negative integer",
            ),
            ("CAIRN_CLAIMS_NAMESPACE", "", "empty namespace"),
        ] {
            let err = from(&[(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(var) && err.contains(needle),
                "{var}={value}: {err}"
            );
        }
    }

    #[test]
    fn ignored_reference_variables_are_reported() {
        let vars: HashMap<&str, &str> = [
            ("DYN_REGISTRY_CLIENT_QUERY_ADDR", "tcp://hub:5555"),
            ("DYN_REGISTRY_HUB_REGISTER_ADDR", "tcp://*:5556"),
            ("DYN_REGISTRY_CLIENT_BATCH_SIZE", "5"),
        ]
        .into();
        let ignored = ClaimsConfig::ignored_env(|k| vars.get(k).map(|v| v.to_string()));
        let names: Vec<&str> = ignored.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            vec![
                "DYN_REGISTRY_CLIENT_QUERY_ADDR",
                "DYN_REGISTRY_HUB_REGISTER_ADDR"
            ]
        );
    }

    #[test]
    fn the_builder_clamps_to_what_the_server_takes() {
        let c = ClaimsConfig::builder()
            .namespace("n")
            .batch_size(1_000_000)
            .flush_interval(Duration::ZERO)
            .build();
        assert_eq!(c.batch_size, MAX_KEYS_PER_REQUEST);
        assert_eq!(c.flush_interval, Duration::from_millis(1));
        assert_eq!(c.namespace, "n");
    }
}
