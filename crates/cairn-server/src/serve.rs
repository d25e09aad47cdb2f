//! Start a member and serve it: the etcd API (and HTTP `/health`) on the
//! client port, the Raft transport on the peer port.

use std::net::SocketAddr;
use std::sync::Arc;

use cairn_raft::coalesce::Coalesced;
use cairn_raft::peer_service::PeerService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::config::ServerConfig;
use crate::leader_hint::{LeaderHint, LeaderHintLayer};
use crate::node::peer_handler::NodePeerHandler;
use crate::node::{Node, StartError};
use crate::services;

/// How long shutdown waits for open client streams to finish.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// A member that is running; dropping it does not stop it, `shutdown` does.
pub struct RunningServer {
    pub node: Arc<Node>,
    /// Where the client API listens (the real port when 0 was asked for).
    pub client_addr: SocketAddr,
    /// `https` when the client port serves TLS, else `http`.
    pub client_scheme: &'static str,
    pub peer_addr: SocketAddr,
    /// Where `/health` and `/metrics` are served alone (`listen_metrics`,
    /// real ports).
    pub metrics_addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The ports' listeners: closed before a shutdown returns.
    open: crate::tls::OpenListeners,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Storage(format!("cannot listen for {what} on {addr}: {e}")))
}

/// Connections accepted on the peer port (after their TLS handshake when
/// `tls` is set), their writes coalesced.
fn peer_incoming(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    open: &crate::tls::OpenListeners,
) -> impl futures::Stream<Item = std::io::Result<Coalesced<crate::tls::Accepted>>> {
    use futures::StreamExt;
    crate::tls::incoming(vec![listener], tls, crate::tls::Port::Peer, open)
        .map(|accepted| accepted.map(Coalesced::new))
}

/// Which peer API a member serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerApi {
    /// Everything this version has.
    #[default]
    Current,
    /// Without `ForwardStream`, as members before it: stands in for an
    /// older member in rolling-upgrade tests.
    WithoutForwardStream,
}

/// Bind both ports, start the node, serve. Port 0 picks a free port; the
/// advertised URLs then use the real one.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    start_with(config, PeerApi::Current).await
}

/// [`start`], serving `peer_api` on the peer port.
pub async fn start_with(
    mut config: ServerConfig,
    peer_api: PeerApi,
) -> Result<RunningServer, StartError> {
    config.validate()?;
    // Certificates for --auto-tls and --peer-auto-tls, generated or found.
    crate::tls::self_signed::ensure(&config)?;
    // TLS files are read before anything starts, so a bad one only fails
    // the start. The client port also speaks HTTP/1.1 (`/health`).
    let policy = config.tls_policy()?;
    if !policy.left_out().is_empty() {
        tracing::warn!(
            "--cipher-suites: {} left out: rustls does not offer them (a client that \
             offers only them cannot connect)",
            policy.left_out().join(", ")
        );
    }
    let client_tls = match config.client_tls() {
        Some(files) => Some(crate::tls::acceptor(files, &policy, &[b"h2", b"http/1.1"])?),
        None => None,
    };
    let peer_tls = match config.peer_tls() {
        Some(files) => Some(crate::tls::acceptor(files, &policy, &[b"h2"])?),
        None => None,
    };
    let client_scheme = if client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let client_listener = bind(config.listen_client, "clients").await?;
    let mut client_listeners = Vec::new();
    for addr in &config.listen_client_also {
        client_listeners.push(bind(*addr, "clients").await?);
    }
    let peer_listener = bind(config.listen_peer, "peers").await?;
    let client_addr = client_listener
        .local_addr()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let peer_addr = peer_listener
        .local_addr()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    let mut metrics_listeners = Vec::new();
    for addr in &config.listen_metrics {
        metrics_listeners.push(bind(*addr, "metrics").await?);
    }
    let metrics_addrs = metrics_listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Storage(e.to_string()))?;
    config.listen_client = client_addr;
    client_listeners.insert(0, client_listener);
    config.listen_peer = peer_addr;
    let limits = services::Limits {
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        max_watchers_per_stream: config.max_watchers_per_stream,
        max_watchers: config.max_watchers,
    };

    let node = Node::start(config).await?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let peer_service = PeerService::new(
        node.raft.clone(),
        Arc::new(NodePeerHandler(Arc::downgrade(&node))),
    )
    .with_cluster_id(node.cluster_id());
    let peer_service = match peer_api {
        PeerApi::Current => peer_service,
        PeerApi::WithoutForwardStream => peer_service.without_forward_stream(),
    };
    let open = crate::tls::OpenListeners::default();
    let peer_task = tokio::spawn({
        let (stopped, open) = (stopped.clone(), open.clone());
        async move {
            let result = Server::builder()
                .add_service(peer_service.into_server())
                .serve_with_incoming_shutdown(
                    peer_incoming(peer_listener, peer_tls, &open),
                    until_stopped(stopped),
                )
                .await;
            if let Err(e) = result {
                tracing::error!("peer server stopped: {e}");
            }
        }
    });

    // Before any client is served; the peer port is up, so this member
    // can catch up and answer the others meanwhile.
    if node.config.initial_corrupt_check && node.held_data {
        if let Err(e) = crate::initial_check::run(&node).await {
            tracing::error!("{e}");
            let _ = stop.send(true);
            node.shutdown().await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, peer_task).await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await;
            return Err(e);
        }
    }

    let (routes, http_only) = services::routes(node.clone(), limits);
    let mut tasks = vec![peer_task];
    if !metrics_listeners.is_empty() {
        tasks.push(tokio::spawn({
            let (stopped, open) = (stopped.clone(), open.clone());
            async move {
                let result = Server::builder()
                    .accept_http1(true)
                    .add_routes(tonic::service::Routes::from(http_only))
                    .serve_with_incoming_shutdown(
                        crate::tls::incoming(
                            metrics_listeners,
                            None,
                            crate::tls::Port::Client,
                            &open,
                        ),
                        until_stopped(stopped),
                    )
                    .await;
                if let Err(e) = result {
                    tracing::error!("metrics server stopped: {e}");
                }
            }
        }));
    }
    let hint = LeaderHintLayer(Arc::new(LeaderHint::new(node.clone())));
    let keepalive_interval =
        std::time::Duration::from_millis(node.config.grpc_keepalive_interval_ms);
    let keepalive_timeout = std::time::Duration::from_millis(node.config.grpc_keepalive_timeout_ms);
    let require_leader = crate::require_leader::RequireLeaderLayer(node.clone());
    let client_task = tokio::spawn({
        let (stopped, open) = (stopped.clone(), open.clone());
        async move {
            let result = Server::builder()
                .accept_http1(true)
                .http2_keepalive_interval(Some(keepalive_interval))
                .http2_keepalive_timeout(Some(keepalive_timeout))
                .layer(hint)
                .layer(require_leader)
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    crate::authority_fix::incoming(client_listeners, client_tls, &open),
                    until_stopped(stopped),
                )
                .await;
            if let Err(e) = result {
                tracing::error!("client server stopped: {e}");
            }
        }
    });

    Ok(RunningServer {
        node,
        client_addr,
        client_scheme,
        peer_addr,
        metrics_addrs,
        stop,
        open,
        tasks: {
            tasks.push(client_task);
            tasks
        },
    })
}

impl RunningServer {
    /// Stop serving and stop Raft. Waits for both servers to close.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.node.shutdown().await;
        // Servers close once open streams end; long-lived streams (watch,
        // observe, snapshot) are told to stop, but do not wait forever.
        for mut t in self.tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                t.abort();
            }
        }
        // A server's accept loops end a moment after it closes; a member
        // started again at once must find its ports free.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.open.all_closed()).await;
    }

    pub fn client_url(&self) -> String {
        format!("{}://{}", self.client_scheme, self.client_addr)
    }
}
