//! TLS on the client listener (`--tls-cert`, `--tls-key`) and the stream
//! types a connection is served over.
//!
//! A connection is plain TCP or TLS over it. Its reading and writing
//! halves are `Either`s over the two, so the plain path stays what it
//! was (the socket's own owned halves, no lock, no copy) and TLS costs only
//! on TLS connections.
//!
//! A client that speaks plain frames to a TLS listener is told so in a
//! plain frame (an INVALID_REQUEST error with id 0) and closed, instead of
//! being left to wait for an answer: the first byte of a TLS connection is
//! a handshake record (22), while a plain frame starting with that byte
//! would announce at least 352 MiB, far over the default `--max-frame`:
//! the first byte tells the two apart.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kv_cluster::TlsError;
use kv_cluster::tls::{PROTOCOL_VERSIONS, crypto_provider, load_certificates, load_private_key};
use kv_proto::{ErrorCode, Response, ServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Encoder;
use tokio_util::either::Either;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// How long a plain client that reached a TLS listener has to take its
/// answer before the connection is closed.
const PLAIN_REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The server side of TLS on the client listener: its certificate and key.
/// Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// Why a TLS connection was not established.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The client spoke plain frames; it was told so and closed.
    PlainClient,
    /// The handshake did not complete within the timeout.
    Timeout,
    /// The handshake failed (or the client closed first).
    Failed(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::PlainClient => {
                f.write_str("a plain-text client on the TLS listener (told to use TLS)")
            }
            HandshakeError::Timeout => f.write_str("no TLS handshake within the frame timeout"),
            HandshakeError::Failed(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl ServerTls {
    /// Loads the listener's certificate chain (PEM, leaf first) and private
    /// key (PEM). Clients are not asked for certificates: they
    /// authenticate with the auth token.
    ///
    /// # Errors
    /// A [`TlsError`] naming the file at fault, or a key that does not
    /// match the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = load_certificates("certificate", cert)?;
        let key = load_private_key(key)?;
        let config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls {
                what: "TLS",
                source,
            })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: "--tls-cert and --tls-key",
                source,
            })?;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server side of the handshake on `socket`, within `timeout`.
    /// A client whose first byte is not a TLS handshake gets a plain
    /// INVALID_REQUEST error saying that this listener needs TLS.
    pub(crate) async fn accept(
        &self,
        socket: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let handshake = async {
            let mut first = [0u8; 1];
            let n = socket
                .peek(&mut first)
                .await
                .map_err(HandshakeError::Failed)?;
            if n == 0 {
                return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()));
            }
            if first[0] != TLS_HANDSHAKE_RECORD {
                return Err(HandshakeError::PlainClient);
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, handshake).await {
            Err(_) => return Err(HandshakeError::Timeout),
            Ok(Err(HandshakeError::PlainClient)) => {
                // Answered here, not in a task of its own: the caller holds
                // a connection (or refusal) permit meanwhile, so plain
                // clients cannot pile up answers beyond the limits.
                refuse_plain(socket, peer).await;
                return Err(HandshakeError::PlainClient);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout(timeout, self.acceptor.accept(socket)).await {
            Err(_) => Err(HandshakeError::Timeout),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Ok(Ok(stream)) => Ok(stream),
        }
    }
}

/// Tells a plain-text client that this listener speaks TLS, then closes.
async fn refuse_plain(socket: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "plain-text client on the TLS listener: refusing");
    let refusal = Response::error(
        0,
        ErrorCode::InvalidRequest,
        "this server's listener needs TLS: connect with TLS (kv-client --tls or --tls-ca)",
    );
    answer_and_close(socket, &refusal, PLAIN_REFUSAL_LINGER).await;
}

/// Writes `response` as one frame, closes the sending side, and reads and
/// drops what the client sends until it closes or `linger` passes:
/// closing a socket with unread input sends a reset, which can destroy the
/// answer before the client reads it.
pub(crate) async fn answer_and_close<S>(mut stream: S, response: &Response, linger: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frame = BytesMut::new();
    if ServerCodec::default().encode(response, &mut frame).is_err() {
        return;
    }
    let answered = tokio::time::timeout(linger, async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
    if let Ok(Err(err)) = answered {
        tracing::debug!(error = %err, "refusal not delivered");
    }
}

/// The reading half of a connection: the socket's own half, or TLS's.
pub(crate) type ReadHalf = Either<OwnedReadHalf, tokio::io::ReadHalf<TlsStream<TcpStream>>>;

/// The writing half of a connection.
pub(crate) type WriteHalf = Either<OwnedWriteHalf, tokio::io::WriteHalf<TlsStream<TcpStream>>>;

/// Splits a plain connection.
pub(crate) fn split_plain(socket: TcpStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = socket.into_split();
    (Either::Left(read), Either::Left(write))
}

/// Splits a TLS connection.
pub(crate) fn split_tls(stream: TlsStream<TcpStream>) -> (ReadHalf, WriteHalf) {
    let (read, write) = tokio::io::split(stream);
    (Either::Right(read), Either::Right(write))
}
