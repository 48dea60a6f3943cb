//! Which directory fsyncs each operation makes, counted on the simulated
//! file system.
//!
//! A torn crash keeps any subset of a directory's unsynced changes, so a
//! log that removes or creates several files must fsync the directory
//! between them. A crash sweep catches a missing fsync only if a crash
//! happens to fall in the window it leaves; counting `Op::SyncDir` (and
//! failing the n-th one to see how far the operation got) catches it
//! directly:
//!
//! * `truncate_before` removing N segments: N removals, exactly N directory
//!   fsyncs, the i-th removal only after the (i-1)-th fsync succeeded;
//! * `truncate_after` removing N whole segments: N removals, at least N
//!   fsyncs, in the same interleaving;
//! * a rotation (explicit or by an append that does not fit): one segment
//!   created, one directory fsync;
//! * open: ends with a directory fsync.

#[allow(dead_code)]
mod sweep;

use std::io;

use sweep::{DIR, fresh_fs, options, payload};
use wal_core::sim::{Op, SimFs};
use wal_core::{Lsn, Wal};

/// How many calls of `op` running `f` makes, and its result.
fn counting<T>(fs: &SimFs, ops: &[Op], f: impl FnOnce() -> T) -> (Vec<u64>, T) {
    let before: Vec<u64> = ops.iter().map(|&op| fs.op_count(op)).collect();
    let result = f();
    let made = ops
        .iter()
        .zip(before)
        .map(|(&op, b)| fs.op_count(op) - b)
        .collect();
    (made, result)
}

/// A log of 20 records over several small segments.
fn build(fs: &SimFs) -> Wal {
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    for i in 0..20 {
        wal.append(&payload(i)).unwrap();
    }
    wal
}

/// First LSNs of the segments (a read-only open: no lock, no change).
fn segment_starts(fs: &SimFs) -> Vec<Lsn> {
    Wal::open_read_only_with_vfs(DIR, options(), fs.shared())
        .unwrap()
        .segments()
        .into_iter()
        .map(|(lsn, _)| lsn)
        .collect()
}

#[test]
fn truncate_before_syncs_the_directory_after_each_removal() {
    let fs = fresh_fs();
    let wal = build(&fs);
    let starts = segment_starts(&fs);
    assert!(starts.len() >= 5, "{starts:?}");
    // Everything below the fourth segment: three removals.
    let bound = starts[3];
    let (made, removed) = counting(&fs, &[Op::Remove, Op::SyncDir], || {
        wal.truncate_before(bound).unwrap()
    });
    assert_eq!(removed, 3);
    assert_eq!(made, [3, 3], "removals and directory fsyncs");
    assert_eq!(segment_starts(&fs), starts[3..]);

    // The order: with the j-th fsync failing, exactly j + 1 segments were
    // removed, so no removal comes before the previous one is durable.
    for j in 0..3 {
        let fs = fresh_fs();
        let wal = build(&fs);
        fs.fail_nth(Op::SyncDir, j, io::ErrorKind::Other);
        let (made, result) = counting(&fs, &[Op::Remove], || wal.truncate_before(bound));
        assert!(
            result.is_err(),
            "fsync #{j} failed, truncate_before said Ok"
        );
        assert_eq!(made, [j + 1], "removals before fsync #{j} failed");
    }
}

#[test]
fn truncate_after_syncs_the_directory_after_each_removal() {
    let fs = fresh_fs();
    let wal = build(&fs);
    let starts = segment_starts(&fs);
    let n = starts.len();
    // Cut inside the fourth-newest segment: three whole segments go.
    let k = starts[n - 4];
    assert!(starts[n - 3] > k + 1, "{starts:?}");
    let (made, ()) = counting(&fs, &[Op::Remove, Op::SyncDir], || {
        wal.truncate_after(k).unwrap()
    });
    assert_eq!(made[0], 3, "removals");
    assert!(made[1] >= 3, "{} directory fsyncs for 3 removals", made[1]);
    assert_eq!(segment_starts(&fs), starts[..=n - 4]);

    for j in 0..3 {
        let fs = fresh_fs();
        let wal = build(&fs);
        fs.fail_nth(Op::SyncDir, j, io::ErrorKind::Other);
        let (made, result) = counting(&fs, &[Op::Remove], || wal.truncate_after(k));
        assert!(result.is_err(), "fsync #{j} failed, truncate_after said Ok");
        assert_eq!(made, [j + 1], "removals before fsync #{j} failed");
    }
}

#[test]
fn a_rotation_creates_one_segment_and_syncs_the_directory_once() {
    let fs = fresh_fs();
    let wal = build(&fs);
    let ops = [Op::Create, Op::SyncDir, Op::Remove];
    let (made, ()) = counting(&fs, &ops, || wal.rotate().unwrap());
    assert_eq!(made, [1, 1, 0], "explicit rotate");

    // An append that does not fit rotates on its own. Fill the new segment
    // until an append creates the next one; each append is checked.
    let mut rotations = 0;
    for i in 100..110 {
        let (made, _) = counting(&fs, &ops, || wal.append(&payload(i)).unwrap());
        match made[0] {
            0 => assert_eq!(made, [0, 0, 0], "append {i} without a rotation"),
            _ => {
                assert_eq!(made, [1, 1, 0], "append {i} that rotated");
                rotations += 1;
            }
        }
    }
    assert!(rotations >= 2, "only {rotations} rotations in 10 appends");
}

#[test]
fn open_ends_with_a_directory_sync() {
    let fs = fresh_fs();
    drop(build(&fs));
    // Reopening an intact log changes no entry, but must still make the
    // entries durable: a previous process may have died before its fsync.
    let (made, wal) = counting(&fs, &[Op::SyncDir], || {
        Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap()
    });
    assert!(made[0] >= 1, "open made no directory fsync");
    // A failed one is not ignored: open fails.
    drop(wal);
    fs.fail_nth(Op::SyncDir, made[0] - 1, io::ErrorKind::Other);
    assert!(Wal::open_with_vfs(DIR, options(), fs.shared()).is_err());
}
