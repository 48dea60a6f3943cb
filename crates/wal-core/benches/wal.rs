//! Benchmarks: record encode/decode, append under `SyncPolicy::Never`
//! (the log's own overhead, without the disk's fdatasync latency), and the
//! consensus-log operations: `read` and `read_range` through the index,
//! and `truncate_after` (with `SyncPolicy::Always`: it syncs what it cuts).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wal_core::bench_support::{decode_record, encode_record};
use wal_core::{SyncPolicy, Wal, WalOptions};

const SIZES: [usize; 3] = [16, 128, 4096];

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in SIZES {
        let payload = vec![0x42u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, payload| {
            let mut buf = Vec::with_capacity(size + 64);
            b.iter(|| {
                buf.clear();
                encode_record(&mut buf, black_box(7), black_box(payload));
                black_box(buf.len())
            });
        });
        let mut encoded = Vec::new();
        encode_record(&mut encoded, 7, &payload);
        group.bench_with_input(BenchmarkId::new("decode", size), &encoded, |b, encoded| {
            b.iter(|| black_box(decode_record(black_box(encoded), 1 << 20)));
        });
    }
    group.finish();
}

fn append_never(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_never");
    for size in SIZES {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let options = WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let wal = Wal::open(tmp.path(), options).expect("open the log");
        let payload = vec![0x42u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter(|| wal.append(black_box(payload)).expect("append"));
        });
    }
    group.finish();
}

/// A log of `n` records of 128 bytes in 1 MiB segments.
fn filled(n: u64, policy: SyncPolicy) -> (tempfile::TempDir, Wal) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let options = WalOptions {
        sync_policy: policy,
        segment_size: 1 << 20,
        ..WalOptions::default()
    };
    let wal = Wal::open(tmp.path(), options).expect("open the log");
    let payload = [0x42u8; 128];
    let batch: Vec<&[u8]> = vec![&payload[..]; 1000];
    for _ in 0..n / 1000 {
        wal.append_batch(&batch).expect("append");
    }
    wal.sync().expect("sync");
    (tmp, wal)
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    let n = 100_000;
    let (_tmp, wal) = filled(n, SyncPolicy::Never);
    let mut lsn = 1;
    group.throughput(Throughput::Elements(1));
    group.bench_function("one", |b| {
        b.iter(|| {
            lsn = lsn % n + 1;
            black_box(wal.read(black_box(lsn)).expect("read"))
        });
    });
    for count in [16u64, 256] {
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(BenchmarkId::new("range", count), &count, |b, &count| {
            let mut from = 1;
            b.iter(|| {
                from = (from + count) % (n - count) + 1;
                black_box(
                    wal.read_range(black_box(from), from + count, usize::MAX)
                        .expect("read_range"),
                )
            });
        });
    }
    group.finish();
}

fn truncate_after(c: &mut Criterion) {
    let mut group = c.benchmark_group("truncate_after");
    group.sample_size(20);
    let (_tmp, wal) = filled(20_000, SyncPolicy::Always);
    let payload = [0x17u8; 128];
    let batch: Vec<&[u8]> = vec![&payload[..]; 100];
    // Cut 100 records (inside the active segment), then append them again.
    group.bench_function("100_records", |b| {
        b.iter(|| {
            let last = wal.last_lsn().expect("records");
            wal.truncate_after(last - 100).expect("truncate_after");
            wal.append_batch(&batch).expect("append");
        });
    });
    group.finish();
}

criterion_group!(benches, framing, append_never, reads, truncate_after);
criterion_main!(benches);
