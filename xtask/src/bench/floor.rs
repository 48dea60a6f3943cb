//! The disk floor: what one writer gets from a plain `write` + `fdatasync`
//! loop on the data directory's filesystem, with no log format, no
//! checksums and no threads. Everything durable the store does costs at
//! least this per sync, so the other figures are read as ratios to it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each write extends the file, so each fdatasync also persists the new
    /// size (metadata): what a log that appends pays.
    Append,
    /// Writes go into space that was written with zeroes and synced first,
    /// so fdatasync persists data only: the cheapest durable write.
    Preallocated,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Preallocated => "preallocated",
        }
    }
}

/// One floor measurement.
#[derive(Debug, Clone)]
pub struct Floor {
    pub mode: Mode,
    pub record_size: usize,
    pub syncs: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Floor {
    pub fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.secs
    }

    /// Payload throughput, in 10^6 bytes per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.syncs_per_sec() * self.record_size as f64 / 1e6
    }
}

/// Size of the preallocated file. Writes wrap around inside it: rewriting
/// already-written blocks costs the same as the first write into zeroed
/// ones (both are data-only syncs), and the file stays small.
const PREALLOCATED_BYTES: u64 = 64 << 20;

/// Runs `write(record) + fdatasync` in a loop for `duration` in a new file
/// `path`, which is removed afterwards.
pub fn measure(
    path: &Path,
    mode: Mode,
    record_size: usize,
    duration: Duration,
) -> Result<Floor, String> {
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    let record = vec![0x5Au8; record_size];
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("cannot create", e))?;
    // The file's directory entry is made durable before timing starts, as a
    // log does when it creates a segment.
    sync_parent(path)?;
    let slots = (PREALLOCATED_BYTES / record_size.max(1) as u64).max(1);
    if mode == Mode::Preallocated {
        preallocate(&mut file, slots * record_size as u64)
            .map_err(|e| io("cannot preallocate", e))?;
    }

    let mut latencies_ns: Vec<u64> = Vec::with_capacity(1 << 14);
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < duration {
        let t = Instant::now();
        match mode {
            Mode::Append => file.write_all(&record),
            Mode::Preallocated => file.write_all_at(&record, (n % slots) * record_size as u64),
        }
        .map_err(|e| io("cannot write", e))?;
        file.sync_data().map_err(|e| io("cannot fdatasync", e))?;
        latencies_ns.push(t.elapsed().as_nanos() as u64);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).map_err(|e| io("cannot remove", e))?;

    latencies_ns.sort_unstable();
    Ok(Floor {
        mode,
        record_size,
        syncs: n,
        secs,
        p50_us: quantile(&latencies_ns, 0.5) / 1e3,
        p99_us: quantile(&latencies_ns, 0.99) / 1e3,
    })
}

/// Writes `len` bytes of zeroes and makes them durable, size included.
fn preallocate(file: &mut File, len: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        written += n as u64;
    }
    file.sync_all()
}

fn sync_parent(path: &Path) -> Result<(), String> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", parent.display()))
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn both_modes_sync_and_clean_up() {
        let dir = std::env::temp_dir().join(format!("xtask-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for mode in [Mode::Append, Mode::Preallocated] {
            let path = dir.join(mode.name());
            let floor = measure(&path, mode, 4096, Duration::from_millis(50)).unwrap();
            assert!(floor.syncs > 0, "{mode:?} made no sync");
            assert!(floor.p50_us > 0.0 && floor.p99_us >= floor.p50_us);
            assert!((floor.mb_per_sec() - floor.syncs_per_sec() * 4096.0 / 1e6).abs() < 1e-9);
            assert!(!path.exists(), "{mode:?} left its file behind");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
