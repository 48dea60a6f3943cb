//! The error type of kv-cluster.

use std::path::PathBuf;

/// Result alias for kv-cluster.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// What can go wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The Raft log (wal-core) failed.
    #[error("raft log: {0}")]
    Log(#[from] wal_core::Error),
    /// The store's state machine failed.
    #[error("state machine: {0}")]
    Store(#[from] kv_store::Error),
    /// A file of the cluster layer could not be read or written.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory holds data this start would hide or lose (a
    /// single node's data given to a member of a larger cluster, or a
    /// member's state given to a single node): what is there and what to
    /// do instead.
    #[error("{0}")]
    DataDir(String),
    /// A record on disk does not decode or does not fit where it is.
    #[error("corrupt cluster data: {0}")]
    Corrupt(String),
}

impl ClusterError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ClusterError::Io { op, path, source }
    }

    /// As an `io::Error`, for openraft's storage errors and flush callbacks.
    pub(crate) fn into_io(self) -> std::io::Error {
        std::io::Error::other(self.to_string())
    }
}
