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

/// What open may cut to make a damaged log usable again.
///
/// Three modes, from the one that cuts nothing to the one that cuts most.
/// Whatever the mode, nothing is ever skipped silently: every cut is a
/// warning in [`crate::RecoveryReport`], and a refusal names the segment, the
/// offset and the mode that would cut there ([`crate::Error::Corrupt`]). The
/// rules are in `docs/format.md` ("Recovery").
///
/// The modes are ordered from the one that cuts least to the one that cuts
/// most: `Absolute < Strict < Tolerant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RecoveryMode {
    /// Cut nothing: refuse to open if anything would have to be cut, even
    /// an incomplete last write. For logs whose last synced record must
    /// never be dropped on a guess (a Raft vote, a ledger): bit rot in the
    /// last record looks exactly like a torn write, and only an operator
    /// can tell them apart. Free space (the zeroes after the last record)
    /// is not a cut.
    Absolute,
    /// Cut only what an interrupted write leaves behind: a torn tail, a
    /// torn write that a lost page of zeroes betrays, an incomplete batch
    /// at the end. None of that was ever acknowledged as durable under
    /// [`SyncPolicy::Always`] or [`SyncPolicy::GroupCommit`]. Any other
    /// damage is refused.
    #[default]
    Strict,
    /// Also cut real corruption: the log ends at the first bad record (or
    /// bad segment header, or LSN gap), everything after it is deleted, and
    /// each step is a warning. Records after the cut are lost even if they
    /// were intact. LSNs are still never reused (see `docs/format.md`).
    Tolerant,
}

impl RecoveryMode {
    /// The name used on command lines and in messages: `absolute`,
    /// `strict` or `tolerant`.
    pub fn name(self) -> &'static str {
        match self {
            RecoveryMode::Absolute => "absolute",
            RecoveryMode::Strict => "strict",
            RecoveryMode::Tolerant => "tolerant",
        }
    }
}

impl std::fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for RecoveryMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "absolute" => Ok(RecoveryMode::Absolute),
            "strict" => Ok(RecoveryMode::Strict),
            "tolerant" => Ok(RecoveryMode::Tolerant),
            other => Err(Error::InvalidOptions {
                reason: format!(
                    "unknown recovery mode `{other}` (expected absolute, strict or tolerant)"
                ),
            }),
        }
    }
}

/// The longest [`SyncPolicy::GroupCommit`] delay accepted: every durable
/// append may wait this long, so more is a mistake, not a tuning.
pub const MAX_GROUP_COMMIT_DELAY: Duration = Duration::from_secs(1);

/// The longest [`SyncPolicy::Interval`] period accepted: a crash may lose
/// about one period of acknowledged appends.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// The largest `segment_size` accepted: 4 GiB, so that a record's offset in
/// its segment fits the 32 bits the in-memory index keeps per record.
pub const MAX_SEGMENT_SIZE: u64 = u32::MAX as u64;

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
    /// Reopening a log with a smaller limit than it was written with fails
    /// with [`Error::RecordExceedsLimit`] naming the first larger record:
    /// an intact record is never cut because an option changed.
    pub max_record_size: u32,
    /// What open may cut. Default [`RecoveryMode::Strict`].
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
        if self.segment_size > MAX_SEGMENT_SIZE {
            return invalid(format!(
                "segment_size {} exceeds the limit of {MAX_SEGMENT_SIZE} bytes (record \
                 offsets in the in-memory index are 32-bit)",
                self.segment_size
            ));
        }
        match self.sync_policy {
            SyncPolicy::Interval { period } if period.is_zero() => {
                return invalid("SyncPolicy::Interval needs a non-zero period".to_string());
            }
            SyncPolicy::Interval { period } if period > MAX_SYNC_INTERVAL => {
                return invalid(format!(
                    "SyncPolicy::Interval period {period:?} exceeds the limit of \
                     {MAX_SYNC_INTERVAL:?}"
                ));
            }
            SyncPolicy::GroupCommit { max_delay } if max_delay > MAX_GROUP_COMMIT_DELAY => {
                return invalid(format!(
                    "SyncPolicy::GroupCommit max_delay {max_delay:?} exceeds the limit of \
                     {MAX_GROUP_COMMIT_DELAY:?} (every durable append may wait that long)"
                ));
            }
            _ => {}
        }
        Ok(())
    }
}
