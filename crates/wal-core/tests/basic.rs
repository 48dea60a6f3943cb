//! The API on the real file system: append, iterate, rotate, truncate,
//! reopen, sync policies.

mod common;

use std::time::Duration;

use common::segment_files;
use wal_core::{Error, Record, SyncPolicy, Wal, WalOptions};

fn options(policy: SyncPolicy) -> WalOptions {
    WalOptions {
        segment_size: 256,
        sync_policy: policy,
        ..WalOptions::default()
    }
}

fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    wal.iter_from(from)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn a_new_log_is_empty_and_starts_at_lsn_1() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    assert_eq!(wal.next_lsn(), 1);
    assert_eq!(wal.first_lsn(), None);
    assert_eq!(wal.last_lsn(), None);
    assert!(read_all(&wal, 0).is_empty());
    assert_eq!(segment_files(tmp.path()), vec!["00000000000000000001.wal"]);
    assert_eq!(wal.disk_size(), 32);
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let data = vec![i as u8; (i % 7 * 9) as usize];
        assert_eq!(wal.append(&data).unwrap(), i + 1);
        expected.push(Record { lsn: i + 1, data });
    }
    assert!(segment_files(tmp.path()).len() > 3, "segments rotate");
    assert_eq!(read_all(&wal, 0), expected);
    assert_eq!(read_all(&wal, 17), expected[16..].to_vec());
    assert_eq!(read_all(&wal, 41), vec![]);
    // Sealed segments end at their last record; the active one is
    // preallocated to the segment size and holds its header and records.
    let size = wal.disk_size();
    let files = segment_files(tmp.path());
    let lens: Vec<u64> = files
        .iter()
        .map(|n| std::fs::metadata(tmp.path().join(n)).unwrap().len())
        .collect();
    let (active, sealed) = lens.split_last().unwrap();
    assert_eq!(*active, 256, "the active segment is preallocated");
    let active_first: u64 = files.last().unwrap()[..20].parse().unwrap();
    let active_used: u64 = 32
        + expected[active_first as usize - 1..]
            .iter()
            .map(|r| 20 + r.data.len() as u64)
            .sum::<u64>();
    assert_eq!(size, sealed.iter().sum::<u64>() + active_used);
    drop(wal);

    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    assert!(
        wal.recovery_report().warnings.is_empty(),
        "{:?}",
        wal.recovery_report()
    );
    assert_eq!(wal.recovery_report().records, 40);
    assert_eq!(
        (wal.first_lsn(), wal.last_lsn(), wal.next_lsn()),
        (Some(1), Some(40), 41)
    );
    assert_eq!(read_all(&wal, 0), expected);
    assert_eq!(wal.append(b"more").unwrap(), 41);
}

#[test]
fn a_record_larger_than_a_segment_goes_alone_into_one() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    wal.append(b"small").unwrap();
    wal.append(&[9u8; 1000]).unwrap();
    wal.append(b"after").unwrap();
    assert_eq!(
        segment_files(tmp.path()),
        vec![
            "00000000000000000001.wal",
            "00000000000000000002.wal",
            "00000000000000000003.wal"
        ]
    );
    assert_eq!(read_all(&wal, 2)[0].data, vec![9u8; 1000]);
}

#[test]
fn too_large_records_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        max_record_size: 10,
        ..options(SyncPolicy::Always)
    };
    let wal = Wal::open(tmp.path(), opts).unwrap();
    assert!(matches!(
        wal.append(&[0; 11]),
        Err(Error::RecordTooLarge { size: 11, max: 10 })
    ));
    assert!(matches!(
        wal.append_batch(&[&[0u8; 3][..], &[0; 11]]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert_eq!(wal.append(&[0; 10]).unwrap(), 1);
}

#[test]
fn rotate_then_truncate_keeps_next_lsn_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    for i in 0..20u8 {
        wal.append(&[i; 30]).unwrap();
    }
    wal.rotate().unwrap();
    wal.rotate().unwrap(); // no record since: nothing to do
    let before = segment_files(tmp.path()).len();
    let deleted = wal.truncate_before(wal.next_lsn()).unwrap();
    assert_eq!(deleted, before - 1);
    assert_eq!(segment_files(tmp.path()), vec!["00000000000000000021.wal"]);
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert!(read_all(&wal, 0).is_empty());
    drop(wal);

    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    assert_eq!(wal.next_lsn(), 21);
    assert_eq!(wal.append(b"x").unwrap(), 21);
    assert_eq!(wal.first_lsn(), Some(21));
}

#[test]
fn truncate_before_keeps_segments_holding_later_records() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Never)).unwrap();
    for i in 0..30u8 {
        wal.append(&[i; 40]).unwrap();
    }
    // 60 bytes a record, 256-byte segments: 3 records each (LSN 1-3, 4-6, ...).
    assert_eq!(wal.truncate_before(1).unwrap(), 0);
    assert_eq!(wal.truncate_before(6).unwrap(), 1);
    assert_eq!(wal.first_lsn(), Some(4));
    assert_eq!(wal.truncate_before(7).unwrap(), 1);
    assert_eq!(wal.first_lsn(), Some(7));
    assert_eq!(read_all(&wal, 0).first().map(|r| r.lsn), Some(7));
    assert_eq!(read_all(&wal, 2).first().map(|r| r.lsn), Some(7));
    // Never the active segment.
    wal.truncate_before(u64::MAX).unwrap();
    assert_eq!(wal.first_lsn(), Some(28));
    assert_eq!(read_all(&wal, 0).len(), 3);
}

#[test]
fn an_iterator_sees_records_written_before_it_and_survives_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Never)).unwrap();
    for i in 0..12u8 {
        wal.append(&[i; 40]).unwrap();
    }
    let mut iter = wal.iter_from(0).unwrap();
    assert_eq!(iter.next().unwrap().unwrap().lsn, 1);
    wal.append(b"later").unwrap();
    wal.truncate_before(10).unwrap();
    // Segment 1 is open and stays readable; segment 4.. is gone.
    let rest: Vec<_> = iter.collect();
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert_eq!(rest[0].as_ref().unwrap().lsn, 2);
    assert_eq!(rest[1].as_ref().unwrap().lsn, 3);
    assert!(matches!(rest[2], Err(Error::Truncated { lsn: 4 })));
    // A new iterator sees the later record.
    assert_eq!(read_all(&wal, 13)[0].data, b"later");
}

#[test]
fn every_policy_writes_before_append_returns() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::GroupCommit {
            max_delay: Duration::from_millis(1),
        },
        SyncPolicy::Interval {
            period: Duration::from_millis(5),
        },
        SyncPolicy::Never,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let wal = Wal::open(tmp.path(), options(policy)).unwrap();
        let lsns = wal.append_batch(&[b"a", b"b", b"c"]).unwrap();
        assert_eq!(lsns, 1..4);
        assert_eq!(read_all(&wal, 0).len(), 3, "{policy:?}");
        wal.sync().unwrap();
        drop(wal);
        let wal = Wal::open(tmp.path(), options(policy)).unwrap();
        assert_eq!(wal.next_lsn(), 4, "{policy:?}");
    }
}

#[test]
fn invalid_options_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for opts in [
        WalOptions {
            segment_size: 32,
            ..WalOptions::default()
        },
        WalOptions {
            sync_policy: SyncPolicy::Interval {
                period: Duration::ZERO,
            },
            ..WalOptions::default()
        },
        WalOptions {
            max_record_size: u32::MAX,
            ..WalOptions::default()
        },
    ] {
        assert!(matches!(
            Wal::open(tmp.path(), opts),
            Err(Error::InvalidOptions { .. })
        ));
    }
}

#[test]
fn empty_batch_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::open(tmp.path(), options(SyncPolicy::Always)).unwrap();
    let none: [&[u8]; 0] = [];
    assert_eq!(wal.append_batch(&none).unwrap(), 1..1);
    assert_eq!(wal.append(b"").unwrap(), 1);
    assert_eq!(
        read_all(&wal, 0),
        vec![Record {
            lsn: 1,
            data: vec![]
        }]
    );
}
