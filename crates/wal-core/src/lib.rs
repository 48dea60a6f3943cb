//! wal-core: a segmented, crash-safe write-ahead log with group commit.
//!
//! A [`Wal`] is a directory of segment files holding opaque records, each
//! numbered by a dense, strictly increasing [`Lsn`]. Appends from many
//! threads share one write and one fdatasync ([`SyncPolicy::Always`]);
//! opening the log recovers it, cutting a torn tail and refusing real
//! corruption; [`Wal::truncate_before`] drops segments a snapshot has made
//! redundant. The on-disk format, the recovery rules and what is assumed of
//! the disk are in `docs/format.md`.
//!
//! ```
//! use wal_core::{Wal, WalOptions};
//!
//! # fn main() -> wal_core::Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("wal");
//! let wal = Wal::open(&dir, WalOptions::default())?;
//! let first = wal.append(b"hello")?; // durable when this returns
//! let batch = wal.append_batch(&[&b"a"[..], b"b"])?;
//! assert_eq!((first, batch), (1, 2..4));
//! drop(wal);
//!
//! // Reopening recovers; iteration starts at any LSN.
//! let wal = Wal::open(&dir, WalOptions::default())?;
//! let records: Vec<Vec<u8>> = wal
//!     .iter_from(2)?
//!     .map(|r| r.map(|r| r.data))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(records, vec![b"a".to_vec(), b"b".to_vec()]);
//! assert_eq!(wal.next_lsn(), 4);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
mod format;
mod options;
mod reader;
mod recovery;
mod segment;
pub mod vfs;
mod writer;

#[cfg(any(test, feature = "test-util"))]
pub mod sim;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::{Error, Result};
pub use options::{RecoveryMode, SyncPolicy, WalOptions};
pub use reader::{RecordRef, WalIter};
pub use vfs::{DirLock, StdFs, Vfs, VfsFile};

use writer::{Shared, lock};

/// Record framing, exposed for the crate's benchmarks only: not a stable
/// API, and not needed to use the log.
#[doc(hidden)]
pub mod bench_support {
    use crate::Lsn;

    /// Appends one framed record to `out`.
    pub fn encode_record(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
        crate::format::encode_record(out, lsn, 0, payload);
    }

    /// Decodes and verifies the record at the start of `buf`; returns its
    /// LSN and framed length.
    pub fn decode_record(buf: &[u8], max_record_size: u32) -> Option<(Lsn, usize)> {
        crate::format::decode_record(buf, max_record_size)
            .ok()
            .map(|r| (r.lsn, r.framed_len))
    }
}

/// A log sequence number. The first record of a new log gets LSN 1; LSNs are
/// dense, strictly increasing and never reused. 0 means "no record".
pub type Lsn = u64;

/// What open found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Human-readable warnings, one per thing recovery cut or repaired (torn
    /// tail cut: file, offset, bytes; in tolerant mode also the corruption
    /// and every segment removed).
    pub warnings: Vec<String>,
    /// Records in the log after recovery.
    pub records: u64,
    /// Where the log ends after recovery: the active segment and the offset
    /// after its last record. The zeroes after it are the segment's
    /// preallocated free space (see `docs/format.md`), not a torn tail, so
    /// they give no warning; this says where they start.
    pub end: Option<LogEnd>,
}

/// Where a recovered log ends, in [`RecoveryReport::end`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    /// The active segment, into which the next record goes.
    pub segment: std::path::PathBuf,
    /// Offset after its last record (its header's length if it holds none).
    pub offset: u64,
    /// Bytes of preallocated free space after `offset` (the file is this
    /// much longer than its records).
    pub free_bytes: u64,
}

impl std::fmt::Display for LogEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}, {} bytes of preallocated space after it",
            self.segment.display(),
            self.offset,
            self.free_bytes
        )
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its payload.
    pub data: Vec<u8>,
}

/// The log. `Send + Sync`; share it with `Arc` or by reference.
///
/// Dropping it syncs what was written (best effort: errors are ignored, call
/// [`Wal::sync`] first to see them) and releases the directory lock.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    /// The background thread of [`SyncPolicy::Interval`].
    syncer: Option<IntervalSyncer>,
}

impl Wal {
    /// Opens (creating if needed) and recovers the log in `dir`.
    ///
    /// Fails with [`Error::Locked`] if the log is already open, with
    /// [`Error::Corrupt`] on corruption that is not a torn tail (in
    /// [`RecoveryMode::Strict`]), with [`Error::UnsupportedVersion`] on
    /// segments of another format version.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_with_vfs(dir, options, StdFs::shared())
    }

    /// As [`Wal::open`], on the given file layer.
    pub fn open_with_vfs(
        dir: impl AsRef<Path>,
        options: WalOptions,
        vfs: Arc<dyn Vfs>,
    ) -> Result<Wal> {
        let policy = options.sync_policy;
        let shared = Arc::new(Shared::open(dir.as_ref(), options, vfs)?);
        let syncer = match policy {
            SyncPolicy::Interval { period } => {
                Some(IntervalSyncer::start(Arc::clone(&shared), period)?)
            }
            _ => None,
        };
        Ok(Wal { shared, syncer })
    }

    /// What recovery found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.shared.report()
    }

    /// Appends one record; returns its LSN once it is written and as durable
    /// as the sync policy promises.
    ///
    /// Fails with [`Error::RecordTooLarge`] beyond `max_record_size`, with
    /// the I/O error if this call's group failed to write or sync, and with
    /// [`Error::Poisoned`] once any earlier write or sync failed.
    pub fn append(&self, record: &[u8]) -> Result<Lsn> {
        Ok(self.shared.append(&[record])?.start)
    }

    /// Appends records in order with one write; returns their LSNs
    /// (contiguous). All or nothing: if a crash interrupts the write, recovery
    /// drops the whole batch. A batch never spans segments.
    pub fn append_batch<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Lsn>> {
        self.shared.append(records)
    }

    /// Makes everything appended so far durable (fdatasync), whatever the
    /// sync policy.
    pub fn sync(&self) -> Result<()> {
        self.shared.sync()
    }

    /// Iterates over records with LSN >= `lsn` (from the oldest one held if
    /// `lsn` is below it), up to the last record written when this is called.
    /// Appends may go on meanwhile; see [`WalIter`] for what happens when
    /// [`Wal::truncate_before`] runs concurrently.
    pub fn iter_from(&self, lsn: Lsn) -> Result<WalIter> {
        Ok(self.shared.iter_from(lsn))
    }

    /// LSN of the oldest record still held, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.shared.first_lsn()
    }

    /// LSN of the newest record (appended, possibly still being written),
    /// if any record is held.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.shared.last_lsn()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.next_lsn()
    }

    /// Seals the active segment (synced) and starts a new one whose header
    /// carries `next_lsn()`, so that [`Wal::truncate_before`] can then
    /// delete everything appended so far and the next LSN still survives a
    /// reopen. Does nothing if the active segment holds no record yet.
    pub fn rotate(&self) -> Result<()> {
        self.shared.rotate()
    }

    /// Deletes whole segments whose records all have LSN < `lsn`, oldest
    /// first, never the active segment, with a directory fsync after each
    /// deletion. Returns how many segments were deleted. Fails with
    /// [`Error::Poisoned`] after a failed write or sync, like every other
    /// change to the log.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        self.shared.truncate_before(lsn)
    }

    /// Bytes the log holds: segment headers and records, in all segments.
    /// The files take up to one segment size more, because the active
    /// segment is preallocated (see `docs/format.md`); sealed segments are
    /// exactly as long as their records.
    pub fn disk_size(&self) -> u64 {
        self.shared.disk_size()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        if !self.shared.is_poisoned() {
            // Best effort: a caller who cares calls `sync` and sees errors.
            let _ = self.shared.sync();
        }
    }
}

/// The background thread of [`SyncPolicy::Interval`].
#[derive(Debug)]
struct IntervalSyncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl IntervalSyncer {
    fn start(shared: Arc<Shared>, period: Duration) -> Result<IntervalSyncer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wal-interval-sync".to_string())
            .spawn(move || {
                let (stopped, wake) = &*flag;
                loop {
                    let guard = lock(stopped);
                    let (guard, _) = wake
                        .wait_timeout_while(guard, period, |stopped| !*stopped)
                        .unwrap_or_else(PoisonError::into_inner);
                    if *guard {
                        return;
                    }
                    drop(guard);
                    // A failed sync poisons the log; appenders see it.
                    if shared.sync().is_err() {
                        return;
                    }
                }
            })
            .map_err(Error::io("start interval sync thread", ""))?;
        Ok(IntervalSyncer { stop, thread })
    }

    fn stop(self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        // The thread only syncs and exits; a panic in it has nothing to
        // hand back.
        let _ = self.thread.join();
    }
}
