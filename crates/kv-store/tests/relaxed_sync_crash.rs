//! Crashes under the relaxed sync policies (`never`, `interval`), and a
//! checkpoint that races writes and log rotations, made deterministic by
//! a file layer that holds a checkpoint at its first snapshot write until
//! the test has done its writes.
//!
//! - Writes during a checkpoint, then a crash right after it: the
//!   recovered state must be the replay of a durable prefix of the log,
//!   its next write continuing right after that prefix. (A checkpoint that
//!   skipped syncing the log would leave a snapshot holding writes the
//!   crash took out of the log.)
//! - A crash right after the first `close()`: every write acknowledged
//!   before it is durable.
//! - Writes that rotate the log several times while a checkpoint copies:
//!   the checkpoint deletes only the segments its snapshot covers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv_store::{KeyValueStore, Lsn, StoreOptions, SyncPolicy, WalOptions};
use wal_core::sim::SimFs;
use wal_core::{DirLock, Vfs, VfsFile};

/// A [`SimFs`] whose first write to a snapshot temp file (armed by
/// [`Gate::arm`]) tells the test and waits for its go.
#[derive(Clone)]
struct Gate {
    fs: SimFs,
    armed: Arc<Mutex<Option<GateEnds>>>,
}

/// The gate's ends of an armed gate: tell the test, wait for its go.
type GateEnds = (SyncSender<()>, Receiver<()>);

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gate")
    }
}

/// The test's ends of an armed gate.
struct Held {
    reached: Receiver<()>,
    go: SyncSender<()>,
}

impl Gate {
    fn new(fs: SimFs) -> Gate {
        Gate {
            fs,
            armed: Arc::new(Mutex::new(None)),
        }
    }

    fn arm(&self) -> Held {
        let (reached_tx, reached) = sync_channel(1);
        let (go, go_rx) = sync_channel(1);
        *self.armed.lock().unwrap() = Some((reached_tx, go_rx));
        Held { reached, go }
    }
}

#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn VfsFile>,
    gate: Option<Gate>,
}

impl VfsFile for GatedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(gate) = &self.gate {
            let armed = gate.armed.lock().unwrap().take();
            if let Some((reached, go)) = armed {
                reached.send(()).unwrap();
                go.recv().unwrap();
            }
        }
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl Vfs for Gate {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.fs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.fs.list_dir(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        let inner = self.fs.create_new(path)?;
        let is_snapshot_temp = path.extension().is_some_and(|e| e == "tmp");
        Ok(Box::new(GatedFile {
            inner,
            gate: is_snapshot_temp.then(|| self.clone()),
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.fs.open_read(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.fs.open_write(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.fs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.fs.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.fs.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.fs.lock_dir(path)
    }
}

fn options(sync_policy: SyncPolicy) -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            segment_size: 4096,
            sync_policy,
            ..WalOptions::default()
        },
        max_key_size: 32,
        max_value_size: 64 << 10,
        checkpoint_after: None,
        checkpoint_write_rate: None,
        expiry_sweep_rate: StoreOptions::default().expiry_sweep_rate,
    }
}

/// The relaxed policies; the interval is far longer than the test, so it
/// never syncs on its own.
fn relaxed() -> [SyncPolicy; 2] {
    [
        SyncPolicy::Never,
        SyncPolicy::Interval {
            period: Duration::from_secs(3600),
        },
    ]
}

/// One write of the workload: its key, value, and the LSN it got.
type Write = (Vec<u8>, Vec<u8>, Lsn);

/// Checks that `store` holds exactly the state of some prefix of
/// `writes` (puts only, in LSN order), and that its next write gets the LSN
/// after that prefix's last: the state is a replay of a log prefix, not a
/// snapshot ahead of the log.
fn check_is_a_log_prefix(
    store: &KeyValueStore,
    writes: &[Write],
    base: &BTreeMap<Vec<u8>, Vec<u8>>,
    what: &str,
) {
    let keys = store.keys(b"", 0).keys;
    let state: BTreeMap<Vec<u8>, Vec<u8>> = keys
        .into_iter()
        .map(|k| {
            let v = store.get(&k).expect("a listed key is there");
            (k, v)
        })
        .collect();
    let mut model = base.clone();
    let mut prefix = None;
    if state == model {
        prefix = Some(0);
    }
    for (i, (k, v, _)) in writes.iter().enumerate() {
        model.insert(k.clone(), v.clone());
        if state == model {
            prefix = Some(i + 1);
        }
    }
    let Some(prefix) = prefix else {
        panic!(
            "{what}: the recovered state ({} keys) is no prefix of the writes",
            state.len()
        );
    };
    let last = match prefix {
        0 => writes.first().map_or(0, |w| w.2 - 1),
        n => writes[n - 1].2,
    };
    let next = store
        .put(b"zz-after", b"crash")
        .expect("put after recovery");
    assert_eq!(
        next,
        last + 1,
        "{what}: the state is the log's up to the {prefix}-th write (LSN {last}), but the next \
         write got LSN {next}: the state holds writes the log lost"
    );
}

/// Writes during a checkpoint under `never` and `interval`, a crash right
/// after it: the recovered state is the replay of a durable log prefix.
#[test]
fn writes_during_a_checkpoint_then_a_crash_recover_a_log_prefix() {
    for policy in relaxed() {
        let fs = SimFs::new();
        let gate = Gate::new(fs.clone());
        let store =
            KeyValueStore::open_with_vfs("/db", options(policy), Arc::new(gate.clone())).unwrap();
        let mut base = BTreeMap::new();
        // Enough bytes that the copy's first buffer fills and is written
        // (where the gate holds it) before the copy reaches the "m" keys.
        for i in 0..12u32 {
            let (k, v) = (format!("a{i:03}").into_bytes(), vec![i as u8; 40_000]);
            store.put(&k, &v).unwrap();
            base.insert(k, v);
        }
        store.put(b"m000", b"before").unwrap();
        base.insert(b"m000".to_vec(), b"before".to_vec());
        // Make everything so far durable: only the writes during the
        // checkpoint are at the crash's mercy.
        store.close().unwrap();
        drop(store);
        let store =
            KeyValueStore::open_with_vfs("/db", options(policy), Arc::new(gate.clone())).unwrap();

        let held = gate.arm();
        let checkpoint = {
            let store = store.clone();
            std::thread::spawn(move || store.checkpoint())
        };
        held.reached.recv().unwrap();
        // The copy is held after its first chunk: these writes are applied
        // to the map ahead of it, so the snapshot holds them, though they
        // came after its LSN and are not yet durable in the log.
        let mut writes = Vec::new();
        for i in 0..20u32 {
            let (k, v) = (
                format!("m{i:03}").into_bytes(),
                format!("during-{i}").into_bytes(),
            );
            let lsn = store.put(&k, &v).unwrap();
            writes.push((k, v, lsn));
        }
        held.go.send(()).unwrap();
        checkpoint.join().unwrap().unwrap();
        let after = fs.crash();
        drop(store);

        let store = KeyValueStore::open_with_vfs("/db", options(policy), after.shared())
            .unwrap_or_else(|e| panic!("{policy:?}: reopen failed: {e}"));
        check_is_a_log_prefix(&store, &writes, &base, &format!("{policy:?}"));
    }
}

/// A crash right after the first `close()`, under the relaxed policies:
/// close makes every acknowledged write durable by itself.
#[test]
fn a_crash_right_after_the_first_close_loses_nothing() {
    for policy in relaxed() {
        let fs = SimFs::new();
        let store = KeyValueStore::open_with_vfs("/db", options(policy), fs.shared()).unwrap();
        let mut writes = Vec::new();
        for i in 0..50u32 {
            let (k, v) = (format!("k{i:03}").into_bytes(), vec![i as u8; 100]);
            let lsn = store.put(&k, &v).unwrap();
            writes.push((k, v, lsn));
        }
        store.close().unwrap();
        let after = fs.crash();
        drop(store);
        let store = KeyValueStore::open_with_vfs("/db", options(policy), after.shared())
            .unwrap_or_else(|e| panic!("{policy:?}: reopen failed: {e}"));
        for (k, v, _) in &writes {
            assert_eq!(
                store.get(k).as_ref(),
                Some(v),
                "{policy:?}: a write acknowledged before close is lost"
            );
        }
    }
}

/// A checkpoint whose copy is held while writes rotate the log several
/// times: it deletes only the segments wholly below its snapshot's LSN,
/// so writes made after that LSN to keys the copy had already passed
/// (which the snapshot lacks) survive, a crash included.
#[test]
fn a_checkpoint_racing_rotations_deletes_only_what_its_snapshot_covers() {
    let fs = SimFs::new();
    let gate = Gate::new(fs.clone());
    let opts = options(SyncPolicy::Always);
    let store = KeyValueStore::open_with_vfs("/db", opts.clone(), Arc::new(gate.clone())).unwrap();
    let mut model = BTreeMap::new();
    for i in 0..12u32 {
        let (k, v) = (format!("a{i:03}").into_bytes(), vec![i as u8; 40_000]);
        store.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    let held = gate.arm();
    let checkpoint = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    held.reached.recv().unwrap();
    let wal_bytes = store.stats().wal_bytes;
    // Overwrites of keys already copied, each about a quarter of a 4 KiB
    // segment: the log rotates on its own many times meanwhile.
    for round in 0..4u32 {
        for i in 0..6u32 {
            let (k, v) = (
                format!("a{i:03}").into_bytes(),
                vec![round as u8 + 100; 1000],
            );
            store.put(&k, &v).unwrap();
            model.insert(k, v);
        }
    }
    assert!(
        store.stats().wal_bytes >= wal_bytes + 4 * 4096,
        "the writes rotated the log"
    );
    held.go.send(()).unwrap();
    let seq = checkpoint.join().unwrap().unwrap();
    assert!(
        seq < store.stats().last_lsn,
        "the writes came after the snapshot's LSN"
    );

    let after = fs.crash();
    drop(store);
    let store = KeyValueStore::open_with_vfs("/db", opts, after.shared())
        .unwrap_or_else(|e| panic!("reopen failed: {e}"));
    assert_eq!(store.stats().keys, model.len() as u64);
    for (k, v) in &model {
        assert!(
            store.get(k).as_ref() == Some(v),
            "key {:?}: an acknowledged overwrite is lost",
            String::from_utf8_lossy(k)
        );
    }
}
