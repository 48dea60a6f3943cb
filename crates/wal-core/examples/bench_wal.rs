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
//! appended, so that an unsynced run cannot fill the disk.
//!
//! Output (MB are 10^6 bytes of record payload):
//! `{"threads":16,"record_size":128,"policy":"always","appends":..,"secs":..,
//! "appends_per_sec":..,"mb_per_sec":..,"p50_us":..,"p99_us":..,"max_us":..}`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wal_core::{SyncPolicy, Wal, WalOptions};

struct Config {
    dir: PathBuf,
    record_size: usize,
    threads: usize,
    policy: String,
    duration: Duration,
    max_bytes: u64,
}

fn parse_args() -> Result<Config, String> {
    let mut dir = None;
    let mut record_size = 128usize;
    let mut threads = 1usize;
    let mut policy = "always".to_string();
    let mut duration = 2.0f64;
    let mut max_bytes = 2u64 << 30;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bad value `{value}` for {flag}: {e}");
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(&value)),
            "--record-size" => record_size = value.parse().map_err(|e| bad(&e))?,
            "--threads" => threads = value.parse().map_err(|e| bad(&e))?,
            "--policy" => policy = value.clone(),
            "--duration" => duration = value.parse().map_err(|e| bad(&e))?,
            "--max-bytes" => max_bytes = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if threads == 0 || !duration.is_finite() || duration <= 0.0 {
        return Err("--threads and --duration must be positive".into());
    }
    Ok(Config {
        dir: dir.ok_or("--dir is required")?,
        record_size,
        threads,
        policy,
        duration: Duration::from_secs_f64(duration),
        max_bytes,
    })
}

fn main() -> ExitCode {
    match parse_args().and_then(|config| run(&config)) {
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
    let sync_policy = match config.policy.as_str() {
        "always" => SyncPolicy::Always,
        "never" => SyncPolicy::Never,
        other => return Err(format!("--policy must be always or never, not {other}")),
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
    let deadline = start + config.duration;

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
        config.policy,
        latencies.len(),
        secs,
        appends / secs,
        appends * config.record_size as f64 / secs / 1e6,
        quantile_us(0.5),
        quantile_us(0.99),
        quantile_us(1.0),
    ))
}
