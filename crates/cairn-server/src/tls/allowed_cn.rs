//! etcd's `--peer-cert-allowed-cn`: the peer port takes only member
//! certificates whose common name is the one given. Without it, any
//! certificate the peer CA signed (a client's, say, when one CA signs
//! both) could call the Raft API.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::DistinguishedName;

use super::common_name;

/// `inner`'s verdict, and then the end-entity certificate's common name
/// must be `allowed`.
#[derive(Debug)]
pub struct AllowedCommonName {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: String,
}

impl AllowedCommonName {
    fn inner(&self) -> &dyn ClientCertVerifier {
        &*self.inner
    }
}

impl ClientCertVerifier for AllowedCommonName {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match common_name(end_entity.as_ref()) {
            Some(cn) if cn == self.allowed => Ok(verified),
            cn => Err(rustls::Error::General(format!(
                "certificate common name {cn:?} is not --peer-cert-allowed-cn {:?}",
                self.allowed
            ))),
        }
    }

    delegate_signature_checks!(inner);
}
