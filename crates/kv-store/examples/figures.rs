//! Measures the figures kv-store reports: recovery time from the log alone
//! and from a snapshot, memory per key, and durable put throughput.
//!
//! ```text
//! cargo run --release -p kv-store --example figures -- \
//!     [ENTRIES=1000000] [WRITERS=1,64] [SECONDS=5] [DIR=./target/figures]
//! ```
//!
//! After loading, it also measures the write p99 of durable puts from 16
//! threads with and without a checkpoint running. With `--json` the scale
//! figures end the output as one JSON line.
//!
//! DIR should be on the disk being measured (not a tmpfs); its `kv-figures`
//! subdirectory is deleted and recreated. Keys are 15 bytes
//! (`key` + 12 digits), values 100 bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use kv_store::{KeyValueStore, StoreOptions, SyncPolicy, WalOptions};

const VALUE_LEN: usize = 100;

fn key(i: u64) -> Vec<u8> {
    format!("key{i:012}").into_bytes()
}

fn options(policy: SyncPolicy) -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            sync_policy: policy,
            ..WalOptions::default()
        },
        checkpoint_after: None,
        ..StoreOptions::default()
    }
}

/// Resident set size of this process, in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn fill(dir: &Path, entries: u64) -> Result<(), kv_store::Error> {
    // Filled without per-write syncs (this phase is setup, not a figure);
    // close() syncs at the end.
    let store = KeyValueStore::open(dir, options(SyncPolicy::Never))?;
    let value = [0xabu8; VALUE_LEN];
    let mut i = 0;
    while i < entries {
        let end = (i + 10_000).min(entries);
        let pending: Result<Vec<_>, _> = (i..end)
            .map(|j| store.submit_put(&key(j), &value))
            .collect();
        for p in pending? {
            p.wait()?;
        }
        i = end;
    }
    store.close()
}

/// The scale figures of one run, printed as one JSON line with `--json`.
#[derive(Default)]
struct Scale {
    entries: u64,
    raw_bytes_per_key: u64,
    bytes_per_key: f64,
    wal_entries_per_sec: f64,
    snapshot_entries_per_sec: f64,
    checkpoint_idle_secs: f64,
    checkpoint_loaded_secs: f64,
    p99_us_without: f64,
    p99_us_during: f64,
}

/// Writers putting over the loaded keys, each put's latency recorded,
/// until `until` says stop; returns the latencies in microseconds, sorted.
fn timed_puts(
    store: &KeyValueStore,
    entries: u64,
    until: &dyn Fn() -> bool,
) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let writers: Vec<_> = (0..LATENCY_WRITERS)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || -> Result<Vec<u32>, kv_store::Error> {
                    let value = [t as u8; VALUE_LEN];
                    let mut latencies = Vec::new();
                    // A fixed stride over the keys: spread, and repeatable.
                    let mut k = t as u64;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        store.put(&key(k % entries.max(1)), &value)?;
                        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        k += 7_919;
                    }
                    Ok(latencies)
                })
            })
            .collect();
        while !until() {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in writers {
            all.extend(w.join().map_err(|_| "writer panicked")??);
        }
        Ok::<_, Box<dyn std::error::Error>>(all)
    });
    let mut all = result?;
    all.sort_unstable();
    Ok(all)
}

fn p99(sorted: &[u32]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => f64::from(sorted[(n - 1) * 99 / 100]),
    }
}

/// Writer threads of the latency runs: enough that group commit forms
/// batches, as a server's connections do.
const LATENCY_WRITERS: usize = 16;

fn recovery(dir: &Path, entries: u64, seconds: f64) -> Result<Scale, Box<dyn std::error::Error>> {
    // Filled in a child process, so that this process's memory figure counts
    // only what recovery builds, not the allocator's leftovers from filling.
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg(entries.to_string())
        .arg("--fill")
        .arg(dir)
        .status()?;
    if !status.success() {
        return Err(format!("filling the store failed: {status}").into());
    }
    println!(
        "fill: {entries} puts of {VALUE_LEN}-byte values in {:.2} s (no sync)",
        started.elapsed().as_secs_f64()
    );
    let raw_per_key = 15 + VALUE_LEN as u64;
    let raw = entries * raw_per_key;
    let mut scale = Scale {
        entries,
        raw_bytes_per_key: raw_per_key,
        ..Scale::default()
    };

    let wal_bytes = dir_size(&dir.join("wal"));
    let rss0 = rss();
    let store = KeyValueStore::open(dir, options(SyncPolicy::Always))?;
    let info = store.recovery().clone();
    let secs = info.duration.as_secs_f64();
    scale.wal_entries_per_sec = info.replayed as f64 / secs;
    println!(
        "recovery from the log alone: {} entries replayed in {:.3} s = {:.2} M entries/s, {:.0} MB/s of log ({} MB)",
        info.replayed,
        secs,
        info.replayed as f64 / secs / 1e6,
        wal_bytes as f64 / secs / 1e6,
        wal_bytes / 1_000_000
    );
    let grown = rss().saturating_sub(rss0);
    scale.bytes_per_key = grown as f64 / entries as f64;
    println!(
        "memory after recovery: RSS grew {} MB = {:.0} bytes/key, {:.2}x the raw key+value bytes ({} MB)",
        grown / 1_000_000,
        grown as f64 / entries as f64,
        grown as f64 / raw as f64,
        raw / 1_000_000
    );

    let started = Instant::now();
    let seq = store.checkpoint()?;
    scale.checkpoint_idle_secs = started.elapsed().as_secs_f64();
    println!(
        "checkpoint of {entries} keys, no writes running (seq {seq}): {:.3} s",
        scale.checkpoint_idle_secs
    );

    drop(store);

    let snap_bytes = dir_size(&dir.join("snapshots"));
    let store = KeyValueStore::open(dir, options(SyncPolicy::Always))?;
    let info = store.recovery().clone();
    let secs = info.duration.as_secs_f64();
    let restored = info.snapshot_entries + info.replayed;
    scale.snapshot_entries_per_sec = restored as f64 / secs;
    println!(
        "recovery from a snapshot: {} entries (+{} replayed) in {:.3} s = {:.2} M entries/s, {:.0} MB/s of snapshot ({} MB)",
        info.snapshot_entries,
        info.replayed,
        secs,
        restored as f64 / secs / 1e6,
        snap_bytes as f64 / secs / 1e6,
        snap_bytes / 1_000_000
    );

    // Durable puts over the loaded keys, first alone, then while a second
    // checkpoint of the whole map runs.
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let without = timed_puts(&store, entries, &|| Instant::now() >= until)?;
    scale.p99_us_without = p99(&without);
    let checkpointed = AtomicBool::new(false);
    let (during, checkpoint) = std::thread::scope(|s| {
        let checkpoint = s.spawn(|| {
            let started = Instant::now();
            let result = store.checkpoint();
            checkpointed.store(true, Ordering::Relaxed);
            result.map(|_| started.elapsed().as_secs_f64())
        });
        let during = timed_puts(&store, entries, &|| checkpointed.load(Ordering::Relaxed));
        (during, checkpoint.join())
    });
    let during = during?;
    scale.checkpoint_loaded_secs = checkpoint.map_err(|_| "checkpoint panicked")??;
    scale.p99_us_during = p99(&during);
    println!(
        "durable puts, {LATENCY_WRITERS} writers: p99 {:.0} us over {} puts without a checkpoint, \
         {:.0} us over {} puts during one ({:.3} s, {:.2}x)",
        scale.p99_us_without,
        without.len(),
        scale.p99_us_during,
        during.len(),
        scale.checkpoint_loaded_secs,
        scale.p99_us_during / scale.p99_us_without
    );
    Ok(scale)
}

fn throughput(dir: &Path, writers: usize, seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    let store = KeyValueStore::open(dir, options(SyncPolicy::Always))?;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (store, stop, done) = (store.clone(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || -> Result<(), kv_store::Error> {
                let value = [t as u8; VALUE_LEN];
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    store.put(&key(t as u64 * 1_000_000_000 + i), &value)?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in threads {
        t.join().map_err(|_| "writer panicked")??;
    }
    println!(
        "durable puts (SyncPolicy::Always), {writers} writer thread(s): {n} in {elapsed:.1} s = {:.0} puts/s",
        n as f64 / elapsed
    );
    Ok(())
}

/// Measures the figures kv-store reports: recovery time from the log alone
/// and from a snapshot, memory per key, and durable put throughput.
#[derive(Parser)]
struct Args {
    /// Keys to load before measuring recovery.
    #[arg(default_value_t = 1_000_000)]
    entries: u64,
    /// Writer thread counts to measure durable puts with, separated by
    /// commas.
    #[arg(default_value = "1,64", value_parser = writer_counts)]
    writers: WriterCounts,
    /// Seconds each put measurement runs (and the latency run without a
    /// checkpoint).
    #[arg(default_value_t = 5.0, value_parser = positive_secs)]
    seconds: f64,
    /// A directory on the disk being measured (not a tmpfs); its
    /// `kv-figures` subdirectory is deleted and recreated.
    #[arg(default_value = "target/figures")]
    dir: PathBuf,
    /// Only fill the store in this directory with ENTRIES keys, then exit:
    /// what the child process that `recovery` starts does.
    #[arg(long, value_name = "STORE_DIR", hide = true)]
    fill: Option<PathBuf>,
    /// Also print the scale figures as one JSON line at the end (what
    /// `cargo xtask bench --scale` reads).
    #[arg(long)]
    json: bool,
}

/// One positional argument holding a list: a `Vec` field would be several
/// arguments to clap, and then the positionals after it could not be told
/// apart.
#[derive(Clone)]
struct WriterCounts(Vec<usize>);

fn writer_counts(s: &str) -> Result<WriterCounts, String> {
    s.split(',')
        .map(|n| match n.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!("`{n}` is not a positive thread count")),
            Ok(n) => Ok(n),
        })
        .collect::<Result<_, _>>()
        .map(WriterCounts)
}

fn positive_secs(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .ok_or_else(|| "must be a positive number of seconds".to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(dir) = &args.fill {
        return Ok(fill(dir, args.entries)?);
    }
    let base = args.dir.join("kv-figures");
    if base.exists() {
        std::fs::remove_dir_all(&base)?;
    }

    let scale = recovery(&base.join("recovery"), args.entries, args.seconds)?;
    for &w in &args.writers.0 {
        throughput(&base.join(format!("puts-{w}")), w, args.seconds)?;
    }
    std::fs::remove_dir_all(&base)?;
    if args.json {
        println!(
            "{{\"entries\":{},\"raw_bytes_per_key\":{},\"bytes_per_key\":{:.1},\
             \"wal_entries_per_sec\":{:.0},\"snapshot_entries_per_sec\":{:.0},\
             \"checkpoint_idle_secs\":{:.3},\"checkpoint_loaded_secs\":{:.3},\
             \"p99_us_without\":{:.0},\"p99_us_during\":{:.0}}}",
            scale.entries,
            scale.raw_bytes_per_key,
            scale.bytes_per_key,
            scale.wal_entries_per_sec,
            scale.snapshot_entries_per_sec,
            scale.checkpoint_idle_secs,
            scale.checkpoint_loaded_secs,
            scale.p99_us_without,
            scale.p99_us_during
        );
    }
    Ok(())
}
