//! Crashes that keep unsynced pages out of order, and the line between a
//! torn write and corruption.
//!
//! A drive with a volatile cache may persist a later 4 KiB page of a write
//! and lose an earlier one ([`SimFs::crash_reordered`]). With records of
//! ~1.5 KiB and batches of several of them, one unsynced group spans
//! several pages, so such a crash leaves valid records after a page of
//! zeroes (the preallocated space the lost page still holds). Recovery's
//! rule: in the last segment, damage holding a zeroed 512-byte sector
//! followed by valid records is a torn write, cut in `Strict` mode with a
//! warning "torn write in ..."; damage without zeroes followed by valid
//! records is corruption, refused by `Strict` and `Absolute`
//! (`cut_by: Tolerant`); and `Absolute` refuses even a torn tail or torn
//! write (`cut_by: Strict`), changing nothing.

#[allow(dead_code)]
mod sweep;

use std::path::{Path, PathBuf};

use sweep::{DIR, Outcome, check_reopened, fresh_fs};
use wal_core::sim::{Op, SimFs};
use wal_core::{Error, RecoveryMode, SyncPolicy, Vfs, Wal, WalOptions};

const SEGMENT: u64 = 64 << 10;
const SEGMENT_HEADER: u64 = 32;
const RECORD_HEADER: u64 = 20;

fn options(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        segment_size: SEGMENT,
        sync_policy: SyncPolicy::Always,
        max_record_size: 4096,
        recovery_mode: mode,
    }
}

/// About 1.5 KiB, never containing a zero byte (so that only lost pages,
/// never payloads, look like zeroed sectors), named by `i`.
fn big_payload(i: usize) -> Vec<u8> {
    let mut p = format!("big-{i}:").into_bytes();
    p.resize(1400 + (i * 37) % 200, b'a' + (i % 26) as u8);
    p
}

/// Group sizes of the workload: single appends and batches, 49 records,
/// more than one 64 KiB segment.
const GROUPS: [usize; 11] = [1, 1, 6, 1, 8, 2, 7, 1, 8, 6, 8];

/// Appends the groups (a clean reopen half way) until the first error.
fn workload(fs: &SimFs, out: &mut Outcome) -> Option<Wal> {
    let mut wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared()).ok()?;
    let mut i = 0;
    for (g, &size) in GROUPS.iter().enumerate() {
        if g == 5 {
            drop(wal);
            wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared()).ok()?;
        }
        let data: Vec<Vec<u8>> = (i..i + size).map(big_payload).collect();
        i += size;
        let first = wal.next_lsn();
        for (n, d) in data.iter().enumerate() {
            out.attempted.insert(first + n as u64, d.clone());
        }
        let lsns = if size == 1 {
            let lsn = wal.append(&data[0]).ok()?;
            lsn..lsn + 1
        } else {
            wal.append_batch(&data).ok()?
        };
        for (lsn, d) in lsns.zip(data) {
            out.acked.insert(lsn, d);
        }
    }
    Some(wal)
}

/// Reopens a crashed image strictly and checks it; returns how many of the
/// report's warnings are torn-write cuts, and how many records it held.
fn check_recovered(fs: &SimFs, out: &Outcome, what: &str) -> (usize, u64) {
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared())
        .unwrap_or_else(|e| panic!("{what}: strict open failed: {e}"));
    let torn_writes = wal
        .recovery_report()
        .warnings
        .iter()
        .filter(|w| w.starts_with("torn write in"))
        .count();
    check_reopened(&wal, out, what);
    let held = wal.recovery_report().records;
    let next = wal.next_lsn();
    assert_eq!(wal.append(b"after").unwrap(), next, "{what}: next LSN");
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.crash().shared())
        .unwrap_or_else(|e| panic!("{what}: reopen after the second crash: {e}"));
    assert_eq!(
        wal.last_lsn(),
        Some(next),
        "{what}: post-recovery append lost"
    );
    (torn_writes, held)
}

#[test]
fn reordered_pages_at_every_crash_point_lose_nothing_acknowledged() {
    let n = {
        let fs = fresh_fs();
        let base = fs.mutation_count();
        let mut out = Outcome::default();
        let wal = workload(&fs, &mut out).expect("the workload runs without faults");
        assert_eq!(out.acked.len(), GROUPS.iter().sum::<usize>());
        assert!(wal.disk_size() > SEGMENT, "the workload never rotated");
        fs.mutation_count() - base
    };
    let mut torn_writes = 0;
    let mut crashes = 0;
    for k in 0..=n {
        for seed in 0..8 {
            let fs = fresh_fs();
            fs.power_cut_after(k);
            let mut out = Outcome::default();
            let wal = workload(&fs, &mut out);
            let crashed = fs.crash_reordered(k * 1000 + seed);
            drop(wal);
            let what = format!("reordered crash after {k} ops (seed {seed})");
            torn_writes += check_recovered(&crashed, &out, &what).0;
            crashes += 1;
        }
    }
    eprintln!("{torn_writes} torn writes cut in {crashes} reordered crashes at {n} points");
    // Not vacuous: crashes between a batch's write and its sync lost an
    // earlier page and kept a later one often enough.
    assert!(
        torn_writes >= 10,
        "only {torn_writes} torn writes in {crashes} reordered crashes"
    );
}

#[test]
fn a_batch_spanning_pages_cut_before_its_sync_goes_whole_or_stays_whole() {
    // The crash point the sweep above is for, with many seeds: after a
    // batch's write (~12 KiB, four pages) and before its fdatasync. The
    // batch was never acknowledged, so it survives whole or not at all,
    // and what came before it stays.
    let batch: Vec<Vec<u8>> = (10..18).map(big_payload).collect();
    let mut torn_writes = 0;
    for seed in 0..64 {
        let what = format!("batch cut before its sync (seed {seed})");
        let fs = fresh_fs();
        let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared()).unwrap();
        let mut out = Outcome::default();
        for i in 0..3 {
            let d = big_payload(i);
            let lsn = wal.append(&d).unwrap();
            out.attempted.insert(lsn, d.clone());
            out.acked.insert(lsn, d);
        }
        for (n, d) in batch.iter().enumerate() {
            out.attempted.insert(4 + n as u64, d.clone());
        }
        // The batch's write goes through; the power goes at its sync.
        let writes = fs.op_count(Op::Write);
        fs.power_cut_after(1);
        assert!(wal.append_batch(&batch).is_err(), "{what}: acknowledged");
        assert_eq!(fs.op_count(Op::Write), writes + 1, "{what}: one write");
        let crashed = fs.crash_reordered(seed);
        drop(wal);
        let (torn, held) = check_recovered(&crashed, &out, &what);
        assert!(held == 3 || held == 11, "{what}: {held} records");
        torn_writes += torn;
    }
    assert!(torn_writes > 0, "no torn write in 64 reordered crashes");
}

// ---------------------------------------------------------------------------
// Torn write, torn tail or corruption: single cases.

/// Offsets of records with payloads of these lengths, and where the last
/// one ends.
fn record_offsets(lens: &[usize]) -> (Vec<u64>, u64) {
    let mut at = SEGMENT_HEADER;
    let offsets = lens
        .iter()
        .map(|&len| {
            let here = at;
            at += RECORD_HEADER + len as u64;
            here
        })
        .collect();
    (offsets, at)
}

/// The names and bytes of the files in `dir` on the real file system.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Both images of the log directory on a simulated file system.
fn sim_image(fs: &SimFs) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut names = fs.list_dir(Path::new(DIR)).unwrap();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let path = Path::new(DIR).join(&n);
            let written = fs.read_file(&path).unwrap();
            let durable = fs.durable_file(&path).unwrap_or_default();
            (n, written, durable)
        })
        .collect()
}

/// Writes `bytes` at `offset` of a file on the real file system.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

/// Flips one bit at `offset` of a simulated file, durably.
fn flip_sim(fs: &SimFs, path: &Path, offset: u64) {
    let byte = fs.read_file(path).unwrap()[offset as usize];
    let f = fs.open_write(path).unwrap();
    f.write_all_at(&[byte ^ 0x10], offset).unwrap();
    f.sync_data().unwrap();
}

/// Asserts `result` is `Error::Corrupt` in `segment` at `offset`, naming
/// `cut_by` as the mode that would cut there.
fn expect_corrupt<T: std::fmt::Debug>(
    result: wal_core::Result<T>,
    segment: &Path,
    offset: u64,
    cut_by: RecoveryMode,
    what: &str,
) {
    match result {
        Err(Error::Corrupt {
            segment: s,
            offset: o,
            cut_by: c,
            ..
        }) => {
            assert_eq!(s, segment, "{what}: segment");
            assert_eq!(o, offset, "{what}: offset");
            assert_eq!(c, Some(cut_by), "{what}: cut_by");
        }
        other => panic!("{what}: expected Corrupt at {offset} cut by {cut_by}, got {other:?}"),
    }
}

fn payloads(wal: &Wal) -> Vec<Vec<u8>> {
    wal.iter_from(0).unwrap().map(|r| r.unwrap().data).collect()
}

/// Bit rot in the middle of record 3 of the last segment, with records 4
/// to 6 intact after it and no zeroes in between: corruption, refused by
/// the strict and absolute modes and by a read-only open, nothing changed;
/// the tolerant mode cuts there.
fn expect_bit_rot_refused(fs: &SimFs, path: &Path, lens: &[usize], what: &str) {
    let (offsets, _) = record_offsets(lens);
    flip_sim(fs, path, offsets[2] + RECORD_HEADER + 700);
    let before = sim_image(fs);
    for mode in [RecoveryMode::Strict, RecoveryMode::Absolute] {
        let what = format!("{what}, {mode}");
        let open = Wal::open_with_vfs(DIR, options(mode), fs.shared());
        expect_corrupt(open, path, offsets[2], RecoveryMode::Tolerant, &what);
        let ro = Wal::open_read_only_with_vfs(DIR, options(mode), fs.shared());
        expect_corrupt(ro, path, offsets[2], RecoveryMode::Tolerant, &what);
        assert!(
            sim_image(fs) == before,
            "{what}: a refused open changed files"
        );
    }
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Tolerant), fs.shared()).unwrap();
    assert!(
        wal.recovery_report()
            .warnings
            .iter()
            .any(|w| w.starts_with("corruption in")),
        "{what}: {:?}",
        wal.recovery_report().warnings
    );
    assert_eq!(payloads(&wal), [big_payload(0), big_payload(1)], "{what}");
    assert_eq!(wal.next_lsn(), 3, "{what}");
}

#[test]
fn bit_rot_followed_by_valid_records_in_the_active_segment_is_corruption() {
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared()).unwrap();
    for i in 0..6 {
        wal.append(&big_payload(i)).unwrap();
    }
    drop(wal);
    let lens: Vec<usize> = (0..6).map(|i| big_payload(i).len()).collect();
    let path = Path::new(DIR).join(format!("{:020}.wal", 1));
    // Preallocated: zeroes follow the records, which is free space.
    assert_eq!(fs.read_file(&path).unwrap().len() as u64, SEGMENT);
    expect_bit_rot_refused(&fs, &path, &lens, "active segment");
}

/// Segment 1 holds LSNs 1..=6 and is sealed; segment 7 holds 7 and 8; then
/// `truncate_after(4)` is interrupted right after removing segment 7 (and
/// syncing the directory), before cutting segment 1. Returns the crashed
/// disk: segment 1 is now the last one, and ends at its last record.
fn sealed_then_last() -> (SimFs, PathBuf, Vec<usize>) {
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Strict), fs.shared()).unwrap();
    for i in 0..6 {
        wal.append(&big_payload(i)).unwrap();
    }
    wal.rotate().unwrap();
    wal.append(&big_payload(6)).unwrap();
    wal.append(&big_payload(7)).unwrap();
    fs.power_cut_after(2); // remove, directory fsync
    assert!(wal.truncate_after(4).is_err());
    let crashed = fs.crash();
    drop(wal);
    let lens: Vec<usize> = (0..6).map(|i| big_payload(i).len()).collect();
    let (_, end) = record_offsets(&lens);
    let path = Path::new(DIR).join(format!("{:020}.wal", 1));
    assert_eq!(
        crashed.list_dir(Path::new(DIR)).unwrap(),
        [format!("{:020}.wal", 1)],
        "segment 7 was not removed durably"
    );
    assert_eq!(
        crashed.read_file(&path).unwrap().len() as u64,
        end,
        "not sealed"
    );
    (crashed, path, lens)
}

#[test]
fn an_interrupted_truncate_after_can_leave_a_sealed_segment_last() {
    // The state the next test damages is a valid one: strict open keeps
    // records 1..=6 (the bound 4 and a prefix of the old suffix above it).
    let (fs, _, _) = sealed_then_last();
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Absolute), fs.shared()).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    assert_eq!(payloads(&wal), (0..6).map(big_payload).collect::<Vec<_>>());
}

#[test]
fn bit_rot_followed_by_valid_records_in_a_sealed_last_segment_is_corruption() {
    let (fs, path, lens) = sealed_then_last();
    expect_bit_rot_refused(&fs, &path, &lens, "sealed-then-last segment");
}

/// A log of records with these payload lengths in one segment, closed
/// cleanly, on the real file system; returns the segment's path.
fn real_log(dir: &Path, lens: &[usize]) -> PathBuf {
    let wal = Wal::open(dir, options(RecoveryMode::Strict)).unwrap();
    for (i, &len) in lens.iter().enumerate() {
        let mut p = big_payload(i);
        p.resize(len, b'q');
        wal.append(&p).unwrap();
    }
    drop(wal);
    dir.join(format!("{:020}.wal", 1))
}

#[test]
fn absolute_refuses_a_torn_tail_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [1500, 1400, 1600, 1450];
    let path = real_log(tmp.path(), &lens);
    let (_, end) = record_offsets(&lens);
    // What a write of which only a garbage prefix reached the disk leaves.
    patch(&path, end, &[0x5a; 300]);
    let before = snapshot(tmp.path());

    let open = Wal::open(tmp.path(), options(RecoveryMode::Absolute));
    expect_corrupt(open, &path, end, RecoveryMode::Strict, "absolute");
    let ro = Wal::open_read_only(tmp.path(), options(RecoveryMode::Absolute));
    expect_corrupt(ro, &path, end, RecoveryMode::Strict, "absolute, read-only");
    assert!(snapshot(tmp.path()) == before, "absolute changed files");

    // Read-only strict: says what it would cut, cuts nothing.
    let ro = Wal::open_read_only(tmp.path(), options(RecoveryMode::Strict)).unwrap();
    let report = ro.recovery_report();
    assert!(!report.applied);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].starts_with("torn tail in"), "{report:?}");
    assert_eq!((ro.last_lsn(), report.records), (Some(4), 4));
    assert_eq!(report.end.as_ref().map(|e| e.offset), Some(end));
    assert!(
        snapshot(tmp.path()) == before,
        "read-only open changed files"
    );

    let wal = Wal::open(tmp.path(), options(RecoveryMode::Strict)).unwrap();
    let report = wal.recovery_report();
    assert!(report.applied);
    assert!(report.warnings[0].starts_with("torn tail in"), "{report:?}");
    assert_eq!(payloads(&wal).len(), 4);
    assert_eq!(wal.append(b"next").unwrap(), 5);
    drop(wal);
    // Nothing left to cut: absolute opens now.
    let wal = Wal::open(tmp.path(), options(RecoveryMode::Absolute)).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    assert_eq!(wal.last_lsn(), Some(5));
}

#[test]
fn absolute_refuses_a_torn_write_that_strict_cuts() {
    let tmp = tempfile::tempdir().unwrap();
    let lens = [1500, 1400, 1600, 1450, 1550, 1420];
    let path = real_log(tmp.path(), &lens);
    let (offsets, _) = record_offsets(&lens);
    // A zeroed sector inside record 3, records 4..=6 intact after it: the
    // picture of a lost page of the last write.
    let sector = (offsets[2] + 600).div_ceil(512) * 512;
    assert!(sector + 512 <= offsets[3]);
    patch(&path, sector, &[0; 512]);
    let before = snapshot(tmp.path());

    let open = Wal::open(tmp.path(), options(RecoveryMode::Absolute));
    expect_corrupt(open, &path, offsets[2], RecoveryMode::Strict, "absolute");
    assert!(snapshot(tmp.path()) == before, "absolute changed files");
    let ro = Wal::open_read_only(tmp.path(), options(RecoveryMode::Strict)).unwrap();
    assert!(!ro.recovery_report().applied);
    let warnings = &ro.recovery_report().warnings;
    assert!(warnings[0].starts_with("torn write in"), "{warnings:?}");
    assert_eq!(ro.last_lsn(), Some(2));
    assert!(
        snapshot(tmp.path()) == before,
        "read-only open changed files"
    );

    let wal = Wal::open(tmp.path(), options(RecoveryMode::Strict)).unwrap();
    let warnings = &wal.recovery_report().warnings;
    assert!(warnings[0].starts_with("torn write in"), "{warnings:?}");
    assert_eq!(payloads(&wal).len(), 2);
    assert_eq!(wal.append(b"next").unwrap(), 3);
}

#[test]
fn a_lost_first_page_holding_less_than_a_sector_of_the_write_is_a_torn_write() {
    // What the reordered sweep found (crash after 31 ops, seed 1): a batch
    // written from 100 bytes before a page boundary, its first page lost
    // (so those 100 bytes are the zeroes of preallocated space again), its
    // later pages kept. The zeroes are fewer than a sector, but they run
    // from the damage to a page boundary, and intact records of the same
    // unsynced write follow: a torn write, which strict open must cut.
    let tmp = tempfile::tempdir().unwrap();
    // Two records end at 4096 - 100; a batch of three follows.
    let head = [1962, 1962];
    let (_, end) = record_offsets(&head);
    assert_eq!(end, 4096 - 100);
    let wal = Wal::open(tmp.path(), options(RecoveryMode::Strict)).unwrap();
    for &len in &head {
        wal.append(&vec![b'h'; len]).unwrap();
    }
    let batch: Vec<Vec<u8>> = (0..3).map(big_payload).collect();
    wal.append_batch(&batch).unwrap();
    drop(wal);
    let path = tmp.path().join(format!("{:020}.wal", 1));
    patch(&path, end, &[0; 100]);

    let wal = Wal::open(tmp.path(), options(RecoveryMode::Strict))
        .unwrap_or_else(|e| panic!("strict open refused a torn write: {e}"));
    let warnings = &wal.recovery_report().warnings;
    assert!(
        warnings.iter().any(|w| w.starts_with("torn write in")),
        "{warnings:?}"
    );
    assert_eq!(payloads(&wal).len(), 2);
    assert_eq!(wal.next_lsn(), 3);
}
