//! etcd's `ETCD_*` environment variables for `cairn serve`: container
//! images and packaged units configure etcd by them alone (e.g.
//! `ETCD_LISTEN_CLIENT_URLS`), so a member reads each as the `CAIRN_*`
//! variable for the same setting when that one is not set. Flags still
//! win over both, as in etcd.

/// An etcd variable and the `cairn serve` variable for the same setting
/// (same units: etcd's timings are in ms, its TTL in seconds).
const ETCD_TO_CAIRN: &[(&str, &str)] = &[
    ("ETCD_NAME", "CAIRN_NAME"),
    ("ETCD_CONFIG_FILE", "CAIRN_CONFIG_FILE"),
    ("ETCD_DATA_DIR", "CAIRN_DATA_DIR"),
    ("ETCD_WAL_DIR", "CAIRN_WAL_DIR"),
    ("ETCD_LISTEN_CLIENT_URLS", "CAIRN_LISTEN_CLIENT_URLS"),
    ("ETCD_LISTEN_PEER_URLS", "CAIRN_LISTEN_PEER_URLS"),
    ("ETCD_LISTEN_METRICS_URLS", "CAIRN_LISTEN_METRICS_URLS"),
    ("ETCD_ADVERTISE_CLIENT_URLS", "CAIRN_ADVERTISE_CLIENT"),
    ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "CAIRN_ADVERTISE_PEER"),
    ("ETCD_INITIAL_CLUSTER", "CAIRN_INITIAL_CLUSTER"),
    ("ETCD_INITIAL_CLUSTER_STATE", "CAIRN_INITIAL_CLUSTER_STATE"),
    ("ETCD_INITIAL_CLUSTER_TOKEN", "CAIRN_INITIAL_CLUSTER_TOKEN"),
    ("ETCD_FORCE_NEW_CLUSTER", "CAIRN_FORCE_NEW_CLUSTER"),
    ("ETCD_HEARTBEAT_INTERVAL", "CAIRN_HEARTBEAT_INTERVAL_MS"),
    ("ETCD_ELECTION_TIMEOUT", "CAIRN_ELECTION_TIMEOUT_MS"),
    ("ETCD_SNAPSHOT_COUNT", "CAIRN_SNAPSHOT_ENTRIES"),
    ("ETCD_QUOTA_BACKEND_BYTES", "CAIRN_QUOTA_BACKEND_BYTES"),
    ("ETCD_MAX_REQUEST_BYTES", "CAIRN_MAX_REQUEST_BYTES"),
    ("ETCD_MAX_TXN_OPS", "CAIRN_MAX_TXN_OPS"),
    ("ETCD_AUTO_COMPACTION_MODE", "CAIRN_AUTO_COMPACTION_MODE"),
    (
        "ETCD_AUTO_COMPACTION_RETENTION",
        "CAIRN_AUTO_COMPACTION_RETENTION",
    ),
    ("ETCD_CERT_FILE", "CAIRN_CERT_FILE"),
    ("ETCD_KEY_FILE", "CAIRN_KEY_FILE"),
    ("ETCD_TRUSTED_CA_FILE", "CAIRN_TRUSTED_CA_FILE"),
    ("ETCD_CLIENT_CERT_AUTH", "CAIRN_CLIENT_CERT_AUTH"),
    ("ETCD_CLIENT_CRL_FILE", "CAIRN_CLIENT_CRL_FILE"),
    ("ETCD_PEER_CERT_FILE", "CAIRN_PEER_CERT_FILE"),
    ("ETCD_PEER_KEY_FILE", "CAIRN_PEER_KEY_FILE"),
    ("ETCD_PEER_TRUSTED_CA_FILE", "CAIRN_PEER_TRUSTED_CA_FILE"),
    ("ETCD_PEER_CLIENT_CERT_AUTH", "CAIRN_PEER_CLIENT_CERT_AUTH"),
    ("ETCD_PEER_CRL_FILE", "CAIRN_PEER_CRL_FILE"),
    ("ETCD_PEER_CERT_ALLOWED_CN", "CAIRN_PEER_CERT_ALLOWED_CN"),
    ("ETCD_CIPHER_SUITES", "CAIRN_CIPHER_SUITES"),
    ("ETCD_CORS", "CAIRN_CORS"),
    ("ETCD_HOST_WHITELIST", "CAIRN_HOST_WHITELIST"),
    ("ETCD_TLS_MIN_VERSION", "CAIRN_TLS_MIN_VERSION"),
    ("ETCD_TLS_MAX_VERSION", "CAIRN_TLS_MAX_VERSION"),
    ("ETCD_AUTO_TLS", "CAIRN_AUTO_TLS"),
    ("ETCD_PEER_AUTO_TLS", "CAIRN_PEER_AUTO_TLS"),
    (
        "ETCD_SELF_SIGNED_CERT_VALIDITY",
        "CAIRN_SELF_SIGNED_CERT_VALIDITY",
    ),
    (
        "ETCD_GRPC_KEEPALIVE_INTERVAL",
        "CAIRN_GRPC_KEEPALIVE_INTERVAL",
    ),
    (
        "ETCD_GRPC_KEEPALIVE_TIMEOUT",
        "CAIRN_GRPC_KEEPALIVE_TIMEOUT",
    ),
    (
        "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        "CAIRN_WATCH_PROGRESS_NOTIFY_INTERVAL",
    ),
    ("ETCD_LOG_LEVEL", "CAIRN_LOG_LEVEL"),
    ("ETCD_DEBUG", "CAIRN_DEBUG"),
    ("ETCD_AUTH_TOKEN", "CAIRN_AUTH_TOKEN"),
    ("ETCD_AUTH_TOKEN_TTL", "CAIRN_AUTH_TOKEN_TTL_SECS"),
    (
        "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        "CAIRN_INITIAL_CORRUPT_CHECK",
    ),
    (
        "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        "CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME",
    ),
];

/// `CAIRN_*` variables that set the same setting another way: an etcd
/// variable is not taken while one of these is set either (e.g.
/// `CAIRN_LISTEN_CLIENT` and `ETCD_LISTEN_CLIENT_URLS`).
const ALSO_SET_BY: &[(&str, &str)] = &[
    ("CAIRN_LISTEN_CLIENT_URLS", "CAIRN_LISTEN_CLIENT"),
    ("CAIRN_LISTEN_PEER_URLS", "CAIRN_LISTEN_PEER"),
    (
        "CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        "CAIRN_CORRUPT_CHECK_INTERVAL_MS",
    ),
];

/// What [`adopt`] found in an environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// `CAIRN_*` variables to set, with the etcd variables' values.
    pub set: Vec<(String, String)>,
    /// `ETCD_*` variables for settings Cairn does not have (or already
    /// set by their `CAIRN_*` form): worth a warning, as etcd warns of
    /// variables it does not know.
    pub ignored: Vec<String>,
}

/// The `CAIRN_*` variables `env` (name, value pairs) gets from its
/// `ETCD_*` ones.
pub fn adopt(env: impl IntoIterator<Item = (String, String)>) -> Adopted {
    let env: std::collections::BTreeMap<String, String> = env.into_iter().collect();
    let mut adopted = Adopted::default();
    for (name, value) in env.iter().filter(|(n, _)| n.starts_with("ETCD_")) {
        let Some((_, cairn)) = ETCD_TO_CAIRN.iter().find(|(etcd, _)| etcd == name) else {
            adopted.ignored.push(name.clone());
            continue;
        };
        let set_otherwise = ALSO_SET_BY
            .iter()
            .filter(|(setting, _)| setting == cairn)
            .any(|(_, other)| env.contains_key(*other));
        if env.contains_key(*cairn) || set_otherwise {
            adopted.ignored.push(name.clone());
        } else {
            adopted.set.push((cairn.to_string(), value.clone()));
        }
    }
    adopted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn etcd_variables_stand_in_for_unset_cairn_ones() {
        let adopted = adopt(env(&[
            ("ETCD_NAME", "infra0"),
            ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
            ("ETCD_ELECTION_TIMEOUT", "1000"),
            ("ETCD_DATA_DIR", "/var/lib/etcd"),
            ("CAIRN_DATA_DIR", "/var/lib/cairn"),
            ("ETCD_ENABLE_V2", "false"),
            ("ETCDCTL_API", "3"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            adopted.set,
            env(&[
                ("CAIRN_ELECTION_TIMEOUT_MS", "1000"),
                ("CAIRN_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
                ("CAIRN_NAME", "infra0"),
            ])
        );
        assert_eq!(adopted.ignored, ["ETCD_DATA_DIR", "ETCD_ENABLE_V2"]);
    }

    #[test]
    fn a_setting_given_another_way_keeps_the_etcd_variable_out() {
        let adopted = adopt(env(&[
            ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
            ("CAIRN_LISTEN_CLIENT", "127.0.0.1:2379"),
            ("ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "5m"),
        ]));
        assert_eq!(
            adopted.set,
            env(&[("CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME", "5m")])
        );
        assert_eq!(adopted.ignored, ["ETCD_LISTEN_CLIENT_URLS"]);
    }

    /// Every target is a variable `cairn serve` reads.
    #[test]
    fn every_cairn_variable_named_is_a_serve_flags_variable() {
        use clap::CommandFactory;
        let cmd = crate::Cli::command();
        let serve = cmd.find_subcommand("serve").expect("serve");
        let read: Vec<String> = serve
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        for (etcd, cairn) in ETCD_TO_CAIRN.iter().chain(ALSO_SET_BY) {
            assert!(read.iter().any(|r| r == cairn), "{etcd}: {cairn}");
        }
    }
}
