//! Append throughput and latency of one configuration, as one JSON line:
//! the wal-core part of `cargo xtask bench`.
//!
//! ```text
//! cargo run -p wal-core --release --example bench_wal -- \
//!     --dir DIR --record-size 128 --threads 16 --policy always --duration 2
//! ```
//!
//! DIR must not exist or be empty; it is filled with a fresh log and removed
//! afterwards. `--policy` is `always` (fdatasync before every `append`
//! returns, shared by concurrent appenders) or `never` (no sync on append).
//! The run also stops once `--max-bytes` (default 2 GiB) have been
//! appended, so that an unsynced run cannot fill the disk. `--help` lists
//! the flags and their defaults.
//!
//! Output (MB are 10^6 bytes of record payload):
//! `{"threads":16,"record_size":128,"policy":"always","appends":..,"secs":..,
//! "appends_per_sec":..,"mb_per_sec":..,"p50_us":..,"p99_us":..,"max_us":..}`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use wal_core::{SyncPolicy, Wal, WalOptions};

/// Append throughput and latency of one wal-core configuration, printed as
/// one JSON line.
#[derive(Parser)]
struct Config {
    /// A directory that does not exist or is empty; it is filled with a
    /// fresh log and removed afterwards.
    #[arg(long)]
    dir: PathBuf,
    /// Bytes of each record.
    #[arg(long, default_value_t = 128)]
    record_size: usize,
    /// Threads appending at once.
    #[arg(long, default_value_t = 1, value_parser = positive_count)]
    threads: usize,
    /// When an append is synced.
    #[arg(long, value_enum, default_value_t = Policy::Always)]
    policy: Policy,
    /// Seconds to append for.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = positive_secs)]
    duration: f64,
    /// Stop once this many bytes have been appended, so that an unsynced
    /// run cannot fill the disk.
    #[arg(long, default_value_t = 2 << 30)]
    max_bytes: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// fdatasync before every `append` returns, shared by concurrent
    /// appenders.
    Always,
    /// No sync on append.
    Never,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Always => "always",
            Policy::Never => "never",
        }
    }
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

fn main() -> ExitCode {
    match run(&Config::parse()) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench_wal: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<String, String> {
    let sync_policy = match config.policy {
        Policy::Always => SyncPolicy::Always,
        Policy::Never => SyncPolicy::Never,
    };
    let options = WalOptions {
        sync_policy,
        ..WalOptions::default()
    };
    let wal = Wal::open(&config.dir, options).map_err(|e| format!("cannot open the log: {e}"))?;
    let record = vec![0xA5u8; config.record_size];
    let stop = AtomicBool::new(false);
    let appended_bytes = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(config.duration);

    // Each thread keeps its own latencies; merged once all have stopped.
    let per_thread: Vec<Result<Vec<u32>, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..config.threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut latencies_ns = Vec::with_capacity(1 << 16);
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        wal.append(&record)
                            .map_err(|e| format!("append failed: {e}"))?;
                        let now = Instant::now();
                        latencies_ns.push((now - t).as_nanos().min(u32::MAX as u128) as u32);
                        let total = appended_bytes
                            .fetch_add(record.len() as u64, Ordering::Relaxed)
                            + record.len() as u64;
                        if now >= deadline || total >= config.max_bytes {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(latencies_ns)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    drop(wal);
    // Best effort: the caller removes the directory too.
    let _ = std::fs::remove_dir_all(&config.dir);

    let mut latencies = Vec::new();
    for result in per_thread {
        latencies.extend(result?);
    }
    latencies.sort_unstable();
    let appends = latencies.len() as f64;
    let quantile_us = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies[index]) / 1e3
    };
    Ok(format!(
        "{{\"threads\":{},\"record_size\":{},\"policy\":\"{}\",\"appends\":{},\"secs\":{:.4},\
         \"appends_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"p50_us\":{:.2},\"p99_us\":{:.2},\
         \"max_us\":{:.2}}}",
        config.threads,
        config.record_size,
        config.policy.name(),
        latencies.len(),
        secs,
        appends / secs,
        appends * config.record_size as f64 / secs / 1e6,
        quantile_us(0.5),
        quantile_us(0.99),
        quantile_us(1.0),
    ))
}
