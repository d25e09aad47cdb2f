//! etcd's `--cipher-suites`, `--tls-min-version` and `--tls-max-version`:
//! clients offering only what the member does not allow stop at the
//! handshake; members with the flags still form a cluster, and dial with
//! the same restrictions.

use std::sync::Arc;

use cairn_raft::coalesce::Connector;
use cairn_server::tls::TlsPolicy;
use tokio_rustls::rustls::crypto::ring::{self, cipher_suite as suite};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{
    self, ClientConfig, ProtocolVersion, SupportedCipherSuite, SupportedProtocolVersion,
};

use super::*;

const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A client that trusts the test CA and offers only `suites` over
/// `versions`. *ring*'s provider, as the member's (deprecated by rustls
/// for lacking post-quantum key exchange; see `tls::provider`).
#[allow(deprecated)]
fn client(
    pki: &TestPki,
    suites: &[SupportedCipherSuite],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..ring::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in cairn_server::tls::read_certs("ca", &pki.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

/// A handshake with `addr`: the version and suite agreed, or why none was.
async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<(ProtocolVersion, rustls::CipherSuite), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(localhost(), tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let conn = tls.get_ref().1;
    Ok((
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
    ))
}

/// A gRPC channel to the client port at `addr` over TLS with `config`,
/// through the connector members dial each other with.
async fn channel(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(Connector::new(None).with_tls(config, localhost()))
        .await
        .expect("connected")
}

/// A TLS 1.2 list restricts TLS 1.2 only: a client offering another TLS
/// 1.2 suite is refused, one offering the listed suite is served, and TLS
/// 1.3 is still served with its own suites, as etcd (Go) does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cipher_suite_list_restricts_tls12_and_leaves_tls13_on() {
    let (_certs, pki) = pki();
    let c = Cluster::start(1, |c| {
        client_tls(&pki, c, false);
        c.cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
    })
    .await;
    c.wait_leader(ELECTION).await;
    let addr = c.node(0).config.listen_client;

    let failed_before = client_handshake_failures();
    let outside = client(
        &pki,
        &[suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256],
        TLS12,
    );
    let err = handshake(addr, outside)
        .await
        .expect_err("a suite not listed");
    assert!(err.contains("HandshakeFailure"), "{err}");
    wait_until(
        "the refused handshake counted",
        Duration::from_secs(5),
        || async { client_handshake_failures() > failed_before },
    )
    .await;

    let inside = client(
        &pki,
        &[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
        TLS12,
    );
    assert_eq!(
        handshake(addr, inside.clone()).await.unwrap(),
        (
            ProtocolVersion::TLSv1_2,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        )
    );
    let ch = channel(addr, inside).await;
    assert_eq!(put_get(ch, "listed").await.expect("served"), b"v");

    let tls13 = client(&pki, &[suite::TLS13_CHACHA20_POLY1305_SHA256], TLS13);
    assert_eq!(
        handshake(addr, tls13).await.unwrap(),
        (
            ProtocolVersion::TLSv1_3,
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ),
        "TLS 1.3 keeps its suites when the list names none"
    );
    c.shutdown().await;
}

/// `--tls-max-version TLS1.2` with a cipher list on both ports: the
/// members form a cluster over them (serving and dialing agree), TLS 1.3
/// clients stop at the handshake on either port, and a member dialing
/// with only TLS 1.3 (the dialing side takes the policy too) gets nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_max_version_12_refuses_tls13_clients_on_both_ports() {
    let (_certs, pki) = pki();
    let suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".to_string()];
    let c = Cluster::start(3, |c| {
        client_tls(&pki, c, false);
        peer_tls(&pki, c);
        c.cipher_suites = suites.clone();
        c.tls_max_version = Some("TLS1.2".into());
    })
    .await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    // Forwarded by a follower, replicated to all: peers dial each other.
    put(c.node(follower), "tls12-only", "1").await;
    for i in 0..3 {
        assert_eq!(
            get(c.node(i), "tls12-only").await.as_deref(),
            Some(&b"1"[..])
        );
    }

    let tls13_only = client(&pki, ring::ALL_CIPHER_SUITES, TLS13);
    let member = &c.node(follower).config;
    for (port, addr) in [
        ("client", member.listen_client),
        ("peer", member.listen_peer),
    ] {
        let err = handshake(addr, tls13_only.clone())
            .await
            .expect_err("TLS 1.3 on a TLS 1.2 port");
        assert!(
            err.contains("ProtocolVersion") || err.contains("HandshakeFailure"),
            "{port}: {err}"
        );
    }
    let served = client(&pki, ring::ALL_CIPHER_SUITES, TLS12);
    let ch = channel(member.listen_client, served).await;
    assert_eq!(put_get(ch, "over-1.2").await.expect("served"), b"v");

    // The member's own dialing config against its peers: with its policy
    // it passes; with a TLS 1.3-only one it does not.
    use cairn_proto::raft::v1::Payload;
    use cairn_raft::cluster_check::peer_grpc;
    use cairn_raft::network::dial_target;
    let peer_url = c.node(leader).config.advertise_peer_url();
    let call = |policy: TlsPolicy| {
        let tls = cairn_server::tls::peer_dial_config(member.peer_tls().unwrap(), &policy);
        let peer_url = peer_url.clone();
        async move {
            let (url, connector) =
                dial_target(&peer_url, Some(&tls.unwrap()), Connector::new(None)).unwrap();
            let ch = Endpoint::from_shared(url)
                .unwrap()
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(connector)
                .await
                .map_err(|e| format!("{e:?}"))?;
            peer_grpc(ch, None, 1024)
                .forward(Payload { data: Vec::new() })
                .await
                .map_err(|e| format!("{e:?}"))
        }
    };
    call(member.tls_policy().unwrap())
        .await
        .expect("the member's own policy passes");
    let only_tls13 = TlsPolicy::parse(&[], Some("TLS1.3"), None).unwrap();
    let err = call(only_tls13)
        .await
        .expect_err("TLS 1.3 to a TLS 1.2 peer");
    assert!(
        err.contains("ProtocolVersion") || err.contains("HandshakeFailure"),
        "{err}"
    );
    c.shutdown().await;
}

/// A peer that speaks TLS 1.2 and 1.3 (no client certificate asked),
/// reporting the version each handshake agreed on, or why none was.
#[allow(deprecated)]
async fn two_version_peer(
    pki: &TestPki,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<Result<Option<ProtocolVersion>, String>>,
) {
    let certs = cairn_server::tls::read_certs("cert", &pki.server_cert).unwrap();
    let key = cairn_server::tls::read_key("key", &pki.server_key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let agreed = acceptor
                    .accept(tcp)
                    .await
                    .map(|tls| tls.get_ref().1.protocol_version())
                    .map_err(|e| e.to_string());
                let _ = tx.send(agreed).await;
            });
        }
    });
    (addr, rx)
}

/// The member's own dialing takes `--tls-max-version` (not only a dialing
/// config built by hand, as above): a peer that speaks TLS 1.2 and 1.3 is
/// dialed with TLS 1.2, where a dialer ignoring the policy agrees on 1.3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_dials_its_peers_within_its_tls_versions() {
    let (_certs, pki) = pki();
    let (peer, mut handshakes) = two_version_peer(&pki).await;
    // A cluster of the member and the stand-in peer: the member asks the
    // peer for its vote, over the peer port's TLS.
    let c = Cluster::start(1, |c| {
        c.initial_cluster = format!("{},n2=http://{peer}", c.initial_cluster);
        peer_tls(&pki, c);
        c.tls_max_version = Some("TLS1.2".into());
    })
    .await;
    let agreed = tokio::time::timeout(Duration::from_secs(20), handshakes.recv())
        .await
        .expect("the member dials its peer")
        .expect("a handshake reported");
    assert_eq!(agreed, Ok(Some(ProtocolVersion::TLSv1_2)));
    c.shutdown().await;
}
