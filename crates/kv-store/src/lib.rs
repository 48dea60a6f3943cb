//! kv-store: an in-memory ordered key-value store made durable by wal-core.
//!
//! SKELETON: the public API below is the contract kv-server builds on.
//! Bodies are filled in by the kv-store implementation.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use wal_core::{Lsn, SyncPolicy, Vfs, WalOptions};

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
    /// The log refuses writes (fail-stop after a failed sync) or the store is
    /// closed: nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] wal_core::Error),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Options for [`KeyValueStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Options of the write-ahead log (sync policy, segment size, ...).
    pub wal: WalOptions,
    /// Largest key accepted, in bytes.
    pub max_key_size: usize,
    /// Largest value accepted, in bytes.
    pub max_value_size: usize,
    /// Start an automatic checkpoint once the WAL exceeds this many bytes;
    /// `None` disables automatic checkpoints.
    pub checkpoint_after: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            wal: WalOptions::default(),
            max_key_size: 64 << 10,
            max_value_size: 4 << 20,
            checkpoint_after: Some(256 << 20),
        }
    }
}

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

/// A write submitted to the commit pipeline; resolves once it is durable and
/// applied. Submission order on one thread is commit order.
#[derive(Debug)]
pub struct Pending<T> {
    _t: std::marker::PhantomData<T>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        todo!()
    }
}

impl<T> Pending<T> {
    /// Blocks the current thread until the write is durable.
    pub fn wait(self) -> Result<T> {
        todo!()
    }
}

/// The store: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct KeyValueStore {
    _inner: Arc<()>,
}

impl KeyValueStore {
    /// Opens and recovers the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_with_vfs(dir, options, wal_core::StdFs::shared())
    }
    /// As [`KeyValueStore::open`] on the given file layer.
    pub fn open_with_vfs(
        _dir: impl AsRef<Path>,
        _options: StoreOptions,
        _vfs: Arc<dyn Vfs>,
    ) -> Result<Self> {
        todo!()
    }
    /// What recovery did.
    pub fn recovery(&self) -> &RecoveryInfo {
        todo!()
    }
    /// Submits a put; validation errors return at once.
    pub fn submit_put(&self, _key: &[u8], _value: &[u8]) -> Result<Pending<Lsn>> {
        todo!()
    }
    /// Submits a delete; resolves to `Some(lsn)` if the key existed, `None`
    /// (nothing written) if not.
    pub fn submit_delete(&self, _key: &[u8]) -> Result<Pending<Option<Lsn>>> {
        todo!()
    }
    /// Blocking put.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        self.submit_put(key, value)?.wait()
    }
    /// Blocking delete.
    pub fn delete(&self, key: &[u8]) -> Result<Option<Lsn>> {
        self.submit_delete(key)?.wait()
    }
    /// The value of `key`, if present.
    pub fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        todo!()
    }
    /// Keys starting with `prefix`, ascending, at most `limit` (0 = no limit).
    pub fn keys(&self, _prefix: &[u8], _limit: usize) -> KeysPage {
        todo!()
    }
    /// Writes a snapshot and drops the WAL it covers; returns its LSN.
    /// Blocking: call from a blocking-capable thread.
    pub fn checkpoint(&self) -> Result<Lsn> {
        todo!()
    }
    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        todo!()
    }
    /// Makes every acknowledged write durable (for shutdown under a relaxed
    /// sync policy) and stops accepting writes.
    pub fn close(&self) -> Result<()> {
        todo!()
    }
}
