//! Recovery time of a store of N entries, from the WAL alone and from a
//! snapshot, as one JSON line: the recovery part of `cargo xtask bench`.
//!
//! ```text
//! cargo run -p kv-store --release --example bench_recovery -- \
//!     --dir DIR --entries 1000000 --value-size 100
//! ```
//!
//! DIR must not exist or be empty; it is removed afterwards. The example
//! loads N distinct keys (16 bytes each) with the log unsynced (loading
//! speed is not what is measured; `close` makes it durable), then times:
//! 1. `open` replaying the whole WAL (no snapshot exists);
//! 2. after a checkpoint, `open` from the snapshot with an empty WAL tail.
//!
//! Output (MB are 10^6 bytes; `*_bytes` are the files read):
//! `{"entries":..,"key_size":16,"value_size":..,"load_secs":..,
//! "wal_bytes":..,"wal_open_secs":..,"wal_replayed":..,
//! "wal_entries_per_sec":..,"wal_mb_per_sec":..,"snapshot_bytes":..,
//! "snapshot_open_secs":..,"snapshot_entries":..,
//! "snapshot_entries_per_sec":..,"snapshot_mb_per_sec":..}`

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kv_store::{KeyValueStore, StoreOptions, SyncPolicy, WalOptions};

/// Puts submitted and not yet awaited while loading: enough to keep the
/// commit thread busy, bounded so memory stays flat.
const LOAD_WINDOW: usize = 4096;

/// Recovery time of a store of ENTRIES entries, from the WAL alone and from
/// a snapshot, printed as one JSON line.
#[derive(Parser)]
struct Args {
    /// A directory that does not exist or is empty; removed afterwards.
    #[arg(long)]
    dir: PathBuf,
    /// Distinct keys (16 bytes each) to load.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args.dir, args.entries, args.value_size) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench_recovery: {message}");
            ExitCode::FAILURE
        }
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        wal: WalOptions {
            sync_policy: SyncPolicy::Never,
            ..WalOptions::default()
        },
        // Only the explicit checkpoint below may write a snapshot: an
        // automatic one during loading would make step 1 not "WAL alone".
        checkpoint_after: None,
        ..StoreOptions::default()
    }
}

/// Total size of the regular files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", entry.path().display()))?;
        if meta.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

fn open_timed(dir: &Path, entries: u64) -> Result<(KeyValueStore, f64), String> {
    let start = Instant::now();
    let store = KeyValueStore::open(dir, options()).map_err(|e| format!("open failed: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let keys = store.stats().keys;
    if keys != entries {
        return Err(format!("recovered {keys} keys, expected {entries}"));
    }
    Ok((store, secs))
}

fn run(dir: &Path, entries: u64, value_size: usize) -> Result<String, String> {
    let value = vec![b'v'; value_size];
    let load_start = Instant::now();
    {
        let store = KeyValueStore::open(dir, options()).map_err(|e| format!("open failed: {e}"))?;
        let mut pending: VecDeque<kv_store::Pending<kv_store::Lsn>> =
            VecDeque::with_capacity(LOAD_WINDOW);
        for i in 0..entries {
            let key = format!("k{i:015}");
            if pending.len() == LOAD_WINDOW
                && let Some(oldest) = pending.pop_front()
            {
                oldest.wait().map_err(|e| format!("put failed: {e}"))?;
            }
            pending.push_back(
                store
                    .submit_put(key.as_bytes(), &value)
                    .map_err(|e| format!("put failed: {e}"))?,
            );
        }
        for p in pending {
            p.wait().map_err(|e| format!("put failed: {e}"))?;
        }
        store.close().map_err(|e| format!("close failed: {e}"))?;
    }
    let load_secs = load_start.elapsed().as_secs_f64();

    // 1. From the WAL alone.
    let wal_bytes = dir_bytes(dir)?;
    let (store, wal_open_secs) = open_timed(dir, entries)?;
    let wal_replayed = store.recovery().replayed;
    if store.recovery().snapshot_seq != 0 {
        return Err("a snapshot exists before the checkpoint".into());
    }
    store
        .checkpoint()
        .map_err(|e| format!("checkpoint failed: {e}"))?;
    store.close().map_err(|e| format!("close failed: {e}"))?;
    drop(store);

    // 2. From the snapshot (the WAL after it is empty).
    let snapshot_bytes = dir_bytes(&dir.join("snapshots"))?;
    let (store, snapshot_open_secs) = open_timed(dir, entries)?;
    let snapshot_entries = store.recovery().snapshot_entries;
    store.close().map_err(|e| format!("close failed: {e}"))?;
    drop(store);
    // Best effort: the caller removes the directory too.
    let _ = std::fs::remove_dir_all(dir);

    Ok(format!(
        "{{\"entries\":{entries},\"key_size\":16,\"value_size\":{value_size},\
         \"load_secs\":{load_secs:.3},\"wal_bytes\":{wal_bytes},\
         \"wal_open_secs\":{wal_open_secs:.4},\"wal_replayed\":{wal_replayed},\
         \"wal_entries_per_sec\":{:.0},\"wal_mb_per_sec\":{:.1},\
         \"snapshot_bytes\":{snapshot_bytes},\"snapshot_open_secs\":{snapshot_open_secs:.4},\
         \"snapshot_entries\":{snapshot_entries},\"snapshot_entries_per_sec\":{:.0},\
         \"snapshot_mb_per_sec\":{:.1}}}",
        wal_replayed as f64 / wal_open_secs,
        wal_bytes as f64 / wal_open_secs / 1e6,
        snapshot_entries as f64 / snapshot_open_secs,
        snapshot_bytes as f64 / snapshot_open_secs / 1e6,
    ))
}
