//! The client's errors.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_proto::ErrorCode;

/// Result alias of the client.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What can go wrong with a call.
///
/// `Clone` because one broken connection fails every call in flight on it
/// with the same error; I/O errors are therefore held in an [`Arc`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection could not be established (address lookup, TCP
    /// connect, or the connect timeout).
    #[error("cannot connect{}: {source}", addr.map(|a| format!(" to {a}")).unwrap_or_default())]
    Connect {
        /// The last address tried, if the name resolved to any.
        addr: Option<SocketAddr>,
        /// Why it failed.
        #[source]
        source: Arc<io::Error>,
    },
    /// The TLS handshake with the server failed: its certificate is not
    /// trusted (or not for the name checked), or it does not speak TLS.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The server's address.
        addr: SocketAddr,
        /// rustls' reason.
        #[source]
        source: Arc<io::Error>,
    },
    /// Reading from or writing to the connection failed; the connection is
    /// closed.
    #[error("connection failed: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The server answered with an error (other than CONDITION_FAILED,
    /// which is [`ClientError::ConditionFailed`]). For an error about one request
    /// (a key too large, say) the connection goes on; for an error about the
    /// connection itself (a frame over the server's maximum) the server
    /// closes it, and every call then in flight gets this error.
    #[error("server error {code}: {message}")]
    Server {
        /// The category.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// With [`ErrorCode::NotLeader`]: the client address of the leader,
        /// when the server knows it (the `Error`'s `leader_addr`; `None`
        /// when it is empty, as it is for every other code).
        leader_addr: Option<String>,
    },
    /// A conditional write (a put or delete with a [`Condition`], a batch)
    /// was refused because a condition did not hold: nothing was written.
    /// The server's CONDITION_FAILED answer, with what it said of the key
    /// that failed; every other server error is [`ClientError::Server`].
    ///
    /// [`Condition`]: crate::Condition
    #[error(
        "condition failed on \"{}\": {}",
        key.escape_ascii(),
        match current {
            Some(seq) => format!("current version {seq}"),
            None => "the key does not exist".to_string(),
        }
    )]
    ConditionFailed {
        /// The key whose condition failed.
        key: Bytes,
        /// Its current version; `None`: it does not exist.
        current: Option<u64>,
        /// The server's explanation.
        message: String,
    },
    /// The server's answers do not follow the protocol (an undecodable
    /// frame, an id that does not match the request, a result of the wrong
    /// kind). Unless only the result's kind was wrong, the connection is
    /// closed, since responses can no longer be matched to requests.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request would exceed the maximum frame size; it was not sent and
    /// the connection goes on.
    #[error("request of {len} bytes exceeds the maximum frame size of {max} bytes")]
    RequestTooLarge {
        /// The encoded request's size.
        len: usize,
        /// The client's maximum frame size.
        max: usize,
    },
    /// No answer came within the request timeout. The request may still
    /// take effect on the server.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection is closed: the server closed it, or it was closed
    /// after an earlier error.
    #[error("the connection is closed")]
    Closed,
    /// A write (put, delete, batch, incr, expire, a membership change) was sent, and then its connection failed
    /// before the answer came (`source`: I/O error, closed, timeout): it
    /// may or may not have taken effect. A [`ClusterClient`] never sends
    /// such a write again, since that could apply it twice; read the key
    /// back to learn what happened.
    ///
    /// [`ClusterClient`]: crate::ClusterClient
    #[error(
        "the write may or may not have taken effect: the connection to {addr} failed after it was sent: {source}"
    )]
    OutcomeUnknown {
        /// The server the write was sent to, as it was given.
        addr: String,
        /// What happened to the connection.
        #[source]
        source: Box<ClientError>,
    },
    /// A [`ClusterClient`] found no member to take the call within its
    /// retry budget ([`ClusterOptions::retry_for`]): the members it reached
    /// said they were not the leader (an election, say), or lost the
    /// connection of a read. `last` is the last error seen.
    ///
    /// [`ClusterClient`]: crate::ClusterClient
    /// [`ClusterOptions::retry_for`]: crate::ClusterOptions::retry_for
    #[error("no member took the call within {waited:?}: {last}")]
    NoLeader {
        /// How long the client tried.
        waited: Duration,
        /// The last error seen.
        #[source]
        last: Box<ClientError>,
    },
    /// A [`ClusterClient`] was given no address.
    ///
    /// [`ClusterClient`]: crate::ClusterClient
    #[error("no server address given")]
    NoAddress,
    /// A local file (a backup being written) could not be written.
    #[error("{op} {}: {source}", path.display())]
    File {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
}

impl ClientError {
    /// True when this error means the connection is gone and a new one is
    /// needed (as opposed to an error about one request).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Tls { .. }
                | ClientError::Io(_)
                | ClientError::Closed
                | ClientError::Protocol(_)
        )
    }

    /// True when a write may or may not have taken effect: the connection
    /// failed after it was sent ([`ClientError::OutcomeUnknown`]), or the
    /// server said so (code OUTCOME_UNKNOWN).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            ClientError::OutcomeUnknown { .. }
                | ClientError::Server {
                    code: ErrorCode::OutcomeUnknown,
                    ..
                }
        )
    }
}
