//! wal-core: a segmented, crash-safe write-ahead log with group commit.
//!
//! A [`Wal`] is a directory of segment files holding opaque records, each
//! numbered by a dense, strictly increasing [`Lsn`]. Appends from many
//! threads share one write and one fdatasync ([`SyncPolicy::Always`]);
//! opening the log recovers it, cutting what an interrupted write left and
//! refusing real corruption (three [`RecoveryMode`]s say what may be cut);
//! [`Wal::truncate_before`] drops segments a snapshot has made redundant.
//!
//! It is complete enough to be a Raft log: [`Wal::append_with`] appends
//! without waiting and calls back once the records are durable,
//! [`Wal::durable_lsn`] says how far that is, [`Wal::truncate_after`] cuts
//! a conflicting suffix, [`Wal::read`] and [`Wal::read_range`] find records
//! through an in-memory index, and [`Wal::follow`] waits for new records.
//! `examples/raft_log.rs` shows the calls in the order a follower makes
//! them. [`Wal::open_read_only`] reports what recovery would do without
//! changing anything. The on-disk format, the recovery rules and what is
//! assumed of the disk are in `docs/format.md`.
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
mod stats;
pub mod vfs;
mod writer;

#[cfg(any(test, feature = "test-util"))]
pub mod sim;

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::{Error, Result};
pub use options::{
    MAX_GROUP_COMMIT_DELAY, MAX_SEGMENT_SIZE, MAX_SYNC_INTERVAL, RecoveryMode, SyncPolicy,
    WalOptions,
};
pub use reader::{RecordRef, WalIter};
pub use stats::{GROUP_BUCKETS, SYNC_BUCKETS, WalStats};
pub use vfs::{DirLock, StdFs, Vfs, VfsFile};

use segment::SegmentMeta;
use writer::{LogCore, lock};

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
    /// Whether the warnings were carried out. `false` for
    /// [`Wal::open_read_only`]: they say what an open would do, and nothing
    /// on disk was changed.
    pub applied: bool,
    /// The cuts behind the warnings, in the order open makes them: what an
    /// offline tool needs to save the bytes before they go.
    pub cuts: Vec<Cut>,
}

/// One cut recovery makes (or, read-only, would make), in
/// [`RecoveryReport::cuts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The segment is cut to `len` bytes: everything from `len` on goes.
    Truncate {
        /// The segment file.
        segment: std::path::PathBuf,
        /// Its length after the cut.
        len: u64,
    },
    /// The segment is deleted whole.
    Remove {
        /// The segment file.
        segment: std::path::PathBuf,
    },
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
/// [`Wal::sync`] first to see them), stops its threads and releases the
/// directory lock. Dropping never blocks on a failed or panicked log.
#[derive(Debug)]
pub struct Wal {
    core: Arc<LogCore>,
    /// The background thread of [`SyncPolicy::Interval`].
    syncer: Option<IntervalSyncer>,
    /// The thread that leads groups for [`Wal::append_with`], started by its
    /// first call.
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl Wal {
    /// Opens (creating if needed) and recovers the log in `dir`.
    ///
    /// Fails with [`Error::Locked`] if the log is already open, with
    /// [`Error::Corrupt`] on damage the [`RecoveryMode`] may not cut (the
    /// error names the mode that would), with [`Error::RecordExceedsLimit`]
    /// or [`Error::UnknownRecordFlags`] on an intact record this
    /// configuration or build cannot take, and with
    /// [`Error::UnsupportedVersion`] on segments of another format version.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<Wal> {
        Self::open_with_vfs(dir, options, StdFs::shared())
    }

    /// As [`Wal::open`], on the given file layer.
    pub fn open_with_vfs(
        dir: impl AsRef<Path>,
        options: WalOptions,
        vfs: Arc<dyn Vfs>,
    ) -> Result<Wal> {
        Self::start(dir.as_ref(), options, vfs, None)
    }

    /// Creates a new, empty log in `dir` whose first record gets
    /// `first_lsn`, and opens it: a log that continues a state restored
    /// from elsewhere, such as a snapshot covering every LSN below
    /// `first_lsn`. Fails with [`Error::InvalidArgument`] if `dir` already
    /// holds a log or `first_lsn` is 0. The segment is durable, directory
    /// entry included, before this returns, so a reopen continues there.
    pub fn create_at(dir: impl AsRef<Path>, options: WalOptions, first_lsn: Lsn) -> Result<Wal> {
        Self::start(dir.as_ref(), options, StdFs::shared(), Some(first_lsn))
    }

    /// As [`Wal::create_at`], on the given file layer.
    pub fn create_at_with_vfs(
        dir: impl AsRef<Path>,
        options: WalOptions,
        vfs: Arc<dyn Vfs>,
        first_lsn: Lsn,
    ) -> Result<Wal> {
        Self::start(dir.as_ref(), options, vfs, Some(first_lsn))
    }

    fn start(dir: &Path, options: WalOptions, vfs: Arc<dyn Vfs>, at: Option<Lsn>) -> Result<Wal> {
        let policy = options.sync_policy;
        let core = Arc::new(LogCore::open(dir, options, vfs, at)?);
        let syncer = match policy {
            SyncPolicy::Interval { period } => {
                Some(IntervalSyncer::start(Arc::clone(&core), period)?)
            }
            _ => None,
        };
        Ok(Wal {
            core,
            syncer,
            flusher: Mutex::new(None),
        })
    }

    /// Opens the log in `dir` for reading only: takes no lock, changes
    /// nothing on disk, and reports in [`ReadOnlyWal::recovery_report`] what
    /// [`Wal::open`] with these options would do (its warnings, or the
    /// error it would fail with). Reads see the log as that open would
    /// leave it. Meant for offline tools; on a log another process is
    /// writing, what it sees may be out of date at once.
    pub fn open_read_only(dir: impl AsRef<Path>, options: WalOptions) -> Result<ReadOnlyWal> {
        Self::open_read_only_with_vfs(dir, options, StdFs::shared())
    }

    /// As [`Wal::open_read_only`], on the given file layer.
    pub fn open_read_only_with_vfs(
        dir: impl AsRef<Path>,
        options: WalOptions,
        vfs: Arc<dyn Vfs>,
    ) -> Result<ReadOnlyWal> {
        options.validate()?;
        let rec = recovery::recover(vfs.as_ref(), dir.as_ref(), &options, true)?;
        Ok(ReadOnlyWal {
            vfs,
            segments: rec.segments,
            next_lsn: rec.next_lsn,
            report: rec.report,
            max_record_size: options.max_record_size,
        })
    }

    /// What recovery found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.core.report()
    }

    /// Appends one record; returns its LSN once it is written and as durable
    /// as the sync policy promises.
    ///
    /// Fails with [`Error::RecordTooLarge`] beyond `max_record_size`, with
    /// [`Error::DiskFull`] if the disk is full (nothing of this append was
    /// written; the log goes on), with the I/O error if this call's group
    /// failed otherwise, with [`Error::Poisoned`] once any earlier sync
    /// failed, and with [`Error::LsnExhausted`] once the log has given
    /// `Lsn::MAX - 1`, the last LSN it can (the next LSN must exist).
    pub fn append(&self, record: &[u8]) -> Result<Lsn> {
        Ok(self.core.append(&[record])?.start)
    }

    /// Appends records in order with one write; returns their LSNs
    /// (contiguous). All or nothing: if a crash interrupts the write, recovery
    /// drops the whole batch. A batch never spans segments.
    pub fn append_batch<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Lsn>> {
        self.core.append(records)
    }

    /// Appends records (one batch, as [`Wal::append_batch`]) without
    /// waiting: returns their LSNs at once, and calls `on_durable` once
    /// they are on disk (fdatasynced, whatever the sync policy), or with
    /// the error that stopped them ([`Error::DiskFull`], [`Error::Poisoned`],
    /// [`Error::Truncated`] if `truncate_after` removed them first).
    ///
    /// Callbacks run in LSN order on whichever thread wrote the group (an
    /// appender or the log's flusher thread), outside the log's locks: keep
    /// them short. This is the shape of a consensus library's "entries are
    /// flushed" callback, sharing group commit with every other appender.
    pub fn append_with<R, F>(&self, records: &[R], on_durable: F) -> Result<Range<Lsn>>
    where
        R: AsRef<[u8]>,
        F: FnOnce(Result<Range<Lsn>>) + Send + 'static,
    {
        self.start_flusher()?;
        self.core.append_with(records, on_durable)
    }

    fn start_flusher(&self) -> Result<()> {
        let mut flusher = lock(&self.flusher);
        if flusher.is_none() {
            let core = Arc::clone(&self.core);
            let thread = std::thread::Builder::new()
                .name("wal-flusher".to_string())
                .spawn(move || {
                    // A panicking callback must not end the thread that
                    // flushes everyone else's records.
                    while catch_unwind(AssertUnwindSafe(|| core.run_flusher())).is_err() {}
                })
                .map_err(Error::io("start flusher thread", ""))?;
            *flusher = Some(thread);
        }
        Ok(())
    }

    /// Makes everything appended so far durable (fdatasync), whatever the
    /// sync policy.
    pub fn sync(&self) -> Result<()> {
        self.core.sync()
    }

    /// Every record at or below this LSN is durable (0: none yet). Under
    /// [`SyncPolicy::Always`] and [`SyncPolicy::GroupCommit`] it follows the
    /// appends; under the others it moves at each sync.
    pub fn durable_lsn(&self) -> Lsn {
        self.core.durable_lsn()
    }

    /// Blocks until every record up to `lsn` is durable, syncing if needed.
    /// Fails with [`Error::InvalidArgument`] if `lsn` was not appended yet.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        self.core.wait_durable(lsn)
    }

    /// Iterates over records with LSN >= `lsn` (from the oldest one held if
    /// `lsn` is below it), up to the last record written when this is called.
    /// Appends may go on meanwhile; see [`WalIter`] for what happens when
    /// [`Wal::truncate_before`] or [`Wal::truncate_after`] runs concurrently.
    pub fn iter_from(&self, lsn: Lsn) -> Result<WalIter> {
        Ok(self.core.iter_from(lsn))
    }

    /// Reads the record at `lsn` through the in-memory index (no scan):
    /// `None` if the log does not hold it (below the oldest record, or not
    /// written yet).
    pub fn read(&self, lsn: Lsn) -> Result<Option<Record>> {
        Ok(self.core.read_range(lsn, lsn.saturating_add(1), 0)?.pop())
    }

    /// Reads the records in `[from, to)` that are written, in LSN order,
    /// through the in-memory index with one positional read per segment:
    /// as many as fit in `max_bytes` of framed records (payload plus 20
    /// bytes each), and always the first one if it is held. Empty if `from`
    /// is not held. Every record's checksum is verified.
    pub fn read_range(&self, from: Lsn, to: Lsn, max_bytes: usize) -> Result<Vec<Record>> {
        self.core.read_range(from, to, max_bytes)
    }

    /// A reader that follows the log from `lsn` as it grows: see
    /// [`Follower`].
    pub fn follow(&self, lsn: Lsn) -> Follower {
        Follower {
            core: Arc::clone(&self.core),
            next: lsn,
            buffered: VecDeque::new(),
        }
    }

    /// LSN of the oldest record still held, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.core.first_lsn()
    }

    /// LSN of the newest record (appended, possibly still being written),
    /// if any record is held.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.core.last_lsn()
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.core.next_lsn()
    }

    /// Seals the active segment (synced) and starts a new one whose header
    /// carries `next_lsn()`, so that [`Wal::truncate_before`] can then
    /// delete everything appended so far and the next LSN still survives a
    /// reopen. Does nothing if the active segment holds no record yet.
    pub fn rotate(&self) -> Result<()> {
        self.core.rotate()
    }

    /// Deletes whole segments whose records all have LSN < `lsn`, oldest
    /// first, never the active segment, with a directory fsync after each
    /// deletion. Returns how many segments were deleted. Fails with
    /// [`Error::Poisoned`] after a failed sync, like every other change to
    /// the log.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        self.core.truncate_before(lsn)
    }

    /// Removes every record with an LSN above `lsn` (a Raft follower's
    /// conflicting suffix); the next append gets `lsn + 1`. Waits for
    /// appends in flight, and blocks new ones while it works.
    ///
    /// Crash-safe: later segments are removed newest first (a directory
    /// fsync after each), then the segment holding `lsn + 1` is cut there
    /// and fdatasynced; a crash at any step leaves a prefix of the old log
    /// that still holds every record up to `lsn`, never a hole. Readers
    /// and iterators that meet a removed record get [`Error::Truncated`],
    /// never a stale record. Fails with [`Error::InvalidArgument`] below
    /// the oldest held record, and poisons the log if a file operation
    /// fails midway (reopen to recover).
    pub fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        self.core.truncate_after(lsn)
    }

    /// Bytes the log holds: segment headers and records, in all segments.
    /// The files take up to one segment size more, because the active
    /// segment is preallocated (see `docs/format.md`); sealed segments are
    /// exactly as long as their records.
    pub fn disk_size(&self) -> u64 {
        self.core.disk_size()
    }

    /// Counters since open: records, bytes, groups, syncs, group sizes and
    /// sync latencies.
    pub fn stats(&self) -> WalStats {
        self.core.stats()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        if !self.core.is_poisoned() {
            // Best effort: a caller who cares calls `sync` and sees errors.
            // A panicking file layer must not turn a drop into an abort.
            let _ = catch_unwind(AssertUnwindSafe(|| self.core.sync()));
        }
        self.core.stop_flusher();
        if let Some(thread) = lock(&self.flusher).take()
            // A callback that held the last handle drops it on the flusher
            // thread itself, which then exits by itself.
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// A reader that follows the log as it grows, made by [`Wal::follow`]: for
/// replication and change streams. It reads through the index in batches
/// and waits, up to a timeout, for records not yet written.
#[derive(Debug)]
pub struct Follower {
    core: Arc<LogCore>,
    next: Lsn,
    buffered: VecDeque<Record>,
}

/// Bytes a [`Follower`] reads at a time.
const FOLLOW_BATCH_BYTES: usize = 1 << 20;

impl Follower {
    /// The LSN the next record it yields will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    /// The next record, waiting up to `timeout` for it to be written:
    /// `Ok(None)` if none came in time. Fails with [`Error::Truncated`] if
    /// the record it wants was removed (by `truncate_before` or
    /// `truncate_after`), and with [`Error::Poisoned`] if the log failed.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>> {
        if let Some(record) = self.buffered.pop_front() {
            self.next = record.lsn + 1;
            return Ok(Some(record));
        }
        if !self.core.wait_written(self.next, timeout) {
            if self.core.is_poisoned() {
                return Err(Error::Poisoned {
                    reason: "the log failed while a follower waited".to_string(),
                });
            }
            return Ok(None);
        }
        let records = self
            .core
            .read_range(self.next, Lsn::MAX, FOLLOW_BATCH_BYTES)?;
        if records.first().map(|r| r.lsn) != Some(self.next) {
            return Err(Error::Truncated { lsn: self.next });
        }
        self.buffered.extend(records);
        Ok(self.buffered.pop_front().inspect(|r| self.next = r.lsn + 1))
    }
}

/// A log opened by [`Wal::open_read_only`]: the log as recovery would
/// leave it, for reading; nothing on disk was or will be changed.
#[derive(Debug)]
pub struct ReadOnlyWal {
    vfs: Arc<dyn Vfs>,
    segments: Vec<SegmentMeta>,
    next_lsn: Lsn,
    report: RecoveryReport,
    max_record_size: u32,
}

impl ReadOnlyWal {
    /// What an open would do: its warnings are the cuts and repairs it
    /// would make (`applied` is false).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// LSN of the oldest record, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        let first = self.segments.first()?.first_lsn;
        (first < self.next_lsn).then_some(first)
    }

    /// LSN of the newest record, if any.
    pub fn last_lsn(&self) -> Option<Lsn> {
        self.first_lsn().map(|_| self.next_lsn - 1)
    }

    /// The LSN an append after an open would get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Segment files the log holds (as an open would leave them), oldest
    /// first, with the LSN of the first record each holds.
    pub fn segments(&self) -> Vec<(Lsn, std::path::PathBuf)> {
        self.segments
            .iter()
            .map(|s| (s.first_lsn, s.path.clone()))
            .collect()
    }

    /// Iterates over the records from `lsn` on, as [`Wal::iter_from`].
    pub fn iter_from(&self, lsn: Lsn) -> WalIter {
        let first = self.segments.first().map_or(self.next_lsn, |s| s.first_lsn);
        let start = lsn.max(first);
        let from = self
            .segments
            .iter()
            .rposition(|s| s.first_lsn <= start)
            .unwrap_or(0);
        let refs = self.segments[from..]
            .iter()
            .map(|s| reader::SegmentRef {
                first_lsn: s.first_lsn,
                path: s.path.clone(),
            })
            .collect();
        WalIter::new(
            Arc::clone(&self.vfs),
            refs,
            start,
            self.next_lsn,
            self.max_record_size,
        )
    }

    /// Reads records through the index, as [`Wal::read_range`].
    pub fn read_range(&self, from: Lsn, to: Lsn, max_bytes: usize) -> Result<Vec<Record>> {
        let spans = reader::plan_spans(&self.segments, from, to.min(self.next_lsn), max_bytes);
        reader::read_spans(self.vfs.as_ref(), &spans, self.max_record_size)
    }
}

/// The background thread of [`SyncPolicy::Interval`].
#[derive(Debug)]
struct IntervalSyncer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl IntervalSyncer {
    fn start(core: Arc<LogCore>, period: Duration) -> Result<IntervalSyncer> {
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
                    if core.sync().is_err() {
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
