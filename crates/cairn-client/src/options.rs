//! Connection, timeout and retry settings.

use std::time::Duration;

/// How a [`Client`](crate::Client) connects, times out and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Budget for establishing one TCP/HTTP2 connection to one endpoint.
    pub connect_timeout: Duration,
    /// Budget for a whole call, retries and failover included. Unary calls
    /// also send it to the server as the gRPC deadline. Streams use it for
    /// being established (and keep-alive / snapshot for each message).
    pub request_timeout: Duration,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Largest response message accepted (a range over many keys can be
    /// large).
    pub max_response_bytes: usize,
    /// Largest request message sent.
    pub max_request_bytes: usize,
    /// Most endpoints the client keeps channels for: the given ones plus
    /// leaders it was redirected to.
    pub max_endpoints: usize,
    /// Move to the leader a follower names in its answers (the
    /// `cairn-leader` response header), so writes skip the forwarding hop
    /// there (a round trip and two thread hand-offs each). Turn it off when
    /// the members' advertised client URLs are not reachable from here.
    pub follow_leader: bool,
    /// How to talk to `https://` endpoints; `None` refuses them.
    pub tls: Option<TlsOptions>,
    /// Who to log in as on a cluster with authentication on (etcdctl
    /// `--user`): the client trades them for a token before its first call
    /// and sends it with every call; `None` calls anonymously, which such a
    /// cluster refuses. A login, when a call needs one, has a request
    /// timeout of its own.
    pub credentials: Option<Credentials>,
}

/// A user name and password for etcd's `Authenticate`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user to act as.
    pub user: String,
    /// Its password, sent only to `Authenticate` (use TLS on untrusted
    /// networks: it travels as is).
    pub password: String,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    // Options and clients are printed in logs: never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS for `https://` endpoints: the CA that signs the servers'
/// certificates and, for servers that ask for one, this client's own.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM certificates of the CA (etcdctl `--cacert`).
    pub ca_pem: Vec<u8>,
    /// PEM certificate and private key to show (etcdctl `--cert`, `--key`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    // Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// Reads the CA and, if both are given, the certificate and key.
    pub fn from_files(
        ca: &std::path::Path,
        cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<TlsOptions, crate::ClientError> {
        let read = |what: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                crate::ClientError::InvalidArgument(format!("{what} {}: {e}", path.display()))
            })
        };
        let identity = match cert_and_key {
            Some((cert, key)) => Some((read("certificate", cert)?, read("key", key)?)),
            None => None,
        };
        Ok(TlsOptions {
            ca_pem: read("CA certificate", ca)?,
            identity,
        })
    }

    /// As tonic dials with it.
    pub fn to_tonic(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => config.identity(tonic::transport::Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_response_bytes: 64 * 1024 * 1024,
            max_request_bytes: 64 * 1024 * 1024,
            max_endpoints: 32,
            follow_leader: true,
            tls: None,
            credentials: None,
        }
    }
}

/// Retries: at most `max_attempts` tries in all, sleeping an exponentially
/// growing, capped and jittered delay between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the second try.
    pub initial_backoff: Duration,
    /// The delay doubles per try up to this cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries: one try only.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The full (un-jittered) delay after failed try number `attempt`
    /// (0-based): `initial * 2^attempt`, capped at `max_backoff`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// [`backoff`](Self::backoff) with "equal jitter": half of it fixed,
    /// the other half scaled by `jitter` (clamped to `0.0..=1.0`), so that
    /// clients retrying together spread out.
    pub fn jittered_backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self.backoff(attempt);
        let half = full / 2;
        half + (full - half).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A random number in `0.0..1.0` without a RNG dependency: std's
/// `RandomState` is seeded randomly per thread and stepped per call.
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
        };
        let got: Vec<u128> = (0..6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![50, 100, 200, 300, 300, 300]);
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.backoff(40), Duration::from_millis(300));
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(300));
    }

    #[test]
    fn jitter_keeps_at_least_half_and_at_most_all() {
        let p = RetryPolicy::default();
        assert_eq!(p.jittered_backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.jittered_backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.jittered_backoff(1, 7.0), Duration::from_millis(100));
        let mid = p.jittered_backoff(1, 0.5);
        assert_eq!(mid, Duration::from_millis(75));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn defaults_are_sane() {
        let o = ClientOptions::default();
        assert!(o.retry.max_attempts >= 2);
        assert!(o.connect_timeout < o.request_timeout);
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(o.credentials, None);
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let o = ClientOptions {
            credentials: Some(Credentials::new("alice", "s3cret-pw")),
            ..ClientOptions::default()
        };
        let shown = format!("{o:?} {o:#?}");
        assert!(shown.contains("alice"), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }
}
