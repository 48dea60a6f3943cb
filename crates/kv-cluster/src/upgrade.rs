//! The upgrade path: a single node's data directory becomes the first
//! member of a new cluster, keeping its data.
//!
//! A single node keeps its state in `<data-dir>/wal/` and
//! `<data-dir>/snapshots/`; a member keeps its own in `<data-dir>/raft/`.
//! Neither reads the other's files, so without this module a directory
//! started the other way would silently come up empty. [`prepare_member`]
//! (before a member starts) and [`check_single_node`] (before a single node
//! opens its store) look at what the directory holds and either go on,
//! import, or refuse with [`ClusterError::DataDir`] saying what to do.
//!
//! # The import
//!
//! A directory with single-node data and no Raft state, started as a
//! one-member cluster (`--node-id N --initial-cluster N=CLIENT/PEER`), is
//! imported by seeding the member's state machine with a snapshot, not by
//! replaying the data through the Raft log:
//!
//! 1. the single-node store is opened (recovered as a single node would)
//!    and its whole state written to `raft/snapshot.import` in kv-store's
//!    snapshot format, at the single node's last LSN (its store
//!    position), and synced;
//! 2. that file is renamed to `raft/snapshot` (directory synced) and
//!    `raft/snapshot.meta` written atomically: a snapshot at log id
//!    `(term 0, index 0)` whose membership is the one member. That is the
//!    state openraft itself reaches after `initialize` when it snapshots
//!    and purges index 0; at start openraft finds the state machine ahead
//!    of the empty log and purges the log up to it, the member elects
//!    itself and goes on from index 1;
//! 3. `raft/imported` is written atomically: the import is complete;
//! 4. `wal/` and `snapshots/` are moved into `single-node.imported/`, so
//!    that they are never imported twice and the operator may delete them.
//!
//! Why a snapshot rather than batches of puts through the log: the state
//! arrives in one step whose commit point is one rename, so there is no
//! half-imported state a client could see or that a retry must reconcile;
//! the import costs one sequential write of the data (a checkpoint's
//! cost), not one Raft entry per key and the data twice on disk (log, then
//! snapshot); and members added later catch up by the ordinary snapshot
//! transfer, since the leader's log starts after the snapshot.
//!
//! A crash anywhere before step 3 leaves the single-node files untouched
//! and `raft/` holding only files of the import (never a vote or a log),
//! so the next start redoes the import from the start. A crash after step
//! 3 leaves the marker: the next start only finishes moving the files
//! aside. No client request is served before all of this is done.
//!
//! Versions: a put's answer carries the store position its command was
//! applied at. The imported state sits at the single node's last LSN, so
//! the cluster's positions go on from there: every write after the upgrade
//! gets a version above every imported key's, and a conditional write on
//! a version read before the upgrade still means that version.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kv_store::{KeyValueStore, StoreOptions};
use openraft::{LogId, Membership, SnapshotMeta, StoredMembership};
use wal_core::StdFs;

use crate::error::{ClusterError, Result};
use crate::state_file;
use crate::state_machine::{SNAPSHOT, SNAPSHOT_META, encode_meta, position};
use crate::types::{Node, NodeId};

/// The single node's directories in a data directory.
const SINGLE_NODE_DIRS: [&str; 2] = ["wal", "snapshots"];
/// Where the single node's directories go once imported.
pub const IMPORTED_DIR: &str = "single-node.imported";
/// The member's directory in a data directory.
const RAFT_DIR: &str = "raft";
/// Written under `raft/` once the import is complete.
const MARKER: &str = "imported";
/// The import's snapshot while it is written.
const IMPORT_TMP: &str = "snapshot.import";
/// Every file an import writes under `raft/` before its marker is in place
/// (the snapshot, its meta, and the temp files of both and of the marker).
const UNFINISHED_IMPORT_FILES: [&str; 5] = [
    SNAPSHOT_META,
    SNAPSHOT,
    IMPORT_TMP,
    "snapshot.tmp",
    "imported.tmp",
];
/// The snapshot id of an imported state.
const IMPORT_SNAPSHOT_ID: &str = "imported-single-node";

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Keys imported.
    pub keys: u64,
    /// The single node's last LSN.
    pub single_node_lsn: u64,
    /// Where the single node's files now are.
    pub moved_to: PathBuf,
}

/// What [`prepare_member`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Nothing to do: a fresh directory, or one that is already a member's.
    Nothing,
    /// The single node's data was imported now.
    Imported(Imported),
    /// An earlier import was complete; its files were moved aside now.
    FinishedEarlierImport,
}

/// What `raft/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RaftFiles {
    /// Nothing (or no `raft/`).
    None,
    /// Only files an unfinished import writes.
    UnfinishedImport,
    /// A member's state (a vote, a log, ...).
    Member,
}

/// What a data directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    single_node: bool,
    imported: bool,
    raft: RaftFiles,
}

fn inspect(data_dir: &Path) -> Result<Layout> {
    let single_node = SINGLE_NODE_DIRS.iter().any(|d| data_dir.join(d).exists());
    let raft_dir = data_dir.join(RAFT_DIR);
    let imported = raft_dir.join(MARKER).exists();
    let raft = match fs::read_dir(&raft_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RaftFiles::None,
        Err(e) => return Err(ClusterError::io("list", &raft_dir)(e)),
        Ok(entries) => {
            let mut raft = RaftFiles::None;
            for entry in entries {
                let entry = entry.map_err(ClusterError::io("list", &raft_dir))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if UNFINISHED_IMPORT_FILES.contains(&&*name) {
                    raft = RaftFiles::UnfinishedImport;
                } else {
                    raft = RaftFiles::Member;
                    break;
                }
            }
            raft
        }
    };
    Ok(Layout {
        single_node,
        imported,
        raft,
    })
}

/// Checks a data directory before a single node (no `--node-id`) opens its
/// store in it: refused if it holds a cluster member's state, which the
/// single node would not read (it would start empty and hide it).
pub fn check_single_node(data_dir: &Path) -> Result<()> {
    let layout = inspect(data_dir)?;
    if layout.imported || layout.raft == RaftFiles::Member {
        return Err(ClusterError::DataDir(format!(
            "data directory {} holds a cluster member's state ({RAFT_DIR}/), which a single \
             node does not read: start it with the --node-id and --initial-cluster it was \
             started with, or give the single node another --data-dir",
            data_dir.display()
        )));
    }
    Ok(())
}

/// Readies the data directory of member `node_id` of the cluster
/// `members` before it starts (blocking: file I/O and fsync). Single-node
/// data is imported if this is a one-member cluster of this member (see
/// the module docs) and refused otherwise; an import a crash interrupted
/// is redone or finished. `store` is how to open the single node's store
/// (its size limits and recovery mode).
pub fn prepare_member(
    data_dir: &Path,
    node_id: NodeId,
    members: &BTreeMap<NodeId, Node>,
    join: bool,
    store: StoreOptions,
) -> Result<Prepared> {
    prepare_until(data_dir, node_id, members, join, store, None)
}

/// The steps of an import, for tests that stop after one of them, as a
/// crash would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    SnapshotWritten,
    SnapshotInPlace,
    MetaWritten,
    Marked,
    FirstDirMoved,
}

fn prepare_until(
    data_dir: &Path,
    node_id: NodeId,
    members: &BTreeMap<NodeId, Node>,
    join: bool,
    store: StoreOptions,
    stop_after: Option<Step>,
) -> Result<Prepared> {
    let layout = inspect(data_dir)?;
    match layout {
        Layout {
            imported: true,
            single_node: true,
            ..
        } => {
            tracing::info!(
                data_dir = %data_dir.display(),
                "the single-node data was imported before a restart; moving its files aside"
            );
            move_aside(data_dir, None)?;
            Ok(Prepared::FinishedEarlierImport)
        }
        Layout {
            single_node: true,
            raft: RaftFiles::Member,
            ..
        } => Err(ClusterError::DataDir(format!(
            "data directory {} holds both a single node's data (wal/, snapshots/) and a \
             cluster member's state ({RAFT_DIR}/): move one of them elsewhere",
            data_dir.display()
        ))),
        Layout {
            single_node: true, ..
        } => {
            let alone = members.len() == 1 && members.contains_key(&node_id);
            if join || !alone {
                return Err(ClusterError::DataDir(format!(
                    "data directory {} holds a single node's data (wal/, snapshots/), which a \
                     member of a larger cluster would hide: to keep it, first start this \
                     node alone as a one-member cluster (--node-id {node_id} \
                     --initial-cluster {node_id}=CLIENT_ADDR/PEER_ADDR), which imports it, \
                     then add the other members with `kv-client cluster add` (README, \
                     \"Upgrading a single node\")",
                    data_dir.display()
                )));
            }
            let node = &members[&node_id];
            import(data_dir, node_id, node, store, stop_after).map(Prepared::Imported)
        }
        Layout {
            imported: false,
            raft: RaftFiles::UnfinishedImport,
            ..
        } => Err(ClusterError::DataDir(format!(
            "data directory {} holds an unfinished import ({RAFT_DIR}/{SNAPSHOT}) but no \
             single-node data to finish it from: restore wal/ and snapshots/, or remove \
             {RAFT_DIR}/ to start an empty member",
            data_dir.display()
        ))),
        _ => Ok(Prepared::Nothing),
    }
}

fn import(
    data_dir: &Path,
    node_id: NodeId,
    node: &Node,
    options: StoreOptions,
    stop_after: Option<Step>,
) -> Result<Imported> {
    let raft = data_dir.join(RAFT_DIR);
    let stop = |step: Step| stop_after == Some(step);
    tracing::info!(
        data_dir = %data_dir.display(),
        "importing the single-node data into member {node_id} of a new cluster; until it is \
         done, clients get UNAVAILABLE"
    );
    fs::create_dir_all(&raft).map_err(ClusterError::io("create", &raft))?;
    sync_dir(data_dir)?;
    // What an interrupted import left: redone from the start.
    for name in UNFINISHED_IMPORT_FILES {
        remove_if_present(&raft.join(name))?;
    }
    sync_dir(&raft)?;

    let single_node = |e: kv_store::Error| {
        ClusterError::DataDir(format!(
            "cannot import the single node's store in {}: {e}",
            data_dir.display()
        ))
    };
    let store = KeyValueStore::open(data_dir, options).map_err(single_node)?;
    let stats = store.stats();
    tracing::info!(
        keys = stats.keys,
        bytes = stats.bytes,
        last_lsn = stats.last_lsn,
        "single-node store recovered; writing it as the member's snapshot"
    );
    let tmp = raft.join(IMPORT_TMP);
    // The state is at the single node's last LSN, so the cluster's first
    // write gets a version above every imported key's: a key's version
    // never repeats across the upgrade.
    let at = stats.last_lsn.max(position(0)?);
    let keys = kv_store::replica::write_store_snapshot(&store, &StdFs, &tmp, at, now_ms())
        .map_err(single_node)?;
    store.close().map_err(single_node)?;
    drop(store);
    if stop(Step::SnapshotWritten) {
        return Err(stopped(Step::SnapshotWritten));
    }

    let path = raft.join(SNAPSHOT);
    fs::rename(&tmp, &path).map_err(ClusterError::io("rename", &path))?;
    sync_dir(&raft)?;
    if stop(Step::SnapshotInPlace) {
        return Err(stopped(Step::SnapshotInPlace));
    }

    let first = LogId::default();
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, node.clone())]),
    );
    let meta = SnapshotMeta {
        last_log_id: Some(first),
        last_membership: StoredMembership::new(Some(first), membership),
        snapshot_id: IMPORT_SNAPSHOT_ID.to_string(),
    };
    state_file::write(&raft.join(SNAPSHOT_META), &encode_meta(&meta, at))?;
    if stop(Step::MetaWritten) {
        return Err(stopped(Step::MetaWritten));
    }

    let note = format!(
        "imported {keys} keys from the single node (last LSN {}) at {} ms since the epoch\n",
        stats.last_lsn,
        now_ms()
    );
    state_file::write_bytes(&raft.join(MARKER), note.as_bytes())?;
    if stop(Step::Marked) {
        return Err(stopped(Step::Marked));
    }

    let moved_to = move_aside(data_dir, stop_after)?;
    tracing::info!(
        keys,
        moved_to = %moved_to.display(),
        "imported {keys} keys; the single-node files are kept in {} and may be deleted",
        moved_to.display()
    );
    Ok(Imported {
        keys,
        single_node_lsn: stats.last_lsn,
        moved_to,
    })
}

/// Moves the single node's directories into [`IMPORTED_DIR`].
fn move_aside(data_dir: &Path, stop_after: Option<Step>) -> Result<PathBuf> {
    let aside = data_dir.join(IMPORTED_DIR);
    fs::create_dir_all(&aside).map_err(ClusterError::io("create", &aside))?;
    for name in SINGLE_NODE_DIRS {
        let from = data_dir.join(name);
        if !from.exists() {
            continue;
        }
        let to = aside.join(name);
        if to.exists() {
            return Err(ClusterError::DataDir(format!(
                "cannot move {} aside: {} already exists",
                from.display(),
                to.display()
            )));
        }
        fs::rename(&from, &to).map_err(ClusterError::io("rename", &from))?;
        sync_dir(&aside)?;
        sync_dir(data_dir)?;
        if stop_after == Some(Step::FirstDirMoved) {
            return Err(stopped(Step::FirstDirMoved));
        }
    }
    Ok(aside)
}

fn stopped(step: Step) -> ClusterError {
    ClusterError::Corrupt(format!("import stopped after {step:?} (test)"))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ClusterError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ClusterError::io("sync directory", dir))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateMachine;

    fn members(ids: &[NodeId]) -> BTreeMap<NodeId, Node> {
        ids.iter()
            .map(|&id| {
                (
                    id,
                    Node {
                        client_addr: format!("127.0.0.1:{}", 7000 + id),
                        peer_addr: format!("127.0.0.1:{}", 7100 + id),
                    },
                )
            })
            .collect()
    }

    /// A single node's data: overwrites, deletes, binary keys, and a
    /// checkpoint so that both its snapshot and its log after it hold data.
    fn single_node(dir: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let store = KeyValueStore::open(dir, StoreOptions::default()).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..300u32 {
            let key = format!("k{i:04}").into_bytes();
            store.put(&key, b"old").unwrap();
            model.insert(key, b"old".to_vec());
        }
        store.put(b"\x00\xff key", b"\xfe\x00 value").unwrap();
        model.insert(b"\x00\xff key".to_vec(), b"\xfe\x00 value".to_vec());
        store.checkpoint().unwrap();
        for i in (0..300u32).step_by(3) {
            let key = format!("k{i:04}").into_bytes();
            store.put(&key, format!("new{i}").as_bytes()).unwrap();
            model.insert(key, format!("new{i}").into_bytes());
        }
        for i in (1..300u32).step_by(7) {
            let key = format!("k{i:04}").into_bytes();
            store.delete(&key).unwrap();
            model.remove(&key);
        }
        store.close().unwrap();
        model
    }

    fn assert_member_holds(dir: &Path, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
        let sm = StateMachine::open(&dir.join(RAFT_DIR)).unwrap();
        assert_eq!(sm.last_applied(), Some(LogId::default()));
        sm.read(|r| {
            assert_eq!(r.len(), model.len() as u64);
            for (k, v) in model {
                assert_eq!(r.get(k).as_ref(), Some(v), "key {k:?}");
            }
        });
        for d in SINGLE_NODE_DIRS {
            assert!(!dir.join(d).exists(), "{d} still in place");
            assert!(dir.join(IMPORTED_DIR).join(d).exists(), "{d} not kept");
        }
        assert!(dir.join(RAFT_DIR).join(MARKER).exists());
    }

    #[test]
    fn a_one_member_cluster_imports_the_single_node_data_once() {
        let dir = tempfile::tempdir().unwrap();
        let model = single_node(dir.path());
        let got = prepare_member(
            dir.path(),
            1,
            &members(&[1]),
            false,
            StoreOptions::default(),
        )
        .unwrap();
        let Prepared::Imported(imported) = got else {
            panic!("not imported: {got:?}")
        };
        assert_eq!(imported.keys, model.len() as u64);
        assert!(imported.single_node_lsn > model.len() as u64);
        assert_member_holds(dir.path(), &model);
        // Again: nothing to do.
        assert_eq!(
            prepare_member(
                dir.path(),
                1,
                &members(&[1]),
                false,
                StoreOptions::default()
            )
            .unwrap(),
            Prepared::Nothing
        );
        // A single node would now start empty: refused.
        assert!(matches!(
            check_single_node(dir.path()),
            Err(ClusterError::DataDir(_))
        ));
    }

    #[test]
    fn an_import_stopped_after_any_step_is_redone_or_finished() {
        for step in [
            Step::SnapshotWritten,
            Step::SnapshotInPlace,
            Step::MetaWritten,
            Step::Marked,
            Step::FirstDirMoved,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let model = single_node(dir.path());
            let m = members(&[1]);
            let opts = StoreOptions::default;
            assert!(prepare_until(dir.path(), 1, &m, false, opts(), Some(step)).is_err());
            let again = prepare_member(dir.path(), 1, &m, false, opts()).unwrap();
            if step >= Step::Marked {
                assert_eq!(again, Prepared::FinishedEarlierImport, "{step:?}");
            } else {
                assert!(
                    matches!(again, Prepared::Imported(_)),
                    "{step:?}: {again:?}"
                );
            }
            assert_member_holds(dir.path(), &model);
        }
    }

    #[test]
    fn a_torn_import_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let model = single_node(dir.path());
        let raft = dir.path().join(RAFT_DIR);
        fs::create_dir_all(&raft).unwrap();
        fs::write(raft.join(IMPORT_TMP), b"torn").unwrap();
        fs::write(raft.join(SNAPSHOT), b"torn").unwrap();
        let got = prepare_member(
            dir.path(),
            1,
            &members(&[1]),
            false,
            StoreOptions::default(),
        )
        .unwrap();
        assert!(matches!(got, Prepared::Imported(_)));
        assert_member_holds(dir.path(), &model);
    }

    #[test]
    fn single_node_data_is_refused_where_it_would_be_hidden() {
        let dir = tempfile::tempdir().unwrap();
        single_node(dir.path());
        let opts = StoreOptions::default;
        for (node, m, join) in [
            (1, members(&[1, 2, 3]), false),
            (4, members(&[1, 2, 3]), true),
            (2, members(&[1]), false),
        ] {
            let err = prepare_member(dir.path(), node, &m, join, opts()).unwrap_err();
            assert!(
                matches!(&err, ClusterError::DataDir(s) if s.contains("one-member cluster")),
                "{err}"
            );
        }
        // Nothing was touched.
        assert!(!dir.path().join(RAFT_DIR).exists());
        assert!(dir.path().join("wal").exists());
        assert!(check_single_node(dir.path()).is_ok());

        // Both kinds of state: refused, for either kind of start.
        fs::create_dir_all(dir.path().join(RAFT_DIR).join("log")).unwrap();
        let err = prepare_member(dir.path(), 1, &members(&[1]), false, opts()).unwrap_err();
        assert!(
            matches!(&err, ClusterError::DataDir(s) if s.contains("both")),
            "{err}"
        );
        assert!(check_single_node(dir.path()).is_err());
    }

    #[test]
    fn a_fresh_directory_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            prepare_member(
                dir.path(),
                1,
                &members(&[1, 2]),
                false,
                StoreOptions::default()
            )
            .unwrap(),
            Prepared::Nothing
        );
        assert!(check_single_node(dir.path()).is_ok());
    }
}
