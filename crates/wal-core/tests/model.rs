//! Model-based test: random appends of random sizes, batches, rotations,
//! reopens, `truncate_before`, `truncate_after` and reads (iterators,
//! `read`, `read_range`, followers), checked against an in-memory model,
//! with segments small enough that rotation happens all the time.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use wal_core::{Error, Record, SyncPolicy, Wal, WalOptions};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Batch(Vec<Vec<u8>>),
    Rotate,
    Reopen,
    /// Truncate before a point chosen as a fraction of the LSNs held.
    TruncateBefore(u8),
    /// Read from a point chosen as a fraction of the LSNs.
    ReadFrom(u8),
    Sync,
    /// `truncate_after(k)`, `k` a fraction of the way from the oldest
    /// held record - 1 (everything goes) to the last (nothing goes).
    TruncateAfter(u8),
    /// `truncate_after` below the oldest held record - 1: refused.
    TruncateAfterBelow(u8),
    /// `read` at a fraction of `0..=next_lsn`.
    Read(u8),
    /// `read_range(from, from + len, max_bytes)`, `from` a fraction of
    /// `0..=next_lsn`.
    ReadRange(u8, u8, u16),
    /// A follower from a fraction of the held range, read until it waits.
    Follow(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let record = || prop::collection::vec(any::<u8>(), 0..120);
    prop_oneof![
        8 => record().prop_map(Op::Append),
        2 => prop::collection::vec(record(), 1..5).prop_map(Op::Batch),
        1 => Just(Op::Rotate),
        1 => Just(Op::Reopen),
        1 => any::<u8>().prop_map(Op::TruncateBefore),
        2 => any::<u8>().prop_map(Op::ReadFrom),
        1 => Just(Op::Sync),
        // The ends (everything, nothing) as often as any point between.
        2 => prop_oneof![Just(0u8), Just(255u8), any::<u8>()].prop_map(Op::TruncateAfter),
        1 => any::<u8>().prop_map(Op::TruncateAfterBelow),
        2 => any::<u8>().prop_map(Op::Read),
        2 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(f, l, m)| Op::ReadRange(f, l, m)),
        1 => any::<u8>().prop_map(Op::Follow),
    ]
}

/// The model: every record the log has (index = LSN - 1; `truncate_after`
/// takes records off the end), the oldest LSN the log may still hold, and
/// for each record whether it ends its batch (a single append does).
struct Model {
    records: Vec<Vec<u8>>,
    ends_batch: Vec<bool>,
    first: u64,
}

impl Model {
    fn next_lsn(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    fn held(&self, lsn: u64) -> bool {
        lsn >= self.first && lsn < self.next_lsn()
    }

    fn record(&self, lsn: u64) -> Record {
        Record {
            lsn,
            data: self.records[lsn as usize - 1].clone(),
        }
    }

    /// What `read_range(from, to, max_bytes)` returns: from `from` (if
    /// held) on, below `to`, as many records as fit in `max_bytes` of
    /// framed records (payload + 20 bytes), and at least one.
    fn read_range(&self, from: u64, to: u64, max_bytes: usize) -> Vec<Record> {
        let mut out = Vec::new();
        let mut used = 0;
        let mut lsn = from;
        while self.held(lsn) && lsn < to {
            used += 20 + self.records[lsn as usize - 1].len();
            if used > max_bytes && !out.is_empty() {
                break;
            }
            out.push(self.record(lsn));
            lsn += 1;
        }
        out
    }
}

/// What `disk_size` must say: the sealed segment files whole (they end at
/// their last record), and of the active one its header and the model's
/// records from its first LSN on (the rest of that file is preallocated
/// zeroes). Also checks that the active file is at least that long.
fn disk_bytes(dir: &Path, model: &Model) -> u64 {
    let firsts = segment_first_lsns(dir);
    let Some((&active_first, sealed)) = firsts.split_last() else {
        return 0;
    };
    let len = |lsn: u64| {
        std::fs::metadata(dir.join(format!("{lsn:020}.wal")))
            .unwrap()
            .len()
    };
    let active_used: u64 = 32
        + model.records[(active_first as usize).saturating_sub(1)..]
            .iter()
            .map(|r| 20 + r.len() as u64)
            .sum::<u64>();
    assert!(len(active_first) >= active_used);
    sealed.iter().map(|&lsn| len(lsn)).sum::<u64>() + active_used
}

/// First LSNs of the segment files, from their names, ascending.
fn segment_first_lsns(dir: &Path) -> Vec<u64> {
    let mut lsns: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".wal").map(|d| d.parse().unwrap())
        })
        .collect();
    lsns.sort_unstable();
    lsns
}

/// The log holds exactly the model's records from its first LSN on.
fn check(wal: &Wal, model: &mut Model, dir: &Path) -> Result<(), TestCaseError> {
    prop_assert_eq!(wal.next_lsn(), model.next_lsn());
    let first = wal.first_lsn().unwrap_or(model.next_lsn());
    // Truncation only ever moves the start forward, and only as far as asked.
    prop_assert!(
        first >= model.first,
        "first {} < model {}",
        first,
        model.first
    );
    model.first = first;
    prop_assert_eq!(
        wal.last_lsn(),
        (first < model.next_lsn()).then(|| model.next_lsn() - 1)
    );
    let got: Vec<(u64, Vec<u8>)> = wal
        .iter_from(0)
        .unwrap()
        .map(|r| r.map(|r| (r.lsn, r.data)))
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<(u64, Vec<u8>)> = (first..model.next_lsn())
        .map(|lsn| (lsn, model.records[lsn as usize - 1].clone()))
        .collect();
    prop_assert_eq!(got, want);
    prop_assert_eq!(wal.disk_size(), disk_bytes(dir, model));
    Ok(())
}

/// Where `truncate_after` may cut: anywhere, or only after the last record
/// of a batch (see the second proptest below).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bounds {
    Anywhere,
    BatchEnds,
}

fn run(
    segment_size: u64,
    policy: SyncPolicy,
    bounds: Bounds,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = WalOptions {
        segment_size,
        sync_policy: policy,
        max_record_size: 200,
        ..WalOptions::default()
    };
    let mut wal = Wal::open(dir, opts.clone()).unwrap();
    let mut model = Model {
        records: Vec::new(),
        ends_batch: Vec::new(),
        first: 1,
    };
    for op in ops {
        match op {
            Op::Append(data) => {
                let lsn = wal.append(&data).unwrap();
                prop_assert_eq!(lsn, model.next_lsn());
                model.records.push(data);
                model.ends_batch.push(true);
            }
            Op::Batch(batch) => {
                let lsns = wal.append_batch(&batch).unwrap();
                let start = model.next_lsn();
                prop_assert_eq!(lsns, start..start + batch.len() as u64);
                model
                    .ends_batch
                    .extend((1..=batch.len()).map(|i| i == batch.len()));
                model.records.extend(batch);
            }
            Op::Rotate => wal.rotate().unwrap(),
            Op::Sync => wal.sync().unwrap(),
            Op::Reopen => {
                drop(wal);
                wal = Wal::open(dir, opts.clone()).unwrap();
                let report = wal.recovery_report();
                prop_assert!(report.warnings.is_empty(), "{:?}", report.warnings);
                prop_assert_eq!(report.records, model.next_lsn() - model.first);
            }
            Op::TruncateBefore(f) => {
                let span = model.next_lsn() + 1 - model.first;
                let lsn = model.first + span * u64::from(f) / 255;
                let before = wal.first_lsn();
                let deleted = wal.truncate_before(lsn).unwrap();
                let after = wal.first_lsn();
                // Nothing at or above `lsn` may go.
                if lsn < model.next_lsn() {
                    prop_assert!(after.is_some_and(|a| a <= lsn), "{:?} > {}", after, lsn);
                }
                // Something was deleted iff the start moved.
                prop_assert_eq!(deleted > 0, after != before);
                // Everything wholly below `lsn` went: the second segment
                // (if any) starts above it.
                let names = segment_first_lsns(dir);
                if names.len() >= 2 {
                    prop_assert!(names[1] > lsn, "{:?} after truncate_before({})", names, lsn);
                }
            }
            Op::ReadFrom(f) => {
                let lsn = (model.next_lsn() + 1) * u64::from(f) / 255;
                let got: Vec<u64> = wal
                    .iter_from(lsn)
                    .unwrap()
                    .map(|r| r.unwrap().lsn)
                    .collect();
                let start = lsn.max(model.first);
                prop_assert_eq!(got, (start..model.next_lsn()).collect::<Vec<_>>());
            }
            Op::TruncateAfter(f) => {
                let held = model.next_lsn() - model.first;
                let mut k = model.first - 1 + held * u64::from(f) / 255;
                if bounds == Bounds::BatchEnds {
                    while k >= model.first && !model.ends_batch[k as usize - 1] {
                        k -= 1;
                    }
                }
                wal.truncate_after(k).unwrap();
                model.records.truncate(k as usize);
                model.ends_batch.truncate(k as usize);
                // What is left of a batch cut in the middle is a whole
                // record of the log now.
                if let Some(last) = model.ends_batch.last_mut() {
                    *last = true;
                }
                prop_assert_eq!(wal.next_lsn(), k + 1);
                prop_assert_eq!(wal.durable_lsn().min(k), wal.durable_lsn());
            }
            Op::TruncateAfterBelow(f) => {
                if model.first >= 2 {
                    let k = (model.first - 2) * u64::from(f) / 255;
                    let refused =
                        matches!(wal.truncate_after(k), Err(Error::InvalidArgument { .. }));
                    prop_assert!(refused, "truncate_after({}) below {}", k, model.first);
                }
            }
            Op::Read(f) => {
                let lsn = (model.next_lsn() + 1) * u64::from(f) / 255;
                let want = model.held(lsn).then(|| model.record(lsn));
                prop_assert_eq!(wal.read(lsn).unwrap(), want);
            }
            Op::ReadRange(f, len, max_bytes) => {
                let from = (model.next_lsn() + 1) * u64::from(f) / 255;
                let to = from + u64::from(len) % 16;
                let max_bytes = usize::from(max_bytes) % 600;
                prop_assert_eq!(
                    wal.read_range(from, to, max_bytes).unwrap(),
                    model.read_range(from, to, max_bytes)
                );
            }
            Op::Follow(f) => {
                let held = model.next_lsn() - model.first;
                let lsn = model.first + held * u64::from(f) / 255;
                let mut follower = wal.follow(lsn);
                let mut got = Vec::new();
                // A zero timeout: it yields what is written, then Ok(None).
                while let Some(r) = follower.next_timeout(Duration::ZERO).unwrap() {
                    got.push(r);
                    prop_assert!(got.len() <= model.records.len(), "follower never stops");
                }
                let want: Vec<Record> = (lsn..model.next_lsn()).map(|l| model.record(l)).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(follower.next_lsn(), model.next_lsn());
                if model.first >= 2 {
                    let gone = wal.follow(model.first - 1).next_timeout(Duration::ZERO);
                    prop_assert!(matches!(gone, Err(Error::Truncated { .. })), "{:?}", gone);
                }
            }
        }
        check(&wal, &mut model, dir)?;
    }
    drop(wal);
    let wal = Wal::open(dir, opts).unwrap();
    check(&wal, &mut model, dir)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_the_model(
        segment_size in prop_oneof![Just(100u64), Just(256), Just(1024)],
        policy in prop_oneof![Just(SyncPolicy::Never), Just(SyncPolicy::Always)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        // truncate_after only at batch ends: a cut inside a batch is the
        // next test's (it fails on a known bug and would hide others here).
        run(segment_size, policy, Bounds::BatchEnds, ops)?;
    }

    #[test]
    fn truncate_after_anywhere_behaves_like_the_model(
        segment_size in prop_oneof![Just(100u64), Just(256), Just(1024)],
        policy in prop_oneof![Just(SyncPolicy::Never), Just(SyncPolicy::Always)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(segment_size, policy, Bounds::Anywhere, ops)?;
    }
}
