//! I/O error injection at every step of a scripted workload.
//!
//! The workload (appends, batches, syncs, rotations, `truncate_before`, a
//! reopen; a small segment size so that it rotates often) runs once on a
//! [`SimFs`] to count the calls of each [`Op`]. Then, for each kind and each
//! call index, it runs again with that one call failing (and, for writes,
//! with a short write that lands a prefix first; and with the disk running
//! out of space at every few bytes). Each run checks:
//!
//! * nothing panics;
//! * the call that met the failure returns `Err`, and no call that returned
//!   `Ok` swallowed one;
//! * after a failed write or fdatasync on the append path, every later
//!   append, batch, sync and rotate returns [`Error::Poisoned`] until the
//!   log is reopened (fail-stop); a failure elsewhere (recovery, truncation)
//!   either poisons the log the same way or leaves it fully working;
//! * reopening works, loses no acknowledged record, keeps LSNs dense and
//!   continues after them; and appends after the reopen work.
//!
//! Each case runs twice: once reopening the written image (same boot: what
//! the page cache holds), once crashing first (only what was synced).

mod sweep;

use std::io;

use sweep::{DIR, Outcome, check_reopened, fresh_fs, options, payload};
use wal_core::sim::{Op, SimFs};
use wal_core::{Error, Wal};

/// One step of the scripted workload.
#[derive(Debug, Clone)]
enum Step {
    Append(Vec<u8>),
    Batch(Vec<Vec<u8>>),
    Sync,
    Rotate,
    /// `truncate_before(next_lsn - keep)`.
    TruncateKeeping(u64),
    /// Close and open again.
    Reopen,
}

impl Step {
    /// Whether the step goes through the log's write path (the group-commit
    /// leader), where a failed write or sync must poison the log.
    fn is_write_path(&self) -> bool {
        matches!(
            self,
            Step::Append(_) | Step::Batch(_) | Step::Sync | Step::Rotate
        )
    }
}

fn script() -> Vec<Step> {
    let mut i = 0;
    let mut next = || {
        i += 1;
        payload(i)
    };
    let mut s = Vec::new();
    for _ in 0..3 {
        s.push(Step::Append(next()));
    }
    s.push(Step::Batch(vec![next(), next(), next()]));
    s.push(Step::Append(next()));
    s.push(Step::Sync);
    s.push(Step::Rotate);
    s.push(Step::Append(next()));
    s.push(Step::Append(next()));
    s.push(Step::TruncateKeeping(2));
    s.push(Step::Append(next()));
    s.push(Step::Reopen);
    s.push(Step::Append(next()));
    s.push(Step::Batch(vec![next(), next()]));
    s.push(Step::Rotate);
    s.push(Step::TruncateKeeping(0));
    for _ in 0..3 {
        s.push(Step::Append(next()));
    }
    s.push(Step::Sync);
    s
}

/// How a run ends (and how the reopen after a failure is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reopen what the page cache holds: a process restart.
    Written,
    /// Crash first: only what was synced is left.
    Crash,
}

/// Whether the log must, may or must not refuse writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poison {
    /// No failure yet, or one that must leave the log working.
    No,
    /// A failure on the write path other than write/sync: poisoning is
    /// allowed; the next write-path step decides which it was.
    Maybe,
    /// Fail-stop: every write-path step must return `Error::Poisoned`.
    Yes,
}

fn open(fs: &SimFs) -> wal_core::Result<Wal> {
    Wal::open_with_vfs(DIR, options(), fs.shared())
}

/// Opens after a failure with faults cleared and checks the promises.
fn reopen_and_check(fs: &SimFs, out: &Outcome, what: &str) -> Wal {
    fs.clear_faults();
    let wal = open(fs).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    check_reopened(&wal, out, what);
    wal
}

/// What kind of failure a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A failed or short write, or a full disk: poisons the write path.
    Write,
    /// A failed fdatasync: poisons the write path, and leaves pages in the
    /// cache that will never reach the disk.
    Sync,
    /// Anything else.
    Other,
}

/// What a run saw, taken when the script ended (before the final checks).
struct RunStats {
    /// Whether an injected failure fired.
    failed: bool,
    /// Calls of each kind, in [`Op::ALL`] order (meaningful for a run
    /// without failures, which never switches file systems).
    counts: Vec<u64>,
    /// The least that was left of the space budget at any moment.
    space_low: Option<u64>,
}

/// Runs the script with whatever faults `plan` sets on the fresh file
/// system, checking everything listed in the module docs.
fn run(plan: impl FnOnce(&SimFs), class: Class, mode: Mode, what: &str) -> RunStats {
    let must_poison = class != Class::Other;
    let mut fs = fresh_fs();
    plan(&fs);
    let mut out = Outcome::default();
    let mut poison = Poison::No;
    let mut failed = false;
    let mut wal: Option<Wal> = None;

    // Step 0 is the first open; a `None` log is opened before a step.
    let steps: Vec<Option<Step>> = std::iter::once(None)
        .chain(script().into_iter().map(Some))
        .collect();
    for (index, step) in steps.iter().enumerate() {
        let what = format!("{what}, step {index} {step:?}");
        let injected_before = fs.injected_failures();

        let reopen = wal.is_none() || matches!(step, Some(Step::Reopen));
        let result: Result<(), Error> = if reopen {
            if failed && mode == Mode::Crash {
                // After a failure, restart from what the disk holds, not
                // from the page cache (see `failed_sync_loses_data_for_good`
                // in sim.rs: a reopen of the cache could read records whose
                // pages will never reach the disk).
                let crashed = fs.crash();
                drop(wal.take());
                fs = crashed;
            } else {
                drop(wal.take());
            }
            match open(&fs) {
                Ok(w) => {
                    if failed {
                        // The first open after a failure: check it.
                        drop(w);
                        wal = Some(reopen_and_check(&fs, &out, &what));
                    } else {
                        wal = Some(w);
                    }
                    poison = Poison::No;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        let result = match (result, wal.as_ref(), step) {
            (Err(e), _, _) => Err(e),
            (Ok(()), Some(w), Some(step)) if !matches!(step, Step::Reopen) => {
                do_step(w, step, &mut out, poison)
            }
            (Ok(()), _, _) => Ok(()),
        };
        let fired = fs.injected_failures() > injected_before;

        match result {
            Ok(()) => {
                assert!(!fired, "{what}: an injected failure was swallowed");
                if poison == Poison::Maybe && step.as_ref().is_some_and(Step::is_write_path) {
                    // It was not poisoned after all: it must stay working.
                    poison = Poison::No;
                }
            }
            Err(e) => {
                if fired {
                    assert!(!failed, "{what}: a second injected failure fired");
                    failed = true;
                    fs.clear_faults();
                    let write_path = step.as_ref().is_some_and(Step::is_write_path) && !reopen;
                    // A failure in open or truncate_before leaves the log
                    // (if it opened) fully working, and so does a full disk
                    // (on a write or a segment creation, never a sync):
                    // `clear_faults` above freed the space, so every later
                    // step must work.
                    poison = match (write_path, must_poison, e.is_disk_full()) {
                        (true, _, true) => Poison::No,
                        (true, true, false) => Poison::Yes,
                        (true, false, false) => Poison::Maybe,
                        (false, _, _) => Poison::No,
                    };
                    if reopen {
                        // The open failed: the next step opens again.
                        wal = None;
                    }
                } else if let Error::Poisoned { .. } = e {
                    assert!(
                        poison != Poison::No,
                        "{what}: poisoned without a write-path failure: {e}"
                    );
                    poison = Poison::Yes;
                } else {
                    panic!("{what}: unexpected error without an injected failure: {e}");
                }
            }
        }
    }
    let stats = RunStats {
        failed,
        counts: Op::ALL.iter().map(|op| fs.op_count(*op)).collect(),
        space_low: fs.space_budget_low_water(),
    };

    // The end: reopen (or crash and reopen) and check; then the log works.
    let what = format!("{what}, final reopen");
    let fs = match mode {
        Mode::Written => {
            drop(wal.take());
            fs
        }
        Mode::Crash => {
            let crashed = fs.crash();
            drop(wal.take());
            crashed
        }
    };
    let wal = reopen_and_check(&fs, &out, &what);
    let next = wal.next_lsn();
    let lsn = wal
        .append(b"after")
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    assert_eq!(lsn, next, "{what}: LSN after reopen");
    out.attempted.insert(lsn, b"after".to_vec());
    out.acked.insert(lsn, b"after".to_vec());
    if mode == Mode::Written && class == Class::Sync && failed {
        // Not checked: the reopen above read, from the page cache, pages a
        // failed fdatasync marked clean; they never reach the disk, so a
        // crash now may take records the reopened log built on (for example
        // the header of a segment whose creation failed). No log can see
        // this through the page cache; Mode::Crash covers restarting after
        // such a failure from what the disk holds.
        return stats;
    }
    let crashed = fs.crash();
    drop(wal);
    drop(reopen_and_check(
        &crashed,
        &out,
        &format!("{what}, after crash"),
    ));
    stats
}

/// Performs one non-reopen step on an open log.
fn do_step(wal: &Wal, step: &Step, out: &mut Outcome, poison: Poison) -> Result<(), Error> {
    let refused = |r: &Result<(), Error>| matches!(r, Err(Error::Poisoned { .. }));
    let result = match step {
        Step::Append(data) => {
            if poison != Poison::Yes {
                out.attempted.insert(wal.next_lsn(), data.clone());
            }
            wal.append(data).map(|lsn| {
                out.acked.insert(lsn, data.clone());
            })
        }
        Step::Batch(data) => {
            if poison != Poison::Yes {
                let first = wal.next_lsn();
                for (k, d) in data.iter().enumerate() {
                    out.attempted.insert(first + k as u64, d.clone());
                }
            }
            wal.append_batch(data).map(|lsns| {
                assert_eq!(lsns.end - lsns.start, data.len() as u64);
                for (lsn, d) in lsns.zip(data) {
                    out.acked.insert(lsn, d.clone());
                }
            })
        }
        Step::Sync => wal.sync(),
        Step::Rotate => wal.rotate(),
        Step::TruncateKeeping(keep) => {
            let bound = wal.next_lsn().saturating_sub(*keep);
            out.truncated_below = out.truncated_below.max(bound);
            wal.truncate_before(bound).map(|_| ())
        }
        Step::Reopen => unreachable!("reopen is handled by the runner"),
    };
    if poison == Poison::Yes && step.is_write_path() {
        assert!(
            refused(&result),
            "fail-stop broken: {step:?} after a failed write or sync returned {result:?}"
        );
    }
    result
}

/// Calls of `op` the fault-free workload makes (after the fresh file
/// system's setup).
fn count_of(op: Op) -> u64 {
    let setup = fresh_fs().op_count(op);
    let stats = run(|_| {}, Class::Other, Mode::Written, "fault-free");
    assert!(!stats.failed);
    let i = Op::ALL.iter().position(|o| *o == op).unwrap();
    stats.counts[i] - setup
}

/// Fails each call of `op` in turn, in both modes; returns how many calls
/// the workload makes.
fn sweep(op: Op) -> u64 {
    let n = count_of(op);
    let class = match op {
        Op::Write => Class::Write,
        Op::SyncData => Class::Sync,
        _ => Class::Other,
    };
    for nth in 0..n {
        for mode in [Mode::Written, Mode::Crash] {
            let what = format!("{op:?} #{nth} fails ({mode:?})");
            let stats = run(
                |fs| fs.fail_nth(op, nth, io::ErrorKind::Other),
                class,
                mode,
                &what,
            );
            assert!(stats.failed, "{what}: the failure never fired");
        }
    }
    n
}

#[test]
fn failed_writes() {
    assert!(sweep(Op::Write) > 10);
}

#[test]
fn short_writes() {
    let n = count_of(Op::Write);
    for nth in 0..n {
        for landed in [1, 21] {
            for mode in [Mode::Written, Mode::Crash] {
                let what = format!("write #{nth} lands {landed} bytes ({mode:?})");
                let stats = run(
                    |fs| fs.fail_nth_write_partial(nth, landed, io::ErrorKind::Other),
                    Class::Write,
                    mode,
                    &what,
                );
                assert!(stats.failed, "{what}: the failure never fired");
            }
        }
    }
}

#[test]
fn failed_fdatasyncs() {
    assert!(sweep(Op::SyncData) > 10);
}

#[test]
fn failed_creates() {
    assert!(sweep(Op::Create) >= 3);
}

#[test]
fn failed_removes_and_renames() {
    assert!(sweep(Op::Remove) >= 2);
    // The log never renames (segments are created under their final name;
    // kv-store's snapshots are where renames happen, and its checkpoint
    // crash test fails each of them). If the log starts to rename, this
    // says so, and the sweep above covers it.
    assert_eq!(
        sweep(Op::Rename),
        0,
        "the log renames now: assert its sweep"
    );
}

#[test]
fn failed_directory_syncs() {
    assert!(sweep(Op::SyncDir) >= 3);
}

#[test]
fn failed_opens_reads_and_other_calls() {
    for op in [
        Op::CreateDir,
        Op::ListDir,
        Op::Open,
        Op::Lock,
        Op::Read,
        Op::SetLen,
        Op::Allocate,
        Op::Len,
    ] {
        sweep(op);
    }
}

#[test]
fn a_full_disk_at_any_write_allocation_or_creation_is_survivable() {
    // ENOSPC where it can happen without an fsync: writing records,
    // reserving or zeroing a new segment's space, creating its file. Each
    // fails the appends in flight with `Error::DiskFull` and leaves the log
    // working (the runner asserts it: no poisoning, every later step works
    // once space is back), nothing acknowledged lost.
    for op in [Op::Write, Op::Allocate, Op::Create] {
        let n = count_of(op);
        assert!(n > 0, "{op:?}: the workload makes no such call");
        for nth in 0..n {
            for mode in [Mode::Written, Mode::Crash] {
                let what = format!("{op:?} #{nth} finds the disk full ({mode:?})");
                let stats = run(
                    |fs| fs.fail_nth(op, nth, io::ErrorKind::StorageFull),
                    Class::Other,
                    mode,
                    &what,
                );
                assert!(stats.failed, "{what}: the failure never fired");
            }
        }
    }
}

#[test]
fn out_of_space_at_every_few_bytes() {
    // The most bytes of blocks the workload holds at once (shrinking and
    // removing segments gives blocks back), from a run with a huge budget.
    let budget = 1 << 40;
    let stats = run(
        |fs| fs.set_space_budget(Some(budget)),
        Class::Write,
        Mode::Written,
        "measure",
    );
    assert!(!stats.failed);
    let used = budget - stats.space_low.unwrap();
    assert!(used > 500, "workload wrote only {used} bytes");
    // Every 5 bytes: each write (records are at least 27 bytes, headers 32)
    // runs out of space several times, at different points inside it.
    for limit in (0..used).step_by(5) {
        for mode in [Mode::Written, Mode::Crash] {
            let what = format!("space for {limit} bytes ({mode:?})");
            let stats = run(
                |fs| fs.set_space_budget(Some(limit)),
                Class::Write,
                mode,
                &what,
            );
            assert!(stats.failed, "{what}: the disk never filled up");
        }
    }
}

#[test]
fn the_checks_catch_a_log_that_ignores_a_failed_sync() {
    // The fail-stop check is only worth something if it fires when a log
    // keeps going after a failed sync. Simulate one: after the failure,
    // reopen (which lifts the poison) and append again, then feed the result
    // to the same assertion do_step makes.
    let fs = fresh_fs();
    let wal = open(&fs).unwrap();
    wal.append(b"a").unwrap();
    fs.fail_nth(Op::SyncData, 0, io::ErrorKind::Other);
    let err = wal.append(b"b").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    drop(wal);
    let lax = open(&fs).unwrap();
    let mut out = Outcome::default();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        do_step(&lax, &Step::Append(b"c".to_vec()), &mut out, Poison::Yes)
    }));
    assert!(caught.is_err(), "an append that ignored fail-stop passed");
}

#[test]
fn appends_fail_while_the_disk_is_full_and_work_again_once_truncate_before_frees_space() {
    let fs = fresh_fs();
    let wal = open(&fs).unwrap();
    let mut acked = Vec::new();
    for i in 0..20 {
        let data = payload(i);
        acked.push((wal.append(&data).unwrap(), data));
    }
    // No room for one more segment: the next rotation cannot create it.
    fs.set_space_budget(Some(0));
    let mut full = 0;
    for i in 20..40 {
        match wal.append(&payload(i)) {
            Ok(lsn) => acked.push((lsn, payload(i))),
            Err(e) => {
                assert!(e.is_disk_full(), "{e}");
                assert!(e.to_string().contains("disk is full"), "{e}");
                full += 1;
            }
        }
    }
    assert!(full > 0, "the disk never filled up");
    assert!(!matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    // Dropping old segments gives their space back; appends work again.
    let last = acked.last().unwrap().0;
    assert!(wal.truncate_before(last).unwrap() > 0);
    let lsn = wal.append(b"after the space came back").unwrap();
    assert_eq!(lsn, last + 1, "LSNs stay dense across the failures");
    wal.sync().unwrap();
    drop(wal);
    let crashed = fs.crash();
    crashed.clear_faults();
    let wal = Wal::open_with_vfs(DIR, options(), crashed.shared()).unwrap();
    let first = wal.first_lsn().unwrap();
    for (lsn, data) in acked.iter().filter(|(l, _)| *l >= first) {
        assert_eq!(&wal.read(*lsn).unwrap().unwrap().data, data);
    }
    assert_eq!(
        wal.read(last + 1).unwrap().unwrap().data,
        b"after the space came back"
    );
}
