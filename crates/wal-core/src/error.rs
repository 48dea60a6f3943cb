//! The error type of wal-core.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// Result alias for wal-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
///
/// Hand-written rather than derived so that wal-core depends on std and
/// crc32fast only.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A record exceeds the maximum record size.
    RecordTooLarge {
        /// The record's size in bytes.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The log is in fail-stop after a failed write or sync: reopen it.
    ///
    /// After a failed fsync the kernel may already have dropped the dirty
    /// pages, so a retried fsync could report success for data that is gone.
    /// The only honest way on is to reopen, which recovers from what is
    /// really on disk.
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// Another handle (this process or another) holds the directory lock.
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// Corruption that recovery may not cut away.
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in the segment file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment was written by a format version this build cannot read.
    UnsupportedVersion {
        /// The segment file.
        segment: PathBuf,
        /// The version found in its header.
        version: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The options passed to open are not usable.
    InvalidOptions {
        /// Which option and why.
        reason: String,
    },
    /// An iterator reached records that `truncate_before` deleted while it
    /// was running.
    Truncated {
        /// The first LSN the iterator could not read.
        lsn: Lsn,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "{op} failed for {}: {source}", path.display())
            }
            Error::RecordTooLarge { size, max } => write!(
                f,
                "record of {size} bytes exceeds the maximum record size of {max} bytes"
            ),
            Error::Poisoned { reason } => write!(
                f,
                "the log stopped accepting writes after an I/O failure ({reason}); reopen it"
            ),
            Error::Locked { dir } => write!(
                f,
                "log directory {} is already open (locked by another handle or process)",
                dir.display()
            ),
            Error::Corrupt {
                segment,
                offset,
                reason,
            } => write!(
                f,
                "corrupt log segment {} at offset {offset}: {reason}",
                segment.display()
            ),
            Error::UnsupportedVersion {
                segment,
                version,
                supported,
            } => write!(
                f,
                "log segment {} has format version {version}, this build reads version \
                 {supported} (written by another release, or the header is corrupt)",
                segment.display()
            ),
            Error::InvalidOptions { reason } => write!(f, "invalid WAL options: {reason}"),
            Error::Truncated { lsn } => write!(
                f,
                "record {lsn} was deleted by truncate_before while the iterator was reading"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
