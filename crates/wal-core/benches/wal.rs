//! Benchmarks: record encode/decode, and append under `SyncPolicy::Never`
//! (the log's own overhead, without the disk's fdatasync latency).

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

criterion_group!(benches, framing, append_never);
criterion_main!(benches);
