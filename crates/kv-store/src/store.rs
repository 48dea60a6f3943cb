//! [`KeyValueStore`]: the handle, and the state its threads share.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard,
    RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wal_core::{Lsn, Vfs, Wal};

use crate::checkpoint::CheckpointState;
use crate::commit::{self, Command, Pending};
use crate::error::{Error, Result};
use crate::options::StoreOptions;
use crate::state::{Entry, State};
use crate::txn::{Condition, Expiry, Txn, TxnOutcome, Write};
use crate::{
    KeyListing, KeysPage, RecoveryInfo, ScanPage, ScanRange, Stats, Versioned, checkpoint, recovery,
};

// A panic while holding one of these locks is a bug in this crate; the data
// they protect stays consistent (every mutation is a single map operation),
// so a poisoned lock is used as is rather than turned into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes [`KeyValueStore::keys_within`] counts for each key on top of its
/// length: what a protobuf `repeated bytes` field spends at most per entry
/// (a tag byte and a length of up to five bytes), rounded up.
pub const KEY_LISTING_OVERHEAD: usize = 8;

/// The automatic checkpoint thread and its back-off.
#[derive(Debug, Default)]
pub(crate) struct AutoCheckpoint {
    pub(crate) thread: Option<JoinHandle<()>>,
    /// No automatic checkpoint starts before this (after failures).
    pub(crate) retry_after: Option<Instant>,
    /// Automatic checkpoints that failed in a row.
    pub(crate) failures: u32,
}

/// What the commit thread, checkpoints and handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: StoreOptions,
    pub(crate) vfs: Arc<dyn Vfs>,
    pub(crate) snapshot_dir: PathBuf,
    pub(crate) wal: Wal,
    pub(crate) state: RwLock<State>,
    /// Held by the commit thread from reading `next_lsn` until a batch is
    /// applied: whoever holds it sees a log and a map that agree.
    pub(crate) commit_lock: Mutex<()>,
    /// One checkpoint at a time, shared by concurrent callers.
    pub(crate) checkpoints: Mutex<CheckpointState>,
    /// Signalled when a checkpoint ends.
    pub(crate) checkpoint_done: Condvar,
    /// A checkpoint is running or about to (automatic ones are flagged before
    /// their thread starts): the commit thread's cheap check.
    pub(crate) checkpoint_running: AtomicBool,
    pub(crate) auto_checkpoint: Mutex<AutoCheckpoint>,
    pub(crate) snapshots_taken: AtomicU64,
    /// Wall time of the checkpoints counted in `snapshots_taken`, in µs.
    pub(crate) checkpoint_micros_total: AtomicU64,
    /// Wall time of the last of them, in µs.
    pub(crate) last_checkpoint_micros: AtomicU64,
    pub(crate) checkpoints_failed: AtomicU64,
    pub(crate) checkpoints_joined: AtomicU64,
    /// Expired keys the sweeper removed since open.
    pub(crate) expired_swept: AtomicU64,
    /// When the store was opened.
    pub(crate) opened: Instant,
    /// Set once, when the log fails: the store is then read-only for good.
    failure: OnceLock<String>,
    /// The last append failed for a full disk (so that the commit thread
    /// logs when the disk fills and when it has room again, not per batch).
    pub(crate) disk_full: AtomicBool,
    /// Set by `close`: later writes are refused.
    closed: AtomicBool,
}

impl Shared {
    /// Why writes are refused, if the log failed.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records the log's failure (the first reason wins) and returns it.
    pub(crate) fn set_failure(&self, reason: String) -> &str {
        self.failure.get_or_init(|| reason)
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(reason) = self.failure() {
            return Err(Error::Unavailable(reason.to_string()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Unavailable("the store is closed".into()));
        }
        Ok(())
    }
}

/// The handle's own part: dropping the last handle stops the commit thread.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tx: Sender<Command>,
    commit_thread: Mutex<Option<JoinHandle<()>>>,
    /// The expiry sweeper: dropping the sender stops it.
    sweeper: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
    recovery: RecoveryInfo,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the commit thread (it finishes what is queued and syncs), then
        // wait for a running automatic checkpoint, so that once the last handle
        // is gone the log's directory lock is released and the store can be
        // reopened.
        // The sweeper first: it submits to the commit thread.
        if let Some((stop, t)) = lock(&self.sweeper).take() {
            drop(stop);
            let _ = t.join();
        }
        let (done, _) = oneshot::channel();
        let _ = self.tx.send(Command::Close { done });
        if let Some(t) = lock(&self.commit_thread).take() {
            let _ = t.join();
        }
        let auto = lock(&self.shared.auto_checkpoint).thread.take();
        if let Some(t) = auto {
            let _ = t.join();
        }
    }
}

/// The store: a cheap-to-clone handle, `Send + Sync`. See the crate docs.
#[derive(Debug, Clone)]
pub struct KeyValueStore {
    inner: Arc<Inner>,
}

/// Writes submitted through a hold are checked at once, as
/// [`KeyValueStore::submit_put_expiring`], [`KeyValueStore::submit_delete`]
/// and [`KeyValueStore::submit_txn`] check them, but reach the commit thread
/// only when the hold is released (or dropped), as one message, so that
/// they share one group commit and one sync. A server that has read
/// a pipeline of writes from a socket submits them through a hold and
/// releases it before it waits for anything: one sync for the pipeline,
/// where writes handed over as they are decoded wake the commit thread
/// with the first one alone. Order is kept: held writes are sent in
/// submission order, and a caller that mixes held and direct submissions
/// releases the hold first.
///
/// Nothing held is durable, or even queued, until the hold is released:
/// their [`Pending`]s resolve only after that.
pub struct Hold {
    store: KeyValueStore,
    held: Vec<Command>,
}

impl Hold {
    /// As [`KeyValueStore::submit_put_expiring`], sent on release.
    pub fn submit_put_expiring(
        &mut self,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<Pending<Lsn>> {
        let (command, pending) = self.store.prepare_put(key, value, deadline)?;
        self.held.push(command);
        Ok(pending)
    }

    /// As [`KeyValueStore::submit_delete`], sent on release.
    pub fn submit_delete(&mut self, key: &[u8]) -> Result<Pending<Option<Lsn>>> {
        let (command, pending) = self.store.prepare_delete(key)?;
        self.held.push(command);
        Ok(pending)
    }

    /// As [`KeyValueStore::submit_txn`], sent on release.
    pub fn submit_txn(&mut self, txn: Txn) -> Result<Pending<TxnOutcome>> {
        let (command, pending) = self.store.prepare_txn(txn)?;
        self.held.push(command);
        Ok(pending)
    }

    /// Whether writes are held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Hands every held write to the commit thread, in submission order,
    /// as one message: they join one batch. If the store has closed,
    /// their `Pending`s resolve to [`Error::Unavailable`].
    pub fn release(&mut self) {
        let command = match self.held.len() {
            0 => return,
            1 => self.held.pop(),
            _ => Some(Command::Group(std::mem::take(&mut self.held))),
        };
        if let Some(command) = command {
            // A closed store drops the command: its Pendings resolve to
            // Unavailable.
            let _ = self.store.send(command);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl KeyValueStore {
    /// Opens and recovers the store in `dir` (created if missing). Fails with
    /// [`Error::Wal`] wrapping `Locked` if another handle has it open.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        Self::open_with_vfs(dir, options, wal_core::StdFs::shared())
    }

    /// As [`KeyValueStore::open`], with every file operation (log and
    /// snapshots) going through `vfs`.
    pub fn open_with_vfs(
        dir: impl AsRef<Path>,
        options: StoreOptions,
        vfs: Arc<dyn Vfs>,
    ) -> Result<Self> {
        // RecoveryInfo::duration covers all of recovery, including the log's
        // own (Wal::open scans every segment).
        let started = Instant::now();
        options.validate()?;
        let dir = dir.as_ref();
        let snapshot_dir = dir.join("snapshots");
        vfs.create_dir_all(&snapshot_dir)
            .map_err(|e| Error::io("create snapshot directory", &snapshot_dir, e))?;
        // Opening the log first takes its directory lock, which then guards
        // the snapshot directory too. GroupCommit is the commit thread's job
        // (see `commit::log_options`): the log gets Always.
        let (wal_options, gather) = commit::log_options(&options.wal);
        let wal = Wal::open_with_vfs(dir.join("wal"), wal_options, Arc::clone(&vfs))?;
        // Make the entries "wal" and "snapshots" durable, and the store's own
        // directory in its parent (it may just have been created). Ancestors
        // further up are the operator's: they are expected to exist durably.
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("sync store directory", dir, e))?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if dir.file_name().is_some() {
            vfs.sync_dir(parent)
                .map_err(|e| Error::io("sync parent directory", parent, e))?;
        }

        let (state, mut recovery) = recovery::recover(&vfs, &snapshot_dir, &wal)?;
        recovery.duration = started.elapsed();
        tracing::info!(
            dir = %dir.display(),
            snapshot_seq = recovery.snapshot_seq,
            snapshot_entries = recovery.snapshot_entries,
            replayed = recovery.replayed,
            keys = state.len(),
            last_lsn = state.last_applied(),
            duration_ms = recovery.duration.as_secs_f64() * 1e3,
            "store recovered"
        );

        let shared = Arc::new(Shared {
            options,
            vfs,
            snapshot_dir,
            wal,
            state: RwLock::new(state),
            commit_lock: Mutex::new(()),
            checkpoints: Mutex::new(CheckpointState::default()),
            checkpoint_done: Condvar::new(),
            checkpoint_running: AtomicBool::new(false),
            auto_checkpoint: Mutex::new(AutoCheckpoint::default()),
            snapshots_taken: AtomicU64::new(0),
            checkpoint_micros_total: AtomicU64::new(0),
            last_checkpoint_micros: AtomicU64::new(0),
            checkpoints_failed: AtomicU64::new(0),
            checkpoints_joined: AtomicU64::new(0),
            expired_swept: AtomicU64::new(0),
            opened: started,
            failure: OnceLock::new(),
            disk_full: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let for_thread = Arc::clone(&shared);
        let commit_thread = std::thread::Builder::new()
            .name("kv-commit".into())
            .spawn(move || commit::run(for_thread, rx, gather))
            .map_err(|e| Error::io("start commit thread", dir, e))?;
        let sweeper = match shared.options.expiry_sweep_rate {
            0 => None,
            rate => Some(
                crate::sweep::start(Arc::clone(&shared), tx.clone(), rate)
                    .map_err(|e| Error::io("start expiry sweeper", dir, e))?,
            ),
        };
        Ok(KeyValueStore {
            inner: Arc::new(Inner {
                shared,
                tx,
                commit_thread: Mutex::new(Some(commit_thread)),
                sweeper: Mutex::new(sweeper),
                recovery,
            }),
        })
    }

    /// What recovery did at open.
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.inner.recovery
    }

    /// The largest key this store takes: a get of a longer key is refused
    /// like a put of one, rather than searched for.
    pub fn max_key_size(&self) -> usize {
        self.inner.shared.options.max_key_size
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.inner.shared.options.max_key_size;
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                size: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.inner
            .tx
            .send(cmd)
            .map_err(|_| Error::Unavailable("the store is closed".into()))
    }

    /// Submits a put. Invalid input ([`Error::EmptyKey`],
    /// [`Error::KeyTooLarge`], [`Error::ValueTooLarge`]) and a store that
    /// refuses writes ([`Error::Unavailable`]) fail here at once; otherwise
    /// the returned [`Pending`] resolves to the write's LSN once it is durable
    /// and applied.
    pub fn submit_put(&self, key: &[u8], value: &[u8]) -> Result<Pending<Lsn>> {
        self.submit_put_expiring(key, value, None)
    }

    /// [`submit_put`](KeyValueStore::submit_put) of a key that expires at
    /// `deadline` (ms since the Unix epoch; see [`crate::deadline_after`]),
    /// or never. A deadline past the year 9999 is
    /// [`Error::InvalidRequest`].
    pub fn submit_put_expiring(
        &self,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<Pending<Lsn>> {
        let (command, pending) = self.prepare_put(key, value, deadline)?;
        self.send(command)?;
        Ok(pending)
    }

    /// A put checked and made into its command, not yet sent.
    fn prepare_put(
        &self,
        key: &[u8],
        value: &[u8],
        deadline: Option<u64>,
    ) -> Result<(Command, Pending<Lsn>)> {
        self.check_key(key)?;
        self.check_value(value)?;
        if let Some(at) = deadline {
            crate::txn::check_deadline(at)?;
        }
        self.inner.shared.check_writable()?;
        // The copy into the map entry (and its allocation) happens here, in
        // the caller's thread, so that many callers do it in parallel; the
        // commit thread encodes the record from the entry into a buffer it
        // reuses, so that a queued put holds its value once.
        let (done, rx) = oneshot::channel();
        let command = Command::Put {
            // The seq is set by the commit thread, which assigns the LSN.
            entry: Entry::new(key, value, 0, deadline),
            done,
        };
        Ok((command, Pending::new(rx)))
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.inner.shared.options.max_value_size;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// Submits a transaction: its conditions are checked, and its writes
    /// decided, against the state at its point in the log (after every
    /// write submitted before it), by the commit thread; all its writes are
    /// then logged as one record and applied at one LSN, or none is. An
    /// unmet condition resolves to [`Error::ConditionFailed`] with the key's
    /// current version, a counter on a non-integer or one that would
    /// overflow to [`Error::InvalidRequest`]; nothing is written then. A
    /// transaction that changes nothing writes nothing (its seq is 0).
    /// Invalid input fails here at once: no writes, an empty or too long
    /// key, a value over the maximum, a deadline past the year 9999, a
    /// record over the log's maximum ([`Error::BatchTooLarge`]).
    pub fn submit_txn(&self, txn: Txn) -> Result<Pending<TxnOutcome>> {
        let (command, pending) = self.prepare_txn(txn)?;
        self.send(command)?;
        Ok(pending)
    }

    /// A transaction checked and made into its command, not yet sent.
    fn prepare_txn(&self, txn: Txn) -> Result<(Command, Pending<TxnOutcome>)> {
        if txn.writes.is_empty() {
            return Err(Error::InvalidRequest(
                "a batch needs at least one write".into(),
            ));
        }
        for write in &txn.writes {
            self.check_key(write.key())?;
            match write {
                Write::Put { value, expiry, .. } => {
                    self.check_value(value)?;
                    if let Expiry::At(at) = expiry {
                        crate::txn::check_deadline(*at)?;
                    }
                }
                Write::SetDeadline { at: Some(at), .. } => {
                    crate::txn::check_deadline(*at)?;
                }
                _ => {}
            }
        }
        for (key, condition) in &txn.conditions {
            self.check_key(key)?;
            if let Condition::ValueEquals(value) = condition {
                self.check_value(value)?;
            }
        }
        let size = commit::txn_len(&txn);
        let max = self.inner.shared.options.wal.max_record_size as usize;
        if size > max {
            return Err(Error::BatchTooLarge { size, max });
        }
        self.inner.shared.check_writable()?;
        let (done, rx) = oneshot::channel();
        Ok((Command::Txn { txn, done }, Pending::new(rx)))
    }

    /// A [`Hold`] on this store: writes submitted through it reach the
    /// commit thread together, when it is released.
    pub fn hold(&self) -> Hold {
        Hold {
            store: self.clone(),
            held: Vec::new(),
        }
    }

    /// Blocking [`submit_txn`](KeyValueStore::submit_txn).
    pub fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        self.submit_txn(txn)?.wait()
    }

    /// Submits the removal of expired keys (the sweeper's batch).
    pub(crate) fn submit_sweep(
        tx: &Sender<Command>,
        keys: Vec<(Box<[u8]>, Lsn)>,
    ) -> Result<Pending<u64>> {
        let (done, rx) = oneshot::channel();
        tx.send(Command::Sweep { keys, done })
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        Ok(Pending::new(rx))
    }

    /// Submits a delete; resolves to `Some(lsn)` if the key existed, `None`
    /// (nothing written) if not. Errors as for
    /// [`submit_put`](KeyValueStore::submit_put).
    pub fn submit_delete(&self, key: &[u8]) -> Result<Pending<Option<Lsn>>> {
        let (command, pending) = self.prepare_delete(key)?;
        self.send(command)?;
        Ok(pending)
    }

    /// A delete checked and made into its command, not yet sent.
    fn prepare_delete(&self, key: &[u8]) -> Result<(Command, Pending<Option<Lsn>>)> {
        self.check_key(key)?;
        self.inner.shared.check_writable()?;
        let (done, rx) = oneshot::channel();
        let command = Command::Delete {
            key: key.into(),
            done,
        };
        Ok((command, Pending::new(rx)))
    }

    /// Blocking put: [`submit_put`](KeyValueStore::submit_put) then
    /// [`Pending::wait`] (so not for async threads).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<Lsn> {
        self.submit_put(key, value)?.wait()
    }

    /// Blocking delete: [`submit_delete`](KeyValueStore::submit_delete) then
    /// [`Pending::wait`] (so not for async threads).
    pub fn delete(&self, key: &[u8]) -> Result<Option<Lsn>> {
        self.submit_delete(key)?.wait()
    }

    /// The value of `key`, if present. Sees every acknowledged write and
    /// nothing that is not yet durable. Never blocks on I/O.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let now = crate::record::now_ms();
        read(&self.inner.shared.state)
            .get(key)
            .filter(|e| !e.expired_at(now))
            .map(|e| e.value().to_vec())
    }

    /// The value of `key` with its version and deadline, if present (and
    /// not expired).
    pub fn get_versioned(&self, key: &[u8]) -> Option<Versioned> {
        crate::scan::get(
            &read(&self.inner.shared.state),
            key,
            crate::record::now_ms(),
        )
    }

    /// [`get_versioned`](KeyValueStore::get_versioned) of each key, all as
    /// of one moment (under one read lock).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Versioned>> {
        let now = crate::record::now_ms();
        let state = read(&self.inner.shared.state);
        keys.iter()
            .map(|k| crate::scan::get(&state, k.as_ref(), now))
            .collect()
    }

    /// One page of a scan of `range` after `after` (see [`ScanPage`]): at
    /// most `limit` keys (0: no limit) and about `max_bytes` of keys and
    /// values (each counted with [`crate::SCAN_ITEM_OVERHEAD`]), with their
    /// values if `values`. Expired keys are left out. Never blocks on I/O;
    /// holds the map's read lock for one page.
    pub fn scan(
        &self,
        range: &ScanRange,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
        values: bool,
    ) -> ScanPage {
        crate::scan::scan(
            &read(&self.inner.shared.state),
            range,
            after,
            limit,
            max_bytes,
            values,
            crate::record::now_ms(),
        )
    }

    /// Keys starting with `prefix`, ascending, at most `limit` (0 = no
    /// limit). Never blocks on I/O.
    pub fn keys(&self, prefix: &[u8], limit: usize) -> KeysPage {
        self.keys_within(prefix, limit, usize::MAX)
    }

    /// As [`KeyValueStore::keys`], and also at most `max_bytes` of keys,
    /// counting each key as its length plus [`KEY_LISTING_OVERHEAD`]: a
    /// server passes its maximum frame size, so that a listing always fits
    /// in one response (`truncated` then says that more keys match), and
    /// the listing is never larger than that.
    ///
    /// The keys are copied in chunks of a thousand or so, taking the map's
    /// read lock once per chunk and resuming after the last key copied, so
    /// that the commit thread, which needs the write lock to apply a batch,
    /// never waits for a whole listing. So a listing is not a snapshot: a
    /// key written or deleted while it runs may or may not be in it, but
    /// every key present throughout is, once, in order.
    pub fn keys_within(&self, prefix: &[u8], limit: usize, max_bytes: usize) -> KeysPage {
        let mut listing = KeyListing::new(prefix, limit, max_bytes);
        while !listing.is_done() {
            listing.step(&read(&self.inner.shared.state));
        }
        listing.into_page()
    }

    /// The state, read-locked (for exporting it whole).
    pub(crate) fn state(&self) -> RwLockReadGuard<'_, State> {
        read(&self.inner.shared.state)
    }

    /// Writes a snapshot and drops the WAL it covers; returns the LSN it
    /// covers. Writes keep being committed meanwhile. If another checkpoint
    /// is running (requested or automatic), does not start one: waits for
    /// it and returns its outcome, as every caller that waited gets (a
    /// failure as [`Error::Shared`]). Blocking (file I/O and fsync): call it
    /// from a thread that may block.
    pub fn checkpoint(&self) -> Result<Lsn> {
        checkpoint::run(&self.inner.shared)
    }

    /// One piece of a backup (`kv-client backup`): with `seq` `None`, takes
    /// a checkpoint and starts sending the snapshot it wrote; then, with
    /// the `seq` answered, reads on at `offset`, up to `max_len` bytes. A
    /// later checkpoint that replaces the snapshot meanwhile restarts the
    /// copy with the new one (see [`crate::inspect::read_backup_chunk`]).
    /// Blocking (a checkpoint, file reads).
    pub fn backup_chunk(
        &self,
        seq: Option<Lsn>,
        offset: u64,
        max_len: usize,
    ) -> Result<crate::inspect::BackupChunk> {
        let shared = &self.inner.shared;
        if seq.is_none() {
            // Every write acknowledged before this call is applied, so at or
            // below `wanted`. A checkpoint request that finds one running
            // shares it, and that one may have begun before those writes:
            // then take the next, which begins after this call.
            let wanted = read(&shared.state).last_applied();
            if self.checkpoint()? < wanted {
                self.checkpoint()?;
            }
        }
        // A checkpoint may delete the newest snapshot between the listing
        // and the open; the one that replaced it is then listed next time.
        let mut tries = 0;
        loop {
            let newest = crate::snapshot::list(&*shared.vfs, &shared.snapshot_dir)?
                .into_iter()
                .filter_map(|k| match k {
                    crate::snapshot::FileKind::Snapshot(s) => Some(s),
                    crate::snapshot::FileKind::Temp(_) => None,
                })
                .max()
                .ok_or_else(|| Error::Unavailable("no snapshot to back up".to_string()))?;
            let path = shared.snapshot_dir.join(crate::snapshot::file_name(newest));
            match crate::inspect::read_backup_chunk_with(&*shared.vfs, &path, seq, offset, max_len)
            {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        let shared = &self.inner.shared;
        let (keys, bytes, last_lsn, expiring_keys) = {
            let state = read(&shared.state);
            (
                state.len(),
                state.bytes(),
                state.last_applied(),
                state.expiring(),
            )
        };
        Stats {
            keys,
            bytes,
            last_lsn,
            wal_bytes: shared.wal.disk_size(),
            snapshots_taken: shared.snapshots_taken.load(Ordering::Relaxed),
            checkpoint_duration_total: Duration::from_micros(
                shared.checkpoint_micros_total.load(Ordering::Relaxed),
            ),
            last_checkpoint_duration: Duration::from_micros(
                shared.last_checkpoint_micros.load(Ordering::Relaxed),
            ),
            wal: shared.wal.stats(),
            checkpoints_failed: shared.checkpoints_failed.load(Ordering::Relaxed),
            checkpoints_joined: shared.checkpoints_joined.load(Ordering::Relaxed),
            expiring_keys,
            expired_swept: shared.expired_swept.load(Ordering::Relaxed),
            uptime: shared.opened.elapsed(),
        }
    }

    /// Why the store refuses writes for good, if its log has failed
    /// (fail-stop after a failed write or fdatasync): the first failure's
    /// reason. `None` while the log works, a full disk included (that is
    /// not fail-stop).
    pub fn failure(&self) -> Option<&str> {
        self.inner.shared.failure()
    }

    /// Stops accepting writes, lets every write submitted before it commit,
    /// and makes every acknowledged write durable (the point of calling it
    /// under a relaxed sync policy). Reads keep working. Later writes fail
    /// with [`Error::Unavailable`]. Blocking.
    ///
    /// Fails with [`Error::LogFailed`] if the log had failed (see
    /// [`KeyValueStore::failure`]): then nothing could be synced, and under
    /// a relaxed sync policy writes acknowledged since the last successful
    /// sync may not be durable. With a failed sync of the log, the kernel's
    /// page cache may also hold log data that never reached the disk; see
    /// the README on what to do then.
    pub fn close(&self) -> Result<()> {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        let (done, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close { done }).is_ok()
            && let Ok(result) = rx.blocking_recv()
        {
            return result;
        }
        // The commit thread has already stopped (an earlier close): sync here.
        if let Some(reason) = shared.failure() {
            return Err(Error::LogFailed(reason.to_string()));
        }
        shared.wal.sync().map_err(Error::from)
    }
}
