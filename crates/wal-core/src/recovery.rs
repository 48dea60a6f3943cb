//! Open = recover: scan the segments in LSN order, cut a torn tail, refuse
//! (or, in [`RecoveryMode::TruncateAtCorruption`], cut) anything else that
//! is wrong. Nothing is skipped silently: every cut is in the report.
//!
//! Torn tail or corruption? A record that fails its checks in the *last*
//! segment is a torn tail iff no valid record (checksum intact, LSN at or
//! after the expected one) starts anywhere after it in that segment. An
//! interrupted write only ever loses a suffix of what it wrote; intact
//! records after a bad one mean the bad one was once written whole, was
//! followed by more writes, and then decayed: that is corruption. In any
//! other segment every problem is corruption, because a segment is synced
//! before the next one is created.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::format::{
    self, FLAG_BATCH_CONTINUES, HeaderError, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::options::{RecoveryMode, WalOptions};
use crate::reader::{SegmentReader, Step};
use crate::segment::{self, SegmentMeta};
use crate::vfs::{Vfs, VfsFile};
use crate::{LogEnd, Lsn, RecoveryReport};

/// The log as recovery left it, ready for appends.
pub(crate) struct Recovered {
    /// Segments, oldest first; the last is the active one.
    pub segments: Vec<SegmentMeta>,
    /// The active segment, open for writing.
    pub active: Box<dyn VfsFile>,
    /// Bytes of the active segment; the next record goes here.
    pub active_len: u64,
    /// The LSN of the next append.
    pub next_lsn: Lsn,
    /// What recovery found and did.
    pub report: RecoveryReport,
}

/// What scanning one segment found.
struct SegmentScan {
    file_len: u64,
    /// End of the valid prefix of records.
    end: u64,
    /// LSN after the last valid record.
    next_lsn: Lsn,
    records: u64,
    /// Start (offset, LSN) of a batch whose last record is missing.
    open_batch: Option<(u64, Lsn)>,
    /// The last segment holds only zeroes from `end` to its end: space
    /// preallocated for records, not a torn tail.
    zero_tail: bool,
    /// Where the file's bytes end if its trailing zeroes (preallocated
    /// space) are not counted; measured for a last segment with a problem,
    /// otherwise `file_len`.
    data_len: u64,
    problem: Option<Problem>,
}

enum Problem {
    /// The last segment holds nothing but an incomplete header: its
    /// creation was interrupted, no record was ever acknowledged in it.
    TornHeader(HeaderError),
    /// The segment header is bad.
    BadHeader(String),
    /// The last segment ends in an incomplete write.
    TornTail { offset: u64, reason: String },
    /// A bad record that is not a torn tail.
    Corrupt { offset: u64, reason: String },
}

/// Where tolerant recovery cuts the log.
struct Cut {
    /// Index into the segment list.
    index: usize,
    /// Keep this many bytes of the segment; `None`: remove it whole.
    keep: Option<u64>,
}

impl Cut {
    /// Keeps segment `index` as it is; only later segments go.
    fn keeping_whole(self) -> Cut {
        Cut {
            keep: Some(u64::MAX),
            ..self
        }
    }
}

/// Recovers the log in `dir` (already locked by the caller).
pub(crate) fn recover(vfs: &dyn Vfs, dir: &Path, options: &WalOptions) -> Result<Recovered> {
    let mut names: Vec<(Lsn, PathBuf)> = vfs
        .list_dir(dir)
        .map_err(Error::io("list log directory", dir))?
        .into_iter()
        .filter_map(|name| format::parse_segment_file_name(&name).map(|lsn| (lsn, dir.join(name))))
        .collect();
    names.sort();

    let mut report = RecoveryReport::default();
    let mut kept: Vec<SegmentMeta> = Vec::new();
    let mut cut: Option<Cut> = None;
    // Expected first LSN of the next segment.
    let mut expected: Option<Lsn> = None;
    let mut open_batch = None;
    let strict = options.recovery_mode == RecoveryMode::Strict;
    let fail_or_cut = |path: &Path, offset: u64, reason: String, report: &mut RecoveryReport| {
        if strict {
            return Err(Error::Corrupt {
                segment: path.to_path_buf(),
                offset,
                reason,
            });
        }
        report.warnings.push(format!(
            "corruption in {} at offset {offset}: {reason}; the log is cut there",
            path.display()
        ));
        Ok(())
    };

    // The segments are read and checked in parallel up front; the loop
    // below consumes those scans in log order, so what it decides (the
    // first error, the cut, the warnings) is what a sequential scan decides.
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let mut prescans = prescan(vfs, &names, options.max_record_size, threads);

    for (index, (name_lsn, path)) in names.iter().enumerate() {
        let is_last = index + 1 == names.len();
        let start_ok = match expected {
            None if *name_lsn == 0 => Err("segment file name carries LSN 0".to_string()),
            Some(e) if *name_lsn != e => Err(format!(
                "LSN gap: the previous segment ends before LSN {e}, this one starts at {name_lsn}"
            )),
            _ => Ok(()),
        };
        if let Err(reason) = start_ok {
            fail_or_cut(path, 0, reason, &mut report)?;
            cut = Some(Cut { index, keep: None });
            break;
        }
        let scan = match prescans.get_mut(index).and_then(Option::take) {
            Some(scan) => scan?,
            // Every segment when there was nothing to parallelise. (A
            // segment the prescan skipped is never reached: the loop stops
            // at the one that made it skip.)
            None => scan_segment(vfs, path, *name_lsn, is_last, options.max_record_size)?,
        };
        let mut keep_len = scan.end;
        // Preallocated zeroes are kept as they are: not part of the log,
        // nothing to cut.
        let mut file_len = if scan.zero_tail {
            scan.end
        } else {
            scan.file_len
        };
        match scan.problem {
            None => {}
            Some(Problem::TornHeader(e)) => {
                rewrite_header(vfs, path, *name_lsn)?;
                file_len = SEGMENT_HEADER_LEN as u64;
                report.warnings.push(format!(
                    "incomplete segment creation in {} ({}, {} bytes): header rewritten",
                    path.display(),
                    e.describe(),
                    scan.file_len
                ));
            }
            Some(Problem::BadHeader(reason)) => {
                fail_or_cut(path, 0, reason, &mut report)?;
                cut = Some(Cut { index, keep: None });
                break;
            }
            Some(Problem::TornTail { offset, reason }) => {
                report.warnings.push(format!(
                    "torn tail in {}: cut {} bytes at offset {offset} ({reason})",
                    path.display(),
                    scan.data_len - offset
                ));
                keep_len = offset;
            }
            Some(Problem::Corrupt { offset, reason }) => {
                fail_or_cut(path, offset, reason, &mut report)?;
                report.records += scan.records;
                kept.push(SegmentMeta {
                    first_lsn: *name_lsn,
                    path: path.clone(),
                    len: scan.data_len,
                });
                expected = Some(scan.next_lsn);
                open_batch = scan.open_batch;
                cut = Some(Cut {
                    index,
                    keep: Some(offset),
                });
                break;
            }
        }
        report.records += scan.records;
        kept.push(SegmentMeta {
            first_lsn: *name_lsn,
            path: path.clone(),
            len: file_len,
        });
        if keep_len < file_len {
            truncate_file(vfs, path, keep_len)?;
            if let Some(last) = kept.last_mut() {
                last.len = keep_len;
            }
        }
        expected = Some(scan.next_lsn);
        open_batch = scan.open_batch;
        if let (false, Some((offset, _))) = (is_last, open_batch) {
            // Batches never span segments, and a segment is complete before
            // the next one exists.
            fail_or_cut(
                path,
                offset,
                "segment ends inside a batch".to_string(),
                &mut report,
            )?;
            // The batch rule below cuts this segment back to the batch.
            cut = Some(Cut { index, keep: None }.keeping_whole());
            break;
        }
    }

    if let Some(cut) = cut {
        // Newest first, so that a crash in the middle leaves a prefix of the
        // log, which the next tolerant open cuts the same way.
        for (_, path) in names[cut.index + 1..].iter().rev() {
            remove_segment(vfs, dir, path, &mut report)?;
        }
        match cut.keep {
            None => {
                remove_segment(vfs, dir, &names[cut.index].1, &mut report)?;
            }
            Some(keep) => {
                if let Some(last) = kept.last_mut()
                    && keep < last.len
                {
                    report.warnings.push(format!(
                        "cut {} bytes of {} at offset {keep}",
                        last.len - keep,
                        last.path.display()
                    ));
                    truncate_file(vfs, &last.path, keep)?;
                    last.len = keep;
                }
            }
        }
    }

    // An `append_batch` is all or nothing: a batch whose last record did not
    // make it is cut back to its first record.
    if let (Some((offset, first_lsn)), Some(last)) = (open_batch, kept.last_mut())
        && offset < last.len
    {
        let next = expected.unwrap_or(first_lsn);
        report.warnings.push(format!(
            "incomplete batch in {}: cut {} bytes ({} records from LSN {first_lsn}) at offset {offset}",
            last.path.display(),
            last.len - offset,
            next - first_lsn
        ));
        truncate_file(vfs, &last.path, offset)?;
        last.len = offset;
        report.records -= next - first_lsn;
        expected = Some(first_lsn);
    }

    // Always, not only after a cut: a segment found here may have been
    // created by a process that died (or met a failed directory fsync)
    // before syncing the directory, so its entry may still be only in
    // memory; records appended into it must not be acknowledged until it
    // is durable (found by tests/fault_injection.rs).
    vfs.sync_dir(dir)
        .map_err(Error::io("sync log directory", dir))?;

    let Some(last) = kept.last() else {
        // A new log, or a tolerant cut removed everything: start a segment
        // where the log would continue, so no LSN is ever reused.
        let first_lsn = names.first().map_or(1, |(lsn, _)| (*lsn).max(1));
        let (file, path) = segment::create_segment(vfs, dir, first_lsn, options.segment_size)?;
        report.end = Some(LogEnd {
            segment: path.clone(),
            offset: SEGMENT_HEADER_LEN as u64,
            free_bytes: options
                .segment_size
                .saturating_sub(SEGMENT_HEADER_LEN as u64),
        });
        return Ok(Recovered {
            segments: vec![SegmentMeta {
                first_lsn,
                path,
                len: SEGMENT_HEADER_LEN as u64,
            }],
            active: file,
            active_len: SEGMENT_HEADER_LEN as u64,
            next_lsn: first_lsn,
            report,
        });
    };
    let active = vfs
        .open_write(&last.path)
        .map_err(Error::io("open active segment", &last.path))?;
    // The active segment is preallocated (see `segment::create_segment`)
    // again if it is shorter than a segment: cut back above, or ended
    // exactly after a record by a crash or by an older version of this
    // crate. Its records are durable already; this only adds zeroes.
    let mut file_len = active
        .len()
        .map_err(Error::io("read segment length", &last.path))?;
    if file_len < options.segment_size {
        active
            .set_len(options.segment_size)
            .map_err(Error::io("preallocate segment", &last.path))?;
        active
            .sync_data()
            .map_err(Error::io("sync segment", &last.path))?;
        file_len = options.segment_size;
    }
    let active_len = last.len;
    report.end = Some(LogEnd {
        segment: last.path.clone(),
        offset: active_len,
        free_bytes: file_len.saturating_sub(active_len),
    });
    let next_lsn = expected.unwrap_or(last.first_lsn);
    Ok(Recovered {
        segments: kept,
        active,
        active_len,
        next_lsn,
        report,
    })
}

/// Scans the segments of `names` on up to `threads` threads; entry `i` is
/// the result of [`scan_segment`] for segment `i` (the last one scanned as
/// the last), or `None` if it was not scanned. Empty when fewer than two
/// threads or two segments make parallelism pointless: [`recover`] then
/// scans each segment itself. (The last segment is scanned with the others
/// because it is often the slowest: its preallocated zeroes are read too.)
///
/// Scanning only reads, and a segment's scan depends on nothing but the
/// segment and the first LSN in its name (the checks between segments stay
/// in [`recover`]), so the order in which segments are scanned changes no
/// result. Workers take segments in log order from a shared counter, and
/// stop taking them after the lowest segment whose scan ends the loop in
/// [`recover`] (an error, a problem, a batch left open): nothing after it is
/// used, as in a sequential scan, so a corrupt early segment does not make
/// open read the whole log. Scans of later segments that were already
/// running are dropped unused, errors included, exactly as a sequential
/// scan would never have met them.
fn prescan(
    vfs: &dyn Vfs,
    names: &[(Lsn, PathBuf)],
    max_record_size: u32,
    threads: usize,
) -> Vec<Option<Result<SegmentScan>>> {
    let count = names.len();
    let threads = threads.min(count);
    if threads < 2 {
        return Vec::new();
    }
    let next = AtomicUsize::new(0);
    // Lowest index whose scan ends the loop in `recover`, if any yet.
    let stop = AtomicUsize::new(usize::MAX);
    let mut results: Vec<Option<Result<SegmentScan>>> = (0..count).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        // Relaxed suffices: the counter only hands out
                        // distinct indices, `stop` is only a hint to skip
                        // work, and the results travel through `join`.
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count || index > stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some((first_lsn, path)) = names.get(index) else {
                            break;
                        };
                        let is_last = index + 1 == count;
                        let scan = scan_segment(vfs, path, *first_lsn, is_last, max_record_size);
                        let ends_loop = match &scan {
                            Err(_) => true,
                            Ok(scan) => scan.problem.is_some() || scan.open_batch.is_some(),
                        };
                        if ends_loop {
                            stop.fetch_min(index, Ordering::Relaxed);
                        }
                        done.push((index, scan));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => {
                    for (index, scan) in done {
                        if let Some(slot) = results.get_mut(index) {
                            *slot = Some(scan);
                        }
                    }
                }
                // A bug in the scan, not a disk problem: keep the panic.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results
}

/// Reads one segment and classifies what is wrong with it, if anything.
fn scan_segment(
    vfs: &dyn Vfs,
    path: &Path,
    first_lsn: Lsn,
    is_last: bool,
    max_record_size: u32,
) -> Result<SegmentScan> {
    let io_err = || Error::io("read segment", path);
    let file = vfs
        .open_read(path)
        .map_err(Error::io("open segment", path))?;
    let mut reader = SegmentReader::new(file, max_record_size).map_err(io_err())?;
    let file_len = reader.file_len();
    let mut scan = SegmentScan {
        file_len,
        end: SEGMENT_HEADER_LEN as u64,
        next_lsn: first_lsn,
        records: 0,
        open_batch: None,
        zero_tail: false,
        data_len: file_len,
        problem: None,
    };
    match reader.read_header().map_err(io_err())? {
        Ok(lsn) if lsn == first_lsn => {}
        Ok(lsn) => {
            scan.problem = Some(Problem::BadHeader(format!(
                "segment header says first LSN {lsn}, the file name says {first_lsn}"
            )));
            return Ok(scan);
        }
        // Records are written only after the header was synced, so a bad
        // header with nothing after it is an interrupted creation. This
        // comes before the version check: a torn header write may keep the
        // magic and leave garbage in the version field (found by the
        // torn-crash sweep in tests/power_loss.rs), and rewriting a file
        // that holds no record loses nothing, its first LSN being in its name.
        // (Or nothing but the zeroes of its preallocation.)
        Err(e)
            if is_last
                && (file_len <= SEGMENT_HEADER_LEN as u64
                    || reader
                        .zeroes_from(SEGMENT_HEADER_LEN as u64)
                        .map_err(io_err())?) =>
        {
            scan.problem = Some(Problem::TornHeader(e));
            return Ok(scan);
        }
        Err(HeaderError::UnsupportedVersion(version)) => {
            return Err(Error::UnsupportedVersion {
                segment: path.to_path_buf(),
                version,
                supported: format::FORMAT_VERSION,
            });
        }
        Err(e) => {
            scan.problem = Some(Problem::BadHeader(e.describe()));
            return Ok(scan);
        }
    }
    loop {
        match reader.next_step().map_err(io_err())? {
            Step::End => return Ok(scan),
            Step::Record {
                offset,
                lsn,
                flags,
                payload,
            } => {
                if lsn != scan.next_lsn {
                    scan.problem = Some(Problem::Corrupt {
                        offset,
                        reason: format!("expected LSN {}, found {lsn}", scan.next_lsn),
                    });
                    return Ok(scan);
                }
                let continues = flags & FLAG_BATCH_CONTINUES != 0;
                match (scan.open_batch, continues) {
                    (None, true) => scan.open_batch = Some((offset, lsn)),
                    (Some(_), false) => scan.open_batch = None,
                    _ => {}
                }
                scan.next_lsn += 1;
                scan.records += 1;
                scan.end = offset + format::framed_len(payload.len());
            }
            Step::Bad { offset, error } => {
                // The active segment's preallocated space: the log ends here.
                // (An all-zero record header never passes its checksum.)
                if is_last && reader.zeroes_from(offset).map_err(io_err())? {
                    scan.zero_tail = true;
                    return Ok(scan);
                }
                let reason = error.describe();
                scan.problem = Some(if is_last {
                    let rest = reader.read_rest(offset).map_err(io_err())?;
                    let used = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                    scan.data_len = offset + used as u64;
                    if valid_record_after(&rest, used, scan.next_lsn, max_record_size) {
                        Problem::Corrupt { offset, reason }
                    } else {
                        Problem::TornTail { offset, reason }
                    }
                } else {
                    Problem::Corrupt { offset, reason }
                });
                return Ok(scan);
            }
        }
    }
}

/// Whether a whole, valid record with an LSN at or after `expected` starts
/// anywhere in `rest` (the file from a bad record on) after its first byte
/// and before `used` (where its non-zero bytes end: a record starts with a
/// non-zero checksum, so none starts in the zeroes after).
fn valid_record_after(rest: &[u8], used: usize, expected: Lsn, max_record_size: u32) -> bool {
    let most_records = (rest.len() / RECORD_HEADER_LEN) as u64;
    for start in 1..used {
        let Some(raw) = rest.get(start..start + RECORD_HEADER_LEN) else {
            break;
        };
        let mut h = [0u8; RECORD_HEADER_LEN];
        h.copy_from_slice(raw);
        let header = format::RecordHeader::parse(&h);
        if header.lsn < expected || header.lsn > expected + most_records {
            continue;
        }
        if format::decode_record(&rest[start..], max_record_size).is_ok() {
            return true;
        }
    }
    false
}

fn rewrite_header(vfs: &dyn Vfs, path: &Path, first_lsn: Lsn) -> Result<()> {
    let file = vfs
        .open_write(path)
        .map_err(Error::io("open segment", path))?;
    file.write_all_at(&format::encode_segment_header(first_lsn), 0)
        .map_err(Error::io("write segment header", path))?;
    file.set_len(SEGMENT_HEADER_LEN as u64)
        .map_err(Error::io("truncate segment", path))?;
    file.sync_data().map_err(Error::io("sync segment", path))
}

/// Cuts a segment to `len` bytes, durably, before anything is appended.
fn truncate_file(vfs: &dyn Vfs, path: &Path, len: u64) -> Result<()> {
    let file = vfs
        .open_write(path)
        .map_err(Error::io("open segment", path))?;
    file.set_len(len)
        .map_err(Error::io("truncate segment", path))?;
    file.sync_data().map_err(Error::io("sync segment", path))
}

/// Removes a segment after a tolerant cut and makes the removal durable
/// before anything else changes, so that a crash leaves a prefix of the log
/// that the next open cuts the same way.
fn remove_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    path: &Path,
    report: &mut RecoveryReport,
) -> Result<()> {
    vfs.remove_file(path)
        .map_err(Error::io("remove segment", path))?;
    vfs.sync_dir(dir)
        .map_err(Error::io("sync log directory", dir))?;
    report
        .warnings
        .push(format!("removed segment {} after the cut", path.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The parallel prescan must decide exactly what a sequential scan
    //! decides, on logs of many segments with more than one thing wrong.

    use super::*;
    use crate::vfs::StdFs;
    use crate::{Record, SyncPolicy, Wal};

    const PAYLOAD: usize = 8;
    const RECORD: usize = RECORD_HEADER_LEN + PAYLOAD;
    const PER_SEGMENT: usize = 4;
    const SEGMENTS: usize = 12;

    fn options(mode: RecoveryMode) -> WalOptions {
        WalOptions {
            segment_size: (SEGMENT_HEADER_LEN + PER_SEGMENT * RECORD) as u64,
            sync_policy: SyncPolicy::Never,
            recovery_mode: mode,
            ..WalOptions::default()
        }
    }

    /// Segment `i` (0-based) holds LSNs `4i+1 ..= 4i+4`.
    fn name(segment: usize) -> String {
        format!("{:020}.wal", segment * PER_SEGMENT + 1)
    }

    /// A log of `SEGMENTS` full (sealed) segments and an active one that
    /// holds one record: a segment is only created by the append that does
    /// not fit in the one before.
    fn build() -> (tempfile::TempDir, Vec<Record>) {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), options(RecoveryMode::Strict)).unwrap();
        let records: Vec<Record> = (1..=(SEGMENTS * PER_SEGMENT + 1) as u64)
            .map(|lsn| Record {
                lsn,
                data: vec![lsn as u8; PAYLOAD],
            })
            .collect();
        for r in &records {
            assert_eq!(wal.append(&r.data).unwrap(), r.lsn);
        }
        drop(wal);
        assert_eq!(segment_files(dir.path()).len(), SEGMENTS + 1);
        (dir, records)
    }

    fn edit(dir: &Path, segment: usize, change: impl FnOnce(&mut Vec<u8>)) {
        let path = dir.join(name(segment));
        let mut bytes = std::fs::read(&path).unwrap();
        change(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
    }

    /// Flips a payload bit of record `index` of `segment`; returns the
    /// record's offset.
    fn flip(dir: &Path, segment: usize, index: usize) -> u64 {
        let offset = SEGMENT_HEADER_LEN + index * RECORD;
        edit(dir, segment, |b| b[offset + RECORD_HEADER_LEN] ^= 1);
        offset as u64
    }

    /// Gives `segment` a well-formed header of an unknown format version.
    fn unknown_version(dir: &Path, segment: usize) {
        edit(dir, segment, |b| {
            b[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
            let crc = crc32fast::hash(&b[0..28]);
            b[28..32].copy_from_slice(&crc.to_le_bytes());
        });
    }

    /// The segment files in `dir`, oldest first, through the log's own
    /// file layer.
    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names = StdFs.list_dir(dir).unwrap();
        names.retain(|n| format::parse_segment_file_name(n).is_some());
        names.sort();
        names
    }

    #[test]
    fn the_first_corruption_in_log_order_wins_in_a_many_segment_log() {
        let (dir, records) = build();
        // Three things wrong, the first in segment 2; the later ones would
        // each fail the open on their own (the unknown version even in the
        // tolerant mode) and must not be what is reported.
        let offset = flip(dir.path(), 2, 1);
        flip(dir.path(), 5, 0);
        unknown_version(dir.path(), 8);
        flip(dir.path(), 10, 3);

        match Wal::open(dir.path(), options(RecoveryMode::Strict)) {
            Err(Error::Corrupt {
                segment,
                offset: at,
                ..
            }) => {
                assert_eq!(segment, dir.path().join(name(2)));
                assert_eq!(at, offset);
            }
            other => panic!("expected Corrupt in {} at {offset}, got {other:?}", name(2)),
        }
        // A strict open changes nothing.
        assert_eq!(segment_files(dir.path()).len(), SEGMENTS + 1);

        let wal = Wal::open(dir.path(), options(RecoveryMode::TruncateAtCorruption)).unwrap();
        // LSN 10 is record 1 of segment 2: the log keeps LSNs 1..=9.
        let kept: Vec<Record> = wal.iter_from(0).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(kept, records[..9]);
        assert_eq!(wal.recovery_report().records, 9);
        assert_eq!(wal.next_lsn(), 10);
        let warnings = &wal.recovery_report().warnings;
        assert!(
            warnings[0].contains(&name(2)) && warnings[0].contains(&format!("offset {offset}")),
            "{warnings:?}"
        );
        // Every later segment was removed, newest first.
        let removed: Vec<&String> = warnings
            .iter()
            .filter(|w| w.starts_with("removed segment"))
            .collect();
        // Segments 3 ..= SEGMENTS (the active one included).
        assert_eq!(removed.len(), SEGMENTS - 2, "{warnings:?}");
        assert!(removed[0].contains(&name(SEGMENTS)), "{warnings:?}");
        assert_eq!(segment_files(dir.path()), vec![name(0), name(1), name(2)]);
        assert_eq!(wal.append(b"resumed").unwrap(), 10);
        drop(wal);
        let wal = Wal::open(dir.path(), options(RecoveryMode::Strict)).unwrap();
        assert!(wal.recovery_report().warnings.is_empty());
        assert_eq!(wal.next_lsn(), 11);
    }

    #[test]
    fn an_error_in_an_early_segment_wins_over_later_corruption() {
        let (dir, _) = build();
        unknown_version(dir.path(), 1);
        flip(dir.path(), 4, 2);
        for mode in [RecoveryMode::Strict, RecoveryMode::TruncateAtCorruption] {
            match Wal::open(dir.path(), options(mode)) {
                Err(Error::UnsupportedVersion { segment, .. }) => {
                    assert_eq!(segment, dir.path().join(name(1)));
                }
                other => panic!("{mode:?}: expected UnsupportedVersion, got {other:?}"),
            }
            assert_eq!(segment_files(dir.path()).len(), SEGMENTS + 1);
        }
    }

    /// What a scan decided, comparable.
    fn summary(scan: &Result<SegmentScan>) -> String {
        match scan {
            Err(e) => format!("error {e}"),
            Ok(s) => {
                let problem = match &s.problem {
                    None => "none".to_string(),
                    Some(Problem::TornHeader(e)) => format!("torn header {}", e.describe()),
                    Some(Problem::BadHeader(r)) => format!("bad header {r}"),
                    Some(Problem::TornTail { offset, reason }) => {
                        format!("torn tail {offset} {reason}")
                    }
                    Some(Problem::Corrupt { offset, reason }) => {
                        format!("corrupt {offset} {reason}")
                    }
                };
                format!(
                    "len {} end {} next {} records {} batch {:?} problem {problem}",
                    s.file_len, s.end, s.next_lsn, s.records, s.open_batch
                )
            }
        }
    }

    #[test]
    fn the_prescan_matches_sequential_scans_at_any_thread_count() {
        let (dir, _) = build();
        flip(dir.path(), 3, 2);
        flip(dir.path(), 7, 0);
        let vfs = StdFs;
        let mut names: Vec<(Lsn, PathBuf)> = segment_files(dir.path())
            .into_iter()
            .map(|n| {
                (
                    format::parse_segment_file_name(&n).unwrap(),
                    dir.path().join(n),
                )
            })
            .collect();
        names.sort();
        let max = WalOptions::default().max_record_size;
        let sequential: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, (lsn, path))| summary(&scan_segment(&vfs, path, *lsn, i == SEGMENTS, max)))
            .collect();
        assert!(sequential[3].contains("corrupt"), "{sequential:?}");
        assert!(sequential[7].contains("corrupt"), "{sequential:?}");
        assert!(prescan(&vfs, &names, max, 1).is_empty());
        assert!(prescan(&vfs, &names[..1], max, 4).is_empty());
        for threads in 2..=5 {
            let parallel = prescan(&vfs, &names, max, threads);
            assert_eq!(parallel.len(), SEGMENTS + 1, "{threads} threads");
            // Everything up to the first corrupt segment was scanned, and
            // scanned the same; nothing used after it may differ either.
            for (index, scan) in parallel.iter().enumerate() {
                match scan {
                    Some(scan) => assert_eq!(summary(scan), sequential[index], "{threads}"),
                    None => assert!(index > 3, "{threads} threads: {index} not scanned"),
                }
            }
        }
    }
}
