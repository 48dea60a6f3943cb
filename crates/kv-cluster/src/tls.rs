//! TLS (rustls, with its `ring` provider, TLS 1.3 only) for peer links and
//! the PEM loading the server's client listener shares.
//!
//! Peer links use mutual TLS: every member holds a certificate signed by the
//! cluster's CA, presents it both when it accepts a peer connection and
//! when it opens one, and verifies the other side's against the CA. A peer
//! whose certificate another CA signed, or that presents none, is refused
//! during the handshake, before any of its bytes reach Raft. The dialling
//! side also checks that the certificate names the host of the peer
//! address it dialled (a DNS name or an IP address in the certificate's
//! subject alternative names), as any TLS client does.
//!
//! Files are PEM, parsed by rustls' own `pki-types`: a certificate file
//! holds the member's certificate first, then any intermediates; a key
//! file holds one private key (PKCS#8, PKCS#1 or SEC1).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;

/// Why TLS could not be set up from the files given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {}: {source}", path.display())]
    Pem {
        /// Which file it is (`certificate`, `private key`, `CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate or CA file holds no certificate.
    #[error("{what} {}: no certificate in the file (expected PEM `BEGIN CERTIFICATE`)", path.display())]
    NoCertificate {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificates or the key (a key that does not
    /// match the certificate, say).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The CA file's certificates cannot verify peers.
    #[error("CA {}: {reason}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The crypto provider every TLS configuration of the project uses:
/// rustls' `ring` provider, chosen explicitly rather than through a
/// process-wide default, so that no other crate's features can change it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocol versions offered and accepted: TLS 1.3 only. Every client
/// and peer is this project's own code, so there is no older peer to meet.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Reads a certificate chain (leaf first) from a PEM file.
///
/// # Errors
/// [`TlsError::Pem`] if the file cannot be read or parsed,
/// [`TlsError::NoCertificate`] if it holds none.
pub fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads one private key from a PEM file.
///
/// # Errors
/// [`TlsError::Pem`] if the file cannot be read or holds no key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        what: "private key",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the CA certificates of a PEM file into a root store.
///
/// # Errors
/// As [`load_certificates`]; [`TlsError::BadCa`] if a certificate is not
/// usable as a trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates("CA", path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Mutual TLS for peer links: this member's certificate and key, and the
/// cluster's CA that every peer's certificate must chain to.
///
/// Cheap to clone (the configurations are shared).
#[derive(Clone)]
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads this member's certificate chain (`cert`), its private key
    /// (`key`) and the cluster's CA (`ca`), all PEM. The certificate is
    /// presented both as a server (to peers that dial in) and as a client
    /// (when dialling out), so it must allow both uses, and name the host
    /// of this member's peer address.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file at fault.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<PeerTls, TlsError> {
        let chain = load_certificates("certificate", cert)?;
        let key = load_private_key(key)?;
        let roots = Arc::new(load_roots(ca)?);
        let provider = crypto_provider();

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                })?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls {
                what: "peer TLS",
                source,
            })?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|source| TlsError::Rustls {
                what: "peer certificate and key",
                source,
            })?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls {
                what: "peer TLS",
                source,
            })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: "peer certificate and key",
                source,
            })?;
        Ok(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The server side of a peer connection: the handshake, which fails
    /// unless the peer presents a certificate the CA signed.
    pub(crate) async fn accept(&self, stream: TcpStream) -> io::Result<PeerStream> {
        let tls = self.acceptor.accept(stream).await?;
        Ok(Either::Right(Box::new(tls.into())))
    }

    /// The client side: the handshake with the peer at `addr` (HOST:PORT),
    /// whose certificate must chain to the CA and name HOST.
    pub(crate) async fn connect(&self, addr: &str, stream: TcpStream) -> io::Result<PeerStream> {
        let name = server_name(addr)?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Either::Right(Box::new(tls.into())))
    }
}

/// The name a certificate must carry for `addr` (HOST:PORT): HOST as an IP
/// address if it is one (brackets of IPv6 removed), else as a DNS name.
pub fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{host}` cannot be checked against a certificate: {e}"),
        )
    })
}

/// A peer connection: plain TCP, or TLS over it (boxed: a TLS stream is
/// large, a plain one is not).
pub(crate) type PeerStream = Either<TcpStream, Box<tokio_rustls::TlsStream<TcpStream>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host() {
        assert!(matches!(
            server_name("127.0.0.1:7101").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:7101").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("node1.example:7101").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load_certificates("certificate", &empty).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = load_private_key(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
