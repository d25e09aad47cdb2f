//! Throwaway certificates for TLS tests: a CA, a certificate for
//! `127.0.0.1` and `localhost` signed by it (a member's, for its client
//! and peer ports and for dialing other members), a client certificate it
//! signed, and a client certificate from another CA (one a server must
//! refuse); a client certificate the CA revoked, and revocation lists.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

/// The common name of [`TestPki::client_cert`]: with auth on, the user a
/// client showing it runs as.
pub const CLIENT_COMMON_NAME: &str = "cairn client";

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
    /// Signed by [`Self::ca`], which revoked it: listed in both CRLs.
    pub revoked_cert: PathBuf,
    pub revoked_key: PathBuf,
    /// [`Self::ca`]'s revocation list naming [`Self::revoked_cert`].
    pub crl: PathBuf,
    /// A later list of [`Self::ca`]'s naming [`Self::client_cert`] too.
    pub crl_with_client: PathBuf,
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

/// A certificate for `names` (DNS names or IP addresses) signed by `ca`
/// with serial number `serial`: its PEM and its key's.
fn signed(
    ca: &Issuer<'_, KeyPair>,
    serial: u64,
    common_name: &str,
    names: &[&str],
) -> (String, String) {
    let key = KeyPair::generate().expect("key generation");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("valid names");
    params.serial_number = Some(SerialNumber::from(serial));
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, ca).expect("signing");
    (cert.pem(), key.serialize_pem())
}

/// `ca`'s revocation list number `number`, naming the certificates with
/// serial numbers `serials`: its PEM.
fn revocation_list(ca: &Issuer<'_, KeyPair>, number: u64, serials: &[u64]) -> String {
    let params = CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: date_time_ymd(2025, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    params
        .signed_by(ca)
        .expect("signing the CRL")
        .pem()
        .expect("CRL PEM")
}

/// Serial numbers of the certificates [`TestPki`] makes.
const SERVER_SERIAL: u64 = 1;
const CLIENT_SERIAL: u64 = 2;
const STRANGER_SERIAL: u64 = 3;
const REVOKED_SERIAL: u64 = 4;

impl TestPki {
    /// Generates the certificates and writes them under `dir`; the
    /// member certificate names `127.0.0.1` and `localhost`.
    pub fn write(dir: &Path) -> TestPki {
        TestPki::write_for(dir, &[])
    }

    /// [`Self::write`], the member certificate also naming `more` (the
    /// addresses members are dialed at elsewhere, e.g. in namespaces).
    pub fn write_for(dir: &Path, more: &[std::net::IpAddr]) -> TestPki {
        let (ca_cert, ca) = new_ca("Cairn test CA");
        let (other_ca_cert, other_ca) = new_ca("Another CA");
        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        names.extend(more.iter().map(|ip| ip.to_string()));
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let server = signed(&ca, SERVER_SERIAL, "cairn member", &names);
        let client = signed(&ca, CLIENT_SERIAL, CLIENT_COMMON_NAME, &["cairn-client"]);
        let stranger = signed(
            &other_ca,
            STRANGER_SERIAL,
            "stranger",
            &["127.0.0.1", "stranger"],
        );
        let revoked = signed(&ca, REVOKED_SERIAL, "revoked client", &["revoked"]);
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
            revoked_cert: write("revoked.pem", &revoked.0),
            revoked_key: write("revoked-key.pem", &revoked.1),
            crl: write("crl.pem", &revocation_list(&ca, 1, &[REVOKED_SERIAL])),
            crl_with_client: write(
                "crl-with-client.pem",
                &revocation_list(&ca, 2, &[REVOKED_SERIAL, CLIENT_SERIAL]),
            ),
        }
    }
}

impl TestPki {
    /// `cairn serve` flags for TLS on both ports, clients and peers asked
    /// for certificates from [`Self::ca`] (etcd's flag names).
    pub fn serve_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--cert-file".into(),
            path(&self.server_cert),
            "--key-file".into(),
            path(&self.server_key),
            "--trusted-ca-file".into(),
            path(&self.ca),
            "--client-cert-auth".into(),
            "--peer-cert-file".into(),
            path(&self.server_cert),
            "--peer-key-file".into(),
            path(&self.server_key),
            "--peer-trusted-ca-file".into(),
            path(&self.ca),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// The `cairn` client flags, with the client certificate.
    pub fn cli_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--cacert".into(),
            self.ca.clone().into(),
            "--cert".into(),
            self.client_cert.clone().into(),
            "--key".into(),
            self.client_key.clone().into(),
        ]
    }

    /// How a gRPC client dials the members, with the client certificate.
    pub fn client_tls(&self) -> tonic::transport::ClientTlsConfig {
        let read = |p: &Path| std::fs::read(p).expect("read test certificate");
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)))
            .identity(tonic::transport::Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ))
    }
}
