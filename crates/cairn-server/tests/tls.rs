//! TLS on the client and peer ports (etcd's `--cert-file`,
//! `--client-cert-auth`, `--peer-*` flags): real members in-process, real
//! handshakes, clients that must be refused.

/// `--cipher-suites` and the TLS version flags (`tests/tls/suites.rs`).
#[path = "tls/suites.rs"]
mod suites;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_chaos::certs::TestPki;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_server::ServerConfig;
use support::*;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const ELECTION: Duration = Duration::from_secs(10);

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::write(dir.path());
    (dir, pki)
}

fn client_tls(pki: &TestPki, c: &mut ServerConfig, client_cert_auth: bool) {
    c.cert_file = Some(pki.server_cert.clone());
    c.key_file = Some(pki.server_key.clone());
    c.trusted_ca_file = Some(pki.ca.clone());
    c.client_cert_auth = client_cert_auth;
}

fn peer_tls(pki: &TestPki, c: &mut ServerConfig) {
    c.peer_cert_file = Some(pki.server_cert.clone());
    c.peer_key_file = Some(pki.server_key.clone());
    c.peer_trusted_ca_file = Some(pki.ca.clone());
    c.peer_client_cert_auth = true;
    c.initial_cluster = c.initial_cluster.replace("http://", "https://");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A channel to `url` trusting `ca`, showing `identity` (cert, key) if given.
async fn dial(
    url: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// `cairn_tls_handshake_failures_total{port="client"}` as `/metrics` shows it.
fn client_handshake_failures() -> u64 {
    let mut text = String::new();
    cairn_server::tls::render_metrics(&mut text);
    let line = text
        .lines()
        .find(|l| l.starts_with("cairn_tls_handshake_failures_total{port=\"client\"}"))
        .expect("the client port's counter");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// What a client may show that the CA did not sign, for messages: none,
/// or another CA's certificate and key.
fn unsigned_identities(pki: &TestPki) -> [(&'static str, Option<(&Path, &Path)>); 2] {
    [
        ("no certificate", None),
        (
            "another CA's",
            Some((pki.stranger_cert.as_path(), pki.stranger_key.as_path())),
        ),
    ]
}

/// Puts `key` through `channel` and reads it back.
async fn put_get(channel: Channel, key: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut kv = KvClient::new(channel);
    kv.put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await?;
    let got = kv
        .range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(got
        .kvs
        .into_iter()
        .next()
        .map(|kv| kv.value)
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_port_with_tls_serves_clients_that_trust_its_ca() {
    let (_certs, pki) = pki();
    let c = Cluster::start(1, |c| client_tls(&pki, c, false)).await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();
    assert!(url.starts_with("https://"), "{url}");

    // A client that connects and says nothing holds up no one: handshakes
    // run beside the accept loop.
    let _silent = tokio::net::TcpStream::connect(c.node(0).config.listen_client)
        .await
        .unwrap();
    let quick = Duration::from_secs(5);
    assert!(quick < cairn_server::tls::HANDSHAKE_TIMEOUT);
    let ch = tokio::time::timeout(quick, dial(&url, &pki.ca, None))
        .await
        .expect("not held up by the silent client")
        .expect("handshake");
    assert_eq!(put_get(ch, "k").await.expect("served over TLS"), b"v");

    // A client that trusts another CA stops at the handshake, and the
    // member counts it.
    let failed_before = client_handshake_failures();
    let err = dial(&url, &pki.other_ca, None)
        .await
        .expect_err("untrusted");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    wait_until(
        "the failed handshake counted",
        Duration::from_secs(5),
        || async { client_handshake_failures() > failed_before },
    )
    .await;
    // Plain HTTP/2 to the TLS port gets no answer it can read.
    let plain = url.replace("https://", "http://");
    let ch = Endpoint::from_shared(plain).unwrap().connect_lazy();
    let mut kv = KvClient::new(ch);
    let mut req = tonic::Request::new(RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(5));
    kv.range(req).await.expect_err("plain HTTP/2 to a TLS port");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_auth_refuses_clients_without_a_certificate_from_the_ca() {
    let (_certs, pki) = pki();
    let c = Cluster::start(1, |c| client_tls(&pki, c, true)).await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();

    let signed = dial(&url, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("handshake");
    assert_eq!(put_get(signed, "k").await.expect("served"), b"v");

    // TLS 1.3 lets the client finish its side before the server checks the
    // certificate, so the refusal may come with the first call.
    for (who, identity) in unsigned_identities(&pki) {
        let refused = match dial(&url, &pki.ca, identity).await {
            Err(_) => true,
            Ok(ch) => put_get(ch, "k").await.is_err(),
        };
        assert!(refused, "a client with {who} was served");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_replicate_and_forward_over_tls_and_refuse_peers_without_a_certificate() {
    let (_certs, pki) = pki();
    let c = Cluster::start(3, |c| {
        client_tls(&pki, c, true);
        peer_tls(&pki, c);
    })
    .await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    assert!(c
        .node(0)
        .config
        .advertise_peer_url()
        .starts_with("https://"));
    // Forwarded by a follower to the leader, replicated to all.
    put(c.node(follower), "over-tls", "1").await;
    for i in 0..3 {
        assert_eq!(get(c.node(i), "over-tls").await.as_deref(), Some(&b"1"[..]));
    }
    // Through the client port of a follower, with a client certificate.
    let url = c.node(follower).config.advertise_client_url();
    let ch = dial(&url, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    assert_eq!(put_get(ch, "via-client").await.unwrap(), b"v");

    // The peer port: a caller without a certificate from the CA is refused;
    // the members' own calls show theirs.
    use cairn_proto::raft::v1::Payload;
    use cairn_raft::cluster_check::peer_grpc;
    let peer_url = c.node(leader).config.advertise_peer_url();
    for (who, identity) in unsigned_identities(&pki) {
        let refused = match dial(&peer_url, &pki.ca, identity).await {
            Err(_) => true,
            Ok(ch) => peer_grpc(ch, None, 1024)
                .forward(Payload { data: Vec::new() })
                .await
                .is_err(),
        };
        assert!(refused, "a peer call with {who} was served");
    }
    let ch = dial(
        &peer_url,
        &pki.ca,
        Some((&pki.server_cert, &pki.server_key)),
    )
    .await
    .expect("a member's certificate passes");
    let answer = peer_grpc(ch, None, 1024)
        .forward(Payload { data: Vec::new() })
        .await
        .expect("answered")
        .into_inner();
    assert!(String::from_utf8_lossy(&answer.data).contains("alformed"));
    c.shutdown().await;
}

/// etcd's `--peer-cert-allowed-cn`: members whose certificates carry the
/// name form a cluster; a certificate from the same CA with another name
/// (here the client's) is refused on the peer port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_port_takes_only_the_allowed_common_name() {
    let (_certs, pki) = pki();
    let c = Cluster::start(3, |c| {
        peer_tls(&pki, c);
        c.peer_cert_allowed_cn = Some("cairn member".into());
    })
    .await;
    let leader = c.wait_leader(ELECTION).await;
    put(c.node((leader + 1) % 3), "allowed-cn", "1").await;
    for i in 0..3 {
        assert_eq!(
            get(c.node(i), "allowed-cn").await.as_deref(),
            Some(&b"1"[..])
        );
    }
    use cairn_proto::raft::v1::Payload;
    use cairn_raft::cluster_check::peer_grpc;
    let peer_url = c.node(leader).config.advertise_peer_url();
    let call = |cert: PathBuf, key: PathBuf| {
        let (ca, url) = (pki.ca.clone(), peer_url.clone());
        async move {
            let ch = dial(&url, &ca, Some((&cert, &key))).await.ok()?;
            peer_grpc(ch, None, 1024)
                .forward(Payload { data: Vec::new() })
                .await
                .ok()
        }
    };
    assert!(
        call(pki.client_cert.clone(), pki.client_key.clone())
            .await
            .is_none(),
        "the CA's client certificate was served on the peer port"
    );
    assert!(
        call(pki.server_cert.clone(), pki.server_key.clone())
            .await
            .is_some(),
        "a member's certificate was refused"
    );
    c.shutdown().await;

    // It checks only what client-cert-auth asks for.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config("n1", dir.path().join("n1"), 0, 0);
    config.peer_cert_allowed_cn = Some("cairn member".into());
    let err = match cairn_server::serve::start(config).await {
        Ok(_) => panic!("started with --peer-cert-allowed-cn and no peer client-cert-auth"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("peer-cert-allowed-cn"), "{err}");
}

#[tokio::test]
async fn a_bad_tls_file_fails_the_start_naming_the_setting() {
    let (certs, pki) = pki();
    let not_pem = certs.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    type Spoil<'a> = Box<dyn Fn(&mut ServerConfig) + 'a>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "cert-file",
            Box::new(|c| c.cert_file = Some(not_pem.clone())),
        ),
        (
            "key-file",
            Box::new(|c| c.key_file = Some(pki.server_cert.clone())),
        ),
        (
            "key-file",
            Box::new(|c| c.key_file = Some(pki.client_key.clone())),
        ),
        (
            "trusted-ca-file",
            Box::new(|c| c.trusted_ca_file = Some(certs.path().join("missing.pem"))),
        ),
        (
            "client-crl-file",
            Box::new(|c| c.client_crl_file = Some(pki.ca.clone())),
        ),
        (
            "client-crl-file",
            Box::new(|c| c.client_crl_file = Some(certs.path().join("missing.pem"))),
        ),
    ];
    for (setting, spoil) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config("n1", dir.path().join("n1"), 0, 0);
        client_tls(&pki, &mut config, true);
        spoil(&mut config);
        let err = match cairn_server::serve::start(config).await {
            Ok(_) => panic!("started with a bad {setting}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(setting), "{setting}: {err}");
    }
}

/// A certificate replaced on disk is served from the next handshakes on,
/// without a restart; a broken replacement keeps the one in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let (certs, pki) = pki();
    let (live_cert, live_key) = (
        certs.path().join("live.pem"),
        certs.path().join("live-key.pem"),
    );
    std::fs::copy(&pki.server_cert, &live_cert).unwrap();
    std::fs::copy(&pki.server_key, &live_key).unwrap();
    let c = Cluster::start(1, |c| {
        c.cert_file = Some(live_cert.clone());
        c.key_file = Some(live_key.clone());
    })
    .await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();
    dial(&url, &pki.ca, None)
        .await
        .expect("the first certificate");
    dial(&url, &pki.other_ca, None)
        .await
        .expect_err("not yet the other CA's");

    // Renewed, here by another CA so that clients can tell.
    std::fs::copy(&pki.stranger_key, &live_key).unwrap();
    std::fs::copy(&pki.stranger_cert, &live_cert).unwrap();
    let reload = cairn_server::tls::CHECK_INTERVAL * 10;
    wait_until("the renewed certificate", reload, || async {
        dial(&url, &pki.other_ca, None).await.is_ok()
    })
    .await;
    dial(&url, &pki.ca, None)
        .await
        .expect_err("the old one is gone");

    // A broken file: the renewed certificate stays in use. Handshakes
    // for over two check intervals all pass.
    std::fs::write(&live_cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let until = tokio::time::Instant::now()
        + cairn_server::tls::CHECK_INTERVAL * 2
        + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        let ch = dial(&url, &pki.other_ca, None).await.expect("still served");
        assert_eq!(put_get(ch, "k").await.expect("served"), b"v");
    }
    c.shutdown().await;
}

/// Whether a client showing `cert`/`key` is served: the handshake and a
/// put and read both pass (TLS 1.3 may refuse only at the first call).
async fn served(url: &str, pki: &TestPki, cert: &Path, key: &Path) -> bool {
    match dial(url, &pki.ca, Some((cert, key))).await {
        Err(_) => false,
        Ok(ch) => put_get(ch, "crl").await.is_ok(),
    }
}

/// etcd's `--client-crl-file`: a certificate the CA revoked is refused, and
/// a new list on disk takes effect without a restart; a broken one keeps
/// the list in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_and_new_lists_are_read() {
    let (certs, pki) = pki();
    let live_crl = certs.path().join("live-crl.pem");
    std::fs::copy(&pki.crl, &live_crl).unwrap();
    let c = Cluster::start(1, |c| {
        client_tls(&pki, c, true);
        c.client_crl_file = Some(live_crl.clone());
    })
    .await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();
    assert!(served(&url, &pki, &pki.client_cert, &pki.client_key).await);
    assert!(
        !served(&url, &pki, &pki.revoked_cert, &pki.revoked_key).await,
        "a revoked certificate was served"
    );

    // The CA revokes the client's certificate too.
    std::fs::copy(&pki.crl_with_client, &live_crl).unwrap();
    let reload = cairn_server::tls::CHECK_INTERVAL * 10;
    wait_until("the new revocation list", reload, || async {
        !served(&url, &pki, &pki.client_cert, &pki.client_key).await
    })
    .await;

    // A broken list keeps the one in use: for over two check intervals
    // the client stays refused.
    std::fs::write(&live_crl, "-----BEGIN X509 CRL-----\nnot base64\n").unwrap();
    let until = tokio::time::Instant::now()
        + cairn_server::tls::CHECK_INTERVAL * 2
        + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        assert!(!served(&url, &pki, &pki.client_cert, &pki.client_key).await);
    }
    // And back to the first list: the client is served again.
    std::fs::copy(&pki.crl, &live_crl).unwrap();
    wait_until("the first list again", reload, || async {
        served(&url, &pki, &pki.client_cert, &pki.client_key).await
    })
    .await;
    c.shutdown().await;
}

/// With auth on and `--client-cert-auth`, a request without a token runs as
/// the user its certificate's common name names, as in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_a_client_certificate_names_its_user() {
    use cairn_proto::etcdserverpb::auth_client::AuthClient;
    use cairn_proto::etcdserverpb::*;

    let (_certs, pki) = pki();
    let c = Cluster::start(1, |c| {
        client_tls(&pki, c, true);
        c.auth_password_iterations = 1000;
    })
    .await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();
    let channel = dial(&url, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("handshake");
    // The test client certificate's common name: a user without a
    // password, read-write on `[a, b)`.
    let cn = cairn_chaos::certs::CLIENT_COMMON_NAME;
    set_up_auth(channel.clone(), cn, "").await;
    let mut auth = AuthClient::new(channel.clone());

    // A user without a password cannot log in with one.
    assert!(auth
        .authenticate(AuthenticateRequest {
            name: cn.into(),
            password: String::new(),
        })
        .await
        .is_err());
    assert_eq!(
        put_get(channel.clone(), "a1").await.expect("as the CN"),
        b"v"
    );
    let refused = put_get(channel.clone(), "z1").await.expect_err("outside a");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // A token names its own user, certificate or not.
    let token = auth
        .authenticate(AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut delete = tonic::Request::new(AuthUserDeleteRequest { name: cn.into() });
    delete
        .metadata_mut()
        .insert("token", token.parse().unwrap());
    auth.user_delete(delete).await.unwrap();
    // A name no user has may do nothing.
    let refused = put_get(channel, "a2").await.expect_err("user deleted");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    c.shutdown().await;
}

/// A channel to `url` that checks no certificate, as etcdctl's
/// `--insecure-skip-tls-verify`.
async fn dial_unchecked(url: &str) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config_with_verifier(
            ClientTlsConfig::new(),
            cairn_server::tls::any_server_certificate(),
        )
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// etcd's `--auto-tls`: the member serves a certificate it generated in its
/// data dir to clients that skip the check or trust that file, refuses
/// plain HTTP/2, and keeps the certificate across a restart; a broken one
/// fails the start, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_tls_serves_a_self_signed_certificate_and_keeps_it() {
    let (_certs, pki) = pki();
    let mut c = Cluster::start(1, |c| c.auto_tls = true).await;
    c.wait_leader(ELECTION).await;
    let url = c.node(0).config.advertise_client_url();
    assert!(url.starts_with("https://"), "{url}");
    let cert_file = c.members[0]
        .config
        .data_dir
        .join("fixtures")
        .join("client")
        .join("cert.pem");
    let generated = read(&cert_file);

    let ch = dial_unchecked(&url).await.expect("handshake");
    assert_eq!(put_get(ch, "k").await.expect("served over TLS"), b"v");
    // The certificate names 127.0.0.1: a client that trusts the file
    // checks it and passes; one that trusts a CA does not.
    let ch = dial(&url, &cert_file, None)
        .await
        .expect("trusting the file");
    assert_eq!(put_get(ch, "k2").await.expect("served"), b"v");
    dial(&url, &pki.ca, None)
        .await
        .expect_err("no CA signed it");
    let plain = url.replace("https://", "http://");
    let mut kv = KvClient::new(Endpoint::from_shared(plain).unwrap().connect_lazy());
    let mut req = tonic::Request::new(RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    });
    req.set_timeout(Duration::from_secs(5));
    kv.range(req).await.expect_err("plain HTTP/2 to a TLS port");

    // Restarted: the same certificate, still trusted by who trusted it.
    c.stop_member(0).await;
    c.start_member(0).await;
    c.wait_leader(ELECTION).await;
    assert_eq!(read(&cert_file), generated, "the certificate was reused");
    let ch = dial(&url, &cert_file, None)
        .await
        .expect("the same certificate");
    assert_eq!(put_get(ch, "k3").await.expect("served"), b"v");

    // A broken certificate file is not replaced: the start fails.
    c.stop_member(0).await;
    std::fs::write(&cert_file, &generated[..generated.len() / 2]).unwrap();
    let err = match cairn_server::serve::start(c.members[0].config.clone()).await {
        Ok(_) => panic!("started with a broken certificate"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&cert_file.display().to_string()) && err.contains("auto-tls"),
        "{err}"
    );
}

/// etcd's `--peer-auto-tls`: every member generates its own peer
/// certificate; they dial each other over TLS without checking them, form
/// a cluster, replicate and forward, and a restarted member reuses its
/// certificate and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_with_peer_auto_tls_form_a_cluster_and_survive_a_restart() {
    let mut c = Cluster::start(3, |c| {
        c.peer_auto_tls = true;
        c.initial_cluster = c.initial_cluster.replace("http://", "https://");
    })
    .await;
    let leader = c.wait_leader(ELECTION).await;
    let follower = (leader + 1) % 3;
    let peer_url = c.node(follower).config.advertise_peer_url();
    assert!(peer_url.starts_with("https://"), "{peer_url}");
    // Forwarded by a follower to the leader, replicated to all.
    put(c.node(follower), "over-auto-tls", "1").await;
    for i in 0..3 {
        assert_eq!(
            get(c.node(i), "over-auto-tls").await.as_deref(),
            Some(&b"1"[..])
        );
    }
    let cert_of = |c: &Cluster, i: usize| {
        let dir = c.members[i].config.data_dir.join("fixtures").join("peer");
        dir.join("cert.pem")
    };
    let certs: Vec<Vec<u8>> = (0..3).map(|i| read(&cert_of(&c, i))).collect();
    assert!(
        certs[0] != certs[1] && certs[1] != certs[2] && certs[0] != certs[2],
        "each member made its own"
    );
    // The peer port serves that certificate: a dialer trusting it passes.
    dial(&peer_url, &cert_of(&c, follower), None)
        .await
        .expect("the member's own certificate");

    // A follower restarts while the others go on writing.
    c.stop_member(follower).await;
    put(c.node(leader), "while-down", "2").await;
    c.start_member(follower).await;
    assert_eq!(read(&cert_of(&c, follower)), certs[follower], "reused");
    c.wait_leader(ELECTION).await;
    assert_eq!(
        get(c.node(follower), "while-down").await.as_deref(),
        Some(&b"2"[..])
    );
    put(c.node(follower), "after-restart", "3").await;
    for i in 0..3 {
        assert_eq!(
            get(c.node(i), "after-restart").await.as_deref(),
            Some(&b"3"[..])
        );
    }
    c.shutdown().await;
}
