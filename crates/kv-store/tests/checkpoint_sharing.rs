//! Checkpoints under contention and under a persistent failure:
//!
//! - requests that arrive while a checkpoint runs share it: one snapshot,
//!   the same LSN for every caller (and the same error when it fails);
//! - an automatic checkpoint that keeps failing (its snapshot cannot be
//!   created, as in a read-only snapshot directory) is retried after a
//!   back-off that doubles, is counted, and rotates the log once, not once
//!   per retry; once the fault is gone the next retry succeeds and the log
//!   is cut.
//!
//! The faults come from a file layer wrapped around wal-core's simulated
//! file system, so the production code has no switch for them.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kv_store::{Error, KeyValueStore, StoreOptions, SyncPolicy, WalOptions};
use wal_core::sim::SimFs;
use wal_core::{DirLock, Vfs, VfsFile};

/// Generous: every wait below polls a condition; this only bounds a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// A file layer that can hold back or refuse the creation of snapshot
/// temp files, and passes everything else to the simulated file system.
#[derive(Debug)]
struct SnapshotFaults {
    inner: Arc<dyn Vfs>,
    gate: Mutex<Gate>,
    changed: Condvar,
    /// Refuse snapshot creation, as a read-only directory would.
    refuse: AtomicBool,
}

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    /// Creations waiting at the closed gate.
    held: usize,
}

impl SnapshotFaults {
    fn new(inner: Arc<dyn Vfs>) -> Arc<Self> {
        Arc::new(SnapshotFaults {
            inner,
            gate: Mutex::new(Gate::default()),
            changed: Condvar::new(),
            refuse: AtomicBool::new(false),
        })
    }

    fn set_gate(&self, closed: bool) {
        self.gate.lock().unwrap().closed = closed;
        self.changed.notify_all();
    }

    /// Waits until `n` snapshot creations wait at the gate.
    fn wait_held(&self, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        let mut gate = self.gate.lock().unwrap();
        while gate.held < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no checkpoint reached its snapshot");
            gate = self.changed.wait_timeout(gate, left).unwrap().0;
        }
    }
}

fn is_snapshot_temp(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tmp")
        && path.parent().is_some_and(|p| p.ends_with("snapshots"))
}

impl Vfs for SnapshotFaults {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        if is_snapshot_temp(path) {
            let mut gate = self.gate.lock().unwrap();
            gate.held += 1;
            self.changed.notify_all();
            while gate.closed {
                gate = self.changed.wait(gate).unwrap();
            }
            gate.held -= 1;
            if self.refuse.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "read-only snapshot directory (injected)",
                ));
            }
        }
        self.inner.create_new(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner.open_read(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        self.inner.open_write(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(path)
    }
}

fn options(checkpoint_after: Option<u64>) -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            // Large enough that the writes below never fill a segment: every
            // rotation is a checkpoint's.
            segment_size: 8 << 20,
            sync_policy: SyncPolicy::Always,
            ..WalOptions::default()
        },
        checkpoint_after,
        checkpoint_write_rate: None,
        ..StoreOptions::default()
    }
}

fn segments(fs: &SimFs) -> usize {
    fs.shared()
        .list_dir(Path::new("/db/wal"))
        .unwrap()
        .iter()
        .filter(|name| name.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .count()
}

fn poll_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn concurrent_checkpoint_requests_share_the_running_one() {
    let fs = SimFs::new();
    let faults = SnapshotFaults::new(fs.shared());
    let store = KeyValueStore::open_with_vfs("/db", options(None), faults.clone()).unwrap();
    for i in 0..100u32 {
        store.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }

    // The first checkpoint stops at its snapshot file; three more requests
    // arrive meanwhile, with writes between them.
    faults.set_gate(true);
    let first = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    faults.wait_held(1);
    let mut joiners = Vec::new();
    for i in 0..3u32 {
        store.put(format!("during{i}").as_bytes(), b"v").unwrap();
        let store2 = store.clone();
        joiners.push(std::thread::spawn(move || store2.checkpoint()));
        poll_until("the request to join the running checkpoint", || {
            store.stats().checkpoints_joined == u64::from(i + 1)
        });
    }
    assert_eq!(store.stats().snapshots_taken, 0);
    faults.set_gate(false);

    let lsn = first.join().unwrap().expect("the checkpoint succeeds");
    for joiner in joiners {
        assert_eq!(
            joiner.join().unwrap().expect("shared success"),
            lsn,
            "every request gets the running checkpoint's LSN"
        );
    }
    let stats = store.stats();
    assert_eq!(stats.snapshots_taken, 1, "one snapshot for four requests");
    assert_eq!(stats.checkpoints_joined, 3);
    assert_eq!(stats.checkpoints_failed, 0);
    assert_eq!(lsn, 100, "the snapshot is as of its start");

    // A request after it ends starts a new one, which covers the rest.
    assert_eq!(store.checkpoint().unwrap(), 103);
    assert_eq!(store.stats().snapshots_taken, 2);

    // A shared failure reaches every caller, as the same error.
    store.put(b"more", b"v").unwrap();
    faults.set_gate(true);
    let first = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    faults.wait_held(1);
    let joiner = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    poll_until("the request to join the failing checkpoint", || {
        store.stats().checkpoints_joined == 4
    });
    faults.refuse.store(true, Ordering::SeqCst);
    faults.set_gate(false);
    let a = first.join().unwrap().expect_err("the snapshot was refused");
    let b = joiner.join().unwrap().expect_err("shared failure");
    for e in [&a, &b] {
        assert!(matches!(e, Error::Shared(_)), "{e:?}");
        assert!(
            matches!(e.cause(), Error::Io { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied),
            "{e:?}"
        );
    }
    assert_eq!(a.to_string(), b.to_string());
    let stats = store.stats();
    assert_eq!((stats.checkpoints_failed, stats.snapshots_taken), (1, 2));

    // A lone request that fails gets the error itself.
    let alone = store.checkpoint().expect_err("still refused");
    assert!(matches!(alone, Error::Io { .. }), "{alone:?}");
    faults.refuse.store(false, Ordering::SeqCst);
    assert_eq!(store.checkpoint().unwrap(), 104);
}

#[test]
fn a_failing_automatic_checkpoint_backs_off_and_rotates_once() {
    let fs = SimFs::new();
    let faults = SnapshotFaults::new(fs.shared());
    faults.refuse.store(true, Ordering::SeqCst);
    // Automatic checkpoints from 4 KiB of log on.
    let store =
        KeyValueStore::open_with_vfs("/db", options(Some(4 << 10)), faults.clone()).unwrap();
    assert_eq!(segments(&fs), 1);

    // A writer keeps the log above the threshold, so that every batch
    // would start a checkpoint if nothing held it back.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                store
                    .put(format!("k{}", i % 50).as_bytes(), &[7u8; 200])
                    .unwrap();
                i += 1;
            }
            i
        })
    };

    // Three failures, each after a longer wait than the one before.
    let mut failed_at = Vec::new();
    for n in 1..=3u64 {
        poll_until("an automatic checkpoint failure", || {
            store.stats().checkpoints_failed >= n
        });
        failed_at.push(Instant::now());
        assert_eq!(
            store.stats().checkpoints_failed,
            n,
            "a failure before the back-off ended"
        );
    }
    let gaps: Vec<Duration> = failed_at.windows(2).map(|w| w[1] - w[0]).collect();
    // The back-off starts at 500 ms and doubles; measured from the polls,
    // which see each failure late by at most a poll.
    assert!(gaps[0] >= Duration::from_millis(450), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(950), "{gaps:?}");
    assert!(gaps[1] > gaps[0], "{gaps:?}");
    assert_eq!(
        segments(&fs),
        2,
        "only the first failed checkpoint rotates the log"
    );

    // The fault is gone: the next retry succeeds and cuts the log.
    faults.refuse.store(false, Ordering::SeqCst);
    poll_until("an automatic checkpoint success", || {
        store.stats().snapshots_taken >= 1
    });
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    let stats = store.stats();
    assert_eq!(stats.checkpoints_failed, 3);
    assert!(stats.wal_bytes < 8 << 20, "{stats:?}");
    drop(store);

    // Everything written is recovered, through the snapshot.
    let store = KeyValueStore::open_with_vfs("/db", options(None), fs.shared()).unwrap();
    assert!(store.recovery().snapshot_seq > 0);
    assert_eq!(store.stats().last_lsn, written);
    assert_eq!(store.stats().keys, 50.min(written));
}
