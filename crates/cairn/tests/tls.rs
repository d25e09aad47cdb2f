//! TLS end to end: three `cairn serve` processes with TLS on both ports and
//! client and peer certificates checked (etcd's flags), driven by the
//! `cairn` client, by `curl` through the JSON gateway, and by etcdctl 3.4
//! (`--cacert`, `--cert`, `--key`); and members with etcd's `--auto-tls`
//! (one, and three with `--peer-auto-tls` too), driven by `cairn` trusting
//! a member's generated certificate and by etcdctl skipping the check.
//! The etcdctl halves and the curl check skip with a message when the tool
//! is not installed (`.ci/run` installs both).

mod support;

use std::process::{Command, Output};

use support::*;
use tokio_rustls::rustls;

/// `cairn` against `endpoints` with `tls_args`.
fn cairn(endpoints: &str, tls_args: &[std::ffi::OsString], args: &[&str]) -> Output {
    let mut cmd = Command::new(cairn_bin());
    cmd.args(["--endpoints", endpoints])
        .args(tls_args)
        .args(args);
    run_bounded(cmd, None)
}

fn etcdctl_tls(endpoints: &str, pki: &TestPki, with_cert: bool, args: &[&str]) -> Output {
    let mut flags = vec![format!("--cacert={}", pki.ca.display())];
    if with_cert {
        flags.push(format!("--cert={}", pki.client_cert.display()));
        flags.push(format!("--key={}", pki.client_key.display()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    etcdctl(endpoints, &[&flags[..], args].concat())
}

/// Restores `snap` into a new one-member TLS cluster and serves it.
fn restore_and_serve(c: &ProcCluster, pki: &TestPki, snap: &str) -> ProcCluster {
    let dir = tempfile::tempdir().unwrap();
    let (client_port, peer_port) = (free_port(), free_port());
    let data_dir = dir.path().join("r1");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    ok(cairn(
        &c.endpoints(),
        &[],
        &[
            "snapshot",
            "restore",
            snap,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "r1",
            "--initial-cluster",
            &format!("r1={peer_url}"),
            "--initial-advertise-peer-urls",
            &peer_url,
        ],
    ));
    let mut r = ProcCluster {
        members: vec![ProcMember {
            name: "r1".into(),
            client_port,
            peer_port,
            log: dir.path().join("r1.log"),
            data_dir,
            child: None,
            extra: pki.serve_args(),
            tls: Some(pki.clone()),
        }],
        initial_cluster: format!("r1={peer_url}"),
        dir,
    };
    r.spawn(0);
    r.wait_healthy(std::time::Duration::from_secs(20));
    r
}

#[test]
fn a_tls_cluster_serves_clients_with_certificates_and_refuses_others() {
    let c = ProcCluster::start_tls(3);
    let pki = c.members[0].tls.clone().expect("TLS cluster");
    let ep = c.endpoints();
    assert!(ep.starts_with("https://"), "{ep}");
    let with_cert = pki.cli_args();

    // The cairn client, through any member (writes forwarded over peer TLS).
    for (i, m) in c.members.iter().enumerate() {
        let key = format!("k{i}");
        ok(cairn(&m.client_url(), &with_cert, &["put", &key, "v"]));
    }
    assert_eq!(ok(cairn(&ep, &with_cert, &["get", "k2"])), "k2\nv\n");
    // The CA alone is no client certificate; plain HTTP/2 is no TLS.
    let ca_only = &with_cert[..2];
    let refused = cairn(&ep, ca_only, &["get", "k0", "--command-timeout", "2s"]);
    assert!(
        !refused.status.success(),
        "served without a client certificate"
    );
    let plain = ep.replace("https://", "http://");
    let refused = cairn(&plain, &[], &["get", "k0", "--command-timeout", "2s"]);
    assert!(
        !refused.status.success(),
        "served plain HTTP/2 on a TLS port"
    );

    // A snapshot saved over TLS restores into a TLS cluster: restore names
    // its https:// peers without holding their certificates.
    let snap = c.dir.path().join("snap.db");
    let snap_s = snap.to_str().unwrap();
    ok(cairn(&ep, &with_cert, &["snapshot", "save", snap_s]));
    let restored = restore_and_serve(&c, &pki, snap_s);
    let url = restored.members[0].client_url();
    assert_eq!(ok(cairn(&url, &with_cert, &["get", "k1"])), "k1\nv\n");
    drop(restored);

    // etcd's JSON gateway over the same TLS port (HTTP/1.1 by ALPN), as
    // `curl` speaks it; the client certificate is required there too.
    let url = c.members[0].client_url();
    let curl = |with_cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", "POST", "--cacert"])
            .arg(&pki.ca)
            .arg(format!("{url}/v3/kv/range"))
            .args(["-d", r#"{"key": "azA="}"#]);
        if with_cert {
            cmd.arg("--cert").arg(&pki.client_cert);
            cmd.arg("--key").arg(&pki.client_key);
        }
        run_bounded(cmd, None)
    };
    if curl_available() {
        let range = ok(curl(true));
        assert!(range.contains(r#""value":"dg==""#), "{range}");
        assert!(
            !curl(false).status.success(),
            "served without a client certificate"
        );
    } else {
        eprintln!("SKIP: the gateway over TLS with curl; install curl (apt-get install curl)");
    }

    if !etcdctl_available() {
        eprintln!("SKIP: etcdctl half; install Debian's etcd-client (apt-get install etcd-client)");
        return;
    }
    assert_eq!(ok(etcdctl_tls(&ep, &pki, true, &["get", "k0"])), "k0\nv\n");
    assert_eq!(
        ok(etcdctl_tls(&ep, &pki, true, &["put", "e", "1"])).trim(),
        "OK"
    );
    let health = etcdctl_tls(&ep, &pki, true, &["endpoint", "health"]);
    let health = format!(
        "{}{}",
        text(&health),
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let members = ok(etcdctl_tls(&ep, &pki, true, &["member", "list"]));
    for m in &c.members {
        assert!(
            members.contains(&m.peer_url()),
            "{}: {members}",
            m.peer_url()
        );
        assert!(
            members.contains(&m.client_url()),
            "{}: {members}",
            m.client_url()
        );
    }
    // Per-endpoint dials, which send the whole URL as :authority (filtered
    // after TLS ends).
    let status = ok(etcdctl_tls(
        &ep,
        &pki,
        true,
        &["endpoint", "status", "--cluster"],
    ));
    for m in &c.members {
        assert!(
            status.contains(&m.client_url()),
            "{}: {status}",
            m.client_url()
        );
    }
    let refused = etcdctl_tls(&ep, &pki, false, &["get", "e", "--command-timeout=2s"]);
    assert!(
        !refused.status.success(),
        "etcdctl served without a client certificate"
    );
}

/// etcd's `--auto-tls` on a `cairn serve` process: the member generates
/// its certificate in its data dir; `cairn` trusting that file and
/// etcdctl skipping the check (`--insecure-skip-tls-verify
/// --insecure-transport=false`) are served, plain HTTP/2 and a client that
/// checks the certificate against the system's CAs are not.
#[test]
fn an_auto_tls_member_serves_clients_that_skip_the_check_or_trust_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("a1");
    let client_port = free_port();
    let mut c = ProcCluster {
        members: vec![ProcMember {
            name: "a1".into(),
            client_port,
            peer_port: free_port(),
            log: dir.path().join("a1.log"),
            data_dir: data_dir.clone(),
            child: None,
            extra: vec!["--auto-tls".into()],
            tls: None,
        }],
        initial_cluster: String::new(),
        dir,
    };
    c.spawn(0);
    let url = format!("https://127.0.0.1:{client_port}");
    let cert = data_dir.join("fixtures").join("client").join("cert.pem");
    let trust_file: Vec<std::ffi::OsString> = vec!["--cacert".into(), cert.clone().into()];
    let started = std::time::Instant::now();
    while !(cert.exists()
        && cairn(&url, &trust_file, &["put", "k", "v"])
            .status
            .success())
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the member did not serve over TLS\n{}",
            c.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(ok(cairn(&url, &trust_file, &["get", "k"])), "k\nv\n");
    let plain = url.replace("https://", "http://");
    let refused = cairn(&plain, &[], &["get", "k", "--command-timeout", "2s"]);
    assert!(
        !refused.status.success(),
        "served plain HTTP/2 on a TLS port"
    );

    if !etcdctl_available() {
        eprintln!("SKIP: etcdctl half; install Debian's etcd-client (apt-get install etcd-client)");
        return;
    }
    let skip_check = ["--insecure-skip-tls-verify", "--insecure-transport=false"];
    assert_eq!(
        ok(etcdctl(
            &url,
            &[&skip_check[..], &["put", "e", "1"]].concat()
        ))
        .trim(),
        "OK"
    );
    assert_eq!(
        ok(etcdctl(&url, &[&skip_check[..], &["get", "k"]].concat())),
        "k\nv\n"
    );
    let checked = etcdctl(
        &url,
        &[
            "--insecure-transport=false",
            "--command-timeout=2s",
            "get",
            "k",
        ],
    );
    assert!(
        !checked.status.success(),
        "etcdctl checked a self-signed certificate and was served"
    );
}

/// `cairn` against member `m` of an auto TLS cluster, trusting the
/// certificate it generated.
fn cairn_trusting(m: &ProcMember, args: &[&str]) -> Output {
    let cert = m.data_dir.join("fixtures").join("client").join("cert.pem");
    let url = format!("https://127.0.0.1:{}", m.client_port);
    cairn(&url, &["--cacert".into(), cert.into()], args)
}

/// Three `cairn serve` processes with `--auto-tls --peer-auto-tls` and
/// `https://` peer URLs: they form a cluster, replicate and forward, and a
/// member killed and started again reuses its certificates and catches up.
#[test]
fn an_auto_tls_cluster_of_processes_forms_and_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<ProcMember> = (1..=3)
        .map(|i| ProcMember {
            name: format!("a{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            log: dir.path().join(format!("a{i}.log")),
            data_dir: dir.path().join(format!("a{i}")),
            child: None,
            extra: Vec::new(),
            tls: None,
        })
        .collect();
    let initial_cluster = members
        .iter()
        .map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    for m in &mut members {
        m.extra = ["--auto-tls", "--peer-auto-tls", "--initial-cluster"]
            .map(String::from)
            .into();
        m.extra.push(initial_cluster.clone());
    }
    let mut c = ProcCluster {
        members,
        initial_cluster,
        dir,
    };
    for i in 0..3 {
        c.spawn(i);
    }
    let serves = |c: &ProcCluster, i: usize| {
        let probe = [
            "get",
            "probe",
            "--dial-timeout",
            "500ms",
            "--command-timeout",
            "1s",
        ];
        cairn_trusting(&c.members[i], &probe).status.success()
    };
    let wait_serving = |c: &ProcCluster, i: usize| {
        let started = std::time::Instant::now();
        while !serves(c, i) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{} did not serve\n{}",
                c.members[i].name,
                c.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    for i in 0..3 {
        wait_serving(&c, i);
    }
    ok(cairn_trusting(&c.members[1], &["put", "k", "1"]));
    assert_eq!(ok(cairn_trusting(&c.members[2], &["get", "k"])), "k\n1\n");

    let peer_cert = c.members[0]
        .data_dir
        .join("fixtures")
        .join("peer")
        .join("cert.pem");
    let before = std::fs::read(&peer_cert).unwrap();
    c.kill(0);
    ok(cairn_trusting(&c.members[1], &["put", "while-down", "2"]));
    c.spawn(0);
    wait_serving(&c, 0);
    assert_eq!(std::fs::read(&peer_cert).unwrap(), before, "reused");
    assert_eq!(
        ok(cairn_trusting(&c.members[0], &["get", "while-down"])),
        "while-down\n2\n"
    );

    if !etcdctl_available() {
        eprintln!("SKIP: etcdctl half; install Debian's etcd-client (apt-get install etcd-client)");
        return;
    }
    let endpoints = c
        .members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let skip_check = ["--insecure-skip-tls-verify", "--insecure-transport=false"];
    let health = etcdctl(
        &endpoints,
        &[&skip_check[..], &["endpoint", "health"]].concat(),
    );
    let health = format!(
        "{}{}",
        text(&health),
        String::from_utf8_lossy(&health.stderr)
    );
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let listed = ok(etcdctl(
        &endpoints,
        &[&skip_check[..], &["member", "list"]].concat(),
    ));
    for m in &c.members {
        let peer_url = format!("https://127.0.0.1:{}", m.peer_port);
        assert!(listed.contains(&peer_url), "{peer_url}: {listed}");
    }
}

/// A blocking handshake with the member's port showing the client
/// certificate and offering only `suites` over `versions`: the version and
/// suite agreed, or why there were none. *ring*'s provider, as the
/// member's (deprecated by rustls for lacking post-quantum key exchange).
#[allow(deprecated)]
fn handshake(
    port: u16,
    pki: &TestPki,
    suites: &[rustls::SupportedCipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(rustls::ProtocolVersion, rustls::CipherSuite), String> {
    use std::sync::Arc;
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in cairn_server::tls::read_certs("ca", &pki.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            cairn_server::tls::read_certs("cert", &pki.client_cert).unwrap(),
            cairn_server::tls::read_key("key", &pki.client_key).unwrap(),
        )
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok((
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
    ))
}

/// etcd's `--cipher-suites`, `--tls-min-version` and `--tls-max-version`
/// on a `cairn serve` process, as a CIS-hardened unit passes them: `cairn`
/// is served; on either port a client offering only a suite not listed, or
/// only TLS 1.3, stops at the handshake; a suite rustls lacks
/// (`ETCD_CIPHER_SUITES`) fails the start, naming the setting and the
/// suite.
#[test]
fn a_member_honours_etcds_cipher_suite_and_tls_version_flags() {
    use rustls::crypto::ring::{cipher_suite as suite, ALL_CIPHER_SUITES};
    use rustls::version::{TLS12, TLS13};
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let pki = TestPki::write(&certs);
    let mut extra = pki.serve_args();
    extra.extend(
        [
            "--cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "--tls-min-version",
            "TLS1.2",
            "--tls-max-version",
            "TLS1.2",
        ]
        .map(String::from),
    );
    let (client_port, peer_port) = (free_port(), free_port());
    let mut c = ProcCluster {
        members: vec![ProcMember {
            name: "h1".into(),
            client_port,
            peer_port,
            log: dir.path().join("h1.log"),
            data_dir: dir.path().join("h1"),
            child: None,
            extra,
            tls: Some(pki.clone()),
        }],
        initial_cluster: String::new(),
        dir,
    };
    c.spawn(0);
    c.wait_healthy(std::time::Duration::from_secs(20));
    let url = c.members[0].client_url();
    ok(cairn(&url, &pki.cli_args(), &["put", "hardened", "1"]));
    assert_eq!(
        ok(cairn(&url, &pki.cli_args(), &["get", "hardened"])),
        "hardened\n1\n"
    );

    assert_eq!(
        handshake(
            client_port,
            &pki,
            &[suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
            &[&TLS12]
        ),
        Ok((
            rustls::ProtocolVersion::TLSv1_2,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ))
    );
    for port in [client_port, peer_port] {
        let unlisted = [suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256];
        let err = handshake(port, &pki, &unlisted, &[&TLS12]).expect_err("a suite not listed");
        assert!(err.contains("HandshakeFailure"), "{port}: {err}");
        let err = handshake(port, &pki, ALL_CIPHER_SUITES, &[&TLS13]).expect_err("TLS 1.3");
        assert!(
            err.contains("ProtocolVersion") || err.contains("HandshakeFailure"),
            "{port}: {err}"
        );
    }

    // A CBC suite alone, here by etcd's variable as a container image
    // sets it: refused at start (left out, the list would allow all).
    let mut cmd = Command::new(cairn_bin());
    cmd.arg("serve")
        .env("ETCD_CIPHER_SUITES", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
        .arg("--data-dir")
        .arg(c.dir.path().join("never"));
    let refused = run_bounded(cmd, None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cipher-suites")
            && stderr.contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
            && stderr.contains("rustls does not offer"),
        "{stderr}"
    );
    assert!(!c.dir.path().join("never").exists(), "nothing written");
}
