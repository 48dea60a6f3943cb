//! Offline checks of a stopped store's data directory, for `kv-admin`.
//!
//! [`verify`] works out what [`KeyValueStore::open`](crate::KeyValueStore::open)
//! would do, with the same code (the log read through
//! [`wal_core::Wal::open_read_only`], then the store's own recovery over it)
//! and without changing a byte: every segment and snapshot is read and
//! checked, and the answer says what an open would cut, which snapshot it
//! would load and how much it would replay, or why it would refuse.
//! [`repair`] is the explicit, never automatic, counterpart: it saves what
//! the tolerant mode would cut to a side directory, then opens the store in
//! that mode, which cuts it.
//!
//! Both refuse a directory that a running server holds ([`Error::InUse`]):
//! its files change under a reader, and a repair must not race a writer.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wal_core::{Cut, Lsn, RecoveryMode, RecoveryReport, StdFs, Vfs, Wal, WalOptions};

use crate::error::{Error, Result};
use crate::snapshot::{self, FileKind};
use crate::{RecoveryInfo, recovery};

/// What [`verify`] found.
#[derive(Debug)]
pub struct Verification {
    /// What opening the log would do: its warnings are the cuts (torn
    /// tails, and in the tolerant mode corruption) an open would make.
    pub wal: RecoveryReport,
    /// The log's segment files, oldest first, with their first LSN.
    pub segments: Vec<(Lsn, PathBuf)>,
    /// The oldest and newest LSN in the log, if it holds records.
    pub lsns: Option<(Lsn, Lsn)>,
    /// Every snapshot file, newest first, each read and checked whole.
    pub snapshots: Vec<SnapshotCheck>,
    /// What the store's recovery would load and replay, or why it would
    /// refuse to open (the log or a snapshot it needs is damaged).
    pub recovery: std::result::Result<Recovered, Error>,
}

impl Verification {
    /// Nothing to cut, no damaged snapshot, and the store would open.
    pub fn is_clean(&self) -> bool {
        self.wal.cuts.is_empty()
            && self.snapshots.iter().all(|s| s.result.is_ok())
            && self.recovery.is_ok()
    }
}

/// What recovery would end with, in [`Verification::recovery`].
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot it would load, records it would replay, its warnings.
    pub info: RecoveryInfo,
    /// Keys in the recovered state.
    pub keys: u64,
    /// Key and value bytes in the recovered state.
    pub bytes: u64,
    /// The LSN of the last write in it.
    pub last_lsn: Lsn,
}

/// One snapshot file, read and checked.
#[derive(Debug)]
pub struct SnapshotCheck {
    /// The file.
    pub path: PathBuf,
    /// The LSN it covers (from its name; the header must agree).
    pub seq: Lsn,
    /// Its entry count, or what is wrong with it.
    pub result: std::result::Result<u64, Error>,
}

/// Fails with [`Error::InUse`] if a running store holds `dir`'s lock.
/// Creates nothing: a directory without a lock file is not in use.
pub fn ensure_not_in_use(dir: &Path) -> Result<()> {
    let lock = dir.join("wal").join(wal_core::vfs::LOCK_FILE_NAME);
    let file = match File::open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("open lock file", &lock, e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InUse(lock)),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &lock, e)),
    }
}

fn wal_options(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        recovery_mode: mode,
        ..WalOptions::default()
    }
}

/// Checks the data directory `dir` as an open in `mode` would, changing
/// nothing. Fails only when the directory cannot be checked at all (in
/// use, unreadable, or a log that `mode` refuses to open: that error names
/// the segment, the offset and the mode that would cut there); damage an
/// open would get past is in the answer.
pub fn verify(dir: &Path, mode: RecoveryMode) -> Result<Verification> {
    ensure_not_in_use(dir)?;
    let wal = Wal::open_read_only(dir.join("wal"), wal_options(mode))?;
    let vfs: Arc<dyn Vfs> = StdFs::shared();
    let snapshot_dir = dir.join("snapshots");
    let mut snapshots = Vec::new();
    if snapshot_dir.is_dir() {
        for kind in snapshot::list(vfs.as_ref(), &snapshot_dir)? {
            if let FileKind::Snapshot(seq) = kind {
                let path = snapshot_dir.join(snapshot::file_name(seq));
                let result = snapshot::load(&vfs, &path, seq).map(|l| l.entries);
                snapshots.push(SnapshotCheck { path, seq, result });
            }
        }
    }
    snapshots.sort_unstable_by_key(|s| std::cmp::Reverse(s.seq));
    let recovered = recovery::recover(&vfs, &snapshot_dir, &wal);
    let recovery = recovered.map(|(state, info)| Recovered {
        keys: state.len(),
        bytes: state.bytes(),
        last_lsn: state.last_applied(),
        info,
    });
    Ok(Verification {
        wal: wal.recovery_report().clone(),
        segments: wal.segments(),
        lsns: wal.first_lsn().zip(wal.last_lsn()),
        snapshots,
        recovery,
    })
}

/// Calls `visit` with every key and value of the snapshot file at `path`,
/// in key order, after checking the whole file; returns the LSN it covers.
pub fn read_snapshot(path: &Path, mut visit: impl FnMut(&[u8], &[u8])) -> Result<Lsn> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some(FileKind::Snapshot(seq)) = snapshot::parse_name(name) else {
        return Err(Error::CorruptSnapshot {
            path: path.to_path_buf(),
            offset: 0,
            reason: "not a snapshot file name (snapshot-<20 digits>.snap)".to_string(),
        });
    };
    let loaded = snapshot::load(&StdFs::shared(), path, seq)?;
    for entry in loaded.state.range_from(b"", false) {
        visit(entry.key(), entry.value());
    }
    Ok(seq)
}

/// What [`repair`] did.
#[derive(Debug)]
pub struct Repair {
    /// The cuts made, in order; empty if there was nothing to cut.
    pub cuts: Vec<Cut>,
    /// Where the bytes that were cut were saved (created only if something
    /// was cut): for a segment cut short, `<segment name>.from-<offset>`
    /// with the bytes from the cut to the last non-zero byte (the zeroes
    /// after it are preallocated space); for a segment removed, a copy of it.
    pub saved_to: Option<PathBuf>,
    /// Bytes saved there.
    pub saved_bytes: u64,
    /// The store's recovery after the cut.
    pub recovery: RecoveryInfo,
}

/// Cuts the log of the stopped store in `dir` at its first damage, as
/// [`RecoveryMode::Tolerant`] would, after saving what it cuts under
/// `side_dir` (which must not exist yet), then opens the store once so the
/// cut is made and checked. Acknowledged writes after the damage are lost
/// from the store; they are what the side directory keeps.
pub fn repair(dir: &Path, side_dir: &Path) -> Result<Repair> {
    ensure_not_in_use(dir)?;
    let planned = Wal::open_read_only(dir.join("wal"), wal_options(RecoveryMode::Tolerant))?
        .recovery_report()
        .cuts
        .clone();
    let mut saved_bytes = 0;
    let saved_to = if planned.is_empty() {
        None
    } else {
        std::fs::create_dir(side_dir)
            .map_err(|e| Error::io("create side directory", side_dir, e))?;
        for cut in &planned {
            saved_bytes += save_cut(cut, side_dir)?;
        }
        File::open(side_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("sync side directory", side_dir, e))?;
        Some(side_dir.to_path_buf())
    };
    let options = crate::StoreOptions {
        wal: wal_options(RecoveryMode::Tolerant),
        ..crate::StoreOptions::default()
    };
    let store = crate::KeyValueStore::open(dir, options)?;
    let recovery = store.recovery().clone();
    store.close()?;
    Ok(Repair {
        cuts: planned,
        saved_to,
        saved_bytes,
        recovery,
    })
}

/// Copies the bytes `cut` removes into `side_dir`; returns how many.
fn save_cut(cut: &Cut, side_dir: &Path) -> Result<u64> {
    let (segment, from) = match cut {
        Cut::Truncate { segment, len } => (segment, *len),
        Cut::Remove { segment } => (segment, 0),
    };
    let bytes = std::fs::read(segment).map_err(|e| Error::io("read segment", segment, e))?;
    let from = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |i| (i + 1).max(from));
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "segment".to_string());
    let target = match cut {
        Cut::Truncate { .. } => side_dir.join(format!("{name}.from-{from}")),
        Cut::Remove { .. } => side_dir.join(name),
    };
    let mut file = File::create_new(&target).map_err(|e| Error::io("create", &target, e))?;
    file.write_all(&bytes[from..end])
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &target, e))?;
    Ok((end - from) as u64)
}

/// What [`restore`] made.
#[derive(Debug)]
pub struct Restored {
    /// The LSN the backup covers; the restored store's next write gets the
    /// one after it.
    pub seq: Lsn,
    /// Keys restored.
    pub keys: u64,
    /// Key and value bytes restored.
    pub bytes: u64,
}

/// Makes a new data directory `dir` from `backup`, a snapshot file as
/// `kv-client backup` writes it (kv-store's snapshot format). The backup is
/// checked whole first; `dir` must not exist or be empty. The snapshot goes
/// in as `snapshots/snapshot-<seq>.snap` (written to a temporary name,
/// synced, renamed, directory synced), the log is created empty to continue
/// at `seq + 1`, and the store is opened once to check the result.
pub fn restore(backup: &Path, dir: &Path) -> Result<Restored> {
    let vfs: Arc<dyn Vfs> = StdFs::shared();
    let loaded = snapshot::load_any(&vfs, backup)?;
    let seq = loaded.state.last_applied();
    drop(loaded);
    // `load_any` refuses a header of `Lsn::MAX`; checked all the same, as
    // the log must continue at the LSN after it.
    let next = seq.checked_add(1).ok_or_else(|| Error::CorruptSnapshot {
        path: backup.to_path_buf(),
        offset: 0,
        reason: format!("the backup covers LSN {seq}, past the last LSN a log gives"),
    })?;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::DirectoryNotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read directory", dir, e)),
    }
    let snapshot_dir = dir.join("snapshots");
    std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| Error::io("create snapshot directory", &snapshot_dir, e))?;
    let temp = snapshot_dir.join(snapshot::temp_name(seq));
    std::fs::copy(backup, &temp).map_err(|e| Error::io("copy backup", &temp, e))?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", &temp, e))?;
    let path = snapshot_dir.join(snapshot::file_name(seq));
    std::fs::rename(&temp, &path).map_err(|e| Error::io("rename", &path, e))?;
    vfs.sync_dir(&snapshot_dir)
        .map_err(|e| Error::io("sync snapshot directory", &snapshot_dir, e))?;
    // The log continues after the snapshot: an empty log at LSN 1 would
    // not reach it, and recovery would rightly refuse.
    drop(Wal::create_at(
        dir.join("wal"),
        WalOptions::default(),
        next,
    )?);
    let store = crate::KeyValueStore::open(dir, crate::StoreOptions::default())?;
    let stats = store.stats();
    store.close()?;
    Ok(Restored {
        seq,
        keys: stats.keys,
        bytes: stats.bytes,
    })
}

/// One piece of a backup, as [`read_backup_chunk`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupChunk {
    /// The LSN the snapshot being sent covers.
    pub seq: Lsn,
    /// Where `data` starts in the snapshot file.
    pub offset: u64,
    /// The snapshot file's size.
    pub total_size: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Reads up to `max_len` bytes at `offset` of the snapshot file at `path`,
/// for a backup that is sending the snapshot of `seq` (`None`: whichever
/// the file holds). The header is checked, and header and data come from
/// one open of the file, so a snapshot renamed into place meanwhile is
/// never mixed with the one before. If the file now holds another
/// snapshot (a later checkpoint replaced it), the answer starts that one
/// from offset 0 and the caller starts its copy again: what it ends with
/// is always one whole snapshot, checked by its own checksums on restore.
pub fn read_backup_chunk(
    path: &Path,
    seq: Option<Lsn>,
    offset: u64,
    max_len: usize,
) -> Result<BackupChunk> {
    read_backup_chunk_with(&StdFs, path, seq, offset, max_len)
}

/// As [`read_backup_chunk`], through `vfs`.
pub(crate) fn read_backup_chunk_with(
    vfs: &dyn Vfs,
    path: &Path,
    seq: Option<Lsn>,
    offset: u64,
    max_len: usize,
) -> Result<BackupChunk> {
    let file = vfs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot", path, e))?;
    let total_size = file
        .len()
        .map_err(|e| Error::io("stat snapshot", path, e))?;
    let (_, header) = snapshot::read_header(&*file, path, total_size)?;
    let offset = if seq == Some(header.seq) {
        offset.min(total_size)
    } else {
        0
    };
    let len = usize::try_from(total_size - offset)
        .unwrap_or(usize::MAX)
        .min(max_len);
    let mut data = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let n = file
            .read_at(&mut data[filled..], offset + filled as u64)
            .map_err(|e| Error::io("read snapshot", path, e))?;
        if n == 0 {
            return Err(Error::CorruptSnapshot {
                path: path.to_path_buf(),
                offset: offset + filled as u64,
                reason: "the file ended early".to_string(),
            });
        }
        filled += n;
    }
    Ok(BackupChunk {
        seq: header.seq,
        offset,
        total_size,
        data,
    })
}
