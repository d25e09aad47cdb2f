//! HTTP/2 connections to the endpoints, and finding the Raft leader.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::StatusRequest;
use cairn_raft::coalesce::Connector;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How every connection of this process dials `https://` endpoints; set
/// once by [`use_tls`] before the first connection. Process-wide as the
/// stop flag is (`driver::request_stop`): one bench run per process.
static TLS: std::sync::OnceLock<ClientTlsConfig> = std::sync::OnceLock::new();

/// The auth token every request of this process carries, once
/// [`log_in`] got one (servers with auth on).
static TOKEN: std::sync::OnceLock<tonic::metadata::AsciiMetadataValue> = std::sync::OnceLock::new();

/// A user to log in as.
#[derive(Clone)]
pub struct Login {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    // The flags are printed in errors and logs: never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({:?}, <redacted>)", self.name)
    }
}

impl std::str::FromStr for Login {
    type Err = String;
    /// `name:password`, split at the first colon (etcdctl's `--user`).
    fn from_str(s: &str) -> Result<Login, String> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() => Ok(Login {
                name: name.into(),
                password: password.into(),
            }),
            _ => Err("--user must be name:password".into()),
        }
    }
}

/// Trades `login` for a token at `url` (etcd's `Authenticate`); every
/// request made with [`req`] from then on carries it. A run is shorter
/// than a token lives (300 s on Cairn and etcd by default).
pub async fn log_in(url: &str, login: &Login, timeout: Duration) -> anyhow::Result<()> {
    use cairn_proto::etcdserverpb::auth_client::AuthClient;
    use cairn_proto::etcdserverpb::AuthenticateRequest;
    let token = AuthClient::new(connect(url, timeout).await?)
        .authenticate(AuthenticateRequest {
            name: login.name.clone(),
            password: login.password.clone(),
        })
        .await
        .with_context(|| format!("logging in as {} at {url}", login.name))?
        .into_inner()
        .token;
    let _ = TOKEN.set(token.parse().context("the server's token is not ASCII")?);
    Ok(())
}

/// `msg` as a request, with the token if [`log_in`] got one.
pub fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = TOKEN.get() {
        r.metadata_mut().insert("token", t.clone());
    }
    r
}

/// Dial `https://` endpoints with `tls` from now on; the first call wins.
pub fn use_tls(tls: ClientTlsConfig) {
    let _ = TLS.set(tls);
}

/// The TLS of the endpoints' servers: the CA that signed them and, for
/// servers that ask, a client certificate and key (PEM files, etcdctl's
/// `--cacert`, `--cert`, `--key`).
pub fn tls_config(
    ca: &std::path::Path,
    cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    let read = |p: &std::path::Path| std::fs::read(p).with_context(|| p.display().to_string());
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let Some((cert, key)) = cert_and_key {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// `127.0.0.1:2379` -> `http://127.0.0.1:2379` (`https://` once [`use_tls`]
/// was called); URLs pass unchanged.
pub fn normalize_endpoint(ep: &str) -> String {
    let ep = ep.trim().trim_end_matches('/');
    if ep.contains("://") {
        ep.to_string()
    } else if TLS.get().is_some() {
        format!("https://{ep}")
    } else {
        format!("http://{ep}")
    }
}

/// The port of an endpoint URL, if it names one.
pub fn endpoint_port(ep: &str) -> Option<u16> {
    let rest = ep.split_once("://").map_or(ep, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

/// Open one HTTP/2 connection (a tonic `Channel` over one endpoint is one
/// connection).
///
/// Its writes are coalesced (`cairn_raft::coalesce`, as the members' own
/// connections): requests that many clients start in one scheduling round
/// leave in one socket write, as grpc-go's writer (etcd's clients) sends
/// them. hyper's h2 client otherwise writes every request on its own, and
/// on loopback each write also runs the server's TCP receive path: a third
/// of the bench's CPU under put c=256 was in `writev`, CPU the servers
/// under test lacked. Coalesced, the bench spends ~15 instead of ~22 µs
/// per put, and both Cairn and etcd take more puts/s (BENCHMARKS.md).
pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad endpoint {url}"))?
        .connect_timeout(timeout);
    if let Some(tls) = TLS.get() {
        endpoint = endpoint
            .tls_config(tls.clone())
            .with_context(|| format!("TLS for {url}"))?;
    }
    tokio::time::timeout(
        timeout,
        endpoint.connect_with_connector(Connector::new(None)),
    )
    .await
    .with_context(|| format!("connecting to {url}: timed out"))?
    .with_context(|| format!("connecting to {url}"))
}

/// `n` connections spread round-robin over `endpoints`; clients are spread
/// round-robin over the connections with [`Pool::get`].
#[derive(Debug, Clone)]
pub struct Pool {
    channels: Vec<Channel>,
}

impl Pool {
    pub async fn open(endpoints: &[String], n: usize, timeout: Duration) -> anyhow::Result<Pool> {
        if endpoints.is_empty() {
            bail!("no endpoints");
        }
        let mut channels = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            channels.push(connect(&endpoints[i % endpoints.len()], timeout).await?);
        }
        Ok(Pool { channels })
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The connection of client `i`.
    pub fn get(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }
}

/// The leader as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub endpoint: String,
    pub member_id: u64,
}

/// Ask every endpoint for Maintenance.Status until one of them is the
/// leader (its own member ID equals the leader ID it reports). Retries
/// until `within` has passed, e.g. during an election.
pub async fn find_leader(endpoints: &[String], within: Duration) -> anyhow::Result<Leader> {
    let deadline = Instant::now() + within;
    let per_call = Duration::from_secs(2).min(within);
    let mut last_err = String::from("no endpoint answered");
    loop {
        for ep in endpoints {
            let status = async {
                let ch = connect(ep, per_call).await?;
                let mut m = MaintenanceClient::new(ch);
                let r = tokio::time::timeout(per_call, m.status(StatusRequest {}))
                    .await
                    .context("status timed out")??;
                anyhow::Ok(r.into_inner())
            }
            .await;
            match status {
                Ok(s) => {
                    let me = s.header.as_ref().map_or(0, |h| h.member_id);
                    if s.leader != 0 && s.leader == me {
                        return Ok(Leader {
                            endpoint: ep.clone(),
                            member_id: me,
                        });
                    }
                    last_err = if s.leader == 0 {
                        format!("{ep}: no leader yet")
                    } else {
                        format!("{ep}: leader is {:x}, not among the endpoints", s.leader)
                    };
                }
                Err(e) => last_err = format!("{ep}: {e:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("no leader found among the endpoints within {within:?}: {last_err}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_a_scheme_and_ports_are_read() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://a:1/"), "http://a:1");
        assert_eq!(endpoint_port("http://127.0.0.1:2379"), Some(2379));
        assert_eq!(endpoint_port("127.0.0.1:23791/x"), Some(23791));
        assert_eq!(endpoint_port("http://host"), None);
    }
}
