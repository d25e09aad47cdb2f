//! One module per subcommand; each parses its flags and calls the client
//! library. Shared here: the global flags and small parsers.

pub mod alarm;
pub mod auth;
pub mod claims;
pub mod compact;
pub mod del;
pub mod elect;
pub mod etcd_config_file;
pub mod etcd_env;
pub mod etcd_only_flags;
pub mod fenced_put;
pub mod get;
pub mod lease;
pub mod lock;
pub mod member;
pub mod move_leader;
pub mod name;
pub mod output;
pub mod put;
pub mod role;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod user;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, ClientOptions, Credentials, TlsOptions};

/// Flags every client subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Comma-separated client URLs of the cluster's members.
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Output format. Keys and values are base64 in JSON, as etcdctl does.
    /// Default: simple, except table for `member list` and `status`.
    #[arg(short = 'w', long, global = true, value_enum)]
    pub write_out: Option<OutputFormat>,
    /// Time allowed to connect to one endpoint (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Time allowed for one command's request, retries included.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// CA certificate (PEM) to check TLS servers with; endpoints given
    /// without a scheme are then https://.
    #[arg(long, global = true, env = "CAIRN_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for servers that ask for one (with `--key`).
    #[arg(
        long = "cert",
        id = "tls_cert",
        global = true,
        env = "CAIRN_CERT",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `--cert`.
    // Named apart from the `key` argument of put, get and del.
    #[arg(
        long = "key",
        id = "tls_key",
        global = true,
        env = "CAIRN_KEY",
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,
    /// User to act as on a cluster with authentication on:
    /// `name:password`, or `name` with `--password` (etcdctl `--user`).
    // Ids apart from the `user` and `password` arguments of `cairn user`.
    #[arg(
        long = "user",
        id = "auth_user",
        value_name = "NAME[:PASSWORD]",
        global = true,
        env = "CAIRN_USER",
        // `--help` would print the variable's value: a password.
        hide_env_values = true,
        value_parser = redacted
    )]
    pub user: Option<Redacted>,
    /// Password of `--user` (then taken whole as the name, colons and all).
    #[arg(
        long = "password",
        id = "auth_password",
        value_name = "PASSWORD",
        global = true,
        env = "CAIRN_PASSWORD",
        hide_env_values = true,
        value_parser = redacted
    )]
    pub password: Option<Redacted>,
}

/// A flag value that may hold a password: printed as `<redacted>`, so that
/// a debug print of the parsed flags shows none.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn redacted(s: &str) -> Result<Redacted, String> {
    Ok(Redacted(s.to_string()))
}

/// `--user` and `--password` as etcdctl reads them: with `--password`,
/// `--user` is the name; without, `--user` is `name:password` split at the
/// first colon. No `--user` (or an empty one): no credentials. There is no
/// prompt: a name without a password is refused.
pub fn credentials(
    user: Option<&str>,
    password: Option<&str>,
) -> Result<Option<Credentials>, String> {
    let user = user.filter(|u| !u.is_empty());
    match (user, password) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("--password needs --user".into()),
        (Some(name), Some(password)) => Ok(Some(Credentials::new(name, password))),
        (Some(user), None) => match user.split_once(':') {
            Some(("", _)) => Err("--user has an empty name".into()),
            Some((name, password)) => Ok(Some(Credentials::new(name, password))),
            None => Err(format!(
                "--user {user} has no password: give --user {user}:PASSWORD, \
                 --password or CAIRN_PASSWORD (cairn does not prompt)"
            )),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Simple,
    Json,
    Table,
}

impl GlobalArgs {
    /// The format asked for, or the command's default.
    pub fn format(&self, default: OutputFormat) -> OutputFormat {
        self.write_out.unwrap_or(default)
    }

    /// `--cacert`, with `--cert` and `--key` if given, read once for the
    /// client and for `cairn bench`.
    fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        match &self.cacert {
            Some(ca) => {
                let identity = self.cert.as_deref().zip(self.key.as_deref());
                Ok(Some(
                    TlsOptions::from_files(ca, identity).context("TLS files")?,
                ))
            }
            None if self.cert.is_some() => anyhow::bail!("--cert needs --cacert"),
            None => Ok(None),
        }
    }

    /// The TLS flags as `cairn bench` dials with them.
    /// `--user` / `--password`, read once for the client and `cairn bench`.
    pub fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        credentials(
            self.user.as_ref().map(|u| u.0.as_str()),
            self.password.as_ref().map(|p| p.0.as_str()),
        )
        .map_err(anyhow::Error::msg)
    }

    pub fn bench_tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        Ok(self.tls()?.map(|t| t.to_tonic()))
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let tls = self.tls()?;
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| match (&tls, e.contains("://")) {
                (Some(_), false) => format!("https://{}", e.trim()),
                _ => e.clone(),
            })
            .collect();
        let credentials = self.credentials()?;
        let options = ClientOptions {
            connect_timeout: self.dial_timeout,
            request_timeout: self.command_timeout,
            tls,
            credentials,
            ..ClientOptions::default()
        };
        Client::connect(endpoints, options)
            .await
            .context("bad --endpoints")
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
        .map_err(|_| format!("{s:?} is not a duration like 2s or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// An ID in hex, with or without `0x` (lease and member IDs, as etcdctl).
pub fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let digits = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    u64::from_str_radix(digits, 16).map_err(|_| format!("{s:?} is not a hex ID"))
}

/// A lease ID in hex.
pub fn parse_lease_id(s: &str) -> Result<i64, String> {
    parse_hex_u64(s).map(|v| v as i64)
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM: what service managers
/// and container runtimes send to stop a process. A member stops cleanly
/// on either, and a command holding a name, lock or candidacy releases it
/// at once instead of leaving it to its TTL (with only Ctrl-C handled, a
/// SIGTERM ended the process as a crash would). An error: a handler could
/// not be installed.
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn hex_ids_parse() {
        assert_eq!(
            parse_hex_u64("694d77aa9e38260f").unwrap(),
            0x694d77aa9e38260f
        );
        assert_eq!(parse_hex_u64("0x1F").unwrap(), 31);
        assert_eq!(parse_lease_id("ffffffffffffffff").unwrap(), -1);
        assert!(parse_hex_u64("xyz").is_err());
    }

    #[test]
    fn credentials_are_read_as_etcdctl_reads_them() {
        let c = |u: Option<&str>, p: Option<&str>| {
            credentials(u, p).map(|c| c.map(|c| (c.user, c.password)))
        };
        let pair = |u: &str, p: &str| Ok(Some((u.to_string(), p.to_string())));
        assert_eq!(c(None, None), Ok(None));
        assert_eq!(c(Some(""), None), Ok(None));
        assert_eq!(c(Some("alice:pw"), None), pair("alice", "pw"));
        // Split at the first colon only: the password may hold colons.
        assert_eq!(c(Some("alice:p:w"), None), pair("alice", "p:w"));
        // With --password, --user is the name as is.
        assert_eq!(c(Some("alice"), Some("pw")), pair("alice", "pw"));
        assert_eq!(c(Some("a:b"), Some("pw")), pair("a:b", "pw"));
        let err = c(Some("alice"), None).unwrap_err();
        assert!(
            err.contains("no password") && err.contains("--password"),
            "{err}"
        );
        assert!(c(Some(":pw"), None).is_err());
        assert!(c(None, Some("pw")).is_err());
    }

    #[test]
    fn parsed_flags_never_show_a_password() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "cairn",
            "--user",
            "alice:hunter2",
            "--password",
            "hunter3",
            "get",
            "k",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter"), "{shown}");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }
}
