//! Behaviour of the store through its public API: reads and writes, limits,
//! reopen, snapshots and their fallback rules, automatic checkpoints,
//! checkpoints that do not stop writers, group commit, fail-stop.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use kv_store::{Error, KeyValueStore, StoreOptions, SyncPolicy, Vfs, WalOptions};
use wal_core::sim::{Op, SimFs};
use wal_core::{DirLock, VfsFile};

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            segment_size: 4096,
            ..WalOptions::default()
        },
        max_key_size: 64,
        max_value_size: 1024,
        checkpoint_after: None,
        checkpoint_write_rate: StoreOptions::default().checkpoint_write_rate,
        expiry_sweep_rate: StoreOptions::default().expiry_sweep_rate,
    }
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn put_get_delete_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.put(b"b", b"2").unwrap(), 1);
    assert_eq!(store.put(b"a", b"1").unwrap(), 2);
    assert_eq!(store.put(b"ab", b"").unwrap(), 3);
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(store.get(b"ab").as_deref(), Some(&b""[..]));
    assert_eq!(store.get(b"c"), None);
    assert_eq!(store.put(b"a", b"one").unwrap(), 4);
    assert_eq!(store.get(b"a").as_deref(), Some(&b"one"[..]));

    let all = store.keys(b"", 0);
    assert_eq!(all.keys, vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec()]);
    assert!(!all.truncated);
    let a = store.keys(b"a", 0);
    assert_eq!(a.keys, vec![b"a".to_vec(), b"ab".to_vec()]);
    let one = store.keys(b"", 1);
    assert_eq!(one.keys, vec![b"a".to_vec()]);
    assert!(one.truncated);
    let exact = store.keys(b"a", 2);
    assert!(!exact.truncated);
    // A byte budget: each key costs its length plus KEY_LISTING_OVERHEAD.
    let per = kv_store::KEY_LISTING_OVERHEAD;
    let fits_two = store.keys_within(b"", 0, (1 + per) + (2 + per));
    assert_eq!(fits_two.keys, vec![b"a".to_vec(), b"ab".to_vec()]);
    assert!(fits_two.truncated);
    let fits_all = store.keys_within(b"", 0, 3 * per + 4);
    assert_eq!((fits_all.keys.len(), fits_all.truncated), (3, false));
    let none = store.keys_within(b"", 0, per);
    assert_eq!((none.keys.len(), none.truncated), (0, true));

    assert_eq!(store.delete(b"a").unwrap(), Some(5));
    assert_eq!(store.get(b"a"), None);
    let stats = store.stats();
    assert_eq!(stats.keys, 2);
    assert_eq!(stats.bytes, 1 + 1 + 2);
    assert_eq!(stats.last_lsn, 5);
    assert!(stats.wal_bytes > 0);
}

#[test]
fn limits_and_empty_key_are_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert!(matches!(store.put(b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(store.delete(b""), Err(Error::EmptyKey)));
    assert!(matches!(
        store.put(&[1u8; 65], b"v"),
        Err(Error::KeyTooLarge { size: 65, max: 64 })
    ));
    assert!(matches!(
        store.delete(&[1u8; 65]),
        Err(Error::KeyTooLarge { size: 65, max: 64 })
    ));
    assert!(matches!(
        store.put(b"k", &[0u8; 1025]),
        Err(Error::ValueTooLarge {
            size: 1025,
            max: 1024
        })
    ));
    // The limits themselves are accepted.
    assert_eq!(store.put(&[1u8; 64], &[0u8; 1024]).unwrap(), 1);
    assert_eq!(store.stats().last_lsn, 1);
}

#[test]
fn options_that_the_log_cannot_hold_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options();
    opts.max_value_size = opts.wal.max_record_size as usize;
    assert!(matches!(
        KeyValueStore::open(dir.path(), opts),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn delete_of_missing_key_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    store.put(b"k", b"v").unwrap();
    let before = store.stats();
    assert_eq!(store.delete(b"missing").unwrap(), None);
    let after = store.stats();
    assert_eq!(after.last_lsn, before.last_lsn);
    assert_eq!(after.wal_bytes, before.wal_bytes);
    // Deleting twice: the second writes nothing.
    assert_eq!(store.delete(b"k").unwrap(), Some(2));
    assert_eq!(store.delete(b"k").unwrap(), None);
    assert_eq!(store.stats().last_lsn, 2);
    drop(store);
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.recovery().replayed, 2);
    assert_eq!(store.stats().last_lsn, 2);
}

#[test]
fn pipelined_submissions_from_one_thread_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    // Submitted without waiting, so they share batches: the delete of a key
    // put earlier in the same batch must see that put, and a delete of a key
    // deleted earlier in the batch must write nothing.
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for i in 0..200u32 {
        let key = format!("k{}", i % 10);
        puts.push(store.submit_put(key.as_bytes(), &i.to_le_bytes()).unwrap());
        deletes.push(store.submit_delete(key.as_bytes()).unwrap());
        deletes.push(store.submit_delete(key.as_bytes()).unwrap());
    }
    let mut last = 0;
    for (i, p) in puts.into_iter().enumerate() {
        let lsn = p.wait().unwrap();
        assert_eq!(lsn, 2 * i as u64 + 1);
        assert!(lsn > last);
        last = lsn;
    }
    for (i, d) in deletes.into_iter().enumerate() {
        let expected = if i % 2 == 0 { Some(i as u64 + 2) } else { None };
        assert_eq!(d.wait().unwrap(), expected, "delete {i}");
    }
    assert_eq!(store.stats().keys, 0);
    assert_eq!(store.stats().last_lsn, 400);
}

#[test]
fn reopen_replays_the_log_and_a_second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    for i in 0..500u32 {
        store
            .put(format!("key{i:04}").as_bytes(), &[i as u8; 100])
            .unwrap();
    }
    store.delete(b"key0007").unwrap();
    assert!(matches!(
        KeyValueStore::open(dir.path(), options()),
        Err(Error::Wal(_))
    ));
    let clone = store.clone();
    drop(store);
    // A clone keeps the store open.
    assert!(KeyValueStore::open(dir.path(), options()).is_err());
    drop(clone);

    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let info = store.recovery();
    assert_eq!((info.snapshot_seq, info.replayed), (0, 501));
    assert_eq!(store.stats().keys, 499);
    assert_eq!(store.get(b"key0007"), None);
    assert_eq!(store.get(b"key0499"), Some(vec![243u8; 100]));
    assert_eq!(store.put(b"x", b"y").unwrap(), 502);
}

#[test]
fn checkpoint_truncates_the_log_and_recovery_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    for i in 0..300u32 {
        store
            .put(format!("key{:03}", i % 100).as_bytes(), &[i as u8; 100])
            .unwrap();
    }
    let wal_before = store.stats().wal_bytes;
    assert_eq!(store.checkpoint().unwrap(), 300);
    let stats = store.stats();
    assert_eq!(stats.snapshots_taken, 1);
    assert!(
        stats.wal_bytes < wal_before / 4,
        "{} -> {}",
        wal_before,
        stats.wal_bytes
    );
    store.delete(b"key000").unwrap();
    store.put(b"new", b"v").unwrap();
    assert_eq!(store.checkpoint().unwrap(), 302);
    // The older snapshot is removed once the newer one is durable.
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("snapshot-{:020}.snap", 302)]
    );
    store.put(b"after", b"v").unwrap();
    drop(store);

    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let info = store.recovery().clone();
    assert_eq!(
        (info.snapshot_seq, info.snapshot_entries, info.replayed),
        (302, 100, 1)
    );
    assert_eq!(store.get(b"key000"), None);
    assert_eq!(store.get(b"key001"), Some(vec![201u8; 100]));
    assert_eq!(store.get(b"new").as_deref(), Some(&b"v"[..]));
    assert_eq!(store.get(b"after").as_deref(), Some(&b"v"[..]));
    assert_eq!(store.stats().last_lsn, 303);
    // A checkpoint with no write since the last one still works.
    assert_eq!(store.checkpoint().unwrap(), 303);
    assert_eq!(store.checkpoint().unwrap(), 303);
    drop(store);
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.recovery().replayed, 0);
    assert_eq!(store.put(b"z", b"z").unwrap(), 304);
}

/// Writes `n` keys into a fresh store at `dir` and closes it.
fn fill(dir: &Path, n: u32) {
    let store = KeyValueStore::open(dir, options()).unwrap();
    for i in 0..n {
        store.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
}

fn copy_snapshot(from: &Path, to: &Path, seq: u64) {
    let name = format!("snapshot-{seq:020}.snap");
    std::fs::copy(
        from.join("snapshots").join(&name),
        to.join("snapshots").join(&name),
    )
    .unwrap();
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_newest_snapshot_falls_back_where_the_log_covers_the_gap() {
    // An empty store's snapshot of LSN 0, and a store of 10 writes with a
    // snapshot of LSN 10, both made by real checkpoints elsewhere.
    let empty = tempfile::tempdir().unwrap();
    KeyValueStore::open(empty.path(), options())
        .unwrap()
        .checkpoint()
        .unwrap();
    let full = tempfile::tempdir().unwrap();
    fill(full.path(), 10);
    KeyValueStore::open(full.path(), options())
        .unwrap()
        .checkpoint()
        .unwrap();

    // A store whose log still holds LSN 1..=10, with both snapshots, the
    // newest damaged in its entries.
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 10);
    copy_snapshot(empty.path(), dir.path(), 0);
    copy_snapshot(full.path(), dir.path(), 10);
    let newest = dir
        .path()
        .join("snapshots")
        .join(format!("snapshot-{:020}.snap", 10));
    flip_byte(&newest, 70);

    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let info = store.recovery().clone();
    assert_eq!((info.snapshot_seq, info.replayed), (0, 10));
    assert!(
        info.warnings
            .iter()
            .any(|w| w.contains("skipping snapshot")),
        "{:?}",
        info.warnings
    );
    assert_eq!(store.stats().keys, 10);
    // The next checkpoint replaces the damaged file.
    assert_eq!(store.checkpoint().unwrap(), 10);
    drop(store);
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.recovery().snapshot_seq, 10);
    assert_eq!(store.stats().keys, 10);
}

#[test]
fn corrupt_newest_snapshot_without_log_coverage_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    KeyValueStore::open(empty.path(), options())
        .unwrap()
        .checkpoint()
        .unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    for i in 0..100u32 {
        store.put(format!("k{i}").as_bytes(), &[7; 100]).unwrap();
    }
    store.checkpoint().unwrap();
    drop(store);
    copy_snapshot(empty.path(), dir.path(), 0);
    let newest = dir
        .path()
        .join("snapshots")
        .join(format!("snapshot-{:020}.snap", 100));
    // Damage the header, then (separately) the trailer: both are refused.
    for offset in [20, std::fs::metadata(&newest).unwrap().len() as usize - 1] {
        let original = std::fs::read(&newest).unwrap();
        flip_byte(&newest, offset);
        match KeyValueStore::open(dir.path(), options()) {
            Err(Error::Unrecoverable(msg)) => {
                assert!(msg.contains("snapshot of LSN 100 is damaged"), "{msg}");
                assert!(msg.contains("empty state"), "{msg}");
                assert!(msg.contains("needs LSN 1"), "{msg}");
            }
            other => panic!("expected Unrecoverable, got {other:?}"),
        }
        std::fs::write(&newest, original).unwrap();
    }
    // Intact again, it opens.
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.stats().keys, 100);
}

#[test]
fn a_log_that_does_not_reach_back_to_the_only_snapshot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    for i in 0..100u32 {
        store.put(format!("k{i}").as_bytes(), &[7; 100]).unwrap();
    }
    store.checkpoint().unwrap();
    drop(store);
    std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
    match KeyValueStore::open(dir.path(), options()) {
        Err(Error::Unrecoverable(msg)) => assert!(msg.contains("no snapshot"), "{msg}"),
        other => panic!("expected Unrecoverable, got {other:?}"),
    }
}

#[test]
fn automatic_checkpoint_starts_when_the_log_outgrows_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        checkpoint_after: Some(32 << 10),
        ..options()
    };
    let store = KeyValueStore::open(dir.path(), opts.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0u32;
    while store.stats().snapshots_taken == 0 {
        assert!(Instant::now() < deadline, "no automatic checkpoint");
        store
            .put(format!("key{}", i % 50).as_bytes(), &[i as u8; 200])
            .unwrap();
        i += 1;
    }
    // 50 keys of 200 bytes: one checkpoint keeps the log well below the limit.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().wal_bytes > 32 << 10 {
        assert!(Instant::now() < deadline, "log not truncated");
        store.put(b"tick", b"").unwrap();
    }
    let expected: Vec<Option<Vec<u8>>> = (0..50)
        .map(|k| store.get(format!("key{k}").as_bytes()))
        .collect();
    drop(store);
    let store = KeyValueStore::open(dir.path(), opts).unwrap();
    assert!(store.recovery().snapshot_seq > 0);
    let got: Vec<Option<Vec<u8>>> = (0..50)
        .map(|k| store.get(format!("key{k}").as_bytes()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn puts_complete_while_a_checkpoint_of_a_large_store_runs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::Never,
            segment_size: 8 << 20,
            ..WalOptions::default()
        },
        ..options()
    };
    let store = KeyValueStore::open(dir.path(), opts.clone()).unwrap();
    // Load 200k keys fast: many submissions in flight, then wait for all.
    let mut pending = Vec::new();
    for i in 0..200_000u32 {
        pending.push(
            store
                .submit_put(format!("key{i:08}").as_bytes(), &[i as u8; 100])
                .unwrap(),
        );
    }
    for p in pending {
        p.wait().unwrap();
    }

    // The checkpoint's temporary snapshot file appears once the checkpoint
    // has fixed its LSN (and rotated the log) and is about to copy the map:
    // the start signal.
    let snapshots = dir.path().join("snapshots");
    let checkpoint_in_progress = || {
        std::fs::read_dir(&snapshots).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".tmp"))
        })
    };
    assert!(!checkpoint_in_progress());
    let checkpointer = {
        let store = store.clone();
        std::thread::spawn(move || store.checkpoint())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !checkpoint_in_progress() {
        assert!(
            !checkpointer.is_finished(),
            "the checkpoint ended before its temporary file was seen"
        );
        assert!(Instant::now() < deadline, "the checkpoint did not start");
        std::thread::yield_now();
    }
    // Puts submitted after the start signal, counted if the checkpoint had
    // still not returned once they were acknowledged.
    let mut during = Vec::new();
    let mut i = 0u32;
    loop {
        assert!(Instant::now() < deadline, "the checkpoint did not finish");
        let lsn = store.put(format!("new{i}").as_bytes(), b"x").unwrap();
        i += 1;
        if checkpointer.is_finished() {
            break;
        }
        during.push(lsn);
    }
    let seq = checkpointer.join().unwrap().unwrap();
    assert!(
        during.len() >= 10,
        "only {} puts completed during the checkpoint",
        during.len()
    );
    assert_eq!(seq, 200_000);
    // They are writes after the snapshot's LSN: not waiting for it.
    assert!(during.iter().all(|&lsn| lsn > seq), "{during:?}");
    // Every write, during the checkpoint or not, survives a reopen from the
    // snapshot plus the log after it.
    let expected = store.stats();
    drop(store);
    let store = KeyValueStore::open(dir.path(), opts).unwrap();
    assert_eq!(store.recovery().snapshot_seq, seq);
    let stats = store.stats();
    assert_eq!(
        (stats.keys, stats.bytes, stats.last_lsn),
        (expected.keys, expected.bytes, expected.last_lsn)
    );
    for j in 0..i {
        assert_eq!(
            store.get(format!("new{j}").as_bytes()).as_deref(),
            Some(&b"x"[..])
        );
    }
}

/// A file system that refuses to delete finished snapshots while `refuse`
/// is set, and passes everything else to `inner`.
#[derive(Debug)]
struct SnapshotsStick {
    inner: Arc<dyn Vfs>,
    refuse: AtomicBool,
}

impl Vfs for SnapshotsStick {
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        self.inner.create_new(path)
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        self.inner.open_read(path)
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn VfsFile>> {
        self.inner.open_write(path)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        if self.refuse.load(Ordering::SeqCst) && path.extension().is_some_and(|e| e == "snap") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "snapshot deletion refused by the test",
            ));
        }
        self.inner.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path) -> std::io::Result<Box<dyn DirLock>> {
        self.inner.lock_dir(path)
    }
}

#[test]
fn a_checkpoint_that_cannot_delete_an_old_snapshot_still_succeeds() {
    let fs = SimFs::new();
    let vfs = Arc::new(SnapshotsStick {
        inner: fs.shared(),
        refuse: AtomicBool::new(false),
    });
    let snapshots = |vfs: &SnapshotsStick| {
        let mut names = vfs.list_dir(Path::new("/db/snapshots")).unwrap();
        names.sort();
        names
    };
    let name = |seq: u64| format!("snapshot-{seq:020}.snap");
    let store = KeyValueStore::open_with_vfs("/db", options(), vfs.clone()).unwrap();
    store.put(b"a", b"1").unwrap();
    assert_eq!(store.checkpoint().unwrap(), 1);

    // The new snapshot is durable and the log cut; only the old snapshot's
    // deletion fails. The checkpoint succeeded, and is counted.
    vfs.refuse.store(true, Ordering::SeqCst);
    store.put(b"b", b"2").unwrap();
    assert_eq!(store.checkpoint().unwrap(), 2);
    assert_eq!(store.stats().snapshots_taken, 2);
    assert_eq!(snapshots(&vfs), vec![name(1), name(2)]);
    drop(store);

    // Recovery takes the newest snapshot; the leftover is harmless.
    let store = KeyValueStore::open_with_vfs("/db", options(), vfs.clone()).unwrap();
    let info = store.recovery();
    assert_eq!((info.snapshot_seq, info.replayed), (2, 0));
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(store.get(b"b").as_deref(), Some(&b"2"[..]));

    // The next checkpoint that can delete removes the leftover too.
    vfs.refuse.store(false, Ordering::SeqCst);
    store.put(b"c", b"3").unwrap();
    assert_eq!(store.checkpoint().unwrap(), 3);
    assert_eq!(snapshots(&vfs), vec![name(3)]);
}

fn group_commit(max_delay: Duration) -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::GroupCommit { max_delay },
            // One segment for the whole test: no rotation adds writes.
            segment_size: 1 << 20,
            ..WalOptions::default()
        },
        ..options()
    }
}

/// Under GroupCommit the commit thread, not the log, gathers the group: the
/// writes of many threads, queued one after another while the window is
/// open, go to the log in one write with one fdatasync. And the log itself
/// does not wait again (it is opened with Always): once the window closes
/// (here by `close`, long before `max_delay`) the group is durable at once.
#[test]
fn group_commit_gathers_the_writes_of_many_threads_into_one_write_and_sync() {
    const THREADS: usize = 8;
    const EACH: u32 = 5;
    let fs = SimFs::new();
    let window = Duration::from_secs(20);
    let store = KeyValueStore::open_with_vfs("/db", group_commit(window), fs.shared()).unwrap();
    let (writes, syncs) = (fs.op_count(Op::Write), fs.op_count(Op::SyncData));
    let submitted = Barrier::new(THREADS + 1);
    let pending = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, submitted) = (&store, &submitted);
                scope.spawn(move || {
                    let pending: Vec<_> = (0..EACH)
                        .map(|i| {
                            store
                                .submit_put(format!("t{t}-{i}").as_bytes(), b"v")
                                .unwrap()
                        })
                        .collect();
                    submitted.wait();
                    pending
                })
            })
            .collect();
        submitted.wait();
        // Everything is queued, the window is open: nothing is written yet.
        assert_eq!(fs.op_count(Op::Write), writes);
        let closing = Instant::now();
        store.close().unwrap();
        assert!(
            closing.elapsed() < window / 2,
            "the group waited again in the log: {:?}",
            closing.elapsed()
        );
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    let mut lsns: Vec<u64> = pending.into_iter().map(|p| p.wait().unwrap()).collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=THREADS as u64 * EACH as u64).collect::<Vec<_>>());
    assert_eq!(fs.op_count(Op::Write) - writes, 1, "log writes");
    assert_eq!(fs.op_count(Op::SyncData) - syncs, 1, "fdatasyncs");
    assert_eq!(store.stats().keys, THREADS as u64 * EACH as u64);
}

/// The window closes by itself `max_delay` after the first write of a
/// batch arrived (not before), and takes along what came meanwhile.
#[test]
fn group_commit_commits_max_delay_after_the_first_write() {
    let fs = SimFs::new();
    let window = Duration::from_millis(300);
    let store = KeyValueStore::open_with_vfs("/db", group_commit(window), fs.shared()).unwrap();
    let (writes, syncs) = (fs.op_count(Op::Write), fs.op_count(Op::SyncData));
    let submitted = Instant::now();
    let first = store.submit_put(b"a", b"1").unwrap();
    let second = store.submit_put(b"b", b"2").unwrap();
    assert_eq!(first.wait().unwrap(), 1);
    assert!(submitted.elapsed() >= window, "{:?}", submitted.elapsed());
    assert_eq!(second.wait().unwrap(), 2);
    assert_eq!(fs.op_count(Op::Write) - writes, 1, "log writes");
    assert_eq!(fs.op_count(Op::SyncData) - syncs, 1, "fdatasyncs");
    // The next write opens a window of its own.
    let submitted = Instant::now();
    assert_eq!(store.put(b"c", b"3").unwrap(), 3);
    assert!(submitted.elapsed() >= window, "{:?}", submitted.elapsed());
    assert_eq!(fs.op_count(Op::Write) - writes, 2, "log writes");
}

/// The writes of the group whose fdatasync failed may be on disk or not:
/// each gets OutcomeUnknown, never a success and never a plain refusal.
/// From then on the store is fail-stop: later writes are refused outright
/// (Unavailable), reads serve what was acknowledged, and close says the log
/// had failed.
#[test]
fn the_group_whose_sync_failed_gets_outcome_unknown_and_later_writes_unavailable() {
    let fs = SimFs::new();
    // A window long enough that the three writes below, submitted at once,
    // form one group.
    let store =
        KeyValueStore::open_with_vfs("/db", group_commit(Duration::from_millis(300)), fs.shared())
            .unwrap();
    store.put(b"a", b"1").unwrap();
    fs.fail_nth(Op::SyncData, 0, std::io::ErrorKind::Other);
    let (b, c, a) = (
        store.submit_put(b"b", b"2").unwrap(),
        store.submit_put(b"c", b"3").unwrap(),
        store.submit_delete(b"a").unwrap(),
    );
    let group = [
        b.wait().map(|_| ()),
        c.wait().map(|_| ()),
        a.wait().map(|_| ()),
    ];
    for outcome in group {
        assert!(
            matches!(outcome, Err(Error::OutcomeUnknown(_))),
            "{outcome:?}"
        );
    }
    assert!(store.failure().is_some());
    // Syncs would work again; the store still refuses: a retried fsync
    // could claim pages the kernel already dropped.
    fs.clear_faults();
    assert!(matches!(store.put(b"d", b"4"), Err(Error::Unavailable(_))));
    assert!(matches!(store.delete(b"a"), Err(Error::Unavailable(_))));
    // Nothing of the failed group was applied.
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(store.get(b"b"), None);
    assert_eq!(store.stats().last_lsn, 1);
    assert!(matches!(store.close(), Err(Error::LogFailed(_))));
}

/// A full disk is not fail-stop: the writes that hit it fail with DiskFull
/// (nothing of them written), the store keeps serving, and writes succeed
/// again once space is freed. What was acknowledged survives a crash; what
/// failed is not there.
#[test]
fn a_full_disk_fails_writes_without_stopping_the_store() {
    let fs = SimFs::new();
    let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
    // The active 4 KiB segment is reserved already: writes into it need no
    // new space; the rotation to the next one does.
    fs.set_space_budget(Some(0));
    let value = [7u8; 1000];
    let mut acknowledged = Vec::new();
    let full = loop {
        let key = format!("k{}", acknowledged.len());
        match store.put(key.as_bytes(), &value) {
            Ok(_) => acknowledged.push(key),
            Err(e) => break (key, e),
        }
        assert!(acknowledged.len() < 100, "the disk never filled");
    };
    assert!(matches!(full.1, Error::DiskFull(_)), "{:?}", full.1);
    assert!(!acknowledged.is_empty());
    // Still full: still refused, and still not fail-stop.
    assert!(matches!(
        store.put(b"still-full", &value),
        Err(Error::DiskFull(_))
    ));
    assert_eq!(store.failure(), None);
    assert_eq!(store.get(full.0.as_bytes()), None);
    assert_eq!(
        store.get(acknowledged[0].as_bytes()).as_deref(),
        Some(&value[..])
    );

    fs.set_space_budget(None);
    let after = store.put(b"after", b"space").unwrap();
    assert_eq!(store.stats().last_lsn, after);
    assert_eq!(after, acknowledged.len() as u64 + 1, "LSNs stay dense");
    store.close().unwrap();

    let crashed = fs.crash();
    drop(store);
    let store = KeyValueStore::open_with_vfs("/db", options(), crashed.shared()).unwrap();
    for key in &acknowledged {
        assert_eq!(
            store.get(key.as_bytes()).as_deref(),
            Some(&value[..]),
            "{key}"
        );
    }
    assert_eq!(store.get(b"after").as_deref(), Some(&b"space"[..]));
    assert_eq!(store.get(full.0.as_bytes()), None);
    assert_eq!(store.get(b"still-full"), None);
}

#[test]
fn close_syncs_and_refuses_later_writes() {
    let fs = SimFs::new();
    let opts = StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::Never,
            ..options().wal
        },
        ..options()
    };
    let store = KeyValueStore::open_with_vfs("/db", opts.clone(), fs.shared()).unwrap();
    store.put(b"a", b"1").unwrap();
    store.close().unwrap();
    assert!(matches!(store.put(b"b", b"2"), Err(Error::Unavailable(_))));
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
    store.close().unwrap();
    let after = fs.crash();
    drop(store);
    let store = KeyValueStore::open_with_vfs("/db", opts, after.shared()).unwrap();
    assert_eq!(store.get(b"a").as_deref(), Some(&b"1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_writes_are_awaited_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lsns = Vec::new();
            for i in 0..50u32 {
                let lsn = store
                    .submit_put(format!("t{t}-{i}").as_bytes(), b"v")
                    .unwrap()
                    .await
                    .unwrap();
                lsns.push(lsn);
            }
            lsns
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=400).collect::<Vec<u64>>());
    assert_eq!(store.stats().keys, 400);
}

/// A key listing copies the map in chunks (of 1024 keys, the checkpoint's
/// chunk), letting the commit thread apply batches between them: it must
/// still list every key present throughout exactly once, in order, and get
/// `truncated` right at a chunk's edge.
#[test]
fn a_key_listing_in_chunks_lets_writes_in_and_lists_every_key_once() {
    const CHUNK: usize = 1024;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        wal: WalOptions {
            segment_size: 8 << 20,
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        },
        checkpoint_after: None,
        ..StoreOptions::default()
    };
    let store = KeyValueStore::open(dir.path(), options).unwrap();
    let n = 20 * CHUNK;
    let pending: Vec<_> = (0..n)
        .map(|i| {
            store
                .submit_put(format!("a{i:06}").as_bytes(), b"")
                .unwrap()
        })
        .collect();
    for p in pending {
        p.wait().unwrap();
    }

    // At a chunk's edge: a limit of exactly two chunks, with more keys
    // after them, is truncated; all keys with a limit of exactly all of them
    // are not.
    let two = store.keys(b"a", 2 * CHUNK);
    assert_eq!((two.keys.len(), two.truncated), (2 * CHUNK, true));
    assert_eq!(
        two.keys[2 * CHUNK - 1],
        format!("a{:06}", 2 * CHUNK - 1).into_bytes()
    );
    let all = store.keys(b"a", n);
    assert_eq!((all.keys.len(), all.truncated), (n, false));
    let per = "a000000".len() + kv_store::KEY_LISTING_OVERHEAD;
    let by_bytes = store.keys_within(b"", 0, CHUNK * per);
    assert_eq!((by_bytes.keys.len(), by_bytes.truncated), (CHUNK, true));

    // A writer appends keys that sort after all of them, one at a time,
    // while listings run. A listing taken under one read lock would see
    // at most one more of them than were acknowledged when it began; one
    // in chunks sees those written while it ran.
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, acked, stop) = (store.clone(), Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let i = acked.load(Ordering::SeqCst);
                store.put(format!("z{i:06}").as_bytes(), b"").unwrap();
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut interleaved = false;
    while !interleaved && Instant::now() < deadline {
        let before = acked.load(Ordering::SeqCst);
        let page = store.keys(b"", 0);
        let after = acked.load(Ordering::SeqCst);
        assert!(!page.truncated);
        assert!(
            page.keys.windows(2).all(|w| w[0] < w[1]),
            "a listing out of order or with a key twice"
        );
        assert_eq!(page.keys.iter().filter(|k| k[0] == b'a').count(), n);
        let late = page.keys.iter().filter(|k| k[0] == b'z').count();
        assert!(
            (before..=after + 1).contains(&late),
            "{late} late keys, {before} acknowledged before the listing and {after} after"
        );
        interleaved = late >= before + 3;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        interleaved,
        "no listing ever saw writes made while it ran: it holds the read lock throughout"
    );
}

#[test]
fn a_hold_sends_its_writes_in_order_only_when_released() {
    use kv_store::{Condition, Expiry, Txn, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let mut hold = store.hold();
    let first = hold.submit_put_expiring(b"k", b"1", None).unwrap();
    // Decided after the put it follows: the condition sees "1".
    let second = hold
        .submit_txn(Txn {
            conditions: vec![(b"k".to_vec(), Condition::ValueEquals(b"1".to_vec()))],
            writes: vec![Write::Put {
                key: b"k".to_vec(),
                value: b"2".to_vec(),
                expiry: Expiry::Clear,
            }],
        })
        .unwrap();
    // Invalid input is refused at once, as the store refuses it.
    assert!(matches!(
        hold.submit_put_expiring(b"", b"x", None),
        Err(Error::EmptyKey)
    ));
    assert!(!hold.is_empty());
    // A direct write, durable once it returns, would have followed the
    // held ones had they been sent: they were not.
    store.put(b"direct", b"x").unwrap();
    assert_eq!(store.get(b"k"), None);
    hold.release();
    assert!(hold.is_empty());
    let put_at = first.wait().unwrap();
    let outcome = second.wait().unwrap();
    assert!(outcome.seq > put_at, "{} then {put_at}", outcome.seq);
    assert_eq!(store.get(b"k"), Some(b"2".to_vec()));
    // Dropping a hold releases it.
    let dropped = {
        let mut hold = store.hold();
        hold.submit_put_expiring(b"d", b"1", None).unwrap()
    };
    dropped.wait().unwrap();
    assert_eq!(store.get(b"d"), Some(b"1".to_vec()));
}
