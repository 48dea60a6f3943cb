//! The faults the review of wal-core found, each pinned by a test that
//! fails on the code before the fix: a changed option must not cut
//! acknowledged data, a panic must not hang the log, LSNs are never
//! reused after a tolerant cut, and the absolute mode cuts nothing.

mod common;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use wal_core::{DirLock, Error, RecoveryMode, StdFs, SyncPolicy, Vfs, VfsFile, Wal, WalOptions};

const RECORD_HEADER: usize = 20;
const SEGMENT_HEADER: usize = 32;

fn small(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        segment_size: 4096,
        recovery_mode: mode,
        ..WalOptions::default()
    }
}

/// Every byte of every segment file, to show that an open changed nothing.
fn image(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::segment_files(dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

#[test]
fn a_smaller_max_record_size_refuses_to_open_and_cuts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    wal.append(&[1u8; 100]).unwrap();
    let big = wal.append(&[2u8; 1000]).unwrap();
    wal.append(&[3u8; 100]).unwrap();
    drop(wal);
    let before = image(dir);
    for mode in [
        RecoveryMode::Absolute,
        RecoveryMode::Strict,
        RecoveryMode::Tolerant,
    ] {
        let options = WalOptions {
            max_record_size: 500,
            ..small(mode)
        };
        match Wal::open(dir, options) {
            Err(Error::RecordExceedsLimit {
                lsn,
                size,
                max,
                offset,
                ..
            }) => {
                assert_eq!((lsn, size, max), (big, 1000, 500), "{mode:?}");
                assert_eq!(offset, (SEGMENT_HEADER + RECORD_HEADER + 100) as u64);
            }
            other => panic!("{mode:?}: expected RecordExceedsLimit, got {other:?}"),
        }
        assert_eq!(image(dir), before, "{mode:?} changed the log");
    }
    // With the limit it was written under, everything is there.
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    assert_eq!(wal.next_lsn(), 4);
}

/// Rewrites record `lsn`'s flags byte in `path` and fixes its checksum, as
/// a newer release that knows more flags would have written it.
fn set_flags(path: &Path, offset: usize, flags: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
    bytes[offset + 16] = flags;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[offset + 4..offset + RECORD_HEADER + len]);
    let crc = hasher.finalize();
    bytes[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn an_intact_record_with_unknown_flags_refuses_to_open_and_cuts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    wal.append(b"first").unwrap();
    wal.append(b"second").unwrap();
    drop(wal);
    let segment = dir.join(&common::segment_files(dir)[0]);
    // The last record: no valid record follows it, so before the fix it
    // was cut as a torn tail.
    let offset = SEGMENT_HEADER + RECORD_HEADER + 5;
    set_flags(&segment, offset, 0x40);
    let before = image(dir);
    for mode in [
        RecoveryMode::Absolute,
        RecoveryMode::Strict,
        RecoveryMode::Tolerant,
    ] {
        match Wal::open(dir, small(mode)) {
            Err(Error::UnknownRecordFlags { lsn, flags, .. }) => {
                assert_eq!((lsn, flags), (2, 0x40), "{mode:?}");
            }
            other => panic!("{mode:?}: expected UnknownRecordFlags, got {other:?}"),
        }
        assert_eq!(image(dir), before, "{mode:?} changed the log");
    }
}

#[test]
fn durations_that_would_overflow_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for policy in [
        SyncPolicy::GroupCommit {
            max_delay: Duration::MAX,
        },
        SyncPolicy::GroupCommit {
            max_delay: Duration::from_secs(2),
        },
        SyncPolicy::Interval {
            period: Duration::MAX,
        },
        SyncPolicy::Interval {
            period: Duration::ZERO,
        },
    ] {
        let options = WalOptions {
            sync_policy: policy,
            ..WalOptions::default()
        };
        match Wal::open(tmp.path(), options) {
            Err(Error::InvalidOptions { .. }) => {}
            other => panic!("{policy:?}: expected InvalidOptions, got {other:?}"),
        }
    }
}

/// The real file system, except that a file's `sync_data` panics while
/// `armed` is set, after waiting for `go` if given.
#[derive(Debug)]
struct PanickyFs {
    armed: Arc<AtomicBool>,
    go: Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>,
}

#[derive(Debug)]
struct PanickyFile {
    inner: Box<dyn VfsFile>,
    armed: Arc<AtomicBool>,
    go: Arc<std::sync::Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Vfs for PanickyFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdFs.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        StdFs.list_dir(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(self.wrap(StdFs.create_new(path)?)))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        StdFs.open_read(path)
    }
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(self.wrap(StdFs.open_write(path)?)))
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

impl PanickyFs {
    fn wrap(&self, inner: Box<dyn VfsFile>) -> PanickyFile {
        PanickyFile {
            inner,
            armed: Arc::clone(&self.armed),
            go: Arc::clone(&self.go),
        }
    }
}

impl VfsFile for PanickyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            let go = self.go.lock().unwrap().take();
            if let Some(go) = go {
                let _ = go.recv_timeout(Duration::from_secs(10));
            }
            panic!("simulated bug in a user Vfs");
        }
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

#[test]
fn a_panic_on_the_leaders_path_poisons_the_log_and_wakes_every_waiter() {
    let tmp = tempfile::tempdir().unwrap();
    let (go_tx, go_rx) = mpsc::channel();
    let fs = PanickyFs {
        armed: Arc::new(AtomicBool::new(false)),
        go: Arc::new(std::sync::Mutex::new(Some(go_rx))),
    };
    let armed = Arc::clone(&fs.armed);
    let wal = Arc::new(
        Wal::open_with_vfs(tmp.path(), small(RecoveryMode::Strict), Arc::new(fs)).unwrap(),
    );
    wal.append(b"before").unwrap();
    armed.store(true, Ordering::SeqCst);

    // Whichever appender leads parks inside the panicking sync until
    // released, so the others queue behind it as waiters.
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..5 {
        let wal = Arc::clone(&wal);
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wal.append(format!("appender {i}").as_bytes())
            }));
            // Let go of the log before reporting: the test's reopen below
            // needs every handle gone (the directory lock goes with the
            // last), and it runs as soon as the last report arrives.
            drop(wal);
            let _ = done.send(r);
        });
    }
    go_tx.send(()).unwrap();
    let (mut panicked, mut poisoned) = (0, 0);
    for _ in 0..5 {
        match done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an appender stayed parked behind the panicked leader")
        {
            Err(_) => panicked += 1,
            // A waiter, or one that arrived after the panic: refused.
            Ok(Err(Error::Poisoned { .. })) => poisoned += 1,
            Ok(other) => panic!("expected Poisoned, got {other:?}"),
        }
    }
    assert_eq!(
        (panicked, poisoned),
        (1, 4),
        "the leader's panic reaches its caller only"
    );
    assert!(matches!(wal.append(b"later"), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    // Dropping returns (it used to park forever on `leading`).
    let (drop_tx, drop_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(wal);
        let _ = drop_tx.send(());
    });
    drop_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("dropping the log hung");
    // What was acknowledged before is there after a reopen.
    let wal = Wal::open(tmp.path(), small(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.read(1).unwrap().unwrap().data, b"before");
}

#[test]
fn a_tolerant_cut_of_every_segment_never_reuses_an_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    for i in 0..200u32 {
        wal.append(&i.to_le_bytes().repeat(20)).unwrap();
    }
    let last = wal.last_lsn().unwrap();
    drop(wal);
    let files = common::segment_files(dir);
    assert!(files.len() > 2, "{files:?}");
    // A bad header on the oldest segment: tolerant recovery removes it
    // and everything after it.
    let oldest = dir.join(&files[0]);
    let mut bytes = std::fs::read(&oldest).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&oldest, bytes).unwrap();
    let wal = Wal::open(dir, small(RecoveryMode::Tolerant)).unwrap();
    assert_eq!(wal.recovery_report().records, 0);
    assert_eq!(
        wal.next_lsn(),
        last + 1,
        "the log restarted below LSNs it had held: {:?}",
        wal.recovery_report().warnings
    );
    assert_eq!(wal.append(b"new").unwrap(), last + 1);
    drop(wal);
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.next_lsn(), last + 2);
}

#[test]
fn the_absolute_mode_refuses_any_cut_and_names_the_mode_that_would_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wal = Wal::open(dir, small(RecoveryMode::Absolute)).unwrap();
    wal.append(b"one").unwrap();
    wal.append(b"two").unwrap();
    drop(wal);
    // A clean log (free space after the last record) opens.
    let wal = Wal::open(dir, small(RecoveryMode::Absolute)).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    drop(wal);
    // Garbage after the last record: a torn tail to strict, a refusal to
    // absolute, which changes nothing.
    let segment = dir.join(&common::segment_files(dir)[0]);
    let end = SEGMENT_HEADER + 2 * RECORD_HEADER + 6;
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[end..end + 7].copy_from_slice(b"garbage");
    std::fs::write(&segment, &bytes).unwrap();
    let before = image(dir);
    match Wal::open(dir, small(RecoveryMode::Absolute)) {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt { offset, cut_by, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*offset, *cut_by), (end as u64, Some(RecoveryMode::Strict)));
            assert!(e.to_string().contains("`strict`"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(image(dir), before);
    // The read-only open says what strict would do, and does nothing.
    let ro = Wal::open_read_only(dir, small(RecoveryMode::Strict)).unwrap();
    assert!(!ro.recovery_report().applied);
    assert!(
        ro.recovery_report().warnings[0].starts_with("torn tail in"),
        "{:?}",
        ro.recovery_report().warnings
    );
    assert_eq!(ro.last_lsn(), Some(2));
    let all: Vec<_> = ro.iter_from(1).map(|r| r.unwrap().data).collect();
    assert_eq!(all, vec![b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(image(dir), before, "the read-only open changed the log");
    let wal = Wal::open(dir, small(RecoveryMode::Strict)).unwrap();
    assert_eq!(wal.recovery_report().warnings.len(), 1);
    assert_eq!(wal.next_lsn(), 3);
}

/// Writes a later page of the last group but loses an earlier one, as a
/// drive that reorders writes: the earlier page reads back as the zeroes
/// of preallocated space.
#[test]
fn a_lost_page_of_zeroes_before_intact_records_is_a_torn_write_not_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let options = WalOptions {
        segment_size: 1 << 16,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, options.clone()).unwrap();
    for i in 0..12u8 {
        wal.append(&[i + 1; 1500]).unwrap();
    }
    drop(wal);
    let segment = dir.join(&common::segment_files(dir)[0]);
    let mut bytes = std::fs::read(&segment).unwrap();
    // Page 2 (bytes 8192..12288) lost: records after it stay intact.
    bytes[8192..12288].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let wal = Wal::open(dir, options.clone()).unwrap();
    let warnings = &wal.recovery_report().warnings;
    assert!(warnings[0].starts_with("torn write in"), "{warnings:?}");
    // Records 1..=5 end before byte 8192 (each takes 1520 bytes after the
    // 32-byte header); record 6 straddles the lost page.
    assert_eq!(wal.next_lsn(), 6);
    for lsn in 1..6u64 {
        assert_eq!(wal.read(lsn).unwrap().unwrap().data, vec![lsn as u8; 1500]);
    }
    drop(wal);

    // The same damage without zeroes is bit rot: corruption, refused.
    let wal = Wal::open(tmp.path().join("rot"), options.clone()).unwrap();
    for i in 0..12u8 {
        wal.append(&[i + 1; 1500]).unwrap();
    }
    drop(wal);
    let rot = tmp.path().join("rot");
    let segment = rot.join(&common::segment_files(&rot)[0]);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[9000] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    match Wal::open(&rot, options) {
        Err(Error::Corrupt { cut_by, .. }) => {
            assert_eq!(cut_by, Some(RecoveryMode::Tolerant));
        }
        other => panic!("bit rot before intact records must be refused, got {other:?}"),
    }
}
