//! Recovery over random segment bytes: a log written by the real `Wal`,
//! then damaged at random (bytes overwritten, files cut, extended, removed,
//! renamed, foreign files with segment names, records crafted at the edge
//! of the LSN range), then opened in every recovery mode and read-only.
//!
//! Whatever the bytes, open returns `Ok` or a typed error, never panics;
//! a tolerant open fails only on what no mode may cut (an intact record
//! this build cannot take, another format version); every record a
//! recovered log yields is one that was written under its LSN, and the
//! log takes (or refuses with `LsnExhausted`) the next append.
//!
//! Cases: `KV_FUZZ_CASES` (default 256 per property), so a longer run is
//! `KV_FUZZ_CASES=5000 cargo test -p wal-core --features test-util --test fuzz_recovery`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wal_core::bench_support::encode_record;
use wal_core::sim::SimFs;
use wal_core::{Error, Lsn, RecoveryMode, SyncPolicy, Vfs, Wal, WalOptions};

const DIR: &str = "/db/wal";

/// Cases per property: `KV_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("KV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options(mode: RecoveryMode, max_record_size: u32) -> WalOptions {
    WalOptions {
        // A few records a segment, so that a short log has several.
        segment_size: 256,
        sync_policy: SyncPolicy::Never,
        max_record_size,
        recovery_mode: mode,
    }
}

/// Where the log's LSNs start: the usual 1, anywhere, or so close to the
/// end of the range that the workload runs out of LSNs.
fn first_lsn() -> impl Strategy<Value = Lsn> {
    prop_oneof![
        Just(1u64),
        1u64..1 << 40,
        (1u64..12).prop_map(|k| Lsn::MAX - k),
    ]
}

/// One change to the log's files.
#[derive(Debug, Clone)]
enum Damage {
    /// Overwrite bytes of the `file`-th segment (modulo how many there are)
    /// from a position (a fraction of its length, in 1/1024ths).
    Overwrite {
        file: usize,
        at: u16,
        bytes: Vec<u8>,
    },
    /// Flip one bit.
    Flip { file: usize, at: u16, bit: u8 },
    /// Cut the file to a fraction of its length.
    Cut { file: usize, at: u16 },
    /// Append bytes to the file.
    Extend { file: usize, bytes: Vec<u8> },
    /// Delete the file.
    Remove { file: usize },
    /// Give the file another segment name.
    Rename { file: usize, lsn: Lsn },
    /// A new file with a segment name and arbitrary content.
    Foreign { lsn: Lsn, bytes: Vec<u8> },
    /// A new segment with a valid header for `lsn` and valid records from
    /// `record_lsn` on (crafted: they count as written).
    Crafted {
        lsn: Lsn,
        record_lsn: Lsn,
        records: u8,
    },
}

fn any_lsn() -> impl Strategy<Value = Lsn> {
    prop_oneof![
        Just(0u64),
        Just(Lsn::MAX),
        Just(Lsn::MAX - 1),
        1u64..64,
        any::<u64>(),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = prop::collection::vec(any::<u8>(), 1..48);
    prop_oneof![
        (any::<usize>(), 0u16..1024, bytes.clone())
            .prop_map(|(file, at, bytes)| Damage::Overwrite { file, at, bytes }),
        (any::<usize>(), 0u16..1024, 0u8..8).prop_map(|(file, at, bit)| Damage::Flip {
            file,
            at,
            bit
        }),
        (any::<usize>(), 0u16..1024).prop_map(|(file, at)| Damage::Cut { file, at }),
        (any::<usize>(), bytes.clone()).prop_map(|(file, bytes)| Damage::Extend { file, bytes }),
        any::<usize>().prop_map(|file| Damage::Remove { file }),
        (any::<usize>(), any_lsn()).prop_map(|(file, lsn)| Damage::Rename { file, lsn }),
        (any_lsn(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(lsn, bytes)| Damage::Foreign { lsn, bytes }),
        (any_lsn(), any_lsn(), 0u8..4).prop_map(|(lsn, record_lsn, records)| {
            Damage::Crafted {
                lsn,
                record_lsn,
                records,
            }
        }),
    ]
}

fn segment_name(lsn: Lsn) -> PathBuf {
    Path::new(DIR).join(format!("{lsn:020}.wal"))
}

/// The log's segment files, in name order.
fn segment_files(fs: &SimFs) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs
        .list_dir(Path::new(DIR))
        .expect("list the log directory")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names.into_iter().map(|n| Path::new(DIR).join(n)).collect()
}

fn write_file(fs: &SimFs, path: &Path, bytes: &[u8]) {
    if fs.open_read(path).is_ok() {
        fs.remove_file(path).expect("remove");
    }
    let file = fs.create_new(path).expect("create");
    file.write_all_at(bytes, 0).expect("write");
    file.sync_data().expect("sync");
    fs.sync_dir(Path::new(DIR)).expect("sync dir");
}

/// The crafted segment of [`Damage::Crafted`]: the header as wal-core
/// writes it (magic, version 1, first LSN, crc32 of bytes 0..28), then
/// records; the payloads are recorded in `written`.
fn crafted_segment(
    lsn: Lsn,
    record_lsn: Lsn,
    records: u8,
    written: &mut BTreeMap<Lsn, Vec<Vec<u8>>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"WALCORE\0");
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    for k in 0..u64::from(records) {
        let Some(r) = record_lsn.checked_add(k) else {
            break;
        };
        let payload = format!("crafted-{r}").into_bytes();
        encode_record(&mut out, r, &payload);
        written.entry(r).or_default().push(payload);
    }
    out
}

fn apply(fs: &SimFs, damage: &Damage, written: &mut BTreeMap<Lsn, Vec<Vec<u8>>>) {
    let files = segment_files(fs);
    let pick = |i: usize| (!files.is_empty()).then(|| files[i % files.len()].clone());
    let at = |bytes: &[u8], frac: u16| bytes.len() * usize::from(frac) / 1024;
    match damage {
        Damage::Overwrite {
            file,
            at: frac,
            bytes,
        } => {
            if let Some(path) = pick(*file) {
                let mut content = fs.read_file(&path).expect("read");
                let from = at(&content, *frac);
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = content.get_mut(from + i) {
                        *slot = *b;
                    }
                }
                write_file(fs, &path, &content);
            }
        }
        Damage::Flip {
            file,
            at: frac,
            bit,
        } => {
            if let Some(path) = pick(*file) {
                let mut content = fs.read_file(&path).expect("read");
                let i = at(&content, *frac);
                if let Some(b) = content.get_mut(i) {
                    *b ^= 1 << bit;
                }
                write_file(fs, &path, &content);
            }
        }
        Damage::Cut { file, at: frac } => {
            if let Some(path) = pick(*file) {
                let content = fs.read_file(&path).expect("read");
                let len = at(&content, *frac);
                write_file(fs, &path, &content[..len]);
            }
        }
        Damage::Extend { file, bytes } => {
            if let Some(path) = pick(*file) {
                let mut content = fs.read_file(&path).expect("read");
                content.extend_from_slice(bytes);
                write_file(fs, &path, &content);
            }
        }
        Damage::Remove { file } => {
            if let Some(path) = pick(*file) {
                fs.remove_file(&path).expect("remove");
                fs.sync_dir(Path::new(DIR)).expect("sync dir");
            }
        }
        Damage::Rename { file, lsn } => {
            if let Some(path) = pick(*file) {
                let content = fs.read_file(&path).expect("read");
                fs.remove_file(&path).expect("remove");
                write_file(fs, &segment_name(*lsn), &content);
            }
        }
        Damage::Foreign { lsn, bytes } => write_file(fs, &segment_name(*lsn), bytes),
        Damage::Crafted {
            lsn,
            record_lsn,
            records,
        } => {
            let content = crafted_segment(*lsn, *record_lsn, *records, written);
            write_file(fs, &segment_name(*lsn), &content);
        }
    }
}

/// Writes a log from `first` on: `sizes` records (batches of `batch`),
/// rotating on its own, and returns what it wrote under each LSN.
fn write_log(fs: &SimFs, first: Lsn, sizes: &[usize], batch: usize) -> BTreeMap<Lsn, Vec<Vec<u8>>> {
    let wal = Wal::create_at_with_vfs(DIR, options(RecoveryMode::Strict, 1024), fs.shared(), first)
        .expect("create the log");
    let mut written: BTreeMap<Lsn, Vec<Vec<u8>>> = BTreeMap::new();
    for chunk in sizes.chunks(batch.max(1)) {
        let payloads: Vec<Vec<u8>> = chunk
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![(i as u8).wrapping_add(n as u8); n])
            .collect();
        match wal.append_batch(&payloads) {
            Ok(lsns) => {
                for (lsn, p) in lsns.zip(payloads) {
                    written.entry(lsn).or_default().push(p);
                }
            }
            Err(Error::LsnExhausted { next, records }) => {
                assert_eq!(records, payloads.len());
                assert!(next.checked_add(records as u64).is_none());
                break;
            }
            Err(e) => panic!("append failed: {e}"),
        }
    }
    wal.sync().expect("sync");
    written
}

/// The errors a tolerant open may still return: what no mode cuts.
fn uncuttable(e: &Error) -> bool {
    matches!(
        e,
        Error::RecordExceedsLimit { .. }
            | Error::UnknownRecordFlags { .. }
            | Error::UnsupportedVersion { .. }
    )
}

/// Checks that every record read is one that was written under its LSN,
/// and that LSNs are dense from `first`.
fn check_records(
    records: impl Iterator<Item = wal_core::Result<wal_core::Record>>,
    first: Option<Lsn>,
    next: Lsn,
    written: &BTreeMap<Lsn, Vec<Vec<u8>>>,
) -> Result<(), TestCaseError> {
    let mut expected = first;
    let mut count = 0u64;
    for record in records {
        // A damaged segment a reader meets is an error, not a panic; the
        // open already vouched for the records, so there should be none.
        let record = record.map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
        prop_assert_eq!(Some(record.lsn), expected, "LSNs are dense");
        let ok = written
            .get(&record.lsn)
            .is_some_and(|ps| ps.contains(&record.data));
        prop_assert!(
            ok,
            "record {} ({} bytes) was never written under that LSN",
            record.lsn,
            record.data.len()
        );
        expected = record.lsn.checked_add(1);
        count += 1;
    }
    if let Some(first) = first {
        prop_assert_eq!(first + count, next, "the records end where the next LSN is");
    }
    Ok(())
}

fn check_open(
    fs: &SimFs,
    mode: RecoveryMode,
    max_record_size: u32,
    written: &mut BTreeMap<Lsn, Vec<Vec<u8>>>,
) -> Result<(), TestCaseError> {
    let options = options(mode, max_record_size);
    // Read-only first: it changes nothing, so the open after it sees the
    // same bytes, and must agree.
    let read_only = Wal::open_read_only_with_vfs(DIR, options.clone(), fs.shared());
    let opened = Wal::open_with_vfs(DIR, options, fs.shared());
    prop_assert_eq!(
        read_only.is_ok(),
        opened.is_ok(),
        "read-only open and open agree ({:?} / {:?})",
        read_only.as_ref().err().map(ToString::to_string),
        opened.as_ref().err().map(ToString::to_string)
    );
    let wal = match opened {
        Ok(wal) => wal,
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            if mode == RecoveryMode::Tolerant {
                prop_assert!(uncuttable(&e), "a tolerant open failed: {}", e);
            }
            return Ok(());
        }
    };
    if let Ok(ro) = &read_only {
        prop_assert_eq!(ro.next_lsn(), wal.next_lsn(), "read-only agrees with open");
        check_records(ro.iter_from(0), ro.first_lsn(), ro.next_lsn(), written)?;
    }
    let iter = wal
        .iter_from(0)
        .map_err(|e| TestCaseError::fail(format!("iter_from failed: {e}")))?;
    check_records(iter, wal.first_lsn(), wal.next_lsn(), written)?;
    if let Some(last) = wal.last_lsn() {
        let one = wal
            .read(last)
            .map_err(|e| TestCaseError::fail(format!("read failed: {e}")))?;
        prop_assert_eq!(one.map(|r| r.lsn), Some(last));
    }
    let next = wal.next_lsn();
    // Written in the page cache: the next mode's open sees it.
    written
        .entry(next)
        .or_default()
        .push(b"after recovery".to_vec());
    match wal.append(b"after recovery") {
        Ok(lsn) => prop_assert_eq!(lsn, next),
        Err(Error::LsnExhausted { next: at, .. }) => {
            prop_assert_eq!(at, next);
            prop_assert_eq!(next, Lsn::MAX);
        }
        Err(e) => return Err(TestCaseError::fail(format!("append after open: {e}"))),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn recovery_of_damaged_segments_never_panics(
        first in first_lsn(),
        sizes in prop::collection::vec(0usize..90, 0..24),
        batch in 1usize..4,
        damages in prop::collection::vec(damage(), 1..4),
        small_limit in any::<bool>(),
    ) {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new(DIR)).expect("mkdir");
        let mut written = write_log(&fs, first, &sizes, batch);
        for d in &damages {
            apply(&fs, d, &mut written);
        }
        // A smaller limit than the log was written with: intact records
        // over it are a configuration error, never cut.
        let max_record_size = if small_limit { 40 } else { 1024 };
        for mode in [RecoveryMode::Absolute, RecoveryMode::Strict, RecoveryMode::Tolerant] {
            check_open(&fs, mode, max_record_size, &mut written)?;
        }
    }

    /// Arbitrary bytes under arbitrary segment names, no log written first.
    #[test]
    fn recovery_of_random_files_never_panics(
        files in prop::collection::vec((any_lsn(), prop::collection::vec(any::<u8>(), 0..200)), 1..4),
    ) {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new(DIR)).expect("mkdir");
        for (lsn, bytes) in &files {
            write_file(&fs, &segment_name(*lsn), bytes);
        }
        let mut written = BTreeMap::new();
        for mode in [RecoveryMode::Absolute, RecoveryMode::Strict, RecoveryMode::Tolerant] {
            check_open(&fs, mode, 1024, &mut written)?;
        }
    }
}

/// A log at the very end of the LSN range: the last record it can take
/// gets `Lsn::MAX - 1`, the next append is refused with a typed error, and
/// both survive a reopen.
#[test]
fn the_last_lsn_is_refused_with_a_typed_error() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DIR)).expect("mkdir");
    let options = options(RecoveryMode::Strict, 1024);
    let wal = Wal::create_at_with_vfs(DIR, options.clone(), fs.shared(), Lsn::MAX - 2).unwrap();
    assert_eq!(wal.append(b"a").unwrap(), Lsn::MAX - 2);
    match wal.append_batch(&[b"b", b"c"]) {
        Err(Error::LsnExhausted { next, records: 2 }) => assert_eq!(next, Lsn::MAX - 1),
        other => panic!("expected LsnExhausted, got {other:?}"),
    }
    assert_eq!(wal.append(b"b").unwrap(), Lsn::MAX - 1);
    let err = wal.append(b"c").unwrap_err();
    assert!(
        matches!(
            err,
            Error::LsnExhausted {
                next: Lsn::MAX,
                records: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("LSN"), "{err}");
    // Nothing was queued: the log is not poisoned, and it syncs.
    wal.sync().unwrap();
    wal.truncate_after(Lsn::MAX).unwrap();
    drop(wal);

    let wal = Wal::open_with_vfs(DIR, options, fs.shared()).unwrap();
    assert_eq!(wal.last_lsn(), Some(Lsn::MAX - 1));
    assert_eq!(wal.next_lsn(), Lsn::MAX);
    assert!(matches!(wal.append(b"c"), Err(Error::LsnExhausted { .. })));
}

/// A segment holding a record with LSN `u64::MAX` (no append gives it)
/// is damage: refused by a strict open, cut by a tolerant one, and the
/// log goes on without reusing an LSN.
#[test]
fn a_record_carrying_the_largest_lsn_is_damage() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DIR)).expect("mkdir");
    let mut written = BTreeMap::new();
    let content = crafted_segment(Lsn::MAX, Lsn::MAX, 1, &mut written);
    write_file(&fs, &segment_name(Lsn::MAX), &content);

    match Wal::open_with_vfs(DIR, options(RecoveryMode::Strict, 1024), fs.shared()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("LSN"), "{reason}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let wal = Wal::open_with_vfs(DIR, options(RecoveryMode::Tolerant, 1024), fs.shared()).unwrap();
    assert_eq!(wal.last_lsn(), None);
    assert_eq!(wal.next_lsn(), Lsn::MAX);
    assert!(matches!(wal.append(b"x"), Err(Error::LsnExhausted { .. })));
}
