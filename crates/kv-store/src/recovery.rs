//! Recovery at open: the newest valid snapshot, then the log after it.
//!
//! Rules:
//! - Snapshots are tried newest first. One that cannot be read or verified
//!   is skipped with a warning, but only in favour of an older one that the
//!   log still covers (the log holds every record after the older one's
//!   seq). If it does not, open fails with [`Error::Unrecoverable`] saying
//!   which snapshot is damaged and where the log begins: silently starting
//!   from an older state would lose acknowledged writes.
//! - No usable snapshot means the empty state at LSN 0, valid only if the log
//!   begins at LSN 1.
//! - Replay checks that LSNs are dense from `seq + 1` and that each entry's
//!   own `seq` equals its LSN.
//! - Temp files of unfinished checkpoints are deleted.

use std::path::Path;
use std::sync::{Arc, Mutex};

use wal_core::{Lsn, ReadOnlyWal, RecoveryReport, Vfs, Wal, WalIter};

use crate::RecoveryInfo;
use crate::error::{Error, Result};
use crate::record;
use crate::snapshot::{self, FileKind};
use crate::state::{Change, Entry, Op, State};

/// The log as recovery reads it: opened for writing by the store, or read
/// only by an offline check, which must come to the same decisions without
/// changing anything.
pub(crate) trait LogView {
    /// The LSN of the next append.
    fn next_lsn(&self) -> Lsn;
    /// The oldest record's LSN, if any.
    fn first_lsn(&self) -> Option<Lsn>;
    /// The records from `lsn` on.
    fn iter_from(&self, lsn: Lsn) -> wal_core::Result<WalIter>;
    /// What opening the log found.
    fn report(&self) -> &RecoveryReport;
    /// Whether recovery must leave the files alone (an offline check).
    fn read_only(&self) -> bool;
}

impl LogView for Wal {
    fn next_lsn(&self) -> Lsn {
        Wal::next_lsn(self)
    }
    fn first_lsn(&self) -> Option<Lsn> {
        Wal::first_lsn(self)
    }
    fn iter_from(&self, lsn: Lsn) -> wal_core::Result<WalIter> {
        Wal::iter_from(self, lsn)
    }
    fn report(&self) -> &RecoveryReport {
        self.recovery_report()
    }
    fn read_only(&self) -> bool {
        false
    }
}

impl LogView for ReadOnlyWal {
    fn next_lsn(&self) -> Lsn {
        ReadOnlyWal::next_lsn(self)
    }
    fn first_lsn(&self) -> Option<Lsn> {
        ReadOnlyWal::first_lsn(self)
    }
    fn iter_from(&self, lsn: Lsn) -> wal_core::Result<WalIter> {
        Ok(ReadOnlyWal::iter_from(self, lsn))
    }
    fn report(&self) -> &RecoveryReport {
        self.recovery_report()
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// Why the log cannot be replayed forward from `seq`, or `None` if it can:
/// it must hold every record after `seq` that was ever written.
fn log_gap(wal: &impl LogView, seq: Lsn) -> Option<String> {
    let next = wal.next_lsn();
    let first = wal.first_lsn();
    // A snapshot file named for `Lsn::MAX` has no LSN after it for the
    // log to go on at (no log gives `Lsn::MAX`).
    let Some(after) = seq.checked_add(1) else {
        return Some(format!(
            "the snapshot's LSN {seq} is past the last LSN a log gives"
        ));
    };
    if next < after {
        return Some(format!(
            "the log ends at LSN {}, before the snapshot's LSN {seq}",
            next.saturating_sub(1)
        ));
    }
    match first {
        Some(first) if first > after => Some(format!(
            "the log begins at LSN {first}, but replay from the snapshot of LSN {seq} needs LSN {}",
            after
        )),
        None if next > after => Some(format!(
            "the log holds no records and continues at LSN {next}, but replay from the snapshot of \
             LSN {seq} needs LSN {}",
            after
        )),
        _ => None,
    }
}

/// Recovers the state from the snapshot directory and the (already opened)
/// log. The caller, which also opened the log, fills in
/// [`RecoveryInfo::duration`].
pub(crate) fn recover(
    vfs: &Arc<dyn Vfs>,
    snapshot_dir: &Path,
    wal: &impl LogView,
) -> Result<(State, RecoveryInfo)> {
    let mut info = RecoveryInfo {
        warnings: wal.report().warnings.clone(),
        ..RecoveryInfo::default()
    };

    let mut snapshots = Vec::new();
    let mut removed_temp = false;
    // An offline check of a store that never got as far as creating its
    // snapshot directory sees no snapshots, as the open would.
    let kinds = match snapshot::list(&**vfs, snapshot_dir) {
        Err(Error::Io { source, .. })
            if wal.read_only() && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        kinds => kinds?,
    };
    for kind in kinds {
        match kind {
            FileKind::Snapshot(seq) => snapshots.push(seq),
            FileKind::Temp(seq) if wal.read_only() => {
                let path = snapshot_dir.join(snapshot::temp_name(seq));
                info.warnings.push(format!(
                    "would remove unfinished snapshot {}",
                    path.display()
                ));
            }
            FileKind::Temp(seq) => {
                let path = snapshot_dir.join(snapshot::temp_name(seq));
                vfs.remove_file(&path)
                    .map_err(|e| Error::io("remove unfinished snapshot", &path, e))?;
                let msg = format!("removed unfinished snapshot {}", path.display());
                tracing::warn!("{msg}");
                info.warnings.push(msg);
                removed_temp = true;
            }
        }
    }
    if removed_temp {
        vfs.sync_dir(snapshot_dir)
            .map_err(|e| Error::io("sync snapshot directory", snapshot_dir, e))?;
    }
    snapshots.sort_unstable_by(|a, b| b.cmp(a));

    // Snapshots found damaged so far, newest first: (seq, error).
    let mut damaged: Vec<(Lsn, String)> = Vec::new();
    let mut loaded = None;
    for &seq in &snapshots {
        if let Some(gap) = log_gap(wal, seq) {
            return Err(Error::Unrecoverable(unusable(&damaged, seq, &gap)));
        }
        let path = snapshot_dir.join(snapshot::file_name(seq));
        match snapshot::load(vfs, &path, seq) {
            Ok(l) => {
                loaded = Some((seq, l));
                break;
            }
            Err(e) => {
                let msg = format!("skipping snapshot {}: {e}", path.display());
                tracing::warn!("{msg}");
                info.warnings.push(msg);
                damaged.push((seq, e.to_string()));
            }
        }
    }
    let (seq, mut state) = match loaded {
        Some((seq, l)) => {
            info.snapshot_entries = l.entries;
            (seq, l.state)
        }
        None => {
            if let Some(gap) = log_gap(wal, 0) {
                return Err(Error::Unrecoverable(if damaged.is_empty() {
                    format!("no snapshot, and {gap}")
                } else {
                    unusable(&damaged, 0, &gap)
                }));
            }
            (0, State::default())
        }
    };
    info.snapshot_seq = seq;

    info.replayed = replay(wal, seq, &mut state)?;
    Ok((state, info))
}

fn unusable(damaged: &[(Lsn, String)], seq: Lsn, gap: &str) -> String {
    if damaged.is_empty() {
        return format!("snapshot of LSN {seq} cannot be used: {gap}");
    }
    let list: Vec<String> = damaged
        .iter()
        .map(|(s, e)| format!("snapshot of LSN {s} is damaged ({e})"))
        .collect();
    let older = if seq == 0 {
        "starting from an empty state".to_string()
    } else {
        format!("falling back to the snapshot of LSN {seq}")
    };
    format!("{}; {older} is impossible because {gap}", list.join("; "))
}

/// Applies every log record after `seq` to `state`; returns how many.
///
/// Records are read without copying ([`wal_core::WalIter::next_ref`]; each
/// checksum is still verified) and decoded into an [`Op`]; each one's key
/// and value go straight into the one allocation of its [`Entry`], and the
/// state applies them all at once, in LSN order, with
/// [`State::apply_batch`] (or [`State::apply_ascending_puts`]), which give
/// the state that [`State::apply`] on each gives. Segments are read and
/// decoded in parallel, one thread per core at most; the log checks that
/// each segment's records are exactly its LSN range. Nothing is applied if
/// any record is bad: open fails then anyway, with the first error in LSN
/// order.
fn replay(wal: &impl LogView, seq: Lsn, state: &mut State) -> Result<u64> {
    let parts = wal.iter_from(seq + 1)?.split_by_segment();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(parts.len());
    let decoded: Vec<Result<Decoded>> = if threads <= 1 {
        parts.into_iter().map(decode_part).collect()
    } else {
        decode_parallel(parts, threads)
    };
    let mut expected = seq + 1;
    let mut parts = Vec::with_capacity(decoded.len());
    for part in decoded {
        let part = part?;
        if part.records == 0 {
            continue;
        }
        if part.first != expected {
            return Err(Error::CorruptLogEntry {
                lsn: part.first,
                reason: format!("expected LSN {expected} next"),
            });
        }
        expected += part.records;
        parts.push(part);
    }
    let count = expected - 1 - seq;
    // The common case of replay from an empty state: puts of ascending
    // keys (each worker checked its segment while the entries were hot in
    // its cache; here only the boundaries). The entries are then the state
    // as is, and the generic batch (sort, merge, compare again) is skipped.
    let ascending = state.len() == 0
        && parts.iter().all(|p| p.ascending_puts)
        && parts
            .windows(2)
            .all(|w| match (w[0].entries.last(), w[1].entries.first()) {
                (Some(last), Some(first)) => last.key() < first.key(),
                _ => true,
            });
    if ascending {
        let bytes = parts.iter().map(|p| p.bytes).sum();
        let mut entries = Vec::with_capacity(count as usize);
        for part in parts {
            entries.extend(part.entries);
        }
        state.apply_ascending_puts(seq + count, entries, bytes);
    } else {
        let mut changes = Vec::with_capacity(count as usize);
        for part in parts {
            let mut deletes = part.deletes.into_iter().peekable();
            for (i, entry) in part.entries.into_iter().enumerate() {
                changes.push(if deletes.next_if_eq(&i).is_some() {
                    Change::Delete(entry)
                } else {
                    Change::Put(entry)
                });
            }
        }
        state.apply_batch(seq + count, changes);
    }
    Ok(count)
}

/// One segment's records, decoded.
struct Decoded {
    /// LSN of the first record (meaningless if there is none).
    first: Lsn,
    /// Records decoded: dense LSNs from `first`.
    records: u64,
    /// The records' changes in log order, each entry with its record's LSN
    /// as its seq: a put's key and value, or a delete's key with an empty
    /// value. A record is one change, a batch record several.
    entries: Vec<Entry>,
    /// Indices in `entries` of the deletes, ascending.
    deletes: Vec<usize>,
    /// No deletes, and keys strictly ascending.
    ascending_puts: bool,
    /// Key plus value bytes of all entries.
    bytes: u64,
}

fn decode_part(mut iter: WalIter) -> Result<Decoded> {
    let mut part = Decoded {
        first: 0,
        records: 0,
        entries: Vec::new(),
        deletes: Vec::new(),
        ascending_puts: true,
        bytes: 0,
    };
    let mut expected = None;
    while let Some(rec) = iter.next_ref() {
        let rec = rec?;
        let want = *expected.get_or_insert(rec.lsn);
        if part.records == 0 {
            part.first = rec.lsn;
        }
        if rec.lsn != want {
            return Err(Error::CorruptLogEntry {
                lsn: rec.lsn,
                reason: format!("expected LSN {want} next"),
            });
        }
        // The entry is kept past this record's buffer, so a delete's key is
        // copied too (as an entry with an empty value): one allocation per
        // change either way.
        // One change for most records (without a Vec of its own), several
        // for a batch.
        let (one, many) = record::decode_with(rec.lsn, rec.data, |op| -> Result<_> {
            Ok(match Op::of(op, rec.lsn)? {
                Op::Put(entry) => (Some(Change::Put(entry)), Vec::new()),
                Op::Delete(key) => (
                    Some(Change::Delete(Entry::new(key, &[], rec.lsn, None))),
                    Vec::new(),
                ),
                Op::Batch(changes) => (None, changes),
            })
        })??;
        for change in one.into_iter().chain(many) {
            let (entry, delete) = match change {
                Change::Put(entry) => (entry, false),
                Change::Delete(entry) => (entry, true),
            };
            if delete {
                part.deletes.push(part.entries.len());
                part.ascending_puts = false;
            } else if part.ascending_puts
                && let Some(last) = part.entries.last()
            {
                part.ascending_puts = last.key() < entry.key();
            }
            part.bytes += entry.payload_len();
            part.entries.push(entry);
        }
        part.records += 1;
        expected = Some(want + 1);
    }
    Ok(part)
}

/// [`decode_part`] on every part with `threads` threads; results in the
/// order of `parts`.
fn decode_parallel(parts: Vec<WalIter>, threads: usize) -> Vec<Result<Decoded>> {
    let count = parts.len();
    let queue = Mutex::new(parts.into_iter().enumerate());
    let results: Mutex<Vec<Option<Result<Decoded>>>> =
        Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    // Take the next part; a poisoned lock only means another
                    // worker panicked, and the scope re-raises that panic.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some((i, part)) = next else { break };
                    let decoded = decode_part(part);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(decoded);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::CorruptLogEntry {
                    lsn: 0,
                    reason: "a log segment was not decoded".into(),
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use wal_core::{SyncPolicy, WalOptions};

    use super::*;

    /// Key, value, seq, deadline.
    type Row = (Vec<u8>, Vec<u8>, Lsn, Option<u64>);

    fn dump(s: &State) -> Vec<Row> {
        s.range_from(b"", false)
            .map(|e| (e.key().to_vec(), e.value().to_vec(), e.seq(), e.deadline()))
            .collect()
    }

    /// Replay (parallel segments, both the ascending-puts shortcut and the
    /// generic batch) ends in the state that applying each record in LSN
    /// order gives, from an empty and from a non-empty state.
    #[test]
    fn replay_matches_applying_in_order() {
        let ascending: Vec<(bool, String)> = (0..60).map(|i| (true, format!("k{i:03}"))).collect();
        // Ascending inside each segment but not across them.
        let restarting: Vec<(bool, String)> = (0..60)
            .map(|i| (true, format!("k{:03}", (i * 7) % 60)))
            .collect();
        let mut mixed = ascending.clone();
        mixed.extend((0..60).step_by(3).map(|i| (false, format!("k{i:03}"))));
        mixed.extend((0..60).step_by(4).map(|i| (true, format!("k{i:03}"))));
        for ops in [ascending, restarting, mixed] {
            for initial in [0, 30] {
                let dir = tempfile::tempdir().unwrap();
                let options = WalOptions {
                    // A few records per segment, so that there are many.
                    segment_size: 400,
                    sync_policy: SyncPolicy::Never,
                    ..WalOptions::default()
                };
                let wal = Wal::open(dir.path(), options).unwrap();
                // The state of a snapshot of LSN 0 (a fresh log begins at 1).
                let snapshot = || {
                    State::from_sorted(
                        (0..initial)
                            .map(|i| {
                                Entry::new(format!("k{:03}", i * 2).as_bytes(), b"old", 0, None)
                            })
                            .collect(),
                    )
                };
                let mut expected = snapshot();
                let mut replayed = snapshot();
                for (n, (put, key)) in (1..).zip(&ops) {
                    let value = format!("v{n}");
                    // Every fifth put expires, so deadlines replay too.
                    let deadline = (n % 5 == 0).then_some(n * 1_000);
                    let mut buf = if *put {
                        let entry = Entry::new(key.as_bytes(), value.as_bytes(), n, deadline);
                        expected.apply(Op::Put(entry), n);
                        record::encode_put(key.as_bytes(), value.as_bytes(), deadline)
                    } else {
                        expected.apply(Op::Delete(key.as_bytes()), n);
                        record::encode_delete(key.as_bytes())
                    };
                    let start = record::fill_seq(&mut buf, n);
                    assert_eq!(wal.append(&buf[start..]).unwrap(), n);
                }
                assert!(wal.iter_from(1).unwrap().split_by_segment().len() > 3);
                assert_eq!(replay(&wal, 0, &mut replayed).unwrap(), ops.len() as u64);
                assert_eq!(dump(&replayed), dump(&expected));
                assert_eq!(replayed.bytes(), expected.bytes());
                assert_eq!(replayed.expiring(), expected.expiring());
                assert_eq!(replayed.last_applied(), ops.len() as u64);
            }
        }
    }
}
