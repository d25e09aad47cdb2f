//! Client certificates checked against certificate revocation lists read
//! again when their file changes (etcd's `--client-crl-file` and
//! `--peer-crl-file`): revoking a certificate takes effect at the next
//! handshakes, without a restart. etcd reads its CRL file at every
//! connection; here a handshake looks at the file's size and modification
//! time at most once per [`CHECK_INTERVAL`], as for the certificate.
//!
//! A list that does not load (a half-written file) keeps the one in use
//! and is logged once; the next change of the file is tried again. The
//! CA is read once, at start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};

use super::cert_reload::{stamp, Stamp, CHECK_INTERVAL};
use super::{client_verifier, file_err, read_pems, TlsError};

/// The client verifier of a port with a CRL file.
#[derive(Debug)]
pub(super) struct ReloadingVerifier {
    /// The flag naming the file, for messages.
    setting: &'static str,
    crl: PathBuf,
    roots: Arc<RootCertStore>,
    /// The roots' names, offered to clients as the CAs accepted: they do
    /// not change while the member runs.
    root_hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Arc<dyn ClientCertVerifier>,
    /// The file's stamp when last loaded (or last tried).
    seen: Stamp,
    checked: Instant,
}

impl ReloadingVerifier {
    /// Loads the lists; they must load now (a bad file fails the start).
    pub(super) fn load(
        roots: Arc<RootCertStore>,
        setting: &'static str,
        crl: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingVerifier, TlsError> {
        let seen = stamp(crl);
        let current = verifier(&roots, setting, crl, &provider)?;
        Ok(ReloadingVerifier {
            setting,
            crl: crl.to_path_buf(),
            root_hints: roots.subjects(),
            roots,
            provider,
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= CHECK_INTERVAL {
            state.checked = Instant::now();
            let now = stamp(&self.crl);
            if now != state.seen {
                state.seen = now;
                match verifier(&self.roots, self.setting, &self.crl, &self.provider) {
                    Ok(v) => {
                        tracing::info!("TLS: loaded the new {}", self.crl.display());
                        state.current = v;
                    }
                    Err(e) => tracing::warn!("TLS: keeping the revocation lists in use: {e}"),
                }
            }
        }
        state.current.clone()
    }
}

fn verifier(
    roots: &Arc<RootCertStore>,
    setting: &'static str,
    crl: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let crls: Vec<CertificateRevocationListDer<'static>> = read_pems(setting, crl, "X509 CRL")?;
    client_verifier(roots.clone(), crls, provider.clone())
        .map_err(|e| file_err(setting, crl, format!("not a usable revocation list: {e}")))
}

impl ClientCertVerifier for ReloadingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}
