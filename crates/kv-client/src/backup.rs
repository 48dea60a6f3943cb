//! `backup`: copying a consistent snapshot of a running server into a file,
//! a piece a request (see `BackupRequest` in proto/kv.proto).
//!
//! The copy goes to `FILE.partial`, which is synced and then renamed to
//! `FILE` (and the directory synced) only once it is whole: a file named
//! `FILE` is always a complete snapshot. If the server's snapshot is
//! replaced by a later checkpoint during the copy, the server says so by
//! starting the new one from offset 0, and the copy starts again; after
//! [`MAX_RESTARTS`] such restarts the backup gives up.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kv_proto::{BackupRequest, BackupResponse, request, response};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::error::{ClientError, Result};

/// How often a backup starts over because a checkpoint replaced the
/// snapshot it was copying, before it gives up.
pub const MAX_RESTARTS: u32 = 5;

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The LSN (in a cluster, the Raft position) the snapshot covers.
    pub seq: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How often the copy started over.
    pub restarts: u32,
}

fn file_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ClientError + 'a {
    move |e| ClientError::File {
        op,
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

fn command(start: bool, seq: u64, offset: u64) -> request::Command {
    request::Command::Backup(BackupRequest { start, seq, offset })
}

fn answer(result: response::Result) -> Result<BackupResponse> {
    match result {
        response::Result::Backup(b) => Ok(b),
        _ => Err(ClientError::Protocol(
            "backup request answered with another result".to_string(),
        )),
    }
}

/// Copies a backup into `path` through `call` (one request, one result).
/// On failure the partial copy is removed.
pub(crate) async fn run<F, Fut>(path: &Path, call: F) -> Result<BackupInfo>
where
    F: FnMut(request::Command) -> Fut,
    Fut: Future<Output = Result<response::Result>>,
{
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = copy(path, &partial, call).await;
    if result.is_err() {
        // Best effort: the error that stopped the copy is the one to report.
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

async fn copy<F, Fut>(path: &Path, partial: &Path, mut call: F) -> Result<BackupInfo>
where
    F: FnMut(request::Command) -> Fut,
    Fut: Future<Output = Result<response::Result>>,
{
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(file_error("create", partial))?;
    let (mut seq, mut offset, mut restarts) = (0, 0, 0);
    let mut started = false;
    loop {
        let piece = answer(call(command(!started, seq, offset)).await?)?;
        if !started || piece.seq != seq || piece.offset != offset {
            if piece.offset != 0 {
                return Err(ClientError::Protocol(format!(
                    "backup answer at offset {} where {offset} was asked",
                    piece.offset
                )));
            }
            if started {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(ClientError::Protocol(format!(
                        "the server's snapshot was replaced {restarts} times during the backup; \
                         try again when checkpoints are rarer"
                    )));
                }
                file.set_len(0)
                    .await
                    .map_err(file_error("truncate", partial))?;
                file.rewind().await.map_err(file_error("seek", partial))?;
            }
            started = true;
            seq = piece.seq;
            offset = 0;
        }
        file.write_all(&piece.data)
            .await
            .map_err(file_error("write", partial))?;
        offset += piece.data.len() as u64;
        if offset >= piece.total_size {
            break;
        }
        if piece.data.is_empty() {
            return Err(ClientError::Protocol(format!(
                "backup stalled at offset {offset} of {}",
                piece.total_size
            )));
        }
    }
    file.sync_all().await.map_err(file_error("sync", partial))?;
    drop(file);
    tokio::fs::rename(partial, path)
        .await
        .map_err(file_error("rename", path))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(dir).await?;
    Ok(BackupInfo {
        seq,
        bytes: offset,
        restarts,
    })
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir)
        .await
        .map_err(file_error("open directory", dir))?;
    d.sync_all()
        .await
        .map_err(file_error("sync directory", dir))
}
