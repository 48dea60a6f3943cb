//! Small files written atomically: the Raft state (vote, committed,
//! purged) and the snapshot metadata. Temp file, fsync, rename, fsync of
//! the directory: after a crash the file is the old one or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use prost::Message;

use crate::error::{ClusterError, Result};

/// Replaces `path` with `message`, durably.
pub(crate) fn write<M: Message>(path: &Path, message: &M) -> Result<()> {
    write_bytes(path, &message.encode_to_vec())
}

/// Replaces `path` with `bytes`, durably.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(ClusterError::io("create", &tmp))?;
    file.write_all(bytes)
        .map_err(ClusterError::io("write", &tmp))?;
    file.sync_all().map_err(ClusterError::io("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(ClusterError::io("rename", path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ClusterError::io("sync directory", dir))
}

/// Reads `path`, `None` if it does not exist.
pub(crate) fn read<M: Message + Default>(path: &Path) -> Result<Option<M>> {
    match fs::read(path) {
        Ok(bytes) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| ClusterError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::io("read", path)(e)),
    }
}
