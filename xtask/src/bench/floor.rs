//! The disk floor: what a plain `pwrite` + `fdatasync` loop gets on the data
//! directory's filesystem, with no log format and no checksums. Everything
//! durable the store does costs at least this per sync, so the other figures
//! are read as ratios to it.
//!
//! [`measure`] is the single-writer floor the bench report uses. [`Cell`]s
//! ([`measure_cell`]) compare the ways a log segment can be prepared
//! ([`Mode`]) under one writer, under group commit and under concurrent
//! writers ([`Writers`]), so that the log can choose its preparation by
//! measurement; `cargo xtask floor-modes` prints that comparison, with the
//! time each preparation takes ([`prepare_ms`]), which the log pays at
//! segment rotation.
//!
//! Writes always go in sequentially from offset 0. The preparation is never
//! part of the timed loop.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// How the file is prepared before the timed writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new empty file: each write extends it, so each fdatasync also
    /// persists the new size and block allocation (metadata).
    Append,
    /// Extended with `set_len` to its full size (size synced, no blocks
    /// reserved): each write allocates blocks. What the log does today.
    Sparse,
    /// `fallocate(fd, 0, 0, size)` then fsync: blocks reserved as unwritten
    /// extents, so each write still converts an extent (metadata).
    Fallocate,
    /// Zeroes written over the full size and synced: writes replace written
    /// blocks in place, so fdatasync persists data only.
    ZeroFilled,
    /// A file already filled with non-zero data and synced, as an old
    /// segment being reused: writes overwrite it in place, like
    /// [`Mode::ZeroFilled`], with no zero fill at rotation.
    Recycled,
}

impl Mode {
    /// Every mode, in the order the comparison prints them.
    pub const ALL: [Mode; 5] = [
        Mode::Append,
        Mode::Sparse,
        Mode::Fallocate,
        Mode::ZeroFilled,
        Mode::Recycled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Sparse => "sparse",
            Mode::Fallocate => "fallocate",
            Mode::ZeroFilled => "zero-filled",
            Mode::Recycled => "recycled",
        }
    }
}

/// Who writes, and how the writes meet the syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// One thread: `pwrite` of one record, then `fdatasync`, in a loop.
    One,
    /// Group commit as the log does it for this many waiting writers: one
    /// leader writes all their records in one `pwrite`, then one
    /// `fdatasync` makes them all durable.
    Batched(usize),
    /// This many threads, each claiming the next record slot of the file
    /// and doing its own `pwrite` + `fdatasync`, concurrently: shows how
    /// the kernel merges concurrent syncs.
    Threads(usize),
}

impl Writers {
    pub fn name(self) -> String {
        match self {
            Writers::One => "1".into(),
            Writers::Batched(n) => format!("{n} batched"),
            Writers::Threads(n) => format!("{n} threads"),
        }
    }

    /// Records in each `pwrite` (and so in each `fdatasync`).
    fn records_per_write(self) -> usize {
        match self {
            Writers::Batched(n) => n.max(1),
            _ => 1,
        }
    }

    fn threads(self) -> usize {
        match self {
            Writers::Threads(n) => n.max(1),
            _ => 1,
        }
    }
}

/// One single-writer floor measurement (see [`measure`]).
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

/// One measurement of a mode under some writers (see [`measure_cell`]).
#[derive(Debug, Clone)]
pub struct Cell {
    pub mode: Mode,
    pub writers: Writers,
    pub record_size: usize,
    /// Size the file was prepared to; 0 for [`Mode::Append`].
    pub file_bytes: u64,
    /// `fdatasync` calls completed.
    pub syncs: u64,
    /// Records made durable by them.
    pub records: u64,
    pub secs: f64,
    /// Latency of one `pwrite` + `fdatasync`, as its caller sees it.
    pub p50_us: f64,
    pub p99_us: f64,
    /// Seconds into the run at which the writes reached the end of the file,
    /// which stopped the run early; `None` if they never did.
    pub full_after: Option<f64>,
}

impl Cell {
    pub fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.secs
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

/// A log segment's size: the file each floor writes into, and the one whose
/// preparation [`prepare_ms`] times.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// More `fdatasync`s per second than this disk-backed filesystem has been
/// seen to complete from one issuer (about 12,500 with one small record):
/// [`cell_file_bytes`] sizes files so that even this rate would not fill
/// them within a run.
const MAX_SYNCS_PER_SEC: u64 = 20_000;

/// What happens when the sequential writes reach the end of a prepared
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Start again from offset 0: rewriting blocks already written costs
    /// what the first write into prepared ones did, and the file stays one
    /// segment whatever the record size.
    Wrap,
    /// Stop the run and report when it happened.
    Stop,
}

/// Runs one writer's `pwrite(record) + fdatasync` loop for `duration` in a
/// new file `path` prepared as `mode` to [`SEGMENT_BYTES`], which is removed
/// afterwards. Writes that reach the end of the file go on from offset 0.
pub fn measure(
    path: &Path,
    mode: Mode,
    record_size: usize,
    duration: Duration,
) -> Result<Floor, String> {
    let cell = run_cell(
        path,
        mode,
        Writers::One,
        record_size,
        SEGMENT_BYTES,
        WhenFull::Wrap,
        duration,
    )?;
    Ok(Floor {
        mode,
        record_size,
        syncs: cell.syncs,
        secs: cell.secs,
        p50_us: cell.p50_us,
        p99_us: cell.p99_us,
    })
}

/// The size of file [`measure_cell`] prepares for these writers: one
/// segment, or enough whole segments that writes at [`MAX_SYNCS_PER_SEC`]
/// would not fill it within `duration`.
pub fn cell_file_bytes(writers: Writers, record_size: usize, duration: Duration) -> u64 {
    let write_bytes = (writers.records_per_write() * record_size.max(1)) as u64;
    let needed = (write_bytes as f64 * MAX_SYNCS_PER_SEC as f64 * duration.as_secs_f64()) as u64;
    needed.div_ceil(SEGMENT_BYTES).max(1) * SEGMENT_BYTES
}

/// Runs `writers` for `duration` in a new file `path`, prepared as `mode` to
/// `file_bytes` (untimed), with sequential writes from offset 0; the run
/// stops early if they reach the end ([`Cell::full_after`]). The file is
/// removed afterwards.
pub fn measure_cell(
    path: &Path,
    mode: Mode,
    writers: Writers,
    record_size: usize,
    file_bytes: u64,
    duration: Duration,
) -> Result<Cell, String> {
    run_cell(
        path,
        mode,
        writers,
        record_size,
        file_bytes,
        WhenFull::Stop,
        duration,
    )
}

/// Milliseconds it takes to prepare a new `bytes`-byte file `path` as `mode`,
/// durably (its directory entry included), as the log would at segment
/// rotation. For [`Mode::Recycled`] that is renaming an old, already filled
/// segment (filled untimed) to `path`, opening it and syncing the
/// directory. The file is removed afterwards.
pub fn prepare_ms(path: &Path, mode: Mode, bytes: u64) -> Result<f64, String> {
    let old = path.with_extension("old");
    if mode == Mode::Recycled {
        prepare(&old, mode, bytes)?;
    }
    let start = Instant::now();
    let file = if mode == Mode::Recycled {
        std::fs::rename(&old, path).map_err(|e| io_err("cannot rename to", path, e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_err("cannot open", path, e))?;
        sync_parent(path)?;
        file
    } else {
        prepare(path, mode, bytes)?
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    drop(file);
    std::fs::remove_file(path).map_err(|e| io_err("cannot remove", path, e))?;
    Ok(ms)
}

fn io_err(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

fn run_cell(
    path: &Path,
    mode: Mode,
    writers: Writers,
    record_size: usize,
    file_bytes: u64,
    when_full: WhenFull,
    duration: Duration,
) -> Result<Cell, String> {
    let file_bytes = if mode == Mode::Append { 0 } else { file_bytes };
    let file = prepare(path, mode, file_bytes)?;
    let timed = timed_writes(&file, mode, writers, record_size, when_full, duration)
        .map_err(|e| io_err("cannot write or fdatasync", path, e));
    drop(file);
    std::fs::remove_file(path).map_err(|e| io_err("cannot remove", path, e))?;
    let mut timed = timed?;

    timed.latencies_ns.sort_unstable();
    let syncs = timed.latencies_ns.len() as u64;
    Ok(Cell {
        mode,
        writers,
        record_size,
        file_bytes,
        syncs,
        records: syncs * writers.records_per_write() as u64,
        secs: timed.secs,
        p50_us: quantile(&timed.latencies_ns, 0.5) / 1e3,
        p99_us: quantile(&timed.latencies_ns, 0.99) / 1e3,
        full_after: timed.full_after,
    })
}

/// What the timed loop saw.
struct Timed {
    secs: f64,
    /// One per completed `pwrite` + `fdatasync`.
    latencies_ns: Vec<u64>,
    full_after: Option<f64>,
}

/// The timed loop: each of `writers.threads()` threads claims the next
/// write's place in the file, writes it and syncs, until `duration` has
/// passed (or the file is full and `when_full` says stop).
fn timed_writes(
    file: &File,
    mode: Mode,
    writers: Writers,
    record_size: usize,
    when_full: WhenFull,
    duration: Duration,
) -> io::Result<Timed> {
    let write = vec![0x5Au8; writers.records_per_write() * record_size.max(1)];
    let write_bytes = write.len() as u64;
    // Places for whole writes in the prepared file; an appended file has no
    // end.
    let places = match mode {
        Mode::Append => None,
        _ => Some((file.metadata()?.len() / write_bytes).max(1)),
    };
    let threads = writers.threads();
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let full_after: Mutex<Option<f64>> = Mutex::new(None);
    let start_line = Barrier::new(threads + 1);

    let (secs, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> io::Result<Vec<u64>> {
                    let mut latencies = Vec::with_capacity(1 << 12);
                    start_line.wait();
                    let start = Instant::now();
                    let result = loop {
                        if stop.load(Ordering::Relaxed) || start.elapsed() >= duration {
                            break Ok(latencies);
                        }
                        let mut place = next.fetch_add(1, Ordering::Relaxed);
                        if let Some(places) = places.filter(|&p| place >= p) {
                            match when_full {
                                WhenFull::Wrap => place %= places,
                                WhenFull::Stop => {
                                    full_after
                                        .lock()
                                        .unwrap()
                                        .get_or_insert(start.elapsed().as_secs_f64());
                                    stop.store(true, Ordering::Relaxed);
                                    break Ok(latencies);
                                }
                            }
                        }
                        let t = Instant::now();
                        if let Err(e) = file
                            .write_all_at(&write, place * write_bytes)
                            .and_then(|()| file.sync_data())
                        {
                            break Err(e);
                        }
                        latencies.push(t.elapsed().as_nanos() as u64);
                    };
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("floor writer panicked"))
            .collect();
        (start.elapsed().as_secs_f64(), results)
    });

    let mut latencies_ns = Vec::new();
    for r in results {
        latencies_ns.extend(r?);
    }
    Ok(Timed {
        secs,
        latencies_ns,
        full_after: full_after.into_inner().unwrap(),
    })
}

/// Creates `path` afresh and prepares `bytes` of it as `mode`, durably: the
/// preparation synced (size included), then the directory entry, as a log
/// does when it creates a segment.
fn prepare(path: &Path, mode: Mode, bytes: u64) -> Result<File, String> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err("cannot create", path, e))?;
    let prepared = match mode {
        Mode::Append => Ok(()),
        Mode::Sparse => file.set_len(bytes).and_then(|()| file.sync_all()),
        Mode::Fallocate => fallocate(&file, bytes).and_then(|()| file.sync_all()),
        Mode::ZeroFilled => fill(&file, bytes, 0x00).and_then(|()| file.sync_all()),
        Mode::Recycled => fill(&file, bytes, 0xA5).and_then(|()| file.sync_all()),
    };
    prepared.map_err(|e| io_err(&format!("cannot prepare ({})", mode.name()), path, e))?;
    sync_parent(path)?;
    Ok(file)
}

/// Writes `len` bytes of `byte` from offset 0.
fn fill(file: &File, len: u64, byte: u8) -> io::Result<()> {
    let chunk = vec![byte; 1 << 20];
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], written)?;
        written += n as u64;
    }
    Ok(())
}

/// Reserves `len` bytes from offset 0 as unwritten extents, the file's size
/// included (`fallocate` mode 0).
#[cfg(target_os = "linux")]
fn fallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length out of range"))?;
    loop {
        // SAFETY: the descriptor belongs to `file`, open for the whole call;
        // fallocate takes no pointers.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn fallocate(_file: &File, _len: u64) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "fallocate is measured on Linux only",
    ))
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

    fn test_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-floor-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

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
        let dir = test_dir("floor");
        for mode in [Mode::Append, Mode::ZeroFilled] {
            let path = dir.join(mode.name());
            let floor = measure(&path, mode, 4096, Duration::from_millis(50)).unwrap();
            assert!(floor.syncs > 0, "{mode:?} made no sync");
            assert!(floor.p50_us > 0.0 && floor.p99_us >= floor.p50_us);
            assert!((floor.mb_per_sec() - floor.syncs_per_sec() * 4096.0 / 1e6).abs() < 1e-9);
            assert!(!path.exists(), "{mode:?} left its file behind");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_mode_syncs_and_cleans_up() {
        let dir = test_dir("modes");
        for mode in Mode::ALL {
            let path = dir.join(mode.name());
            let cell = measure_cell(
                &path,
                mode,
                Writers::One,
                128,
                1 << 20,
                Duration::from_millis(50),
            )
            .unwrap();
            assert!(cell.syncs > 0, "{mode:?} made no sync");
            assert_eq!(cell.records, cell.syncs);
            assert!(cell.p50_us > 0.0 && cell.p99_us >= cell.p50_us);
            assert!(!path.exists(), "{mode:?} left its file behind");
            assert!(prepare_ms(&path, mode, 1 << 20).unwrap() >= 0.0);
            assert!(!path.exists() && !path.with_extension("old").exists());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batches_and_threads_count_records_and_stop_when_full() {
        let dir = test_dir("full");
        let path = dir.join("f");
        // Room for 8 batches of 4 records: the run stops after 8 syncs.
        let cell = measure_cell(
            &path,
            Mode::ZeroFilled,
            Writers::Batched(4),
            128,
            8 * 4 * 128,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((cell.syncs, cell.records), (8, 32));
        assert!(cell.full_after.is_some() && cell.secs < 10.0);
        // 4 threads share 32 slots, one record each.
        let cell = measure_cell(
            &path,
            Mode::Sparse,
            Writers::Threads(4),
            128,
            32 * 128,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!((cell.syncs, cell.records), (32, 32));
        assert!(cell.full_after.is_some());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_sized_to_outlast_the_run() {
        let d = Duration::from_secs(3);
        assert_eq!(cell_file_bytes(Writers::One, 128, d), SEGMENT_BYTES);
        assert_eq!(cell_file_bytes(Writers::Threads(64), 128, d), SEGMENT_BYTES);
        // 8 KiB per sync at 20,000 syncs/s for 3 s: 492 MB, 8 segments.
        assert_eq!(
            cell_file_bytes(Writers::Batched(64), 128, d),
            8 * SEGMENT_BYTES
        );
    }
}
