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

/// Entries copied per read-lock acquisition: small enough that the commit
/// thread waits at most about a hundred microseconds for the write lock (on
/// 2 busy cores a longer hold is also more likely to be preempted midway,
/// stalling every writer for a scheduler tick), large enough that the lock
/// is not taken millions of times.
pub(crate) const CHUNK: usize = 1024;

/// After a failed automatic checkpoint, wait this long before the next try,
/// so that a persistent error (a full disk) does not start one per batch.
const AUTO_RETRY: Duration = Duration::from_secs(1);

/// Resets the "checkpoint running" flag however the checkpoint ends.
struct Running<'a>(&'a Shared);
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.checkpoint_running.store(false, Ordering::Release);
    }
}

/// Runs one checkpoint; blocks while another runs. Returns the LSN the new
/// snapshot covers.
pub(crate) fn run(shared: &Shared) -> Result<Lsn> {
    let _one_at_a_time = lock(&shared.checkpoint_lock);
    shared.checkpoint_running.store(true, Ordering::Release);
    let _running = Running(shared);
    let started = Instant::now();

    let n = {
        let _commit = lock(&shared.commit_lock);
        if let Some(reason) = shared.failure() {
            return Err(Error::Unavailable(reason.to_string()));
        }
        shared.wal.rotate()?;
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
                writer.add(entry.key(), entry.value())?;
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
/// outgrown `checkpoint_after` and none is running. Called by the commit
/// thread after each batch.
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
    // a second one before this one has taken the checkpoint lock.
    shared.checkpoint_running.store(true, Ordering::Release);
    let bg = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("kv-checkpoint".into())
        .spawn(move || {
            if let Err(e) = run(&bg) {
                tracing::warn!(error = %e, "automatic checkpoint failed");
                lock(&bg.auto_checkpoint).retry_after = Some(Instant::now() + AUTO_RETRY);
            }
        });
    match spawned {
        Ok(handle) => auto.thread = Some(handle),
        Err(e) => {
            shared.checkpoint_running.store(false, Ordering::Release);
            tracing::warn!(error = %e, "could not start an automatic checkpoint");
            auto.retry_after = Some(Instant::now() + AUTO_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
