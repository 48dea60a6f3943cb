//! The store's error type.

use std::path::PathBuf;

use wal_core::Lsn;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key exceeds the maximum key size.
    #[error("key of {size} bytes exceeds the maximum of {max}")]
    KeyTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The value exceeds the maximum value size.
    #[error("value of {size} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A batch whose log record would exceed the log's maximum record size.
    #[error("batch of about {size} bytes exceeds the maximum record of {max} bytes")]
    BatchTooLarge {
        /// About its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request is malformed: a time to live of zero or a deadline past
    /// the year 9999, an empty batch, a counter on a value that is not a
    /// decimal 64-bit integer or that would overflow. Nothing was written.
    #[error("{0}")]
    InvalidRequest(String),
    /// A conditional write's condition did not hold: nothing was written.
    #[error("condition failed: key {} {}", crate::txn::quote(key), match current {
        Some(seq) => format!("has version {seq}"),
        None => "does not exist".to_string(),
    })]
    ConditionFailed {
        /// The key whose condition failed.
        key: Vec<u8>,
        /// Its current version, `None` if it does not exist.
        current: Option<Lsn>,
    },
    /// The log refuses writes (fail-stop after a failed sync) or the store is
    /// closed: nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write was in the group whose write or fdatasync failed: it may
    /// be on disk or not, and a restart may or may not bring it back. It was
    /// not applied, and the store now refuses writes (fail-stop); later
    /// writes get [`Error::Unavailable`].
    #[error("outcome unknown: the write may or may not be durable ({0})")]
    OutcomeUnknown(String),
    /// The disk (or quota) is full: the log could not write the batch or
    /// create a segment. Nothing of the write was written, nothing
    /// acknowledged is lost, and the store keeps working: writes succeed
    /// again once space is freed.
    #[error("the disk is full, nothing was written; writes resume once space is freed ({0})")]
    DiskFull(String),
    /// [`KeyValueStore::close`](crate::KeyValueStore::close) on a store
    /// whose log had failed: writes have been refused since the failure, and
    /// the close could not make anything durable.
    #[error("the write-ahead log had failed ({0})")]
    LogFailed(String),
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] wal_core::Error),
    /// The options contradict each other (for example a maximum key plus
    /// value size that the log's maximum record size cannot hold).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A snapshot file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A snapshot file is damaged or not a snapshot.
    #[error("corrupt snapshot {} at offset {offset}: {reason}", path.display())]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Byte offset of the damage in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record of the write-ahead log is whole (its checksum matched) but is
    /// not a valid log entry for its position.
    #[error("corrupt log entry at LSN {lsn}: {reason}")]
    CorruptLogEntry {
        /// The record's LSN.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
    /// Neither a snapshot nor the log can reconstruct the state: for example
    /// the newest snapshot is corrupt and the log no longer reaches back to an
    /// older one. Nothing was changed on disk; the message says what is
    /// missing.
    #[error("cannot recover: {0}")]
    Unrecoverable(String),
    /// An offline tool found the data directory in use: the lock file it
    /// names is held, by a running server or another tool. Stop that first.
    #[error("the data directory is in use: {} is locked by a running process", .0.display())]
    InUse(PathBuf),
    /// A restore was asked to make a data directory where one (or anything
    /// else) already is.
    #[error("{} is not empty: restore makes a new data directory", .0.display())]
    DirectoryNotEmpty(PathBuf),
    /// The failure of a checkpoint that several callers shared: one was
    /// running when the others asked for one, and every one of them gets
    /// this same error. [`Error::cause`] is the failure itself.
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error itself: for [`Error::Shared`], the shared failure, else
    /// `self`. Match on this to tell failures apart.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Shared(inner) => inner.cause(),
            other => other,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
