//! A small program: open a log, append from several threads, read it back,
//! checkpoint-style truncate, reopen.
//!
//! `cargo run -p wal-core --example basic [DIR]` (default: a fresh temporary
//! directory).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use wal_core::{SyncPolicy, Wal, WalOptions};

/// Open a log, append from several threads, read it back, truncate as a
/// checkpoint would, reopen.
#[derive(Parser)]
struct Args {
    /// Where the log lives; reopened if it exists (default: a fresh
    /// temporary directory).
    dir: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp;
    let dir = match Args::parse().dir {
        Some(dir) => dir,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("wal")
        }
    };
    let options = WalOptions {
        segment_size: 4096,
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };

    let wal = Arc::new(Wal::open(&dir, options.clone())?);
    println!("opened {} at LSN {}", dir.display(), wal.next_lsn());
    for warning in &wal.recovery_report().warnings {
        println!("recovery: {warning}");
    }

    // Four threads append concurrently; group commit shares their syncs.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || -> wal_core::Result<()> {
                for i in 0..25 {
                    wal.append(format!("thread {t} event {i}").as_bytes())?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "appender panicked")??;
    }
    println!(
        "appended up to LSN {:?}, {} bytes on disk",
        wal.last_lsn(),
        wal.disk_size()
    );

    // Read the last few back.
    let from = wal.next_lsn().saturating_sub(3);
    for record in wal.iter_from(from)? {
        let record = record?;
        println!(
            "{:>5}  {}",
            record.lsn,
            String::from_utf8_lossy(&record.data)
        );
    }

    // As a checkpoint would: seal the active segment, then drop everything
    // the (imaginary) snapshot covers.
    wal.rotate()?;
    let deleted = wal.truncate_before(wal.next_lsn())?;
    println!("checkpoint: deleted {deleted} segments");
    drop(wal);

    let wal = Wal::open(&dir, options)?;
    println!("reopened: next LSN {}", wal.next_lsn());
    Ok(())
}
