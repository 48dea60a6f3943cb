//! `kv-admin`: offline tools on the data directory of a stopped store.
//!
//! - `verify DIR` reads every log segment and snapshot, checks them
//!   (checksums, LSN continuity, the snapshots' coverage of the log) and
//!   prints what recovery would do, changing nothing.
//! - `dump DIR` prints the log's records, one a line; `dump --snapshot FILE`
//!   a snapshot's entries.
//! - `repair DIR` cuts the log at its first damage, as the tolerant recovery
//!   mode would, after saving what it cuts to a side directory it names.
//! - `restore FILE DIR` makes a new data directory from a backup that
//!   `kv-client backup` took (a snapshot file).
//!
//! Each refuses a directory a running server holds. Exit codes: 0 clean
//! (or done), 1 damage found, 2 the command could not run (bad arguments,
//! the directory in use or unreadable).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kv_proto::prost::Message as _;
use kv_proto::{LogEntry, Operation};
use kv_store::RecoveryMode;
use kv_store::inspect::{self, Verification};
use wal_core::{Cut, Wal, WalOptions};

/// Offline tools for a stopped kv-server's data directory.
///
/// Every command works while no server runs and refuses, naming the lock,
/// if one does. Only `repair` changes anything, and only when asked.
///
/// Exit codes: 0 clean or done; 1 damage found (verify), undecodable
/// records (dump); 2 the command could not run.
#[derive(Debug, Parser)]
#[command(name = "kv-admin", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every log segment and snapshot, and print what recovery would
    /// do. Read-only.
    ///
    /// Example: kv-admin verify ./data
    Verify {
        /// The data directory (kv-server's --data-dir).
        dir: PathBuf,
        /// The recovery mode to judge by, as kv-server's --recovery-mode:
        /// strict (the default) cuts only a torn tail; tolerant also cuts
        /// at corruption; absolute cuts nothing.
        #[arg(long, value_enum, default_value_t = Mode::Strict)]
        recovery_mode: Mode,
    },
    /// Print the log's records, one a line (LSN, operation, key, value size
    /// or value, timestamp), or with --snapshot a snapshot's entries.
    ///
    /// Keys and values are printed with non-printable bytes escaped as
    /// \xNN (and \n, \t, \\, \" ...), in JSON too.
    ///
    /// Examples: kv-admin dump ./data --from 100 --to 200;
    /// kv-admin dump ./data -o json --values;
    /// kv-admin dump --snapshot ./data/snapshots/snapshot-00000000000000000042.snap
    Dump {
        /// The data directory; not with --snapshot.
        #[arg(required_unless_present = "snapshot", conflicts_with = "snapshot")]
        dir: Option<PathBuf>,
        /// Dump this snapshot file instead of a log.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
        /// First LSN to print.
        #[arg(long, value_name = "LSN", default_value_t = 1)]
        from: u64,
        /// Last LSN to print (inclusive).
        #[arg(long, value_name = "LSN")]
        to: Option<u64>,
        /// Print values, not only their sizes.
        #[arg(long)]
        values: bool,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Cut the log at its first damage, as --recovery-mode tolerant would,
    /// after saving what is cut to a side directory; prints what it removed.
    ///
    /// Acknowledged writes after the damage leave the store (they stay in
    /// the side directory). Run `kv-admin verify` first to see what it
    /// would cut.
    ///
    /// Example: kv-admin repair ./data
    Repair {
        /// The data directory.
        dir: PathBuf,
        /// Where to save what is cut (must not exist); default
        /// DIR/cut-SECONDS (SECONDS since the Unix epoch).
        #[arg(long, value_name = "DIR")]
        side_dir: Option<PathBuf>,
    },
    /// Make a new data directory from a backup (`kv-client backup FILE`),
    /// checking the whole backup first.
    ///
    /// DIR must not exist or be empty. A server started on it serves the
    /// backup's state; its next write gets the LSN after the backup's.
    ///
    /// Example: kv-admin restore backup.snap ./data-restored
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data directory to make.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Strict,
    Tolerant,
    Absolute,
}

impl From<Mode> for RecoveryMode {
    fn from(m: Mode) -> RecoveryMode {
        match m {
            Mode::Strict => RecoveryMode::Strict,
            Mode::Tolerant => RecoveryMode::Tolerant,
            Mode::Absolute => RecoveryMode::Absolute,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// A failure that stops a command: printed as one line, exit 2.
struct Failed(String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify { dir, recovery_mode } => verify(&dir, recovery_mode.into()),
        Command::Dump {
            dir,
            snapshot,
            from,
            to,
            values,
            output,
        } => match (dir, snapshot) {
            (_, Some(file)) => dump_snapshot(&file, values, output),
            (Some(dir), None) => dump_log(&dir, from, to, values, output),
            (None, None) => Err(Failed("give a data directory or --snapshot FILE".into())),
        },
        Command::Repair { dir, side_dir } => repair(&dir, side_dir),
        Command::Restore { file, dir } => restore(&file, &dir),
    };
    match result {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(Failed(msg)) => {
            eprintln!("kv-admin: {msg}");
            ExitCode::from(2)
        }
    }
}

fn verify(dir: &Path, mode: RecoveryMode) -> Result<bool, Failed> {
    if !dir.join("wal").is_dir() {
        return Err(Failed(format!(
            "{} is not a data directory (no wal/ in it)",
            dir.display()
        )));
    }
    let v = match inspect::verify(dir, mode) {
        Ok(v) => v,
        // A log this mode refuses to open: the error names the segment,
        // the offset and the mode that would cut there.
        Err(kv_store::Error::Wal(e @ wal_core::Error::Corrupt { .. })) => {
            println!("damage: {e}");
            println!("recovery: kv-server --recovery-mode {mode:?} would refuse to start");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    print_verification(&v);
    Ok(v.is_clean())
}

fn print_verification(v: &Verification) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "log: {} segment(s), {} record(s){}",
        v.segments.len(),
        v.wal.records,
        v.lsns
            .map(|(a, b)| format!(", LSN {a} to {b}"))
            .unwrap_or_default()
    );
    for (first, path) in &v.segments {
        let _ = writeln!(out, "  {} (from LSN {first})", path.display());
    }
    if let Some(end) = &v.wal.end {
        let _ = writeln!(
            out,
            "  ends in {} at offset {}",
            end.segment.display(),
            end.offset
        );
    }
    for cut in &v.wal.cuts {
        match cut {
            Cut::Truncate { segment, len } => {
                let _ = writeln!(
                    out,
                    "damage: {} from offset {len}: an open would cut it there",
                    segment.display()
                );
            }
            Cut::Remove { segment } => {
                let _ = writeln!(
                    out,
                    "damage: {}: an open would remove it",
                    segment.display()
                );
            }
        }
    }
    let _ = writeln!(out, "snapshots: {}", v.snapshots.len());
    for s in &v.snapshots {
        match &s.result {
            Ok(entries) => {
                let _ = writeln!(
                    out,
                    "  {} covers LSN {}: {entries} entries, checksums good",
                    s.path.display(),
                    s.seq
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  damage: {e}");
            }
        }
    }
    match &v.recovery {
        Ok(r) => {
            for w in &r.info.warnings {
                let _ = writeln!(out, "recovery would: {w}");
            }
            let _ = writeln!(
                out,
                "recovery: load {}, replay {} record(s): {} key(s), {} byte(s), last LSN {}",
                if r.info.snapshot_seq == 0 {
                    "no snapshot".to_string()
                } else {
                    format!("the snapshot of LSN {}", r.info.snapshot_seq)
                },
                r.info.replayed,
                r.keys,
                r.bytes,
                r.last_lsn
            );
        }
        Err(e) => {
            let _ = writeln!(out, "recovery: would refuse to open: {e}");
        }
    }
    let _ = writeln!(out, "{}", if v.is_clean() { "clean" } else { "NOT clean" });
}

/// A byte string as text: printable ASCII as is, the rest escaped the way
/// Rust's `escape_ascii` does.
fn quote(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn dump_log(
    dir: &Path,
    from: u64,
    to: Option<u64>,
    values: bool,
    output: Output,
) -> Result<bool, Failed> {
    inspect::ensure_not_in_use(dir)?;
    let wal = Wal::open_read_only(dir.join("wal"), WalOptions::default())?;
    for w in &wal.recovery_report().warnings {
        eprintln!("kv-admin: note: {w}");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut clean = true;
    let mut iter = wal.iter_from(from);
    while let Some(rec) = iter.next_ref() {
        let rec = rec?;
        if to.is_some_and(|to| rec.lsn > to) {
            break;
        }
        let line = match LogEntry::decode(rec.data) {
            Ok(entry) => describe(rec.lsn, &entry, values, output),
            Err(e) => {
                clean = false;
                match output {
                    Output::Text => format!("{} undecodable: {e}", rec.lsn),
                    Output::Json => serde_json::json!({
                        "lsn": rec.lsn,
                        "error": format!("undecodable: {e}"),
                    })
                    .to_string(),
                }
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(clean)
}

fn describe(lsn: u64, entry: &LogEntry, values: bool, output: Output) -> String {
    let op = match Operation::try_from(entry.op) {
        Ok(Operation::Put) => "put",
        Ok(Operation::Delete) => "delete",
        _ => "unknown",
    };
    let put = op == "put";
    match output {
        Output::Text => {
            let mut line = format!("{lsn} {op} {}", quote(&entry.key));
            if put {
                if values {
                    line.push_str(&format!(" = {}", quote(&entry.value)));
                } else {
                    line.push_str(&format!(" ({} bytes)", entry.value.len()));
                }
            }
            if entry.seq != lsn {
                line.push_str(&format!(" [seq {} disagrees with its LSN]", entry.seq));
            }
            line.push_str(&format!(" @{}", entry.timestamp_ms));
            line
        }
        Output::Json => {
            let mut obj = serde_json::json!({
                "lsn": lsn,
                "seq": entry.seq,
                "op": op,
                "key": quote(&entry.key),
                "timestamp_ms": entry.timestamp_ms,
            });
            if put {
                obj["value_size"] = entry.value.len().into();
                if values {
                    obj["value"] = quote(&entry.value).into();
                }
            }
            obj.to_string()
        }
    }
}

fn dump_snapshot(file: &Path, values: bool, output: Output) -> Result<bool, Failed> {
    // The whole file is checked before anything is printed.
    let mut lines = Vec::new();
    let seq = inspect::read_snapshot(file, |key, value| {
        lines.push(match output {
            Output::Text if values => format!("{} = {}", quote(key), quote(value)),
            Output::Text => format!("{} ({} bytes)", quote(key), value.len()),
            Output::Json => {
                let mut obj = serde_json::json!({
                    "key": quote(key),
                    "value_size": value.len(),
                });
                if values {
                    obj["value"] = quote(value).into();
                }
                obj.to_string()
            }
        });
    })?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if output == Output::Text {
        writeln!(out, "# snapshot of LSN {seq}: {} entries", lines.len())?;
    }
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(true)
}

fn repair(dir: &Path, side_dir: Option<PathBuf>) -> Result<bool, Failed> {
    if !dir.join("wal").is_dir() {
        return Err(Failed(format!(
            "{} is not a data directory (no wal/ in it)",
            dir.display()
        )));
    }
    let side_dir = side_dir.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        dir.join(format!("cut-{secs}"))
    });
    let r = inspect::repair(dir, &side_dir)?;
    if r.cuts.is_empty() {
        println!("nothing to cut: the log has no damage");
    }
    for cut in &r.cuts {
        match cut {
            Cut::Truncate { segment, len } => {
                println!("cut {} at offset {len}", segment.display())
            }
            Cut::Remove { segment } => println!("removed {}", segment.display()),
        }
    }
    if let Some(saved) = &r.saved_to {
        println!(
            "saved the {} byte(s) cut to {}",
            r.saved_bytes,
            saved.display()
        );
    }
    println!(
        "the store now opens: {} record(s) replayed after {}",
        r.recovery.replayed,
        if r.recovery.snapshot_seq == 0 {
            "no snapshot".to_string()
        } else {
            format!("the snapshot of LSN {}", r.recovery.snapshot_seq)
        }
    );
    Ok(true)
}

fn restore(file: &Path, dir: &Path) -> Result<bool, Failed> {
    let r = inspect::restore(file, dir)?;
    println!(
        "restored {} key(s), {} byte(s), as of LSN {}, into {}",
        r.keys,
        r.bytes,
        r.seq,
        dir.display()
    );
    Ok(true)
}
