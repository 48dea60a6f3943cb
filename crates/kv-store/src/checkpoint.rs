//! Checkpoints: write a snapshot, then let the log drop what it covers.
//!
//! A checkpoint is fuzzy and does not stop writers:
//!
//! 1. Under the commit lock (held by the commit thread while it appends and
//!    applies a batch, so here the log and the map agree), rotate the log and
//!    read `n`, the last applied LSN. Every record <= n is now in a sealed
//!    segment.
//! 2. Copy the map in chunks of [`CHUNK`] entries, taking the read lock once
//!    per chunk and resuming after the last key copied. Writers commit
//!    between chunks, so the copy holds the state at `n` plus some later
//!    writes. The file is written and synced in buffers of a few hundred
//!    KiB, paced to
//!    [`checkpoint_write_rate`](crate::StoreOptions::checkpoint_write_rate)
//!    (see [`Pacer`]), so that the checkpoint never takes the disk or a core
//!    away from the writers for long: their latency is what a checkpoint
//!    must not hurt.
//! 3. Sync the log. Every write the copy may hold is then durable in the log,
//!    even under a relaxed sync policy, so the snapshot never holds a write
//!    that a crash could take out of the log.
//! 4. Finish the file (header, trailer, fdatasync), rename it into place,
//!    fsync the directory. The snapshot is now the recovery point.
//! 5. `truncate_before(n + 1)`: delete the sealed segments.
//! 6. Delete older snapshots, fsync the directory. The checkpoint has
//!    succeeded by now, so a failure here is a warning, not an error: the
//!    leftover file only takes space (recovery reads the newest valid
//!    snapshot), and the next checkpoint deletes every snapshot older than
//!    its own, leftovers included.
//!
//! Why the extra writes in the copy are harmless: recovery loads the snapshot
//! and replays every record after `n`. Replay is idempotent per key (a put
//! sets the value, a delete removes the key), so the final value of each key
//! is decided by the last record after `n` that touches it, if any; a key no
//! record after `n` touches held the same value during the whole copy, as it
//! did at `n`. Either way, recovery ends in exactly the state of the log.
//!
//! Older snapshots are deleted, not kept as a fallback: once the log is
//! truncated to the newest snapshot, an older one could not be replayed
//! forward anyway. A crash between steps leaves at worst a temp file (deleted
//! at the next open), sealed segments that the next checkpoint deletes, or an
//! old snapshot that the next checkpoint deletes; recovery is correct in
//! every case because the newest complete snapshot is always covered by the
//! log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wal_core::Lsn;

use crate::error::{Error, Result};
use crate::snapshot::{self, FileKind, SnapshotWriter};
use crate::store::{Shared, lock, read};

/// Who is checkpointing, and what the last checkpoint left behind; under
/// `Shared::checkpoints`, with `Shared::checkpoint_done` signalled whenever
/// a checkpoint ends.
#[derive(Debug, Default)]
pub(crate) struct CheckpointState {
    /// A checkpoint is running (or, for an automatic one, about to start).
    running: bool,
    /// Checkpoints ended so far, failed ones included: a caller that joined
    /// a running one waits until this moves.
    ended: u64,
    /// Callers waiting for the running checkpoint's outcome.
    joined: usize,
    /// The outcome of the last checkpoint that had callers waiting for it.
    outcome: Option<std::result::Result<Lsn, Arc<Error>>>,
    /// The log was rotated for a checkpoint that then failed, and none has
    /// succeeded since: the next one does not rotate again (see [`run`]).
    rotated_for_failure: bool,
}

/// Entries copied per read-lock acquisition: small enough that the commit
/// thread waits at most about a hundred microseconds for the write lock (on
/// 2 busy cores a longer hold is also more likely to be preempted midway,
/// stalling every writer for a scheduler tick), large enough that the lock
/// is not taken millions of times.
pub(crate) const CHUNK: usize = 1024;

/// After a failed automatic checkpoint the next one waits this long, twice
/// as long after each further failure, up to [`AUTO_RETRY_MAX`]: a
/// persistent error (a full disk, a read-only directory) must not start one
/// checkpoint per batch, nor fill the log with one warning per batch.
pub(crate) const AUTO_RETRY_MIN: Duration = Duration::from_millis(500);
/// The longest wait between automatic checkpoints that keep failing.
pub(crate) const AUTO_RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait after `failures` automatic checkpoints failed in a row (at
/// least one).
pub(crate) fn auto_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    AUTO_RETRY_MIN
        .saturating_mul(1 << doublings)
        .min(AUTO_RETRY_MAX)
}

/// Marks the running checkpoint as ended however it ends (an unwinding
/// panic included), so that callers waiting for it are never stranded.
struct Running<'a> {
    shared: &'a Shared,
    ended: bool,
}

impl Running<'_> {
    /// Ends the checkpoint with `outcome`; returns what this caller gets.
    fn end(mut self, outcome: Result<Lsn>, rotated: bool) -> Result<Lsn> {
        let mut state = lock(&self.shared.checkpoints);
        if outcome.is_err() {
            self.shared
                .checkpoints_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        state.rotated_for_failure = match &outcome {
            Ok(_) => false,
            Err(_) => state.rotated_for_failure || rotated,
        };
        let mine = if state.joined == 0 {
            outcome
        } else {
            // Others wait for this one: they all get the same outcome.
            let outcome = outcome.map_err(Arc::new);
            state.outcome = Some(outcome.clone());
            outcome.map_err(Error::Shared)
        };
        self.finish(&mut state);
        mine
    }

    fn finish(&mut self, state: &mut CheckpointState) {
        self.ended = true;
        state.running = false;
        state.ended += 1;
        self.shared
            .checkpoint_running
            .store(false, Ordering::Release);
        self.shared.checkpoint_done.notify_all();
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut state = lock(&self.shared.checkpoints);
        state.outcome = Some(Err(Arc::new(Error::Unavailable(
            "the checkpoint stopped unexpectedly".into(),
        ))));
        self.finish(&mut state);
    }
}

/// Runs one checkpoint and returns the LSN its snapshot covers; blocking.
///
/// A call while another checkpoint runs does not start a second one: it
/// waits for the running one and returns its outcome (an error then comes
/// as [`Error::Shared`], the same for every caller that waited).
///
/// A checkpoint normally rotates the log first, so that every record its
/// snapshot covers is in a sealed segment that step 5 can delete. After a
/// checkpoint that rotated and then failed, the next one does not rotate
/// again: its snapshot covers the last applied LSN all the same, and the
/// records since the failed one's rotation stay in the active segment until
/// a later checkpoint seals and deletes them. So a checkpoint failing over
/// and over (automatic ones, retried) leaves one small segment behind, not
/// one per attempt.
pub(crate) fn run(shared: &Shared) -> Result<Lsn> {
    let rotate = {
        let mut state = lock(&shared.checkpoints);
        if state.running {
            return join(shared, state);
        }
        state.running = true;
        !state.rotated_for_failure
    };
    shared.checkpoint_running.store(true, Ordering::Release);
    let running = Running {
        shared,
        ended: false,
    };
    let outcome = take(shared, rotate);
    running.end(outcome, rotate)
}

/// Waits for the running checkpoint and returns its outcome.
fn join(shared: &Shared, mut state: std::sync::MutexGuard<'_, CheckpointState>) -> Result<Lsn> {
    shared.checkpoints_joined.fetch_add(1, Ordering::Relaxed);
    state.joined += 1;
    let ended = state.ended;
    while state.ended == ended {
        state = shared
            .checkpoint_done
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
    state.joined -= 1;
    let outcome = state.outcome.clone();
    if state.joined == 0 {
        state.outcome = None;
    }
    match outcome {
        Some(Ok(lsn)) => Ok(lsn),
        Some(Err(e)) => Err(Error::Shared(e)),
        None => Err(Error::Unavailable(
            "the checkpoint ended without an outcome".into(),
        )),
    }
}

/// Steps 1 to 6; `rotate` says whether step 1 rotates the log.
fn take(shared: &Shared, rotate: bool) -> Result<Lsn> {
    let started = Instant::now();

    let n = {
        let _commit = lock(&shared.commit_lock);
        if let Some(reason) = shared.failure() {
            return Err(Error::Unavailable(reason.to_string()));
        }
        if rotate {
            shared.wal.rotate()?;
        }
        read(&shared.state).last_applied()
    };

    let dir = &shared.snapshot_dir;
    let tmp = dir.join(snapshot::temp_name(n));
    let path = dir.join(snapshot::file_name(n));
    // A leftover of a checkpoint of the same `n` that failed in this process.
    match shared.vfs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale snapshot temp file", &tmp, e)),
    }
    let entries = match write_snapshot(shared, &tmp, n) {
        Ok(entries) => entries,
        Err(e) => {
            // Best effort: an unfinished temp file is also removed at open.
            let _ = shared.vfs.remove_file(&tmp);
            return Err(e);
        }
    };
    shared
        .vfs
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename snapshot", &tmp, e))?;
    shared
        .vfs
        .sync_dir(dir)
        .map_err(|e| Error::io("sync snapshot directory", dir, e))?;

    let segments = shared.wal.truncate_before(n + 1)?;

    let removed = remove_older_snapshots(shared, n);
    shared.snapshots_taken.fetch_add(1, Ordering::Relaxed);
    let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    shared
        .checkpoint_micros_total
        .fetch_add(took, Ordering::Relaxed);
    shared.last_checkpoint_micros.store(took, Ordering::Relaxed);
    tracing::info!(
        seq = n,
        entries,
        segments_deleted = segments,
        snapshots_deleted = removed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint written"
    );
    Ok(n)
}

/// Step 6: deletes the snapshots older than `n` and syncs the directory;
/// returns how many were deleted. Failures are logged, not returned: the
/// snapshot of `n` is durable and the log is cut, so the checkpoint has
/// succeeded, and the next one deletes whatever is left.
fn remove_older_snapshots(shared: &Shared, n: Lsn) -> usize {
    let dir = &shared.snapshot_dir;
    let kinds = match snapshot::list(&*shared.vfs, dir) {
        Ok(kinds) => kinds,
        Err(e) => {
            tracing::warn!(
                error = %e,
                "could not list old snapshots to delete; the next checkpoint retries"
            );
            return 0;
        }
    };
    let mut removed = 0;
    for kind in kinds {
        if let FileKind::Snapshot(seq) = kind
            && seq < n
        {
            let old = dir.join(snapshot::file_name(seq));
            match shared.vfs.remove_file(&old) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(
                    path = %old.display(),
                    error = %e,
                    "could not delete an old snapshot; the next checkpoint retries"
                ),
            }
        }
    }
    if removed > 0
        && let Err(e) = shared.vfs.sync_dir(dir)
    {
        // Only the deletions may not be durable: a crash could bring an old
        // snapshot back, which the next checkpoint deletes again.
        tracing::warn!(
            path = %dir.display(),
            error = %e,
            "could not sync the snapshot directory after deleting old snapshots"
        );
    }
    removed
}

/// Holds the snapshot writer to a budget of bytes per second.
///
/// Why pace at all: unpaced, a snapshot of 1M keys (128 MB) is copied,
/// encoded and written in about 0.3 s of one core, and its writeback
/// competes with the log's fdatasyncs; on 2 cores that took write p99 from
/// 1.1 ms to 21 ms (issue 5, section f of the bench report). Spread over a
/// few seconds, the same work takes a small share of a core and of the disk
/// at any moment. The cost is a longer checkpoint, during which the log
/// keeps growing; that only delays when its segments can be dropped.
struct Pacer {
    /// Bytes per second; `None` writes as fast as the disk takes it.
    rate: Option<u64>,
    started: Instant,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate,
            started: Instant::now(),
        }
    }

    /// Sleeps until `written` bytes are within budget. Called outside the
    /// read lock, between buffers. Measured from the start rather than per
    /// buffer, so that time lost elsewhere (a slow sync) is made up for and
    /// the average rate holds.
    fn wait(&self, written: u64) {
        let Some(rate) = self.rate.filter(|&r| r > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(written as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Steps 2 to 4 up to the file's own sync: copy, sync the log, finish.
fn write_snapshot(shared: &Shared, tmp: &std::path::Path, n: Lsn) -> Result<u64> {
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut writer = SnapshotWriter::create(&*shared.vfs, tmp)?;
    let pacer = Pacer::new(shared.options.checkpoint_write_rate);
    let mut resume: Option<Box<[u8]>> = None;
    loop {
        let mut copied = 0usize;
        let mut last: Option<Box<[u8]>> = None;
        {
            let state = read(&shared.state);
            let iter = match &resume {
                None => state.range_from(b"", false),
                Some(key) => state.range_from(key, true),
            };
            for entry in iter {
                writer.add(entry)?;
                copied += 1;
                // End the chunk by count, or by bytes so that large values
                // never pile up in memory.
                if copied == CHUNK || writer.buffer_full() {
                    last = Some(entry.key().into());
                    break;
                }
            }
        }
        // File I/O and pacing outside the lock. The last buffer is synced
        // by `finish`.
        if writer.buffer_full() {
            writer.flush()?;
            writer.sync()?;
            pacer.wait(writer.written());
        }
        match last {
            Some(key) => resume = Some(key),
            None => break,
        }
    }
    shared.wal.sync()?;
    writer.finish(n, created_ms)
}

/// Starts an automatic checkpoint in a background thread if the log has
/// outgrown `checkpoint_after`, none is running, and the back-off after
/// failed ones has passed. Called by the commit thread after each batch.
pub(crate) fn maybe_start_auto(shared: &Arc<Shared>) {
    let Some(limit) = shared.options.checkpoint_after else {
        return;
    };
    if shared.checkpoint_running.load(Ordering::Acquire) || shared.wal.disk_size() <= limit {
        return;
    }
    let mut auto = lock(&shared.auto_checkpoint);
    if auto.retry_after.is_some_and(|t| Instant::now() < t) {
        return;
    }
    if auto.thread.as_ref().is_some_and(|t| !t.is_finished()) {
        return;
    }
    if let Some(done) = auto.thread.take() {
        let _ = done.join();
    }
    // Set here, not in the new thread, so that the next batch does not start
    // a second one before this one has begun.
    shared.checkpoint_running.store(true, Ordering::Release);
    let bg = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("kv-checkpoint".into())
        .spawn(move || {
            let outcome = run(&bg);
            auto_ended(&bg, outcome);
        });
    match spawned {
        Ok(handle) => auto.thread = Some(handle),
        Err(e) => {
            shared.checkpoint_running.store(false, Ordering::Release);
            auto.failures = auto.failures.saturating_add(1);
            let delay = auto_retry_delay(auto.failures);
            tracing::warn!(
                error = %e,
                retry_in = ?delay,
                "could not start an automatic checkpoint"
            );
            auto.retry_after = Some(Instant::now() + delay);
        }
    }
}

/// Records how an automatic checkpoint ended: a failure sets the back-off
/// and is logged once (the next attempt comes only after the back-off, so
/// this is one warning per back-off period); the first success after
/// failures says so and resets it.
fn auto_ended(shared: &Shared, outcome: Result<Lsn>) {
    let mut auto = lock(&shared.auto_checkpoint);
    match outcome {
        Ok(_) => {
            if auto.failures > 0 {
                tracing::info!(
                    failed_before = auto.failures,
                    "automatic checkpoint succeeded after failing"
                );
            }
            auto.failures = 0;
            auto.retry_after = None;
        }
        Err(e) => {
            auto.failures = auto.failures.saturating_add(1);
            let delay = auto_retry_delay(auto.failures);
            auto.retry_after = Some(Instant::now() + delay);
            tracing::warn!(
                error = %e,
                failures_in_a_row = auto.failures,
                retry_in = ?delay,
                "automatic checkpoint failed; the log keeps growing until one succeeds"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_retry_doubles_up_to_its_bound() {
        assert_eq!(auto_retry_delay(1), AUTO_RETRY_MIN);
        assert_eq!(auto_retry_delay(2), AUTO_RETRY_MIN * 2);
        assert_eq!(auto_retry_delay(3), AUTO_RETRY_MIN * 4);
        assert_eq!(auto_retry_delay(0), AUTO_RETRY_MIN);
        assert_eq!(auto_retry_delay(30), AUTO_RETRY_MAX);
        assert_eq!(auto_retry_delay(u32::MAX), AUTO_RETRY_MAX);
    }

    #[test]
    fn pacer_holds_the_budget() {
        // 1 MB/s: 50 kB are due 50 ms after the start, not before.
        let pacer = Pacer::new(Some(1_000_000));
        pacer.wait(50_000);
        assert!(pacer.started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn pacer_does_not_wait_when_behind_or_unpaced() {
        // Behind schedule: 1 kB was due 1 ms after the start, and at least
        // 20 ms have passed (the time passing is the condition itself). A
        // pacer subtracting the elapsed time from the due time without a
        // check would panic here.
        let pacer = Pacer::new(Some(1_000_000));
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        pacer.wait(1_000);
        // Unpaced: a petabyte is never waited for.
        Pacer::new(None).wait(1 << 50);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
