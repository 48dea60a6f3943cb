//! kv-store hot paths: the write path without fsync (encode, commit thread,
//! apply) and recovery (replay of the log; loading a snapshot).
//!
//! `cargo bench -p kv-store`

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kv_store::{KeyValueStore, StoreOptions, SyncPolicy, WalOptions};

const ENTRIES: u64 = 100_000;

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        },
        checkpoint_after: None,
        ..StoreOptions::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:012}").into_bytes()
}

fn fill(dir: &Path, n: u64) {
    let store = KeyValueStore::open(dir, options()).unwrap();
    let pending: Vec<_> = (0..n)
        .map(|i| store.submit_put(&key(i), &[7u8; 100]).unwrap())
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    store.close().unwrap();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    const BATCH: u64 = 10_000;
    g.throughput(Throughput::Elements(BATCH));
    let dir = tempfile::tempdir().unwrap();
    let store = KeyValueStore::open(dir.path(), options()).unwrap();
    let mut next = 0u64;
    // 10k pipelined puts of 100-byte values, no fsync: encoding in the
    // caller, one commit thread appending and applying in batches.
    g.bench_function("put_10k_pipelined_no_sync", |b| {
        b.iter(|| {
            let pending: Vec<_> = (next..next + BATCH)
                .map(|i| store.submit_put(&key(i % 200_000), &[1u8; 100]).unwrap())
                .collect();
            next += BATCH;
            for p in pending {
                black_box(p.wait().unwrap());
            }
        })
    });
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ENTRIES));

    let wal_only = tempfile::tempdir().unwrap();
    fill(wal_only.path(), ENTRIES);
    g.bench_function("open_100k_from_log", |b| {
        b.iter_batched(
            || (),
            |()| {
                let store = KeyValueStore::open(wal_only.path(), options()).unwrap();
                assert_eq!(store.recovery().replayed, ENTRIES);
                store
            },
            BatchSize::PerIteration,
        )
    });

    let snap = tempfile::tempdir().unwrap();
    fill(snap.path(), ENTRIES);
    KeyValueStore::open(snap.path(), options())
        .unwrap()
        .checkpoint()
        .unwrap();
    g.bench_function("open_100k_from_snapshot", |b| {
        b.iter_batched(
            || (),
            |()| {
                let store = KeyValueStore::open(snap.path(), options()).unwrap();
                assert_eq!(store.recovery().snapshot_entries, ENTRIES);
                store
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, apply, recovery);
criterion_main!(benches);
