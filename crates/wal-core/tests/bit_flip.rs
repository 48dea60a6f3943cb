//! A single-bit flip at every bit of several records: in the last record it
//! is a torn tail; anywhere earlier, strict open fails naming segment and
//! offset, and the tolerant mode cuts there. Also bad segment headers,
//! corrupted lengths and unknown format versions.
//!
//! Offsets follow docs/format.md: 32-byte segment header, 20-byte record
//! header (checksum 0..4, length 4..8, LSN 8..16, flags 16..20).

mod common;

use std::path::Path;

use common::segment_files;
use wal_core::{Error, Record, RecoveryMode, SyncPolicy, Wal, WalOptions};

const SEGMENT_HEADER: usize = 32;
const RECORD: usize = 20 + PAYLOAD;
const PAYLOAD: usize = 8;

fn options(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        // Four records a segment: LSN 1-4, 5-8, 9-10.
        segment_size: (SEGMENT_HEADER + 4 * RECORD) as u64,
        sync_policy: SyncPolicy::Never,
        recovery_mode: mode,
        ..WalOptions::default()
    }
}

fn name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn build(dir: &Path) -> Vec<Record> {
    let wal = Wal::open(dir, options(RecoveryMode::Strict)).unwrap();
    let records: Vec<Record> = (1..=10u64)
        .map(|lsn| Record {
            lsn,
            data: vec![lsn as u8 * 17; PAYLOAD],
        })
        .collect();
    for r in &records {
        assert_eq!(wal.append(&r.data).unwrap(), r.lsn);
    }
    drop(wal);
    assert_eq!(segment_files(dir), vec![name(1), name(5), name(9)]);
    records
}

/// A copy of `original` with `edit` applied to the bytes of segment `seg`.
fn corrupted(original: &Path, seg: &str, edit: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(original).unwrap() {
        let path = entry.unwrap().path();
        let file_name = path.file_name().unwrap();
        if file_name.to_str().unwrap().ends_with(".wal") {
            std::fs::copy(&path, tmp.path().join(file_name)).unwrap();
        }
    }
    let path = tmp.path().join(seg);
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
    tmp
}

fn read_all(wal: &Wal) -> Vec<Record> {
    wal.iter_from(0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn expect_corrupt(result: Result<Wal, Error>, dir: &Path, seg: &str, offset: u64, what: &str) {
    match result {
        Err(Error::Corrupt {
            segment,
            offset: at,
            ..
        }) => {
            assert_eq!(segment, dir.join(seg), "{what}");
            assert_eq!(at, offset, "{what}");
        }
        other => panic!("{what}: expected Corrupt in {seg} at {offset}, got {other:?}"),
    }
}

/// Tolerant open cuts the log just before `lsn`; appends resume there and a
/// strict reopen is then clean.
fn expect_cut_before(dir: &Path, records: &[Record], lsn: u64, what: &str) {
    let wal = Wal::open(dir, options(RecoveryMode::Tolerant))
        .unwrap_or_else(|e| panic!("{what}: tolerant open failed: {e}"));
    assert_eq!(read_all(&wal), records[..lsn as usize - 1], "{what}");
    assert!(!wal.recovery_report().warnings.is_empty(), "{what}");
    assert_eq!(wal.append(b"resumed").unwrap(), lsn, "{what}");
    drop(wal);
    let wal = Wal::open(dir, options(RecoveryMode::Strict))
        .unwrap_or_else(|e| panic!("{what}: strict reopen after the cut failed: {e}"));
    assert!(wal.recovery_report().warnings.is_empty(), "{what}");
    assert_eq!(wal.next_lsn(), lsn + 1, "{what}");
}

#[test]
fn flips_in_the_last_record_are_a_torn_tail() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    let offset = SEGMENT_HEADER + RECORD; // LSN 10, second in segment 9
    for bit in 0..RECORD * 8 {
        let tmp = corrupted(original.path(), &name(9), |b| {
            b[offset + bit / 8] ^= 1 << (bit % 8)
        });
        let what = format!("bit {bit} of LSN 10");
        let wal = Wal::open(tmp.path(), options(RecoveryMode::Strict))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(read_all(&wal), records[..9], "{what}");
        let warnings = &wal.recovery_report().warnings;
        assert_eq!(warnings.len(), 1, "{what}: {warnings:?}");
        assert!(warnings[0].contains("torn tail"), "{what}: {warnings:?}");
        assert!(warnings[0].contains(&name(9)), "{what}: {warnings:?}");
        assert!(
            warnings[0].contains(&format!("cut {RECORD} bytes at offset {offset}")),
            "{what}: {warnings:?}"
        );
        assert_eq!(wal.append(b"x").unwrap(), 10);
    }
}

#[test]
fn flips_in_earlier_records_are_corruption() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    // (segment, index in segment, LSN): the first record of the last
    // segment, and the last two records of a middle segment.
    for (seg, index, lsn) in [(9u64, 0usize, 9u64), (5, 3, 8), (5, 2, 7), (1, 0, 1)] {
        let offset = SEGMENT_HEADER + index * RECORD;
        for bit in 0..RECORD * 8 {
            let flip = |b: &mut Vec<u8>| b[offset + bit / 8] ^= 1 << (bit % 8);
            let what = format!("bit {bit} of LSN {lsn}");
            let tmp = corrupted(original.path(), &name(seg), flip);
            let strict = Wal::open(tmp.path(), options(RecoveryMode::Strict));
            expect_corrupt(strict, tmp.path(), &name(seg), offset as u64, &what);
            expect_cut_before(tmp.path(), &records, lsn, &what);
        }
    }
}

#[test]
fn a_corrupted_segment_header_is_refused_or_cut() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    for (seg, first_lsn) in [(name(5), 5u64), (name(9), 9)] {
        for bit in 0..SEGMENT_HEADER * 8 {
            let flip = |b: &mut Vec<u8>| b[bit / 8] ^= 1 << (bit % 8);
            let what = format!("bit {bit} of the header of {seg}");
            let tmp = corrupted(original.path(), &seg, flip);
            let strict = Wal::open(tmp.path(), options(RecoveryMode::Strict));
            if (64..96).contains(&bit) {
                // The version field: refused as another version, in any mode.
                assert!(
                    matches!(strict, Err(Error::UnsupportedVersion { .. })),
                    "{what}: {strict:?}"
                );
                continue;
            }
            expect_corrupt(strict, tmp.path(), &seg, 0, &what);
            expect_cut_before(tmp.path(), &records, first_lsn, &what);
        }
    }
}

#[test]
fn a_corrupted_length_is_caught_before_it_is_trusted() {
    let original = tempfile::tempdir().unwrap();
    build(original.path());
    let offset = SEGMENT_HEADER + RECORD; // LSN 6
    for (len, max) in [(u32::MAX, 16u32 << 20), (1 << 30, 1 << 30), (9, 16 << 20)] {
        let tmp = corrupted(original.path(), &name(5), |b| {
            b[offset + 4..offset + 8].copy_from_slice(&len.to_le_bytes())
        });
        let opts = WalOptions {
            max_record_size: max,
            ..options(RecoveryMode::Strict)
        };
        match Wal::open(tmp.path(), opts) {
            Err(Error::Corrupt {
                segment,
                offset: at,
                reason,
                ..
            }) => {
                assert_eq!(segment, tmp.path().join(name(5)));
                assert_eq!(at, offset as u64);
                if len > max {
                    assert!(reason.contains("exceeds the maximum"), "{reason}");
                }
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn an_unknown_format_version_is_a_clear_error() {
    let original = tempfile::tempdir().unwrap();
    build(original.path());
    for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
        let tmp = corrupted(original.path(), &name(1), |b| {
            b[8..12].copy_from_slice(&2u32.to_le_bytes());
            // A well-formed header of that version: checksum recomputed.
            let crc = crc32fast::hash(&b[0..28]);
            b[28..32].copy_from_slice(&crc.to_le_bytes());
        });
        let err = Wal::open(tmp.path(), options(mode)).unwrap_err();
        match &err {
            Error::UnsupportedVersion {
                segment,
                version: 2,
                supported: 1,
            } => assert_eq!(segment, &tmp.path().join(name(1))),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("format version 2"), "{err}");
        // Nothing was cut.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 4);
    }
}

#[test]
fn a_bad_record_in_the_last_segment_followed_by_a_good_one_is_not_a_torn_tail() {
    // Zeroes over the first of two records: the second is intact, so this
    // is damage to a completed write, not an interrupted one.
    let original = tempfile::tempdir().unwrap();
    build(original.path());
    let tmp = corrupted(original.path(), &name(9), |b| {
        b[SEGMENT_HEADER..SEGMENT_HEADER + RECORD].fill(0)
    });
    let strict = Wal::open(tmp.path(), options(RecoveryMode::Strict));
    expect_corrupt(
        strict,
        tmp.path(),
        &name(9),
        SEGMENT_HEADER as u64,
        "zeroed LSN 9",
    );
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    let tmp = corrupted(original.path(), &name(1), |_| {});
    std::fs::remove_file(tmp.path().join(name(5))).unwrap();
    match Wal::open(tmp.path(), options(RecoveryMode::Strict)) {
        Err(Error::Corrupt {
            segment,
            offset: 0,
            reason,
            ..
        }) => {
            assert_eq!(segment, tmp.path().join(name(9)));
            assert!(reason.contains("gap"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    expect_cut_before(tmp.path(), &records, 5, "missing segment 5");
}
