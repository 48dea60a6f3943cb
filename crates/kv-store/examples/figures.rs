//! Measures the figures kv-store reports: recovery time from the log alone
//! and from a snapshot, memory per key, and durable put throughput.
//!
//! ```text
//! cargo run --release -p kv-store --example figures -- \
//!     [ENTRIES=1000000] [WRITERS=1,64] [SECONDS=5] [DIR=./target/figures]
//! ```
//!
//! DIR should be on the disk being measured (not a tmpfs); its `kv-figures`
//! subdirectory is deleted and recreated. Keys are 15 bytes
//! (`key` + 12 digits), values 100 bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

fn recovery(dir: &Path, entries: u64) -> Result<(), Box<dyn std::error::Error>> {
    // Filled in a child process, so that this process's memory figure counts
    // only what recovery builds, not the allocator's leftovers from filling.
    let started = Instant::now();
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--fill")
        .arg(entries.to_string())
        .arg(dir)
        .status()?;
    if !status.success() {
        return Err(format!("filling the store failed: {status}").into());
    }
    println!(
        "fill: {entries} puts of {VALUE_LEN}-byte values in {:.2} s (no sync)",
        started.elapsed().as_secs_f64()
    );
    let raw = entries * (15 + VALUE_LEN as u64);

    let wal_bytes = dir_size(&dir.join("wal"));
    let rss0 = rss();
    let store = KeyValueStore::open(dir, options(SyncPolicy::Always))?;
    let info = store.recovery().clone();
    let secs = info.duration.as_secs_f64();
    println!(
        "recovery from the log alone: {} entries replayed in {:.3} s = {:.2} M entries/s, {:.0} MB/s of log ({} MB)",
        info.replayed,
        secs,
        info.replayed as f64 / secs / 1e6,
        wal_bytes as f64 / secs / 1e6,
        wal_bytes / 1_000_000
    );
    let grown = rss().saturating_sub(rss0);
    println!(
        "memory after recovery: RSS grew {} MB = {:.0} bytes/key, {:.2}x the raw key+value bytes ({} MB)",
        grown / 1_000_000,
        grown as f64 / entries as f64,
        grown as f64 / raw as f64,
        raw / 1_000_000
    );

    let started = Instant::now();
    let seq = store.checkpoint()?;
    println!(
        "checkpoint of {entries} keys (seq {seq}): {:.3} s",
        started.elapsed().as_secs_f64()
    );
    drop(store);

    let snap_bytes = dir_size(&dir.join("snapshots"));
    let store = KeyValueStore::open(dir, options(SyncPolicy::Always))?;
    let info = store.recovery().clone();
    let secs = info.duration.as_secs_f64();
    println!(
        "recovery from a snapshot: {} entries (+{} replayed) in {:.3} s = {:.2} M entries/s, {:.0} MB/s of snapshot ({} MB)",
        info.snapshot_entries,
        info.replayed,
        secs,
        info.snapshot_entries as f64 / secs / 1e6,
        snap_bytes as f64 / secs / 1e6,
        snap_bytes / 1_000_000
    );
    Ok(())
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--fill") {
        let entries: u64 = args.get(1).ok_or("--fill ENTRIES DIR")?.parse()?;
        return Ok(fill(
            Path::new(args.get(2).ok_or("--fill ENTRIES DIR")?),
            entries,
        )?);
    }
    let entries: u64 = args.first().map_or(Ok(1_000_000), |s| s.parse())?;
    let writers: Vec<usize> = args
        .get(1)
        .map_or("1,64", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let seconds: f64 = args.get(2).map_or(Ok(5.0), |s| s.parse())?;
    let base =
        PathBuf::from(args.get(3).map_or("target/figures", String::as_str)).join("kv-figures");
    if base.exists() {
        std::fs::remove_dir_all(&base)?;
    }

    recovery(&base.join("recovery"), entries)?;
    for &w in &writers {
        throughput(&base.join(format!("puts-{w}")), w, seconds)?;
    }
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
