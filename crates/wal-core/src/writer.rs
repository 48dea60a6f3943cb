//! Appending: group commit (leader/follower), rotation, fail-stop.
//!
//! Appenders encode their records into one shared buffer under the state
//! mutex and take their LSNs there. Whoever then finds no leader at work
//! becomes the leader: it takes the whole buffer, writes it with one
//! positional write (split only where a segment rotation falls), syncs once
//! if the policy asks for it, publishes how far the log is written and
//! wakes everyone. Appenders that arrived while it worked have queued their
//! records meanwhile; one of them leads the next group. A lone appender
//! leads its own group at once: there is no timer on its path.
//!
//! Every operation that must reach the file (append, sync, rotate) is a
//! "ticket" in this queue, so they are ordered with the appends around them
//! and only the leader ever touches the active segment.
//!
//! Waking: an appender that must wait registers its thread and ticket in the
//! state and parks. A finishing leader publishes the done ticket in an
//! atomic, first wakes one still-pending waiter to lead the next group, and
//! only then unparks the waiters it completed, outside the state mutex. The
//! completed waiters see their ticket done in the atomic and return without
//! touching the state mutex, so neither the wake-up herd nor the next group
//! waits on one lock. Each completed waiter, once awake, unparks one more of
//! those still asleep, so a large group is woken from every core rather
//! than by the leader's syscalls one after the other.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, Thread};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::{self, FLAG_BATCH_CONTINUES, SEGMENT_HEADER_LEN};
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::{SegmentRef, WalIter};
use crate::segment::{self, SegmentMeta};
use crate::vfs::{DirLock, Vfs, VfsFile};
use crate::{Lsn, RecoveryReport};

/// A GroupCommit leader stops waiting for joiners once this much is queued.
const GROUP_COMMIT_FULL: usize = 1 << 20;

/// Locks a mutex, ignoring std's poisoning: every critical section below
/// leaves the state consistent before anything that can panic, and I/O
/// failures are handled by the log's own fail-stop.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A point in the queued bytes where a new segment starts.
#[derive(Debug, Clone, Copy)]
struct PendingCut {
    /// Offset in the queued bytes.
    at: usize,
    /// First LSN of the new segment.
    first_lsn: Lsn,
}

/// An appender parked until its ticket is done (or it is asked to lead).
#[derive(Debug)]
struct Waiter {
    ticket: u64,
    thread: Thread,
}

/// The shared, mutex-protected part of the log.
#[derive(Debug)]
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
    /// Rotations inside `queued`, in order.
    cuts: Vec<PendingCut>,
    /// Someone asked for an fdatasync even if the policy does not.
    sync_requested: bool,
    /// Last ticket handed out.
    last_ticket: u64,
    /// Every ticket up to this one is done (mirrored in
    /// [`Shared::done_ticket`] for waiters that do not take the mutex).
    done_ticket: u64,
    /// A leader is writing.
    leading: bool,
    /// Parked appenders. Invariant: every thread parked in `wait_for` for a
    /// ticket that is not done is in here exactly once; only a finishing
    /// leader removes entries, those it completed.
    waiters: Vec<Waiter>,
    /// Set forever (until reopen) by the first failed write or sync.
    poisoned: Option<String>,
    /// The last LSN fully written to the segment files.
    written_lsn: Lsn,
    /// Bytes were written since the last fdatasync.
    unsynced: bool,
}

/// The active segment: touched only by the leader.
#[derive(Debug)]
struct Writer {
    file: Box<dyn VfsFile>,
    path: PathBuf,
    /// Bytes written so far; the next write goes here.
    len: u64,
}

/// One group taken by a leader.
struct Group {
    bytes: Vec<u8>,
    cuts: Vec<PendingCut>,
    sync: bool,
    last_lsn: Lsn,
    last_ticket: u64,
}

/// The log's shared core; [`crate::Wal`] is a handle on it.
pub(crate) struct Shared {
    dir: PathBuf,
    vfs: Arc<dyn Vfs>,
    options: WalOptions,
    state: Mutex<State>,
    /// `State::done_ticket`, published (Release) under the state mutex so a
    /// woken waiter can see its ticket done without taking that mutex.
    done_ticket: AtomicU64,
    /// A leader's spare list for the waiters it wakes, so a group costs no
    /// allocation; only the leader of the moment touches it.
    wake_spare: Mutex<Vec<Waiter>>,
    /// Completed waiters still to unpark. The leader fills it and drains it;
    /// each waiter it wakes helps by unparking one more before it returns,
    /// so a large group wakes on all cores instead of one syscall at a time.
    to_wake: Mutex<Vec<Thread>>,
    /// Signalled when a GroupCommit leader's queue is full.
    group_full: Condvar,
    writer: Mutex<Writer>,
    /// Segments, oldest first; the last is the active one.
    segments: Mutex<Vec<SegmentMeta>>,
    /// Live length of the active segment, for `disk_size`.
    active_len: AtomicU64,
    /// Serialises `truncate_before` calls.
    truncating: Mutex<()>,
    report: RecoveryReport,
    /// Held for as long as the log is open.
    _lock: Box<dyn DirLock>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Locks `dir`, recovers it and returns the ready log.
    pub(crate) fn open(dir: &Path, options: WalOptions, vfs: Arc<dyn Vfs>) -> Result<Shared> {
        options.validate()?;
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
        let rec = crate::recovery::recover(vfs.as_ref(), dir, &options)?;
        let (tail_first_lsn, active_path) = rec
            .segments
            .last()
            .map(|s| (s.first_lsn, s.path.clone()))
            .unwrap_or_else(|| (rec.next_lsn, segment::segment_path(dir, rec.next_lsn)));
        let state = State {
            next_lsn: rec.next_lsn,
            tail_first_lsn,
            tail_len: rec.active_len,
            queued: Vec::new(),
            cuts: Vec::new(),
            sync_requested: false,
            last_ticket: 0,
            done_ticket: 0,
            leading: false,
            waiters: Vec::new(),
            poisoned: None,
            written_lsn: rec.next_lsn - 1,
            unsynced: false,
        };
        Ok(Shared {
            dir: dir.to_path_buf(),
            vfs,
            options,
            state: Mutex::new(state),
            done_ticket: AtomicU64::new(0),
            wake_spare: Mutex::new(Vec::new()),
            to_wake: Mutex::new(Vec::new()),
            group_full: Condvar::new(),
            writer: Mutex::new(Writer {
                file: rec.active,
                path: active_path,
                len: rec.active_len,
            }),
            segments: Mutex::new(rec.segments),
            active_len: AtomicU64::new(rec.active_len),
            truncating: Mutex::new(()),
            report: rec.report,
            _lock: lock,
        })
    }

    pub(crate) fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Queues `records` as one batch and returns once they are written (and
    /// synced, if the policy says so).
    pub(crate) fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Lsn>> {
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
        if records.is_empty() {
            return Ok(st.next_lsn..st.next_lsn);
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
            format::encode_record(&mut st.queued, lsn, flags, r.as_ref());
            st.next_lsn += 1;
        }
        st.tail_len += total;
        let end = st.next_lsn;
        if st.queued.len() >= GROUP_COMMIT_FULL {
            self.group_full.notify_one();
        }
        let ticket = take_ticket(&mut st);
        self.wait_for(st, ticket)?;
        Ok(first..end)
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

    /// Waits until `ticket` is done, leading a group when nobody else is.
    fn wait_for<'a>(&'a self, mut st: MutexGuard<'a, State>, ticket: u64) -> Result<()> {
        let mut registered = false;
        loop {
            if st.done_ticket >= ticket {
                return Ok(());
            }
            check_poisoned(&st)?;
            if !st.leading {
                // A registered entry stays: the leader skips its own ticket
                // when it wakes its group, and removes the entry then.
                self.lead(st, ticket)?;
                return Ok(());
            }
            if !registered {
                st.waiters.push(Waiter {
                    ticket,
                    thread: thread::current(),
                });
                registered = true;
            }
            drop(st);
            // No lost wake-up: the leader changes `leading`/`done_ticket`
            // and reads `waiters` under the mutex we held while registering,
            // and an unpark that comes before the park makes it return.
            thread::park();
            if self.done_ticket.load(Ordering::Acquire) >= ticket {
                self.help_wake();
                return Ok(());
            }
            // Failed group, asked to lead, or a spurious wake-up: the state
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

    /// Takes everything queued, writes and syncs it, publishes the result
    /// and wakes the waiters. `own_ticket` is the leader's own ticket, done
    /// by this group.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>, own_ticket: u64) -> Result<()> {
        st.leading = true;
        if let SyncPolicy::GroupCommit { max_delay } = self.options.sync_policy {
            let deadline = Instant::now() + max_delay;
            loop {
                let now = Instant::now();
                if now >= deadline || st.queued.len() >= GROUP_COMMIT_FULL {
                    break;
                }
                st = self
                    .group_full
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        let group = Group {
            bytes: std::mem::take(&mut st.queued),
            cuts: std::mem::take(&mut st.cuts),
            sync: self.options.sync_policy.syncs_on_append()
                || std::mem::take(&mut st.sync_requested),
            last_lsn: st.next_lsn - 1,
            last_ticket: st.last_ticket,
        };
        drop(st);
        let result = self.write_group(&group);
        let mut wake = std::mem::take(&mut *lock(&self.wake_spare));
        let mut st = lock(&self.state);
        st.leading = false;
        let mut next_leader = None;
        match &result {
            Ok(()) => {
                st.done_ticket = group.last_ticket;
                self.done_ticket.store(group.last_ticket, Ordering::Release);
                st.written_lsn = group.last_lsn;
                if group.sync {
                    st.unsynced = false;
                } else if !group.bytes.is_empty() {
                    st.unsynced = true;
                }
                if st.queued.is_empty() {
                    // Hand the allocation back for the next group.
                    let mut bytes = group.bytes;
                    bytes.clear();
                    st.queued = bytes;
                }
                // Completed waiters leave the list; pending ones stay, and
                // one of them is woken to lead the next group (a newcomer
                // may beat it to that; then it parks again).
                let done = group.last_ticket;
                let mut i = 0;
                while i < st.waiters.len() {
                    if st.waiters[i].ticket <= done {
                        let w = st.waiters.swap_remove(i);
                        if w.ticket != own_ticket {
                            wake.push(w);
                        }
                    } else {
                        i += 1;
                    }
                }
                next_leader = st.waiters.first().map(|w| w.thread.clone());
            }
            Err(e) => {
                // Fail-stop: after a failed write or fdatasync we cannot know
                // what reached the disk, and a retried fsync may report
                // success for pages the kernel already dropped. Everyone
                // waiting is woken to see it.
                st.poisoned = Some(e.to_string());
                wake.extend(st.waiters.drain(..).filter(|w| w.ticket != own_ticket));
            }
        }
        drop(st);
        // Leadership first, so the next group's write overlaps the wake-ups.
        if let Some(t) = next_leader {
            t.unpark();
        }
        if !wake.is_empty() {
            lock(&self.to_wake).extend(wake.drain(..).map(|w| w.thread));
            while self.help_wake() {}
        }
        *lock(&self.wake_spare) = wake;
        result
    }

    /// The leader's I/O: write the group, rotating where it was decided, and
    /// sync. Holds only the writer mutex, so appenders keep queueing.
    fn write_group(&self, group: &Group) -> Result<()> {
        let mut w = lock(&self.writer);
        let mut from = 0;
        for cut in &group.cuts {
            self.write_active(&mut w, &group.bytes[from..cut.at])?;
            from = cut.at;
            self.rotate_active(&mut w, cut.first_lsn)?;
        }
        self.write_active(&mut w, &group.bytes[from..])?;
        if group.sync {
            w.file
                .sync_data()
                .map_err(Error::io("sync segment", &w.path))?;
        }
        Ok(())
    }

    fn write_active(&self, w: &mut Writer, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        w.file
            .write_all_at(bytes, w.len)
            .map_err(Error::io("write segment", &w.path))?;
        w.len += bytes.len() as u64;
        self.active_len.store(w.len, Ordering::Relaxed);
        Ok(())
    }

    /// Rotation in the safe order: cut the old segment back to its records
    /// (dropping its preallocated zeroes) and sync it, create the new one
    /// (header, preallocation, fdatasync, directory fsync), and only then let
    /// records be written into it. So a sealed segment ends exactly after
    /// its last record, as recovery expects.
    fn rotate_active(&self, w: &mut Writer, first_lsn: Lsn) -> Result<()> {
        w.file
            .set_len(w.len)
            .map_err(Error::io("seal segment", &w.path))?;
        w.file
            .sync_data()
            .map_err(Error::io("sync segment", &w.path))?;
        let (file, path) = segment::create_segment(
            self.vfs.as_ref(),
            &self.dir,
            first_lsn,
            self.options.segment_size,
        )?;
        let sealed_len = w.len;
        *w = Writer {
            file,
            path: path.clone(),
            len: SEGMENT_HEADER_LEN as u64,
        };
        let mut segments = lock(&self.segments);
        if let Some(last) = segments.last_mut() {
            last.len = sealed_len;
        }
        segments.push(SegmentMeta {
            first_lsn,
            path,
            len: SEGMENT_HEADER_LEN as u64,
        });
        self.active_len
            .store(SEGMENT_HEADER_LEN as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Iterates over the written records with LSN >= `lsn`.
    pub(crate) fn iter_from(&self, lsn: Lsn) -> WalIter {
        // Written LSN first, then the segment list: every segment holding a
        // record up to `end` is in the list by the time `written_lsn` says so.
        let end = lock(&self.state).written_lsn + 1;
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
    }

    pub(crate) fn next_lsn(&self) -> Lsn {
        lock(&self.state).next_lsn
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

fn take_ticket(st: &mut State) -> u64 {
    st.last_ticket += 1;
    st.last_ticket
}

/// Queues a rotation at the current end of the queue.
fn queue_cut(st: &mut State) {
    let at = st.queued.len();
    let first_lsn = st.next_lsn;
    st.cuts.push(PendingCut { at, first_lsn });
    st.tail_first_lsn = first_lsn;
    st.tail_len = SEGMENT_HEADER_LEN as u64;
}
