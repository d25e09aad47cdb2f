//! etcd's `--config-file`: the YAML file many etcd deployments keep their
//! settings in (`/etc/etcd/etcd.conf.yml`), read by `cairn serve` as the
//! `ETCD_*` variables of the same settings.
//!
//! etcd's file uses its flags' names as keys (`listen-client-urls`,
//! `initial-cluster`, …), with the TLS flags nested under
//! `client-transport-security` and `peer-transport-security`. Each key is
//! turned into its `ETCD_*` variable and handed to [`super::etcd_env`], so
//! a key means what its variable means, and a key for a setting Cairn does
//! not have is logged as ignored, as such a variable is. The file's values
//! win over `ETCD_*` variables (etcd ignores its variables when given a
//! file); `CAIRN_*` variables and flags still win over the file.

use std::path::Path;

/// Where the file is: `--config-file PATH` (or `=PATH`) among `args` (the
/// whole command line), else `CAIRN_CONFIG_FILE`, else `ETCD_CONFIG_FILE`.
pub fn path(args: &[String], var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut given = args.iter().skip_while(|a| *a != "serve");
    while let Some(arg) = given.next() {
        if arg == "--config-file" {
            return given.next().cloned();
        }
        if let Some(path) = arg.strip_prefix("--config-file=") {
            return Some(path.to_string());
        }
    }
    var("CAIRN_CONFIG_FILE").or_else(|| var("ETCD_CONFIG_FILE"))
}

/// The `ETCD_*` variables (name, value) the file at `path` sets.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    variables(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The `ETCD_*` variables a YAML document of etcd settings sets.
fn variables(yaml: &str) -> Result<Vec<(String, String)>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let settings = match doc {
        serde_yaml::Value::Null => return Ok(out),
        serde_yaml::Value::Mapping(m) => m,
        _ => return Err("not a mapping of etcd settings".into()),
    };
    for (key, value) in &settings {
        let key = setting_name(key)?;
        let prefix = match key {
            "client-transport-security" => "",
            "peer-transport-security" => "PEER_",
            _ => {
                if let Some(v) = value_text(key, value)? {
                    out.push((variable("", key), v));
                }
                continue;
            }
        };
        let nested = match value {
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(format!("{key}: a mapping of TLS settings was expected")),
        };
        for (sub, value) in nested {
            let sub = setting_name(sub)?;
            let Some(v) = value_text(sub, value)? else {
                continue;
            };
            // The two names that are not the prefix and the key.
            let name = match (prefix, sub) {
                ("", "crl-file") => "ETCD_CLIENT_CRL_FILE".to_string(),
                ("PEER_", "allowed-cn") => "ETCD_PEER_CERT_ALLOWED_CN".to_string(),
                _ => variable(prefix, sub),
            };
            out.push((name, v));
        }
    }
    Ok(out)
}

fn setting_name(key: &serde_yaml::Value) -> Result<&str, String> {
    key.as_str()
        .ok_or_else(|| format!("{key:?} is not a setting name"))
}

/// `listen-client-urls` → `ETCD_LISTEN_CLIENT_URLS`.
fn variable(prefix: &str, key: &str) -> String {
    format!(
        "ETCD_{prefix}{}",
        key.to_ascii_uppercase().replace('-', "_")
    )
}

/// etcd's durations that its file gives as Go `time.Duration` numbers
/// (nanoseconds) when not written as strings.
const DURATIONS: &[&str] = &[
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-watch-progress-notify-interval",
    "experimental-corrupt-check-time",
];

/// A value as its variable would hold it; `None` for an empty one (etcd's
/// sample file lists every key, most of them empty).
fn value_text(key: &str, value: &serde_yaml::Value) -> Result<Option<String>, String> {
    use serde_yaml::Value;
    let scalar = |v: &Value| -> Result<Option<String>, String> {
        Ok(match v {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) if DURATIONS.contains(&key) => {
                let ns = n
                    .as_u64()
                    .ok_or_else(|| format!("{key}: {n} is not a duration in nanoseconds"))?;
                Some(format!("{}ms", ns / 1_000_000))
            }
            Value::Number(n) => Some(n.to_string()),
            Value::String(s) if s.trim().is_empty() => None,
            Value::String(s) => Some(s.clone()),
            _ => return Err(format!("{key}: a single value was expected")),
        })
    };
    match value {
        // `cipher-suites` is a list in the file, comma-separated as a flag.
        Value::Sequence(items) => {
            let items: Vec<String> = items
                .iter()
                .map(scalar)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            Ok((!items.is_empty()).then(|| items.join(",")))
        }
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The shape of etcd's sample `etcd.conf.yml`: flags' names as keys,
    /// TLS nested, empty values left out.
    #[test]
    fn an_etcd_file_becomes_its_variables() {
        let yaml = r#"
name: 'infra1'
data-dir: /var/lib/etcd
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
election-timeout: 1000
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380
initial-cluster-state: 'new'
enable-v2: true
cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
grpc-keepalive-interval: 7200000000000
client-transport-security:
  cert-file: /etc/etcd/server.crt
  client-cert-auth: true
  crl-file: ''
  auto-tls: false
peer-transport-security:
  trusted-ca-file: /etc/etcd/ca.crt
  allowed-cn: member
  crl-file: /etc/etcd/peer.crl
"#;
        assert_eq!(
            variables(yaml).unwrap(),
            vars(&[
                ("ETCD_NAME", "infra1"),
                ("ETCD_DATA_DIR", "/var/lib/etcd"),
                ("ETCD_SNAPSHOT_COUNT", "10000"),
                ("ETCD_HEARTBEAT_INTERVAL", "100"),
                ("ETCD_ELECTION_TIMEOUT", "1000"),
                (
                    "ETCD_LISTEN_CLIENT_URLS",
                    "http://10.0.0.1:2379,http://127.0.0.1:2379"
                ),
                (
                    "ETCD_INITIAL_CLUSTER",
                    "infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380"
                ),
                ("ETCD_INITIAL_CLUSTER_STATE", "new"),
                ("ETCD_ENABLE_V2", "true"),
                (
                    "ETCD_CIPHER_SUITES",
                    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256"
                ),
                ("ETCD_GRPC_KEEPALIVE_INTERVAL", "7200000ms"),
                ("ETCD_CERT_FILE", "/etc/etcd/server.crt"),
                ("ETCD_CLIENT_CERT_AUTH", "true"),
                ("ETCD_AUTO_TLS", "false"),
                ("ETCD_PEER_TRUSTED_CA_FILE", "/etc/etcd/ca.crt"),
                ("ETCD_PEER_CERT_ALLOWED_CN", "member"),
                ("ETCD_PEER_CRL_FILE", "/etc/etcd/peer.crl"),
            ])
        );
        assert_eq!(variables("").unwrap(), vars(&[]));
    }

    #[test]
    fn a_file_that_is_not_etcd_settings_is_refused() {
        for (yaml, says) in [
            ("- a\n- b\n", "not a mapping"),
            ("name: [a, [b]]\n", "name: a single value"),
            ("peer-transport-security: yes-please\n", "a mapping of TLS"),
            ("name: 'unterminated\n", ""),
            ("grpc-keepalive-timeout: -5\n", "nanoseconds"),
        ] {
            let e = variables(yaml).unwrap_err();
            assert!(e.contains(says), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn the_path_comes_from_the_flag_then_the_variables() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = |_: &str| None;
        let both = |name: &str| Some(format!("/from/{name}"));
        assert_eq!(
            path(&args(&["cairn", "serve", "--config-file", "/a.yml"]), both).as_deref(),
            Some("/a.yml")
        );
        assert_eq!(
            path(&args(&["cairn", "serve", "--config-file=/b.yml"]), none).as_deref(),
            Some("/b.yml")
        );
        assert_eq!(
            path(&args(&["cairn", "serve"]), both).as_deref(),
            Some("/from/CAIRN_CONFIG_FILE")
        );
        let etcd_only = |name: &str| (name == "ETCD_CONFIG_FILE").then(|| "/e.yml".to_string());
        assert_eq!(
            path(&args(&["cairn", "serve"]), etcd_only).as_deref(),
            Some("/e.yml")
        );
        assert_eq!(path(&args(&["cairn", "serve"]), none), None);
    }
}
