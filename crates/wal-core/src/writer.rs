//! Appending: group commit (leader/follower), rotation, fail-stop, and the
//! operations that must be ordered with appends (sync, rotate,
//! `truncate_after`).
//!
//! Appenders encode their records into one shared buffer under the state
//! mutex and take their LSNs there. Whoever then finds no leader at work
//! becomes the leader: it takes the queued bytes up to the next segment
//! rotation, writes them with one positional write, syncs once if the
//! policy asks for it, publishes how far the log is written (and synced)
//! and wakes everyone whose records it wrote. A group never spans a
//! rotation, so a group that fails for lack of space has written nothing
//! anyone was told about. A lone appender leads its own group at once:
//! there is no timer on its path.
//!
//! Every operation that must reach the file (append, sync, rotate) is a
//! "ticket" in this queue, so they are ordered with the appends around them
//! and only the leader ever touches the active segment.
//!
//! Waking: an appender that must wait registers its thread, ticket and an
//! outcome slot in the state and parks. A finishing leader fills the slots
//! of the waiters it completed, first wakes one still-pending waiter to
//! lead the next group, and only then unparks the completed ones, outside
//! the state mutex. A completed waiter reads its slot and returns without
//! touching the state mutex, and unparks one more of those still asleep, so
//! a large group is woken from every core rather than by the leader's
//! syscalls one after the other.
//!
//! Panics: the leader's work runs under a guard that, if the leader unwinds
//! (a panicking [`Vfs`], a bug), clears the leadership, poisons the log and
//! wakes every waiter, so nothing stays parked behind a dead leader.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::{self, FLAG_BATCH_CONTINUES, SEGMENT_HEADER_LEN};
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::{self, SegmentRef, Truncations, WalIter};
use crate::segment::{self, SegmentMeta};
use crate::stats::{StatsCounters, WalStats};
use crate::vfs::{DirLock, Vfs, VfsFile};
use crate::{Lsn, Record, RecoveryReport};

/// A GroupCommit leader stops waiting for joiners once this much is queued.
const GROUP_COMMIT_FULL: usize = 1 << 20;

/// Locks a mutex, ignoring std's poisoning: every critical section below
/// leaves the state consistent before anything that can panic, and a panic
/// on the leader's path poisons the log itself (see [`LeaderGuard`]).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A point in the queued bytes where a new segment starts.
#[derive(Debug, Clone, Copy)]
struct PendingCut {
    /// Offset in the queued bytes.
    at: usize,
    /// Queued records before it.
    records: usize,
    /// Every ticket up to this one has its records before the cut.
    tickets_before: u64,
    /// First LSN of the new segment.
    first_lsn: Lsn,
}

/// How a parked appender learns what happened to its ticket.
#[derive(Debug, Default)]
struct Outcome {
    /// 0 while pending, then [`DONE`] or [`FAILED`].
    state: AtomicU8,
    /// The error, for [`FAILED`].
    error: Mutex<Option<Error>>,
}

const DONE: u8 = 1;
const FAILED: u8 = 2;

/// An appender parked until its ticket is done (or it is asked to lead).
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    thread: Thread,
    outcome: Arc<Outcome>,
}

/// Runs once the records it was queued with are durable, or failed.
type DurableCallback = Box<dyn FnOnce(Result<Range<Lsn>>) + Send>;

/// A callback of [`Shared::append_with`] still waiting.
struct PendingCallback {
    lsns: Range<Lsn>,
    run: DurableCallback,
}

/// The shared, mutex-protected part of the log.
struct State {
    /// LSN the next appended record gets.
    next_lsn: Lsn,
    /// First LSN of the segment the next record goes into, counting
    /// rotations that are queued but not done yet.
    tail_first_lsn: Lsn,
    /// Bytes of that segment, counting queued records.
    tail_len: u64,
    /// Encoded records waiting for a leader.
    queued: Vec<u8>,
    /// Offset in its segment of each queued record, in order.
    queued_offsets: Vec<u32>,
    /// Rotations inside `queued`, in order.
    cuts: Vec<PendingCut>,
    /// Someone asked for an fdatasync even if the policy does not; every
    /// group syncs until the queue is empty.
    sync_requested: bool,
    /// Last ticket handed out.
    last_ticket: u64,
    /// Every ticket up to this one is done or failed.
    done_ticket: u64,
    /// A leader is writing (or `truncate_after` has the writer).
    leading: bool,
    /// Parked appenders. Invariant: every thread parked in `wait_for` for a
    /// ticket that is not done is in here exactly once; only a finishing
    /// leader removes entries, those it completed or failed.
    waiters: Vec<Waiter>,
    /// Callbacks of `append_with`, in LSN order.
    callbacks: VecDeque<PendingCallback>,
    /// Set forever (until reopen) by the first failed sync (or a write
    /// failure other than a full disk, or a panic on the leader's path).
    poisoned: Option<String>,
    /// The last LSN fully written to the segment files.
    written_lsn: Lsn,
    /// The last LSN made durable by an fdatasync.
    durable_lsn: Lsn,
    /// Bytes were written since the last fdatasync.
    unsynced: bool,
    /// Asks the `append_with` flusher thread to exit.
    flusher_stop: bool,
}

/// The active segment: touched only by the leader.
#[derive(Debug)]
struct Writer {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    /// First LSN of the active segment.
    first_lsn: Lsn,
    /// Bytes written so far; the next write goes here.
    len: u64,
}

/// One group taken by a leader: the bytes of one segment, after an
/// optional rotation.
struct Group {
    rotate_to: Option<Lsn>,
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    sync: bool,
    /// First and one-past-last LSN of its records.
    lsns: Range<Lsn>,
    last_ticket: u64,
}

/// Why a group failed, and whether the log survives it.
struct GroupFailure {
    error: Error,
    /// A write (not a sync) that failed for lack of space: nothing of the
    /// group was acknowledged or made visible, and the log goes on.
    survivable: bool,
}

/// The log's core; [`crate::Wal`] is a handle on it.
pub(crate) struct LogCore {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    options: WalOptions,
    state: Mutex<State>,
    /// Signalled when a GroupCommit leader's queue is full.
    group_full: Condvar,
    /// Signalled when `append_with` records wait for a leader.
    flush_wanted: Condvar,
    /// A leader's spare list for the waiters it wakes, so a group costs no
    /// allocation; only the leader of the moment touches it.
    wake_spare: Mutex<Vec<Waiter>>,
    /// Completed waiters still to unpark. The leader fills it and drains it;
    /// each waiter it wakes helps by unparking one more before it returns.
    to_wake: Mutex<Vec<Thread>>,
    writer: Mutex<Writer>,
    /// Segments, oldest first; the last is the active one. Each carries the
    /// index of its records' offsets.
    segments: Mutex<Vec<SegmentMeta>>,
    /// Live length of the active segment, for `disk_size`.
    active_len: AtomicU64,
    /// `State::written_lsn`, for readers that do not take the state mutex.
    written_lsn: AtomicU64,
    /// `State::durable_lsn`, likewise.
    durable_lsn: AtomicU64,
    /// Followers wait here for records not yet written.
    progress: (Mutex<()>, Condvar),
    /// Followers waiting on `progress`, so a leader notifies only if any.
    followers: AtomicUsize,
    /// Serialises `truncate_before` and `truncate_after`.
    truncating: Mutex<()>,
    /// What readers check to notice `truncate_after` under them.
    truncations: Arc<Truncations>,
    stats: StatsCounters,
    report: RecoveryReport,
    /// Held for as long as the log is open.
    _lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for LogCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Clears the leadership, poisons the log and wakes everyone if a leader
/// unwinds before it finished; disarmed on the normal path.
struct LeaderGuard<'a> {
    core: &'a LogCore,
    armed: bool,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = lock(&self.core.state);
        st.leading = false;
        st.poisoned
            .get_or_insert_with(|| "a panic on the log's write path".to_string());
        let reason = st.poisoned.clone().unwrap_or_default();
        let waiters: Vec<Waiter> = st.waiters.drain(..).collect();
        let callbacks: Vec<PendingCallback> = st.callbacks.drain(..).collect();
        drop(st);
        for w in waiters {
            w.thread.unpark();
        }
        for cb in callbacks {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (cb.run)(Err(Error::Poisoned {
                    reason: reason.clone(),
                }))
            }));
        }
        self.core.flush_wanted.notify_all();
    }
}

impl LogCore {
    /// Locks `dir`, recovers it and returns the ready log. With `start`,
    /// `dir` must hold no segment yet, and the new log's first record gets
    /// that LSN.
    pub(crate) fn open(
        dir: &Path,
        options: WalOptions,
        vfs: Arc<dyn Vfs>,
        start: Option<Lsn>,
    ) -> Result<LogCore> {
        options.validate()?;
        if start == Some(0) {
            return Err(Error::InvalidArgument {
                reason: "a log cannot start at LSN 0".to_string(),
            });
        }
        // A directory made here is durable only once its entry in its parent
        // is: without an fsync of each such parent, a crash could take the
        // whole new log away, acknowledged records and all.
        let created = dirs_to_make_durable(vfs.as_ref(), dir)?;
        vfs.create_dir_all(dir)
            .map_err(Error::io("create log directory", dir))?;
        for made in &created {
            let parent = match made.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            vfs.sync_dir(parent)
                .map_err(Error::io("sync parent of log directory", parent))?;
        }
        let lock = vfs.lock_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    dir: dir.to_path_buf(),
                }
            } else {
                Error::io("lock log directory", dir)(e)
            }
        })?;
        if let Some(first_lsn) = start {
            if !crate::recovery::list_segments(vfs.as_ref(), dir)?.is_empty() {
                return Err(Error::InvalidArgument {
                    reason: format!(
                        "{} already holds a log; a log can start at LSN {first_lsn} only in a \
                         directory without one",
                        dir.display()
                    ),
                });
            }
            segment::create_segment(vfs.as_ref(), dir, first_lsn, options.segment_size)?;
        }
        let rec = crate::recovery::recover(vfs.as_ref(), dir, &options, false)?;
        let Some(active) = rec.active else {
            return Err(Error::InvalidArgument {
                reason: "recovery opened no active segment".to_string(),
            });
        };
        let (tail_first_lsn, active_path) = rec
            .segments
            .last()
            .map(|s| (s.first_lsn, s.path.clone()))
            .unwrap_or_else(|| (rec.next_lsn, segment::segment_path(dir, rec.next_lsn)));
        let last = rec.next_lsn - 1;
        let state = State {
            next_lsn: rec.next_lsn,
            tail_first_lsn,
            tail_len: rec.active_len,
            queued: Vec::new(),
            queued_offsets: Vec::new(),
            cuts: Vec::new(),
            sync_requested: false,
            last_ticket: 0,
            done_ticket: 0,
            leading: false,
            waiters: Vec::new(),
            callbacks: VecDeque::new(),
            poisoned: None,
            written_lsn: last,
            // Recovery read it back from what open made durable.
            durable_lsn: last,
            unsynced: false,
            flusher_stop: false,
        };
        Ok(LogCore {
            dir: dir.to_path_buf(),
            vfs,
            options,
            state: Mutex::new(state),
            group_full: Condvar::new(),
            flush_wanted: Condvar::new(),
            wake_spare: Mutex::new(Vec::new()),
            to_wake: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer {
                file: active,
                path: active_path,
                first_lsn: tail_first_lsn,
                len: rec.active_len,
            }),
            segments: Mutex::new(rec.segments),
            active_len: AtomicU64::new(rec.active_len),
            written_lsn: AtomicU64::new(last),
            durable_lsn: AtomicU64::new(last),
            progress: (Mutex::new(()), Condvar::new()),
            followers: AtomicUsize::new(0),
            truncating: Mutex::new(()),
            truncations: Arc::new(Truncations::default()),
            stats: StatsCounters::default(),
            report: rec.report,
            _lock: lock,
        })
    }

    pub(crate) fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Checks sizes, then encodes `records` into the queue as one batch
    /// under the state mutex; returns their LSNs and the held guard.
    fn enqueue<'a, R: AsRef<[u8]>>(
        &'a self,
        records: &[R],
    ) -> Result<(MutexGuard<'a, State>, Range<Lsn>)> {
        let max = self.options.max_record_size;
        let mut total = 0u64;
        for r in records {
            let size = r.as_ref().len();
            if size > max as usize {
                return Err(Error::RecordTooLarge { size, max });
            }
            total += format::framed_len(size);
        }
        let mut st = lock(&self.state);
        check_poisoned(&st)?;
        // The LSN after the batch must itself be an LSN (it is the next
        // append's, and every range is half-open), so the last record may
        // get `Lsn::MAX - 1` at most.
        if st.next_lsn.checked_add(records.len() as u64).is_none() {
            return Err(Error::LsnExhausted {
                next: st.next_lsn,
                records: records.len(),
            });
        }
        if records.is_empty() {
            let next = st.next_lsn;
            return Ok((st, next..next));
        }
        // A batch never spans segments (recovery cuts an incomplete batch
        // within the last segment); a record or batch bigger than a segment
        // goes alone into a fresh one.
        if st.tail_len + total > self.options.segment_size && st.next_lsn > st.tail_first_lsn {
            queue_cut(&mut st);
        }
        let first = st.next_lsn;
        let last_index = records.len() - 1;
        for (i, r) in records.iter().enumerate() {
            let flags = if i < last_index {
                FLAG_BATCH_CONTINUES
            } else {
                0
            };
            let lsn = st.next_lsn;
            let offset = st.tail_len;
            // Offsets fit: `segment_size` is at most 4 GiB (validated), and
            // a record starts inside its segment.
            st.queued_offsets
                .push(u32::try_from(offset).unwrap_or(u32::MAX));
            format::encode_record(&mut st.queued, lsn, flags, r.as_ref());
            st.tail_len += format::framed_len(r.as_ref().len());
            st.next_lsn += 1;
        }
        let end = st.next_lsn;
        if st.queued.len() >= GROUP_COMMIT_FULL {
            self.group_full.notify_one();
        }
        Ok((st, first..end))
    }

    /// Queues `records` as one batch and returns once they are written (and
    /// synced, if the policy says so).
    pub(crate) fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Lsn>> {
        let (mut st, lsns) = self.enqueue(records)?;
        if lsns.is_empty() {
            return Ok(lsns);
        }
        let ticket = take_ticket(&mut st);
        self.wait_for(st, ticket)?;
        Ok(lsns)
    }

    /// Queues `records` and returns their LSNs at once; `on_durable` runs
    /// (on a thread of the log's) once they are synced, or with the error
    /// that stopped them.
    pub(crate) fn append_with<R, F>(&self, records: &[R], on_durable: F) -> Result<Range<Lsn>>
    where
        R: AsRef<[u8]>,
        F: FnOnce(Result<Range<Lsn>>) + Send + 'static,
    {
        let (mut st, lsns) = self.enqueue(records)?;
        if lsns.is_empty() {
            if st.durable_lsn + 1 >= st.next_lsn {
                drop(st);
                on_durable(Ok(lsns.clone()));
            } else {
                // Durable once everything queued before is.
                st.sync_requested = true;
                st.callbacks.push_back(PendingCallback {
                    lsns: lsns.clone(),
                    run: Box::new(on_durable),
                });
                take_ticket(&mut st);
                self.flush_wanted.notify_one();
            }
            return Ok(lsns);
        }
        st.sync_requested = true;
        st.callbacks.push_back(PendingCallback {
            lsns: lsns.clone(),
            run: Box::new(on_durable),
        });
        take_ticket(&mut st);
        if !st.leading {
            self.flush_wanted.notify_one();
        }
        Ok(lsns)
    }

    /// The loop of the `append_with` flusher thread: leads a group whenever
    /// callbacks wait and nobody else leads. Returns when asked to stop.
    pub(crate) fn run_flusher(&self) {
        let mut st = lock(&self.state);
        loop {
            if st.flusher_stop {
                return;
            }
            let work = !st.callbacks.is_empty()
                && !st.leading
                && st.poisoned.is_none()
                && st.done_ticket < st.last_ticket;
            if !work {
                st = self
                    .flush_wanted
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // The flusher's own ticket covers everything queued so far.
            let ticket = take_ticket(&mut st);
            // Errors reach the callbacks; the flusher only moves on.
            let _ = self.wait_for(st, ticket);
            st = lock(&self.state);
        }
    }

    /// Asks the flusher thread to exit.
    pub(crate) fn stop_flusher(&self) {
        lock(&self.state).flusher_stop = true;
        self.flush_wanted.notify_all();
    }

    /// Makes everything appended so far durable.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut st = lock(&self.state);
        check_poisoned(&st)?;
        if st.queued.is_empty() && st.cuts.is_empty() && !st.unsynced && !st.leading {
            return Ok(());
        }
        st.sync_requested = true;
        let ticket = take_ticket(&mut st);
        self.wait_for(st, ticket)
    }

    /// Blocks until every record up to `lsn` is durable (syncing if the
    /// policy would not).
    pub(crate) fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        if self.durable_lsn.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let next = self.next_lsn();
        if lsn >= next {
            return Err(Error::InvalidArgument {
                reason: format!("LSN {lsn} was not appended yet (the next append gets {next})"),
            });
        }
        self.sync()
    }

    /// Seals the active segment and starts a new one at the next LSN, unless
    /// the active one holds no record yet.
    pub(crate) fn rotate(&self) -> Result<()> {
        let mut st = lock(&self.state);
        check_poisoned(&st)?;
        if st.next_lsn > st.tail_first_lsn {
            queue_cut(&mut st);
        }
        let ticket = take_ticket(&mut st);
        self.wait_for(st, ticket)
    }

    /// Waits until `ticket` is done, leading groups when nobody else does.
    fn wait_for<'a>(&'a self, mut st: MutexGuard<'a, State>, ticket: u64) -> Result<()> {
        let mut registered: Option<Arc<Outcome>> = None;
        loop {
            if let Some(outcome) = &registered {
                match outcome.state.load(Ordering::Acquire) {
                    DONE => return Ok(()),
                    FAILED => return Err(take_error(outcome)),
                    _ => {}
                }
            }
            if st.done_ticket >= ticket {
                // Done by a group this thread led, or before it registered.
                return Ok(());
            }
            check_poisoned(&st)?;
            if !st.leading {
                // A registered entry stays: the leader skips its own ticket
                // when it wakes its group, and removes the entry then.
                return self.lead(st, ticket);
            }
            if registered.is_none() {
                let outcome = Arc::new(Outcome::default());
                st.waiters.push(Waiter {
                    ticket,
                    thread: thread::current(),
                    outcome: Arc::clone(&outcome),
                });
                registered = Some(outcome);
            }
            drop(st);
            // No lost wake-up: the leader fills the outcome and reads
            // `waiters` under the mutex we held while registering, and an
            // unpark that comes before the park makes it return.
            thread::park();
            if let Some(outcome) = &registered {
                match outcome.state.load(Ordering::Acquire) {
                    DONE => {
                        self.help_wake();
                        return Ok(());
                    }
                    FAILED => {
                        self.help_wake();
                        return Err(take_error(outcome));
                    }
                    _ => {}
                }
            }
            // Poisoned, asked to lead, or a spurious wake-up: the state
            // says which.
            st = lock(&self.state);
        }
    }

    /// Unparks one completed waiter still asleep, if any; whether it did.
    fn help_wake(&self) -> bool {
        let next = lock(&self.to_wake).pop();
        match next {
            Some(t) => {
                t.unpark();
                true
            }
            None => false,
        }
    }

    /// Leads groups until `own_ticket` is done (or failed): each group is
    /// taken, written and synced, then published and its waiters woken.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>, own_ticket: u64) -> Result<()> {
        st.leading = true;
        let mut guard = LeaderGuard {
            core: self,
            armed: true,
        };
        // A panicking callback must not poison the log: its panic is
        // resumed once the leadership is handed over.
        let mut callback_panic = None;
        loop {
            st = self.gather(st);
            let group = take_group(&mut st, self.options.sync_policy.syncs_on_append());
            drop(st);
            let started = Instant::now();
            let result = self.write_group(&group);
            if result.is_ok() && group.sync {
                self.stats.record_sync(started.elapsed());
            }
            let mut wake = std::mem::take(&mut *lock(&self.wake_spare));
            st = lock(&self.state);
            let mut callbacks = Vec::new();
            let outcome = match result {
                Ok(()) => {
                    self.publish(&mut st, &group, own_ticket, &mut wake, &mut callbacks);
                    Ok(())
                }
                Err(failure) => Err(self.fail(
                    &mut st,
                    &group,
                    failure,
                    own_ticket,
                    &mut wake,
                    &mut callbacks,
                )),
            };
            let own_done = outcome.is_err() || st.done_ticket >= own_ticket;
            if own_done {
                st.leading = false;
            }
            // Leadership first, so the next group's write overlaps the
            // wake-ups: a pending waiter, or the flusher for callbacks.
            let next_leader = if own_done {
                st.waiters.first().map(|w| w.thread.clone())
            } else {
                None
            };
            let flusher_needed = own_done
                && next_leader.is_none()
                && !st.callbacks.is_empty()
                && st.done_ticket < st.last_ticket;
            drop(st);
            if let Some(t) = next_leader {
                t.unpark();
            }
            if flusher_needed {
                self.flush_wanted.notify_one();
            }
            if !wake.is_empty() {
                lock(&self.to_wake).extend(wake.drain(..).map(|w| w.thread));
                while self.help_wake() {}
            }
            *lock(&self.wake_spare) = wake;
            self.notify_followers();
            if let Some(p) = run_callbacks(callbacks) {
                callback_panic.get_or_insert(p);
            }
            if own_done {
                guard.armed = false;
                if let Some(p) = callback_panic {
                    std::panic::resume_unwind(p);
                }
                return outcome;
            }
            st = lock(&self.state);
        }
    }

    /// For `GroupCommit`: waits up to `max_delay` for joiners.
    fn gather<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let SyncPolicy::GroupCommit { max_delay } = self.options.sync_policy else {
            return st;
        };
        // `validate` bounds the delay; `checked_add` keeps even a clock at
        // the end of its range from panicking here.
        let Some(deadline) = Instant::now().checked_add(max_delay) else {
            return st;
        };
        loop {
            let now = Instant::now();
            if now >= deadline || st.queued.len() >= GROUP_COMMIT_FULL {
                return st;
            }
            st = self
                .group_full
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A group went to disk: publish how far the log is written and synced,
    /// index its records, and collect whom to wake.
    fn publish(
        &self,
        st: &mut State,
        group: &Group,
        own_ticket: u64,
        wake: &mut Vec<Waiter>,
        callbacks: &mut Vec<(PendingCallback, Result<()>)>,
    ) {
        st.done_ticket = group.last_ticket;
        if !group.lsns.is_empty() {
            st.written_lsn = group.lsns.end - 1;
            self.written_lsn.store(st.written_lsn, Ordering::Release);
        }
        if group.sync {
            st.unsynced = false;
            st.durable_lsn = st.written_lsn;
            self.durable_lsn.store(st.durable_lsn, Ordering::Release);
        } else if !group.bytes.is_empty() {
            st.unsynced = true;
        }
        self.stats.record_group(&group.lsns, group.bytes.len());
        while let Some(cb) = st.callbacks.front() {
            if cb.lsns.end > st.durable_lsn + 1 {
                break;
            }
            if let Some(cb) = st.callbacks.pop_front() {
                callbacks.push((cb, Ok(())));
            }
        }
        let done = group.last_ticket;
        let mut i = 0;
        while i < st.waiters.len() {
            if st.waiters[i].ticket <= done {
                let w = st.waiters.swap_remove(i);
                if w.ticket != own_ticket {
                    w.outcome.state.store(DONE, Ordering::Release);
                    wake.push(w);
                }
            } else {
                i += 1;
            }
        }
    }

    /// A group failed. A full disk (on a write or a segment creation, never
    /// on a sync) fails this group and everything queued after it, rolls
    /// the queue back to the last written record, and leaves the log
    /// usable; anything else is fail-stop. Returns the leader's own error.
    fn fail(
        &self,
        st: &mut State,
        group: &Group,
        failure: GroupFailure,
        own_ticket: u64,
        wake: &mut Vec<Waiter>,
        callbacks: &mut Vec<(PendingCallback, Result<()>)>,
    ) -> Error {
        if failure.survivable {
            // Nothing from the group's first LSN on was written where a
            // reader or a reopen looks for it (see `write_group`).
            let w = lock(&self.writer);
            st.next_lsn = group.lsns.start;
            st.tail_first_lsn = w.first_lsn;
            st.tail_len = w.len;
            drop(w);
            st.queued.clear();
            st.queued_offsets.clear();
            st.cuts.clear();
            st.sync_requested = false;
            st.done_ticket = st.last_ticket;
            // Callbacks of records already durable ran when they became
            // so; the ones left are of this group or later.
            for cb in st.callbacks.drain(..) {
                callbacks.push((cb, Err(copy_error(&failure.error))));
            }
            for w in st.waiters.drain(..) {
                if w.ticket != own_ticket {
                    *lock(&w.outcome.error) = Some(copy_error(&failure.error));
                    w.outcome.state.store(FAILED, Ordering::Release);
                    wake.push(w);
                }
            }
        } else {
            // Fail-stop: after a failed fdatasync we cannot know what
            // reached the disk, and a retried fsync may report success for
            // pages the kernel already dropped. Everyone waiting is woken
            // to see it.
            let reason = failure.error.to_string();
            for cb in st.callbacks.drain(..) {
                let error = Error::Poisoned {
                    reason: reason.clone(),
                };
                callbacks.push((cb, Err(error)));
            }
            st.poisoned = Some(reason);
            wake.extend(st.waiters.drain(..).filter(|w| w.ticket != own_ticket));
        }
        failure.error
    }

    /// The leader's I/O: rotate if the group starts a segment, write its
    /// bytes, sync. Holds only the writer mutex, so appenders keep queueing.
    fn write_group(&self, group: &Group) -> std::result::Result<(), GroupFailure> {
        let mut w = lock(&self.writer);
        if let Some(first_lsn) = group.rotate_to {
            self.rotate_active(&mut w, first_lsn)?;
        }
        if !group.bytes.is_empty() {
            let at = w.len;
            if let Err(e) = w.file.write_all_at(&group.bytes, at) {
                let error = Error::io("write segment", &w.path)(e);
                let survivable = error.is_disk_full() && self.forget_partial_write(&w);
                return Err(GroupFailure { error, survivable });
            }
            w.len += group.bytes.len() as u64;
            self.active_len.store(w.len, Ordering::Relaxed);
            let mut segments = lock(&self.segments);
            if let Some(active) = segments.last_mut() {
                active.offsets.extend_from_slice(&group.offsets);
                active.len = w.len;
            }
        }
        if group.sync {
            w.file.sync_data().map_err(|e| GroupFailure {
                error: Error::io("sync segment", &w.path)(e),
                survivable: false,
            })?;
        }
        Ok(())
    }

    /// After a write that failed for lack of space, cuts off whatever part
    /// of it landed after the log's end, so that a crash cannot bring back
    /// records whose LSNs will be given to other records. Whether that
    /// worked (if not, the log must fail-stop).
    fn forget_partial_write(&self, w: &Writer) -> bool {
        w.file.set_len(w.len).is_ok()
    }

    /// Rotation in the safe order: cut the old segment back to its records
    /// (dropping its preallocated zeroes) and sync it, create the new one
    /// (header, reserved space, fdatasync, directory fsync), and only then
    /// let records be written into it. So a sealed segment ends exactly
    /// after its last record, as recovery expects. A full disk while
    /// creating the new segment leaves the old one active (sealed; records
    /// go on into it, growing it, until a rotation succeeds).
    fn rotate_active(
        &self,
        w: &mut Writer,
        first_lsn: Lsn,
    ) -> std::result::Result<(), GroupFailure> {
        let fatal = |error| GroupFailure {
            error,
            survivable: false,
        };
        w.file
            .set_len(w.len)
            .map_err(|e| fatal(Error::io("seal segment", &w.path)(e)))?;
        w.file
            .sync_data()
            .map_err(|e| fatal(Error::io("sync segment", &w.path)(e)))?;
        let (file, path) = segment::create_segment(
            self.vfs.as_ref(),
            &self.dir,
            first_lsn,
            self.options.segment_size,
        )
        .map_err(|error| {
            let survivable = error.is_disk_full();
            GroupFailure { error, survivable }
        })?;
        let sealed_len = w.len;
        *w = Writer {
            file,
            path: path.clone(),
            first_lsn,
            len: SEGMENT_HEADER_LEN as u64,
        };
        let mut segments = lock(&self.segments);
        if let Some(last) = segments.last_mut() {
            last.len = sealed_len;
        }
        segments.push(SegmentMeta::new(first_lsn, path, SEGMENT_HEADER_LEN as u64));
        self.active_len
            .store(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
        Ok(())
    }

    fn notify_followers(&self) {
        if self.followers.load(Ordering::Acquire) > 0 {
            let _guard = lock(&self.progress.0);
            self.progress.1.notify_all();
        }
    }

    /// Iterates over the written records with LSN >= `lsn`.
    pub(crate) fn iter_from(&self, lsn: Lsn) -> WalIter {
        let epoch = self.truncations.epoch();
        // Written LSN first, then the segment list: every segment holding a
        // record up to `end` is in the list by the time `written_lsn` says so.
        let end = self.written_lsn.load(Ordering::Acquire) + 1;
        let segments = lock(&self.segments);
        let first = segments.first().map_or(end, |s| s.first_lsn);
        let start = lsn.max(first);
        let from = segments
            .iter()
            .rposition(|s| s.first_lsn <= start)
            .unwrap_or(0);
        let refs = segments[from..]
            .iter()
            .map(|s| SegmentRef {
                first_lsn: s.first_lsn,
                path: s.path.clone(),
            })
            .collect();
        drop(segments);
        WalIter::new(
            Arc::clone(&self.vfs),
            refs,
            start,
            end,
            self.options.max_record_size,
        )
        .watching(Arc::clone(&self.truncations), epoch)
    }

    /// Reads the records in `[from, to)` (to the last written one at most),
    /// stopping before the payloads would exceed `max_bytes` (but always
    /// with at least one record if `from` is held).
    pub(crate) fn read_range(&self, from: Lsn, to: Lsn, max_bytes: usize) -> Result<Vec<Record>> {
        let epoch = self.truncations.epoch();
        let end = to.min(self.written_lsn.load(Ordering::Acquire) + 1);
        let spans = reader::plan_spans(&lock(&self.segments), from, end, max_bytes);
        let records = reader::read_spans(self.vfs.as_ref(), &spans, self.options.max_record_size)?;
        if let Some(last) = records.last()
            && self.truncations.removed_since(epoch, last.lsn)
        {
            return Err(Error::Truncated { lsn: from });
        }
        Ok(records)
    }

    pub(crate) fn next_lsn(&self) -> Lsn {
        lock(&self.state).next_lsn
    }

    pub(crate) fn written_lsn(&self) -> Lsn {
        self.written_lsn.load(Ordering::Acquire)
    }

    pub(crate) fn durable_lsn(&self) -> Lsn {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for a record at `lsn` to be written; whether
    /// one is.
    pub(crate) fn wait_written(&self, lsn: Lsn, timeout: Duration) -> bool {
        if self.written_lsn() >= lsn {
            return true;
        }
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return false;
        };
        self.followers.fetch_add(1, Ordering::AcqRel);
        let mut guard = lock(&self.progress.0);
        let found = loop {
            if self.written_lsn() >= lsn {
                break true;
            }
            if self.is_poisoned() {
                break false;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = self
                .progress
                .1
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(guard);
        self.followers.fetch_sub(1, Ordering::AcqRel);
        found
    }

    /// First LSN the oldest segment holds (or will hold).
    fn oldest_first_lsn(&self) -> Lsn {
        lock(&self.segments).first().map_or(1, |s| s.first_lsn)
    }

    pub(crate) fn first_lsn(&self) -> Option<Lsn> {
        let first = self.oldest_first_lsn();
        (first < self.next_lsn()).then_some(first)
    }

    pub(crate) fn last_lsn(&self) -> Option<Lsn> {
        let first = self.oldest_first_lsn();
        let last = self.next_lsn() - 1;
        (last >= first).then_some(last)
    }

    /// Deletes whole segments below `lsn`, oldest first, never the active
    /// one. Each removal is followed by a directory fsync, so a crash can
    /// only leave a suffix of the log, never a hole.
    pub(crate) fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        let _serial = lock(&self.truncating);
        // Fail-stop covers the directory too: a log that lost data to a
        // failed sync changes nothing on disk until it is reopened.
        check_poisoned(&lock(&self.state))?;
        let mut removed = 0;
        loop {
            let victim = {
                let mut segments = lock(&self.segments);
                // Segment 0 holds LSNs below segment 1's first LSN.
                if segments.len() < 2 || segments[1].first_lsn > lsn {
                    return Ok(removed);
                }
                // Out of the list first: new iterators no longer look for it.
                segments.remove(0)
            };
            if let Err(e) = self.vfs.remove_file(&victim.path) {
                let err = Error::io("remove segment", &victim.path)(e);
                lock(&self.segments).insert(0, victim);
                return Err(err);
            }
            self.vfs
                .sync_dir(&self.dir)
                .map_err(Error::io("sync log directory", &self.dir))?;
            removed += 1;
        }
    }

    /// Removes every record above `lsn`; the next append gets `lsn + 1`.
    ///
    /// Waits for the queue to drain, then holds the state mutex (so no
    /// append can take an LSN meanwhile) and the writer while it removes
    /// whole later segments newest first (a directory fsync after each),
    /// then cuts the segment holding `lsn + 1` at that record (fdatasync)
    /// and reserves its space again. A crash at any step leaves a prefix of
    /// the old log that holds every record up to `lsn`: never a hole.
    pub(crate) fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        let _serial = lock(&self.truncating);
        let mut st = lock(&self.state);
        loop {
            check_poisoned(&st)?;
            if !st.leading && st.queued.is_empty() && st.cuts.is_empty() {
                break;
            }
            let ticket = take_ticket(&mut st);
            self.wait_for(st, ticket)?;
            st = lock(&self.state);
        }
        // Saturating: `truncate_after(Lsn::MAX)` keeps everything, as any
        // bound at or past the end does.
        if lsn.saturating_add(1) >= st.next_lsn {
            return Ok(());
        }
        let mut w = lock(&self.writer);
        let mut segments = lock(&self.segments);
        let oldest = segments.first().map_or(1, |s| s.first_lsn);
        if lsn + 1 < oldest {
            return Err(Error::InvalidArgument {
                reason: format!(
                    "truncate_after({lsn}): records below LSN {oldest} were already removed by \
                     truncate_before; the log can be cut back to LSN {} at most",
                    oldest - 1
                ),
            });
        }
        // Readers notice before any file changes.
        self.truncations.record(lsn);
        let result = self.cut_after(&mut w, &mut segments, lsn);
        drop(segments);
        match result {
            Ok(()) => {
                st.next_lsn = lsn + 1;
                st.tail_first_lsn = w.first_lsn;
                st.tail_len = w.len;
                st.written_lsn = lsn;
                st.durable_lsn = st.durable_lsn.min(lsn);
                self.written_lsn.store(lsn, Ordering::Release);
                self.durable_lsn.store(st.durable_lsn, Ordering::Release);
                self.active_len.store(w.len, Ordering::Relaxed);
                let mut dropped = Vec::new();
                while st.callbacks.back().is_some_and(|cb| cb.lsns.end > lsn + 1) {
                    if let Some(cb) = st.callbacks.pop_back() {
                        dropped.push(cb);
                    }
                }
                drop(w);
                drop(st);
                for cb in dropped {
                    let start = cb.lsns.start;
                    (cb.run)(Err(Error::Truncated { lsn: start }));
                }
                Ok(())
            }
            Err(e) => {
                // The files may be between the old log and the new one:
                // fail-stop, and let a reopen recover what is on disk.
                st.poisoned = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The file work of [`LogCore::truncate_after`].
    fn cut_after(&self, w: &mut Writer, segments: &mut Vec<SegmentMeta>, lsn: Lsn) -> Result<()> {
        let keep_through = lsn + 1;
        while segments.len() > 1 && segments.last().is_some_and(|s| s.first_lsn > keep_through) {
            let Some(victim) = segments.pop() else { break };
            self.vfs
                .remove_file(&victim.path)
                .map_err(Error::io("remove segment", &victim.path))?;
            self.vfs
                .sync_dir(&self.dir)
                .map_err(Error::io("sync log directory", &self.dir))?;
        }
        let Some(target) = segments.last_mut() else {
            return Err(Error::InvalidArgument {
                reason: "truncate_after: no segment left".to_string(),
            });
        };
        let index = (keep_through - target.first_lsn) as usize;
        let cut_at = target
            .offsets
            .get(index)
            .map_or(target.len, |&o| u64::from(o));
        if target.path != w.path {
            let file = self
                .vfs
                .open_write(&target.path)
                .map_err(Error::io("open segment", &target.path))?;
            *w = Writer {
                file,
                path: target.path.clone(),
                first_lsn: target.first_lsn,
                len: target.len,
            };
        }
        // The record kept last may be inside a batch: it must end it, or
        // recovery would drop it (and the rest of its batch before it) as
        // an incomplete batch. Rewritten and synced before the cut, so a
        // crash leaves either the old log (in which the rest of the batch
        // still ends it) or the cut one.
        if index > 0 {
            let start = u64::from(target.offsets[index - 1]);
            let mut record = vec![0u8; (cut_at - start) as usize];
            crate::reader::read_full_at(w.file.as_ref(), &mut record, start)
                .map_err(Error::io("read segment", &w.path))?;
            if format::end_batch(&mut record) {
                w.file
                    .write_all_at(&record[..format::RECORD_HEADER_LEN], start)
                    .map_err(Error::io("write segment", &w.path))?;
                w.file
                    .sync_data()
                    .map_err(Error::io("sync segment", &w.path))?;
            }
        }
        w.file
            .set_len(cut_at)
            .map_err(Error::io("truncate segment", &w.path))?;
        w.file
            .sync_data()
            .map_err(Error::io("sync segment", &w.path))?;
        segment::prepare(w.file.as_ref(), &w.path, cut_at, self.options.segment_size)?;
        w.len = cut_at;
        target.offsets.truncate(index);
        target.len = cut_at;
        Ok(())
    }

    pub(crate) fn disk_size(&self) -> u64 {
        let segments = lock(&self.segments);
        let sealed: u64 = segments
            .iter()
            .take(segments.len().saturating_sub(1))
            .map(|s| s.len)
            .sum();
        sealed + self.active_len.load(Ordering::Relaxed)
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        lock(&self.state).poisoned.is_some()
    }

    pub(crate) fn stats(&self) -> WalStats {
        let segments = lock(&self.segments).len() as u64;
        self.stats
            .snapshot(segments, self.written_lsn(), self.durable_lsn())
    }
}

/// Runs the callbacks a group completed or failed, outside every lock. A
/// panicking callback does not keep the others from running; the first
/// panic is returned, to be resumed by the caller.
fn run_callbacks(
    callbacks: Vec<(PendingCallback, Result<()>)>,
) -> Option<Box<dyn std::any::Any + Send>> {
    let mut panic = None;
    for (cb, result) in callbacks {
        let result = result.map(|()| cb.lsns.clone());
        let run = cb.run;
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(result))) {
            panic.get_or_insert(p);
        }
    }
    panic
}

/// Takes the next group off the queue: the bytes up to the next rotation,
/// or a rotation and the bytes after it up to the one after.
fn take_group(st: &mut State, syncs_on_append: bool) -> Group {
    let rotate_to = match st.cuts.first() {
        Some(cut) if cut.at == 0 => {
            let cut = st.cuts.remove(0);
            Some(cut.first_lsn)
        }
        _ => None,
    };
    let (bytes, offsets, last_ticket) = match st.cuts.first().copied() {
        Some(cut) => {
            let rest = st.queued.split_off(cut.at);
            let rest_offsets = st.queued_offsets.split_off(cut.records);
            for later in &mut st.cuts {
                later.at -= cut.at;
                later.records -= cut.records;
            }
            (
                std::mem::replace(&mut st.queued, rest),
                std::mem::replace(&mut st.queued_offsets, rest_offsets),
                cut.tickets_before,
            )
        }
        None => (
            std::mem::take(&mut st.queued),
            std::mem::take(&mut st.queued_offsets),
            st.last_ticket,
        ),
    };
    let queued_after: u64 = st.queued_offsets.len() as u64;
    let end = st.next_lsn - queued_after;
    let start = end - offsets.len() as u64;
    let sync = syncs_on_append || st.sync_requested;
    if st.cuts.is_empty() && st.queued.is_empty() {
        st.sync_requested = false;
    }
    Group {
        rotate_to,
        bytes,
        offsets,
        sync,
        lsns: start..end,
        last_ticket,
    }
}

/// The directories whose entries in their parents open must fsync, deepest
/// first: `dir` and its ancestors that do not exist yet, and `dir` itself if
/// it exists but holds no segment yet, since an earlier open that created it
/// may have failed before its parent was synced (nothing was acknowledged
/// in it then, so the retry must finish the job). `list_dir` serves as the
/// existence probe; errors other than "not found" are returned.
fn dirs_to_make_durable(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur.filter(|d| !d.as_os_str().is_empty()) {
        match vfs.list_dir(d) {
            Ok(names) => {
                let has_segment = names
                    .iter()
                    .any(|n| format::parse_segment_file_name(n).is_some());
                if d == dir && !has_segment {
                    dirs.push(d.to_path_buf());
                }
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                dirs.push(d.to_path_buf());
                cur = d.parent();
            }
            Err(e) => return Err(Error::io("list log directory", d)(e)),
        }
    }
    Ok(dirs)
}

fn check_poisoned(st: &State) -> Result<()> {
    match &st.poisoned {
        Some(reason) => Err(Error::Poisoned {
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

/// The error a failed waiter gets: a copy of the leader's.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::DiskFull { op, path, source } => Error::DiskFull {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Poisoned {
            reason: other.to_string(),
        },
    }
}

fn take_error(outcome: &Outcome) -> Error {
    lock(&outcome.error).take().unwrap_or(Error::Poisoned {
        reason: "the group of this append failed".to_string(),
    })
}

fn take_ticket(st: &mut State) -> u64 {
    st.last_ticket += 1;
    st.last_ticket
}

/// Queues a rotation at the current end of the queue.
fn queue_cut(st: &mut State) {
    let first_lsn = st.next_lsn;
    let cut = PendingCut {
        at: st.queued.len(),
        records: st.queued_offsets.len(),
        tickets_before: st.last_ticket,
        first_lsn,
    };
    st.cuts.push(cut);
    st.tail_first_lsn = first_lsn;
    st.tail_len = SEGMENT_HEADER_LEN as u64;
}
