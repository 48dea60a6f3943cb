//! Recovery allocates for the bytes a segment holds, never for the lengths
//! its record headers claim: a 64 KiB segment whose record says it is
//! 1 GiB long costs about 64 KiB (plus the reader's fixed 64 KiB buffer
//! and 1 MiB checksum chunk), not 1 GiB.
//!
//! The whole test binary counts its heap through a global allocator; each
//! test measures the peak above what was live when it started. The tests
//! take a lock so that one's allocations do not count in another's peak.

use std::path::Path;

use wal_core::bench_support::encode_record;
use wal_core::{RecoveryMode, SyncPolicy, Wal, WalOptions};

#[global_allocator]
static ALLOCATOR: heap_peak::Counting = heap_peak::Counting;

const SEGMENT_HEADER_LEN: usize = 32;

fn segment_header(first_lsn: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(SEGMENT_HEADER_LEN);
    h.extend_from_slice(b"WALCORE\0");
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&first_lsn.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

fn options(mode: RecoveryMode, max_record_size: u32) -> WalOptions {
    WalOptions {
        segment_size: 256 << 10,
        sync_policy: SyncPolicy::Never,
        max_record_size,
        recovery_mode: mode,
    }
}

/// A segment of a few intact records, then a record header claiming
/// `claimed` bytes, then `filler` bytes of non-zero garbage.
fn write_segment(dir: &Path, claimed: u32, filler: usize) {
    let mut bytes = segment_header(1);
    for lsn in 1..=3 {
        encode_record(&mut bytes, lsn, b"intact");
    }
    let mut header = [0u8; 20];
    header[0..4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    header[4..8].copy_from_slice(&claimed.to_le_bytes());
    header[8..16].copy_from_slice(&4u64.to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend((0..filler).map(|i| (i % 251) as u8 | 1));
    std::fs::write(dir.join(format!("{:020}.wal", 1)), &bytes).unwrap();
}

const FILE: usize = 64 << 10;

/// The most an open of one such segment may hold: the file's bytes (the
/// tail scan reads them), the reader's 64 KiB buffer, a 1 MiB checksum
/// chunk, and room for the index and the report.
const BOUND: usize = FILE + (64 << 10) + (1 << 20) + (256 << 10);

#[test]
fn a_record_claiming_the_format_limit_is_not_allocated() {
    let _serial = heap_peak::serial();
    for mode in [
        RecoveryMode::Absolute,
        RecoveryMode::Strict,
        RecoveryMode::Tolerant,
    ] {
        let dir = tempfile::tempdir().unwrap();
        // Within the limit (1 GiB, the format's most), but past the file.
        write_segment(dir.path(), 1 << 30, FILE);
        let mut outcome = None;
        let peak = heap_peak::peak_during(|| {
            outcome = Some(Wal::open(dir.path(), options(mode, 1 << 30)).map(|w| w.next_lsn()));
        });
        assert!(
            peak < BOUND,
            "{mode}: open held {peak} bytes at once (bound {BOUND})"
        );
        match outcome {
            Some(Ok(next)) => assert_eq!(next, 4, "{mode}: the intact records stay"),
            Some(Err(e)) => assert!(!e.to_string().is_empty()),
            None => unreachable!(),
        }
    }
}

#[test]
fn a_record_claiming_more_than_the_limit_is_not_allocated() {
    let _serial = heap_peak::serial();
    // Over the configured limit: recovery checks whether it is intact (a
    // log written under a larger limit) in 1 MiB chunks, only when the
    // file is long enough to hold it.
    for claimed in [(1 << 20) + 1, 900 << 20, u32::MAX] {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), claimed, FILE);
        let peak = heap_peak::peak_during(|| {
            let _ = Wal::open(dir.path(), options(RecoveryMode::Strict, 1 << 20));
            let _ = Wal::open_read_only(dir.path(), options(RecoveryMode::Strict, 1 << 20));
        });
        assert!(
            peak < BOUND,
            "claimed {claimed}: open held {peak} bytes at once"
        );
    }
}

#[test]
fn a_damaged_record_inside_a_long_file_costs_the_file_not_the_claim() {
    let _serial = heap_peak::serial();
    // The claim fits in the file (so the reader may read it), and is
    // within the limit: what is read is what the file holds.
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), (FILE / 2) as u32, FILE);
    let peak = heap_peak::peak_during(|| {
        let _ = Wal::open(dir.path(), options(RecoveryMode::Tolerant, 1 << 30));
    });
    assert!(peak < BOUND + FILE, "open held {peak} bytes at once");
}
