//! kv-store: an in-memory ordered key-value store made durable by
//! [wal-core](wal_core).
//!
//! Every write is a record in a write-ahead log; the state is an ordered map
//! in memory; snapshots (checkpoints) bound how much log a restart replays.
//!
//! ```
//! use kv_store::{KeyValueStore, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = KeyValueStore::open(dir.path(), StoreOptions::default())?;
//! let lsn = store.put(b"greeting", b"hello")?; // returns once durable
//! assert_eq!(store.get(b"greeting").as_deref(), Some(&b"hello"[..]));
//! assert_eq!(store.delete(b"missing")?, None); // writes nothing
//! assert_eq!(store.checkpoint()?, lsn); // snapshot, then the log is cut
//! drop(store);
//!
//! let store = KeyValueStore::open(dir.path(), StoreOptions::default())?;
//! assert_eq!(store.recovery().snapshot_seq, lsn);
//! assert_eq!(store.get(b"greeting").as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! # Layout on disk
//!
//! `<dir>/wal/` is the wal-core log; `<dir>/snapshots/` holds
//! `snapshot-<seq, 20 digits>.snap` (the format is drawn in the `snapshot`
//! module's source) and, while a checkpoint runs, its `.tmp` file. Every file
//! operation, log and snapshots alike, goes through one [`Vfs`], so the
//! simulated file system of wal-core's `test-util` feature covers both in
//! crash tests.
//!
//! # Writes: log first, then apply, then acknowledge
//!
//! [`KeyValueStore::submit_put`] and [`KeyValueStore::submit_delete`]
//! validate the request and encode its `kv.v1.LogEntry` in the caller's
//! thread (so many server threads encode in parallel), then queue it for one
//! commit thread and return a [`Pending`]. The commit thread takes everything
//! queued, appends it with one `Wal::append_batch` (under
//! [`SyncPolicy::Always`] that is one write and one fdatasync for every
//! writer queued meanwhile: group commit across connections), applies the
//! batch to the map in LSN order, and only then completes the `Pending`s. A
//! reader therefore never sees a write that a crash could take back, and
//! writes submitted from one thread commit in submission order, which lets a
//! connection pipeline.
//!
//! [`SyncPolicy::GroupCommit`] is carried out by the commit thread, where
//! writers queue, not by the log (whose only appender is that thread): the
//! log is opened with `Always`, and after the first write of a batch arrives
//! the thread keeps gathering writes for up to `max_delay` (or until the
//! batch is full) before committing them with one write and one fdatasync.
//! See [`StoreOptions::wal`].
//!
//! Applying durable log operations to the map has one home, kept apart from
//! producing log records so that the records can later come from a
//! consensus log instead: the commit thread applies each record it has made
//! durable with one function, `State::apply`, and recovery applies the
//! records it replays in bulk, in a way that ends in the same state as that
//! function on each record in turn (tested) and calls it for short runs.
//!
//! Why a commit thread and a future rather than a blocking `put`: an async
//! server must not block a runtime worker on fsync. A [`Pending`] is a
//! future completed by the commit thread (a `tokio::sync::oneshot`, which
//! needs no runtime), so the server awaits durability while its workers keep
//! serving; [`Pending::wait`] serves plain threads. The single thread is also
//! what makes LSNs predictable (it is the log's only appender, so it writes
//! each entry's `seq` before appending) and lets it decide, against the map
//! and the earlier writes of the same batch, that a delete of a missing key
//! writes nothing.
//!
//! If the log fails (a failed fsync puts wal-core in fail-stop), the writes
//! of the failed batch get [`Error::OutcomeUnknown`] (they may be on disk or
//! not) and every later write [`Error::Unavailable`], never a false success;
//! reads keep serving the acknowledged state, and
//! [`KeyValueStore::close`] then reports [`Error::LogFailed`]. A full disk
//! is not fail-stop: the writes that hit it get [`Error::DiskFull`] (nothing
//! of them was written) and later writes succeed once space is freed.
//!
//! # Recovery modes
//!
//! [`StoreOptions::wal`]'s `recovery_mode` ([`RecoveryMode`]: absolute,
//! strict by default, tolerant) says what opening the log may cut; a log
//! that needs more is refused with [`Error::Wal`] wrapping
//! `wal_core::Error::Corrupt`, which names the segment, the offset and the
//! least tolerant mode that would cut there.
//!
//! # Memory
//!
//! The map is a `BTreeSet` of single allocations holding
//! `[key length][key][value]`, ordered by key: a 16-byte B-tree slot and one
//! heap block per entry, instead of two `Vec`s (48 bytes of slot and two
//! blocks). Reads take a read lock; the commit thread takes the write lock
//! once per batch.
//!
//! # Checkpoints
//!
//! [`KeyValueStore::checkpoint`] is fuzzy and does not stop writers: under
//! the commit lock it rotates the log and notes `n`, the last applied LSN;
//! then it copies the map in chunks of 1024 entries, one read-lock
//! acquisition per chunk, so writes keep committing between chunks. The copy
//! may thus hold writes later than `n`. That is harmless because recovery
//! replays every record after `n`, and replay is idempotent per key (a put
//! sets, a delete removes): each key ends with the value of its last record
//! after `n`, or, if no record after `n` touches it, with the value it had
//! throughout the copy, which is its value at `n`. Before the snapshot is
//! published the log is synced, so even under a relaxed sync policy a
//! snapshot never holds a write the log could lose.
//!
//! The file is then synced, renamed into place and the directory synced;
//! only then does the log drop its segments below `n + 1`, and older
//! snapshots are deleted. They are not kept as a fallback: once the log is
//! cut at the new snapshot an older one could not be replayed forward. The
//! checkpoint has succeeded once the log is cut: an older snapshot that
//! cannot be deleted then is logged as a warning and left for the next
//! checkpoint to delete (recovery reads the newest valid snapshot anyway).
//! One checkpoint runs at a time. An automatic one starts in a background
//! thread when the log outgrows [`StoreOptions::checkpoint_after`].
//!
//! # Recovery
//!
//! Open loads the newest snapshot that verifies (checksums per entry and over
//! the whole file), then replays the log after it, checking that LSNs are
//! dense and that each entry's `seq` matches its LSN. A damaged snapshot is
//! skipped, with a warning in [`RecoveryInfo::warnings`], only for an older
//! one (or the empty state) that the log still reaches back to; otherwise
//! open fails with [`Error::Unrecoverable`] rather than silently lose
//! acknowledged writes. Recovery decodes keys and values as slices of the
//! buffers read, so the only allocation per entry is the map's own.

#![warn(missing_docs)]

mod checkpoint;
mod commit;
mod error;
pub mod inspect;
mod listing;
mod options;
mod record;
mod recovery;
pub mod replica;
mod scan;
mod snapshot;
mod state;
mod store;
mod sweep;
pub mod txn;

use std::time::Duration;

pub use commit::Pending;
pub use error::{Error, Result};
pub use listing::KeyListing;
pub use options::StoreOptions;
pub use record::now_ms;
pub use scan::{SCAN_ITEM_OVERHEAD, ScanItem, ScanPage, ScanRange, Versioned};
pub use store::{Hold, KEY_LISTING_OVERHEAD, KeyValueStore};
pub use txn::{
    Condition, Expiry, MAX_DEADLINE_MS, Txn, TxnOutcome, Write, WriteResult, check_deadline,
    condition_from_request, deadline_after, expiry_from_request, txn_from_request,
};
pub use wal_core::{Lsn, RecoveryMode, SyncPolicy, Vfs, WalOptions, WalStats};

/// What recovery did at open.
#[derive(Debug, Clone, Default)]
pub struct RecoveryInfo {
    /// LSN covered by the snapshot loaded, 0 if none.
    pub snapshot_seq: Lsn,
    /// Entries loaded from the snapshot.
    pub snapshot_entries: u64,
    /// WAL entries replayed after it.
    pub replayed: u64,
    /// Wall time of the whole recovery: opening the log (which scans every
    /// segment and cuts a torn tail), loading the snapshot, replaying the
    /// log after it.
    pub duration: Duration,
    /// Warnings from the WAL and snapshot recovery.
    pub warnings: Vec<String>,
}

/// Counters and sizes.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Number of keys.
    pub keys: u64,
    /// Sum of key and value lengths.
    pub bytes: u64,
    /// LSN of the last applied write.
    pub last_lsn: Lsn,
    /// Bytes of WAL segment files on disk.
    pub wal_bytes: u64,
    /// Snapshots written since open.
    pub snapshots_taken: u64,
    /// Wall time of those checkpoints together.
    pub checkpoint_duration_total: Duration,
    /// Wall time of the last of them (zero before the first).
    pub last_checkpoint_duration: Duration,
    /// Checkpoints (requested or automatic) that failed since open.
    pub checkpoints_failed: u64,
    /// Checkpoint requests that found one running and shared its outcome
    /// instead of starting another, since open.
    pub checkpoints_joined: u64,
    /// The write-ahead log's own counters: records, group commit sizes,
    /// fdatasync latencies, segments, the durable LSN.
    pub wal: WalStats,
    /// Keys with an expiry deadline (expired ones not yet swept included).
    pub expiring_keys: u64,
    /// Expired keys the sweeper removed since open.
    pub expired_swept: u64,
    /// Time since the store was opened.
    pub uptime: Duration,
}

/// One page of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysPage {
    /// Matching keys, ascending.
    pub keys: Vec<Vec<u8>>,
    /// More matched than the limit.
    pub truncated: bool,
}
