//! Open = recover, in the steps `docs/format.md` names, one decision at a
//! time:
//!
//! 1. [`list_segments`]: the segment files, in LSN order;
//! 2. [`scan_segment`] (several at once, [`prescan`]): read and classify
//!    each segment: how far its records are good, and what is wrong after;
//! 3. [`plan`]: decide, from the scans alone and the recovery mode, what
//!    the log keeps and what must be cut, or refuse; nothing is changed yet;
//! 4. [`apply`]: carry the decision out, each step made durable before the
//!    next (skipped by a read-only open, which only reports the plan).
//!
//! Torn write or corruption? A record that fails its checks in the *last*
//! segment is a torn tail iff no valid record starts anywhere after it in
//! that segment: an interrupted write loses a suffix of what it wrote. If
//! valid records do follow, the damage is still a torn write when it holds
//! a zeroed sector: a drive that persisted a later page of the last write
//! but not an earlier one leaves the earlier page as the zeroes that
//! preallocated space holds, and with an honest fsync nothing after an
//! unsynced page was acknowledged. Damage without zeroes (bit rot) followed
//! by valid records is corruption. In any other segment every problem is
//! corruption, because a segment is synced before the next one is created.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::format::{
    self, FLAG_BATCH_CONTINUES, HeaderError, RECORD_HEADER_LEN, RecordError, SEGMENT_HEADER_LEN,
};
use crate::options::{RecoveryMode, WalOptions};
use crate::reader::{self, SegmentReader, Step};
use crate::segment::{self, SegmentMeta};
use crate::vfs::{Vfs, VfsFile};
use crate::{Cut, LogEnd, Lsn, RecoveryReport};

/// Size of the sectors in which the torn-write rule looks for zeroes: the
/// smallest unit a drive writes, so a lost page is at least one of them.
const SECTOR: u64 = 512;

/// The log as recovery left it (or, read-only, as it would leave it).
pub(crate) struct Recovered {
    /// Segments, oldest first; the last is the active one.
    pub segments: Vec<SegmentMeta>,
    /// The active segment, open for writing; `None` for a read-only open.
    pub active: Option<Box<dyn VfsFile>>,
    /// Bytes of the active segment; the next record goes here.
    pub active_len: u64,
    /// The LSN of the next append.
    pub next_lsn: Lsn,
    /// What recovery found and did (or would do).
    pub report: RecoveryReport,
}

/// What scanning one segment found.
struct SegmentScan {
    file_len: u64,
    /// End of the valid prefix of records.
    end: u64,
    /// Offset of each record of the valid prefix, in LSN order.
    offsets: Vec<u32>,
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

impl SegmentScan {
    /// Whether [`plan`] stops at this segment.
    fn ends_the_log(&self) -> bool {
        self.problem.is_some() || self.open_batch.is_some()
    }
}

enum Problem {
    /// The last segment holds nothing but an incomplete header: its
    /// creation was interrupted, no record was ever acknowledged in it.
    TornHeader(HeaderError),
    /// The segment header is bad.
    BadHeader(String),
    /// The last segment ends in an incomplete write.
    TornTail { offset: u64, reason: String },
    /// Valid records follow a bad one in the last segment, but the damage
    /// holds a zeroed sector (at `zeroes`): a torn write whose earlier page
    /// was lost.
    TornWrite {
        offset: u64,
        reason: String,
        zeroes: u64,
        later_records: u64,
    },
    /// A bad record that is not a torn write.
    Corrupt { offset: u64, reason: String },
    /// An intact record this configuration or build cannot take.
    Intact { offset: u64, error: RecordError },
}

/// One change [`apply`] makes, in order.
#[derive(Debug)]
enum Action {
    /// Rewrite an interrupted segment creation's header from its name.
    RewriteHeader { path: PathBuf, first_lsn: Lsn },
    /// Cut a segment to `len` bytes.
    Truncate { path: PathBuf, len: u64 },
    /// Delete a segment (newest first, the directory synced after each).
    Remove { path: PathBuf },
    /// Start an empty segment: nothing was left.
    Create { first_lsn: Lsn },
}

/// What [`plan`] decided.
struct Plan {
    kept: Vec<SegmentMeta>,
    actions: Vec<Action>,
    warnings: Vec<String>,
    next_lsn: Lsn,
}

/// Recovers the log in `dir` (already locked by the caller), or with
/// `read_only` only works out what recovery would do: nothing on disk is
/// changed, and the report's warnings say what open would cut.
pub(crate) fn recover(
    vfs: &dyn Vfs,
    dir: &Path,
    options: &WalOptions,
    read_only: bool,
) -> Result<Recovered> {
    let names = list_segments(vfs, dir)?;
    let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let plan = plan(vfs, &names, options, threads)?;
    let cuts = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Truncate { path, len } => Some(Cut::Truncate {
                segment: path.clone(),
                len: *len,
            }),
            Action::Remove { path } => Some(Cut::Remove {
                segment: path.clone(),
            }),
            Action::RewriteHeader { .. } | Action::Create { .. } => None,
        })
        .collect();
    let mut report = RecoveryReport {
        warnings: plan.warnings,
        applied: !read_only,
        cuts,
        ..RecoveryReport::default()
    };
    let mut segments = plan.kept;
    let next_lsn = plan.next_lsn;
    if read_only {
        if let Some(Action::Create { first_lsn }) = plan.actions.last() {
            segments.push(SegmentMeta::new(
                *first_lsn,
                segment::segment_path(dir, *first_lsn),
                SEGMENT_HEADER_LEN as u64,
            ));
        }
        report.records = segments.iter().map(|s| s.offsets.len() as u64).sum();
        let active_len = segments.last().map_or(SEGMENT_HEADER_LEN as u64, |s| s.len);
        if let Some(last) = segments.last() {
            report.end = Some(LogEnd {
                segment: last.path.clone(),
                offset: last.len,
                free_bytes: 0,
            });
        }
        return Ok(Recovered {
            segments,
            active: None,
            active_len,
            next_lsn,
            report,
        });
    }
    if let Some(created) = apply(vfs, dir, options, plan.actions)? {
        segments.push(created);
    }
    report.records = segments.iter().map(|s| s.offsets.len() as u64).sum();
    let (active, end) = open_active(vfs, options, &segments)?;
    report.end = Some(end);
    let active_len = segments.last().map_or(SEGMENT_HEADER_LEN as u64, |s| s.len);
    Ok(Recovered {
        segments,
        active: Some(active),
        active_len,
        next_lsn,
        report,
    })
}

/// Step 1: the segment files of `dir`, in LSN order.
pub(crate) fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut names: Vec<(Lsn, PathBuf)> = vfs
        .list_dir(dir)
        .map_err(Error::io("list log directory", dir))?
        .into_iter()
        .filter_map(|name| format::parse_segment_file_name(&name).map(|lsn| (lsn, dir.join(name))))
        .collect();
    names.sort();
    Ok(names)
}

/// Refuses with [`Error::Corrupt`] if `mode` may not make a cut that needs
/// at least `needs`; otherwise says in a warning that the log is cut there.
fn refuse_or_warn(
    mode: RecoveryMode,
    needs: RecoveryMode,
    path: &Path,
    offset: u64,
    reason: String,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if mode < needs {
        return Err(Error::Corrupt {
            segment: path.to_path_buf(),
            offset,
            reason,
            cut_by: Some(needs),
        });
    }
    if needs == RecoveryMode::Tolerant {
        warnings.push(format!(
            "corruption in {} at offset {offset}: {reason}; the log is cut there",
            path.display()
        ));
    }
    Ok(())
}

/// Step 3: walks the segments oldest first and decides what the log keeps,
/// what is cut (as actions, each with its warning), and where LSNs go on;
/// or refuses. Changes nothing.
fn plan(
    vfs: &dyn Vfs,
    names: &[(Lsn, PathBuf)],
    options: &WalOptions,
    threads: usize,
) -> Result<Plan> {
    let mode = options.recovery_mode;
    let mut warnings = Vec::new();
    let mut kept: Vec<SegmentMeta> = Vec::new();
    let mut actions = Vec::new();
    // Index of the first segment removed whole by a cut, if any.
    let mut remove_from: Option<usize> = None;
    // Expected first LSN of the next segment.
    let mut expected: Option<Lsn> = None;
    let mut open_batch = None;

    // The segments are read and checked in parallel up front; the loop
    // below consumes those scans in log order, so what it decides (the
    // first error, the cut, the warnings) is what a sequential scan decides.
    let mut prescans = prescan(vfs, names, options.max_record_size, threads);

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
            refuse_or_warn(mode, RecoveryMode::Tolerant, path, 0, reason, &mut warnings)?;
            remove_from = Some(index);
            break;
        }
        let scan = match prescans.get_mut(index).and_then(Option::take) {
            Some(scan) => scan?,
            // Every segment when there was nothing to parallelise. (A
            // segment the prescan skipped is never reached: the loop stops
            // at the one that made it skip.)
            None => scan_segment(vfs, path, *name_lsn, is_last, options.max_record_size)?,
        };
        // Preallocated zeroes are kept as they are: not part of the log,
        // nothing to cut.
        let live_len = if scan.zero_tail {
            scan.end
        } else {
            scan.file_len
        };
        let mut segment = SegmentMeta::new(*name_lsn, path.clone(), live_len);
        segment.offsets = scan.offsets;
        let records = segment.offsets.len() as u64;
        let mut stop = false;
        match scan.problem {
            None => {}
            Some(Problem::Intact { offset, error }) => {
                return Err(reader::record_error(path, offset, error));
            }
            Some(Problem::TornHeader(e)) => {
                // Nothing was ever acknowledged in it: rewriting its header
                // cuts no record, so even the absolute mode does it.
                actions.push(Action::RewriteHeader {
                    path: path.clone(),
                    first_lsn: *name_lsn,
                });
                warnings.push(format!(
                    "incomplete segment creation in {} ({}, {} bytes): header rewritten",
                    path.display(),
                    e.describe(),
                    scan.file_len
                ));
                segment.len = SEGMENT_HEADER_LEN as u64;
            }
            Some(Problem::BadHeader(reason)) => {
                refuse_or_warn(mode, RecoveryMode::Tolerant, path, 0, reason, &mut warnings)?;
                remove_from = Some(index);
                break;
            }
            Some(Problem::TornTail { offset, reason }) => {
                let cut = scan.data_len - offset;
                let why = format!("torn tail: {cut} bytes at offset {offset} ({reason})");
                refuse_or_warn(mode, RecoveryMode::Strict, path, offset, why, &mut warnings)?;
                warnings.push(format!(
                    "torn tail in {}: cut {cut} bytes at offset {offset} ({reason})",
                    path.display()
                ));
                actions.push(Action::Truncate {
                    path: path.clone(),
                    len: offset,
                });
                segment.len = offset;
            }
            Some(Problem::TornWrite {
                offset,
                reason,
                zeroes,
                later_records,
            }) => {
                let cut = scan.data_len - offset;
                let why = format!(
                    "torn write: {cut} bytes at offset {offset} ({reason}), with a zeroed \
                     sector at offset {zeroes} and {later_records} intact records after it"
                );
                refuse_or_warn(mode, RecoveryMode::Strict, path, offset, why, &mut warnings)?;
                warnings.push(format!(
                    "torn write in {}: cut {cut} bytes at offset {offset} ({reason}); the \
                     damage holds a zeroed sector at offset {zeroes} (a page of the last write \
                     that never reached the disk), so none of the {later_records} intact \
                     records after it was acknowledged",
                    path.display()
                ));
                actions.push(Action::Truncate {
                    path: path.clone(),
                    len: offset,
                });
                segment.len = offset;
            }
            Some(Problem::Corrupt { offset, reason }) => {
                refuse_or_warn(
                    mode,
                    RecoveryMode::Tolerant,
                    path,
                    offset,
                    reason,
                    &mut warnings,
                )?;
                let was = if scan.zero_tail {
                    scan.end
                } else {
                    scan.data_len
                };
                if offset < was {
                    warnings.push(format!(
                        "cut {} bytes of {} at offset {offset}",
                        was - offset,
                        path.display()
                    ));
                }
                actions.push(Action::Truncate {
                    path: path.clone(),
                    len: offset,
                });
                segment.len = offset;
                remove_from = Some(index + 1);
                stop = true;
            }
        }
        expected = Some(*name_lsn + records);
        open_batch = scan.open_batch;
        kept.push(segment);
        if stop {
            break;
        }
        if let (false, Some((offset, _))) = (is_last, open_batch) {
            // Batches never span segments, and a segment is complete before
            // the next one exists.
            refuse_or_warn(
                mode,
                RecoveryMode::Tolerant,
                path,
                offset,
                "segment ends inside a batch".to_string(),
                &mut warnings,
            )?;
            // The batch rule below cuts this segment back to the batch.
            remove_from = Some(index + 1);
            break;
        }
    }

    // Newest first, so that a crash in the middle leaves a prefix of the
    // log, which the next tolerant open cuts the same way. The removals go
    // before the truncation of the segment that stays.
    let mut removals = Vec::new();
    if let Some(from) = remove_from {
        for (_, path) in names[from..].iter().rev() {
            warnings.push(format!("removed segment {} after the cut", path.display()));
            removals.push(Action::Remove { path: path.clone() });
        }
    }
    let truncations = std::mem::take(&mut actions);
    actions.extend(removals);
    actions.extend(truncations);

    // An `append_batch` is all or nothing: a batch whose last record did not
    // make it is cut back to its first record.
    if let (Some((offset, first_lsn)), Some(last)) = (open_batch, kept.last_mut())
        && offset < last.len
    {
        let next = expected.unwrap_or(first_lsn);
        let why = format!(
            "incomplete batch: {} records from LSN {first_lsn} at offset {offset}",
            next - first_lsn
        );
        refuse_or_warn(
            mode,
            RecoveryMode::Strict,
            &last.path,
            offset,
            why,
            &mut warnings,
        )?;
        warnings.push(format!(
            "incomplete batch in {}: cut {} bytes ({} records from LSN {first_lsn}) at offset {offset}",
            last.path.display(),
            last.len - offset,
            next - first_lsn
        ));
        actions.push(Action::Truncate {
            path: last.path.clone(),
            len: offset,
        });
        last.len = offset;
        last.offsets.truncate((first_lsn - last.first_lsn) as usize);
        expected = Some(first_lsn);
    }

    let next_lsn = match kept.last() {
        Some(last) => expected.unwrap_or(last.first_lsn),
        None => {
            // A new log, or a tolerant cut removed everything: start where
            // the log would go on, after every LSN it has seen, so that no
            // LSN is ever reused. The newest segment's name is a lower
            // bound; its intact records may reach further.
            let first_lsn = match names.last() {
                None => 1,
                Some((lsn, path)) => highest_intact_lsn(vfs, path, *lsn, options.max_record_size)?
                    .map_or(*lsn, |last| last + 1)
                    .max(1),
            };
            actions.push(Action::Create { first_lsn });
            first_lsn
        }
    };
    Ok(Plan {
        kept,
        actions,
        warnings,
        next_lsn,
    })
}

/// The highest LSN of the consecutive intact records at the start of a
/// segment that is about to be removed, read without trusting its header:
/// how far its LSNs reached, so that a log restarted after it does not
/// reuse them. Read errors count as "nothing more".
fn highest_intact_lsn(
    vfs: &dyn Vfs,
    path: &Path,
    first_lsn: Lsn,
    max_record_size: u32,
) -> Result<Option<Lsn>> {
    let Ok(file) = vfs.open_read(path) else {
        return Ok(None);
    };
    let Ok(mut reader) = SegmentReader::new(file, max_record_size) else {
        return Ok(None);
    };
    let mut last = None;
    let mut expected = first_lsn;
    while let Ok(Step::Record { lsn, .. }) = reader.next_step() {
        // `Lsn::MAX` is never given (see `scan_segment`): not intact.
        if lsn != expected || lsn == Lsn::MAX {
            break;
        }
        last = Some(lsn);
        expected += 1;
    }
    Ok(last)
}

/// Step 4: carries out the plan, each step durable before the next; then
/// fsyncs the directory. Returns the segment it had to create, if any.
fn apply(
    vfs: &dyn Vfs,
    dir: &Path,
    options: &WalOptions,
    actions: Vec<Action>,
) -> Result<Option<SegmentMeta>> {
    let mut created = None;
    for action in actions {
        match action {
            Action::RewriteHeader { path, first_lsn } => rewrite_header(vfs, &path, first_lsn)?,
            Action::Truncate { path, len } => truncate_file(vfs, &path, len)?,
            Action::Remove { path } => {
                vfs.remove_file(&path)
                    .map_err(Error::io("remove segment", &path))?;
                vfs.sync_dir(dir)
                    .map_err(Error::io("sync log directory", dir))?;
            }
            Action::Create { first_lsn } => {
                let (_, path) = segment::create_segment(vfs, dir, first_lsn, options.segment_size)?;
                created = Some(SegmentMeta::new(first_lsn, path, SEGMENT_HEADER_LEN as u64));
            }
        }
    }
    // Always, not only after a cut: a segment found here may have been
    // created by a process that died (or met a failed directory fsync)
    // before syncing the directory, so its entry may still be only in
    // memory; records appended into it must not be acknowledged until it
    // is durable (found by tests/fault_injection.rs).
    vfs.sync_dir(dir)
        .map_err(Error::io("sync log directory", dir))?;
    Ok(created)
}

/// Opens the active (last) segment for writing and preallocates it again
/// (see `segment::create_segment`) if it is shorter than a segment: cut
/// back by recovery, or ended exactly after a record by a crash or by an
/// older version of this crate. Its records are durable already; this only
/// reserves space after them.
fn open_active(
    vfs: &dyn Vfs,
    options: &WalOptions,
    segments: &[SegmentMeta],
) -> Result<(Box<dyn VfsFile>, LogEnd)> {
    let Some(last) = segments.last() else {
        return Err(Error::InvalidArgument {
            reason: "recovery left no segment".to_string(),
        });
    };
    let active = vfs
        .open_write(&last.path)
        .map_err(Error::io("open active segment", &last.path))?;
    let mut file_len = active
        .len()
        .map_err(Error::io("read segment length", &last.path))?;
    if file_len < options.segment_size {
        segment::prepare(active.as_ref(), &last.path, file_len, options.segment_size)?;
        file_len = options.segment_size;
    }
    let end = LogEnd {
        segment: last.path.clone(),
        offset: last.len,
        free_bytes: file_len.saturating_sub(last.len),
    };
    Ok((active, end))
}

/// Scans the segments of `names` on up to `threads` threads; entry `i` is
/// the result of [`scan_segment`] for segment `i` (the last one scanned as
/// the last), or `None` if it was not scanned. Empty when fewer than two
/// threads or two segments make parallelism pointless: [`plan`] then scans
/// each segment itself. (The last segment is scanned with the others
/// because it is often the slowest: its preallocated zeroes are read too.)
///
/// Scanning only reads, and a segment's scan depends on nothing but the
/// segment and the first LSN in its name (the checks between segments stay
/// in [`plan`]), so the order in which segments are scanned changes no
/// result. Workers take segments in log order from a shared counter, and
/// stop taking them after the lowest segment whose scan ends the loop in
/// [`plan`] (an error, a problem, a batch left open): nothing after it is
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
    // Lowest index whose scan ends the loop in `plan`, if any yet.
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
                            Ok(scan) => scan.ends_the_log(),
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

/// Step 2: reads one segment and classifies what is wrong with it, if
/// anything.
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
        offsets: Vec::new(),
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
        // header with nothing after it (or nothing but the zeroes of its
        // preallocation) is an interrupted creation. This comes before the
        // version check: a torn header write may keep the magic and leave
        // garbage in the version field (found by the torn-crash sweep in
        // tests/power_loss.rs), and rewriting a file that holds no record
        // loses nothing, its first LSN being in its name.
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
    let mut next_lsn = first_lsn;
    loop {
        match reader.next_step().map_err(io_err())? {
            Step::End => return Ok(scan),
            Step::Record {
                offset,
                lsn,
                flags,
                payload,
            } => {
                if lsn != next_lsn {
                    scan.problem = Some(Problem::Corrupt {
                        offset,
                        reason: format!("expected LSN {next_lsn}, found {lsn}"),
                    });
                    return Ok(scan);
                }
                // No append gives `Lsn::MAX` (the LSN after a record must
                // exist), so a record carrying it was not written by us.
                if lsn == Lsn::MAX {
                    scan.problem = Some(Problem::Corrupt {
                        offset,
                        reason: format!("record carries LSN {lsn}, past the last LSN a log gives"),
                    });
                    return Ok(scan);
                }
                let continues = flags & FLAG_BATCH_CONTINUES != 0;
                match (scan.open_batch, continues) {
                    (None, true) => scan.open_batch = Some((offset, lsn)),
                    (Some(_), false) => scan.open_batch = None,
                    _ => {}
                }
                next_lsn += 1;
                // Offsets fit: `segment_size` is at most 4 GiB and every
                // record starts inside it.
                scan.offsets.push(u32::try_from(offset).unwrap_or(u32::MAX));
                scan.end = offset + format::framed_len(payload.len());
            }
            Step::Bad { offset, error } if error.is_intact() => {
                scan.problem = Some(Problem::Intact { offset, error });
                return Ok(scan);
            }
            Step::Bad { offset, error } => {
                // The active segment's preallocated space: the log ends here.
                // (An all-zero record header never passes its checksum.)
                if is_last && reader.zeroes_from(offset).map_err(io_err())? {
                    scan.zero_tail = true;
                    return Ok(scan);
                }
                let reason = error.describe();
                if !is_last {
                    scan.problem = Some(Problem::Corrupt { offset, reason });
                    return Ok(scan);
                }
                let rest = reader.read_rest(offset).map_err(io_err())?;
                let used = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                scan.data_len = offset + used as u64;
                scan.problem = Some(
                    match valid_record_after(&rest, used, next_lsn, max_record_size) {
                        None => Problem::TornTail { offset, reason },
                        Some(at) => match zeroed_sector(offset, &rest[..at]) {
                            Some(zeroes) => Problem::TornWrite {
                                offset,
                                reason,
                                zeroes,
                                later_records: count_records(&rest[at..], max_record_size),
                            },
                            None => Problem::Corrupt { offset, reason },
                        },
                    },
                );
                return Ok(scan);
            }
        }
    }
}

/// Where, in `damage` (the file's bytes from offset `start` up to the next
/// valid record), zeroes betray a page of the last write that never
/// reached the disk, if they do: a whole sector-aligned sector of zeroes,
/// or, when `start` is not sector-aligned, zeroes from `start` to the next
/// sector boundary (at least a record's checksum field: a lost page that
/// began before the write leaves only that much of it). Returns where.
fn zeroed_sector(start: u64, damage: &[u8]) -> Option<u64> {
    let end = start + damage.len() as u64;
    let first_boundary = start.div_ceil(SECTOR) * SECTOR;
    let head = (first_boundary.min(end) - start) as usize;
    if head >= 4 && first_boundary <= end && damage[..head].iter().all(|&b| b == 0) {
        return Some(start);
    }
    let mut sector = first_boundary;
    while sector + SECTOR <= end {
        let from = (sector - start) as usize;
        if damage[from..from + SECTOR as usize].iter().all(|&b| b == 0) {
            return Some(sector);
        }
        sector += SECTOR;
    }
    None
}

/// How many valid records follow one another from the start of `bytes`.
fn count_records(bytes: &[u8], max_record_size: u32) -> u64 {
    let mut at = 0;
    let mut n = 0;
    while let Ok(record) = format::decode_record(&bytes[at..], max_record_size) {
        at += record.framed_len;
        n += 1;
    }
    n
}

/// Where the first whole, valid record with an LSN at or after `expected`
/// starts in `rest` (the file from a bad record on), after its first byte
/// and before `used` (where its non-zero bytes end: a record starts with a
/// non-zero checksum, so none starts in the zeroes after), if one does.
fn valid_record_after(
    rest: &[u8],
    used: usize,
    expected: Lsn,
    max_record_size: u32,
) -> Option<usize> {
    let most_records = (rest.len() / RECORD_HEADER_LEN) as u64;
    for start in 1..used {
        let raw = rest.get(start..start + RECORD_HEADER_LEN)?;
        let mut h = [0u8; RECORD_HEADER_LEN];
        h.copy_from_slice(raw);
        let header = format::RecordHeader::parse(&h);
        if header.lsn < expected || header.lsn > expected.saturating_add(most_records) {
            continue;
        }
        if format::decode_record(&rest[start..], max_record_size).is_ok() {
            return Some(start);
        }
    }
    None
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

        let wal = Wal::open(dir.path(), options(RecoveryMode::Tolerant)).unwrap();
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
        for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
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
                    Some(Problem::TornWrite { offset, zeroes, .. }) => {
                        format!("torn write {offset} {zeroes}")
                    }
                    Some(Problem::Corrupt { offset, reason }) => {
                        format!("corrupt {offset} {reason}")
                    }
                    Some(Problem::Intact { offset, error }) => {
                        format!("intact {offset} {}", error.describe())
                    }
                };
                format!(
                    "len {} end {} records {} batch {:?} problem {problem}",
                    s.file_len,
                    s.end,
                    s.offsets.len(),
                    s.open_batch
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
