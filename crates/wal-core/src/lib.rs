//! wal-core: a segmented, crash-safe write-ahead log with group commit.
//!
//! SKELETON: the public API below is the contract other crates build on.
//! Bodies are filled in by the wal-core implementation.

#![warn(missing_docs)]

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod vfs;
pub use vfs::{DirLock, StdFs, Vfs, VfsFile};

#[cfg(any(test, feature = "test-util"))]
pub mod sim;

/// A log sequence number. The first record of a new log gets LSN 1; LSNs are
/// dense, strictly increasing and never reused. 0 means "no record".
pub type Lsn = u64;

/// Result alias for wal-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors (skeleton; the implementation refines the variants).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record exceeds the maximum record size.
    RecordTooLarge {
        /// The record's size in bytes.
        size: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The log is in fail-stop after a failed sync: reopen it.
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// Another handle (this process or another) holds the directory lock.
    Locked {
        /// The log directory.
        dir: std::path::PathBuf,
    },
    /// Corruption that recovery may not cut away.
    Corrupt {
        /// The segment file.
        segment: std::path::PathBuf,
        /// Byte offset in the segment file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for Error {}

/// When `append` returns relative to durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Durable (fdatasync) before `append` returns; concurrent appenders share
    /// one write and one fdatasync (leader/follower, no timer).
    Always,
    /// Durable before return; the sync leader waits up to `max_delay` for more
    /// appenders to join its group.
    GroupCommit {
        /// Longest a leader waits to gather a group.
        max_delay: Duration,
    },
    /// A background thread syncs every `period`; a crash may lose up to one
    /// period of acknowledged appends.
    Interval {
        /// Time between background syncs.
        period: Duration,
    },
    /// Never sync explicitly (except on rotation, close and `sync`).
    Never,
}

/// What open does with corruption that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Fail with [`Error::Corrupt`] naming segment and offset.
    #[default]
    Strict,
    /// Cut the log at the first bad record, reporting what was dropped.
    TruncateAtCorruption,
}

/// Options for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Rotate to a new segment once the active one reaches this many bytes.
    pub segment_size: u64,
    /// Durability of `append`.
    pub sync_policy: SyncPolicy,
    /// Largest record payload accepted on write and on read.
    pub max_record_size: u32,
    /// Treatment of mid-log corruption.
    pub recovery_mode: RecoveryMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            sync_policy: SyncPolicy::Always,
            max_record_size: 16 << 20,
            recovery_mode: RecoveryMode::Strict,
        }
    }
}

/// What open found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Human-readable warnings (torn tail cut: file, offset, bytes).
    pub warnings: Vec<String>,
    /// Records found.
    pub records: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its payload.
    pub data: Vec<u8>,
}

/// Iterator over records from some LSN.
#[derive(Debug)]
pub struct WalIter {
    _p: (),
}

impl Iterator for WalIter {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        todo!()
    }
}

/// The log. `Send + Sync`; share it with `Arc` or by reference.
#[derive(Debug)]
pub struct Wal {
    _p: (),
}

impl Wal {
    /// Opens (creating if needed) and recovers the log in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_with_vfs(dir, options, StdFs::shared())
    }
    /// As [`Wal::open`], on the given file layer.
    pub fn open_with_vfs(
        _dir: impl AsRef<Path>,
        _options: WalOptions,
        _vfs: Arc<dyn Vfs>,
    ) -> Result<Wal> {
        todo!()
    }
    /// What recovery found.
    pub fn recovery_report(&self) -> &RecoveryReport {
        todo!()
    }
    /// Appends one record; returns its LSN once durable per the sync policy.
    pub fn append(&self, _record: &[u8]) -> Result<Lsn> {
        todo!()
    }
    /// Appends records atomically in order with one write; returns their LSNs.
    pub fn append_batch<R: AsRef<[u8]>>(&self, _records: &[R]) -> Result<Range<Lsn>> {
        todo!()
    }
    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
    /// Iterates over records with LSN >= `lsn`.
    pub fn iter_from(&self, _lsn: Lsn) -> Result<WalIter> {
        todo!()
    }
    /// LSN of the oldest record still held, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        todo!()
    }
    /// LSN of the newest record, if any.
    pub fn last_lsn(&self) -> Option<Lsn> {
        todo!()
    }
    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        todo!()
    }
    /// Seals the active segment and starts a new one at `next_lsn()`.
    pub fn rotate(&self) -> Result<()> {
        todo!()
    }
    /// Deletes whole segments whose records all have LSN < `lsn`; never the
    /// active segment. Returns how many segments were deleted.
    pub fn truncate_before(&self, _lsn: Lsn) -> Result<usize> {
        todo!()
    }
    /// Total bytes of all segment files.
    pub fn disk_size(&self) -> u64 {
        todo!()
    }
}
