//! Segment files: naming and creation in the safe order.

use std::path::{Path, PathBuf};

use crate::Lsn;
use crate::error::{Error, Result};
use crate::format;
use crate::vfs::{Vfs, VfsFile};

/// A segment the log holds.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// LSN of its first record (or of the next record, while it has none).
    pub first_lsn: Lsn,
    /// Its file.
    pub path: PathBuf,
    /// Its length in bytes. For the active segment this is the length when
    /// it was sealed or opened; the writer tracks the live length.
    pub len: u64,
    /// The in-memory index: the offset of each record written to it, in LSN
    /// order (record `first_lsn + i` starts at `offsets[i]`). Four bytes a
    /// record; what lets `Wal::read` go straight to a record.
    pub offsets: Vec<u32>,
}

impl SegmentMeta {
    /// A segment with no record indexed yet.
    pub(crate) fn new(first_lsn: Lsn, path: PathBuf, len: u64) -> SegmentMeta {
        SegmentMeta {
            first_lsn,
            path,
            len,
            offsets: Vec::new(),
        }
    }

    /// One past the LSN of its last indexed record.
    pub(crate) fn end_lsn(&self) -> Lsn {
        self.first_lsn + self.offsets.len() as u64
    }
}

/// Prepares the space of a segment of `size` bytes after its first `from`
/// bytes: reserves it (`allocate`, so a full disk shows here and not in
/// the middle of a group), writes zeroes over it, and makes it durable.
///
/// Why zeroes written rather than only reserved: an fdatasync after a
/// write into blocks that were written before needs no metadata, while a
/// write into a sparse hole or into fallocated (unwritten) extents makes
/// the file system allocate or convert extents at the sync, a journal
/// commit each time. `cargo xtask floor-modes` measures the difference
/// (see `docs/format.md`); the zeroes are also what recovery reads as free
/// space, and what its torn-write rule looks for.
pub(crate) fn prepare(file: &dyn VfsFile, path: &Path, from: u64, size: u64) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    if size <= from {
        return Ok(());
    }
    file.allocate(size)
        .map_err(Error::io("preallocate segment", path))?;
    let zeroes = vec![0u8; CHUNK.min((size - from) as usize)];
    let mut at = from;
    while at < size {
        let n = (CHUNK as u64).min(size - at) as usize;
        file.write_all_at(&zeroes[..n], at)
            .map_err(Error::io("preallocate segment", path))?;
        at += n as u64;
    }
    file.sync_data().map_err(Error::io("sync segment", path))
}

/// The path of the segment starting at `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format::segment_file_name(first_lsn))
}

/// Creates the segment starting at `first_lsn`: the file, its header, an
/// fdatasync, its space prepared up to `preallocate` bytes ([`prepare`]:
/// reserved, zeroed, fdatasynced), and an fsync of the directory, in that
/// order. Only when this returns may a record be written into it and
/// acknowledged, so recovery never finds an acknowledged record in a
/// segment whose header or directory entry could vanish.
///
/// If any step fails, the new file is removed again (best effort, with a
/// directory fsync), so that a retry after a full disk can create it.
pub(crate) fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    first_lsn: Lsn,
    preallocate: u64,
) -> Result<(Box<dyn VfsFile>, PathBuf)> {
    let path = segment_path(dir, first_lsn);
    let file = vfs
        .create_new(&path)
        .map_err(Error::io("create segment", &path))?;
    let made = (|| {
        file.write_all_at(&format::encode_segment_header(first_lsn), 0)
            .map_err(Error::io("write segment header", &path))?;
        file.sync_data()
            .map_err(Error::io("sync new segment", &path))?;
        // Only once the header is durable: a crash while the space is
        // prepared can then leave zeroes or junk after a good header (free
        // space or a torn tail, cut by recovery), never a bad header with
        // bytes after it, which recovery must treat as corruption.
        prepare(
            file.as_ref(),
            &path,
            format::SEGMENT_HEADER_LEN as u64,
            preallocate,
        )?;
        vfs.sync_dir(dir)
            .map_err(Error::io("sync log directory", dir))
    })();
    match made {
        Ok(()) => Ok((file, path)),
        Err(e) => {
            drop(file);
            if vfs.remove_file(&path).is_ok() {
                let _ = vfs.sync_dir(dir);
            }
            Err(e)
        }
    }
}
