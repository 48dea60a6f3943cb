//! The commit pipeline: one thread that turns submitted writes into durable,
//! applied, acknowledged ones.
//!
//! Callers ([`KeyValueStore::submit_put`](crate::KeyValueStore::submit_put)
//! and `submit_delete`) validate their write and build its map entry in their
//! own thread, and queue it on a channel. The commit thread gathers a batch
//! (below), and for that whole batch:
//!
//! 1. decides which deletes write anything (a delete of a key that is absent,
//!    after the earlier writes of the same batch, writes nothing);
//! 2. encodes the records with their LSNs, which it can predict because it
//!    is the log's only appender, into one reused buffer, and appends the
//!    batch with one `Wal::append_batch`: under
//!    `SyncPolicy::Always` one write and one fdatasync for all writers queued
//!    meanwhile, which is group commit across connections;
//! 3. applies each record of the batch to the map in LSN order, under the
//!    write lock, with [`State::apply`](crate::state::State::apply): the
//!    application of a durable log operation that replay shares (it applies
//!    in bulk, with the same result; see the `state` module);
//! 4. completes the callers' [`Pending`]s.
//!
//! The channel itself is unbounded: a caller must bound what it queues (the
//! server charges every request against its in-flight byte budget until the
//! request is answered).
//!
//! So the log comes first, then memory, then the acknowledgement, and a
//! reader never sees a write that a crash could take back. Steps 2 and 3 run
//! under the commit lock, which a checkpoint takes to find a point where the
//! log and the map agree.
//!
//! # Gathering a batch, and `SyncPolicy::GroupCommit`
//!
//! The thread blocks until a write arrives, then takes what else is queued,
//! up to [`MAX_BATCH_OPS`] writes or [`MAX_BATCH_BYTES`] of records. Under
//! every policy but one it takes only what is already queued: no timer, so
//! a lone writer is committed at once, and writers that arrive during a
//! sync form the next batch.
//!
//! `SyncPolicy::GroupCommit { max_delay }` is carried out here, where the
//! writers queue, and not by the log: since this thread is the log's only
//! appender, a log-level group leader waiting `max_delay` for company would
//! always wait alone, adding latency without ever growing the group. So the
//! store opens the log with `SyncPolicy::Always` ([`log_options`]), and
//! after receiving the first write of a batch this thread keeps receiving
//! until `max_delay` after that first arrival, or until the batch is full,
//! and commits everything gathered with one append and one fdatasync. Each
//! write may wait up to `max_delay` longer; under load, syncs are fewer and
//! larger.
//!
//! # When the append fails
//!
//! - A full disk (`wal_core::Error::DiskFull`, on a write or on creating a
//!   segment) is survivable: wal-core wrote nothing of the batch and keeps
//!   working, so the batch's writes fail with [`Error::DiskFull`], nothing is
//!   applied, and the next batch is appended as usual (it succeeds once space
//!   is freed).
//! - Any other failure of the append (a failed fdatasync or write) is
//!   fail-stop: the batch's records may or may not have reached the disk, so
//!   its writes fail with [`Error::OutcomeUnknown`] (never applied, never
//!   acknowledged), the store records the reason, and every later write
//!   fails with [`Error::Unavailable`].
//! - A log already in fail-stop (say a checkpoint's sync failed) refuses the
//!   append before writing anything: [`Error::Unavailable`], and the store
//!   records the reason.
//!
//! Reads keep working on the state that was acknowledged throughout.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;
use wal_core::{Lsn, SyncPolicy, WalOptions};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::record;
use crate::state::{Entry, Op, State};
use crate::store::{Shared, lock, read, write};
use crate::txn::{self, Decided, Overlay, Txn, TxnOutcome, WriteResult};

/// Most writes in one batch.
const MAX_BATCH_OPS: usize = 4096;
/// Most record bytes in one batch (a batch may exceed it by one record).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// The options to open the log with, for the store's `wal` options, and how
/// long the commit thread gathers a batch after its first write (`None`:
/// it takes only what is queued). `SyncPolicy::GroupCommit { max_delay }`
/// becomes `SyncPolicy::Always` plus a gathering window of `max_delay`; see
/// the module docs for why.
pub(crate) fn log_options(wal: &WalOptions) -> (WalOptions, Option<Duration>) {
    match wal.sync_policy {
        SyncPolicy::GroupCommit { max_delay } => (
            WalOptions {
                sync_policy: SyncPolicy::Always,
                ..wal.clone()
            },
            Some(max_delay).filter(|d| !d.is_zero()),
        ),
        SyncPolicy::Always | SyncPolicy::Interval { .. } | SyncPolicy::Never => (wal.clone(), None),
    }
}

/// A message to the commit thread.
///
/// A put carries its value once, in the map entry it will become; the
/// commit thread encodes the log record from it into a buffer it reuses
/// ([`record::encode_with_seq`]). A queued put holding a ready-made record
/// as well would hold its value twice, and what is queued is what a flood
/// of large puts makes grow.
pub(crate) enum Command {
    /// Set a key.
    Put {
        /// The map entry to log and apply.
        entry: Entry,
        /// Completion.
        done: oneshot::Sender<Result<Lsn>>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Box<[u8]>,
        /// Completion.
        done: oneshot::Sender<Result<Option<Lsn>>>,
    },
    /// A transaction, decided here against the state plus the writes
    /// before it in the batch ([`txn::decide`]).
    Txn {
        /// What to decide.
        txn: Txn,
        /// Completion.
        done: oneshot::Sender<Result<TxnOutcome>>,
    },
    /// Remove these keys if they still have these versions and have
    /// expired (the sweeper's batch); resolves to how many were removed.
    Sweep {
        /// Keys and the versions they had when found expired.
        keys: Vec<(Box<[u8]>, Lsn)>,
        /// Completion.
        done: oneshot::Sender<Result<u64>>,
    },
    /// Commands sent as one message (a [`crate::Hold`]'s), so that the
    /// commit thread takes them into one batch: `run` unpacks them, in
    /// order; a group is never in a batch itself.
    Group(Vec<Command>),
    /// Finish what was queued before, sync the log, and stop.
    Close {
        /// Completion.
        done: oneshot::Sender<Result<()>>,
    },
}

impl Command {
    /// About the bytes of its log record, to bound a batch.
    fn record_len(&self) -> usize {
        match self {
            Command::Put { entry, .. } => entry.payload_len() as usize,
            Command::Delete { key, .. } => key.len(),
            Command::Txn { txn, .. } => txn_len(txn),
            Command::Sweep { keys, .. } => keys.iter().map(|(k, _)| k.len() + 8).sum(),
            Command::Group(commands) => commands.iter().map(Command::record_len).sum(),
            Command::Close { .. } => 0,
        }
    }

    /// Completes the command with the error `error` makes.
    fn fail(self, error: impl Fn() -> Error) {
        self.fail_with(&error);
    }

    fn fail_with(self, error: &dyn Fn() -> Error) {
        // A caller that dropped its Pending no longer waits: ignore send errors.
        match self {
            Command::Put { done, .. } => {
                let _ = done.send(Err(error()));
            }
            Command::Delete { done, .. } => {
                let _ = done.send(Err(error()));
            }
            Command::Txn { done, .. } => {
                let _ = done.send(Err(error()));
            }
            Command::Sweep { done, .. } => {
                let _ = done.send(Err(error()));
            }
            Command::Group(commands) => {
                for command in commands {
                    command.fail_with(error);
                }
            }
            Command::Close { done } => {
                let _ = done.send(Err(error()));
            }
        }
    }
}

/// About the bytes a transaction's record takes: its keys and values (and
/// those of its conditions) plus the per-write overhead.
pub(crate) fn txn_len(txn: &Txn) -> usize {
    let writes: usize = txn
        .writes
        .iter()
        .map(|w| {
            w.key().len()
                + record::TXN_WRITE_OVERHEAD
                + match w {
                    crate::txn::Write::Put { value, .. } => value.len(),
                    _ => 0,
                }
        })
        .sum();
    let conditions: usize = txn
        .conditions
        .iter()
        .map(|(k, c)| {
            k.len()
                + record::TXN_WRITE_OVERHEAD
                + match c {
                    crate::txn::Condition::ValueEquals(v) => v.len(),
                    _ => 0,
                }
        })
        .sum();
    writes + conditions + record::HEADROOM + 16
}

/// A write submitted to the commit pipeline; resolves once it is durable (as
/// the sync policy promises) and applied. Submission order on one thread is
/// commit order.
///
/// Await it from async code: the commit thread completes it, so no runtime
/// worker ever blocks on an fsync. [`Pending::wait`] is for threads that may
/// block. Dropping a `Pending` does not cancel the write; it only stops
/// waiting for it.
#[must_use = "a write is only known to be durable once its Pending resolves"]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

fn closed_error() -> Error {
    Error::Unavailable("the store closed before the write was committed".into())
}

impl<T> Pending<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<T>>) -> Self {
        Pending { rx }
    }

    /// Blocks the current thread until the write is durable and applied.
    ///
    /// # Panics
    ///
    /// If called from within an asynchronous execution context (a tokio
    /// runtime's thread): blocking there would stall other tasks. Await the
    /// `Pending` instead, or call this from `spawn_blocking`.
    pub fn wait(self) -> Result<T> {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(closed_error()))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(closed_error())))
    }
}

/// The commit thread's body: runs until a `Close` arrives or every sender is
/// gone (the last store handle dropped), then syncs the log. `gather` is the
/// window of `SyncPolicy::GroupCommit` ([`log_options`]).
pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<Command>, gather: Option<Duration>) {
    let mut batch: Vec<Command> = Vec::with_capacity(MAX_BATCH_OPS);
    let mut records = RecordBuffer::default();
    let mut close = None;
    while let Ok(first) = rx.recv() {
        // `Some(None)`: a window too long to represent ends only when the
        // batch is full.
        let deadline = gather.map(|window| Instant::now().checked_add(window));
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Close { done } => {
                    close = Some(done);
                    break;
                }
                // A group joins the batch whole (it may take it past its
                // bounds: a hold is bounded by its connection's budget).
                Command::Group(commands) => {
                    for cmd in commands {
                        bytes += cmd.record_len();
                        batch.push(cmd);
                    }
                }
                cmd => {
                    bytes += cmd.record_len();
                    batch.push(cmd);
                }
            }
            if batch.len() >= MAX_BATCH_OPS || bytes >= MAX_BATCH_BYTES {
                break;
            }
            next = match (rx.try_recv(), deadline) {
                (Ok(cmd), _) => Some(cmd),
                // Disconnected, or empty with no window: commit what we have.
                (Err(TryRecvError::Disconnected), _) | (Err(TryRecvError::Empty), None) => None,
                // Empty within a window: wait for more until it closes.
                (Err(TryRecvError::Empty), Some(Some(deadline))) => rx
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok(),
                (Err(TryRecvError::Empty), Some(None)) => rx.recv().ok(),
            };
        }
        if !batch.is_empty() {
            commit(&shared, &mut batch, &mut records);
            checkpoint::maybe_start_auto(&shared);
        }
        if close.is_some() {
            break;
        }
    }
    // Commands still queued are dropped with the receiver; their Pendings then
    // resolve to Unavailable. Make what was acknowledged durable (it already
    // is under SyncPolicy::Always; under relaxed policies this is the point),
    // or, if the log has failed, say so: nothing can be made durable then.
    let synced = match shared.failure() {
        Some(reason) => Err(Error::LogFailed(reason.to_string())),
        None => shared.wal.sync().map_err(|e| {
            tracing::warn!(error = %e, "syncing the log at close failed");
            Error::from(e)
        }),
    };
    if let Some(done) = close {
        let _ = done.send(synced);
    }
}

/// How an append failed, and so what its writes are told.
enum AppendFailure {
    /// Nothing was written (a full disk): the writes fail, the log goes on.
    DiskFull(String),
    /// The log was already in fail-stop (a failed sync elsewhere, such as a
    /// checkpoint's): nothing of this batch was written.
    Refused(String),
    /// The batch's write or fdatasync failed (or the log misbehaved after
    /// writing): its records may be on disk or not.
    Unknown(String),
}

impl AppendFailure {
    fn of(e: wal_core::Error) -> AppendFailure {
        match e {
            wal_core::Error::DiskFull { .. } => AppendFailure::DiskFull(e.to_string()),
            wal_core::Error::Poisoned { .. } => AppendFailure::Refused(e.to_string()),
            other => AppendFailure::Unknown(format!("write-ahead log failed: {other}")),
        }
    }
}

/// Fails every command of `batch` as `failure` says; every failure but a
/// full disk also makes the store refuse all later writes.
fn fail_batch(shared: &Shared, batch: &mut Vec<Command>, failure: AppendFailure) {
    match failure {
        AppendFailure::DiskFull(reason) => {
            // Logged when the disk fills, not once per batch while it is full.
            if !shared.disk_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    %reason,
                    "the disk is full: writes fail (nothing of them is written) until space \
                     is freed; reads go on"
                );
            }
            for cmd in batch.drain(..) {
                cmd.fail(|| Error::DiskFull(reason.clone()));
            }
        }
        AppendFailure::Refused(reason) => {
            let reason = shared.set_failure(reason);
            for cmd in batch.drain(..) {
                cmd.fail(|| Error::Unavailable(reason.to_string()));
            }
        }
        AppendFailure::Unknown(reason) => {
            tracing::error!(
                %reason,
                "the store refuses all further writes; the failed batch may or may not be on disk"
            );
            shared.set_failure(reason.clone());
            for cmd in batch.drain(..) {
                cmd.fail(|| Error::OutcomeUnknown(reason.clone()));
            }
        }
    }
}

/// The log records of one batch, encoded into one buffer that is kept from
/// batch to batch (given back when one large batch made it grow past
/// [`MAX_BATCH_BYTES`] twice over), so that encoding allocates nothing.
#[derive(Default)]
struct RecordBuffer {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RecordBuffer {
    /// Encodes the record of each command of `batch` that writes (its plan
    /// says at which LSN), in order, stamped `ts`; returns them as slices
    /// for `append_batch`.
    fn encode(&mut self, batch: &[Command], plans: &[Plan], ts: u64) -> Vec<&[u8]> {
        if self.bytes.capacity() > 2 * MAX_BATCH_BYTES {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.ends.clear();
        for (cmd, plan) in batch.iter().zip(plans) {
            match (cmd, plan) {
                (Command::Put { entry, .. }, Plan::At(Some(lsn))) => record::encode_with_seq(
                    &mut self.bytes,
                    *lsn,
                    record::Write::Put(entry.key(), entry.value(), entry.deadline()),
                    ts,
                ),
                (Command::Delete { key, .. }, Plan::At(Some(lsn))) => {
                    record::encode_with_seq(&mut self.bytes, *lsn, record::Write::Delete(key), ts)
                }
                (
                    _,
                    Plan::Decided {
                        lsn: Some(lsn),
                        writes,
                        ..
                    },
                ) => match &writes[..] {
                    // One write: the plain record, which replay decodes
                    // fastest.
                    [
                        Decided::Put {
                            key,
                            value,
                            deadline,
                        },
                    ] => record::encode_with_seq(
                        &mut self.bytes,
                        *lsn,
                        record::Write::Put(key, value, *deadline),
                        ts,
                    ),
                    [Decided::Delete { key }] => record::encode_with_seq(
                        &mut self.bytes,
                        *lsn,
                        record::Write::Delete(key),
                        ts,
                    ),
                    writes => {
                        record::encode_txn(&mut self.bytes, *lsn, txn::decided_proto(writes), ts)
                    }
                },
                _ => continue,
            }
            self.ends.push(self.bytes.len());
        }
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let record = &self.bytes[start..end];
                start = end;
                record
            })
            .collect()
    }
}

/// What the commit thread decided for one command of a batch.
enum Plan {
    /// A put or delete: its record's LSN, or `None` when it writes nothing
    /// (a delete of a missing key). For a delete, `existed` says whether the
    /// key was there to the caller (not expired).
    At(Option<Lsn>),
    /// A transaction or sweep, decided: its writes (written as one record
    /// at `lsn`, or nothing when there are none) and its results.
    Decided {
        lsn: Option<Lsn>,
        writes: Vec<Decided>,
        results: Vec<WriteResult>,
    },
    /// A transaction that does not apply: why (nothing written).
    Refused(Error),
}

/// What one command of a batch turned into.
enum Done {
    Put(oneshot::Sender<Result<Lsn>>, Lsn),
    Delete(oneshot::Sender<Result<Option<Lsn>>>, Option<Lsn>),
    Txn(oneshot::Sender<Result<TxnOutcome>>, Result<TxnOutcome>),
    Sweep(oneshot::Sender<Result<u64>>, u64),
}

/// Decides every command of `batch` against `state` (and the commands
/// before it), assigning LSNs from `first`; returns the plans, whether each
/// delete's key existed, and the next LSN.
fn plan(state: &State, batch: &[Command], first: Lsn, now: u64) -> (Vec<Plan>, Vec<bool>, Lsn) {
    let mut plans = Vec::with_capacity(batch.len());
    let mut existed = Vec::new();
    let mut next = first;
    let take = |writes: bool, next: &mut Lsn| {
        writes.then(|| {
            *next += 1;
            *next - 1
        })
    };
    if batch
        .iter()
        .all(|c| matches!(c, Command::Put { .. } | Command::Close { .. }))
    {
        // Only puts: each writes, and none needs the map.
        for cmd in batch {
            plans.push(Plan::At(take(
                matches!(cmd, Command::Put { .. }),
                &mut next,
            )));
        }
        return (plans, existed, next);
    }
    let mut view = Overlay::new(state);
    for cmd in batch {
        plans.push(match cmd {
            Command::Put { entry, .. } => {
                let lsn = take(true, &mut next);
                view.record_put(entry, next - 1);
                Plan::At(lsn)
            }
            Command::Delete { key, .. } => {
                // A key that expired but is still in the map is removed
                // too (that frees its memory), though to the caller it did
                // not exist.
                existed.push(view.is_live(key, now));
                let lsn = take(view.contains(key), &mut next);
                if lsn.is_some() {
                    view.record_delete(key);
                }
                Plan::At(lsn)
            }
            Command::Txn { txn, .. } => match txn::decide(&mut view, txn, now, next) {
                Ok((writes, results)) => Plan::Decided {
                    lsn: take(!writes.is_empty(), &mut next),
                    writes,
                    results,
                },
                Err(e) => Plan::Refused(e),
            },
            Command::Sweep { keys, .. } => {
                let mut writes = Vec::new();
                for (key, seq) in keys {
                    let still = view
                        .raw(key)
                        .is_some_and(|c| c.seq == *seq && c.deadline.is_some_and(|d| d <= now));
                    if still {
                        let write = Decided::Delete {
                            key: Bytes::copy_from_slice(key),
                        };
                        view.record(&write, next);
                        writes.push(write);
                    }
                }
                Plan::Decided {
                    lsn: take(!writes.is_empty(), &mut next),
                    writes,
                    results: Vec::new(),
                }
            }
            // `run` unpacks groups: none is in a batch.
            Command::Group(_) | Command::Close { .. } => Plan::At(None),
        });
    }
    (plans, existed, next)
}

fn commit(shared: &Shared, batch: &mut Vec<Command>, records: &mut RecordBuffer) {
    if let Some(reason) = shared.failure() {
        for cmd in batch.drain(..) {
            cmd.fail(|| Error::Unavailable(reason.to_string()));
        }
        return;
    }
    let commit_guard = lock(&shared.commit_lock);
    let first = shared.wal.next_lsn();

    // Which commands write, and at which LSN, decided against the map and
    // the commands before them in the batch. The clock that expiry is
    // judged by never goes back (see `txn`), and it is the records' stamp.
    let (plans, existed, next, now) = {
        let state = read(&shared.state);
        let now = state.clock_for(record::now_ms());
        let (plans, existed, next) = plan(&state, batch, first, now);
        (plans, existed, next, now)
    };

    if next > first {
        let records = records.encode(batch, &plans, now);
        let appended = shared.wal.append_batch(&records);
        drop(records);
        let failure = match appended {
            Ok(range) if range == (first..next) => None,
            // Written, so perhaps durable, but not where the entries' `seq`
            // says: a bug, and fail-stop.
            Ok(range) => Some(AppendFailure::Unknown(format!(
                "internal error: the log assigned LSNs {range:?}, the store expected {:?}",
                first..next
            ))),
            Err(e) => Some(AppendFailure::of(e)),
        };
        if let Some(failure) = failure {
            drop(commit_guard);
            fail_batch(shared, batch, failure);
            return;
        }
        if shared.disk_full.swap(false, Ordering::Relaxed) {
            tracing::info!("the log has room again: writes are being accepted");
        }
    }

    // Durable: apply in LSN order, then acknowledge.
    let mut done = Vec::with_capacity(batch.len());
    let mut swept = 0;
    {
        let mut state = write(&shared.state);
        state.advance_clock(now);
        let mut existed = existed.into_iter();
        for (cmd, plan) in batch.drain(..).zip(plans) {
            match (cmd, plan) {
                (
                    Command::Put {
                        mut entry,
                        done: tx,
                    },
                    Plan::At(Some(lsn)),
                ) => {
                    entry.set_seq(lsn);
                    state.apply(Op::Put(entry), lsn);
                    done.push(Done::Put(tx, lsn));
                }
                (Command::Delete { key, done: tx }, Plan::At(lsn)) => {
                    if let Some(lsn) = lsn {
                        state.apply(Op::Delete(&key), lsn);
                    }
                    let existed = existed.next().unwrap_or(false);
                    done.push(Done::Delete(tx, lsn.filter(|_| existed)));
                }
                (
                    Command::Txn { done: tx, .. },
                    Plan::Decided {
                        lsn,
                        writes,
                        results,
                    },
                ) => {
                    if let Some(lsn) = lsn {
                        let changes = writes.iter().map(|w| w.change(lsn)).collect();
                        state.apply(Op::Batch(changes), lsn);
                    }
                    let seq = lsn.unwrap_or(0);
                    done.push(Done::Txn(tx, Ok(TxnOutcome { seq, results })));
                }
                (Command::Txn { done: tx, .. }, Plan::Refused(e)) => {
                    done.push(Done::Txn(tx, Err(e)));
                }
                (Command::Sweep { done: tx, .. }, Plan::Decided { lsn, writes, .. }) => {
                    if let Some(lsn) = lsn {
                        let changes = writes.iter().map(|w| w.change(lsn)).collect();
                        state.apply(Op::Batch(changes), lsn);
                    }
                    swept += writes.len() as u64;
                    done.push(Done::Sweep(tx, writes.len() as u64));
                }
                (Command::Close { done: tx }, _) => {
                    let _ = tx.send(Ok(()));
                }
                // Every command has the plan `plan` made for its kind; a
                // mismatch would be a bug, and dropping the sender fails
                // the write as unavailable rather than acknowledge it.
                _ => {}
            }
        }
    }
    drop(commit_guard);
    if swept > 0 {
        shared.expired_swept.fetch_add(swept, Ordering::Relaxed);
    }
    for d in done {
        match d {
            Done::Put(tx, lsn) => {
                let _ = tx.send(Ok(lsn));
            }
            Done::Delete(tx, lsn) => {
                let _ = tx.send(Ok(lsn));
            }
            Done::Txn(tx, outcome) => {
                let _ = tx.send(outcome);
            }
            Done::Sweep(tx, n) => {
                let _ = tx.send(Ok(n));
            }
        }
    }
}
