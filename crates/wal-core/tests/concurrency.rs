//! Many threads appending: LSNs unique and dense, every record intact after
//! reopen, group commit sharing syncs, fail-stop reaching every appender.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wal_core::{DirLock, Error, StdFs, SyncPolicy, Vfs, VfsFile, Wal, WalOptions};

/// The real file system, counting fdatasyncs and optionally failing them.
#[derive(Debug, Default)]
struct CountingFs {
    syncs: Arc<AtomicU64>,
    fail_syncs: Arc<AtomicBool>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Box<dyn VfsFile>,
    syncs: Arc<AtomicU64>,
    fail_syncs: Arc<AtomicBool>,
}

impl CountingFs {
    fn wrap(&self, inner: Box<dyn VfsFile>) -> Box<dyn VfsFile> {
        Box::new(CountingFile {
            inner,
            syncs: Arc::clone(&self.syncs),
            fail_syncs: Arc::clone(&self.fail_syncs),
        })
    }
}

impl Vfs for CountingFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdFs.list_dir(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(self.wrap(StdFs.create_new(path)?))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(self.wrap(StdFs.open_read(path)?))
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(self.wrap(StdFs.open_write(path)?))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdFs.sync_dir(path)
    }
    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        StdFs.lock_dir(path)
    }
}

impl VfsFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        self.syncs.fetch_add(1, Ordering::SeqCst);
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

fn payload(thread: u64, i: u64) -> Vec<u8> {
    let mut p = format!("thread {thread} record {i} ").into_bytes();
    p.resize(32 + (i % 50) as usize, thread as u8);
    p
}

/// `threads` x `per_thread` appends; returns LSN -> payload.
fn hammer(wal: &Wal, threads: u64, per_thread: u64) -> BTreeMap<u64, Vec<u8>> {
    let results: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut last = 0;
                    for i in 0..per_thread {
                        let data = payload(t, i);
                        let lsn = wal.append(&data).unwrap();
                        assert!(lsn > last, "one thread's LSNs increase");
                        last = lsn;
                        mine.push((lsn, data));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all = BTreeMap::new();
    for (lsn, data) in results.into_iter().flatten() {
        assert!(
            all.insert(lsn, data).is_none(),
            "LSN {lsn} handed out twice"
        );
    }
    all
}

#[test]
fn eight_threads_get_unique_dense_lsns_and_every_record_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 64 << 10,
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open(tmp.path(), opts.clone()).unwrap();
    let all = hammer(&wal, 8, 500);
    assert_eq!(all.len(), 4000);
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        (1..=4000).collect::<Vec<_>>()
    );
    drop(wal);

    let wal = Wal::open(tmp.path(), opts).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    let mut count = 0;
    for record in wal.iter_from(1).unwrap() {
        let record = record.unwrap();
        assert_eq!(
            Some(&record.data),
            all.get(&record.lsn),
            "LSN {}",
            record.lsn
        );
        count += 1;
    }
    assert_eq!(count, 4000);
}

#[test]
fn group_commit_shares_syncs_between_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(CountingFs::default());
    let syncs = Arc::clone(&fs.syncs);
    let opts = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open_with_vfs(tmp.path(), opts, fs).unwrap();

    // A lone writer: one sync per append, no more.
    let before = syncs.load(Ordering::SeqCst);
    for i in 0..20 {
        wal.append(&payload(0, i)).unwrap();
    }
    assert_eq!(syncs.load(Ordering::SeqCst) - before, 20);

    // Sixteen writers: far fewer syncs than appends.
    let before = syncs.load(Ordering::SeqCst);
    let appends = 16 * 100;
    assert_eq!(hammer(&wal, 16, 100).len(), appends);
    let used = syncs.load(Ordering::SeqCst) - before;
    assert!(
        used * 2 < appends as u64,
        "{used} syncs for {appends} appends: group commit did not group"
    );
}

#[test]
fn a_failed_sync_fails_every_waiter_and_stops_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(CountingFs::default());
    let fail = Arc::clone(&fs.fail_syncs);
    let opts = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open_with_vfs(tmp.path(), opts.clone(), fs).unwrap();
    let acked_before = wal.append(b"durable").unwrap();

    let acked = std::sync::Mutex::new(vec![acked_before]);
    let failed = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (wal, acked, failed, fail) = (&wal, &acked, &failed, &fail);
            s.spawn(move || {
                for i in 0..200 {
                    if t == 0 && i == 20 {
                        fail.store(true, Ordering::SeqCst);
                    }
                    match wal.append(&payload(t, i)) {
                        Ok(lsn) => acked.lock().unwrap().push(lsn),
                        Err(Error::Io { .. } | Error::Poisoned { .. }) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            });
        }
    });
    assert!(failed.load(Ordering::SeqCst) > 0);
    // Fail-stop: nothing works any more, even with the disk "healed".
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.rotate(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        wal.truncate_before(u64::MAX),
        Err(Error::Poisoned { .. })
    ));
    drop(wal);

    // Every acknowledged append is there after reopen (the injected failure
    // lost nothing for real, so acknowledged ones must be a subset).
    let wal = Wal::open(tmp.path(), opts).unwrap();
    let present: std::collections::BTreeSet<u64> =
        wal.iter_from(0).unwrap().map(|r| r.unwrap().lsn).collect();
    let mut acked = acked.into_inner().unwrap();
    acked.sort_unstable();
    for lsn in &acked {
        assert!(present.contains(lsn), "acknowledged LSN {lsn} lost");
    }
    // Groups before the failed one were acknowledged whole; no member of
    // the failed group (or later) was: the acknowledged LSNs are a prefix.
    let n = acked.len() as u64;
    assert_eq!(acked, (1..=n).collect::<Vec<_>>());
    assert!(wal.append(b"after reopen").is_ok());
}

#[test]
fn concurrent_batches_stay_contiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 4096,
        sync_policy: SyncPolicy::Never,
        ..WalOptions::default()
    };
    let wal = Wal::open(tmp.path(), opts.clone()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let wal = &wal;
            s.spawn(move || {
                for i in 0..100u8 {
                    let batch = [vec![t, i, 0], vec![t, i, 1], vec![t, i, 2]];
                    let lsns = wal.append_batch(&batch).unwrap();
                    assert_eq!(lsns.end - lsns.start, 3);
                }
            });
        }
    });
    drop(wal);
    let wal = Wal::open(tmp.path(), opts).unwrap();
    let records: Vec<_> = wal.iter_from(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 1200);
    for chunk in records.chunks(3) {
        assert_eq!(chunk[0].data[..2], chunk[2].data[..2]);
        assert_eq!(
            chunk.iter().map(|r| r.data[2]).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }
}
