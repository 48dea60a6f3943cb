//! Appends/s under `SyncPolicy::Always` for N threads, next to a plain
//! write + fdatasync loop of the same record size in the same directory.
//!
//! ```text
//! cargo run -p wal-core --release --example throughput -- THREADS RECORD_BYTES SECONDS DIR
//! ```
//!
//! DIR should be on the disk under test (not a tmpfs). The example creates
//! and removes `DIR/wal-throughput` and `DIR/plain-fdatasync.bin`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use wal_core::{SyncPolicy, Wal, WalOptions};

/// Appends/s under `SyncPolicy::Always` for THREADS threads, next to a
/// plain write + fdatasync loop of the same record size in the same
/// directory.
#[derive(Parser)]
struct Args {
    /// Threads appending at once.
    #[arg(value_parser = positive_count)]
    threads: usize,
    /// Bytes of each record.
    record_bytes: usize,
    /// Seconds each of the two loops runs.
    #[arg(value_parser = positive_secs)]
    seconds: f64,
    /// A directory on the disk under test (not a tmpfs); the example
    /// creates and removes DIR/wal-throughput and DIR/plain-fdatasync.bin.
    dir: PathBuf,
}

fn positive_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err("must be a whole number, at least 1".to_string()),
        Ok(n) => Ok(n),
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .ok_or_else(|| "must be a positive number of seconds".to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        threads,
        record_bytes,
        seconds,
        dir,
    } = Args::parse();
    let duration = Duration::from_secs_f64(seconds);

    let wal_rate = wal_appends(&dir.join("wal-throughput"), threads, record_bytes, duration)?;
    let plain_rate = plain_fdatasync(&dir.join("plain-fdatasync.bin"), record_bytes, duration)?;
    println!(
        "threads={threads} record={record_bytes}B: wal Always {wal_rate:.0} appends/s; \
         plain write+fdatasync loop {plain_rate:.0} writes/s; ratio {:.2}",
        wal_rate / plain_rate
    );
    Ok(())
}

fn wal_appends(
    dir: &Path,
    threads: usize,
    record_bytes: usize,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let options = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, options)?;
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let record = vec![0xA5u8; record_bytes];
    let start = Instant::now();
    std::thread::scope(|s| -> wal_core::Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> wal_core::Result<()> {
                    while !stop.load(Ordering::Relaxed) {
                        wal.append(&record)?;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap_or(Ok(()))?;
        }
        Ok(())
    })?;
    let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    drop(wal);
    std::fs::remove_dir_all(dir)?;
    Ok(rate)
}

fn plain_fdatasync(
    path: &Path,
    record_bytes: usize,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut file = File::create(path)?;
    file.write_all(b"")?;
    let record = vec![0x5Au8; record_bytes];
    let start = Instant::now();
    let mut offset = 0u64;
    let mut n = 0u64;
    while start.elapsed() < duration {
        file.write_all_at(&record, offset)?;
        file.sync_data()?;
        offset += record_bytes as u64;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(rate)
}
