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

use std::io::Cursor;
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
use wal_core::{StdFs, Vfs};

use crate::error::{ClusterError, Result};
use crate::state_file;
use crate::types::{
    CommandResult, Entry, Node, NodeId, TypeConfig, decode_log_id, decode_membership,
    encode_log_id, encode_membership,
};

pub(crate) const SNAPSHOT: &str = "snapshot";

/// The current snapshot's data file in the Raft directory `dir`: a
/// kv-store snapshot, replaced only by a rename.
pub(crate) fn snapshot_path(dir: &Path) -> std::path::PathBuf {
    dir.join(SNAPSHOT)
}
pub(crate) const SNAPSHOT_META: &str = "snapshot.meta";

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

/// The store position of a Raft index: `index + 1`, so that index 0 (a
/// membership entry) is a position too. Fails with
/// [`ClusterError::Corrupt`] for `u64::MAX`, which has no position: such an
/// index comes from a damaged file or a peer's message, never from a log
/// (wal-core gives no LSN past `u64::MAX - 1`).
pub(crate) fn position(index: u64) -> Result<u64> {
    index.checked_add(1).ok_or_else(|| {
        ClusterError::Corrupt(format!(
            "Raft index {index} is past the last store position"
        ))
    })
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
                let vfs: Arc<dyn Vfs> = StdFs::shared();
                replica = Replica::load_snapshot(&vfs, &dir.join(SNAPSHOT), position(last.index)?)?;
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

    /// Applies `entries` in order; an index without a store position
    /// stops the state machine there (openraft treats it as a storage
    /// error), after the entries before it.
    fn apply_entries(&self, entries: Vec<Entry>) -> Result<Vec<CommandResult>> {
        let mut replica = self
            .inner
            .replica
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut applied = lock(&self.inner.applied);
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            let pos = position(entry.log_id.index)?;
            let result = match &entry.payload {
                EntryPayload::Normal(cmd) => match replica.apply(pos, &cmd.0) {
                    Ok(a) => CommandResult {
                        seq: a.seq,
                        existed: a.existed,
                        error: None,
                        txn: a.txn,
                    },
                    // Decided identically on every replica: the entry
                    // changes nothing anywhere.
                    Err(e) => {
                        replica.advance_to(pos);
                        CommandResult {
                            error: Some(e.to_string()),
                            ..CommandResult::default()
                        }
                    }
                },
                EntryPayload::Blank => {
                    replica.advance_to(pos);
                    CommandResult::default()
                }
                EntryPayload::Membership(m) => {
                    replica.advance_to(pos);
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    CommandResult::default()
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
        // The state and the log id it is at, under one read lock.
        let (meta, bytes) = {
            let replica = self
                .inner
                .replica
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let applied = lock(&self.inner.applied).clone();
            replica.write_snapshot(&StdFs, &tmp, now_ms())?;
            let id = applied.last.map_or_else(
                || "empty".to_string(),
                |l| format!("{}-{}-{}", l.leader_id.term, l.index, now_ms()),
            );
            let meta = SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership,
                snapshot_id: id,
            };
            let bytes = std::fs::read(&tmp).map_err(ClusterError::io("read", &tmp))?;
            (meta, bytes)
        };
        self.publish(&tmp, &meta)?;
        lock(&self.inner.applied).snapshot = Some(meta.clone());
        self.inner.built.fetch_add(1, Ordering::Relaxed);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }

    /// Renames a finished, synced snapshot file into place and commits it
    /// with its meta.
    fn publish(&self, data: &Path, meta: &SnapshotMeta<NodeId, Node>) -> Result<()> {
        let dir = &self.inner.dir;
        let path = dir.join(SNAPSHOT);
        std::fs::rename(data, &path).map_err(ClusterError::io("rename", &path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(ClusterError::io("sync directory", dir))?;
        state_file::write(&dir.join(SNAPSHOT_META), &encode_meta(meta))
    }

    /// Installs a received snapshot: written, synced and committed on disk
    /// first, then loaded (verified) and swapped in.
    fn install(&self, meta: &SnapshotMeta<NodeId, Node>, data: Vec<u8>) -> Result<()> {
        let _one = lock(&self.inner.snapshots);
        let dir = &self.inner.dir;
        let tmp = dir.join("snapshot.recv");
        std::fs::write(&tmp, &data).map_err(ClusterError::io("write", &tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(ClusterError::io("sync", &tmp))?;
        let seq = meta.last_log_id.map_or(Ok(0), |l| position(l.index))?;
        let vfs: Arc<dyn Vfs> = StdFs::shared();
        // Verified before it replaces anything.
        let replica = Replica::load_snapshot(&vfs, &tmp, seq)?;
        self.publish(&tmp, meta)?;
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
        let bytes = std::fs::read(&path).map_err(ClusterError::io("read", &path))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

pub(crate) fn encode_meta(meta: &SnapshotMeta<NodeId, Node>) -> RaftSnapshotMeta {
    RaftSnapshotMeta {
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
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
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
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

    #[test]
    fn the_last_raft_index_has_no_position() {
        assert_eq!(position(0).unwrap(), 1);
        assert_eq!(position(u64::MAX - 1).unwrap(), u64::MAX);
        assert!(matches!(position(u64::MAX), Err(ClusterError::Corrupt(_))));
    }
}
