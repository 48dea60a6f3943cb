//! The error type of wal-core.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::Lsn;
use crate::options::RecoveryMode;

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
    /// Damage that the chosen [`RecoveryMode`] may not cut away (at open),
    /// or that a reader met.
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in the segment file.
        offset: u64,
        /// What is wrong.
        reason: String,
        /// The least tolerant recovery mode whose open would cut the log
        /// here, if any does (`None` for damage met by a reader, or a
        /// problem no mode cuts).
        cut_by: Option<RecoveryMode>,
    },
    /// A record whose checksum verifies is longer than the configured
    /// `max_record_size`: the log was written with a larger limit. This is
    /// a configuration error; nothing is cut, in every recovery mode.
    RecordExceedsLimit {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the record in the segment file.
        offset: u64,
        /// The record's LSN.
        lsn: Lsn,
        /// Its payload size in bytes.
        size: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A record whose checksum verifies carries flags (or reserved bytes)
    /// this build does not know: it was written by a newer release. Nothing
    /// is cut, in every recovery mode.
    UnknownRecordFlags {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the record in the segment file.
        offset: u64,
        /// The record's LSN.
        lsn: Lsn,
        /// The flags byte found.
        flags: u8,
    },
    /// A write or the creation of a segment failed for lack of space. Not
    /// fail-stop: nothing of the failed appends was acknowledged, nothing
    /// acknowledged is lost, and appends work again once space is freed
    /// (for example by [`crate::Wal::truncate_before`]).
    DiskFull {
        /// What the log was doing.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An argument is outside what the log can do (for example
    /// `truncate_after` below records already dropped).
    InvalidArgument {
        /// Which argument and why.
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
    /// A reader reached records that `truncate_before` deleted, or that
    /// `truncate_after` removed, while it was running.
    Truncated {
        /// The first LSN the iterator could not read.
        lsn: Lsn,
    },
    /// An append would give a record an LSN past the last one the log can
    /// express: LSNs are never reused, and the next LSN after a record
    /// (`u64::MAX` at most) must itself be representable. Nothing of the
    /// append was queued; the log stays open for reads.
    LsnExhausted {
        /// The LSN the next record would have got.
        next: Lsn,
        /// How many records the append asked for.
        records: usize,
    },
}

impl Error {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| {
            if is_out_of_space(&source) {
                Error::DiskFull { op, path, source }
            } else {
                Error::Io { op, path, source }
            }
        }
    }

    /// Whether this is [`Error::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}

/// Whether an I/O error says the disk (or the quota) is full.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
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
                cut_by,
            } => {
                write!(
                    f,
                    "corrupt log segment {} at offset {offset}: {reason}",
                    segment.display()
                )?;
                match cut_by {
                    Some(mode) => write!(
                        f,
                        "; recovery mode `{mode}` would cut the log there, losing what follows"
                    ),
                    None => Ok(()),
                }
            }
            Error::RecordExceedsLimit {
                segment,
                offset,
                lsn,
                size,
                max,
            } => write!(
                f,
                "record {lsn} in {} at offset {offset} is intact but holds {size} bytes, more \
                 than max_record_size {max}: the log was written with a larger limit; reopen \
                 with max_record_size >= {size} (nothing was cut)",
                segment.display()
            ),
            Error::UnknownRecordFlags {
                segment,
                offset,
                lsn,
                flags,
            } => write!(
                f,
                "record {lsn} in {} at offset {offset} is intact but has flags {flags:#04x} this \
                 build does not know (written by a newer release?); nothing was cut",
                segment.display()
            ),
            Error::DiskFull { op, path, source } => write!(
                f,
                "{op} failed for {}: the disk is full ({source}); nothing of the failed \
                 appends was written, nothing acknowledged is lost; free space and retry",
                path.display()
            ),
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
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
                "record {lsn} was removed (truncate_before or truncate_after) while it was being read"
            ),
            Error::LsnExhausted { next, records } => write!(
                f,
                "cannot append {records} records from LSN {next}: the log's LSNs would pass \
                 {}, the last one it can give",
                Lsn::MAX - 1
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::DiskFull { source, .. } => Some(source),
            _ => None,
        }
    }
}
