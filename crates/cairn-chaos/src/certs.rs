//! Throwaway certificates for TLS tests: a CA, a certificate for
//! `127.0.0.1` and `localhost` signed by it (a member's, for its client
//! and peer ports and for dialing other members), a client certificate it
//! signed, and a client certificate from another CA (one a server must
//! refuse).

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM files written by [`TestPki::write`].
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    /// Another CA, which signed none of the others but the stranger's.
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// Signed by another CA than [`Self::ca`].
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

/// A CA's parameters and key, to sign with.
fn new_ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key generation");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, Issuer::new(params, key))
}

/// A certificate for `names` (DNS names or IP addresses) signed by `ca`:
/// its PEM and its key's.
fn signed(ca: &Issuer<'_, KeyPair>, common_name: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key generation");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("valid names");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, ca).expect("signing");
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    /// Generates the certificates and writes them under `dir`.
    pub fn write(dir: &Path) -> TestPki {
        let (ca_cert, ca) = new_ca("Cairn test CA");
        let (other_ca_cert, other_ca) = new_ca("Another CA");
        let server = signed(&ca, "cairn member", &["127.0.0.1", "localhost"]);
        let client = signed(&ca, "cairn client", &["cairn-client"]);
        let stranger = signed(&other_ca, "stranger", &["127.0.0.1", "stranger"]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write test certificate");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca_cert.pem()),
            other_ca: write("other-ca.pem", &other_ca_cert.pem()),
            server_cert: write("server.pem", &server.0),
            server_key: write("server-key.pem", &server.1),
            client_cert: write("client.pem", &client.0),
            client_key: write("client-key.pem", &client.1),
            stranger_cert: write("stranger.pem", &stranger.0),
            stranger_key: write("stranger-key.pem", &stranger.1),
        }
    }
}
