//! What a consensus log needs from wal-core, on the real file system:
//! `truncate_after`, durability callbacks, indexed reads, a follower and
//! the counters.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use wal_core::{Error, Record, SyncPolicy, Wal, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        // About seven 100-byte records a segment: every test crosses
        // segments.
        segment_size: 32 + 7 * 120,
        ..WalOptions::default()
    }
}

fn payload(lsn: u64) -> Vec<u8> {
    format!("{lsn:>100}").into_bytes()
}

fn filled(n: u64) -> (tempfile::TempDir, Wal) {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options()).unwrap();
    for lsn in 1..=n {
        assert_eq!(wal.append(&payload(lsn)).unwrap(), lsn);
    }
    (tmp, wal)
}

#[test]
fn truncate_after_removes_the_suffix_across_segments_and_survives_a_reopen() {
    let (tmp, wal) = filled(40);
    let segments_before = common::segment_files(tmp.path()).len();
    wal.truncate_after(17).unwrap();
    assert_eq!(wal.next_lsn(), 18);
    assert_eq!(wal.last_lsn(), Some(17));
    assert!(wal.durable_lsn() <= 17);
    assert!(common::segment_files(tmp.path()).len() < segments_before);
    assert!(wal.read(18).unwrap().is_none());
    // The next appends take the removed LSNs, with new content.
    for lsn in 18..=25 {
        assert_eq!(wal.append(format!("new {lsn}").as_bytes()).unwrap(), lsn);
    }
    drop(wal);
    let wal = Wal::open(tmp.path(), options()).unwrap();
    assert!(wal.recovery_report().warnings.is_empty());
    let all: Vec<Record> = wal.iter_from(1).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all.len(), 25);
    for r in &all {
        let want = if r.lsn <= 17 {
            payload(r.lsn)
        } else {
            format!("new {}", r.lsn).into_bytes()
        };
        assert_eq!(r.data, want, "LSN {}", r.lsn);
    }
}

#[test]
fn truncate_after_at_a_segment_boundary_and_to_nothing() {
    let (tmp, wal) = filled(21);
    // LSN 15 starts the third segment: cut exactly before it.
    wal.truncate_after(14).unwrap();
    assert_eq!(wal.append(b"x").unwrap(), 15);
    wal.truncate_after(0).unwrap();
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(wal.append(b"again").unwrap(), 1);
    drop(wal);
    let wal = Wal::open(tmp.path(), options()).unwrap();
    assert_eq!(wal.next_lsn(), 2);
    assert_eq!(wal.read(1).unwrap().unwrap().data, b"again");
}

#[test]
fn truncate_after_refuses_below_truncate_before_and_ignores_the_end() {
    let (_tmp, wal) = filled(30);
    assert!(wal.truncate_before(20).unwrap() > 0);
    let first = wal.first_lsn().unwrap();
    assert!(matches!(
        wal.truncate_after(first - 2),
        Err(Error::InvalidArgument { .. })
    ));
    wal.truncate_after(30).unwrap();
    wal.truncate_after(99).unwrap();
    assert_eq!(wal.next_lsn(), 31);
}

#[test]
fn an_iterator_made_before_truncate_after_reports_it_instead_of_new_records() {
    let (_tmp, wal) = filled(20);
    let mut iter = wal.iter_from(1).unwrap();
    for lsn in 1..=3 {
        assert_eq!(iter.next().unwrap().unwrap().lsn, lsn);
    }
    wal.truncate_after(5).unwrap();
    for lsn in 6..=20 {
        wal.append(format!("replaced {lsn}").as_bytes()).unwrap();
    }
    let rest: Vec<_> = iter.collect();
    // 4 and 5 are still the same records; 6 was replaced.
    assert_eq!(rest[0].as_ref().unwrap().lsn, 4);
    assert_eq!(rest[1].as_ref().unwrap().lsn, 5);
    assert!(
        matches!(rest[2], Err(Error::Truncated { lsn: 6 })),
        "{:?}",
        rest[2]
    );
    assert_eq!(rest.len(), 3);
}

#[test]
fn append_with_calls_back_in_order_once_durable() {
    for policy in [SyncPolicy::Always, SyncPolicy::Never] {
        let tmp = tempfile::tempdir().unwrap();
        let wal = Arc::new(
            Wal::open(
                tmp.path(),
                WalOptions {
                    sync_policy: policy,
                    ..options()
                },
            )
            .unwrap(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut expected = Vec::new();
        for i in 0..50u64 {
            let seen = Arc::clone(&seen);
            let tx = tx.clone();
            let w = Arc::clone(&wal);
            let lsns = wal
                .append_with(&[payload(i)], move |r| {
                    let lsns = r.unwrap();
                    // Durable by the time it is called.
                    assert!(w.durable_lsn() >= lsns.end - 1);
                    seen.lock().unwrap().push(lsns.start);
                    let _ = tx.send(());
                })
                .unwrap();
            expected.push(lsns.start);
        }
        for _ in 0..50 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("a durability callback never ran");
        }
        assert_eq!(*seen.lock().unwrap(), expected, "{policy:?}");
        assert_eq!(wal.durable_lsn(), 50);
        wal.wait_durable(50).unwrap();
        assert!(matches!(
            wal.wait_durable(51),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

#[test]
fn append_with_callbacks_of_removed_records_get_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        tmp.path(),
        WalOptions {
            sync_policy: SyncPolicy::Never,
            ..options()
        },
    )
    .unwrap();
    wal.append(b"kept").unwrap();
    wal.sync().unwrap();
    let (tx, rx) = mpsc::channel();
    wal.append_with(&[b"gone"], move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    // The callback either ran (synced first) or is failed by the cut.
    wal.truncate_after(1).unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    match r {
        Ok(lsns) => assert_eq!(lsns, 2..3),
        Err(Error::Truncated { lsn }) => assert_eq!(lsn, 2),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(wal.next_lsn(), 2);
}

#[test]
fn read_and_read_range_go_through_the_index() {
    let (_tmp, wal) = filled(40);
    for lsn in [1, 7, 8, 33, 40] {
        assert_eq!(wal.read(lsn).unwrap().unwrap().data, payload(lsn));
    }
    assert!(wal.read(0).unwrap().is_none());
    assert!(wal.read(41).unwrap().is_none());
    // A range across several segments, whole.
    let all = wal.read_range(3, 30, usize::MAX).unwrap();
    assert_eq!(
        all.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        (3..30).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|r| r.data == payload(r.lsn)));
    // The byte budget: 120 bytes a framed record.
    let some = wal.read_range(3, 30, 5 * 120).unwrap();
    assert_eq!(some.len(), 5);
    // Always at least one record.
    assert_eq!(wal.read_range(3, 30, 1).unwrap().len(), 1);
    assert!(wal.read_range(41, 50, usize::MAX).unwrap().is_empty());
    wal.truncate_before(20).unwrap();
    let first = wal.first_lsn().unwrap();
    assert!(wal.read_range(1, first, usize::MAX).unwrap().is_empty());
    assert_eq!(wal.read(first).unwrap().unwrap().lsn, first);
}

#[test]
fn a_reopened_log_has_its_index_rebuilt() {
    let (tmp, wal) = filled(30);
    drop(wal);
    let wal = Wal::open(tmp.path(), options()).unwrap();
    let got = wal.read_range(1, 31, usize::MAX).unwrap();
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|r| r.data == payload(r.lsn)));
}

#[test]
fn a_follower_waits_for_records_written_later() {
    let (_tmp, wal) = filled(5);
    let wal = Arc::new(wal);
    let mut follower = wal.follow(3);
    for lsn in 3..=5 {
        let r = follower.next_timeout(Duration::ZERO).unwrap().unwrap();
        assert_eq!(r.lsn, lsn);
    }
    // Nothing yet: a short wait comes back empty.
    assert!(
        follower
            .next_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    let writer = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            for lsn in 6..=30 {
                wal.append(&payload(lsn)).unwrap();
            }
        })
    };
    for lsn in 6..=30 {
        let r = follower
            .next_timeout(Duration::from_secs(10))
            .unwrap()
            .expect("the follower missed a record");
        assert_eq!((r.lsn, r.data), (lsn, payload(lsn)));
    }
    writer.join().unwrap();
    assert_eq!(follower.next_lsn(), 31);
}

#[test]
fn stats_count_records_groups_and_syncs() {
    let (_tmp, wal) = filled(10);
    wal.append_batch(&[b"a", b"b", b"c"]).unwrap();
    let s = wal.stats();
    assert_eq!(s.records, 13);
    assert_eq!(s.payload_bytes, 10 * 100 + 3);
    assert_eq!(s.written_bytes, 13 * 20 + 10 * 100 + 3);
    assert_eq!(s.groups, 11);
    assert_eq!(s.syncs, 11);
    assert_eq!(s.group_records[0], 10);
    assert_eq!(s.group_records[1], 1);
    assert_eq!(s.sync_micros.iter().sum::<u64>(), 11);
    assert_eq!((s.written_lsn, s.durable_lsn), (13, 13));
    assert!(s.segments >= 2);
}

#[test]
fn create_at_starts_an_empty_log_at_the_given_lsn_and_only_in_an_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let wal = Wal::create_at(&dir, options(), 101).unwrap();
    assert_eq!((wal.next_lsn(), wal.first_lsn()), (101, None));
    for lsn in 101..=120 {
        assert_eq!(wal.append(&payload(lsn)).unwrap(), lsn);
    }
    drop(wal);
    let wal = Wal::open(&dir, options()).unwrap();
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (Some(101), Some(120)));
    assert_eq!(wal.read(101).unwrap().unwrap().data, payload(101));
    drop(wal);
    // Never over an existing log, and never at LSN 0.
    let e = Wal::create_at(&dir, options(), 500).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = Wal::create_at(tmp.path().join("other"), options(), 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert_eq!(Wal::open(&dir, options()).unwrap().next_lsn(), 121);
}
