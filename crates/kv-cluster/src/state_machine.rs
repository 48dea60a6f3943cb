//! The Raft state machine: kv-store's [`Replica`], changed only by
//! committed entries through its one apply function, and snapshotted into
//! kv-store's own snapshot format.
//!
//! A snapshot is two files in `<data-dir>/raft/`: `snapshot` (the store's
//! format, holding the state at a Raft index) and `snapshot.meta` (our
//! `RaftSnapshotMeta`: the last log id and membership it covers, and its
//! id). Both are written as temp file, fsync, rename, fsync of the
//! directory, data first, and the meta is the commit point. A crash
//! between the two renames leaves new data under the old meta: the data's
//! own header names its index, which then disagrees with the meta's, and
//! open refuses the pair rather than load a state at the wrong index.
//! (Keeping the previous data file until the meta is replaced would make
//! that crash recoverable without help; see the cluster issue's notes.)
//!
//! Applying is in memory; the Raft log is what makes it durable. At open,
//! the state is the snapshot's, and openraft re-applies the committed
//! entries after it.
//!
//! A snapshot is the exact state at its log id, yet it is copied in pieces
//! while entries keep being applied: the replica keeps what each key
//! changed since the snapshot's beginning held
//! ([`Replica::begin_snapshot`]), and the copy takes that instead.
//!
//! openraft's snapshot data is an open file, never the snapshot in memory:
//! a built or current snapshot is read from its file as openraft sends it
//! in chunks, and a received one is written chunk by chunk into
//! `snapshot.recv`, so a snapshot's size costs disk, not memory.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kv_proto::RaftSnapshotMeta;
use kv_store::replica::Replica;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use tokio::io::AsyncWriteExt;
use wal_core::{StdFs, Vfs};

use crate::error::{ClusterError, Result};
use crate::state_file;
use crate::types::{
    Batch, BatchResult, CommandResult, Entry, Node, NodeId, TypeConfig, decode_log_id,
    decode_membership, encode_log_id, encode_membership,
};

pub(crate) const SNAPSHOT: &str = "snapshot";

/// The current snapshot's data file in the Raft directory `dir`: a
/// kv-store snapshot, replaced only by a rename.
pub(crate) fn snapshot_path(dir: &Path) -> std::path::PathBuf {
    dir.join(SNAPSHOT)
}
pub(crate) const SNAPSHOT_META: &str = "snapshot.meta";
/// Where a snapshot received from the leader is written before it is
/// verified and renamed into place.
const RECEIVED: &str = "snapshot.recv";

/// The state machine. Cheap to clone: clones share the state (a clone is
/// openraft's snapshot builder).
#[derive(Clone, Debug)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    replica: RwLock<Replica>,
    applied: Mutex<Applied>,
    /// Serialises snapshot building and installing.
    snapshots: Mutex<()>,
    /// Snapshots built here since open.
    built: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    snapshot: Option<SnapshotMeta<NodeId, Node>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The store position after `n`: `n + 1`. For a Raft index, the first
/// position its entry can take (index 0, a membership entry, is at
/// position 1). Fails with [`ClusterError::Corrupt`] for `u64::MAX`, which
/// has no next position: such an index comes from a damaged file or a
/// peer's message, never from a log (wal-core gives no LSN past
/// `u64::MAX - 1`).
pub(crate) fn position(index: u64) -> Result<u64> {
    index.checked_add(1).ok_or_else(|| {
        ClusterError::Corrupt(format!(
            "Raft index {index} is past the last store position"
        ))
    })
}

/// The store position for the next command of the entry at `index`: the
/// one after the last one `replica` applied, and never before the index's
/// first (openraft applies entries contiguously, so that bound only bites
/// for logs with gaps, as in its storage test suite). Fails with
/// [`ClusterError::Corrupt`] past `u64::MAX`.
fn next_position(replica: &Replica, index: u64) -> Result<u64> {
    Ok(position(replica.last_applied())?.max(position(index)?))
}

fn sm_error(e: ClusterError) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e.into_io()).into()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl StateMachine {
    /// Opens the state machine under `dir` (`<data-dir>/raft`): the latest
    /// snapshot if there is one, else the empty state.
    pub fn open(dir: &Path) -> Result<StateMachine> {
        std::fs::create_dir_all(dir).map_err(ClusterError::io("create", dir))?;
        let mut applied = Applied::default();
        let mut replica = Replica::new();
        if let Some(meta) = state_file::read::<RaftSnapshotMeta>(&dir.join(SNAPSHOT_META))? {
            let snapshot_meta = decode_meta(&meta);
            if let Some(last) = snapshot_meta.last_log_id {
                let first = position(last.index)?;
                // 0: a meta from before batches, when the position was
                // always the first one.
                let at = match meta.store_position {
                    0 => first,
                    at if at >= first => at,
                    at => {
                        return Err(ClusterError::Corrupt(format!(
                            "snapshot meta puts index {} at store position {at}, before {first}",
                            last.index
                        )));
                    }
                };
                let vfs: Arc<dyn Vfs> = StdFs::shared();
                replica = Replica::load_snapshot(&vfs, &dir.join(SNAPSHOT), at)?;
            }
            applied = Applied {
                last: snapshot_meta.last_log_id,
                membership: snapshot_meta.last_membership.clone(),
                snapshot: Some(snapshot_meta),
            };
        }
        Ok(StateMachine {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                replica: RwLock::new(replica),
                applied: Mutex::new(applied),
                snapshots: Mutex::new(()),
                built: AtomicU64::new(0),
            }),
        })
    }

    /// Reads the state (after a linearizable read barrier, the caller's
    /// business).
    pub fn read<T>(&self, f: impl FnOnce(&Replica) -> T) -> T {
        f(&self
            .inner
            .replica
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Snapshots built on this member since it started (checkpoints and
    /// openraft's own, not received ones).
    pub fn snapshots_built(&self) -> u64 {
        self.inner.built.load(Ordering::Relaxed)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        lock(&self.inner.applied).last
    }

    /// Applies `entries` in order. Each command takes the store position
    /// after the last one (its key's new version), and an entry that
    /// carries none takes one too, so positions increase with the log,
    /// every entry holding at least one: an entry at index `i` is at
    /// position `i + 1` or later (see [`next_position`]), and a log written
    /// before entries carried batches (one position each) keeps the
    /// positions it had. Every
    /// replica applies the same entries in the same order from the same
    /// snapshot, so they agree on every position. A position past
    /// `u64::MAX` stops the state machine there (openraft treats it as a
    /// storage error), after the commands before it.
    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<BatchResult>> {
        let mut replica = self
            .inner
            .replica
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut applied = lock(&self.inner.applied);
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            let result = match &entry.payload {
                EntryPayload::Normal(Batch(commands)) if !commands.is_empty() => {
                    let mut results = Vec::with_capacity(commands.len());
                    for command in commands {
                        let pos = next_position(&replica, entry.log_id.index)?;
                        results.push(match replica.apply_shared(pos, command.clone()) {
                            Ok(a) => CommandResult {
                                seq: a.seq,
                                index: entry.log_id.index,
                                existed: a.existed,
                                error: None,
                                txn: a.txn,
                            },
                            // Decided identically on every replica: the
                            // command changes nothing anywhere.
                            Err(e) => {
                                replica.advance_to(pos);
                                CommandResult {
                                    index: entry.log_id.index,
                                    error: Some(e.to_string()),
                                    ..CommandResult::default()
                                }
                            }
                        });
                    }
                    BatchResult(results)
                }
                EntryPayload::Normal(_) | EntryPayload::Blank => {
                    let pos = next_position(&replica, entry.log_id.index)?;
                    replica.advance_to(pos);
                    BatchResult::default()
                }
                EntryPayload::Membership(m) => {
                    let pos = next_position(&replica, entry.log_id.index)?;
                    replica.advance_to(pos);
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    BatchResult::default()
                }
            };
            applied.last = Some(entry.log_id);
            results.push(result);
        }
        Ok(results)
    }

    /// Writes the current state as the snapshot (data, then meta) and
    /// returns it.
    fn build(&self) -> Result<Snapshot<TypeConfig>> {
        let _one = lock(&self.inner.snapshots);
        let dir = &self.inner.dir;
        let tmp = dir.join("snapshot.build");
        let _ = std::fs::remove_file(&tmp);
        // The log id and the store position the snapshot holds, taken
        // together under the write lock (applying takes it too). The state
        // is then copied in pieces with the lock let go in between, so that
        // applying goes on: the replica keeps, for the keys changed
        // meanwhile, what they held at the beginning, and the snapshot is
        // exactly the state at that log id.
        let (meta, at) = {
            let mut replica = self
                .inner
                .replica
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let applied = lock(&self.inner.applied).clone();
            let at = replica.begin_snapshot();
            let id = applied.last.map_or_else(
                || "empty".to_string(),
                |l| format!("{}-{}-{}", l.leader_id.term, l.index, now_ms()),
            );
            let meta = SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership,
                snapshot_id: id,
            };
            (meta, at)
        };
        let read = || {
            self.inner
                .replica
                .read()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let written = kv_store::replica::write_begun_snapshot(read, &StdFs, &tmp, now_ms());
        self.inner
            .replica
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .end_snapshot();
        written?.sync()?;
        // Opened before the rename: the handle reads this snapshot even if
        // a later one replaces the name.
        let data = std::fs::File::open(&tmp).map_err(ClusterError::io("open", &tmp))?;
        self.publish(&tmp, &meta, at)?;
        lock(&self.inner.applied).snapshot = Some(meta.clone());
        self.inner.built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(data)),
        })
    }

    /// Renames a finished, synced snapshot file into place and commits it
    /// with its meta; the data holds the state at store position `at`.
    fn publish(&self, data: &Path, meta: &SnapshotMeta<NodeId, Node>, at: u64) -> Result<()> {
        let dir = &self.inner.dir;
        let path = dir.join(SNAPSHOT);
        std::fs::rename(data, &path).map_err(ClusterError::io("rename", &path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(ClusterError::io("sync directory", dir))?;
        state_file::write(&dir.join(SNAPSHOT_META), &encode_meta(meta, at))
    }

    /// A new, empty `snapshot.recv` for a snapshot about to be received.
    /// The old one is unlinked first, so a handle to it that openraft
    /// dropped with an abandoned transfer writes to no file of ours.
    fn begin_receiving(&self) -> Result<std::fs::File> {
        let _one = lock(&self.inner.snapshots);
        let tmp = self.inner.dir.join(RECEIVED);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ClusterError::io("remove", &tmp)(e));
            }
            _ => {}
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(ClusterError::io("create", &tmp))
    }

    /// Installs a received snapshot: synced and committed on disk first,
    /// then loaded (verified) and swapped in. `data` is normally
    /// `snapshot.recv` as [`StateMachine::begin_receiving`] made it; any
    /// other file (openraft's storage test suite hands over another
    /// state machine's snapshot) is first copied there from its start.
    fn install(&self, meta: &SnapshotMeta<NodeId, Node>, mut data: std::fs::File) -> Result<()> {
        let _one = lock(&self.inner.snapshots);
        let dir = &self.inner.dir;
        let tmp = dir.join(RECEIVED);
        if !same_file(&data, &tmp)? {
            let _ = std::fs::remove_file(&tmp);
            let mut copy =
                std::fs::File::create_new(&tmp).map_err(ClusterError::io("create", &tmp))?;
            data.seek(SeekFrom::Start(0))
                .and_then(|_| std::io::copy(&mut data, &mut copy))
                .map_err(ClusterError::io("write", &tmp))?;
            data = copy;
        }
        data.sync_all().map_err(ClusterError::io("sync", &tmp))?;
        drop(data);
        let vfs: Arc<dyn Vfs> = StdFs::shared();
        // Verified before it replaces anything. Its position is its
        // header's (the leader's store position at that index), which
        // cannot be before the index's first one.
        let replica = Replica::load_any_snapshot(&vfs, &tmp)?;
        let at = replica.last_applied();
        if let Some(last) = meta.last_log_id
            && at < position(last.index)?
        {
            return Err(ClusterError::Corrupt(format!(
                "received snapshot of index {} holds store position {at}",
                last.index
            )));
        }
        self.publish(&tmp, meta, at)?;
        *self
            .inner
            .replica
            .write()
            .unwrap_or_else(PoisonError::into_inner) = replica;
        *lock(&self.inner.applied) = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
            snapshot: Some(meta.clone()),
        };
        Ok(())
    }

    fn current(&self) -> Result<Option<Snapshot<TypeConfig>>> {
        let _one = lock(&self.inner.snapshots);
        let Some(meta) = lock(&self.inner.applied).snapshot.clone() else {
            return Ok(None);
        };
        let path = self.inner.dir.join(SNAPSHOT);
        let data = std::fs::File::open(&path).map_err(ClusterError::io("open", &path))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(data)),
        }))
    }
}

/// Whether the open `file` is the file at `path` (false if there is none).
fn same_file(file: &std::fs::File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().map_err(ClusterError::io("stat", path))?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(open.dev() == named.dev() && open.ino() == named.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClusterError::io("stat", path)(e)),
    }
}

/// Our form of a snapshot's meta, whose data holds the state at store
/// position `at` (0 where that is not said: on the wire, where the data's
/// own header says it).
pub(crate) fn encode_meta(meta: &SnapshotMeta<NodeId, Node>, at: u64) -> RaftSnapshotMeta {
    RaftSnapshotMeta {
        store_position: at,
        last_log_id: meta.last_log_id.as_ref().map(encode_log_id),
        membership_log_id: meta.last_membership.log_id().as_ref().map(encode_log_id),
        membership: Some(encode_membership(meta.last_membership.membership())),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

pub(crate) fn decode_meta(meta: &RaftSnapshotMeta) -> SnapshotMeta<NodeId, Node> {
    SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(decode_log_id),
        last_membership: StoredMembership::new(
            meta.membership_log_id.as_ref().map(decode_log_id),
            meta.membership
                .as_ref()
                .map(decode_membership)
                .unwrap_or_default(),
        ),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

/// Runs blocking work (file I/O, fsync) off the async workers.
async fn blocking<T: Send + 'static>(
    sm: &StateMachine,
    work: impl FnOnce(StateMachine) -> Result<T> + Send + 'static,
) -> Result<T> {
    let sm = sm.clone();
    tokio::task::spawn_blocking(move || work(sm))
        .await
        .map_err(|e| ClusterError::Corrupt(format!("state machine task failed: {e}")))?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        blocking(self, |sm| sm.build())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e.into_io()).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        let applied = lock(&self.inner.applied);
        Ok((applied.last, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries.into_iter().collect())
            .map_err(sm_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let file = blocking(self, |sm| sm.begin_receiving())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e.into_io()))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let meta = meta.clone();
        let mut file = *snapshot;
        // tokio's file finishes a write in the background: wait for the
        // last chunk before the file is read as a plain one.
        file.flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let data = file.into_std().await;
        blocking(self, move |sm| sm.install(&meta, data))
            .await
            .map_err(sm_error)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        blocking(self, |sm| sm.current())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e.into_io()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn puts(pairs: &[(&str, &str)]) -> EntryPayload<TypeConfig> {
        EntryPayload::Normal(Batch(
            pairs
                .iter()
                .map(|(k, v)| kv_store::replica::encode_put(k.as_bytes(), v.as_bytes()).into())
                .collect(),
        ))
    }

    #[test]
    fn every_command_of_a_batch_has_a_version_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        let results = sm
            .apply_entries(vec![
                entry(0, EntryPayload::Blank),
                // Two writes of one key in one entry: two versions.
                entry(1, puts(&[("k", "a"), ("k", "b"), ("j", "x")])),
                entry(2, EntryPayload::Normal(Batch(Vec::new()))),
                entry(3, puts(&[("k", "c")])),
            ])
            .unwrap();
        let seqs: Vec<Vec<(u64, u64, bool)>> = results
            .iter()
            .map(|r| r.0.iter().map(|c| (c.seq, c.index, c.existed)).collect())
            .collect();
        assert_eq!(
            seqs,
            vec![
                vec![],
                vec![(2, 1, false), (3, 1, true), (4, 1, false)],
                vec![],
                vec![(6, 3, true)],
            ]
        );
        sm.read(|r| {
            assert_eq!(r.last_applied(), 6);
            let k = r.get_versioned(b"k").unwrap();
            assert_eq!((k.value.as_slice(), k.seq), (&b"c"[..], 6));
            assert_eq!(r.get_versioned(b"j").unwrap().seq, 4);
        });
    }

    #[test]
    fn entries_of_one_command_keep_the_positions_they_had_before_batches() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        let entries = (0..5)
            .map(|i| entry(i, puts(&[("k", "v")])))
            .collect::<Vec<_>>();
        let results = sm.apply_entries(entries).unwrap();
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.0[0].seq, i as u64 + 1);
        }
    }

    #[test]
    fn a_snapshot_keeps_its_store_position_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        sm.apply_entries(vec![entry(0, puts(&[("a", "1"), ("b", "2"), ("c", "3")]))])
            .unwrap();
        sm.build().unwrap();
        drop(sm);
        let sm = StateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.read(|r| r.last_applied()), 3);
        let r = sm
            .apply_entries(vec![entry(1, puts(&[("a", "4")]))])
            .unwrap();
        assert_eq!(r[0].0[0].seq, 4);
    }

    /// A snapshot goes from one state machine to another as files: the
    /// leader's is read from its file, the follower writes what it
    /// receives into `snapshot.recv` (here in two writes, as chunks come),
    /// and installing renames it into place.
    /// A state machine in a new directory that applied `pairs` at index 0
    /// and built a snapshot of them.
    async fn snapshotted(
        pairs: &[(&str, &str)],
    ) -> (tempfile::TempDir, StateMachine, Snapshot<TypeConfig>) {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachine::open(dir.path()).unwrap();
        sm.apply_entries(vec![entry(0, puts(pairs))]).unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        (dir, sm, built)
    }

    #[tokio::test]
    async fn a_snapshot_travels_from_file_to_file() {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let (dl, mut leader, built) = snapshotted(&[("a", "1"), ("b", "2")]).await;
        let df = tempfile::tempdir().unwrap();
        let mut sent = leader.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(sent.meta, built.meta);
        let mut bytes = Vec::new();
        sent.snapshot.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(bytes, std::fs::read(dl.path().join(SNAPSHOT)).unwrap());

        let mut follower = StateMachine::open(df.path()).unwrap();
        // An abandoned transfer first: its handle must not reach the file
        // of the next one.
        let mut abandoned = follower.begin_receiving_snapshot().await.unwrap();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        abandoned.write_all(b"garbage").await.unwrap();
        abandoned.flush().await.unwrap();
        let half = bytes.len() / 2;
        receiving.write_all(&bytes[..half]).await.unwrap();
        receiving.seek(SeekFrom::Start(half as u64)).await.unwrap();
        receiving.write_all(&bytes[half..]).await.unwrap();
        follower
            .install_snapshot(&sent.meta, receiving)
            .await
            .unwrap();
        assert!(!df.path().join(RECEIVED).exists());
        assert_eq!(std::fs::read(df.path().join(SNAPSHOT)).unwrap(), bytes);
        follower.read(|r| {
            assert_eq!(r.get_versioned(b"b").unwrap().value, b"2");
        });
        assert_eq!(follower.last_applied(), sent.meta.last_log_id);
        drop(follower);
        let reopened = StateMachine::open(df.path()).unwrap();
        assert_eq!(reopened.read(|r| r.last_applied()), 2);
    }

    /// A damaged transfer is refused and replaces nothing.
    #[tokio::test]
    async fn a_damaged_received_snapshot_is_refused() {
        let (dl, _leader, built) = snapshotted(&[("a", "1")]).await;
        let df = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read(dl.path().join(SNAPSHOT)).unwrap();
        let last = bytes.len() - 1;
        bytes[last / 2] ^= 0xff;
        let mut follower = StateMachine::open(df.path()).unwrap();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        receiving.write_all(&bytes).await.unwrap();
        assert!(
            follower
                .install_snapshot(&built.meta, receiving)
                .await
                .is_err()
        );
        assert!(!df.path().join(SNAPSHOT).exists());
        assert_eq!(follower.last_applied(), None);
    }

    #[test]
    fn the_last_raft_index_has_no_position() {
        assert_eq!(position(0).unwrap(), 1);
        assert_eq!(position(u64::MAX - 1).unwrap(), u64::MAX);
        assert!(matches!(position(u64::MAX), Err(ClusterError::Corrupt(_))));
    }
}
