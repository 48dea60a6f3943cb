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
}

/// The path of the segment starting at `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format::segment_file_name(first_lsn))
}

/// Creates the segment starting at `first_lsn`: the file, its header, an
/// fdatasync of the file and an fsync of the directory, in that order. Only
/// when this returns may a record be written into it and acknowledged, so
/// recovery never finds an acknowledged record in a segment whose header or
/// directory entry could vanish.
pub(crate) fn create_segment(
    vfs: &dyn Vfs,
    dir: &Path,
    first_lsn: Lsn,
) -> Result<(Box<dyn VfsFile>, PathBuf)> {
    let path = segment_path(dir, first_lsn);
    let file = vfs
        .create_new(&path)
        .map_err(Error::io("create segment", &path))?;
    file.write_all_at(&format::encode_segment_header(first_lsn), 0)
        .map_err(Error::io("write segment header", &path))?;
    file.sync_data()
        .map_err(Error::io("sync new segment", &path))?;
    vfs.sync_dir(dir)
        .map_err(Error::io("sync log directory", dir))?;
    Ok((file, path))
}
