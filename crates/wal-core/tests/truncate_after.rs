//! `truncate_after` under power loss and I/O errors, on the simulated file
//! system.
//!
//! The contract checked everywhere (see `Wal::truncate_after`): after a
//! crash at any step of `truncate_after(k)`, a strict reopen holds every
//! record up to `k` that was durable before, and whatever survives above
//! `k` is a prefix of the old records there (the old bytes, no hole, no
//! garbage); once it has returned, a crash leaves exactly `1..=k` plus what
//! was appended after it and acknowledged (and, at most, the append in
//! flight at the crash, a batch whole or not at all). The log then appends
//! at the next LSN, and that append is durable.
//!
//! * The power-loss sweep runs a workload (appends over several small
//!   segments, `truncate_after` removing whole segments and cutting into
//!   another, into the active segment, to nothing after a reopen, and
//!   appends after each) with the power cut after every mutating
//!   operation, then a clean crash and a few torn ones.
//! * The fault sweep fails, once, each `Remove`, `SyncDir`, `SetLen`,
//!   `SyncData`, `Write` and `Allocate` a `truncate_after` makes: the call
//!   fails, the log is poisoned (or, only if no file changed yet, still
//!   works), and reopening (in the same boot, or after a crash) keeps the
//!   contract and can finish the cut.

// The shared module's checker is for logs whose LSNs are never reused;
// `truncate_after` reuses them, so this file checks its own contract and
// takes only the options, directory and payloads from there.
#[allow(dead_code)]
mod sweep;

use std::io;

use sweep::{DIR, fresh_fs, options, payload};
use wal_core::sim::{Op, SimFs};
use wal_core::{Error, Lsn, Record, Vfs, Wal};

/// What a workload was told, as the contract needs it.
#[derive(Debug, Default, Clone)]
struct Told {
    /// The log as acknowledged: `log[i]` holds LSN `i + 1`. Every record in
    /// it is durable (`SyncPolicy::Always`).
    log: Vec<Vec<u8>>,
    /// The append or batch in flight when the workload stopped (LSNs from
    /// `log.len() + 1`): it may or may not have survived.
    in_flight: Vec<Vec<u8>>,
    /// A `truncate_after(k)` that was called and did not return `Ok`.
    cutting: Option<Lsn>,
}

impl Told {
    fn append(&mut self, wal: &Wal, data: Vec<u8>) -> Option<()> {
        self.in_flight = vec![data.clone()];
        let lsn = wal.append(&data).ok()?;
        assert_eq!(lsn, self.log.len() as u64 + 1, "LSN of an append");
        self.in_flight.clear();
        self.log.push(data);
        Some(())
    }

    fn batch(&mut self, wal: &Wal, data: Vec<Vec<u8>>) -> Option<()> {
        self.in_flight = data.clone();
        let lsns = wal.append_batch(&data).ok()?;
        let first = self.log.len() as u64 + 1;
        assert_eq!(lsns, first..first + data.len() as u64, "LSNs of a batch");
        self.in_flight.clear();
        self.log.extend(data);
        Some(())
    }

    fn truncate_after(&mut self, wal: &Wal, k: Lsn) -> Option<()> {
        self.cutting = Some(k);
        wal.truncate_after(k).ok()?;
        self.cutting = None;
        self.log.truncate(k as usize);
        assert_eq!(wal.next_lsn(), k + 1, "next LSN after truncate_after({k})");
        assert_eq!(wal.last_lsn(), k.checked_sub(1).map(|_| k));
        Some(())
    }
}

/// How much of the old suffix a crash inside `truncate_after(k)` left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// No `truncate_after` was interrupted.
    NotCutting,
    /// All of it: nothing was removed yet (or nothing became durable).
    Everything,
    /// Some later segments were gone, the rest of the suffix was there.
    Part,
    /// None of it: the cut was durable.
    Nothing,
}

/// The first LSN of each segment, oldest first, as a read-only open sees
/// them (it takes no lock and changes nothing, so it works beside an open
/// log and makes no mutating call).
fn segment_starts(fs: &SimFs) -> Vec<Lsn> {
    let ro = Wal::open_read_only_with_vfs(DIR, options(), fs.shared()).unwrap();
    assert!(!ro.recovery_report().applied);
    ro.segments().into_iter().map(|(lsn, _)| lsn).collect()
}

fn read_all(wal: &Wal, what: &str) -> Vec<Record> {
    wal.iter_from(0)
        .unwrap_or_else(|e| panic!("{what}: iter_from: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: reading back: {e}"))
}

/// Checks an open log against the contract; returns how much of an
/// interrupted cut's old suffix it holds.
fn check_contract(wal: &Wal, told: &Told, what: &str) -> Left {
    let held = read_all(wal, what);
    for (i, r) in held.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1, "{what}: LSNs not dense from 1");
    }
    // The in-memory index that recovery rebuilt agrees with the scan.
    let indexed = wal
        .read_range(1, Lsn::MAX, usize::MAX)
        .unwrap_or_else(|e| panic!("{what}: read_range: {e}"));
    assert_eq!(indexed, held, "{what}: read_range disagrees with iter_from");
    let n = held.len();
    let left = match told.cutting {
        Some(k) => {
            let k = k as usize;
            assert!(
                n >= k,
                "{what}: truncate_after({k}) interrupted: only {n} records left, lost some at or \
                 below {k}"
            );
            assert!(
                n <= told.log.len(),
                "{what}: truncate_after({k}) interrupted: {n} records, the log had {}",
                told.log.len()
            );
            for r in &held {
                assert!(
                    r.data == told.log[r.lsn as usize - 1],
                    "{what}: record {} is not the record the log held there (above {k} it must \
                     be a prefix of the old suffix)",
                    r.lsn
                );
            }
            if n == told.log.len() && n > k {
                Left::Everything
            } else if n > k {
                Left::Part
            } else {
                Left::Nothing
            }
        }
        None => {
            assert!(
                n >= told.log.len(),
                "{what}: acknowledged record {} lost ({n} records left, {} acknowledged)",
                n + 1,
                told.log.len()
            );
            for (r, data) in held.iter().zip(&told.log) {
                assert!(
                    r.data == *data,
                    "{what}: acknowledged record {} changed",
                    r.lsn
                );
            }
            let extra = &held[told.log.len()..];
            assert!(
                extra.len() <= told.in_flight.len(),
                "{what}: {} records above the acknowledged ones, {} were in flight",
                extra.len(),
                told.in_flight.len()
            );
            for (r, data) in extra.iter().zip(&told.in_flight) {
                assert!(
                    r.data == *data,
                    "{what}: record {} holds bytes never appended there",
                    r.lsn
                );
            }
            assert!(
                extra.is_empty() || extra.len() == told.in_flight.len(),
                "{what}: part of a batch survived"
            );
            Left::NotCutting
        }
    };
    assert_eq!(wal.next_lsn(), n as u64 + 1, "{what}: next LSN");
    assert_eq!(wal.first_lsn(), (n > 0).then_some(1), "{what}: first_lsn");
    assert_eq!(
        wal.last_lsn(),
        (n > 0).then_some(n as u64),
        "{what}: last_lsn"
    );
    left
}

/// Appends to the reopened log, crashes, reopens and checks that the
/// append and everything before it survived. Consumes the log.
fn append_crash_and_check(fs: &SimFs, wal: Wal, what: &str) {
    let before = read_all(&wal, what);
    let next = wal.next_lsn();
    let lsn = wal
        .append(b"after-recovery")
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    assert_eq!(lsn, next, "{what}: LSN of the first append after reopen");
    drop(wal);
    let again = fs.crash();
    let wal = Wal::open_with_vfs(DIR, options(), again.shared())
        .unwrap_or_else(|e| panic!("{what}: reopen after the second crash: {e}"));
    let mut want = before;
    want.push(Record {
        lsn,
        data: b"after-recovery".to_vec(),
    });
    assert_eq!(read_all(&wal, what), want, "{what}: after the second crash");
}

/// Layout facts the workload is meant to exercise, from the fault-free run.
#[derive(Debug, Default)]
struct Layout {
    /// Segment starts before the first `truncate_after`, and its bound.
    before_first_cut: Vec<Lsn>,
    first_cut: Lsn,
    /// Segment starts after it returned.
    after_first_cut: Vec<Lsn>,
    /// Mutating calls of the `truncate_after` of the last record (a no-op).
    no_op_mutations: u64,
}

/// Where the workload's first batch goes: three records from the
/// `BATCH_AT`-th on (0-based), so that its first cut lies either after the
/// batch or just after the batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// LSNs 3..=5: the first cut (LSN 11) is outside it.
    Before,
    /// LSNs 11..=13: the first cut leaves LSN 11, the first record of the
    /// batch, as the last record of the log.
    Cut,
}

impl Batch {
    fn start(self) -> usize {
        match self {
            Batch::Before => 2,
            Batch::Cut => 10,
        }
    }
}

/// The workload; stops at its first error (the power cut) and returns the
/// log, still open, so that the crash happens with it open.
fn workload(fs: &SimFs, batch: Batch, told: &mut Told, layout: &mut Layout) -> Option<Wal> {
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).ok()?;
    let at = batch.start();
    for i in 0..at {
        told.append(&wal, payload(i))?;
    }
    told.batch(&wal, (at..at + 3).map(payload).collect())?;
    for i in at + 3..17 {
        told.append(&wal, payload(i))?;
    }

    // Cut right after the first record of the third-newest segment: the two
    // segments after it go whole, and it is cut in the middle.
    let starts = segment_starts(fs);
    let k = starts[starts.len() - 3];
    layout.before_first_cut = starts;
    layout.first_cut = k;
    told.truncate_after(&wal, k)?;
    layout.after_first_cut = segment_starts(fs);
    for i in 100..103 {
        told.append(&wal, payload(i))?;
    }

    // Into the active segment: only its last record goes.
    let last = wal.last_lsn()?;
    told.truncate_after(&wal, last - 1)?;
    // The last record: nothing to do, no file touched.
    let last = wal.last_lsn()?;
    let m = fs.mutation_count();
    told.truncate_after(&wal, last)?;
    layout.no_op_mutations = fs.mutation_count() - m;
    told.batch(&wal, (103..105).map(payload).collect())?;

    // A clean close and reopen, then cut everything: LSN 1 comes again.
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).ok()?;
    told.truncate_after(&wal, 0)?;
    for i in 200..203 {
        told.append(&wal, payload(i))?;
    }
    wal.sync().ok()?;
    Some(wal)
}

/// Mutating calls of the whole workload, after checking it did what it is
/// meant to exercise.
fn count_crash_points(batch: Batch) -> u64 {
    let fs = fresh_fs();
    let base = fs.mutation_count();
    let (mut told, mut layout) = (Told::default(), Layout::default());
    let wal =
        workload(&fs, batch, &mut told, &mut layout).expect("the workload runs without faults");
    let n = fs.mutation_count() - base;
    drop(wal);

    let before = &layout.before_first_cut;
    let k = layout.first_cut;
    assert!(before.len() >= 5, "too few segments: {before:?}");
    // k + 1 lies strictly inside the segment starting at k (which holds at
    // least two records), and two whole segments come after it.
    let target = before.len() - 3;
    assert!(
        before[target] == k && before[target + 1] > k + 1,
        "{before:?}"
    );
    assert_eq!(layout.after_first_cut, before[..=target], "segments left");
    assert_eq!(
        layout.no_op_mutations, 0,
        "truncate_after(last) changed files"
    );
    let batch_lsns = batch.start() as u64 + 1..batch.start() as u64 + 4;
    match batch {
        Batch::Before => assert!(batch_lsns.end <= k, "{batch_lsns:?}, cut {k}"),
        Batch::Cut => assert_eq!(batch_lsns.start, k, "cut {k}"),
    }
    assert_eq!(told.log.len(), 3);
    assert!(told.cutting.is_none() && told.in_flight.is_empty());
    n
}

/// Runs the workload with the power cut after `k` mutating calls, crashes
/// (torn with `seed`), and checks the reopened log.
fn crash_at(batch: Batch, k: u64, seed: Option<u64>) -> Left {
    let fs = fresh_fs();
    fs.power_cut_after(k);
    let mut told = Told::default();
    let wal = workload(&fs, batch, &mut told, &mut Layout::default());
    let crashed = match seed {
        None => fs.crash(),
        Some(s) => fs.crash_torn(s),
    };
    drop(wal);
    let what = format!(
        "batch {batch:?}, crash after {k} ops (torn seed {seed:?}, {} acked, cutting {:?})",
        told.log.len(),
        told.cutting
    );
    let wal = Wal::open_with_vfs(DIR, options(), crashed.shared())
        .unwrap_or_else(|e| panic!("{what}: strict open after the crash failed: {e}"));
    let left = check_contract(&wal, &told, &what);
    append_crash_and_check(&crashed, wal, &what);
    left
}

/// How many crash points left each outcome of an interrupted cut.
fn tally(lefts: impl Iterator<Item = Left>) -> [usize; 3] {
    let mut seen = [0; 3];
    for left in lefts {
        match left {
            Left::NotCutting => {}
            Left::Everything => seen[0] += 1,
            Left::Part => seen[1] += 1,
            Left::Nothing => seen[2] += 1,
        }
    }
    seen
}

/// Sweeps every crash point of the workload, clean crashes or `seeds` torn
/// ones at each, and checks that they reach every intermediate state of an
/// interrupted cut: nothing durable yet, some later segments removed, the
/// cut made but the call not returned.
fn sweep_crashes(batch: Batch, seeds: Option<u64>) {
    let n = count_crash_points(batch);
    assert!(n > 80, "workload too small: {n} ops");
    let lefts: Vec<Left> = match seeds {
        None => (0..=n).map(|k| crash_at(batch, k, None)).collect(),
        Some(seeds) => (0..=n)
            .flat_map(|k| (0..seeds).map(move |s| crash_at(batch, k, Some(k * 100 + s))))
            .collect(),
    };
    let [everything, part, nothing] = tally(lefts.into_iter());
    assert!(
        everything > 0 && part > 0 && nothing > 0,
        "interrupted cuts left everything {everything}, part {part}, nothing {nothing} times"
    );
}

#[test]
fn a_crash_at_every_step_of_truncate_after_keeps_the_contract() {
    sweep_crashes(Batch::Before, None);
}

#[test]
fn a_torn_crash_at_every_step_of_truncate_after_keeps_the_contract() {
    sweep_crashes(Batch::Before, Some(4));
}

#[test]
fn a_crash_at_every_step_of_truncate_after_inside_a_batch_keeps_the_contract() {
    // The same sweep, with the first cut right after the first record of a
    // batch: the record kept must survive although its batch does not.
    sweep_crashes(Batch::Cut, None);
}

#[test]
fn truncate_after_inside_a_batch_keeps_the_record_at_the_bound() {
    // The smallest case, without any crash: a clean close and reopen after
    // cutting a batch after its first record.
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    wal.append(b"a").unwrap();
    assert_eq!(wal.append_batch(&[&b"b"[..], b"c", b"d"]).unwrap(), 2..5);
    wal.truncate_after(2).unwrap();
    assert_eq!(wal.last_lsn(), Some(2));
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    let warnings = &wal.recovery_report().warnings;
    assert!(warnings.is_empty(), "reopen cut: {warnings:?}");
    let data: Vec<Vec<u8>> = read_all(&wal, "reopened")
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(data, [b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn the_contract_check_catches_a_hole_and_stale_records() {
    // The check is only worth something if it fails on a log that breaks
    // the contract: here one that lost a record at or below the bound, and
    // one that kept a stale record after the cut had returned.
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    let mut told = Told::default();
    for i in 0..4 {
        told.append(&wal, payload(i)).unwrap();
    }
    let mut lost_below = told.clone();
    lost_below.cutting = Some(3);
    lost_below
        .log
        .insert(0, b"a record the log never held".to_vec());
    let mut stale = told.clone();
    stale.log.truncate(2);
    for broken in [lost_below, stale] {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_contract(&wal, &broken, "broken")
        }));
        assert!(caught.is_err(), "the check passed {broken:?}");
    }
    assert_eq!(check_contract(&wal, &told, "intact"), Left::NotCutting);
}

#[test]
fn truncate_after_below_the_oldest_record_is_refused_and_changes_nothing() {
    let fs = fresh_fs();
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    for i in 0..12 {
        wal.append(&payload(i)).unwrap();
    }
    wal.truncate_before(8).unwrap();
    let first = wal.first_lsn().unwrap();
    assert!(first > 2, "truncate_before removed nothing");
    let held = read_all(&wal, "before");
    let m = fs.mutation_count();
    for k in [0, first - 2] {
        match wal.truncate_after(k) {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("truncate_after({k}) below first {first}: {other:?}"),
        }
    }
    assert_eq!(
        fs.mutation_count(),
        m,
        "a refused truncate_after changed files"
    );
    assert_eq!(read_all(&wal, "after the refusal"), held);
    // The log still works; first - 1 is the lowest bound allowed, and cuts
    // everything, keeping the LSNs going from there.
    assert_eq!(wal.append(b"x").unwrap(), 13);
    wal.truncate_after(first - 1).unwrap();
    assert_eq!((wal.first_lsn(), wal.last_lsn()), (None, None));
    assert_eq!(wal.next_lsn(), first);
    assert_eq!(wal.append(b"again").unwrap(), first);
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, options(), fs.crash().shared()).unwrap();
    assert_eq!(
        read_all(&wal, "after the crash"),
        vec![Record {
            lsn: first,
            data: b"again".to_vec()
        }]
    );
}

// ---------------------------------------------------------------------------
// Fault injection.

/// Where a fault-sweep scenario cuts, given the segment starts of the
/// 16-record log [`build`] makes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// After the first record of the third-newest segment: two whole
    /// segments go, that one is cut in the middle.
    InsideSealed,
    /// Before the first record of the second-newest segment: the newest
    /// goes, that one is cut back to its header.
    AtSegmentStart,
    /// Before the last record, inside the active segment.
    InsideActive,
    /// Everything.
    Everything,
}

impl Cut {
    fn bound(self, starts: &[Lsn], last: Lsn) -> Lsn {
        let n = starts.len();
        match self {
            Cut::InsideSealed => {
                assert!(starts[n - 2] > starts[n - 3] + 1, "{starts:?}");
                starts[n - 3]
            }
            Cut::AtSegmentStart => starts[n - 2] - 1,
            Cut::InsideActive => {
                assert!(starts[n - 1] < last, "the active segment holds one record");
                last - 1
            }
            Cut::Everything => 0,
        }
    }
}

/// A log of 16 records over several segments; returns it and its records.
fn build(fs: &SimFs) -> (Wal, Told) {
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).unwrap();
    let mut told = Told::default();
    for i in 0..16 {
        told.append(&wal, payload(i)).unwrap();
    }
    assert!(segment_starts(fs).len() >= 5);
    (wal, told)
}

/// The written image of the log directory: every file and its bytes.
fn image(fs: &SimFs) -> Vec<(String, Vec<u8>)> {
    let mut names = fs.list_dir(DIR.as_ref()).unwrap();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = fs.read_file(&std::path::Path::new(DIR).join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

/// The ops a fault sweep fails, and how they are classed.
const FAULT_OPS: [Op; 6] = [
    Op::Remove,
    Op::SyncDir,
    Op::SetLen,
    Op::SyncData,
    Op::Write,
    Op::Allocate,
];

/// Calls of each of [`FAULT_OPS`] that `truncate_after` makes in `cut`.
fn calls(cut: Cut) -> [u64; 6] {
    let fs = fresh_fs();
    let (wal, told) = build(&fs);
    let k = cut.bound(&segment_starts(&fs), told.log.len() as u64);
    let before = FAULT_OPS.map(|op| fs.op_count(op));
    wal.truncate_after(k).unwrap();
    let after = FAULT_OPS.map(|op| fs.op_count(op));
    std::array::from_fn(|i| after[i] - before[i])
}

/// Whether a reopen in the same boot may be followed by a crash check: not
/// after a failed fdatasync, whose pages the reopen read from the cache
/// although they will never reach the disk (see `fault_injection.rs`).
fn crash_after_written_reopen_is_meaningful(op: Op) -> bool {
    op != Op::SyncData
}

/// Fails the `nth` call of `op` in `truncate_after` and checks everything;
/// `crash` reopens after a crash, else in the same boot.
fn fail_once(cut: Cut, op: Op, nth: u64, crash: bool) {
    let what = format!("{cut:?}: {op:?} #{nth} fails (crash: {crash})");
    let fs = fresh_fs();
    let (wal, mut told) = build(&fs);
    let k = cut.bound(&segment_starts(&fs), told.log.len() as u64);
    let image_before = image(&fs);
    let injected = fs.injected_failures();
    fs.fail_nth(op, nth, io::ErrorKind::Other);
    told.cutting = Some(k);
    let result = wal.truncate_after(k);
    assert!(
        fs.injected_failures() > injected,
        "{what}: the failure never fired"
    );
    fs.clear_faults();
    assert!(
        result.is_err(),
        "{what}: truncate_after returned Ok past a failure"
    );
    let changed = image(&fs) != image_before;
    match wal.append(b"probe") {
        Err(Error::Poisoned { .. }) => {
            // Fail-stop: nothing changes the log any more.
            let poisoned = |r: wal_core::Result<()>| matches!(r, Err(Error::Poisoned { .. }));
            assert!(poisoned(wal.truncate_after(k)), "{what}: truncate_after");
            assert!(poisoned(wal.append_batch(&[b"x"]).map(|_| ())), "{what}");
            assert!(poisoned(wal.rotate()), "{what}: rotate");
            assert!(poisoned(wal.sync()), "{what}: sync");
            assert!(poisoned(wal.truncate_before(k).map(|_| ())), "{what}");
        }
        Ok(lsn) => {
            // Still working is allowed only if no file had changed: then
            // the truncation simply did not happen.
            assert!(
                !changed,
                "{what}: working after a failure that changed files"
            );
            assert_eq!(lsn, told.log.len() as u64 + 1, "{what}: probe LSN");
            told.log.push(b"probe".to_vec());
            told.cutting = None;
            assert_eq!(check_contract(&wal, &told, &what), Left::NotCutting);
        }
        Err(e) => panic!("{what}: append after the failure: {e}"),
    }

    let fs = if crash {
        let crashed = fs.crash();
        drop(wal);
        crashed
    } else {
        drop(wal);
        fs
    };
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared())
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    check_contract(&wal, &told, &format!("{what}, reopened"));
    // The reopened log can finish the cut, and then holds exactly 1..=k.
    if let Some(k) = told.cutting {
        wal.truncate_after(k)
            .unwrap_or_else(|e| panic!("{what}: truncate_after({k}) after reopen: {e}"));
        told.log.truncate(k as usize);
        told.cutting = None;
        check_contract(&wal, &told, &format!("{what}, cut after reopen"));
    }
    if crash || crash_after_written_reopen_is_meaningful(op) {
        append_crash_and_check(&fs, wal, &format!("{what}, after reopen"));
    }
}

#[test]
fn a_failure_at_every_file_operation_of_truncate_after_keeps_the_contract() {
    for cut in [
        Cut::InsideSealed,
        Cut::AtSegmentStart,
        Cut::InsideActive,
        Cut::Everything,
    ] {
        let counts = calls(cut);
        if let Cut::InsideSealed | Cut::Everything = cut {
            // Every kind is met: removals and their directory syncs, the
            // cut, its sync, and re-preparing the space.
            assert!(counts[0] >= 2 && counts[1] >= 2, "{cut:?}: {counts:?}");
        }
        assert!(counts[2..].iter().all(|&c| c >= 1), "{cut:?}: {counts:?}");
        for (op, n) in FAULT_OPS.into_iter().zip(counts) {
            for nth in 0..n {
                for crash in [false, true] {
                    fail_once(cut, op, nth, crash);
                }
            }
        }
    }
}
