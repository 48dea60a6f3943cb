//! What the simulated-disk sweeps (`power_loss.rs`, `fault_injection.rs`)
//! share: the log's options and directory, the workload's payloads, what a
//! workload was told, and the check that a reopened log kept its promises.
//! (Needs the `test-util` feature, as those two tests do.)

use std::collections::BTreeMap;
use std::path::Path;

use wal_core::sim::SimFs;
use wal_core::{Lsn, RecoveryMode, SyncPolicy, Vfs, Wal, WalOptions};

/// Where the sweeps put the log, on a [`SimFs`].
pub const DIR: &str = "/db/wal";

/// Small segments, so that a short workload rotates many times on its own.
pub fn options() -> WalOptions {
    WalOptions {
        // Header 32 bytes, records 20 + 7..=60 bytes: two to five records per
        // segment.
        segment_size: 200,
        sync_policy: SyncPolicy::Always,
        max_record_size: 1024,
        recovery_mode: RecoveryMode::Strict,
    }
}

/// A payload that names its position in the workload, of a varied size.
pub fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("record-{i}:").into_bytes();
    p.resize(7 + (i * 13) % 54, b'a' + (i % 26) as u8);
    p
}

/// A fresh file system holding a durable, empty `/db`, as if the log's
/// parent directory had been made long ago.
pub fn fresh_fs() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/db")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

/// What a workload was told, and what it tried.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Appends that returned `Ok`: they must survive.
    pub acked: BTreeMap<Lsn, Vec<u8>>,
    /// Every record the workload tried to append under each LSN (the last
    /// attempt wins: an LSN of a record that never became durable may be
    /// given again after a reopen). Records that survive must match.
    pub attempted: BTreeMap<Lsn, Vec<u8>>,
    /// Largest bound passed to `truncate_before` (even if it failed):
    /// records below it may be gone, as a prefix of the log.
    pub truncated_below: Lsn,
}

/// Checks a reopened log against what its workload was told:
///
/// * its records are dense, and each holds what was appended under its LSN;
/// * `first_lsn` and `last_lsn` agree with the records;
/// * every acknowledged record is there, unchanged, unless
///   `truncate_before` was allowed to drop it, and what is gone is a prefix;
/// * the next LSN reuses no acknowledged one and follows the last record.
///
/// Panics naming `what` on the first broken promise.
pub fn check_reopened(wal: &Wal, out: &Outcome, what: &str) {
    let records: Vec<(Lsn, Vec<u8>)> = wal
        .iter_from(0)
        .unwrap_or_else(|e| panic!("{what}: iter_from: {e}"))
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{what}: reading back: {e}"));
            (r.lsn, r.data)
        })
        .collect();

    for pair in records.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 1,
            "{what}: LSN gap after {}",
            pair[0].0
        );
    }
    for (lsn, data) in &records {
        assert_eq!(
            out.attempted.get(lsn),
            Some(data),
            "{what}: record {lsn} holds bytes never appended under that LSN"
        );
    }
    let first = records.first().map(|r| r.0);
    let last = records.last().map(|r| r.0);
    assert_eq!(wal.first_lsn(), first, "{what}: first_lsn");
    assert_eq!(wal.last_lsn(), last, "{what}: last_lsn");

    let held: BTreeMap<Lsn, &Vec<u8>> = records.iter().map(|(l, d)| (*l, d)).collect();
    for (lsn, data) in &out.acked {
        match held.get(lsn) {
            Some(d) => assert_eq!(*d, data, "{what}: acknowledged record {lsn} changed"),
            None => {
                assert!(
                    *lsn < out.truncated_below,
                    "{what}: acknowledged record {lsn} was lost (truncation bound {})",
                    out.truncated_below
                );
                assert!(
                    first.is_none_or(|f| *lsn < f),
                    "{what}: record {lsn} missing inside the log (a hole, not a prefix)"
                );
            }
        }
    }

    let max_acked = out.acked.keys().next_back().copied().unwrap_or(0);
    let next = wal.next_lsn();
    assert!(
        next > max_acked,
        "{what}: next LSN {next} reuses acknowledged {max_acked}"
    );
    if let Some(last) = last {
        assert_eq!(next, last + 1, "{what}: next LSN after the last record");
    }
}
