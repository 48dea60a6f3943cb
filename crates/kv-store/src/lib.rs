//! kv-store: an in-memory ordered key-value store made durable by wal-core.
//!
//! TODO crate docs.

#![warn(missing_docs)]

mod checkpoint;
mod commit;
mod error;
mod options;
mod record;
mod recovery;
mod snapshot;
mod state;
mod store;

use std::time::Duration;

pub use commit::Pending;
pub use error::{Error, Result};
pub use options::StoreOptions;
pub use store::KeyValueStore;
pub use wal_core::{Lsn, SyncPolicy, Vfs, WalOptions};

/// What recovery did at open.
#[derive(Debug, Clone, Default)]
pub struct RecoveryInfo {
    /// LSN covered by the snapshot loaded, 0 if none.
    pub snapshot_seq: Lsn,
    /// Entries loaded from the snapshot.
    pub snapshot_entries: u64,
    /// WAL entries replayed after it.
    pub replayed: u64,
    /// Wall time of the whole recovery.
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
}

/// One page of keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeysPage {
    /// Matching keys, ascending.
    pub keys: Vec<Vec<u8>>,
    /// More matched than the limit.
    pub truncated: bool,
}
