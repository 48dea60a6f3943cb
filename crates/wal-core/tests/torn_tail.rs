//! Cutting the last segment at every byte offset (a crash in the middle of
//! its last writes), either by truncating the file there or by zeroing it
//! from there to its preallocated end: open succeeds, yields exactly the
//! whole records before the cut, and appends continue with the right LSNs.
//!
//! Offsets below use the format in docs/format.md: a 32-byte segment header,
//! then records framed by a 20-byte header. The active segment is
//! preallocated to the segment size: zeroes after its last record are free
//! space, not a torn tail.

use std::path::{Path, PathBuf};

use wal_core::{Record, SyncPolicy, Wal, WalOptions};

const SEGMENT_HEADER: u64 = 32;
const RECORD_HEADER: u64 = 20;

fn options() -> WalOptions {
    WalOptions {
        segment_size: 200,
        // Reopen sees written data; durability is not what this test is about.
        sync_policy: SyncPolicy::Never,
        ..WalOptions::default()
    }
}

fn read_all(wal: &Wal) -> Vec<Record> {
    wal.iter_from(0)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

fn copy_log(from: &Path, to: &Path) {
    for path in segments(from) {
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

fn first_lsn_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Where the records of the segment starting at `first` end.
fn data_end(records: &[Record], first: u64) -> u64 {
    SEGMENT_HEADER
        + records
            .iter()
            .filter(|r| r.lsn >= first)
            .map(|r| RECORD_HEADER + r.data.len() as u64)
            .sum::<u64>()
}

/// The warning recovery must give for a last segment whose records end at
/// `kept` followed by `torn` (what a crash left of the next write): none if
/// those bytes are all zero (indistinguishable from preallocated space, and
/// no whole record is lost), else one that names the bytes up to the last
/// non-zero one.
fn expected_torn_warning(torn: &[u8], kept: u64) -> Option<String> {
    let n = torn.iter().rposition(|&b| b != 0)? + 1;
    Some(format!("cut {n} bytes at offset {kept}"))
}

/// After recovery, the active segment holds its records up to `kept`, then
/// zeroes to the segment size: the torn bytes are gone from the file before
/// any append, and the segment is preallocated again.
fn assert_cut_physically(path: &Path, kept: u64, what: &str) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len() as u64, options().segment_size, "{what}");
    assert!(
        bytes[kept as usize..].iter().all(|&b| b == 0),
        "{what}: bytes after offset {kept} survived"
    );
}

/// A log of several segments of small records; returns them.
fn build(dir: &Path) -> Vec<Record> {
    let wal = Wal::open(dir, options()).unwrap();
    let mut records = Vec::new();
    // Several segments, and stop once the last one holds five records.
    for i in 0u64.. {
        let data: Vec<u8> = (0..(3 + i * 5 % 13)).map(|b| (b + i) as u8).collect();
        let lsn = wal.append(&data).unwrap();
        records.push(Record { lsn, data });
        let last_first = first_lsn_of(segments(dir).last().unwrap());
        if lsn >= 20 && lsn + 1 - last_first == 5 {
            break;
        }
    }
    records
}

#[test]
fn cut_at_every_offset_of_the_last_segment() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    let segs = segments(original.path());
    assert!(segs.len() >= 3, "want a multi-segment log, got {segs:?}");
    let last = segs.last().unwrap().clone();
    let last_name = last.file_name().unwrap().to_str().unwrap().to_string();
    let last_first = first_lsn_of(&last);
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        options().segment_size,
        "the active segment is preallocated"
    );
    let original_bytes = std::fs::read(&last).unwrap();
    // Record boundaries in the last segment: (end offset, lsn).
    let mut ends = Vec::new();
    let mut offset = SEGMENT_HEADER;
    for r in records.iter().filter(|r| r.lsn >= last_first) {
        offset += RECORD_HEADER + r.data.len() as u64;
        ends.push((offset, r.lsn));
    }
    let full_len = data_end(&records, last_first);
    assert_eq!(offset, full_len);
    assert!(ends.len() >= 4, "want several records in the last segment");

    // Two images of a crash at each offset: the file ends at the cut (an
    // append whose end never arrived), or it keeps its preallocated length
    // and the bytes from the cut on are zeroes (a write into the
    // preallocated space whose end never arrived).
    for (cut, zero_fill) in (0..full_len).flat_map(|c| [(c, false), (c, true)]) {
        let tmp = tempfile::tempdir().unwrap();
        copy_log(original.path(), tmp.path());
        let path = tmp.path().join(&last_name);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        if zero_fill {
            let zeroes = vec![0u8; (options().segment_size - cut) as usize];
            std::os::unix::fs::FileExt::write_all_at(&file, &zeroes, cut).unwrap();
        } else {
            file.set_len(cut).unwrap();
        }
        drop(file);
        let cut_name = if zero_fill { "zeroes from" } else { "cut at" };

        let whole_before_cut = ends
            .iter()
            .filter(|(end, _)| *end <= cut)
            .map(|(_, lsn)| *lsn)
            .max()
            .unwrap_or(last_first - 1);
        let expected: Vec<Record> = records
            .iter()
            .filter(|r| r.lsn <= whole_before_cut)
            .cloned()
            .collect();

        let wal = Wal::open(tmp.path(), options())
            .unwrap_or_else(|e| panic!("open after {cut_name} {cut}: {e}"));
        assert_eq!(read_all(&wal), expected, "{cut_name} {cut}");
        assert_eq!(wal.next_lsn(), whole_before_cut + 1, "{cut_name} {cut}");
        let kept = ends
            .iter()
            .filter(|(end, _)| *end <= cut)
            .map(|(end, _)| *end)
            .max()
            .unwrap_or(SEGMENT_HEADER);
        let warnings = &wal.recovery_report().warnings;
        if cut < SEGMENT_HEADER {
            // An incomplete header: an interrupted creation, rewritten.
            assert_eq!(warnings.len(), 1, "{cut_name} {cut}: {warnings:?}");
            assert!(warnings[0].contains(&last_name), "{warnings:?}");
        } else {
            let torn = &original_bytes[kept as usize..cut as usize];
            match expected_torn_warning(torn, kept) {
                None => assert!(warnings.is_empty(), "{cut_name} {cut}: {warnings:?}"),
                Some(want) => {
                    assert_eq!(warnings.len(), 1, "{cut_name} {cut}: {warnings:?}");
                    assert!(warnings[0].contains(&last_name), "{warnings:?}");
                    assert!(
                        warnings[0].contains("torn tail") && warnings[0].contains(&want),
                        "{cut_name} {cut}: want `{want}` in {warnings:?}"
                    );
                }
            }
        }
        assert_cut_physically(&path, kept, &format!("{cut_name} {cut}"));

        let a = wal.append(b"after the cut").unwrap();
        let b = wal.append(b"and one more").unwrap();
        assert_eq!((a, b), (whole_before_cut + 1, whole_before_cut + 2));
        drop(wal);

        let wal = Wal::open(tmp.path(), options()).unwrap();
        assert!(
            wal.recovery_report().warnings.is_empty(),
            "{cut_name} {cut}"
        );
        let all = read_all(&wal);
        assert_eq!(all.len(), expected.len() + 2, "{cut_name} {cut}");
        assert_eq!(all[..expected.len()], expected[..]);
        assert_eq!(all[expected.len()].data, b"after the cut");
        assert_eq!(wal.next_lsn(), whole_before_cut + 3);
    }
}

#[test]
fn zeroes_after_the_last_record_are_free_space_and_garbage_is_cut() {
    for (tail, warned) in [
        (vec![0u8; 4096], false),
        ((0..777u32).map(|i| (i * 31 % 251) as u8).collect(), true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let records = build(tmp.path());
        let last = segments(tmp.path()).last().unwrap().clone();
        let end = data_end(&records, first_lsn_of(&last));
        // The records, then the tail where the preallocated space was.
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.truncate(end as usize);
        bytes.extend_from_slice(&tail);
        std::fs::write(&last, &bytes).unwrap();

        let wal = Wal::open(tmp.path(), options()).unwrap();
        assert_eq!(read_all(&wal), records);
        let warnings = &wal.recovery_report().warnings;
        if warned {
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(
                warnings[0].contains(&format!("cut {} bytes at offset {end}", tail.len())),
                "{warnings:?}"
            );
            assert_cut_physically(&last, end, "garbage tail");
        } else {
            assert!(warnings.is_empty(), "{warnings:?}");
            // Free space is left as it is.
            assert_eq!(std::fs::metadata(&last).unwrap().len(), bytes.len() as u64);
        }
        // The report says where the log ends either way, and how much free
        // space follows.
        let file_len = std::fs::metadata(&last).unwrap().len();
        let log_end = wal.recovery_report().end.clone().unwrap();
        assert_eq!(
            (
                log_end.segment.as_path(),
                log_end.offset,
                log_end.free_bytes
            ),
            (last.as_path(), end, file_len - end)
        );
        let lsn = wal.append(b"next").unwrap();
        assert_eq!(lsn, records.len() as u64 + 1);
        drop(wal);
        let wal = Wal::open(tmp.path(), options()).unwrap();
        assert!(wal.recovery_report().warnings.is_empty());
        assert_eq!(read_all(&wal).last().unwrap().data, b"next");
    }
}

#[test]
fn a_batch_cut_anywhere_is_dropped_whole() {
    let original = tempfile::tempdir().unwrap();
    let records = build(original.path());
    let wal = Wal::open(original.path(), options()).unwrap();
    wal.rotate().unwrap();
    let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 7]).collect();
    let lsns = wal.append_batch(&batch).unwrap();
    let next = records.len() as u64 + 1;
    assert_eq!(lsns, next..next + 4);
    drop(wal);
    let last = segments(original.path()).last().unwrap().clone();
    let name = last.file_name().unwrap().to_owned();
    let full_len = SEGMENT_HEADER + 4 * (RECORD_HEADER + 7);
    let original_bytes = std::fs::read(&last).unwrap();

    for cut in SEGMENT_HEADER..=full_len {
        let tmp = tempfile::tempdir().unwrap();
        copy_log(original.path(), tmp.path());
        let path = tmp.path().join(&name);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(cut).unwrap();
        let wal = Wal::open(tmp.path(), options()).unwrap();
        let got = read_all(&wal);
        if cut == full_len {
            assert_eq!(got.len(), records.len() + 4);
        } else {
            assert_eq!(got, records, "cut at {cut}");
            assert_eq!(wal.next_lsn(), next, "cut at {cut}");
            // A cut that leaves only zeroes after the header is free space;
            // anything else is a torn or incomplete batch, and warned about.
            let torn = &original_bytes[SEGMENT_HEADER as usize..cut as usize];
            assert_eq!(
                !wal.recovery_report().warnings.is_empty(),
                torn.iter().any(|&b| b != 0),
                "cut at {cut}: {:?}",
                wal.recovery_report().warnings
            );
            assert_cut_physically(&path, SEGMENT_HEADER, &format!("cut at {cut}"));
        }
    }
}
