//! TLS to the server ([`ClientTls`]), the auth token ([`AuthToken`]), and
//! the stream a connection runs over.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// The environment variable that may hold the auth token.
pub const AUTH_TOKEN_ENV: &str = "KV_AUTH_TOKEN";

/// Why TLS or the auth token could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The CA file could not be read or parsed.
    #[error("CA file {}: {source}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {}: {reason}", path.display())]
    NoCa {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The system's CA certificates could not be loaded.
    #[error("no system CA certificates: {0}; give the server's CA with --tls-ca")]
    SystemRoots(String),
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A name that no certificate can carry.
    #[error("`{0}` cannot be checked against a certificate")]
    ServerName(String),
    /// The token file could not be read.
    #[error("cannot read --auth-token-file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The token is empty.
    #[error("{0} is empty")]
    EmptyToken(String),
    /// The token was given two ways.
    #[error("both --auth-token-file and KV_AUTH_TOKEN are set: give the token one way")]
    TwoTokens,
}

/// The token a client presents on every new connection (the server's
/// `--auth-token-file` or `KV_AUTH_TOKEN`). `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AuthToken(Bytes);

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    /// A token of these bytes.
    ///
    /// # Errors
    /// [`SetupError::EmptyToken`] for no bytes.
    pub fn new(token: impl Into<Bytes>) -> Result<AuthToken, SetupError> {
        let token = token.into();
        if token.is_empty() {
            return Err(SetupError::EmptyToken("the auth token".into()));
        }
        Ok(AuthToken(token))
    }

    /// The token in a file, less one trailing newline (`\n` or `\r\n`), as
    /// the server reads its own.
    ///
    /// # Errors
    /// [`SetupError::TokenFile`] or [`SetupError::EmptyToken`].
    pub fn from_file(path: &Path) -> Result<AuthToken, SetupError> {
        let mut bytes = std::fs::read(path).map_err(|source| SetupError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(SetupError::EmptyToken(format!(
                "--auth-token-file {}",
                path.display()
            )));
        }
        Ok(AuthToken(Bytes::from(bytes)))
    }

    /// The token from `file` if given, else from the environment variable
    /// [`AUTH_TOKEN_ENV`]; `None` if neither is there.
    ///
    /// # Errors
    /// Both are given, the file cannot be read, or the token is empty.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Option<AuthToken>, SetupError> {
        let env = std::env::var_os(AUTH_TOKEN_ENV);
        match (file, env) {
            (Some(_), Some(_)) => Err(SetupError::TwoTokens),
            (Some(path), None) => AuthToken::from_file(path).map(Some),
            (None, Some(token)) => {
                if token.is_empty() {
                    return Err(SetupError::EmptyToken(AUTH_TOKEN_ENV.into()));
                }
                Ok(Some(AuthToken(Bytes::from(token.into_encoded_bytes()))))
            }
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

/// TLS to the server: the CAs its certificate must chain to, and the name
/// it must carry. Cheap to clone.
///
/// The name checked is, in order: one set with [`ClientTls::with_server_name`];
/// else the host of the address, when the client was given one as text
/// (see [`crate::ClientOptions::for_addr`]; [`crate::ClusterClient`] does
/// this for every address); else the IP address connected to.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    fixed_name: Option<ServerName<'static>>,
    host_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "server_name",
                &self.fixed_name.as_ref().or(self.host_name.as_ref()),
            )
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in a PEM file (and nothing else).
    ///
    /// # Errors
    /// The file cannot be read, or holds no usable certificate.
    pub fn with_ca_file(path: &Path) -> Result<ClientTls, SetupError> {
        let pem_error = |source| SetupError::CaFile {
            path: path.to_path_buf(),
            source,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(path).map_err(pem_error)? {
            roots
                .add(cert.map_err(pem_error)?)
                .map_err(|e| SetupError::NoCa {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
        if roots.is_empty() {
            return Err(SetupError::NoCa {
                path: path.to_path_buf(),
                reason: "no certificate in the file (expected PEM `BEGIN CERTIFICATE`)".into(),
            });
        }
        ClientTls::with_roots(roots)
    }

    /// Trusts the system's CA certificates (as `rustls-native-certs` finds
    /// them: the OpenSSL directories and files on Linux).
    ///
    /// # Errors
    /// [`SetupError::SystemRoots`] if none can be loaded.
    pub fn with_system_roots() -> Result<ClientTls, SetupError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let reason = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), ToString::to_string);
            return Err(SetupError::SystemRoots(reason));
        }
        ClientTls::with_roots(roots)
    }

    /// Trusts exactly `roots`.
    ///
    /// # Errors
    /// [`SetupError::Tls`] if rustls refuses the configuration.
    pub fn with_roots(roots: RootCertStore) -> Result<ClientTls, SetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            fixed_name: None,
            host_name: None,
        })
    }

    /// Checks the server's certificate for `name` (a DNS name or an IP
    /// address), whatever address the client connects to.
    ///
    /// # Errors
    /// [`SetupError::ServerName`] if `name` is neither.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, SetupError> {
        self.fixed_name = Some(parse_name(name)?);
        Ok(self)
    }

    /// This configuration, checking for the host of `addr` (HOST:PORT)
    /// unless a name was fixed.
    pub(crate) fn for_addr(&self, addr: &str) -> ClientTls {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
        let mut tls = self.clone();
        tls.host_name = parse_name(host).ok();
        tls
    }

    /// The client side of the handshake with the server at `peer`.
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .fixed_name
            .clone()
            .or_else(|| self.host_name.clone())
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        self.connector.connect(name, stream).await
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, SetupError> {
    let host = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| SetupError::ServerName(name.to_owned()))
}

/// A connection: plain TCP, or TLS over it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Splits the connection: a plain one into the socket's own halves (no
    /// lock, no copy), a TLS one with tokio's `split`.
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Either::Left(r), Either::Left(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Either::Right(r), Either::Right(w))
            }
        }
    }
}

/// The reading half of a connection: the socket's own half, or TLS's.
pub(crate) type ReadHalf = Either<OwnedReadHalf, tokio::io::ReadHalf<TlsStream<TcpStream>>>;

/// The writing half of a connection.
pub(crate) type WriteHalf = Either<OwnedWriteHalf, tokio::io::WriteHalf<TlsStream<TcpStream>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_loses_one_newline_and_may_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok\r\n").unwrap();
        assert_eq!(&AuthToken::from_file(&path).unwrap().bytes()[..], b"tok");
        std::fs::write(&path, "tok\n\n").unwrap();
        assert_eq!(&AuthToken::from_file(&path).unwrap().bytes()[..], b"tok\n");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            AuthToken::from_file(&path),
            Err(SetupError::EmptyToken(_))
        ));
        assert!(AuthToken::new("").is_err());
        let token = AuthToken::new("s3cret").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = ClientTls::with_ca_file(&path).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert!(ClientTls::with_ca_file(&dir.path().join("missing.pem")).is_err());
    }
}
