//! The store's state machine for a replicated log: what kv-cluster applies
//! committed Raft entries to.
//!
//! In a cluster the log is the Raft log (kept by kv-cluster on wal-core),
//! not the store's own WAL, so the commit pipeline of [`crate::KeyValueStore`]
//! is not used: a [`Replica`] is the same ordered map, changed by the same
//! `State::apply` as the single node's commit thread and replay, and
//! snapshotted into the same snapshot file format. Commands are the store's
//! own log records ([`encode_put`], [`encode_delete`], [`encode_txn`]); the
//! position they are applied at (the Raft index) becomes each key's
//! version. A transaction is decided when it is applied, by the same
//! [`txn`](crate::txn) function the single node's commit thread uses,
//! against the state at that position and the proposer's clock carried in
//! the command, so every replica decides alike.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use wal_core::{Lsn, Vfs};

use crate::error::{Error, Result};
use crate::record;
pub use crate::snapshot::UnsyncedSnapshot;
use crate::snapshot::{self, SnapshotWriter};
use crate::state::{Entry, Op, State};
use crate::store::KeyValueStore;
use crate::txn::{Overlay, Txn, TxnOutcome};
use crate::{KeyListing, ScanPage, ScanRange, Versioned};

/// A put command: the store's log record for it, without a position.
pub fn encode_put(key: &[u8], value: &[u8]) -> Vec<u8> {
    encode_put_expiring(key, value, None)
}

/// A put command for a key that expires at `deadline` (ms since the Unix
/// epoch).
pub fn encode_put_expiring(key: &[u8], value: &[u8], deadline: Option<u64>) -> Vec<u8> {
    record::encode_put_bare(key, value, deadline)
}

/// A transaction command, stamped with this node's clock: the clock its
/// expiry conditions are judged by when it is applied.
pub fn encode_txn(txn: &Txn) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_txn(&mut out, 0, txn.to_proto(), record::now_ms());
    out
}

/// A delete command, likewise.
pub fn encode_delete(key: &[u8]) -> Vec<u8> {
    record::encode_delete_bare(key)
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The position it was applied at (the key's new version).
    pub seq: Lsn,
    /// For a put or delete: whether the key existed before.
    pub existed: bool,
    /// For a transaction: what it did, or why it did not apply.
    pub txn: Option<std::result::Result<TxnOutcome, Refused>>,
}

/// Why a transaction did not apply (it changed nothing, on every replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A condition did not hold: the key, and its current version.
    ConditionFailed {
        /// The key.
        key: Vec<u8>,
        /// Its version, `None` if it does not exist.
        current: Option<Lsn>,
    },
    /// A counter on a non-integer, or one that would overflow.
    Invalid(String),
}

impl Refused {
    /// The store error it stands for.
    pub fn into_error(self) -> Error {
        match self {
            Refused::ConditionFailed { key, current } => Error::ConditionFailed { key, current },
            Refused::Invalid(m) => Error::InvalidRequest(m),
        }
    }
}

/// The replicated state machine: the ordered map of the store.
#[derive(Debug, Default)]
pub struct Replica {
    state: State,
}

impl Replica {
    /// An empty state.
    pub fn new() -> Replica {
        Replica::default()
    }

    /// Applies a committed command at position `seq` (strictly after every
    /// earlier one). An undecodable command is [`Error::CorruptLogEntry`]
    /// and changes nothing.
    pub fn apply(&mut self, seq: Lsn, command: &[u8]) -> Result<Applied> {
        self.apply_shared(seq, Bytes::copy_from_slice(command))
    }

    /// [`Replica::apply`] of a command already in a shared buffer, which
    /// the decoded key and value then borrow instead of a copy.
    pub fn apply_shared(&mut self, seq: Lsn, command: Bytes) -> Result<Applied> {
        if seq <= self.state.last_applied() && self.state.last_applied() != 0 {
            return Err(Error::CorruptLogEntry {
                lsn: seq,
                reason: format!(
                    "applied after position {}: positions must increase",
                    self.state.last_applied()
                ),
            });
        }
        // The command carries no `seq` (0 on decode): checked against 0.
        let op = record::decode(0, command).map_err(|e| match e {
            Error::CorruptLogEntry { reason, .. } => Error::CorruptLogEntry { lsn: seq, reason },
            other => other,
        })?;
        let clock = self.state.clock_for(0);
        let live = |state: &State, key: &[u8]| state.get(key).is_some_and(|e| !e.expired_at(clock));
        match op {
            record::Op::Put {
                key,
                value,
                deadline,
            } => {
                let existed = self
                    .state
                    .apply_put(Entry::new(&key, &value, seq, deadline), seq)
                    .is_some_and(|old| !old.expired_at(clock));
                Ok(Applied {
                    seq,
                    existed,
                    txn: None,
                })
            }
            record::Op::Delete { key } => {
                let existed = live(&self.state, &key);
                self.state.apply(Op::Delete(&key), seq);
                Ok(Applied {
                    seq,
                    existed,
                    txn: None,
                })
            }
            record::Op::Txn { txn, timestamp_ms } => {
                let txn = Txn::from_proto(&txn)
                    .map_err(|reason| Error::CorruptLogEntry { lsn: seq, reason })?;
                let now = self.state.advance_clock(timestamp_ms);
                let mut view = Overlay::new(&self.state);
                let decided = crate::txn::decide(&mut view, &txn, now, seq);
                drop(view);
                let outcome = match decided {
                    Ok((writes, results)) => {
                        let changes = writes.iter().map(|w| w.change(seq)).collect();
                        self.state.apply(Op::Batch(changes), seq);
                        Ok(TxnOutcome { seq, results })
                    }
                    Err(e) => {
                        self.state.set_applied(seq);
                        Err(match e {
                            Error::ConditionFailed { key, current } => {
                                Refused::ConditionFailed { key, current }
                            }
                            other => Refused::Invalid(other.to_string()),
                        })
                    }
                };
                Ok(Applied {
                    seq,
                    existed: false,
                    txn: Some(outcome),
                })
            }
        }
    }

    /// Notes that everything up to `seq` is applied (for Raft entries that
    /// carry no command, such as membership changes).
    pub fn advance_to(&mut self, seq: Lsn) {
        if seq > self.state.last_applied() {
            self.state.set_applied(seq);
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get_versioned(key).map(|v| v.value)
    }

    /// A key's value, version and deadline, if it is there and has not
    /// expired (by the wall clock).
    pub fn get_versioned(&self, key: &[u8]) -> Option<Versioned> {
        crate::scan::get(&self.state, key, record::now_ms())
    }

    /// [`Replica::get_versioned`] of each key.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Vec<Option<Versioned>> {
        let now = record::now_ms();
        keys.iter()
            .map(|k| crate::scan::get(&self.state, k.as_ref(), now))
            .collect()
    }

    /// One page of a scan, as
    /// [`KeyValueStore::scan`](crate::KeyValueStore::scan) gives it.
    pub fn scan(
        &self,
        range: &ScanRange,
        after: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
        values: bool,
    ) -> ScanPage {
        crate::scan::scan(
            &self.state,
            range,
            after,
            limit,
            max_bytes,
            values,
            record::now_ms(),
        )
    }

    /// Keys with an expiry deadline (expired ones not yet removed
    /// included).
    pub fn expiring(&self) -> u64 {
        self.state.expiring()
    }

    /// Up to `max` keys expired by the wall clock, with their versions:
    /// what a leader's sweeper removes (with a conditional delete each).
    pub fn expired(&self, max: usize) -> Vec<(Vec<u8>, Lsn)> {
        self.state
            .expired(record::now_ms(), max)
            .into_iter()
            .map(|(k, seq)| (k.into_vec(), seq))
            .collect()
    }

    /// Keys held.
    pub fn len(&self) -> u64 {
        self.state.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.state.len() == 0
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> u64 {
        self.state.bytes()
    }

    /// The last position applied (0: none).
    pub fn last_applied(&self) -> Lsn {
        self.state.last_applied()
    }

    /// Keys starting with `prefix`, ascending, at most `limit` (0: no
    /// limit) and at most `max_bytes` of listing (as
    /// [`crate::KeyValueStore::keys_within`] counts it); whether more
    /// matched. All in one go: a caller that holds a lock around the
    /// replica while other threads wait for it should use
    /// [`Replica::list_keys`] instead.
    pub fn keys_within(
        &self,
        prefix: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<Vec<u8>>, bool) {
        let mut listing = KeyListing::new(prefix, limit, max_bytes);
        while !listing.is_done() {
            self.list_keys(&mut listing);
        }
        let page = listing.into_page();
        (page.keys, page.truncated)
    }

    /// Copies the next chunk of `listing` (up to a thousand or so keys):
    /// call it under the lock around the replica, releasing the lock in
    /// between, until [`KeyListing::is_done`].
    pub fn list_keys(&self, listing: &mut KeyListing) {
        listing.step(&self.state);
    }

    /// Writes the state as a snapshot file of the store's format at `path`
    /// (which must not exist) and syncs it; the caller renames it into
    /// place. Returns the number of entries.
    pub fn write_snapshot(&self, vfs: &dyn Vfs, path: &Path, created_ms: u64) -> Result<u64> {
        write_state(
            &self.state,
            vfs,
            path,
            self.state.last_applied(),
            created_ms,
        )
    }

    /// Begins an exact snapshot of the state as of now, to be copied in
    /// pieces by [`write_begun_snapshot`] with the lock around the replica
    /// let go between them, so that applying goes on meanwhile. Until
    /// [`Replica::end_snapshot`], what each key held before its first change
    /// is kept: memory grows with the keys written during the copy. Returns
    /// the position the snapshot holds. Beginning again restarts it.
    pub fn begin_snapshot(&mut self) -> Lsn {
        self.state.begin_undo()
    }

    /// Ends what [`Replica::begin_snapshot`] began, whether the snapshot
    /// was written or abandoned; must always follow it.
    pub fn end_snapshot(&mut self) {
        self.state.end_undo();
    }

    /// If a snapshot is begun: its position, and the keys changed since
    /// (whose earlier entries are kept for it).
    pub fn snapshot_in_progress(&self) -> Option<(Lsn, usize)> {
        self.state.undo_status()
    }

    /// Reads and verifies a snapshot written by [`Replica::write_snapshot`]
    /// that holds the state up to position `seq`.
    pub fn load_snapshot(vfs: &Arc<dyn Vfs>, path: &Path, seq: Lsn) -> Result<Replica> {
        let loaded = snapshot::load(vfs, path, seq)?;
        let mut state = loaded.state;
        state.set_applied(seq);
        Ok(Replica { state })
    }

    /// As [`Replica::load_snapshot`], for a snapshot whose position only
    /// its own header names (one received from a peer): the state is at
    /// that position ([`Replica::last_applied`]).
    pub fn load_any_snapshot(vfs: &Arc<dyn Vfs>, path: &Path) -> Result<Replica> {
        Ok(Replica {
            state: snapshot::load_any(vfs, path)?.state,
        })
    }
}

/// Writes the state of a single-node `store` as a snapshot file of the
/// format [`Replica::load_snapshot`] reads, holding the state at position
/// `seq` (whatever the store's own LSNs), at `path` (which must not exist),
/// and syncs it; returns the number of entries. This is how a single node's
/// data becomes a cluster member's state machine.
///
/// Holds the store's read lock for the whole copy, so writers wait until it
/// is done: meant for a store that nothing else writes to.
pub fn write_store_snapshot(
    store: &KeyValueStore,
    vfs: &dyn Vfs,
    path: &Path,
    seq: Lsn,
    created_ms: u64,
) -> Result<u64> {
    write_state(&store.state(), vfs, path, seq, created_ms)
}

/// Entries copied per piece by [`write_begun_snapshot`]: the lock is held
/// for about a hundred microseconds at a time (as the single node's
/// checkpoint does, `checkpoint::CHUNK`).
const SNAPSHOT_PIECE: usize = crate::checkpoint::CHUNK;

/// Writes the snapshot [`Replica::begin_snapshot`] began, of the state at
/// the position it returned, at `path` (which must not exist), without its
/// final sync, which the returned [`UnsyncedSnapshot`] does. `replica` gives
/// the replica under its lock (a read lock is enough); it is called once per
/// piece of a thousand entries or so, and the lock is let go in between,
/// so that commands are applied while the file is written: the snapshot
/// still holds the state as of its beginning, from the entries kept for
/// the keys changed since. Fails if the snapshot was ended, begun again or
/// the replica replaced meanwhile.
pub fn write_begun_snapshot<G: std::ops::Deref<Target = Replica>>(
    mut replica: impl FnMut() -> G,
    vfs: &dyn Vfs,
    path: &Path,
    created_ms: u64,
) -> Result<UnsyncedSnapshot> {
    let begun = |r: &Replica| {
        r.snapshot_in_progress().map(|(at, _)| at).ok_or_else(|| {
            Error::Unavailable("no snapshot begun (Replica::begin_snapshot)".to_string())
        })
    };
    let at = begun(&replica())?;
    let mut writer = SnapshotWriter::create(vfs, path)?;
    let mut after: Option<Box<[u8]>> = None;
    loop {
        let next = {
            let r = replica();
            if begun(&r)? != at {
                return Err(Error::Unavailable(
                    "the snapshot was begun again while it was copied".to_string(),
                ));
            }
            r.state
                .copy_as_of_undo(after.as_deref(), SNAPSHOT_PIECE, |e| writer.add(e))?
        };
        if writer.buffer_full() {
            writer.flush()?;
        }
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    writer.finish_unsynced(at, created_ms)
}

fn write_state(
    state: &State,
    vfs: &dyn Vfs,
    path: &Path,
    seq: Lsn,
    created_ms: u64,
) -> Result<u64> {
    let mut writer = SnapshotWriter::create(vfs, path)?;
    for entry in state.range_from(&[], false) {
        writer.add(entry)?;
        if writer.buffer_full() {
            writer.flush()?;
        }
    }
    writer.finish(seq, created_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal_core::StdFs;

    /// The snapshot written without its sync is durable only once synced:
    /// power lost before the sync leaves a file that does not load.
    #[test]
    fn an_unsynced_snapshot_is_durable_only_once_synced() {
        use wal_core::sim::SimFs;
        let mut r = Replica::new();
        r.apply(1, &encode_put(b"a", b"1")).unwrap();
        let dir = Path::new("/d");
        let path = dir.join("snap");
        for sync in [false, true] {
            let fs = SimFs::new();
            fs.create_dir_all(dir).unwrap();
            fs.sync_dir(Path::new("/")).unwrap();
            r.begin_snapshot();
            let unsynced = write_begun_snapshot(|| &r, &fs, &path, 7).unwrap();
            if sync {
                assert_eq!(unsynced.sync().unwrap(), 1);
            }
            fs.sync_dir(dir).unwrap();
            let after = fs.crash().shared();
            let loaded = Replica::load_snapshot(&after, &path, 1);
            if sync {
                assert_eq!(loaded.unwrap().get(b"a"), Some(b"1".to_vec()));
            } else {
                assert!(loaded.is_err(), "an unsynced snapshot survived power loss");
            }
            r.end_snapshot();
        }
    }

    /// A snapshot copied in pieces while commands keep being applied
    /// between them (puts of old and new keys before and after the copy's
    /// position, deletes, expiring puts, transactions) holds exactly the
    /// state as of its beginning: the same file, byte for byte, as one
    /// written at once before any of those commands.
    #[test]
    fn a_snapshot_copied_in_pieces_holds_the_state_as_of_its_beginning() {
        use std::cell::RefCell;
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u64| format!("k{:06}", i).into_bytes();
        let mut r = Replica::new();
        let mut seq = 0;
        for i in (0..6000).step_by(2) {
            seq += 1;
            r.apply(seq, &encode_put(&key(i), format!("v{i}").as_bytes()))
                .unwrap();
        }
        let at = r.begin_snapshot();
        assert_eq!(at, seq);
        let whole = dir.path().join("whole");
        r.write_snapshot(&StdFs, &whole, 5).unwrap();

        let cell = RefCell::new(r);
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pieces = 0;
        let pieced = dir.path().join("pieced");
        let unsynced = write_begun_snapshot(
            || {
                pieces += 1;
                let mut r = cell.borrow_mut();
                for _ in 0..400 {
                    seq += 1;
                    let k = key(next() % 6100);
                    let command = match next() % 5 {
                        0 => encode_delete(&k),
                        1 => encode_put_expiring(&k, b"expiring", Some(u64::MAX / 2)),
                        2 => {
                            let mut txn = Txn::default();
                            txn.writes
                                .push(crate::txn::Write::Delete { key: k.clone() });
                            txn.writes.push(crate::txn::Write::Put {
                                key: key(next() % 6100),
                                value: b"txn".to_vec(),
                                expiry: crate::txn::Expiry::Clear,
                            });
                            encode_txn(&txn)
                        }
                        _ => encode_put(&k, format!("w{seq}").as_bytes()),
                    };
                    r.apply(seq, &command).unwrap();
                }
                drop(r);
                cell.borrow()
            },
            &StdFs,
            &pieced,
            5,
        )
        .unwrap();
        assert_eq!(unsynced.sync().unwrap(), 3000);
        assert!(pieces > 3, "copied in {pieces} pieces");
        let (_, changed) = cell.borrow().snapshot_in_progress().unwrap();
        assert!(changed > 1000, "{changed} keys changed during the copy");
        assert!(
            std::fs::read(&pieced).unwrap() == std::fs::read(&whole).unwrap(),
            "the pieced snapshot differs from the state at its beginning"
        );
        let mut r = cell.into_inner();
        r.end_snapshot();
        assert_eq!(r.snapshot_in_progress(), None);
        let vfs = StdFs::shared();
        let back = Replica::load_snapshot(&vfs, &pieced, at).unwrap();
        assert_eq!(back.get(&key(2)), Some(b"v2".to_vec()));
    }

    /// A snapshot whose recording ends (or restarts) before its copy is
    /// done fails rather than mix two states.
    #[test]
    fn a_snapshot_ended_during_its_copy_fails() {
        use std::cell::RefCell;
        let dir = tempfile::tempdir().unwrap();
        let mut r = Replica::new();
        for i in 0..3000u64 {
            r.apply(i + 1, &encode_put(format!("k{i:05}").as_bytes(), b"v"))
                .unwrap();
        }
        for restart in [false, true] {
            r.begin_snapshot();
            let cell = RefCell::new(r);
            let mut calls = 0;
            let result = write_begun_snapshot(
                || {
                    calls += 1;
                    if calls == 3 {
                        let mut r = cell.borrow_mut();
                        if restart {
                            let last = r.last_applied();
                            r.apply(last + 1, &encode_put(b"x", b"y")).unwrap();
                            r.begin_snapshot();
                        } else {
                            r.end_snapshot();
                        }
                    }
                    cell.borrow()
                },
                &StdFs,
                &dir.path().join(format!("s{restart}")),
                1,
            );
            assert!(matches!(result, Err(Error::Unavailable(_))), "{restart}");
            r = cell.into_inner();
            r.end_snapshot();
        }
    }

    #[test]
    fn commands_apply_in_order_and_a_snapshot_round_trips() {
        let mut r = Replica::new();
        assert!(!r.apply(3, &encode_put(b"a", b"1")).unwrap().existed);
        assert!(r.apply(4, &encode_put(b"a", b"2")).unwrap().existed);
        r.apply(5, &encode_put(b"b", b"x")).unwrap();
        assert!(r.apply(6, &encode_delete(b"b")).unwrap().existed);
        r.advance_to(8);
        assert!(
            r.apply(8, &encode_put(b"c", b"")).is_err(),
            "position reused"
        );
        assert!(r.apply(9, b"\xff\xff").is_err());
        assert_eq!(r.get(b"a"), Some(b"2".to_vec()));
        assert_eq!(r.get(b"b"), None);
        assert_eq!(
            r.keys_within(b"", 0, usize::MAX),
            (vec![b"a".to_vec()], false)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        assert_eq!(r.write_snapshot(&StdFs, &path, 1).unwrap(), 1);
        let vfs = StdFs::shared();
        let back = Replica::load_snapshot(&vfs, &path, 8).unwrap();
        assert_eq!(back.get(b"a"), Some(b"2".to_vec()));
        assert_eq!(back.last_applied(), 8);
        assert!(Replica::load_snapshot(&vfs, &path, 9).is_err());
    }

    #[test]
    fn a_single_node_store_exports_as_a_replica_snapshot_at_any_position() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::KeyValueStore::open(dir.path().join("store"), Default::default()).unwrap();
        store.put(b"a", b"1").unwrap();
        store.put(b"\x00\xff", b"\xfe\x00binary").unwrap();
        store.put(b"gone", b"x").unwrap();
        store.delete(b"gone").unwrap();
        store.put(b"a", b"2").unwrap();
        assert!(store.stats().last_lsn > 1);

        let path = dir.path().join("exported");
        assert_eq!(
            write_store_snapshot(&store, &StdFs, &path, 1, 7).unwrap(),
            2
        );
        let vfs = StdFs::shared();
        let replica = Replica::load_snapshot(&vfs, &path, 1).unwrap();
        assert_eq!(replica.last_applied(), 1);
        assert_eq!(replica.len(), 2);
        assert_eq!(replica.get(b"a"), Some(b"2".to_vec()));
        assert_eq!(replica.get(b"\x00\xff"), Some(b"\xfe\x00binary".to_vec()));
        assert_eq!(replica.get(b"gone"), None);
        // The header names the position asked for, not the store's LSN.
        assert!(Replica::load_snapshot(&vfs, &path, store.stats().last_lsn).is_err());
    }
}
