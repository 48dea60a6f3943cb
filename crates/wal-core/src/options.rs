//! Options of [`crate::Wal::open`] and the guarantee of each sync policy.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format;

/// When `append` returns relative to durability.
///
/// Under every policy `append` returns only after its bytes were handed to
/// the file (written), so iterators and a reopen in the same boot see them;
/// the policies differ in when they reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Durable (fdatasync) before `append` returns. Concurrent appenders share
    /// one write and one fdatasync (leader/follower): whoever finds no sync
    /// in progress writes and syncs everything queued so far, the others
    /// wait for it. A lone writer never waits for a timer.
    Always,
    /// Durable before return, like [`SyncPolicy::Always`], but the sync
    /// leader first waits up to `max_delay` for more appenders to join its
    /// group: fewer syncs under load, at the price of latency.
    GroupCommit {
        /// Longest a leader waits to gather a group.
        max_delay: Duration,
    },
    /// A background thread syncs every `period`; a crash may lose up to about
    /// one period of acknowledged appends (never a record in the middle: what
    /// survives is always a prefix of the log, given what `docs/format.md`
    /// assumes of the disk).
    Interval {
        /// Time between background syncs.
        period: Duration,
    },
    /// Never sync on append; the OS writes back when it likes. Rotation,
    /// [`crate::Wal::sync`] and closing the log still sync. A crash may lose
    /// any suffix of the log.
    Never,
}

impl SyncPolicy {
    /// Whether `append` waits for an fdatasync.
    pub(crate) fn syncs_on_append(self) -> bool {
        matches!(self, SyncPolicy::Always | SyncPolicy::GroupCommit { .. })
    }
}

/// What open does with corruption that is not a torn tail.
///
/// A torn tail (an incomplete last write of the last segment) is always cut
/// back, in both modes, with a warning: it holds only records whose append
/// never returned as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Fail with [`Error::Corrupt`] naming segment and offset.
    #[default]
    Strict,
    /// Cut the log at the first bad record (or bad segment header, or LSN
    /// gap), delete everything after it, and report what was dropped in the
    /// warnings. Records after the cut are lost even if they were intact.
    TruncateAtCorruption,
}

/// Options for [`crate::Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Rotate to a new segment when the next write would take the active one
    /// past this many bytes. A record (or batch) larger than this still fits:
    /// it goes alone into a fresh segment. The active segment's file is
    /// preallocated to this size (so an fdatasync need not write the file's
    /// size each time); sealed segments are cut back to their records.
    /// Default 64 MiB.
    pub segment_size: u64,
    /// Durability of `append`. Default [`SyncPolicy::Always`].
    pub sync_policy: SyncPolicy,
    /// Largest record payload accepted on write and on read. Default 16 MiB.
    /// Reopening a log with a smaller limit than it was written with makes
    /// the larger records unreadable (reported as corruption).
    pub max_record_size: u32,
    /// Treatment of mid-log corruption. Default [`RecoveryMode::Strict`].
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

impl WalOptions {
    /// Rejects options the log cannot work with.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidOptions { reason });
        if self.segment_size <= format::SEGMENT_HEADER_LEN as u64 {
            return invalid(format!(
                "segment_size {} must exceed the {}-byte segment header",
                self.segment_size,
                format::SEGMENT_HEADER_LEN
            ));
        }
        if self.max_record_size > format::MAX_RECORD_SIZE_LIMIT {
            return invalid(format!(
                "max_record_size {} exceeds the format's limit of {} bytes",
                self.max_record_size,
                format::MAX_RECORD_SIZE_LIMIT
            ));
        }
        if let SyncPolicy::Interval { period } = self.sync_policy
            && period.is_zero()
        {
            return invalid("SyncPolicy::Interval needs a non-zero period".to_string());
        }
        Ok(())
    }
}
