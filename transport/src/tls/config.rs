//! A node's TLS credentials: its certificate chain, its private key and the CA it trusts,
//! turned once into the rustls client and server configurations every connection shares.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why TLS could not be set up, or why a peer failed it.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM input held nothing usable.
    #[error("no {what} found in the PEM input: {why}")]
    Pem {
        /// Which input: "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// What the parser said.
        why: String,
    },
    /// rustls refused the credentials (e.g. a key that does not match the certificate, or a
    /// CA that is not a valid certificate).
    #[error("TLS configuration rejected: {0}")]
    Config(String),
    /// A peer failed the TLS handshake or broke the TLS session: its certificate does not
    /// chain to the CA or is not valid now, it spoke something other than TLS 1.3, or a
    /// record did not decrypt.
    #[error("TLS handshake with the peer failed: {0}")]
    Handshake(String),
    /// The peer refused us: it sent a TLS alert (e.g. our certificate is not from its CA,
    /// or has expired). Not counted as a rejection here; the refusing node counts it.
    #[error("the peer refused the TLS handshake: {0}")]
    RefusedByPeer(String),
    /// A peer's certificate does not name the address it announced.
    #[error("the peer's certificate does not name its announced address {0}")]
    Identity(IpAddr),
}

/// A node's TLS credentials. Cheap to clone. Pass it to [`NodeConfig::tls`](crate::NodeConfig::tls);
/// the [crate docs](crate#mutual-tls) say what is checked.
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").field("protocol", &"TLS 1.3, mutual").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Credentials from PEM text: this node's certificate chain (its own certificate first,
    /// then any intermediates), its private key (PKCS#8, PKCS#1 or SEC1), and the CA
    /// certificate(s) that peers' certificates must chain to. The node's certificate must
    /// name the IP address it announces as an IP subject alternative name.
    pub fn from_pem(cert_chain: impl AsRef<[u8]>, private_key: impl AsRef<[u8]>, ca: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        let pem = |what: &'static str| move |e: rustls::pki_types::pem::Error| TlsError::Pem { what, why: e.to_string() };
        let chain = CertificateDer::pem_slice_iter(cert_chain.as_ref()).collect::<Result<Vec<_>, _>>().map_err(pem("certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(private_key.as_ref()).map_err(pem("private key"))?;
        let cas = CertificateDer::pem_slice_iter(ca.as_ref()).collect::<Result<Vec<_>, _>>().map_err(pem("CA certificate"))?;
        Self::from_der(chain, key, cas)
    }

    /// Credentials in DER form (as [`from_pem`](Self::from_pem)).
    pub fn from_der(cert_chain: Vec<CertificateDer<'static>>, private_key: PrivateKeyDer<'static>, ca: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        if cert_chain.is_empty() {
            return Err(TlsError::Pem { what: "certificate", why: "the chain is empty".into() });
        }
        if ca.is_empty() {
            return Err(TlsError::Pem { what: "CA certificate", why: "no CA given".into() });
        }
        let cfg = |e: rustls::Error| TlsError::Config(e.to_string());
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(cfg)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = &[&rustls::version::TLS13];

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(cfg)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(cert_chain.clone(), private_key.clone_key())
            .map_err(cfg)?;
        // Every connection verifies the peer's certificate afresh (a resumed session would
        // skip it, and tickets would outlive an expiring certificate).
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(cfg)?
            .with_root_certificates(roots)
            .with_client_auth_cert(cert_chain, private_key)
            .map_err(cfg)?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(TlsConfig { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// Whether `cert` (a peer's end-entity certificate, already verified against the CA) names
/// `ip` as a subject alternative name.
pub(crate) fn names_ip(cert: &CertificateDer<'_>, ip: IpAddr) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else { return false };
    rustls::client::verify_server_name(&parsed, &ServerName::IpAddress(ip.into())).is_ok()
}


#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ips: &[&str], signer: Option<(&rcgen::Certificate, &rcgen::KeyPair)>) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(ips.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = match signer {
            Some((ca, ca_key)) => p.signed_by(&key, ca, ca_key).unwrap(),
            None => {
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p.self_signed(&key).unwrap()
            }
        };
        (cert, key)
    }

    #[test]
    fn bad_credentials_are_typed_errors() {
        let (ca, ca_key) = cert(&[], None);
        let (node, key) = cert(&["127.0.0.1"], Some((&ca, &ca_key)));
        assert!(TlsConfig::from_pem(node.pem(), key.serialize_pem(), ca.pem()).is_ok());
        let e = TlsConfig::from_pem("not pem", key.serialize_pem(), ca.pem()).unwrap_err();
        assert!(matches!(e, TlsError::Pem { what: "certificate", .. }), "{e}");
        let e = TlsConfig::from_pem(node.pem(), "not pem", ca.pem()).unwrap_err();
        assert!(matches!(e, TlsError::Pem { what: "private key", .. }), "{e}");
        let e = TlsConfig::from_pem(node.pem(), key.serialize_pem(), "").unwrap_err();
        assert!(matches!(e, TlsError::Pem { what: "CA certificate", .. }), "{e}");
        // A key that is not the certificate's.
        let other = rcgen::KeyPair::generate().unwrap();
        let e = TlsConfig::from_pem(node.pem(), other.serialize_pem(), ca.pem()).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
    }

    #[test]
    fn names_ip_matches_ip_sans_only() {
        let (ca, ca_key) = cert(&[], None);
        let (node, _) = cert(&["127.0.0.1", "10.0.0.2"], Some((&ca, &ca_key)));
        let der = node.der();
        assert!(names_ip(der, [127, 0, 0, 1].into()));
        assert!(names_ip(der, [10, 0, 0, 2].into()));
        assert!(!names_ip(der, [10, 0, 0, 3].into()));
        assert!(!names_ip(&CertificateDer::from(vec![1, 2, 3]), [127, 0, 0, 1].into()));
    }
}
