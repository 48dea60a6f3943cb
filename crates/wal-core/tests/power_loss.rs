//! Simulated power loss at every crash point of a scripted workload.
//!
//! The workload (appends of varied sizes, batches, explicit rotations,
//! `truncate_before`, a reopen, with a small segment size so that it rotates
//! often) runs once to count its mutating file-system operations. Then, for
//! every `k`, it runs again on a fresh [`SimFs`] whose power is cut after `k`
//! operations; the durable image is reopened with the real `Wal` and checked
//! against what the workload was told:
//!
//! * open succeeds in strict mode (whatever a crash leaves is recoverable);
//! * every append that returned `Ok` is there, with its LSN and its bytes;
//! * records are dense, and hold exactly what was appended under their LSN;
//! * only `truncate_before` may take records away, and only a prefix below
//!   its bound;
//! * the next append continues after the last surviving record and after
//!   every acknowledged LSN, and is itself durable.
//!
//! The same sweep runs with torn crashes (some unsynced data and directory
//! changes reach the disk), sixteen seeds per crash point.

mod sweep;

use std::collections::BTreeMap;

use sweep::{DIR, Outcome, check_reopened, fresh_fs, options, payload};
use wal_core::sim::{Op, SimFs};
use wal_core::{Lsn, SyncPolicy, Wal, WalOptions};

/// Runs the workload until its first error (the power cut). Returns what it
/// learned and the log, still open, so that the crash happens with it open.
fn workload(fs: &SimFs, out: &mut Outcome) -> Option<Wal> {
    let mut i = 0usize;
    let mut next_payload = || {
        i += 1;
        payload(i)
    };
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).ok()?;

    let append = |wal: &Wal, out: &mut Outcome, data: Vec<u8>| -> Option<()> {
        out.attempted.insert(wal.next_lsn(), data.clone());
        let lsn = wal.append(&data).ok()?;
        out.acked.insert(lsn, data);
        Some(())
    };
    let batch = |wal: &Wal, out: &mut Outcome, data: Vec<Vec<u8>>| -> Option<()> {
        let first = wal.next_lsn();
        for (k, d) in data.iter().enumerate() {
            out.attempted.insert(first + k as u64, d.clone());
        }
        let lsns = wal.append_batch(&data).ok()?;
        assert_eq!(lsns.end - lsns.start, data.len() as u64);
        for (lsn, d) in lsns.zip(data) {
            out.acked.insert(lsn, d);
        }
        Some(())
    };

    for _ in 0..5 {
        append(&wal, out, next_payload())?;
    }
    batch(&wal, out, (0..3).map(|_| next_payload()).collect())?;
    wal.rotate().ok()?;
    append(&wal, out, next_payload())?;
    // A bound inside the log: deletes the segments wholly below it.
    let bound = wal.next_lsn() - 3;
    out.truncated_below = bound;
    wal.truncate_before(bound).ok()?;
    for _ in 0..3 {
        append(&wal, out, next_payload())?;
    }
    batch(&wal, out, (0..2).map(|_| next_payload()).collect())?;

    // A clean close and reopen in the middle: crash points inside recovery.
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared()).ok()?;

    append(&wal, out, next_payload())?;
    // Rotate, then truncate everything appended so far: only the new, empty
    // segment is left, and its header alone must carry the next LSN.
    wal.rotate().ok()?;
    let bound = wal.next_lsn();
    out.truncated_below = bound;
    wal.truncate_before(bound).ok()?;
    for _ in 0..4 {
        append(&wal, out, next_payload())?;
    }
    // A batch larger than a segment goes alone into a fresh one; so does a
    // single record larger than a segment.
    batch(&wal, out, (0..4).map(|_| next_payload()).collect())?;
    append(&wal, out, vec![b'L'; 300])?;
    for _ in 0..3 {
        append(&wal, out, next_payload())?;
        batch(&wal, out, (0..2).map(|_| next_payload()).collect())?;
    }
    wal.sync().ok()?;
    Some(wal)
}

/// Reopens the crashed image and checks every promise; `what` names the
/// crash point in failure messages. Returns whether recovery cut a torn
/// tail.
fn check_recovered(fs: &SimFs, out: &Outcome, what: &str) -> bool {
    let wal = Wal::open_with_vfs(DIR, options(), fs.shared())
        .unwrap_or_else(|e| panic!("{what}: strict open after the crash failed: {e}"));
    let torn = wal
        .recovery_report()
        .warnings
        .iter()
        .any(|w| w.contains("torn tail"));
    check_reopened(&wal, out, what);
    let next = wal.next_lsn();
    let lsn = wal
        .append(b"after-recovery")
        .unwrap_or_else(|e| panic!("{what}: append after recovery: {e}"));
    assert_eq!(lsn, next, "{what}: LSN of the first append after recovery");
    drop(wal);

    // That append is durable too: crash again and look.
    let again = fs.crash();
    let wal = Wal::open_with_vfs(DIR, options(), again.shared())
        .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
    assert_eq!(
        wal.last_lsn(),
        Some(lsn),
        "{what}: post-recovery append lost"
    );
    let rec = wal.iter_from(lsn).unwrap().next().unwrap().unwrap();
    assert_eq!(rec.data, b"after-recovery");
    torn
}

/// Mutating operations the whole workload performs (open to final sync).
fn count_crash_points() -> u64 {
    let fs = fresh_fs();
    let base = fs.mutation_count();
    let mut out = Outcome::default();
    let wal = workload(&fs, &mut out).expect("the workload runs without faults");
    let n = fs.mutation_count() - base;
    // Sanity: the workload did what it is meant to exercise.
    assert_eq!(out.acked.len(), 19 + 4 + 1 + 9);
    assert!(wal.disk_size() > 6 * options().segment_size);
    drop(wal);
    n
}

/// Crashes after `k` mutating operations; `seed` selects a torn crash.
/// Returns whether recovery cut a torn tail.
fn crash_at(k: u64, seed: Option<u64>) -> bool {
    let fs = fresh_fs();
    fs.power_cut_after(k);
    let mut out = Outcome::default();
    let wal = workload(&fs, &mut out);
    let crashed = match seed {
        None => fs.crash(),
        Some(s) => fs.crash_torn(s),
    };
    // The old log dies with the old file system: dropping it must not panic.
    drop(wal);
    let what = format!(
        "crash after {k} ops (torn seed {seed:?}, {} acked)",
        out.acked.len()
    );
    check_recovered(&crashed, &out, &what)
}

#[test]
fn every_acknowledged_append_survives_a_crash_at_every_point() {
    let n = count_crash_points();
    assert!(n > 100, "workload too small to be interesting: {n} ops");
    for k in 0..=n {
        // Without torn writes nothing unsynced survives: no partial record.
        assert!(
            !crash_at(k, None),
            "crash after {k} ops: a clean crash left a torn tail"
        );
    }
}

#[test]
fn every_acknowledged_append_survives_a_torn_crash_at_every_point() {
    let n = count_crash_points();
    let mut torn = 0;
    for k in 0..=n {
        for seed in 0..16 {
            torn += u64::from(crash_at(k, Some(k * 1000 + seed)));
        }
    }
    // The sweep is only worth something if crashes really tear record
    // writes (into the active segment's preallocated space, as on a disk):
    // every crash point between a write and its sync can, at most seeds.
    eprintln!(
        "{torn} torn tails cut in {} torn crashes at {n} points",
        (n + 1) * 16
    );
    assert!(
        torn >= n,
        "only {torn} torn tails in {} torn crashes at {n} points",
        (n + 1) * 16
    );
}

#[test]
fn a_crash_before_the_first_sync_leaves_an_openable_empty_log() {
    // The sweep covers this too; this names the edge: the very first
    // operations of a brand-new log.
    for k in 0..4 {
        let fs = fresh_fs();
        fs.power_cut_after(k);
        assert!(Wal::open_with_vfs(DIR, options(), fs.shared()).is_err());
        let crashed = fs.crash();
        let wal = Wal::open_with_vfs(DIR, options(), crashed.shared()).unwrap();
        assert_eq!(wal.last_lsn(), None);
        assert_eq!(wal.append(b"x").unwrap(), 1);
    }
}

#[test]
fn the_sweep_can_fail_a_log_that_acknowledges_before_syncing() {
    // The checks above are only worth something if a log that lies is
    // caught. SyncPolicy::Never acknowledges before data is durable, so a
    // crash right after the appends must lose acknowledged records and the
    // check must notice (by panicking).
    let fs = fresh_fs();
    let never = WalOptions {
        sync_policy: SyncPolicy::Never,
        ..options()
    };
    let wal = Wal::open_with_vfs(DIR, never, fs.shared()).unwrap();
    let mut out = Outcome::default();
    for i in 0..3 {
        let data = payload(i);
        out.attempted.insert(wal.next_lsn(), data.clone());
        let lsn = wal.append(&data).unwrap();
        out.acked.insert(lsn, data);
    }
    let crashed = fs.crash();
    drop(wal);
    let caught = std::panic::catch_unwind(|| check_recovered(&crashed, &out, "never-sync"));
    assert!(
        caught.is_err(),
        "losing acknowledged records went unnoticed"
    );
}

#[test]
fn concurrent_appenders_lose_nothing_acknowledged_at_a_crash() {
    // Group commit puts records of several appenders, and rotations between
    // them, into one write: the old segment's part must be synced before
    // the new segment is started. Thread timing varies from run to run, so
    // each crash point is a different, always valid, interleaving.
    const THREADS: usize = 6;
    const PER_THREAD: usize = 25;
    let total = {
        let fs = fresh_fs();
        let base = fs.mutation_count();
        let acked = concurrent_workload(&fs, THREADS, PER_THREAD);
        assert_eq!(acked.len(), THREADS * PER_THREAD);
        fs.mutation_count() - base
    };
    for k in (0..total).step_by(3) {
        let fs = fresh_fs();
        fs.power_cut_after(k);
        let acked = concurrent_workload(&fs, THREADS, PER_THREAD);
        let crashed = fs.crash();
        let what = format!("concurrent, crash after {k} ops, {} acked", acked.len());
        let wal = Wal::open_with_vfs(DIR, options(), crashed.shared())
            .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
        let records: Vec<(Lsn, Vec<u8>)> = wal
            .iter_from(0)
            .unwrap()
            .map(|r| r.map(|r| (r.lsn, r.data)).unwrap())
            .collect();
        for pair in records.windows(2) {
            assert_eq!(pair[1].0, pair[0].0 + 1, "{what}: LSN gap");
        }
        let held: BTreeMap<Lsn, Vec<u8>> = records.into_iter().collect();
        for (lsn, data) in &acked {
            assert_eq!(held.get(lsn), Some(data), "{what}: acknowledged {lsn} lost");
        }
        let max_acked = acked.keys().next_back().copied().unwrap_or(0);
        assert!(wal.next_lsn() > max_acked, "{what}: LSN reuse");
    }
}

/// `threads` threads append `per_thread` records each until the first error;
/// returns the acknowledged ones.
fn concurrent_workload(fs: &SimFs, threads: usize, per_thread: usize) -> BTreeMap<Lsn, Vec<u8>> {
    let acked = std::sync::Mutex::new(BTreeMap::new());
    let Ok(wal) = Wal::open_with_vfs(DIR, options(), fs.shared()) else {
        return BTreeMap::new();
    };
    std::thread::scope(|s| {
        for t in 0..threads {
            let (wal, acked) = (&wal, &acked);
            s.spawn(move || {
                for i in 0..per_thread {
                    let data =
                        format!("t{t}-{i}-{}", "x".repeat((t * 7 + i * 5) % 40)).into_bytes();
                    match wal.append(&data) {
                        Ok(lsn) => {
                            acked.lock().unwrap().insert(lsn, data);
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    acked.into_inner().unwrap()
}

/// Cuts the power with `wal` open, reopens what the disk kept, and returns
/// every record in it.
fn crash_and_read_back(fs: &SimFs, wal: Wal, opts: WalOptions) -> BTreeMap<Lsn, Vec<u8>> {
    let crashed = fs.crash();
    drop(wal);
    let wal = Wal::open_with_vfs(DIR, opts, crashed.shared()).unwrap();
    wal.iter_from(0)
        .unwrap()
        .map(|r| r.map(|r| (r.lsn, r.data)).unwrap())
        .collect()
}

#[test]
fn group_commit_acknowledges_only_what_is_durable() {
    // Like `Always`, whatever `GroupCommit` acknowledged survives a power
    // loss right after, here with concurrent appenders sharing groups.
    let fs = fresh_fs();
    let opts = WalOptions {
        sync_policy: SyncPolicy::GroupCommit {
            max_delay: std::time::Duration::from_millis(2),
        },
        ..options()
    };
    let wal = Wal::open_with_vfs(DIR, opts.clone(), fs.shared()).unwrap();
    let acked: BTreeMap<Lsn, Vec<u8>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let data = payload(t * 100 + i);
                            (wal.append(&data).unwrap(), data)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let held = crash_and_read_back(&fs, wal, opts);
    assert_eq!(held, acked);
}

#[test]
fn interval_makes_appends_durable_by_its_next_background_sync() {
    let fs = fresh_fs();
    let opts = WalOptions {
        sync_policy: SyncPolicy::Interval {
            period: std::time::Duration::from_millis(5),
        },
        ..options()
    };
    let wal = Wal::open_with_vfs(DIR, opts.clone(), fs.shared()).unwrap();
    let mut appended = BTreeMap::new();
    for i in 0..6 {
        let data = payload(i);
        appended.insert(wal.append(&data).unwrap(), data);
    }
    // The background thread is the only one syncing, one sync at a time: a
    // sync that begins after another began means that one has finished,
    // and the one that began after the appends covered them. The appends of
    // the second round need the second sync to start, but make no claim.
    let wait_for_sync_calls = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs.op_count(Op::SyncData) < n {
            assert!(std::time::Instant::now() < deadline, "no background sync");
            std::thread::yield_now();
        }
    };
    let before = fs.op_count(Op::SyncData);
    wait_for_sync_calls(before + 1);
    wal.append(b"second round").unwrap();
    wait_for_sync_calls(before + 2);
    let held = crash_and_read_back(&fs, wal, opts);
    for (lsn, data) in &appended {
        assert_eq!(held.get(lsn), Some(data), "record {lsn} lost");
    }
}

#[test]
fn a_crash_right_after_create_at_keeps_the_starting_lsn() {
    let fs = SimFs::new();
    let dir = std::path::Path::new("/data/log");
    let wal = Wal::create_at_with_vfs(dir, WalOptions::default(), fs.shared(), 42).unwrap();
    let after = fs.crash();
    drop(wal);
    let wal = Wal::open_with_vfs(dir, WalOptions::default(), after.shared()).unwrap();
    assert_eq!(wal.next_lsn(), 42);
    assert_eq!(wal.append(b"first").unwrap(), 42);
}
