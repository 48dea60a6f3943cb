//! The Raft log on wal-core: `<data-dir>/raft/log` holds one wal-core
//! record per Raft entry (our `RaftEntry` protobuf), `<data-dir>/raft/state`
//! the vote, the purged log id and a committed log id (written atomically
//! when the vote or the purge changes; the committed id it holds may be
//! older than the last commit, see `save_committed`).
//!
//! Raft index and wal-core LSN are both dense and move together, so the
//! mapping is a fixed offset (`lsn = index + offset`), derived from the
//! first record at open (every record carries its index, so it is checked
//! on every read). It changes only when the log is emptied: when
//! `truncate` cuts everything, or a snapshot installed beyond the log's
//! end makes `purge` drop all of it; the next append then sets it anew.
//!
//! Appends go through wal-core's group commit with `append_with`: the
//! records are queued at once and openraft's flush callback runs from
//! wal-core's own callback, after the fdatasync, never before. `truncate`
//! is wal-core's `truncate_after`, `purge` its `truncate_before`, both run
//! on tokio's blocking pool because they fsync.
//!
//! The tail: the newest appended entries are also kept in memory, up to
//! [`TAIL_ENTRIES`] entries and [`TAIL_BYTES`] bytes of commands, and reads
//! that fall in it are served from there. A leader reads every entry back
//! once per follower (to send it) and once more to apply it, and a
//! follower once to apply it: from the tail these are clones that share
//! the commands' buffers, where a read from wal-core is a copy and a
//! protobuf decode with an allocation per command. The tail always ends at
//! the log's last entry and is contiguous; `truncate` and `purge` cut it as
//! they cut the log, and a gap filled with holes empties it.
//!
//! Holes: openraft appends contiguous entries, but its storage test suite
//! also appends with gaps (index 1, then 5). A gap is filled with hole
//! records (a `RaftEntry` without payload) that reads skip, so the log
//! stays dense for wal-core; a gap over [`MAX_HOLE`] is refused.

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kv_proto::{RaftEntry, RaftLogId, RaftState};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, StorageError, StorageIOError, Vote};
use prost::Message;
use wal_core::{RecoveryMode, SyncPolicy, Wal, WalOptions};

use crate::error::{ClusterError, Result};
use crate::state_file;
use crate::types::{
    Entry, NodeId, TypeConfig, decode_entry, decode_log_id, decode_vote, encode_entry,
    encode_log_id, encode_vote, payload_bytes,
};

/// The longest gap filled with holes (see the module docs).
pub const MAX_HOLE: u64 = 1 << 16;

/// Bytes a range read asks wal-core for at a time.
const READ_BATCH: usize = 4 << 20;

/// Most entries the in-memory tail holds (see the module docs). A leader
/// sends a follower at most `max_payload_entries` (16) entries at a time
/// and keeps a few hundred in flight under load.
pub const TAIL_ENTRIES: usize = 4096;

/// Most command bytes the in-memory tail holds.
pub const TAIL_BYTES: usize = 64 << 20;

/// The Raft log storage. Cheap to clone: clones share the log (the clone
/// serves as openraft's log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Wal,
    state_path: PathBuf,
    meta: Mutex<Meta>,
    /// Appends whose records are durable, counted since open.
    appends: Arc<tokio::sync::watch::Sender<u64>>,
}

/// What the log knows beside its records.
#[derive(Debug, Clone, Default)]
struct Meta {
    /// `lsn - index` of the records; `None` while the log holds none.
    offset: Option<i128>,
    /// The last entry in the log.
    last: Option<LogId<NodeId>>,
    /// The persisted Raft state.
    state: RaftState,
    /// The newest entries, ending at `last` (see the module docs).
    tail: Tail,
}

/// The in-memory copy of the log's newest entries: contiguous indexes,
/// the last one the log's last.
#[derive(Debug, Clone, Default)]
struct Tail {
    entries: std::collections::VecDeque<Entry>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// Adds entries that follow the tail's last (or starts it anew), then
    /// drops the oldest beyond the bounds.
    fn extend(&mut self, entries: Vec<Entry>) {
        let follows = match (self.entries.back(), entries.first()) {
            (Some(back), Some(first)) => {
                back.log_id.index.checked_add(1) == Some(first.log_id.index)
            }
            _ => true,
        };
        if !follows {
            self.clear();
        }
        for entry in entries {
            self.bytes += payload_bytes(&entry);
            self.entries.push_back(entry);
        }
        while self.entries.len() > TAIL_ENTRIES
            || (self.bytes > TAIL_BYTES && self.entries.len() > 1)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.entries.pop_front() {
            self.bytes -= payload_bytes(&old);
        }
    }

    /// Drops the entries with index >= `index`.
    fn cut_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= payload_bytes(&old);
            }
        }
    }

    /// Drops the entries with index <= `index`.
    fn cut_upto(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Clones of the entries with indexes in `[start, end)`, which must all
    /// be in the tail.
    fn range(&self, start: u64, end: u64) -> Vec<Entry> {
        let Some(first) = self.first_index() else {
            return Vec::new();
        };
        let from = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
        let to = usize::try_from(end.saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries
            .range(from.min(self.entries.len())..to.min(self.entries.len()))
            .cloned()
            .collect()
    }
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("meta", &*lock(&self.inner.meta))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn storage_error(e: ClusterError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e.into_io()).into()
}

fn read_error(e: ClusterError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e.into_io()).into()
}

impl LogStore {
    /// Opens (creating if needed) the Raft log under `dir` (`<data-dir>/raft`).
    pub fn open(dir: &Path) -> Result<LogStore> {
        std::fs::create_dir_all(dir).map_err(ClusterError::io("create", dir))?;
        let options = WalOptions {
            // Acknowledged entries must never be cut; a torn tail holds
            // only entries whose flush callback never ran.
            recovery_mode: RecoveryMode::Strict,
            // Durability is asked for by `append_with`; nothing else
            // needs a sync of its own.
            sync_policy: SyncPolicy::Always,
            ..WalOptions::default()
        };
        let wal = Wal::open(dir.join("log"), options)?;
        let state_path = dir.join("state");
        let state: RaftState = state_file::read(&state_path)?.unwrap_or_default();
        let mut meta = Meta {
            state,
            ..Meta::default()
        };
        if let (Some(first), Some(last)) = (wal.first_lsn(), wal.last_lsn()) {
            let first_entry = read_record(&wal, first)?;
            let index = first_entry
                .log_id
                .as_ref()
                .map(|id| id.index)
                .ok_or_else(|| ClusterError::Corrupt("first entry has no log id".into()))?;
            meta.offset = Some(i128::from(first) - i128::from(index));
            let last_entry = read_record(&wal, last)?;
            meta.last = last_entry.log_id.as_ref().map(decode_log_id);
        }
        Ok(LogStore {
            inner: Arc::new(Inner {
                wal,
                state_path,
                meta: Mutex::new(meta),
                appends: Arc::new(tokio::sync::watch::channel(0).0),
            }),
        })
    }

    /// The number of appends whose records are durable (since open),
    /// updated after each one's fdatasync: the leader's proposer waits on
    /// it so that writes gather while an entry is being synced.
    pub fn appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.appends.subscribe()
    }

    /// The wal-core log under it (for its counters and durable LSN).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// The index of the last entry known committed, as openraft last told
    /// it; `None` before the first commit.
    pub fn committed_index(&self) -> Option<u64> {
        lock(&self.inner.meta)
            .state
            .committed
            .as_ref()
            .map(|id| decode_log_id(id).index)
    }

    fn save_state(&self, change: impl FnOnce(&mut RaftState)) -> Result<()> {
        let mut meta = lock(&self.inner.meta);
        let mut state = meta.state;
        change(&mut state);
        state_file::write(&self.inner.state_path, &state)?;
        meta.state = state;
        Ok(())
    }

    fn purged(&self) -> Option<LogId<NodeId>> {
        lock(&self.inner.meta)
            .state
            .purged
            .as_ref()
            .map(decode_log_id)
    }

    /// The entries with indexes in `[start, end)` that the log holds.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let meta = lock(&self.inner.meta);
        let Some(offset) = meta.offset else {
            return Ok(Vec::new());
        };
        // The purged id comes from `raft/state`: a damaged one must not
        // overflow.
        let purged_end = match &meta.state.purged {
            None => 0,
            Some(p) => p.index.checked_add(1).ok_or_else(|| {
                ClusterError::Corrupt(format!("purged Raft index {} is past the last", p.index))
            })?,
        };
        let start = start.max(purged_end);
        let last_index = meta.last.map_or(0, |l| l.index);
        let end = end.min(last_index.saturating_add(1));
        if meta.last.is_none() || start >= end {
            return Ok(Vec::new());
        }
        // What the tail holds comes from memory; only what lies before it
        // is read from the log, without holding the lock.
        let in_tail = meta.tail.first_index().filter(|&first| first < end);
        let tail = match in_tail {
            Some(first) => meta.tail.range(start.max(first), end),
            None => Vec::new(),
        };
        let end = in_tail.map_or(end, |first| first.max(start));
        drop(meta);
        let mut out = Vec::new();
        if start < end {
            self.read_log(offset, start, end, &mut out)?;
        }
        out.extend(tail);
        Ok(out)
    }

    /// Reads the entries with indexes in `[start, end)` from the log itself
    /// into `out`.
    fn read_log(&self, offset: i128, start: u64, end: u64, out: &mut Vec<Entry>) -> Result<()> {
        let to_lsn = |index: u64| -> Result<u64> {
            u64::try_from(i128::from(index) + offset)
                .map_err(|_| ClusterError::Corrupt(format!("index {index} maps below LSN 0")))
        };
        let (mut lsn, end_lsn) = (to_lsn(start)?.max(1), to_lsn(end)?);
        while lsn < end_lsn {
            let records = self.inner.wal.read_range(lsn, end_lsn, READ_BATCH)?;
            if records.is_empty() {
                break;
            }
            for record in records {
                lsn = record.lsn + 1;
                let raw = RaftEntry::decode(record.data.as_slice()).map_err(|e| {
                    ClusterError::Corrupt(format!("Raft entry at LSN {}: {e}", record.lsn))
                })?;
                let Some(entry) = decode_entry(&raw)? else {
                    continue;
                };
                let want = i128::from(record.lsn) - offset;
                if i128::from(entry.log_id.index) != want {
                    return Err(ClusterError::Corrupt(format!(
                        "LSN {} holds index {}, expected {want}",
                        record.lsn, entry.log_id.index
                    )));
                }
                out.push(entry);
            }
        }
        Ok(())
    }

    /// Runs blocking work (fsyncs) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(LogStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| ClusterError::Corrupt(format!("log task failed: {e}")))?
    }

    /// Removes entries with index >= `index`.
    fn truncate_from(&self, index: u64) -> Result<()> {
        let mut meta = lock(&self.inner.meta);
        let Some(offset) = meta.offset else {
            return Ok(());
        };
        let Some(last) = meta.last else {
            return Ok(());
        };
        if index > last.index {
            return Ok(());
        }
        let wal = &self.inner.wal;
        let keep = i128::from(index) + offset - 1;
        let oldest = wal.first_lsn().unwrap_or(wal.next_lsn());
        let keep = u64::try_from(keep)
            .unwrap_or(0)
            .max(oldest.saturating_sub(1));
        wal.truncate_after(keep)?;
        meta.tail.cut_from(index);
        if wal.last_lsn().is_none() {
            meta.offset = None;
            meta.last = None;
            meta.tail.clear();
        } else {
            let last = read_record(wal, keep)?;
            meta.last = last.log_id.as_ref().map(decode_log_id);
        }
        Ok(())
    }

    /// Drops entries up to `log_id` (a snapshot covers them).
    fn purge_upto(&self, log_id: LogId<NodeId>) -> Result<()> {
        self.save_state(|s| s.purged = Some(encode_log_id(&log_id)))?;
        let mut meta = lock(&self.inner.meta);
        let wal = &self.inner.wal;
        let (Some(offset), Some(last)) = (meta.offset, meta.last) else {
            return Ok(());
        };
        if log_id.index >= last.index {
            // Everything is covered (a snapshot from beyond the log's end,
            // installed on a lagging follower): empty the log; the next
            // append starts the mapping anew.
            if let Some(first) = wal.first_lsn() {
                wal.truncate_after(first - 1)?;
            }
            meta.offset = None;
            meta.last = None;
            meta.tail.clear();
            return Ok(());
        }
        meta.tail.cut_upto(log_id.index);
        let upto = i128::from(log_id.index) + offset;
        if let Ok(upto) = u64::try_from(upto) {
            wal.truncate_before(upto + 1)?;
        }
        Ok(())
    }
}

/// Reads and decodes the record at `lsn`.
fn read_record(wal: &Wal, lsn: u64) -> Result<RaftEntry> {
    let record = wal
        .read(lsn)?
        .ok_or_else(|| ClusterError::Corrupt(format!("LSN {lsn} is not in the log")))?;
    RaftEntry::decode(record.data.as_slice())
        .map_err(|e| ClusterError::Corrupt(format!("Raft entry at LSN {lsn}: {e}")))
}

fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let (start, end) = range_of(&range);
        self.entries(start, end).map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let meta = lock(&self.inner.meta);
        let purged = meta.state.purged.as_ref().map(decode_log_id);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: meta.last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = encode_vote(vote);
        self.blocking(move |s| s.save_state(|st| st.vote = Some(vote)))
            .await
            .map_err(|e| StorageIOError::write_vote(&e.into_io()).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.inner.meta).state.vote.as_ref().map(decode_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Kept in memory, and written to `raft/state` with the next vote
        // or purge, never on its own: openraft 0.9 awaits this inline after
        // every commit, and a state-file write (two fsyncs and a rename)
        // per commit cost more than the entry's own append. A committed
        // index older than the truth after a crash is safe: openraft
        // applies up to it at start and learns the rest from the leader
        // (a leader's first entry of its term commits everything before).
        lock(&self.inner.meta).state.committed = committed.as_ref().map(encode_log_id);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.inner.meta)
            .state
            .committed
            .as_ref()
            .map(decode_log_id))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first() else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut meta = lock(&self.inner.meta);
        let wal = &self.inner.wal;
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
        match (meta.offset, meta.last) {
            (Some(offset), Some(last)) => {
                let expected = last.index.checked_add(1).ok_or_else(|| {
                    storage_error(ClusterError::Corrupt(format!(
                        "the log's last Raft index {} is past the last one it can hold",
                        last.index
                    )))
                })?;
                if first.log_id.index < expected {
                    return Err(storage_error(ClusterError::Corrupt(format!(
                        "append at index {} over the log's last {}: truncate first",
                        first.log_id.index, last.index
                    ))));
                }
                let gap = first.log_id.index - expected;
                if gap > MAX_HOLE {
                    return Err(storage_error(ClusterError::Corrupt(format!(
                        "append at index {} leaves a gap of {gap} after {}",
                        first.log_id.index, last.index
                    ))));
                }
                for index in expected..first.log_id.index {
                    records.push(hole(last, index).encode_to_vec());
                }
                if first.log_id.index > expected {
                    // Holes are not entries: the tail restarts after them.
                    meta.tail.clear();
                }
                debug_assert_eq!(i128::from(wal.next_lsn()) - i128::from(expected), offset);
            }
            _ => {
                meta.offset = Some(i128::from(wal.next_lsn()) - i128::from(first.log_id.index));
                meta.tail.clear();
            }
        }
        for entry in &entries {
            records.push(encode_entry(entry).encode_to_vec());
        }
        let last_id = entries.last().map(|e| e.log_id);
        let appends = Arc::clone(&self.inner.appends);
        let appended = wal.append_with(&records, move |result| {
            callback.log_io_completed(
                result
                    .map(|_| ())
                    .map_err(|e| ClusterError::from(e).into_io()),
            );
            appends.send_modify(|n| *n += 1);
        });
        match appended {
            Ok(_) => {
                meta.last = last_id;
                // The entries are the tail's now: no clone.
                meta.tail.extend(entries);
                Ok(())
            }
            Err(e) => Err(storage_error(e.into())),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |s| s.truncate_from(log_id.index))
            .await
            .map_err(storage_error)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        if self.purged().is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        self.blocking(move |s| s.purge_upto(log_id))
            .await
            .map_err(storage_error)
    }
}

/// A record that fills index `index` of a gap: it carries the log id but no
/// payload, and reads skip it.
fn hole(after: LogId<NodeId>, index: u64) -> RaftEntry {
    RaftEntry {
        log_id: Some(RaftLogId {
            index,
            ..encode_log_id(&after)
        }),
        payload: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Batch;
    use bytes::Bytes;

    fn entry(term: u64, index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: openraft::EntryPayload::Normal(Batch(vec![Bytes::from(vec![0u8; bytes])])),
        }
    }

    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn the_tail_follows_appends_truncations_and_purges() {
        let mut tail = Tail::default();
        tail.extend((1..=10).map(|i| entry(1, i, 10)).collect::<Vec<_>>());
        assert_eq!(tail.bytes, 100);
        assert_eq!(ids(&tail.range(4, 7)), vec![(1, 4), (1, 5), (1, 6)]);
        // A new leader overwrites from 6.
        tail.cut_from(6);
        tail.extend(vec![entry(2, 6, 10), entry(2, 7, 10)]);
        assert_eq!(
            ids(&tail.range(5, 100)),
            vec![(1, 5), (2, 6), (2, 7)],
            "reads past the end stop at the last entry"
        );
        tail.cut_upto(3);
        assert_eq!(tail.first_index(), Some(4));
        assert_eq!(tail.bytes, 40);
        // Entries that do not follow the tail's last start it anew.
        tail.extend(vec![entry(2, 20, 10)]);
        assert_eq!(ids(&tail.range(0, 100)), vec![(2, 20)]);
    }

    #[test]
    fn the_tail_keeps_at_most_its_bounds_and_never_drops_the_last() {
        let mut tail = Tail::default();
        tail.extend(
            (1..=(TAIL_ENTRIES as u64 + 10))
                .map(|i| entry(1, i, 1))
                .collect::<Vec<_>>(),
        );
        assert_eq!(tail.entries.len(), TAIL_ENTRIES);
        assert_eq!(tail.first_index(), Some(11));
        // One entry larger than the byte bound stays (it is the last).
        tail.extend(vec![entry(1, TAIL_ENTRIES as u64 + 11, TAIL_BYTES + 1)]);
        assert_eq!(
            ids(&tail.range(0, u64::MAX)),
            vec![(1, TAIL_ENTRIES as u64 + 11)]
        );
        assert_eq!(tail.bytes, TAIL_BYTES + 1);
    }

    #[test]
    fn reads_join_the_log_and_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        // Entries written to the log as `append` writes them, with the tail
        // holding only the newest.
        let entries: Vec<Entry> = (1..=20).map(|i| entry(1, i, 8)).collect();
        let records: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| encode_entry(e).encode_to_vec())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .inner
            .wal
            .append_with(&records, move |r| {
                let _ = tx.send(r.is_ok());
            })
            .unwrap();
        assert!(rx.recv().unwrap());
        {
            let mut meta = lock(&store.inner.meta);
            meta.offset = Some(i128::from(store.inner.wal.first_lsn().unwrap()) - 1);
            meta.last = Some(entries[19].log_id);
            meta.tail.extend(entries[15..].to_vec());
        }
        let read = store.entries(3, 19).unwrap();
        assert_eq!(ids(&read), (3..19).map(|i| (1, i)).collect::<Vec<_>>());
        assert_eq!(read, entries[2..18].to_vec());
        // Wholly in the tail, and wholly before it.
        assert_eq!(store.entries(17, 21).unwrap(), entries[16..].to_vec());
        assert_eq!(store.entries(1, 5).unwrap(), entries[..4].to_vec());
    }
}
