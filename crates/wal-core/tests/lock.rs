//! The directory lock: one open handle per log directory.

use wal_core::{Error, Wal, WalOptions};

#[test]
fn a_second_open_fails_with_locked_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();
    match Wal::open(tmp.path(), WalOptions::default()) {
        Err(Error::Locked { dir }) => assert_eq!(dir, tmp.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    // The failed open changed nothing.
    assert_eq!(wal.append(b"two").unwrap(), 2);
    let iter = wal.iter_from(0).unwrap();
    drop(wal);

    // An iterator outliving its log does not hold the lock.
    let wal = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    assert_eq!(iter.count(), 2);
    assert_eq!(wal.next_lsn(), 3);
}

#[test]
fn the_lock_error_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let _wal = Wal::open(tmp.path(), WalOptions::default()).unwrap();
    let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("already open"), "{text}");
    assert!(text.contains(&tmp.path().display().to_string()), "{text}");
}
