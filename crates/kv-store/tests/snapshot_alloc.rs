//! A snapshot's header is not trusted until the file's checksum agrees: a
//! header claiming a huge entry count (with a valid header checksum) must
//! not make recovery reserve memory for that many entries, only for what
//! the file's bytes can hold.
//!
//! The test binary counts its heap through a global allocator.

use std::path::{Path, PathBuf};

use kv_proto::SnapshotHeader;
use kv_store::{KeyValueStore, StoreOptions};
use prost::Message;

#[global_allocator]
static ALLOCATOR: heap_peak::Counting = heap_peak::Counting;

/// A stopped store with one snapshot of a few small keys; returns the
/// snapshot's path.
fn store_with_snapshot(dir: &Path) -> PathBuf {
    let store = KeyValueStore::open(dir, StoreOptions::default()).unwrap();
    for i in 0..10u32 {
        store.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    store.checkpoint().unwrap();
    store.close().unwrap();
    drop(store);
    let snapshots = dir.join("snapshots");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert_eq!(files.len(), 1);
    files.pop().unwrap()
}

/// Rewrites the snapshot header at `path` with `edit` applied, with a
/// valid header checksum (the layout of `crates/kv-store/src/snapshot.rs`:
/// magic, length, crc32 of length and message, message, zero padding to
/// 64 bytes). The file checksum in the trailer then no longer matches.
fn rewrite_header(path: &Path, edit: impl FnOnce(&mut SnapshotHeader)) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let mut header = SnapshotHeader::decode(&bytes[16..16 + len]).unwrap();
    edit(&mut header);
    let encoded = header.encode_to_vec();
    assert!(16 + encoded.len() <= 64);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(encoded.len() as u32).to_le_bytes());
    crc.update(&encoded);
    bytes[8..12].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
    bytes[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    bytes[16..64].fill(0);
    bytes[16..16 + encoded.len()].copy_from_slice(&encoded);
    std::fs::write(path, &bytes).unwrap();
}

#[test]
fn a_lying_entry_count_reserves_nothing_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = store_with_snapshot(dir.path());
    rewrite_header(&snapshot, |h| h.entry_count = u64::MAX);
    let _serial = heap_peak::serial();
    let mut opened = None;
    let peak = heap_peak::peak_during(|| {
        opened = Some(KeyValueStore::open(dir.path(), StoreOptions::default()));
    });
    let opened = opened.expect("the open ran");
    // The damaged snapshot is skipped with a warning; the log no longer
    // holds what it covered, so the open refuses, with a typed error.
    match opened {
        Ok(_) => panic!("a store whose only snapshot is damaged opened"),
        Err(e) => assert!(e.to_string().contains("snapshot"), "{e}"),
    }
    // Two segments' worth of preallocated log are read in 1 MiB chunks;
    // 16 entries of 16 bytes are what the file holds. 256 MiB (2^24
    // entries) is what the count once reserved.
    assert!(peak < 8 << 20, "open held {peak} bytes at once");
}
