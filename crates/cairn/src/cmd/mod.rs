//! One module per subcommand; each parses its flags and calls the client
//! library. Shared here: the global flags and small parsers.

pub mod alarm;
pub mod claims;
pub mod compact;
pub mod del;
pub mod elect;
pub mod fenced_put;
pub mod get;
pub mod lease;
pub mod lock;
pub mod member;
pub mod move_leader;
pub mod name;
pub mod output;
pub mod put;
pub mod serve;
pub mod snapshot;
pub mod status;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, ClientOptions, TlsOptions};

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
        let options = ClientOptions {
            connect_timeout: self.dial_timeout,
            request_timeout: self.command_timeout,
            tls,
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
    fn cli_parses() {
        use clap::CommandFactory;
        crate::Cli::command().debug_assert();
    }
}
