//! Recovery of a store over random damage to its files: segments and
//! snapshots with bytes overwritten, cut or extended, snapshots renamed to
//! other LSNs (the edge of the range included). Open returns `Ok` or a
//! typed error, never panics; an opened store holds only values that were
//! written under their keys, and takes writes. Every third write is a
//! transaction record (two puts, one with a deadline), so damaged TXN
//! records and snapshot entries with deadlines are in the mix.
//!
//! Cases: `KV_FUZZ_CASES` (default 64).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kv_store::{KeyValueStore, Lsn, StoreOptions, SyncPolicy, WalOptions};
use proptest::prelude::*;
use wal_core::Vfs;
use wal_core::sim::SimFs;

/// Cases per property: `KV_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("KV_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            segment_size: 512,
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        },
        max_key_size: 32,
        max_value_size: 1024,
        checkpoint_after: None,
        checkpoint_write_rate: None,
        expiry_sweep_rate: StoreOptions::default().expiry_sweep_rate,
    }
}

#[derive(Debug, Clone)]
enum Damage {
    Overwrite {
        file: usize,
        at: u16,
        bytes: Vec<u8>,
    },
    Cut {
        file: usize,
        at: u16,
    },
    Extend {
        file: usize,
        bytes: Vec<u8>,
    },
    RenameSnapshot {
        file: usize,
        lsn: Lsn,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = prop::collection::vec(any::<u8>(), 1..32);
    prop_oneof![
        (any::<usize>(), 0u16..1024, bytes.clone())
            .prop_map(|(file, at, bytes)| Damage::Overwrite { file, at, bytes }),
        (any::<usize>(), 0u16..1024).prop_map(|(file, at)| Damage::Cut { file, at }),
        (any::<usize>(), bytes).prop_map(|(file, bytes)| Damage::Extend { file, bytes }),
        (
            any::<usize>(),
            prop_oneof![Just(0u64), Just(Lsn::MAX), Just(Lsn::MAX - 1), 1u64..100]
        )
            .prop_map(|(file, lsn)| Damage::RenameSnapshot { file, lsn }),
    ]
}

fn files(fs: &SimFs, dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs
        .list_dir(Path::new(dir))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names.into_iter().map(|n| Path::new(dir).join(n)).collect()
}

fn write_file(fs: &SimFs, path: &Path, bytes: &[u8]) {
    if fs.open_read(path).is_ok() {
        fs.remove_file(path).unwrap();
    }
    let file = fs.create_new(path).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file.sync_data().unwrap();
    fs.sync_dir(path.parent().unwrap()).unwrap();
}

fn apply(fs: &SimFs, damage: &Damage) {
    let mut all = files(fs, "/db/wal", ".wal");
    let snapshots = files(fs, "/db/snapshots", ".snap");
    all.extend(snapshots.iter().cloned());
    let pick = |v: &[PathBuf], i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
    let at = |len: usize, frac: u16| len * usize::from(frac) / 1024;
    match damage {
        Damage::Overwrite {
            file,
            at: frac,
            bytes,
        } => {
            if let Some(path) = pick(&all, *file) {
                let mut content = fs.read_file(&path).unwrap();
                let from = at(content.len(), *frac);
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = content.get_mut(from + i) {
                        *slot = *b;
                    }
                }
                write_file(fs, &path, &content);
            }
        }
        Damage::Cut { file, at: frac } => {
            if let Some(path) = pick(&all, *file) {
                let content = fs.read_file(&path).unwrap();
                write_file(fs, &path, &content[..at(content.len(), *frac)]);
            }
        }
        Damage::Extend { file, bytes } => {
            if let Some(path) = pick(&all, *file) {
                let mut content = fs.read_file(&path).unwrap();
                content.extend_from_slice(bytes);
                write_file(fs, &path, &content);
            }
        }
        Damage::RenameSnapshot { file, lsn } => {
            if let Some(path) = pick(&snapshots, *file) {
                let content = fs.read_file(&path).unwrap();
                fs.remove_file(&path).unwrap();
                let to = Path::new("/db/snapshots").join(format!("snapshot-{lsn:020}.snap"));
                write_file(fs, &to, &content);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn recovery_of_damaged_files_never_panics(
        writes in prop::collection::vec((0u8..12, 0usize..60), 1..40),
        checkpoint_at in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let fs = SimFs::new();
        let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
        let checkpoints: BTreeSet<usize> =
            checkpoint_at.iter().map(|i| i.index(writes.len())).collect();
        let mut written: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for (i, (k, n)) in writes.iter().enumerate() {
            let key = format!("key{k}").into_bytes();
            let value = vec![i as u8; *n];
            if i % 3 == 0 {
                let twin = format!("twin{k}").into_bytes();
                let later = kv_store::now_ms() + 3_600_000;
                store
                    .txn(kv_store::Txn {
                        conditions: Vec::new(),
                        writes: vec![
                            kv_store::Write::Put {
                                key: key.clone(),
                                value: value.clone(),
                                expiry: kv_store::Expiry::At(later),
                            },
                            kv_store::Write::Put {
                                key: twin.clone(),
                                value: value.clone(),
                                expiry: kv_store::Expiry::Clear,
                            },
                        ],
                    })
                    .unwrap();
                written.entry(twin).or_default().insert(value.clone());
            } else {
                store.put(&key, &value).unwrap();
            }
            written.entry(key).or_default().insert(value);
            if checkpoints.contains(&i) {
                store.checkpoint().unwrap();
            }
        }
        store.close().unwrap();
        drop(store);
        for d in &damages {
            apply(&fs, d);
        }
        for mode in [kv_store::RecoveryMode::Strict, kv_store::RecoveryMode::Tolerant] {
            let mut opts = options();
            opts.wal.recovery_mode = mode;
            match KeyValueStore::open_with_vfs("/db", opts, fs.shared()) {
                Err(e) => prop_assert!(!e.to_string().is_empty()),
                Ok(store) => {
                    for key in store.keys(b"", 0).keys {
                        let value = store.get(&key).unwrap_or_default();
                        let ok = written.get(&key).is_some_and(|vs| vs.contains(&value));
                        prop_assert!(ok, "{mode}: a value never written under its key");
                    }
                    let lsn = store.put(b"after", b"x");
                    prop_assert!(lsn.is_ok(), "{mode}: a write after recovery failed");
                    written.entry(b"after".to_vec()).or_default().insert(b"x".to_vec());
                    store.close().unwrap();
                }
            }
        }
    }
}

/// A snapshot file named for the last LSN, or a backup whose header says
/// it covers it: no log can go on after it, so open and restore refuse
/// with a typed error (they used to overflow computing the LSN after it).
#[test]
fn a_snapshot_at_the_last_lsn_is_refused() {
    let fs = SimFs::new();
    let store = KeyValueStore::open_with_vfs("/db", options(), fs.shared()).unwrap();
    store.put(b"k", b"v").unwrap();
    store.checkpoint().unwrap();
    store.close().unwrap();
    drop(store);
    let snapshot = files(&fs, "/db/snapshots", ".snap").pop().unwrap();
    let content = fs.read_file(&snapshot).unwrap();
    let max = Path::new("/db/snapshots").join(format!("snapshot-{:020}.snap", Lsn::MAX));
    write_file(&fs, &max, &content);
    match KeyValueStore::open_with_vfs("/db", options(), fs.shared()) {
        Err(kv_store::Error::Unrecoverable(reason)) => {
            assert!(reason.contains(&Lsn::MAX.to_string()), "{reason}")
        }
        Err(e) => panic!("expected Unrecoverable, got {e}"),
        Ok(_) => panic!("a store with a snapshot at LSN u64::MAX opened"),
    }
}

#[test]
fn a_backup_covering_the_last_lsn_is_refused_by_restore() {
    use kv_proto::SnapshotHeader;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path().join("src"), StoreOptions::default()).unwrap();
    store.put(b"k", b"v").unwrap();
    store.checkpoint().unwrap();
    store.close().unwrap();
    drop(store);
    let snapshots = dir.path().join("src/snapshots");
    let snapshot = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    // The header rewritten with seq u64::MAX and a valid header checksum
    // (layout: magic, length, crc32 of length and message, message).
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let mut header = SnapshotHeader::decode(&bytes[16..16 + len]).unwrap();
    header.seq = Lsn::MAX;
    let encoded = header.encode_to_vec();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&(encoded.len() as u32).to_le_bytes());
    crc.update(&encoded);
    bytes[8..12].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
    bytes[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    bytes[16..64].fill(0);
    bytes[16..16 + encoded.len()].copy_from_slice(&encoded);
    let backup = dir.path().join("backup.snap");
    std::fs::write(&backup, &bytes).unwrap();
    match kv_store::inspect::restore(&backup, &dir.path().join("restored")) {
        Err(kv_store::Error::CorruptSnapshot { reason, .. }) => {
            assert!(reason.contains("LSN"), "{reason}")
        }
        Err(e) => panic!("expected CorruptSnapshot, got {e}"),
        Ok(_) => panic!("a backup at LSN u64::MAX was restored"),
    }
}
