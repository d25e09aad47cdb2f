//! Client certificates checked against certificate revocation lists read
//! again when their file changes (etcd's `--client-crl-file` and
//! `--peer-crl-file`): revoking a certificate takes effect at the next
//! handshakes, without a restart. etcd reads its CRL file at every
//! connection; here a handshake looks at the file's size and modification
//! time at most once per [`super::CHECK_INTERVAL`], as for the certificate
//! (the same [`Reloading`]).
//!
//! A list that does not load (a half-written file) keeps the one in use
//! and is logged once; the next change of the file is tried again. The
//! CA is read once, at start.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{DistinguishedName, RootCertStore};

use super::cert_reload::Reloading;
use super::{client_verifier, file_err, read_pems, TlsError};

/// The client verifier of a port with a CRL file.
#[derive(Debug)]
pub(super) struct ReloadingVerifier {
    current: Reloading<dyn ClientCertVerifier>,
    /// The roots' names, offered to clients as the CAs accepted: they do
    /// not change while the member runs.
    root_hints: Vec<DistinguishedName>,
}

impl ReloadingVerifier {
    /// Loads the lists; they must load now (a bad file fails the start).
    pub(super) fn load(
        roots: Arc<RootCertStore>,
        setting: &'static str,
        crl: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingVerifier, TlsError> {
        let root_hints = roots.subjects();
        let path = crl.to_path_buf();
        let current = Reloading::load("revocation lists", &[crl], move || {
            verifier(&roots, setting, &path, &provider)
        })?;
        Ok(ReloadingVerifier {
            current,
            root_hints,
        })
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.current()
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

    delegate_signature_checks!(current);
}
