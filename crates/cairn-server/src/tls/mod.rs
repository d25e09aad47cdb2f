//! TLS on the client and peer ports, set up with etcd's flags.
//!
//! - Client port: `--cert-file` and `--key-file` turn TLS on;
//!   `--client-cert-auth` with `--trusted-ca-file` also asks every client
//!   for a certificate signed by that CA (mutual TLS).
//! - Peer port: `--peer-cert-file`, `--peer-key-file` and
//!   `--peer-trusted-ca-file` (needed: it is how a member checks the
//!   members it dials); `--peer-client-cert-auth` makes the peer port ask
//!   for a certificate as well. A member dials other members with its peer
//!   certificate as its client identity.
//!
//! TLS ends here, below the client port's HTTP/2 filter
//! ([`crate::authority_fix`]), which must read the plain frames. Handshakes
//! run in tasks of their own, at most [`MAX_HANDSHAKES`] at once and each
//! for at most [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds up
//! neither the accept loop nor other clients.
//!
//! - `--auto-tls`, `--peer-auto-tls`: a port without certificate files
//!   serves a self-signed certificate the member generates in its data dir
//!   ([`self_signed`]). A member with a generated peer certificate dials
//!   the others without checking theirs (there is no CA to check by).
//!
//! A port's certificate and key are read again when their files change
//! ([`cert_reload`]), so a renewed certificate needs no restart; the CAs,
//! and the certificate a member shows when it dials others, are read at
//! start.

/// The handshake-signature methods of a `ClientCertVerifier` that wraps
/// another (`self.$inner()` returns it): only the certificate check
/// differs between the wrappers.
macro_rules! delegate_signature_checks {
    ($inner:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &tokio_rustls::rustls::DigitallySignedStruct,
        ) -> Result<
            tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
            tokio_rustls::rustls::Error,
        > {
            self.$inner().verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &tokio_rustls::rustls::DigitallySignedStruct,
        ) -> Result<
            tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
            tokio_rustls::rustls::Error,
        > {
            self.$inner().verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
            self.$inner().supported_verify_schemes()
        }
    };
}

mod allowed_cn;
mod cert_reload;
mod crl_reload;
pub mod policy;
pub mod self_signed;

pub use cert_reload::CHECK_INTERVAL;
pub use policy::{PolicyError, TlsPolicy};

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_raft::network::PeerTls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::auth::CertUser;

/// TLS handshakes in progress at once per port; past it the port stops
/// accepting until one ends (new connections wait in the kernel's backlog;
/// connections already open go on being served). Each holds a socket and
/// rustls' buffers, some tens of KiB.
pub const MAX_HANDSHAKES: usize = 256;
/// Longest a client may take over its handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 16;

/// Why a port's TLS could not be set up; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{setting} {path}: {reason}")]
    File {
        setting: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Rejected { what: &'static str, reason: String },
}

/// The files of one port's TLS, as the flags name them.
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    /// `--cert-file`, `--key-file`, `--trusted-ca-file` and
    /// `--client-crl-file`, or their `--peer-` forms: flag names for
    /// messages (`--auto-tls` for a generated certificate and key).
    pub settings: [&'static str; 4],
    pub cert: Cow<'a, Path>,
    pub key: Cow<'a, Path>,
    /// The certificate is one this member generated (`--auto-tls`,
    /// `--peer-auto-tls`; see the [`self_signed`] module), in its data dir.
    pub self_signed: bool,
    /// The CA that signs the certificates this port accepts from clients
    /// (and, for the peer port, the ones it accepts from members it dials).
    pub trusted_ca: Option<&'a Path>,
    /// Refuse clients without a certificate signed by `trusted_ca`.
    pub client_cert_auth: bool,
    /// Revocation lists the clients' certificates are checked against.
    pub crl: Option<&'a Path>,
    /// The one common name a client certificate may carry (the peer
    /// port's `--peer-cert-allowed-cn`).
    pub allowed_cn: Option<&'a str>,
}

fn file_err(setting: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        setting,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_pems(setting, path, "certificate")
}

/// Every PEM item of type `T` (a `what`) in a file; at least one.
fn read_pems<T: PemObject>(
    setting: &'static str,
    path: &Path,
    what: &str,
) -> Result<Vec<T>, TlsError> {
    let items = T::pem_file_iter(path)
        .map_err(|e| file_err(setting, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(setting, path, e))?;
    if items.is_empty() {
        return Err(file_err(setting, path, format!("holds no PEM {what}")));
    }
    Ok(items)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(setting: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            file_err(setting, path, "holds no PEM private key")
        }
        e => file_err(setting, path, e),
    })
}

/// *ring*'s provider, as tonic's client side uses (`tls-ring`): it builds
/// with a C compiler alone, where aws-lc-rs needs cmake and minutes more.
/// rustls deprecates it for lacking post-quantum key exchange; switching
/// both sides to aws-lc-rs would bring that.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for a port: its certificate and key, and with
/// `client_cert_auth` a verifier of clients' certificates; only the suites
/// and versions `policy` allows. `alpn` lists the application protocols it
/// offers, most preferred first.
pub fn acceptor(
    files: TlsFiles<'_>,
    policy: &TlsPolicy,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, TlsError> {
    let [cert_setting, key_setting, ca_setting, crl_setting] = files.settings;
    let server_cert = cert_reload::ReloadingCert::load(
        [cert_setting, key_setting],
        &files.cert,
        &files.key,
        provider(),
    )?;
    let builder = policy.server_builder().map_err(|e| TlsError::Rejected {
        what: "TLS versions and cipher suites",
        reason: e.to_string(),
    })?;
    let builder = match (files.client_cert_auth, files.trusted_ca) {
        (true, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_setting, ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_err(ca_setting, ca, format!("not a usable CA: {e}")))?;
            }
            let roots = Arc::new(roots);
            let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match files.crl {
                Some(crl) => Arc::new(crl_reload::ReloadingVerifier::load(
                    roots,
                    crl_setting,
                    crl,
                    provider(),
                )?),
                None => client_verifier(roots, Vec::new(), provider())
                    .map_err(|e| file_err(ca_setting, ca, e))?,
            };
            let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
                match files.allowed_cn {
                    Some(cn) => Arc::new(allowed_cn::AllowedCommonName {
                        inner: verifier,
                        allowed: cn.to_string(),
                    }),
                    None => verifier,
                };
            builder.with_client_cert_verifier(verifier)
        }
        (true, None) => {
            return Err(TlsError::Rejected {
                what: "client certificate authentication",
                reason: format!("needs {ca_setting}"),
            })
        }
        (false, _) => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(server_cert));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A verifier of client certificates signed by `roots`, refusing those
/// `crls` revoke. As etcd, which looks a certificate's serial up in its
/// CRL file, a certificate no list speaks of passes (an intermediate CA
/// without a list of its own, say).
fn client_verifier(
    roots: Arc<rustls::RootCertStore>,
    crls: Vec<rustls_pki_types::CertificateRevocationListDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, rustls::server::VerifierBuilderError>
{
    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .build()
}

/// How a member dials the other members when the peer port runs TLS: it
/// trusts `trusted_ca` and shows its own peer certificate, with the suites
/// and versions `policy` allows, as its peer port serves. With a
/// generated certificate (`--peer-auto-tls`) it checks none of theirs, as
/// etcd, which sets `InsecureSkipVerify` for it: each member's is
/// self-signed, so there is no CA to check them by.
pub fn peer_dial_config(files: TlsFiles<'_>, policy: &TlsPolicy) -> Result<PeerTls, TlsError> {
    let [cert_setting, key_setting, ca_setting, _] = files.settings;
    // Read here so a bad file fails the start, not every later dial.
    let certs = read_certs(cert_setting, &files.cert)?;
    let key = read_key(key_setting, &files.key)?;
    let builder = policy.client_builder().map_err(|e| TlsError::Rejected {
        what: "TLS versions and cipher suites",
        reason: e.to_string(),
    })?;
    let builder = if files.self_signed {
        builder
            .dangerous()
            .with_custom_certificate_verifier(any_server_certificate())
    } else {
        let Some(ca) = files.trusted_ca else {
            return Err(TlsError::Rejected {
                what: "peer TLS",
                reason: format!("needs {ca_setting} to check the members it dials"),
            });
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca_setting, ca)? {
            roots
                .add(cert)
                .map_err(|e| file_err(ca_setting, ca, format!("not a usable CA: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| file_err(key_setting, &files.key, e))?;
    // The peer port serves gRPC over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(PeerTls {
        config: Arc::new(config),
    })
}

/// A check of a server's certificate that accepts any: for dialing members
/// with self-signed certificates (`--peer-auto-tls`), and for clients that
/// skip the check (etcdctl's `--insecure-skip-tls-verify`). The handshake's
/// signatures are still checked, so the server holds the key of the
/// certificate it shows; who that is, nothing says.
pub fn any_server_certificate() -> Arc<dyn ServerCertVerifier> {
    Arc::new(AnyServerCertificate(provider()))
}

#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An accepted connection: plain TCP, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A connection accepted on a port, with what tonic puts in each of its
/// requests' extensions.
pub struct Accepted {
    pub stream: Stream,
    pub info: ConnInfo,
}

/// What the services may learn about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    /// The common name of the client certificate the handshake verified
    /// (only with client certificate authentication): with auth on, the
    /// user a request without a token runs as, as in etcd.
    pub cert_user: Option<CertUser>,
}

impl ConnInfo {
    pub fn plain(tcp: TcpConnectInfo) -> Self {
        ConnInfo {
            tcp,
            cert_user: None,
        }
    }
}

impl Connected for Accepted {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The common name (CN) of a DER certificate's subject, if it has one that
/// is text.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Forwards a call to whichever stream an [`Accepted`] holds.
macro_rules! either {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.get_mut().stream {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => s.poll_shutdown(cx))
    }
}

/// Which port a connection came in on, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Client = 0,
    Peer = 1,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Port::Client => "client port",
            Port::Peer => "peer port",
        })
    }
}

/// TLS handshakes that failed or timed out, per [`Port`]: process-wide,
/// as the Raft metrics are (`cairn_raft::metrics`). A rise means clients
/// or members with the wrong CA or certificate, or a scan.
static HANDSHAKES_FAILED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Appends `cairn_tls_handshake_failures_total` in the Prometheus text
/// format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP cairn_tls_handshake_failures_total TLS handshakes that failed or timed out (process-wide).\n\
         # TYPE cairn_tls_handshake_failures_total counter"
    );
    for (port, label) in [(Port::Client, "client"), (Port::Peer, "peer")] {
        let n = HANDSHAKES_FAILED[port as usize].load(Relaxed);
        let _ = writeln!(
            out,
            "cairn_tls_handshake_failures_total{{port=\"{label}\"}} {n}"
        );
    }
}

/// Accepts connections on every one of `listeners` (a port may listen on
/// several addresses, as etcd's `--listen-client-urls` lists them) with
/// Nagle's algorithm off (small gRPC messages must not wait for delayed
/// ACKs; writes are coalesced instead) and, with `tls`, after their
/// handshake. A failed handshake is logged and the connection dropped; the
/// stream yields only connections ready for HTTP. The accept loops end
/// when the stream is dropped. The queue and the handshakes in flight are
/// bounded for the port as a whole.
pub fn incoming(
    listeners: Vec<TcpListener>,
    tls: Option<TlsAcceptor>,
    port: Port,
    open: &OpenListeners,
) -> ReceiverStream<io::Result<Accepted>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    for listener in listeners {
        let (tx, tls, handshakes) = (tx.clone(), tls.clone(), handshakes.clone());
        let guard = open.opened();
        tokio::spawn(async move {
            accept_loop(&listener, tx, tls, handshakes, port).await;
            // The port is free again before the count says so.
            drop(listener);
            drop(guard);
        });
    }
    ReceiverStream::new(rx)
}

/// Counts a server's listeners still open: a shutdown waits for none, so
/// a member started again at once can bind the same ports (the accept
/// loops end a moment after the server drops their stream).
#[derive(Debug, Clone)]
pub struct OpenListeners(Arc<tokio::sync::watch::Sender<usize>>);

impl Default for OpenListeners {
    fn default() -> Self {
        OpenListeners(Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

/// One open listener of an [`OpenListeners`], counted until dropped.
struct ListenerOpen(OpenListeners);

impl Drop for ListenerOpen {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n -= 1);
    }
}

impl OpenListeners {
    fn opened(&self) -> ListenerOpen {
        self.0.send_modify(|n| *n += 1);
        ListenerOpen(self.clone())
    }

    /// Returns once every listener counted here is closed.
    pub async fn all_closed(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

/// One listener's accept loop for [`incoming`]; returns when the stream
/// it feeds is dropped.
async fn accept_loop(
    listener: &TcpListener,
    tx: mpsc::Sender<io::Result<Accepted>>,
    tls: Option<TlsAcceptor>,
    handshakes: Arc<Semaphore>,
    port: Port,
) {
    loop {
        // With TLS, a handshake slot first: at the limit, stop accepting.
        let permit = match &tls {
            Some(_) => tokio::select! {
                p = handshakes.clone().acquire_owned() => Some(p.expect("never closed")),
                _ = tx.closed() => return,
            },
            None => None,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = tx.closed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, most likely: back off.
                tracing::debug!("{port} accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let info = TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: Some(remote),
        };
        let Some(acceptor) = &tls else {
            let conn = Accepted {
                stream: Stream::Plain(tcp),
                info: ConnInfo::plain(info),
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
            continue;
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Only a verified client shows a certificate: the
                    // acceptor asks for one only with client auth on.
                    let cert_user = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| common_name(der))
                        .map(CertUser);
                    let conn = Accepted {
                        stream: Stream::Tls(Box::new(tls)),
                        info: ConnInfo {
                            tcp: info,
                            cert_user,
                        },
                    };
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => {
                    HANDSHAKES_FAILED[port as usize].fetch_add(1, Relaxed);
                    tracing::debug!("{port}: TLS handshake with {remote} failed: {e}")
                }
                Err(_) => {
                    HANDSHAKES_FAILED[port as usize].fetch_add(1, Relaxed);
                    tracing::debug!(
                            "{port}: TLS handshake with {remote} took over {HANDSHAKE_TIMEOUT:?}; dropped"
                        )
                }
            }
        });
    }
}
